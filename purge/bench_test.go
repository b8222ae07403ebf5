package purge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/durhist"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
)

const benchNodes = 20

// benchFleet is one embedded NATS server, benchNodes subscribers each on its own connection, and
// a tracker on the publisher's connection.
type benchFleet struct {
	js       jetstream.JetStream
	nc       *nats.Conn
	tracker  *Tracker
	expected []NodeRef
	ns       *natstest.Server
	pub      *Publisher // as control publishes: announcements in stream order
	subs     []*Subscriber
}

// replays is how many times the fleet's subscribers replayed from the stream instead of taking
// purges live (0 when every announcement arrived in order).
func (f *benchFleet) replays() uint64 {
	var n uint64
	for _, s := range f.subs {
		n += s.Replays()
	}
	return n
}

func startBenchFleet(b *testing.B) *benchFleet {
	b.Helper()
	ns := natstest.Start(b)
	nc, js := ns.Connect(b)
	ctx := context.Background()
	if err := EnsureStream(ctx, js, "", 0, 1); err != nil {
		b.Fatal(err)
	}
	tr, err := NewTracker(nc, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close() })
	f := &benchFleet{js: js, nc: nc, tracker: tr, ns: ns, pub: &Publisher{JS: js, Tracker: tr}}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for i := range benchNodes {
		ref := NodeRef{PoP: fmt.Sprintf("pop%02d", i/2), Node: fmt.Sprintf("n%d", i%2)}
		f.expected = append(f.expected, ref)
		snc, err := nats.Connect(ns.URL(), ns.Options(natsauth.Edge(ref.PoP, ref.Node))...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(snc.Close)
		sjs, _ := jetstream.New(snc)
		s, err := NewSubscriber(SubscriberConfig{JS: sjs, PoP: ref.PoP, Node: ref.Node,
			Apply: func(context.Context, Message) (int, error) { return 0, nil },
			OnGap: func(context.Context, uint64, uint64) {}})
		if err != nil {
			b.Fatal(err)
		}
		f.subs = append(f.subs, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Run(runCtx)
		}()
		<-s.Ready()
	}
	return f
}

func msf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// BenchmarkFanout measures, per purge, the time from publishing to the tracker's receipt of the
// last of 20 nodes' acks (through the stream, each node's subscriber and the ack subject), next to
// the bare core-NATS fan-out floor measured in the same run (floor-*), and the same fan-out with a
// reply from each node (rtt-floor-*). publish-* is the PubAck round trip.
func BenchmarkFanout(b *testing.B) {
	f := startBenchFleet(b)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	pub := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		m := Message{ID: NewID(), Host: "www.example.com", Kind: KindURL, Values: []string{fmt.Sprintf("/p/%d", i)}, IssuedAt: start}
		if _, err := f.pub.Publish(ctx, m, f.expected); err != nil {
			b.Fatal(err)
		}
		pub = append(pub, time.Since(start))
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r := f.tracker.Wait(wctx, m.ID)
		cancel()
		if !r.Complete {
			b.Fatalf("purge %d: %d nodes pending after 5s", i, len(r.Pending))
		}
		// The tracker stamps the last ack on receipt, which may precede the PubAck's return.
		lat = append(lat, r.CompletedAt.Sub(start))
	}
	b.StopTimer()
	fl := natstest.FanoutFloor(b, f.ns.URL(), benchNodes, max(b.N, 200), nil, f.ns.Options(natsauth.Control())...)
	rt := natstest.RoundTripFloor(b, f.ns.URL(), benchNodes, max(b.N, 200), nil, f.ns.Options(natsauth.Control())...)
	lh, fh, ph, rh := durhist.Of(lat), durhist.Of(fl), durhist.Of(pub), durhist.Of(rt)
	b.ReportMetric(msf(ph.Quantile(0.50)), "publish-p50-ms")
	b.ReportMetric(msf(ph.Quantile(0.99)), "publish-p99-ms")
	b.ReportMetric(msf(lh.Quantile(0.50)), "p50-ms")
	b.ReportMetric(msf(lh.Quantile(0.99)), "p99-ms")
	b.ReportMetric(msf(lh.Max()), "max-ms")
	b.ReportMetric(msf(fh.Quantile(0.50)), "floor-p50-ms")
	b.ReportMetric(msf(fh.Quantile(0.99)), "floor-p99-ms")
	b.ReportMetric(float64(lh.Quantile(0.99))/float64(max(fh.Quantile(0.99), 1)), "p99/floor")
	b.ReportMetric(msf(rh.Quantile(0.50)), "rtt-floor-p50-ms")
	b.ReportMetric(msf(rh.Quantile(0.99)), "rtt-floor-p99-ms")
	b.ReportMetric(float64(lh.Quantile(0.99))/float64(max(rh.Quantile(0.99), 1)), "p99/rtt-floor")
	b.ReportMetric(float64(f.replays()), "replays")
}

// BenchmarkSustained measures purges per second with every one acked by all 20 nodes: publishers
// run concurrently and the clock stops when the last ack of the last purge arrived.
func BenchmarkSustained(b *testing.B) {
	f := startBenchFleet(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const publishers = 16
	ids := make([]string, b.N)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				m := Message{ID: NewID(), Host: "www.example.com", Kind: KindKey, Values: []string{"k"}, IssuedAt: time.Now()}
				ids[i] = m.ID
				if _, err := f.pub.Publish(ctx, m, f.expected); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	for _, id := range ids {
		if r := f.tracker.Wait(ctx, id); !r.Complete {
			b.Fatalf("purge %s: %d nodes pending", id, len(r.Pending))
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "purges/s")
	b.ReportMetric(float64(b.N*benchNodes)/elapsed.Seconds(), "acks/s")
	b.ReportMetric(float64(f.replays()), "replays")
}
