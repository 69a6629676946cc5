package compat

import (
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestDelayedDelivery: franz-go produces records with rill-delay-ms headers to a topic with
// rill.delivery.delayed.enable=true; a plain consumer gets each once, in due-time order, no
// earlier than due, with the delivery headers. Rill only (Kafka has no delayed delivery).
func TestDelayedDelivery(t *testing.T) {
	if os.Getenv("KAFKA_BOOTSTRAP") != "" {
		t.Skip("delayed delivery is a rill feature")
	}
	adm := newAdmin(t)
	topic := uniqueTopic("delayed")
	enable := "true"
	ctx := ctxT(t, 60*time.Second)
	resp, err := adm.CreateTopics(ctx, 1, 1, map[string]*string{"rill.delivery.delayed.enable": &enable}, topic)
	if err != nil || resp[topic].Err != nil {
		t.Fatalf("CreateTopics: %v %v", err, resp[topic].Err)
	}
	waitTopic(t, adm, topic, true)
	waitListOffsets(t, adm, topic)

	cl := producer(t)
	const n = 200
	earliest := map[string]int64{}
	for i := 0; i < n; i++ {
		delay := (i * 7919) % 900
		value := "g" + strconv.Itoa(i)
		earliest[value] = time.Now().UnixMilli() + int64(delay)
		r := &kgo.Record{Topic: topic, Partition: 0, Value: []byte(value),
			Headers: []kgo.RecordHeader{{Key: "rill-delay-ms", Value: []byte(strconv.Itoa(delay))}}}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	recs := consume(t, topic, 0, 0, n)
	seen := map[string]bool{}
	var dues []int64
	for _, r := range recs {
		v := string(r.Value)
		if seen[v] {
			t.Fatalf("duplicate %s", v)
		}
		seen[v] = true
		var due int64 = -1
		for _, h := range r.Headers {
			if h.Key == "rill-delayed-deliver-at" {
				due, _ = strconv.ParseInt(string(h.Value), 10, 64)
			}
		}
		if due < earliest[v] {
			t.Fatalf("%s due %d before its delay allowed (%d)", v, due, earliest[v])
		}
		if r.Timestamp.UnixMilli() < due {
			t.Fatalf("%s delivered at %d, due %d", v, r.Timestamp.UnixMilli(), due)
		}
		dues = append(dues, due)
	}
	if len(seen) != n {
		t.Fatalf("got %d distinct records of %d", len(seen), n)
	}
	if !sort.SliceIsSorted(dues, func(i, j int) bool { return dues[i] < dues[j] }) {
		t.Fatalf("not in due-time order: %v", dues)
	}
}
