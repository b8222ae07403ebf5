package purge

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
)

// natsServer is a real embedded NATS server with JetStream and the production credentials and
// permissions (internal/natstest) that a test can stop and start again on the same port and
// store directory.
type natsServer struct {
	*natstest.Server
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	return &natsServer{natstest.Start(t)}
}

func (n *natsServer) start() { n.Restart() }

func (n *natsServer) stop() { n.Stop() }

func (n *natsServer) url() string { return n.URL() }

// connect opens a client as control (allowed everything) that reconnects forever, quickly, and
// is closed at the end of the test.
func (n *natsServer) connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natstest.ConnectURL(t, n.url(), append(n.Options(natsauth.Control()),
		nats.ReconnectWait(20*time.Millisecond), nats.Timeout(2*time.Second))...)
}

// nodeOptions authenticate as edge node node of PoP pop.
func (n *natsServer) nodeOptions(pop, node string) []nats.Option {
	return n.Options(natsauth.Edge(pop, node))
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder is an Apply/OnGap pair that records what it saw, in order.
type recorder struct {
	mu      sync.Mutex // guards the fields below
	applied []Message
	gaps    [][2]uint64
	// events interleaves "apply:<seq>" and "gap:<last>-<next>" to check order.
	events []string
}

func (r *recorder) apply(_ context.Context, m Message) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, m)
	r.events = append(r.events, "apply:"+strconv.FormatUint(m.Seq, 10))
	return len(m.Values), nil
}

func (r *recorder) onGap(_ context.Context, last, next uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaps = append(r.gaps, [2]uint64{last, next})
	r.events = append(r.events, "gap:"+strconv.FormatUint(last, 10)+"-"+strconv.FormatUint(next, 10))
}

func (r *recorder) snapshot() (applied []Message, gaps [][2]uint64, events []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.applied...), append([][2]uint64(nil), r.gaps...), append([]string(nil), r.events...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied)
}

// runSubscriber starts s.Run in a goroutine that the test's cleanup stops and waits for, and
// waits until s is ready.
func runSubscriber(t *testing.T, s *Subscriber) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Subscriber.Run = %v, want nil", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Subscriber.Run did not return within 15s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber not ready within 10s")
	}
	return stop
}

func msg(host string, kind Kind, values ...string) Message {
	return Message{ID: NewID(), Host: host, Kind: kind, Values: values, IssuedAt: time.Now()}
}
