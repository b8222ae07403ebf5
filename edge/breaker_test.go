package edge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/origin/fetch"
	"github.com/meridian-cdn/meridian/wire"
)

// originStats returns the stats of the node's one origin upstream (ok false before its first
// use).
func originStats(n *Node) (st fetch.Stats, ok bool) {
	for _, u := range n.upstreamStats() {
		if strings.HasPrefix(u.Name, "origin") {
			return u, true
		}
	}
	return fetch.Stats{}, false
}

// TestBreaker5xxOnOnePath: an origin that answers 500 on one broken path is alive. 100 of those
// answers in a row reach the client as 500s, every one from the origin, and every other path
// keeps being served from the origin; the breaker never opens.
func TestBreaker5xxOnOnePath(t *testing.T) {
	s := newSingle(t, func(c *Config) {
		c.Upstream.ConsecutiveFailures = 3 // under the old rule, 3 answers of 500 opened it
		c.Upstream.OpenTimeout = time.Hour
	})
	s.origin.SetFault("/broken", origin.Fault{Status: http.StatusInternalServerError})
	other := 0
	getOther := func() {
		t.Helper()
		other++
		p := obj(fmt.Sprintf("/ok%d", other), "cc", "max-age=60")
		r := s.get(t, p)
		if r.status != http.StatusOK || !strings.HasPrefix(r.body, fmt.Sprintf("/ok%d@v1:", other)) {
			t.Fatalf("GET %s after %d answers of 500 = %d %.40q, want 200 from the origin", p, s.origin.Requests("/broken"), r.status, r.body)
		}
		wantCacheStatus(t, r, "fwd=miss", "fwd-status=200")
	}
	for i := range 100 {
		if r := s.get(t, "/broken"); r.status != http.StatusInternalServerError {
			t.Fatalf("GET /broken #%d = %d, want the origin's 500 (Cache-Status %q)", i, r.status, r.header.Get("Cache-Status"))
		}
		if i%10 == 9 {
			getOther()
		}
	}
	for range 10 {
		getOther()
	}
	if got := s.origin.Requests("/broken"); got != 100 {
		t.Errorf("origin requests for /broken = %d, want 100 (each answer came from the origin)", got)
	}
	st, ok := originStats(s.edge)
	if !ok || st.State != "closed" || st.Failures != 0 || st.BreakerRejections != 0 {
		t.Errorf("origin upstream after 100 answers of 500 = %+v (found %v), want closed, 0 failures, 0 rejections", st, ok)
	}
}

// TestBreakerDeadOrigin: an origin that does not answer at all (its listener is gone, or nothing
// ever listened) still opens the breaker; once open, misses fail fast without dialing it.
func TestBreakerDeadOrigin(t *testing.T) {
	tests := []struct {
		name string
		// start returns the origin's address and a function that kills it (nil: already dead).
		start func(t *testing.T) (addr string, kill func())
	}{
		{"stopped", func(t *testing.T) (string, func()) {
			o, err := origin.New(origin.Config{})
			if err != nil {
				t.Fatal(err)
			}
			ln := listen(t, "127.0.0.12")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- o.Serve(ctx, ln) }()
			kill := func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("origin Serve: %v", err)
				}
			}
			t.Cleanup(func() {
				if ctx.Err() == nil {
					kill()
				}
			})
			return ln.Addr().String(), kill
		}},
		{"never-listened", func(t *testing.T) (string, func()) {
			ln := listen(t, "127.0.0.12")
			addr := ln.Addr().String()
			ln.Close()
			return addr, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const failures = 3
			addr, kill := tt.start(t)
			n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{
				PoP: "tst", Node: "e1",
				Hosts:    []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}},
				Upstream: UpstreamConfig{ConsecutiveFailures: failures, OpenTimeout: time.Hour},
			})
			client := &http.Client{}
			t.Cleanup(client.CloseIdleConnections)
			get := func(path string) resp { return do(t, client, http.MethodGet, n.Addr(), testHost, path) }
			if kill != nil {
				if r := get("/alive"); r.status != http.StatusOK {
					t.Fatalf("GET /alive before the origin died = %d, want 200", r.status)
				}
				kill()
			}

			cold := 0
			wait.For(t, 10*time.Second, "the origin breaker to open", func() bool {
				cold++
				if r := get(fmt.Sprintf("/cold%d", cold)); r.status != http.StatusBadGateway && r.status != http.StatusGatewayTimeout {
					t.Fatalf("GET /cold%d with the origin dead = %d, want 502 or 504", cold, r.status)
				}
				st, _ := originStats(n)
				return st.State == "open"
			})
			before, _ := originStats(n)
			if before.Failures < failures {
				t.Errorf("origin upstream when it opened = %+v, want at least %d failures", before, failures)
			}
			for i := range 10 {
				if r := get(fmt.Sprintf("/fast%d", i)); r.status != http.StatusBadGateway {
					t.Errorf("GET /fast%d with the breaker open = %d, want 502", i, r.status)
				}
			}
			after, _ := originStats(n)
			if after.Requests != before.Requests || after.BreakerRejections != before.BreakerRejections+10 {
				t.Errorf("origin upstream over 10 misses while open: %+v -> %+v, want no request sent and 10 breaker rejections", before, after)
			}
		})
	}
}

// TestBreakerDroppedConnections: ten paths whose origin handler drops the connection without an
// answer, asked for at once (the http-tests cache-tests suite does this), fail alone: each is
// one request's failure, not the origin's, so the breaker stays shut and every other path is
// still served. Under the old rule (every transport failure counted in a row) the fifth drop
// opened it for open_timeout.
func TestBreakerDroppedConnections(t *testing.T) {
	s := newSingle(t, func(c *Config) { c.Upstream.OpenTimeout = time.Hour })
	const dropped = 10
	errs := make(chan error, dropped)
	for i := range dropped {
		p := fmt.Sprintf("/drop%d", i)
		s.origin.SetFault(p, origin.Fault{Drop: true})
		go func() { // not s.get: a t.Fatal here would leave errs one short
			r, err := tryDo(s.client, http.MethodGet, s.edge.Addr(), testHost, p)
			if err == nil && r.status != http.StatusBadGateway {
				err = fmt.Errorf("GET %s (dropped by the origin) = %d, want 502", p, r.status)
			}
			errs <- err
		}()
	}
	for range dropped {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	st, _ := originStats(s.edge)
	if st.State != "closed" || st.Failures < dropped {
		t.Fatalf("origin upstream after %d dropped connections = %+v, want closed with at least %d failures", dropped, st, dropped)
	}
	for i := range 5 {
		p := obj(fmt.Sprintf("/ok%d", i), "cc", "max-age=60")
		if r := s.get(t, p); r.status != http.StatusOK {
			t.Fatalf("GET %s after the dropped connections = %d (Cache-Status %q), want 200 from the origin", p, r.status, r.header.Get("Cache-Status"))
		}
	}
	if st, _ := originStats(s.edge); st.BreakerRejections != 0 {
		t.Errorf("origin upstream = %+v, want no breaker rejections", st)
	}
}

// TestHungShieldCountsAgainstItsBreaker: a shield node that accepts connections and never
// answers costs every miss peer_timeout. Those timeouts are the shield's failures: they count
// against its breaker, which opens once they are half of 20 requests, and misses then go to the
// origin at once. Before, peer_timeout ended the exchange as a cancellation by the caller,
// which the breaker ignores: a hung shield was waited for on every miss for ever.
func TestHungShieldCountsAgainstItsBreaker(t *testing.T) {
	hung := listen(t, "127.0.1.40")
	accepted := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	t.Cleanup(func() {
		hung.Close()
		for {
			select {
			case c := <-accepted:
				c.Close()
			default:
				return
			}
		}
	})
	clock := newFakeClock()
	_, originAddr := startOrigin(t, "127.0.0.40", clock.Now)
	n, _ := startEdge(t, listen(t, "127.0.2.40"), Config{PoP: "p1", Node: "n0", Clock: clock.Now, PeerKey: testPeerKey,
		PeerTimeout: 100 * time.Millisecond,
		Hosts:       []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr, Shield: "p0"}},
		Shields:     map[string][]Peer{"p0": {{ID: "s0", Addr: hung.Addr().String()}}},
		Upstream:    UpstreamConfig{OpenTimeout: time.Hour}})
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	shield := func() fetch.Stats {
		for _, u := range n.upstreamStats() {
			if u.Name == "peer s0 "+hung.Addr().String() {
				return u
			}
		}
		return fetch.Stats{}
	}
	for i := range 20 {
		r := do(t, client, http.MethodGet, n.Addr(), testHost, obj(fmt.Sprintf("/h%d", i), "cc", "max-age=60"))
		if r.status != http.StatusOK {
			t.Fatalf("GET /h%d with the shield hung = %d, want 200 from the origin", i, r.status)
		}
	}
	if st := shield(); st.Failures != 20 || st.State != "open" {
		t.Fatalf("shield upstream after 20 misses it never answered = %+v, want 20 failures and open", st)
	}
	r := do(t, client, http.MethodGet, n.Addr(), testHost, obj("/after", "cc", "max-age=60"))
	if st := shield(); r.status != http.StatusOK || st.BreakerRejections != 1 {
		t.Errorf("GET with the shield's breaker open = %d, shield %+v: want 200 and the shield not asked", r.status, st)
	}
}
