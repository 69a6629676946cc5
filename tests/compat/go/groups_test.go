package compat

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// groupMember is one franz-go consumer in a group (classic protocol, franz-go's default
// cooperative-sticky balancer), polling in its own goroutine: it records what it processes,
// then commits those records synchronously.
type groupMember struct {
	name   string
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	owned   map[int32]bool
	events  []string
	recs    map[[2]int64]string
	commitE []error
}

func newGroupMember(t *testing.T, name, group, topic string) *groupMember {
	m := &groupMember{name: name, owned: map[int32]bool{}, recs: map[[2]int64]string{}, done: make(chan struct{})}
	note := func(kind string, parts map[string][]int32, add bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range parts[topic] {
			if add {
				m.owned[p] = true
			} else {
				delete(m.owned, p)
			}
		}
		m.events = append(m.events, fmt.Sprintf("%s%v", kind, parts[topic]))
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ClientID(name),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond),
		kgo.MetadataMinAge(250*time.Millisecond), kgo.MetadataMaxAge(2*time.Second),
		kgo.RequestTimeoutOverhead(10*time.Second),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, p map[string][]int32) { note("assign", p, true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, p map[string][]int32) { note("revoke", p, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, p map[string][]int32) { note("lost", p, false) }),
	)
	if err != nil {
		t.Fatal(err)
	}
	m.cl = cl
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second) // bound
	m.cancel = cancel
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			fs := cl.PollRecords(ctx, 500)
			recs := fs.Records()
			if len(recs) == 0 {
				continue
			}
			m.mu.Lock()
			for _, r := range recs {
				m.recs[[2]int64{int64(r.Partition), r.Offset}] = string(r.Value)
			}
			m.mu.Unlock()
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := cl.CommitRecords(cctx, recs...); err != nil {
				m.mu.Lock()
				m.commitE = append(m.commitE, err)
				m.mu.Unlock()
			}
			ccancel()
		}
	}()
	return m
}

// stop ends the poll loop and closes the client: LeaveGroup, no commit (autocommit is off).
func (m *groupMember) stop() {
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(40 * time.Second):
	}
	m.cl.Close()
}

func (m *groupMember) ownedParts() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int32
	for p := range m.owned {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (m *groupMember) describe() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprintf("%s: owned=%v events=%v records=%d commitErrors=%v", m.name, m.owned, m.events, len(m.recs), m.commitE)
}

func describeAll(ms []*groupMember) string {
	s := ""
	for _, m := range ms {
		s += "\n" + m.describe()
	}
	return s
}

// waitSplit waits until each member owns exactly `each` partitions, disjoint, covering all
// `partitions`, for a whole second.
func waitSplit(t *testing.T, ms []*groupMember, partitions, each int) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var since time.Time
	for time.Now().Before(deadline) {
		union := map[int32]bool{}
		ok := true
		for _, m := range ms {
			o := m.ownedParts()
			ok = ok && len(o) == each
			for _, p := range o {
				ok = ok && !union[p]
				union[p] = true
			}
		}
		if ok && len(union) == partitions {
			if since.IsZero() {
				since = time.Now()
			}
			if time.Since(since) >= time.Second {
				return
			}
		} else {
			since = time.Time{}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no stable split of %d partitions, %d each, in 45s:%s", partitions, each, describeAll(ms))
}

func waitProcessed(t *testing.T, ms []*groupMember, want map[[2]int64]string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := map[[2]int64]string{}
		for _, m := range ms {
			m.mu.Lock()
			for k, v := range m.recs {
				got[k] = v
			}
			m.mu.Unlock()
		}
		var missing [][2]int64
		for k, v := range want {
			if gv, ok := got[k]; !ok {
				missing = append(missing, k)
			} else if gv != v {
				t.Fatalf("record %v: got %q, produced %q", k, gv, v)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d produced records never processed (e.g. %v):%s", len(missing), len(want), missing[0], describeAll(ms))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func produceTagged(t *testing.T, topic, tag string, n, partitions int) map[[2]int64]string {
	t.Helper()
	cl := producer(t)
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: []byte(fmt.Sprintf("%s-%d", tag, i))})
	}
	res := cl.ProduceSync(ctxT(t, 60*time.Second), recs...)
	if err := res.FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	out := map[[2]int64]string{}
	for _, r := range res {
		out[[2]int64{int64(r.Record.Partition), r.Record.Offset}] = string(r.Record.Value)
	}
	return out
}

func committedOffsets(t *testing.T, group, topic string) map[int32]int64 {
	t.Helper()
	adm := newAdmin(t)
	resp, err := adm.FetchOffsets(ctxT(t, 30*time.Second), group)
	if err != nil {
		t.Fatalf("FetchOffsets: %v", err)
	}
	if err := resp.Error(); err != nil {
		t.Fatalf("FetchOffsets: %v", err)
	}
	out := map[int32]int64{}
	for p, o := range resp[topic] {
		out[p] = o.At
	}
	return out
}

func waitCommitted(t *testing.T, group, topic string, want map[int32]int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got map[int32]int64
	for time.Now().Before(deadline) {
		got = committedOffsets(t, group, topic)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("group %s: committed %v, want %v", group, got, want)
}

// Two franz-go members split 6 partitions 3/3, process and commit everything, leave; a new
// member of the same group resumes exactly at the committed offsets.
func TestGroupJoinSplitCommitResume(t *testing.T) {
	const partitions = 6
	adm := newAdmin(t)
	topic := uniqueTopic("groups")
	createTopic(t, adm, topic, partitions)
	group := "g-" + topic
	first := produceTagged(t, topic, "a", 300, partitions)

	ms := []*groupMember{newGroupMember(t, "franz-0", group, topic), newGroupMember(t, "franz-1", group, topic)}
	func() {
		defer func() {
			for _, m := range ms {
				m.stop()
			}
		}()
		waitSplit(t, ms, partitions, 3)
		waitProcessed(t, ms, first)
	}()
	want := map[int32]int64{}
	for p := int32(0); p < partitions; p++ {
		want[p] = 50
	}
	waitCommitted(t, group, topic, want)

	described, err := adm.DescribeGroups(ctxT(t, 30*time.Second), group)
	if err != nil {
		t.Fatalf("DescribeGroups: %v", err)
	}
	if g := described[group]; g.Err != nil || g.State != "Empty" || len(g.Members) != 0 {
		t.Fatalf("after both left: state %q, %d members, err %v", g.State, len(g.Members), g.Err)
	}

	second := produceTagged(t, topic, "b", 60, partitions)
	r := newGroupMember(t, "franz-resume", group, topic)
	func() {
		defer r.stop()
		waitSplit(t, []*groupMember{r}, partitions, partitions)
		waitProcessed(t, []*groupMember{r}, second)
		time.Sleep(500 * time.Millisecond)
	}()
	r.mu.Lock()
	for k, v := range r.recs {
		if _, ok := second[k]; !ok {
			t.Errorf("resumed member processed %v=%q, which was committed before it joined", k, v)
		}
	}
	r.mu.Unlock()
	for p := range want {
		want[p] = 60
	}
	waitCommitted(t, group, topic, want)
}

// Offsets of a group with no members (a "simple" group, as stream processors use): commit with
// metadata, fetch, OffsetDelete refused while a member is subscribed to the topic
// (GROUP_SUBSCRIBED_TO_TOPIC) and accepted once the group is empty, then ListGroups and
// DeleteGroups.
func TestGroupOffsetsCommitFetchDelete(t *testing.T) {
	const partitions = 2
	adm := newAdmin(t)
	topic := uniqueTopic("groupoffs")
	createTopic(t, adm, topic, partitions)
	group := "g-" + topic
	produceTagged(t, topic, "a", 20, partitions)

	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: topic, Partition: 0, At: 7, LeaderEpoch: -1, Metadata: "meta-0"})
	os.Add(kadm.Offset{Topic: topic, Partition: 1, At: 3, LeaderEpoch: -1, Metadata: ""})
	cr, err := adm.CommitOffsets(ctxT(t, 30*time.Second), group, os)
	if err == nil {
		err = cr.Error()
	}
	if err != nil {
		t.Fatalf("CommitOffsets to a group without members: %v", err)
	}
	fr, err := adm.FetchOffsets(ctxT(t, 30*time.Second), group)
	if err == nil {
		err = fr.Error()
	}
	if err != nil {
		t.Fatalf("FetchOffsets: %v", err)
	}
	for p, want := range map[int32][2]any{0: {int64(7), "meta-0"}, 1: {int64(3), ""}} {
		got, ok := fr.Lookup(topic, p)
		if !ok || got.At != want[0].(int64) || got.Metadata != want[1].(string) {
			t.Fatalf("partition %d: fetched %+v (found %v), want offset %v metadata %q", p, got, ok, want[0], want[1])
		}
	}

	// a member resumes from the committed offsets, and while it is subscribed the group's
	// offsets for the topic cannot be deleted
	m := newGroupMember(t, "franz-offs", group, topic)
	func() {
		defer m.stop()
		waitSplit(t, []*groupMember{m}, partitions, partitions)
		deadline := time.Now().Add(30 * time.Second)
		for {
			m.mu.Lock()
			n := len(m.recs)
			_, early0 := m.recs[[2]int64{0, 6}]
			_, early1 := m.recs[[2]int64{1, 2}]
			m.mu.Unlock()
			if early0 || early1 {
				t.Fatalf("member read below the committed offsets:%s", describeAll([]*groupMember{m}))
			}
			if n == (10-7)+(10-3) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member got %d records, want 10:%s", n, describeAll([]*groupMember{m}))
			}
			time.Sleep(100 * time.Millisecond)
		}
		dr, err := adm.DeleteOffsets(ctxT(t, 30*time.Second), group, kadm.TopicsSet{topic: {0: {}}})
		if err == nil {
			err = dr.Error()
		}
		if !errors.Is(err, kerr.GroupSubscribedToTopic) {
			t.Fatalf("OffsetDelete with a subscribed member: got %v, want GROUP_SUBSCRIBED_TO_TOPIC", err)
		}
	}()
	waitCommitted(t, group, topic, map[int32]int64{0: 10, 1: 10})

	dr, err := adm.DeleteOffsets(ctxT(t, 30*time.Second), group, kadm.TopicsSet{topic: {0: {}}})
	if err == nil {
		err = dr.Error()
	}
	if err != nil {
		t.Fatalf("OffsetDelete on the empty group: %v", err)
	}
	if got := committedOffsets(t, group, topic); len(got) != 1 || got[1] != 10 {
		t.Fatalf("after OffsetDelete of partition 0: committed %v, want only 1=10", got)
	}

	listed, err := adm.ListGroups(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	if g, ok := listed[group]; !ok || g.ProtocolType != "consumer" || g.State != "Empty" {
		t.Fatalf("ListGroups: %s is %+v (found %v), want protocol type consumer, state Empty", group, g, ok)
	}
	del, err := adm.DeleteGroups(ctxT(t, 30*time.Second), group)
	if err != nil || del[group].Err != nil {
		t.Fatalf("DeleteGroups: %v %v", err, del[group].Err)
	}
	listed, err = adm.ListGroups(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	if _, ok := listed[group]; ok {
		t.Fatalf("group %s still listed after DeleteGroups", group)
	}
}
