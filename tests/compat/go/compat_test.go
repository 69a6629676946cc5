package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// baseTS is an hour ago, whole seconds: explicit record timestamps must be recent, because
// a broker deletes records older than retention.ms (7 days by default).
var baseTS = time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli()

func uniqueTopic(prefix string) string {
	return fmt.Sprintf("go-%s-%08x", prefix, rand.Uint32())
}

func newAdmin(t *testing.T) *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.RequestTimeoutOverhead(10*time.Second),
		kgo.MetadataMinAge(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func createTopic(t *testing.T, adm *kadm.Client, topic string, partitions int32) {
	ctx := ctxT(t, 30*time.Second)
	resp, err := adm.CreateTopics(ctx, partitions, 1, nil, topic)
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	if r := resp[topic]; r.Err != nil {
		t.Fatalf("CreateTopics %s: %v", topic, r.Err)
	}
	waitTopic(t, adm, topic, true)
	waitListOffsets(t, adm, topic)
}

// waitListOffsets waits until every partition answers ListOffsets without error: metadata can
// name a leader before that leader serves the partition, and an acks=0 produce sent in that
// window is dropped silently (that is acks=0 semantics, not a broker bug).
func waitListOffsets(t *testing.T, adm *kadm.Client, topic string) {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx := ctxT(t, 10*time.Second)
		end, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = end.Error()
		}
		if err == nil {
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("topic %s: ListOffsets still failing after 30s: %v", topic, last)
}

func waitTopic(t *testing.T, adm *kadm.Client, topic string, present bool) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx := ctxT(t, 10*time.Second)
		td, err := adm.ListTopics(ctx)
		if err == nil {
			d, ok := td[topic]
			if present && ok && d.Err == nil && len(d.Partitions) > 0 {
				allLed := true
				for _, p := range d.Partitions {
					if p.Leader < 0 {
						allLed = false
					}
				}
				if allLed {
					return
				}
			}
			if !present && !ok {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("topic %s present=%v not reached in 30s", topic, present)
}

func TestAdminCreateListDeleteTopics(t *testing.T) {
	adm := newAdmin(t)
	topic := uniqueTopic("admin")
	createTopic(t, adm, topic, 4)

	ctx := ctxT(t, 30*time.Second)
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	d := td[topic]
	if d.Err != nil || len(d.Partitions) != 4 {
		t.Fatalf("describe %s: err=%v partitions=%d", topic, d.Err, len(d.Partitions))
	}
	for p := int32(0); p < 4; p++ {
		pd, ok := d.Partitions[p]
		if !ok || len(pd.Replicas) != 1 || pd.Replicas[0] != pd.Leader {
			t.Fatalf("partition %d: %+v", p, pd)
		}
	}

	brokers, err := adm.ListBrokers(ctx)
	if err != nil || len(brokers) < 1 {
		t.Fatalf("ListBrokers: %v %v", brokers, err)
	}

	// creating it again fails with TOPIC_ALREADY_EXISTS
	resp, err := adm.CreateTopics(ctx, 4, 1, nil, topic)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(resp[topic].Err, kerr.TopicAlreadyExists) {
		t.Fatalf("duplicate create: want TopicAlreadyExists, got %v", resp[topic].Err)
	}

	del, err := adm.DeleteTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if r := del[topic]; r.Err != nil {
		t.Fatalf("DeleteTopics: %v", r.Err)
	}
	waitTopic(t, adm, topic, false)

	// deleting an unknown topic fails with UNKNOWN_TOPIC_OR_PARTITION
	del, err = adm.DeleteTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(del[topic].Err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("delete unknown: want UnknownTopicOrPartition, got %v", del[topic].Err)
	}
}

func TestAdminListOffsets(t *testing.T) {
	adm := newAdmin(t)
	topic := uniqueTopic("offsets")
	createTopic(t, adm, topic, 1)
	cl := producer(t, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DisableIdempotentWrite())
	// recent: records older than retention.ms (7 days) may be deleted by the broker
	base := time.UnixMilli(baseTS)
	var recs []*kgo.Record
	for i := 0; i < 10; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Value: []byte{byte(i)},
			Timestamp: base.Add(time.Duration(i) * time.Second)})
	}
	if err := cl.ProduceSync(ctxT(t, 30*time.Second), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	start, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := start.Lookup(topic, 0); o.Err != nil || o.Offset != 0 {
		t.Fatalf("start offset: %+v", o)
	}
	if o, _ := end.Lookup(topic, 0); o.Err != nil || o.Offset != 10 {
		t.Fatalf("end offset: %+v", o)
	}
	at, err := adm.ListOffsetsAfterMilli(ctx, base.Add(3500*time.Millisecond).UnixMilli(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := at.Lookup(topic, 0); o.Err != nil || o.Offset != 4 {
		t.Fatalf("offset after +3.5s: %+v", o)
	}
}

func producer(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	all := append([]kgo.Opt{kgo.SeedBrokers(bootstrap), kgo.ProducerLinger(5 * time.Millisecond),
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// consume reads `count` records from topic/partition starting at offset, by assignment
// (kgo.ConsumePartitions: no group). Bounded by a 60 s deadline.
func consume(t *testing.T, topic string, partition int32, offset int64, count int) []*kgo.Record {
	return consumeFrom(t, bootstrap, topic, partition, offset, count)
}

// consumeFrom is consume from the broker at addr.
func consumeFrom(t *testing.T, addr, topic string, partition int32, offset int64, count int) []*kgo.Record {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(offset)}}),
		kgo.FetchMaxWait(500*time.Millisecond), kgo.MetadataMinAge(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := ctxT(t, 60*time.Second)
	var out []*kgo.Record
	for len(out) < count {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records from %s/%d before the deadline", len(out), count, topic, partition)
		}
		fs.EachError(func(tp string, p int32, err error) {
			t.Fatalf("fetch error %s/%d: %v", tp, p, err)
		})
		out = append(out, fs.Records()...)
	}
	return out
}

func TestProduceConsumeByAssignment(t *testing.T) {
	cases := []struct {
		name string
		acks kgo.Acks
		comp kgo.CompressionCodec
		all  bool
	}{
		{"acks0", kgo.NoAck(), kgo.NoCompression(), false},
		{"acks1", kgo.LeaderAck(), kgo.NoCompression(), false},
		{"acksAll", kgo.AllISRAcks(), kgo.NoCompression(), true},
		{"gzip", kgo.AllISRAcks(), kgo.GzipCompression(), true},
		{"snappy", kgo.AllISRAcks(), kgo.SnappyCompression(), true},
		{"lz4", kgo.AllISRAcks(), kgo.Lz4Compression(), true},
		{"zstd", kgo.AllISRAcks(), kgo.ZstdCompression(), true},
	}
	adm := newAdmin(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := uniqueTopic(tc.name)
			createTopic(t, adm, topic, 2)
			// idempotence (franz-go's default) is tested on its own below; keep this plain
			opts := []kgo.Opt{kgo.RequiredAcks(tc.acks), kgo.ProducerBatchCompression(tc.comp),
				kgo.DisableIdempotentWrite()}
			cl := producer(t, opts...)
			const n = 1000
			rng := rand.New(rand.NewSource(1))
			var recs []*kgo.Record
			for i := 0; i < n; i++ {
				v := make([]byte, rng.Intn(300))
				rng.Read(v)
				recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 2),
					Key:       []byte(fmt.Sprintf("k%d", i)),
					Value:     v,
					Headers:   []kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}},
					Timestamp: time.UnixMilli(baseTS + int64(i))})
			}
			res := cl.ProduceSync(ctxT(t, 60*time.Second), recs...)
			if err := res.FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
			for part := int32(0); part < 2; part++ {
				got := consume(t, topic, part, 0, n/2)
				for j, r := range got[:n/2] {
					i := j*2 + int(part)
					if r.Offset != int64(j) || !bytes.Equal(r.Value, recs[i].Value) ||
						string(r.Key) != fmt.Sprintf("k%d", i) ||
						len(r.Headers) != 1 || string(r.Headers[0].Value) != fmt.Sprint(i) ||
						r.Timestamp.UnixMilli() != baseTS+int64(i) {
						t.Fatalf("partition %d record %d mismatch: offset=%d key=%q headers=%v ts=%v",
							part, j, r.Offset, r.Key, r.Headers, r.Timestamp)
					}
				}
			}
			// from a given offset
			got := consume(t, topic, 1, 321, n/2-321)
			if got[0].Offset != 321 || !bytes.Equal(got[0].Value, recs[321*2+1].Value) {
				t.Fatalf("seek to 321: got offset %d", got[0].Offset)
			}
		})
	}
}

// The default franz-go producer is idempotent (InitProducerId, producer id/epoch/sequence in
// the batch): this checks the plain path a franz-go user gets without any option.
func TestDefaultIdempotentProducer(t *testing.T) {
	adm := newAdmin(t)
	topic := uniqueTopic("idem")
	createTopic(t, adm, topic, 1)
	cl := producer(t)
	var recs []*kgo.Record
	for i := 0; i < 100; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprint(i))})
	}
	if err := cl.ProduceSync(ctxT(t, 60*time.Second), recs...).FirstErr(); err != nil {
		t.Fatalf("idempotent produce: %v", err)
	}
	got := consume(t, topic, 0, 0, 100)
	for i, r := range got[:100] {
		if string(r.Value) != fmt.Sprint(i) || r.ProducerID < 0 {
			t.Fatalf("record %d: value=%q producerID=%d", i, r.Value, r.ProducerID)
		}
	}
}
