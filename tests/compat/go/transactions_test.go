package compat

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

const txnPartitions = 3

func txnProducer(t *testing.T, txnID string) *kgo.Client {
	return producer(t, kgo.TransactionalID(txnID), kgo.TransactionTimeout(60*time.Second))
}

// produceTxnRecords sends perPartition records to every partition in the open transaction
// and waits for their acknowledgements (so that aborted records really are in the log).
func produceTxnRecords(t *testing.T, cl *kgo.Client, topic, tag string, perPartition int) map[int32][]string {
	sent := map[int32][]string{}
	var recs []*kgo.Record
	for i := 0; i < perPartition; i++ {
		for p := int32(0); p < txnPartitions; p++ {
			v := fmt.Sprintf("%s-p%d-%03d", tag, p, i)
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: []byte(tag), Value: []byte(v)})
			sent[p] = append(sent[p], v)
		}
	}
	if err := cl.ProduceSync(ctxT(t, 30*time.Second), recs...).FirstErr(); err != nil {
		t.Fatalf("produce in transaction %s: %v", tag, err)
	}
	return sent
}

// readIsolated reads one partition from offset 0 with the given isolation level until `want`
// records have come, then polls once more for half a second to catch any record beyond them.
// Bounded: 60 s.
func readIsolated(t *testing.T, topic string, partition int32, level kgo.IsolationLevel, want int) []string {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(0)}}),
		kgo.FetchIsolationLevel(level), kgo.FetchMaxWait(200*time.Millisecond),
		kgo.MetadataMinAge(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []string
	poll := func(ctx context.Context) {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(tp string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("fetch error %s/%d: %v", tp, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Attrs.IsControl() {
				t.Fatalf("control record surfaced at %s/%d@%d", r.Topic, r.Partition, r.Offset)
			}
			out = append(out, string(r.Value))
		})
	}
	ctx := ctxT(t, 60*time.Second)
	for len(out) < want {
		if ctx.Err() != nil {
			t.Fatalf("%s/%d: read %d of %d records before the deadline", topic, partition, len(out), want)
		}
		poll(ctx)
	}
	extra, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	poll(extra)
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTransactionsCommitAbortIsolation: 12 transactions over 3 partitions, every third one
// aborted (the last one among them). read_committed sees exactly the committed records in
// order per partition, read_uncommitted every record in send order, and no control record
// surfaces; the end offsets count one marker per transaction.
func TestTransactionsCommitAbortIsolation(t *testing.T) {
	adm := newAdmin(t)
	topic := uniqueTopic("txn")
	createTopic(t, adm, topic, txnPartitions)
	cl := txnProducer(t, "go-"+topic)
	committed := map[int32][]string{}
	all := map[int32][]string{}
	aborted := 0
	for n := 0; n < 12; n++ {
		abort := n%3 == 2
		if err := cl.BeginTransaction(); err != nil {
			t.Fatalf("begin %d: %v", n, err)
		}
		tag := fmt.Sprintf("commit%02d", n)
		if abort {
			tag = fmt.Sprintf("abort%02d", n)
		}
		sent := produceTxnRecords(t, cl, topic, tag, 4+n)
		end := kgo.TryCommit
		if abort {
			end = kgo.TryAbort
			aborted++
		}
		if err := cl.EndTransaction(ctxT(t, 30*time.Second), end); err != nil {
			t.Fatalf("end transaction %d (abort=%v): %v", n, abort, err)
		}
		for p, vs := range sent {
			all[p] = append(all[p], vs...)
			if !abort {
				committed[p] = append(committed[p], vs...)
			}
		}
	}
	if aborted != 4 {
		t.Fatalf("aborted %d transactions, want 4", aborted)
	}
	for p := int32(0); p < txnPartitions; p++ {
		if got := readIsolated(t, topic, p, kgo.ReadCommitted(), len(committed[p])); !equalStrings(got, committed[p]) {
			t.Errorf("read_committed partition %d: got %d records %q..., want %d", p, len(got), head(got), len(committed[p]))
		}
		if got := readIsolated(t, topic, p, kgo.ReadUncommitted(), len(all[p])); !equalStrings(got, all[p]) {
			t.Errorf("read_uncommitted partition %d: got %d records %q..., want %d", p, len(got), head(got), len(all[p]))
		}
	}
	// the last abort marker may follow the abort's answer by a moment (in Kafka too): read the
	// end offsets again until they settle, bounded
	var problems []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		problems = problems[:0]
		ends, err := adm.ListEndOffsets(ctxT(t, 30*time.Second), topic)
		if err != nil {
			t.Fatal(err)
		}
		stable, err := adm.ListCommittedOffsets(ctxT(t, 30*time.Second), topic)
		if err != nil {
			t.Fatal(err)
		}
		for p := int32(0); p < txnPartitions; p++ {
			want := int64(len(all[p]) + 12)
			if o, _ := ends.Lookup(topic, p); o.Err != nil || o.Offset != want {
				problems = append(problems, fmt.Sprintf("partition %d: high watermark %d (%v), want %d", p, o.Offset, o.Err, want))
			}
			if o, _ := stable.Lookup(topic, p); o.Err != nil || o.Offset != want {
				problems = append(problems, fmt.Sprintf("partition %d: last stable offset %d (%v), want %d", p, o.Offset, o.Err, want))
			}
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func head(s []string) []string {
	if len(s) > 3 {
		return s[:3]
	}
	return s
}

// TestTransactionsFencing: a second client with the same transactional.id fences the first,
// whose open transaction is aborted: its records are not visible read_committed, its next
// produce fails with a fencing error, and it ends with PRODUCER_FENCED (on the abort, or
// under transactions v1 on its next use).
func TestTransactionsFencing(t *testing.T) {
	adm := newAdmin(t)
	topic := uniqueTopic("txn-fence")
	createTopic(t, adm, topic, txnPartitions)
	id := "go-" + topic
	p1 := txnProducer(t, id)
	if err := p1.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	zombie := produceTxnRecords(t, p1, topic, "zombie", 4)

	p2 := txnProducer(t, id)
	if err := p2.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	winner := produceTxnRecords(t, p2, topic, "winner", 3) // InitProducerId happens here
	if err := p2.EndTransaction(ctxT(t, 30*time.Second), kgo.TryCommit); err != nil {
		t.Fatalf("commit of the new producer: %v", err)
	}

	fenced := func(err error) bool {
		return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
	}
	err := p1.ProduceSync(ctxT(t, 30*time.Second),
		&kgo.Record{Topic: topic, Partition: 0, Value: []byte("zombie-late")}).FirstErr()
	t.Logf("produce of the fenced client: %v", err)
	if !fenced(err) {
		t.Fatalf("produce of the fenced client: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
	}
	// franz-go refuses to commit a transaction in which a record failed
	// (OPERATION_NOT_ATTEMPTED, client side). Under transactions v2 (the broker finalizes
	// transaction.version 2, as Kafka 4.4 does) the abort then reaches the coordinator, which
	// answers PRODUCER_FENCED. Under v1 franz-go treats INVALID_PRODUCER_EPOCH as a timed-out
	// transaction (KIP-588): the abort ends locally and the client asks for its producer id
	// again, which the coordinator fences; BeginTransaction reports it.
	err = p1.EndTransaction(ctxT(t, 30*time.Second), kgo.TryCommit)
	t.Logf("commit of the fenced client: %v", err)
	if !fenced(err) && !errors.Is(err, kerr.OperationNotAttempted) {
		t.Fatalf("commit of the fenced client: %v, want a fencing error or OPERATION_NOT_ATTEMPTED", err)
	}
	err = p1.EndTransaction(ctxT(t, 30*time.Second), kgo.TryAbort)
	t.Logf("abort of the fenced client: %v", err)
	if err == nil {
		err = p1.BeginTransaction()
		t.Logf("begin after the abort (transactions v1): %v", err)
		if err == nil {
			err = p1.ProduceSync(ctxT(t, 30*time.Second),
				&kgo.Record{Topic: topic, Partition: 0, Value: []byte("zombie-again")}).FirstErr()
			t.Logf("produce after the abort: %v", err)
		}
	}
	if !errors.Is(err, kerr.ProducerFenced) {
		t.Fatalf("the fenced client: %v, want PRODUCER_FENCED", err)
	}
	for p := int32(0); p < txnPartitions; p++ {
		if got := readIsolated(t, topic, p, kgo.ReadCommitted(), len(winner[p])); !equalStrings(got, winner[p]) {
			t.Errorf("read_committed partition %d: %q, want %q", p, got, winner[p])
		}
		want := append(append([]string{}, zombie[p]...), winner[p]...) // no zombie-late, no zombie-again
		if got := readIsolated(t, topic, p, kgo.ReadUncommitted(), len(want)); !equalStrings(got, want) {
			t.Errorf("read_uncommitted partition %d: %q, want %q", p, got, want)
		}
	}
}
