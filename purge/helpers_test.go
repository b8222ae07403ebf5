package purge

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServer is a real embedded NATS server with JetStream that a test can stop and start again
// on the same port and store directory.
type natsServer struct {
	t     testing.TB
	host  string
	port  int
	store string
	srv   *server.Server
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	n := &natsServer{t: t, host: "127.0.0.1", port: -1, store: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host:      n.host,
		Port:      n.port,
		JetStream: true,
		StoreDir:  n.store,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		n.t.Fatalf("new nats server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("nats server not ready within 10s")
	}
	n.srv = srv
	if n.port == -1 {
		_, p, _ := net.SplitHostPort(srv.Addr().String())
		n.port, _ = strconv.Atoi(p)
	}
}

func (n *natsServer) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

func (n *natsServer) url() string { return "nats://" + net.JoinHostPort(n.host, strconv.Itoa(n.port)) }

// connect opens a client that reconnects forever, quickly, and is closed at the end of the test.
func (n *natsServer) connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.url(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
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
