package edge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

// failingOrigin answers a path's first request with a copy the edge stores (stale-if-error=600)
// and every later one with the failure the path's first segment names (failAnswer). It notes
// whether each failing request was conditional.
type failingOrigin struct {
	now     func() time.Time
	release chan struct{} // closed at the test's end: a trickling body then ends
	// trickling gets the path of each failing answer that has sent its head and first bytes
	// and holds the rest of its body (trickle modes), if the test reads it.
	trickling chan string
	// hold, if not nil, holds each failing answer until it is closed.
	hold chan struct{}

	mu          sync.Mutex          // protects seen and conditional
	seen        map[string]int      // requests per path
	conditional map[string][]string // per path, each failing request's If-None-Match
}

func (o *failingOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.seen[r.URL.Path]++
	first := o.seen[r.URL.Path] == 1
	if !first {
		o.conditional[r.URL.Path] = append(o.conditional[r.URL.Path], r.Header.Get("If-None-Match"))
	}
	o.mu.Unlock()
	h := w.Header()
	h.Set("Date", o.now().UTC().Format(http.TimeFormat))
	if first {
		h.Set("Cache-Control", "max-age=10, stale-if-error=600")
		if strings.Contains(r.URL.Path, "/nowindow") {
			h.Set("Cache-Control", "max-age=10")
		}
		if strings.Contains(r.URL.Path, "/etag") {
			h.Set("ETag", `"v1"`)
		}
		io.WriteString(w, "stored copy of "+r.URL.Path)
		return
	}
	if o.hold != nil {
		<-o.hold
	}
	mode, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	failAnswer(w, r, mode, o.release, o.trickling)
}

// failAnswer writes the failure mode names: a 5xx whose body is larger than the edge keeps
// (max_object_bytes, 8 MiB by default) with or without a Content-Length, one of a size kept in
// memory but past what streams as small, or one whose body trickles and never ends (with a
// Content-Length of a size kept in memory, or chunked), said on trickling if it is not nil.
func failAnswer(w http.ResponseWriter, r *http.Request, mode string, release chan struct{}, trickling chan<- string) {
	const maxObject = 8 << 20
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	body := func(n int) { io.Copy(w, io.LimitReader(zeros{}, int64(n))) }
	switch mode {
	case "large-length":
		h.Set("Content-Length", strconv.Itoa(maxObject+1))
		w.WriteHeader(http.StatusServiceUnavailable)
		body(maxObject + 1)
	case "large-chunked":
		w.WriteHeader(http.StatusServiceUnavailable)
		body(maxObject + 1)
	case "moderate":
		h.Set("Content-Length", strconv.Itoa(smallBody+1))
		w.WriteHeader(http.StatusInternalServerError)
		body(smallBody + 1)
	case "trickle", "trickle-chunked":
		if mode == "trickle" {
			h.Set("Content-Length", "1000")
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		body(10)
		w.(http.Flusher).Flush()
		if trickling != nil {
			trickling <- r.URL.Path
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestStaleIfErrorLargeFailure: a stored copy within its stale-if-error window stands in for
// an origin's 500/503 whatever the failure's body: larger than max_object_bytes (declared, or
// chunked and found so while reading), of a size kept in memory, or trickling. The body of a
// 5xx that the copy stands in for is not waited for. Before, a 5xx declared (or found) larger
// than max_object_bytes was streamed to the client as an answer too large to keep, and one
// whose body trickled was read to its end (or to body_timeout) first. With and without
// validators on the copy: a revalidation's 5xx the same as a plain fill's.
func TestStaleIfErrorLargeFailure(t *testing.T) {
	clock := newFakeClock()
	o, addr := startFailingOrigin(t, "127.0.0.13", clock.Now)
	_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.Clock = clock.Now
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}
	})
	type stored struct {
		pc   protoClient
		path string
	}
	var copies []stored
	for _, pc := range everyProtocol(t, n) {
		for _, mode := range []string{"large-length", "large-chunked", "moderate", "trickle"} {
			for _, validators := range []string{"etag", "plain"} {
				p := "/" + mode + "/" + validators + "/" + strings.ReplaceAll(pc.name, " ", "-")
				if r := pc.do(t, http.MethodGet, p); r.status != http.StatusOK {
					t.Fatalf("%s: store %s: got %d, want 200", pc.name, p, r.status)
				}
				copies = append(copies, stored{pc, p})
			}
		}
	}
	clock.Advance(20 * time.Second) // every copy stale, within stale-if-error

	for _, c := range copies {
		t.Run(strings.TrimPrefix(c.path, "/"), func(t *testing.T) {
			// Bounded well below body_timeout: a trickling body waited for fails here.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.pc.url+c.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = testHost
			got, err := (&http.Client{Transport: c.pc.rt}).Do(req)
			if err != nil {
				t.Fatalf("GET: %v; want the stale copy", err)
			}
			defer got.Body.Close()
			b, err := io.ReadAll(io.LimitReader(got.Body, 1<<10))
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			want := "stored copy of " + c.path
			if got.StatusCode != http.StatusOK || string(b) != want {
				t.Fatalf("got %d %q (Cache-Status %q), want 200 %q (stale-if-error)", got.StatusCode, trunc(b), got.Header.Get("Cache-Status"), want)
			}
			wantCacheStatus(t, resp{status: got.StatusCode, header: got.Header}, "fwd=stale", "detail=stale-if-error")
			o.mu.Lock()
			inm := o.conditional[c.path]
			o.mu.Unlock()
			wantINM := ""
			if strings.Contains(c.path, "/etag/") {
				wantINM = `"v1"`
			}
			if len(inm) != 1 || inm[0] != wantINM {
				t.Errorf("failing requests' If-None-Match = %q, want one, %q", inm, wantINM)
			}
		})
	}
}

// TestLargeFailureWithoutStaleIfError: with no stale-if-error window on the stored copy, an
// origin's 503 larger than max_object_bytes is its answer, streamed whole to the client as
// before (the body is dropped only when a copy stands in for it).
func TestLargeFailureWithoutStaleIfError(t *testing.T) {
	clock := newFakeClock()
	_, addr := startFailingOrigin(t, "127.0.0.13", clock.Now)
	s := newSingle(t, func(c *Config) {
		c.Clock = clock.Now
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}
	})
	for _, mode := range []string{"large-length", "large-chunked"} {
		t.Run(mode, func(t *testing.T) {
			p := "/" + mode + "/etag/nowindow"
			if r := s.get(t, p); r.status != http.StatusOK {
				t.Fatalf("store: got %d, want 200", r.status)
			}
			clock.Advance(20 * time.Second)
			r := s.get(t, p)
			if r.status != http.StatusServiceUnavailable || len(r.body) != 8<<20+1 {
				t.Fatalf("got %d with %d bytes (Cache-Status %q), want the origin's 503 with its %d", r.status, len(r.body), r.header.Get("Cache-Status"), 8<<20+1)
			}
			wantCacheStatus(t, r, "fwd-status=503", "detail=too-large")
		})
	}
}

func trunc(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// startFailingOrigin runs a failingOrigin on ip until the test ends and returns it and its
// address.
func startFailingOrigin(t *testing.T, ip string, now func() time.Time) (*failingOrigin, string) {
	t.Helper()
	o := &failingOrigin{now: now, release: make(chan struct{}), seen: map[string]int{}, conditional: map[string][]string{}}
	srv := &http.Server{Handler: o}
	ln := listen(t, ip)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	t.Cleanup(func() { close(o.release) }) // before the server closes: cleanups run last first
	return o, ln.Addr().String()
}

// TestStaleIfErrorLargeFailureThroughTiers: a 503 larger than max_object_bytes, on the
// fleet's ways. Through a shield: the shield's stale copy stands in for it, and the node
// filled from the shield serves that. With no copy on the key's owner but one on another node
// of its PoP: the owner serves that node's copy (fleet-stale-if-error), as for a small 503.
// Before, the 503 was streamed to the client either way.
func TestStaleIfErrorLargeFailureThroughTiers(t *testing.T) {
	t.Run("shield", func(t *testing.T) {
		f := newFleet(t, []int{1, 1}, func(string) string { return "p0" }, withFailingOrigin(t, nil, nil))
		edge := f.nodes[1] // p1's, filled from the shield p0
		const p = "/large-length/etag/shield"
		if r := do(t, f.client, http.MethodGet, edge.Addr(), testHost, p); r.status != http.StatusOK {
			t.Fatalf("store: got %d, want 200", r.status)
		}
		f.clock.Advance(20 * time.Second) // both copies stale, within stale-if-error
		r := do(t, f.client, http.MethodGet, edge.Addr(), testHost, p)
		if want := "stored copy of " + p; r.status != http.StatusOK || r.body != want {
			t.Fatalf("got %d %q (Cache-Status %q), want 200 %q", r.status, trunc([]byte(r.body)), r.header.Get("Cache-Status"), want)
		}
	})
	t.Run("fleet-stale", func(t *testing.T) {
		// n1 does not know n0, so it fetches from the origin itself and keeps the only copy.
		f := newFleet(t, []int{2}, noShield, withFailingOrigin(t, func(c *Config) {
			if c.Node == "n1" {
				c.Peers = c.Peers[1:]
			}
			c.FleetStaleTimeout = 5 * time.Second // the default 300 ms is not what this tests
		}, nil))
		owner, holder := f.nodes[0], f.nodes[1]
		p := ownedPath(owner, "/large-length/plain/fleet%d", "")
		if r := do(t, f.client, http.MethodGet, holder.Addr(), testHost, p); r.status != http.StatusOK {
			t.Fatalf("store on the holder: got %d, want 200", r.status)
		}
		f.clock.Advance(20 * time.Second) // the holder's copy is stale, within stale-if-error
		r := do(t, f.client, http.MethodGet, owner.Addr(), testHost, p)
		if want := "stored copy of " + p; r.status != http.StatusOK || r.body != want {
			t.Fatalf("got %d %q (Cache-Status %q), want 200 %q", r.status, trunc([]byte(r.body)), r.header.Get("Cache-Status"), want)
		}
		wantCacheStatus(t, r, "detail=fleet-stale-if-error")
	})
}

// withFailingOrigin points every node of a fleet at one failingOrigin, on its clock, and
// stores it in *o if o is not nil.
func withFailingOrigin(t *testing.T, mod func(*Config), o **failingOrigin) func(*Config) {
	var addr string
	return func(c *Config) {
		if addr == "" {
			var fo *failingOrigin
			fo, addr = startFailingOrigin(t, "127.0.0.13", c.Clock)
			if o != nil {
				*o = fo
			}
		}
		c.Hosts[0].Origin = "http://" + addr
		if mod != nil {
			mod(c)
		}
	}
}

// ownedPath is the first path format gives (with 0, 1, ...) whose key owner is in the PoP,
// followed by query.
func ownedPath(owner *Node, format, query string) string {
	for i := 0; ; i++ {
		p := fmt.Sprintf(format, i) + query
		if rendezvous(owner.tiers.Load().peers, owner.key(p))[0].ID == owner.cfg.Node {
			return p
		}
	}
}

// TestStaleIfErrorTricklingFailureFleetCopy: a 503 of a size kept in memory whose body trickles
// (with a Content-Length or chunked), to a node with no copy that may stand in for it while
// another node of its PoP holds one: the client gets that node's copy while the origin still
// holds the 503's body, which is judged on its head, as a large one is. Before, the node read
// the body first and asked the fleet only then: the client waited up to body_timeout (30 s by
// default) for a body it never sees. Clients that waited for the same fill get the same copy,
// the origin asked once. With no copy in the fleet either, the 5xx is the answer, read whole
// as before.
func TestStaleIfErrorTricklingFailureFleetCopy(t *testing.T) {
	for _, tc := range []struct {
		name      string
		format    string // the path, of failingOrigin's mode
		held      bool   // the other node holds a copy; else the owner holds one without stale-if-error
		followers int    // clients that join the first one's fill
	}{
		{"trickle with length", "/trickle/plain/fleet%d", true, 0},
		{"trickle chunked", "/trickle-chunked/plain/fleet%d", true, 0},
		{"trickle, followers", "/trickle/plain/fleet%d", true, 3},
		{"no copy in the fleet", "/moderate/plain/fleet%d/nowindow", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o *failingOrigin
			// n1 does not know n0, so it fetches from the origin itself and keeps the only copy.
			f := newFleet(t, []int{2}, noShield, withFailingOrigin(t, func(c *Config) {
				if c.Node == "n1" {
					c.Peers = c.Peers[1:]
				}
				c.FleetStaleTimeout = 5 * time.Second // the default 300 ms is not what this tests
			}, &o))
			trickling := make(chan string, 1)
			o.trickling = trickling
			if tc.followers > 0 {
				o.hold = make(chan struct{})
			}
			owner, holder := f.nodes[0], f.nodes[1]
			p := ownedPath(owner, tc.format, "")
			first := holder
			if !tc.held {
				first = owner
			}
			if r := do(t, f.client, http.MethodGet, first.Addr(), testHost, p); r.status != http.StatusOK {
				t.Fatalf("store: got %d, want 200", r.status)
			}
			f.clock.Advance(20 * time.Second) // the copy is stale, within stale-if-error if it has one

			clients := 1 + tc.followers
			got := make(chan resp, clients)
			failed := make(chan error, clients)
			get := func() {
				go func() {
					r, err := tryDo(f.client, http.MethodGet, owner.Addr(), testHost, p)
					if err != nil {
						failed <- err
						return
					}
					got <- r
				}()
			}
			get()
			if tc.followers > 0 {
				wait.For(t, 5*time.Second, "the origin to hold the fill", func() bool {
					o.mu.Lock()
					defer o.mu.Unlock()
					return o.seen[p] == 2
				})
				for range tc.followers {
					get()
				}
				wait.For(t, 5*time.Second, "every client to wait for the fill", func() bool {
					buf := make([]byte, 1<<20)
					return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*filler).collapse(") >= clients
				})
				close(o.hold)
			}
			if !tc.held {
				var r resp
				select {
				case r = <-got:
				case err := <-failed:
					t.Fatalf("GET %s: %v; want the origin's 500", p, err)
				}
				if r.status != http.StatusInternalServerError || len(r.body) != smallBody+1 {
					t.Fatalf("got %d with %d bytes (Cache-Status %q), want the origin's 500 with its %d", r.status, len(r.body), r.header.Get("Cache-Status"), smallBody+1)
				}
				return
			}
			if held := <-trickling; held != p {
				t.Fatalf("the origin holds the body of %s, want %s", held, p)
			}
			// The origin holds the rest of the 503's body until the test ends: the answers
			// come before it, or only at body_timeout. Bounded well below that.
			bound := time.After(10 * time.Second)
			for i := range clients {
				select {
				case r := <-got:
					if want := "stored copy of " + p; r.status != http.StatusOK || r.body != want {
						t.Fatalf("client %d got %d %q (Cache-Status %q), want 200 %q", i, r.status, trunc([]byte(r.body)), r.header.Get("Cache-Status"), want)
					}
					wantCacheStatus(t, r, "fwd-status=503", "detail=fleet-stale-if-error")
				case err := <-failed:
					t.Fatalf("GET %s: %v; want the other node's copy", p, err)
				case <-bound:
					t.Fatalf("%d of %d clients had no answer to GET %s in 10 s while the origin held its 503's body: the node waits for the body (body_timeout 30 s) before it asks the fleet", clients-i, clients, p)
				}
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			if n := o.seen[p]; n != 2 {
				t.Errorf("requests to the origin for %s = %d, want 2 (the copy, one failing fill)", p, n)
			}
			// The 503's body, dropped mid-read once the copy was found, is no failure.
			if st, _ := originStats(owner); st.Failures != 0 {
				t.Errorf("origin breaker failures = %d, want 0: the 503 was an answer", st.Failures)
			}
		})
	}
}

// TestBackgroundRevalidationAsksNoFleet: a background revalidation (stale-while-revalidate)
// that the origin answers with a 503, of a copy without stale-if-error, does not ask the
// fleet for a copy to stand in for the 503: it has no client to serve one to. Asked on the
// 503's head in the fill, it asked every peer and the shield, once per revalidation, for as
// long as the origin failed.
func TestBackgroundRevalidationAsksNoFleet(t *testing.T) {
	f := newFleet(t, []int{2}, noShield, nil)
	owner, holder := f.nodes[0], f.nodes[1]
	p := ownedPath(owner, "/bg%d", "?"+url.Values{"cc": {"max-age=10, stale-while-revalidate=600"}}.Encode())
	path, _, _ := strings.Cut(p, "?")
	if r := do(t, f.client, http.MethodGet, owner.Addr(), testHost, p); r.status != http.StatusOK {
		t.Fatalf("store: got %d, want 200", r.status)
	}
	holderRequests := func() (n float64) {
		for _, line := range strings.Split(scrape(t, holder), "\n") {
			if v, ok := strings.CutPrefix(line, "meridian_edge_requests_total{"); ok {
				var c float64
				_, c0, _ := strings.Cut(v, "} ")
				fmt.Sscan(c0, &c)
				n += c
			}
		}
		return n
	}
	before := holderRequests()
	f.clock.Advance(20 * time.Second)
	f.origin.SetFault(path, origin.Fault{Status: http.StatusServiceUnavailable})
	r := do(t, f.client, http.MethodGet, owner.Addr(), testHost, p)
	wantCacheStatus(t, r, "detail=stale-while-revalidate")
	wait.For(t, 5*time.Second, "the background revalidation to end", func() bool {
		buf := make([]byte, 1<<20)
		return f.origin.Requests(path) >= 2 && !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*filler).revalidate")
	})
	if got := holderRequests() - before; got != 0 {
		t.Errorf("requests to the other node during the revalidation = %v, want 0", got)
	}
}

// TestStaleIfErrorDroppedFailureFollowers: clients that joined a fill whose 503 the leader's
// stale copy stood in for (its body dropped unread) ask the failing origin as little as they
// can. Those without a copy of their own (here another variant) get the origin's 503 from one
// more fill, shared among them; before, each fetched its own, one request to the failing origin
// per waiting client, where a 503 read whole had been shared. Those with a copy serve it, even
// when the 503 was one user's (Set-Cookie): they never see that answer, so there is nothing of
// another's to keep from them; before, each fetched its own 503 only to serve its copy in its
// place.
func TestStaleIfErrorDroppedFailureFollowers(t *testing.T) {
	const followers = 4
	for _, tc := range []struct {
		name      string
		variant   string // the followers'; the leader's is "a", the one stored
		setCookie bool   // on the 503
		requests  int32  // to the failing origin, in all
		status    int    // each follower's
		body      string
	}{
		{"other variant", "b", false, 2, http.StatusServiceUnavailable, "down"},
		{"other variant, one user's 503", "b", true, 1 + followers, http.StatusServiceUnavailable, "down"},
		{"same variant", "a", false, 1, http.StatusOK, "stored copy for a"},
		{"same variant, one user's 503", "a", true, 1, http.StatusOK, "stored copy for a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			var requests atomic.Int32
			failing := atomic.Bool{}
			release, release2 := make(chan struct{}), make(chan struct{})
			if tc.requests != 2 {
				close(release2) // no second fill to join: the followers' own fetches are counted
			}
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Date", clock.Now().UTC().Format(http.TimeFormat))
				w.Header().Set("Vary", "X-Variant")
				if !failing.Load() {
					w.Header().Set("Cache-Control", "max-age=10, stale-if-error=600")
					io.WriteString(w, "stored copy for "+r.Header.Get("X-Variant"))
					return
				}
				if requests.Add(1) == 1 {
					<-release // the followers join this fill meanwhile
				} else {
					<-release2 // the other followers join the second fill meanwhile
				}
				if tc.setCookie {
					w.Header().Set("Set-Cookie", "sid=1")
				}
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, "down")
			}))
			n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: followers + 1}}
			t.Cleanup(c.CloseIdleConnections)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/v", "X-Variant", "a"); r.status != http.StatusOK {
				t.Fatalf("store variant a: got %d, want 200", r.status)
			}
			clock.Advance(20 * time.Second) // a's copy stale, within stale-if-error; b has none
			failing.Store(true)

			type result struct {
				r   resp
				err error
			}
			leader := make(chan result, 1)
			go func() {
				r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/v", "X-Variant", "a")
				leader <- result{r, err}
			}()
			wait.For(t, 5*time.Second, "the origin to hold the leader's fill", func() bool { return requests.Load() == 1 })
			rest := make(chan result, followers)
			for range followers {
				go func() {
					r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/v", "X-Variant", tc.variant)
					rest <- result{r, err}
				}()
			}
			wait.For(t, 5*time.Second, "every client to wait for the leader's fill", func() bool {
				buf := make([]byte, 1<<20)
				return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*filler).collapse(") >= followers+1
			})
			close(release)
			if tc.requests == 2 {
				// Then each follower waits for one more fill (a nested collapse), or fetches its own.
				wait.For(t, 5*time.Second, "the followers to ask the origin again", func() bool {
					buf := make([]byte, 1<<20)
					return requests.Load() > 2 || requests.Load() == 2 && strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*filler).collapse(") >= 2*followers
				})
				close(release2)
			}
			if l := <-leader; l.err != nil || l.r.status != http.StatusOK || l.r.body != "stored copy for a" {
				t.Fatalf("leader: %d %q, %v; want 200, a's stale copy", l.r.status, l.r.body, l.err)
			} else {
				// The dropped 503 is still what the fill got: Cache-Status says so.
				wantCacheStatus(t, l.r, "fwd=stale", "fwd-status=503", "detail=stale-if-error")
			}
			for i := range followers {
				f := <-rest
				if f.err != nil || f.r.status != tc.status || f.r.body != tc.body {
					t.Errorf("follower %d: %d %q, %v; want %d %q", i, f.r.status, f.r.body, f.err, tc.status, tc.body)
				}
			}
			if got := requests.Load(); got != tc.requests {
				t.Errorf("requests to the failing origin = %d, want %d", got, tc.requests)
			}
		})
	}
}

// TestFailureFleetAskHoldsNoOriginSlot: while the fleet is asked for a copy to stand in for a
// small 503 (no copy here, a peer slow to answer), the 503's body, which has all arrived, is
// read and its origin slot freed: another path of the same origin is fetched meanwhile, and
// the client gets the 503 once the ask ends. Before, the ask came on the 503's head with the
// body left unread, holding the slot (max_concurrent) up to fleet_stale_timeout: the other
// path was refused with the bulkhead full and asked the same slow fleet in its turn.
func TestFailureFleetAskHoldsNoOriginSlot(t *testing.T) {
	asked, release := make(chan string, 4), make(chan struct{})
	slow := startHTTP(t, "127.0.0.12", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- r.URL.Path
		select { // holds the only-if-cached ask until the test is done with it
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusGatewayTimeout)
	}))
	defer close(release)
	s := newSingle(t, func(c *Config) {
		c.Peers = []Peer{{ID: c.Node, Addr: "127.0.0.11:1"}, {ID: "slow", Addr: slow}}
		c.PeerKey = testPeerKey
		c.FleetStaleTimeout = 20 * time.Second // bounded by the test's release instead
		c.Upstream.MaxConcurrent = 1
	})
	failing := ownedPath(s.edge, "/failing%d", "")
	other := ownedPath(s.edge, "/other%d", "?"+url.Values{"cc": {"max-age=600"}}.Encode())
	s.origin.SetFault(failing, origin.Fault{Status: http.StatusServiceUnavailable})
	first := make(chan resp, 1)
	go func() {
		r, err := tryDo(s.client, http.MethodGet, s.edge.Addr(), testHost, failing)
		if err != nil {
			r.body = err.Error()
		}
		first <- r
	}()
	if p := <-asked; p != failing {
		t.Fatalf("the fleet was asked for %s, want %s", p, failing)
	}
	// The ask is held: the 503's fill leaves the origin's one slot once its body is read.
	wait.For(t, 5*time.Second, "the 503's exchange to leave its origin slot", func() bool {
		st, _ := originStats(s.edge)
		return st.InFlight == 0
	})
	if r := s.get(t, other); r.status != http.StatusOK || r.header.Get("Cache-Status") == "" || strings.Contains(r.header.Get("Cache-Status"), "fleet") {
		t.Errorf("GET %s while the fleet is asked for %s: %d %q (Cache-Status %q), want 200 from the origin", other, failing, r.status, trunc([]byte(r.body)), r.header.Get("Cache-Status"))
	}
	if n := s.origin.Requests(strings.Split(other, "?")[0]); n != 1 {
		t.Errorf("origin requests for %s while the fleet is asked = %d, want 1", other, n)
	}
	release <- struct{}{}
	if r := <-first; r.status != http.StatusServiceUnavailable {
		t.Errorf("GET %s: %d %q, want the origin's 503", failing, r.status, trunc([]byte(r.body)))
	}
}
