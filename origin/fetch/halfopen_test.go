package fetch

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestHalfOpenProbeDecidedByHead: once the upstream is back, the half-open probe's answer
// head closes the breaker. A probe whose body streams for long (an event stream passed
// through, a large object) must not keep the breaker half-open, refusing every other request
// with ErrTooManyRequests, until that body ends (up to pass_timeout, an hour).
func TestHalfOpenProbeDecidedByHead(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := serve(t, "127.0.0.105", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: 1\n\n")
			w.(http.Flusher).Flush()
			select { // the stream goes on until the test ends
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	var down atomic.Bool
	down.Store(true)
	var d net.Dialer
	u := New(Config{
		Name: "origin recovering", ConsecutiveFailures: 2, OpenTimeout: 100 * time.Millisecond,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if down.Load() {
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
			}
			return d.DialContext(ctx, network, addr)
		},
	})
	defer u.Close()
	ctx := context.Background()
	for range 2 {
		if _, err := doRead(t, u, ctx, srv.URL+"/"); err == nil {
			t.Fatal("Do with the upstream down: no error")
		}
	}
	if st := u.Stats(); st.State != "open" {
		t.Fatalf("state after 2 refused dials = %q, want open", st.State)
	}
	down.Store(false)
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })

	// The probe: its head comes at once, its body never ends.
	probe, err := u.Do(get(t, ctx, srv.URL+"/stream"))
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	defer probe.Body.Close()
	if _, err := io.ReadFull(probe.Body, make([]byte, 9)); err != nil {
		t.Fatalf("probe's first event: %v", err)
	}
	if st := u.Stats(); st.State != "closed" {
		t.Errorf("state once the probe's head came = %q, want closed", st.State)
	}
	if got, err := doRead(t, u, ctx, srv.URL+"/"); err != nil || got != http.StatusOK {
		t.Errorf("Do while the probe's body streams = %d, %v; want 200 (the upstream answered)", got, err)
	}
}

// TestCallerTimerIsATimeout: a caller that ends the exchange with a timer of its own (a
// cancellation whose cause is a deadline, as the edge's peer_timeout) reports a timeout, which
// the breaker counts; a plain cancellation stays excluded.
func TestCallerTimerIsATimeout(t *testing.T) {
	f := &flaky{gate: make(chan struct{})}
	srv := serve(t, "127.0.0.106", f)
	u := New(Config{})
	defer u.Close()
	for i, cause := range []error{context.Canceled, context.DeadlineExceeded} {
		ctx, cancel := context.WithCancelCause(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := doRead(t, u, ctx, srv.URL); errc <- err }()
		wait.For(t, 5*time.Second, "the request at the upstream", func() bool { return f.hits.Load() == int64(i+1) })
		cancel(cause)
		<-errc
		if got, want := u.Stats().Failures, uint64(i); got != want {
			t.Errorf("after a cancel with cause %v: Failures = %d, want %d", cause, got, want)
		}
	}
}
