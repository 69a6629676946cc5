package compat

import (
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// cuttingProxy forwards loopback TCP connections to upstream and, while cutting is on, closes
// each after a random byte budget (both directions counted), forwarding a random prefix of
// the last chunk: torn requests and lost responses, which make an idempotent producer resend
// batches the broker already stored.
type cuttingProxy struct {
	ln       net.Listener
	upstream atomic.Value // string
	cutting  atomic.Bool
	cuts     atomic.Int64
	mu       sync.Mutex
	rng      *rand.Rand
	minBytes int64
	maxBytes int64
}

func newCuttingProxy(t *testing.T, seed int64) *cuttingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{ln: ln, rng: rand.New(rand.NewSource(seed)), minBytes: 50_000, maxBytes: 500_000}
	go p.acceptLoop()
	t.Cleanup(func() { ln.Close() })
	return p
}

func (p *cuttingProxy) addr() string { return p.ln.Addr().String() }

func (p *cuttingProxy) acceptLoop() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, _ := p.upstream.Load().(string)
		server, err := net.DialTimeout("tcp", up, 5*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		budget := p.minBytes + p.rng.Int63n(p.maxBytes-p.minBytes)
		p.mu.Unlock()
		var left atomic.Int64
		left.Store(budget)
		var once sync.Once
		closeBoth := func() { once.Do(func() { client.Close(); server.Close() }) }
		go p.pump(client, server, &left, closeBoth)
		go p.pump(server, client, &left, closeBoth)
	}
}

func (p *cuttingProxy) pump(src, dst net.Conn, left *atomic.Int64, closeBoth func()) {
	defer closeBoth()
	buf := make([]byte, 64*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if p.cutting.Load() && left.Add(-int64(n)) <= 0 {
				p.cuts.Add(1)
				p.mu.Lock()
				keep := p.rng.Intn(n + 1)
				p.mu.Unlock()
				dst.Write(buf[:keep])
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// franz-go's idempotent producer (its default settings) through connections cut
// at random: every record acknowledged, each stored exactly once, in order.
func TestIdempotentProducerThroughConnectionCuts(t *testing.T) {
	if os.Getenv("KAFKA_BOOTSTRAP") != "" {
		t.Skip("needs rill's --advertised-listeners to put the proxy in front")
	}
	proxy := newCuttingProxy(t, 42)
	cmd, tmp, direct, err := startRillWith("--advertised-listeners", proxy.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	defer stopRill(cmd)
	proxy.upstream.Store(direct)

	adm, err := kgo.NewClient(kgo.SeedBrokers(direct))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	topic := uniqueTopic("idem-cuts")
	admin := kadm.NewClient(adm)
	createTopic(t, admin, topic, 2)

	cl, err := kgo.NewClient(kgo.SeedBrokers(proxy.addr()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(2*time.Millisecond),
		// Requests well below the proxy's byte budgets, so most get through.
		kgo.ProducerBatchMaxBytes(16*1024),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordDeliveryTimeout(60*time.Second),
		kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 20000
	value := func(i int) string { return fmt.Sprintf("r-%06d-%0100d", i, 0) }
	proxy.cutting.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for i := 0; i < n; i++ {
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(value(i))},
			func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				wg.Done()
			})
	}
	wg.Wait()
	proxy.cutting.Store(false)
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d records failed, first: %v", f, firstErr.Load())
	}
	if proxy.cuts.Load() < 3 {
		t.Fatalf("only %d cuts: retries were not exercised", proxy.cuts.Load())
	}
	ends, err := admin.ListEndOffsets(ctxT(t, 30*time.Second), topic)
	if err != nil {
		t.Fatal(err)
	}
	for part := int32(0); part < 2; part++ {
		end, _ := ends.Lookup(topic, part)
		if end.Offset != n/2 {
			t.Fatalf("partition %d holds %d records, want %d (duplicates or losses)", part, end.Offset, n/2)
		}
		got := consumeFrom(t, proxy.addr(), topic, part, 0, n/2)
		for j, r := range got[:n/2] {
			if want := value(j*2 + int(part)); string(r.Value) != want {
				t.Fatalf("partition %d offset %d: %q, want %q", part, j, r.Value[:8], want[:8])
			}
		}
	}
	t.Logf("%d connection cuts", proxy.cuts.Load())
}
