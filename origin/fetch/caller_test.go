package fetch

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestContextDoneBeforeSend: a request whose context has already ended (an edge fill that
// spent its fill_timeout on hung peers and shields before turning to the origin) is refused at
// once. It says nothing about the upstream, which it never reaches: five of them in a row
// opened the breaker of a healthy origin (each counted as a dial that could not reach it), and
// one taken as the half-open probe opened it again.
func TestContextDoneBeforeSend(t *testing.T) {
	var hits atomic.Int64
	srv := serve(t, "127.0.0.107", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	var down atomic.Bool
	var d net.Dialer
	const failures = 2
	u := New(Config{Name: "origin healthy", ConsecutiveFailures: failures, MinRequests: 1000, OpenTimeout: 50 * time.Millisecond,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if down.Load() {
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
			}
			return d.DialContext(ctx, network, addr)
		}})
	defer u.Close()
	send := func(t *testing.T, ctx context.Context, method string) {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("x") // net/http's Transport
		}
		req, err := http.NewRequestWithContext(ctx, method, srv.URL, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := u.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s with an ended context: no error", method)
		}
		if !errors.Is(err, ctx.Err()) || !strings.Contains(err.Error(), "origin healthy") {
			t.Errorf("%s with an ended context: error = %v, want %v naming the upstream", method, err, ctx.Err())
		}
	}
	for range 2 * failures {
		for _, ctx := range []context.Context{expired, canceled} {
			send(t, ctx, http.MethodGet)
			send(t, ctx, http.MethodPost)
		}
	}
	if st := u.Stats(); st.State != "closed" || st.Requests != 0 || st.Failures != 0 || st.InFlight != 0 || hits.Load() != 0 {
		t.Fatalf("after requests whose context had ended: Stats() = %+v, %d hits; want closed and nothing counted or sent", st, hits.Load())
	}

	// Half-open: such a request does not take the probe, nor fail it.
	down.Store(true)
	for range failures {
		doRead(t, u, context.Background(), srv.URL)
	}
	down.Store(false)
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })
	send(t, expired, http.MethodGet)
	if st := u.Stats(); st.State != "half-open" {
		t.Errorf("state after a request with an expired context while half-open = %q, want half-open", st.State)
	}
	if st, err := doRead(t, u, context.Background(), srv.URL); err != nil || st != http.StatusOK {
		t.Errorf("the probe = %d, %v; want 200", st, err)
	}
	if st := u.Stats(); st.State != "closed" {
		t.Errorf("state after the probe's answer = %q, want closed", st.State)
	}
}

// TestDialCutByCallerNotInARow: a dial that the caller's own deadline ends before DialTimeout
// (a caller with little time left, an upstream slow to connect) is a timeout failure, counted
// in FailureRatio, but not a failure to reach the upstream: it did not have its DialTimeout,
// so it does not count toward ConsecutiveFailures. When DialTimeout ends it, it does.
func TestDialCutByCallerNotInARow(t *testing.T) {
	hole := "http://" + blackhole(t, "127.0.0.108") + "/"
	const failures = 2
	for _, tt := range []struct {
		name        string
		dialTimeout time.Duration
		callerWait  time.Duration
		wantState   string
	}{
		{"caller deadline", time.Minute, 50 * time.Millisecond, "closed"},
		{"dial timeout", 50 * time.Millisecond, time.Minute, "open"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := New(Config{DialTimeout: tt.dialTimeout, ConsecutiveFailures: failures, MinRequests: 1000})
			defer u.Close()
			for i := range failures + 1 {
				ctx, cancel := context.WithTimeout(context.Background(), tt.callerWait)
				_, err := doRead(t, u, ctx, hole)
				cancel()
				if err == nil {
					t.Fatalf("request %d to a blackhole: no error", i)
				}
			}
			st := u.Stats()
			if st.State != tt.wantState {
				t.Errorf("state after %d dials cut by the %s = %q, want %q", failures+1, tt.name, st.State, tt.wantState)
			}
			if tt.wantState == "closed" && st.Failures != failures+1 {
				t.Errorf("Stats().Failures = %d, want %d: each is a timeout", st.Failures, failures+1)
			}
		})
	}
}

// TestFailureRatioLeavesOutCancels: the caller's cancellations count as neither success nor
// failure, in FailureRatio too. gobreaker counts them among its Requests, so they weighed as
// successes: four failures of four answered requests did not open the breaker once six
// callers had given up.
func TestFailureRatioLeavesOutCancels(t *testing.T) {
	f := &flaky{gate: make(chan struct{})}
	slow := serve(t, "127.0.0.109", f)
	// An upstream that cuts every body short: a failure after it was reached, which counts in
	// FailureRatio only.
	short := startRaw(t, "127.0.0.109", func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); ok {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
		}
	})
	u := New(Config{ConsecutiveFailures: 100, MinRequests: 4, FailureRatio: 0.5})
	defer u.Close()
	for i := range 6 {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := doRead(t, u, ctx, slow.URL); errc <- err }()
		wait.For(t, 5*time.Second, "the request at the upstream", func() bool { return f.hits.Load() == int64(i+1) })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Do after cancel: error = %v, want context.Canceled", err)
		}
	}
	for i := range 4 {
		if _, err := doRead(t, u, context.Background(), "http://"+short.addr+"/"); err == nil || errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("request %d with a short body: error = %v, want the body cut short", i, err)
		}
	}
	if st := u.Stats(); st.State != "open" || st.Failures != 4 {
		t.Errorf("after 6 cancels and 4 failures: Stats() = %+v, want open (4 of 4 counted requests failed)", st)
	}
}

// TestFailureLongerThanInterval: an exchange counts in the window of Interval in which it
// ends. gobreaker counts it in the window it started in, and drops it once that window has
// passed: every failure that took Interval or longer (a hung upstream's, with
// response_header_timeout and interval both 10s by default) was lost, and an upstream that
// timed out on every request never opened the breaker.
func TestFailureLongerThanInterval(t *testing.T) {
	const interval = 300 * time.Millisecond
	var hits atomic.Int64
	gate := make(chan struct{})
	srv := serve(t, "127.0.0.110", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.(*net.TCPConn).SetLinger(0) // RST: a failure after the upstream was reached
			c.Close()
		}
	}))
	u := New(Config{Interval: interval, MinRequests: 4, FailureRatio: 0.5, ConsecutiveFailures: 100})
	defer u.Close()
	errc := make(chan error, 4)
	for range 4 {
		go func() { _, err := doRead(t, u, context.Background(), srv.URL); errc <- err }()
	}
	wait.For(t, 5*time.Second, "4 requests at the upstream", func() bool { return hits.Load() == 4 })
	// What the test is about: the window they started in passes while they run.
	<-time.After(interval + 100*time.Millisecond)
	close(gate)
	for range 4 {
		if err := <-errc; err == nil {
			t.Fatal("a reset exchange: no error")
		}
	}
	if st := u.Stats(); st.State != "open" || st.Failures != 4 {
		t.Errorf("after 4 of 4 requests failed, each longer than Interval: Stats() = %+v, want open", st)
	}
}
