package fetch

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestBodyReadWholeThenClosedLate: a body read to its end is a success, even when the caller
// closes it after BodyTimeout (it held the bytes while it did something else with them).
func TestBodyReadWholeThenClosedLate(t *testing.T) {
	srv := serve(t, "127.0.0.30", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "whole")
	}))
	for _, tc := range []struct {
		name string
		req  func() *http.Request
	}{
		{"h1", func() *http.Request { return get(t, context.Background(), srv.URL) }},
		{"head", func() *http.Request {
			req, _ := http.NewRequest(http.MethodHead, srv.URL, nil) // no body to read
			return req
		}},
		{"transport", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x")) // a body: net/http's Transport
			return req
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := New(Config{BodyTimeout: 100 * time.Millisecond})
			defer u.Close()
			resp, err := u.Do(tc.req())
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if tc.name != "head" {
				data, err := io.ReadAll(resp.Body)
				if err != nil || string(data) != "whole" {
					t.Fatalf("read body = %q, %v; want whole, nil", data, err)
				}
			}
			b := resp.Body.(*body)
			wait.For(t, 5*time.Second, "the body timeout to pass", b.timedOut)
			resp.Body.Close()
			if st := u.Stats(); st.Failures != 0 || st.InFlight != 0 {
				t.Errorf("Stats() = %+v, want no failure and nothing in flight", st)
			}
		})
	}
}

// TestMany5xxKeepBreakerClosed: under the default config, a run of 5xx answers, on both the
// HTTP/1.1 path and net/http's Transport (a request with a body), is many responses: the
// breaker stays closed and counts no failure.
func TestMany5xxKeepBreakerClosed(t *testing.T) {
	srv := serve(t, "127.0.0.31", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		io.WriteString(w, "boom")
	}))
	u := New(Config{})
	defer u.Close()
	for range 50 {
		if st, err := doRead(t, u, context.Background(), srv.URL); err != nil || st != 500 {
			t.Fatalf("GET = %d, %v; want 500, nil", st, err)
		}
	}
	for range 50 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
		resp, err := u.Do(req)
		if err != nil || resp.StatusCode != 500 {
			t.Fatalf("POST = %v, %v; want 500", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if st := u.Stats(); st.State != "closed" || st.Failures != 0 || st.InFlight != 0 {
		t.Errorf("Stats() after 100 answers of 500 = %+v, want closed, no failure, nothing in flight", st)
	}
}

// TestPanicReleasesSlot: a panic inside Do (here from the caller's DialContext, which the
// HTTP/1.1 path runs on the caller's goroutine; FailureStatus and an injected Transport run
// there too) goes on up to the caller, but the bulkhead slot and the breaker's outcome are
// released on the way: a server that recovers it (net/http does) must not lose a slot per
// panic, nor keep a half-open breaker waiting for a probe that never reports.
func TestPanicReleasesSlot(t *testing.T) {
	srv := serve(t, "127.0.0.33", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	var panics atomic.Int32
	panics.Store(1)
	var d net.Dialer
	u := New(Config{MaxConcurrent: 1, QueueWait: time.Millisecond, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if panics.Add(-1) >= 0 {
			panic("dialer bug")
		}
		return d.DialContext(ctx, network, addr)
	}})
	defer u.Close()
	func() {
		defer func() {
			if r := recover(); r != "dialer bug" {
				t.Errorf("recovered %v, want the dialer's panic", r)
			}
		}()
		u.Do(get(t, context.Background(), srv.URL))
	}()
	if st := u.Stats(); st.InFlight != 0 {
		t.Errorf("Stats().InFlight after a panic = %d, want 0", st.InFlight)
	}
	if st, err := doRead(t, u, context.Background(), srv.URL); err != nil || st != http.StatusOK {
		t.Errorf("Do after a panic = %d, %v; want 200, nil", st, err)
	}

	// A FailureStatus that panics once an answer came: the slot is back, and so is the
	// connection (the next request reuses it).
	panics.Store(1)
	var conns atomic.Int32
	u = New(Config{MaxConcurrent: 1, QueueWait: time.Millisecond,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conns.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		FailureStatus: func(int) bool {
			if panics.Add(-1) >= 0 {
				panic("status bug")
			}
			return false
		}})
	defer u.Close()
	func() {
		defer func() { recover() }()
		u.Do(get(t, context.Background(), srv.URL))
	}()
	if st, err := doRead(t, u, context.Background(), srv.URL); err != nil || st != http.StatusOK {
		t.Errorf("Do after a panic in FailureStatus = %d, %v; want 200, nil", st, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections dialed, want 1: the answer's connection closed cleanly and reused", n)
	}
	if st := u.Stats(); st.InFlight != 0 || st.Failures != 1 {
		t.Errorf("Stats() = %+v, want nothing in flight and the panic as the one failure", st)
	}
}
