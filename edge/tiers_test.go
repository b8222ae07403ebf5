package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

// testFleet is PoPs of edge nodes on distinct 127.0.x.y addresses in front of one origin.
type testFleet struct {
	origin     *origin.Server
	stopOrigin func() // its address refuses connections from then on
	clock      *fakeClock
	nodes      []*Node // in PoP order, then node order
	stops      []func()
	client     *http.Client
}

// newFleet starts len(pops) PoPs with pops[i] nodes each; PoP i is "p<i>", its nodes listen on
// 127.0.<i+1>.<10+j>. Every host uses shield (may be "").
func newFleet(t testing.TB, pops []int, shield func(pop string) string, mod func(*Config)) *testFleet {
	t.Helper()
	f := &testFleet{clock: newFakeClock()}
	var originAddr string
	f.origin, originAddr, f.stopOrigin = startStoppableOrigin(t, "127.0.0.10", f.clock.Now)
	type slot struct {
		pop, id string
		ln      net.Listener
	}
	var slots []slot
	members := map[string][]Peer{}
	for i, count := range pops {
		pop := fmt.Sprintf("p%d", i)
		for j := range count {
			ln := listen(t, fmt.Sprintf("127.0.%d.%d", i+1, 10+j))
			id := fmt.Sprintf("n%d", j)
			slots = append(slots, slot{pop, id, ln})
			members[pop] = append(members[pop], Peer{ID: id, Addr: ln.Addr().String()})
		}
	}
	for _, s := range slots {
		cfg := Config{
			PoP: s.pop, Node: s.id, Clock: f.clock.Now,
			Hosts:   []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr, Shield: shield(s.pop)}},
			Peers:   members[s.pop],
			Shields: members,
			PeerKey: testPeerKey,
		}
		if mod != nil {
			mod(&cfg)
		}
		n, stop := startEdge(t, s.ln, cfg)
		f.nodes = append(f.nodes, n)
		f.stops = append(f.stops, stop)
	}
	f.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	t.Cleanup(f.client.CloseIdleConnections)
	return f
}

func noShield(string) string { return "" }

// TestShieldAndPeerFill: 2 PoPs x 3 nodes, p0 the shield; 1,000 requests for 100 cold keys
// spread over all six nodes give exactly 100 origin requests.
func TestShieldAndPeerFill(t *testing.T) {
	f := newFleet(t, []int{3, 3}, func(string) string { return "p0" }, nil)
	const keys, requests = 100, 1000
	var wg sync.WaitGroup
	var failures atomic.Int64
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				key := i % keys
				n := f.nodes[(i/keys+key)%len(f.nodes)]
				req, _ := http.NewRequest(http.MethodGet, "http://"+n.Addr()+obj(fmt.Sprintf("/k%d", key), "cc", "max-age=600"), nil)
				req.Host = testHost
				r, err := f.client.Do(req)
				if err != nil {
					failures.Add(1)
					continue
				}
				b, _ := io.ReadAll(r.Body)
				r.Body.Close()
				if r.StatusCode != 200 || !strings.HasPrefix(string(b), fmt.Sprintf("/k%d@v1:", key)) {
					failures.Add(1)
				}
			}
		}()
	}
	for i := range requests {
		work <- i
	}
	close(work)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d requests failed", n, requests)
	}
	if got := f.origin.Total(); got != keys {
		t.Errorf("origin requests = %d, want exactly %d (one per key for the whole fleet)", got, keys)
	}
	// The non-shield PoP's nodes filled from the shield, never from the origin.
	for _, n := range f.nodes[3:] {
		if got := counterValue(t, n, "meridian_edge_origin_fetches_total"); got != 0 {
			t.Errorf("node %s fetched %v times from the origin; only the shield may", n.Name(), got)
		}
	}
}

// TestOwnerStopped: the owner of keys stops mid-run; clients see no errors and ownership moves,
// with at most one origin request per key per new owner.
func TestOwnerStopped(t *testing.T) {
	f := newFleet(t, []int{3}, noShield, nil)
	const keys = 60
	path := func(k int) string { return obj(fmt.Sprintf("/o%d", k), "cc", "max-age=600") }
	for k := range keys {
		if r := do(t, f.client, http.MethodGet, f.nodes[k%3].Addr(), testHost, path(k)); r.status != 200 {
			t.Fatalf("warm-up %d = %d", k, r.status)
		}
	}
	if got := f.origin.Total(); got != keys {
		t.Fatalf("warm-up origin requests = %d, want %d", got, keys)
	}
	owned := 0
	for k := range keys {
		if rendezvous(f.nodes[0].tiers.Load().peers, f.nodes[0].key(path(k)))[0].ID == "n2" {
			owned++
		}
	}
	f.stops[2]()
	f.origin.ResetStats()
	for round := range 2 {
		for k := range keys {
			n := f.nodes[(k+round)%2]
			if r := do(t, f.client, http.MethodGet, n.Addr(), testHost, path(k)); r.status != 200 {
				t.Errorf("after the owner stopped, key %d on %s = %d", k, n.Name(), r.status)
			}
		}
	}
	if got := f.origin.Total(); got > int64(owned) {
		t.Errorf("origin requests after the owner stopped = %d, want at most %d (keys it owned)", got, owned)
	}
}

// TestOriginDown: stale copies anywhere in the PoP are served; unknown keys fail fast; the
// breaker opens and then lets only probes through; recovery brings no stampede. Two outages:
// the origin gone (its address refuses connections: each node's breaker opens after
// consecutive_failures of them), and an origin that accepts connections and drops every one
// without an answer (each a failure of its own exchange, so the failure ratio opens it: at
// most MinRequests' 20 requests per node in the window).
func TestOriginDown(t *testing.T) {
	for _, tt := range []struct {
		name    string
		down    func(f *testFleet)
		perNode uint64 // requests a node may send before its breaker opens
		resends bool   // the origin may see each one twice (below)
	}{
		{"refused", func(f *testFleet) { f.stopOrigin() }, 3, false},
		{"dropped", func(f *testFleet) { f.origin.SetFault("", origin.Fault{Drop: true}) }, 20, true},
	} {
		t.Run(tt.name, func(t *testing.T) { testOriginDown(t, tt.down, tt.perNode, tt.resends) })
	}
}

func testOriginDown(t *testing.T, down func(f *testFleet), perNode uint64, resends bool) {
	// The breakers stay open for the whole test: no half-open probe can reach the origin, so
	// what the origin sees is exactly what opened them, whatever the machine's speed.
	f := newFleet(t, []int{3}, noShield, func(c *Config) {
		c.Upstream.ConsecutiveFailures = 3
		c.Upstream.OpenTimeout = time.Hour
	})
	const keys = 30
	path := func(k int) string { return obj(fmt.Sprintf("/d%d", k), "cc", "max-age=10, stale-if-error=3600") }
	for k := range keys {
		do(t, f.client, http.MethodGet, f.nodes[0].Addr(), testHost, path(k))
	}
	f.clock.Advance(time.Minute) // everything is stale now
	f.origin.ResetStats()
	sent := func() (requests, refused uint64) {
		for _, n := range f.nodes {
			for _, u := range n.upstreamStats() {
				if strings.HasPrefix(u.Name, "origin") {
					requests += u.Requests
					refused += u.BreakerRejections
				}
			}
		}
		return requests, refused
	}
	sentBefore, _ := sent()
	down(f)
	for k := range keys {
		for _, n := range f.nodes {
			r := do(t, f.client, http.MethodGet, n.Addr(), testHost, path(k))
			if r.status != 200 || !strings.HasPrefix(r.body, fmt.Sprintf("/d%d@v1:", k)) {
				t.Fatalf("key %d on %s during the outage = %d", k, n.Name(), r.status)
			}
			if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, "stale-if-error") {
				t.Errorf("key %d on %s: Cache-Status %q does not say stale-if-error", k, n.Name(), cs)
			}
		}
	}
	// Each node's breaker opened after perNode failures and then refused every other request
	// of the 3*keys clients made. (The origin may count up to twice that: Go's transport
	// resends an idempotent request once when a reused connection dies before answering.)
	requests, refused := sent()
	if got, limit := requests-sentBefore, 3*perNode; got > limit || refused == 0 {
		t.Errorf("origin requests sent during the outage = %d (want at most %d), refused by breakers %d (want some)", got, limit, refused)
	}
	if limit := int64(3 * perNode); resends {
		if got := f.origin.Total(); got > 2*limit {
			t.Errorf("origin saw %d requests during the outage, want at most %d", got, 2*limit)
		}
	} else if got := f.origin.Total(); got != 0 {
		t.Errorf("a stopped origin saw %d requests", got)
	}
	open := 0
	for _, n := range f.nodes {
		for _, u := range n.upstreamStats() {
			if strings.HasPrefix(u.Name, "origin") && u.State == "open" {
				open++
			}
		}
	}
	if open == 0 {
		t.Fatal("no origin breaker is open during the outage")
	}
	// Cold keys fail fast: refused by the open breakers, they never reach the origin.
	before, _ := sent()
	for k := range 10 {
		r := do(t, f.client, http.MethodGet, f.nodes[k%3].Addr(), testHost, obj(fmt.Sprintf("/cold%d", k), "cc", "max-age=10"))
		if r.status != 503 && r.status != 502 && r.status != 504 {
			t.Errorf("cold key during the outage = %d, want 502/503/504", r.status)
		}
	}
	if after, _ := sent(); after-before > uint64(3-open)*perNode {
		t.Errorf("cold keys were sent to the origin %d times with %d of 3 breakers open", after-before, open)
	}
}

// TestOriginRecovers: once the origin is back, half-open probes close the breakers, and the
// stale keys are revalidated once per PoP, not once per node.
func TestOriginRecovers(t *testing.T) {
	f := newFleet(t, []int{3}, noShield, func(c *Config) {
		c.Upstream.ConsecutiveFailures = 3
		c.Upstream.OpenTimeout = 300 * time.Millisecond
	})
	const keys = 30
	path := func(k int) string { return obj(fmt.Sprintf("/d%d", k), "cc", "max-age=10, stale-if-error=3600") }
	for k := range keys {
		do(t, f.client, http.MethodGet, f.nodes[0].Addr(), testHost, path(k))
	}
	f.clock.Advance(time.Minute)
	f.origin.SetFault("", origin.Fault{Drop: true})
	wait.For(t, 10*time.Second, "an origin breaker to open", func() bool {
		for k := range keys {
			do(t, f.client, http.MethodGet, f.nodes[k%3].Addr(), testHost, path(k))
		}
		for _, n := range f.nodes {
			for _, u := range n.upstreamStats() {
				if strings.HasPrefix(u.Name, "origin") && u.State == "open" {
					return true
				}
			}
		}
		return false
	})
	f.origin.ClearFaults()
	f.origin.ResetStats()
	wait.For(t, 5*time.Second, "breakers to close", func() bool {
		r := do(t, f.client, http.MethodGet, f.nodes[0].Addr(), testHost, path(0))
		return strings.Contains(r.header.Get("Cache-Status"), "fwd-status=304") || strings.Contains(r.header.Get("Cache-Status"), "hit")
	})
	var wg sync.WaitGroup
	for k := range keys {
		for _, n := range f.nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				do(t, f.client, http.MethodGet, n.Addr(), testHost, path(k))
			}()
		}
	}
	wg.Wait()
	// One revalidation per key for the whole PoP (plus the probes above), not one per node.
	if got := f.origin.Total(); got > keys+10 {
		t.Errorf("origin requests after recovery = %d, want about %d: a stampede", got, keys)
	}
}

// TestBulkhead: an origin never sees more concurrent requests than the bulkhead allows; the
// excess gets 503 with Retry-After while the admitted ones are still at the origin, so it did
// not wait for them. The origin holds every request until the test lets it answer: nothing
// here depends on how fast the machine is.
func TestBulkhead(t *testing.T) {
	const limit, n = 4, 20
	gate := make(chan struct{})
	arrived := make(chan struct{}, n)
	var inFlight, peak atomic.Int64
	held := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
		}
		arrived <- struct{}{}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, r.URL.Path)
	})}
	ln := listen(t, "127.0.0.12")
	go func() { _ = held.Serve(ln) }()
	t.Cleanup(func() { _ = held.Close() })
	s := newSingle(t, func(c *Config) {
		c.Hosts[0].Origin = "http://" + ln.Addr().String()
		c.Upstream.MaxConcurrent = limit
		c.Upstream.QueueWait = 50 * time.Millisecond
	})
	admitted := make(chan resp, limit)
	for i := range limit {
		go func() { admitted <- s.get(t, fmt.Sprintf("/slow%d", i)) }()
	}
	for range limit {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatalf("the first %d requests did not all reach the origin", limit)
		}
	}
	for i := limit; i < n; i++ {
		r := s.get(t, fmt.Sprintf("/slow%d", i))
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("request %d with the bulkhead full = %d (Retry-After %q), want 503 with Retry-After", i, r.status, r.header.Get("Retry-After"))
		}
	}
	close(gate)
	for range limit {
		if r := <-admitted; r.status != http.StatusOK {
			t.Errorf("admitted request = %d, want 200", r.status)
		}
	}
	if got := peak.Load(); got > limit {
		t.Errorf("origin saw %d concurrent requests, bulkhead is %d", got, limit)
	}
}

// TestForgedHopHeader: a client's hop header is ignored: the node still uses its own cache and
// its peers, and cannot be made to fetch for another host.
func TestForgedHopHeader(t *testing.T) {
	f := newFleet(t, []int{3}, noShield, nil)
	p := obj("/forged", "cc", "max-age=600")
	do(t, f.client, http.MethodGet, f.nodes[0].Addr(), testHost, p)
	r := do(t, f.client, http.MethodGet, f.nodes[0].Addr(), testHost, p, hopHeader, "peer, shield", "Cache-Control", "only-if-cached")
	wantCacheStatus(t, r, "hit")
	r = do(t, f.client, http.MethodGet, f.nodes[0].Addr(), "evil.example", p, hopHeader, "peer")
	if r.status != http.StatusMisdirectedRequest {
		t.Errorf("forged hop for another host = %d, want 421", r.status)
	}
	if got := f.origin.Total(); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
	// A cold key with a forged header still goes through the key's owner, not the origin.
	owner := rendezvous(f.nodes[0].tiers.Load().peers, f.nodes[0].key("/forged2?cc=max-age%3D600"))[0].ID
	var asker *Node
	for _, n := range f.nodes {
		if n.cfg.Node != owner {
			asker = n
		}
	}
	r = do(t, f.client, http.MethodGet, asker.Addr(), testHost, "/forged2?cc=max-age%3D600", hopHeader, "peer")
	wantCacheStatus(t, r, "detail=peer")
}

// TestShieldLoop: PoPs that name each other as shield answer 508 instead of looping.
func TestShieldLoop(t *testing.T) {
	f := newFleet(t, []int{1, 1}, func(pop string) string {
		if pop == "p0" {
			return "p1"
		}
		return "p0"
	}, nil)
	r := do(t, f.client, http.MethodGet, f.nodes[0].Addr(), testHost, obj("/loop", "cc", "max-age=60"))
	if r.status != http.StatusLoopDetected {
		t.Errorf("looping shields = %d, want 508", r.status)
	}
	if got := f.origin.Total(); got != 0 {
		t.Errorf("origin requests = %d, want 0", got)
	}
}

// TestViaLoop: a request whose Via already names the node is a loop.
func TestViaLoop(t *testing.T) {
	s := newSingle(t, nil)
	r := s.get(t, "/x", "Via", "1.1 other, 1.1 tst-e1")
	if r.status != http.StatusLoopDetected {
		t.Errorf("status = %d, want 508", r.status)
	}
}

func TestTierMetrics(t *testing.T) {
	f := newFleet(t, []int{2}, noShield, nil)
	for k := range 20 {
		do(t, f.client, http.MethodGet, f.nodes[0].Addr(), testHost, obj(fmt.Sprintf("/m%d", k), "cc", "max-age=60"))
	}
	peer := counterValue(t, f.nodes[0], `meridian_edge_fills_total{tier="peer"}`)
	origin := counterValue(t, f.nodes[0], `meridian_edge_fills_total{tier="origin"}`)
	if peer == 0 || origin == 0 || peer+origin != 20 {
		t.Errorf("fills by tier: peer %v, origin %v; want both > 0 summing to 20", peer, origin)
	}
	body := scrape(t, f.nodes[0])
	for _, m := range []string{"meridian_edge_upstream_breaker_open", "meridian_edge_upstream_bulkhead_rejections_total", "meridian_edge_requests_total", "meridian_edge_store_bytes"} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}

// key is the primary key the node computes for a path on testHost.
func (n *Node) key(path string) string {
	hs := (*n.hosts.Load())[testHost]
	u, err := url.ParseRequestURI(path)
	if err != nil {
		panic(err)
	}
	return httpcache.Key(testHost, u.EscapedPath(), u.RawQuery, hs.keyOpts)
}

func scrape(t *testing.T, n *Node) string {
	t.Helper()
	rec := &recorder{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodGet, "/metrics", nil)
	n.AdminHandler().ServeHTTP(rec, req)
	return rec.body.String()
}

func counterValue(t *testing.T, n *Node, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape(t, n), "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, series+" "), &v)
			return v
		}
	}
	return 0
}

type recorder struct {
	header http.Header
	body   strings.Builder
	status int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(s int)           { r.status = s }

// TestFleetStaleIfError: the origin is down and the key's owner has no copy, but another
// node of its PoP holds one within its stale-if-error window: the owner serves that copy and
// says so (`fleet-stale-if-error` in Cache-Status) instead of an error.
func TestFleetStaleIfError(t *testing.T) {
	// n1 does not know n0, so it fetches from the origin itself and keeps the only copy.
	f := newFleet(t, []int{2}, noShield, func(c *Config) {
		if c.Node == "n1" {
			c.Peers = c.Peers[1:]
		}
		c.FleetStaleTimeout = 5 * time.Second // the default 300 ms is not what this tests
	})
	owner, holder := f.nodes[0], f.nodes[1]
	p := ""
	for i := 0; p == ""; i++ {
		c := obj(fmt.Sprintf("/fleet-stale%d", i), "cc", "max-age=10, stale-if-error=3600")
		if rendezvous(owner.tiers.Load().peers, owner.key(c))[0].ID == owner.cfg.Node {
			p = c
		}
	}
	if r := do(t, f.client, http.MethodGet, holder.Addr(), testHost, p); r.status != http.StatusOK {
		t.Fatalf("warming the holder = %d", r.status)
	}
	f.clock.Advance(time.Minute) // the holder's copy is stale, within stale-if-error
	f.origin.SetFault("", origin.Fault{Drop: true})
	r := do(t, f.client, http.MethodGet, owner.Addr(), testHost, p)
	if r.status != http.StatusOK || !strings.HasPrefix(r.body, strings.SplitN(p, "?", 2)[0]+"@v1:") {
		t.Fatalf("owner during the outage = %d %q, want the holder's copy", r.status, r.body[:min(len(r.body), 24)])
	}
	wantCacheStatus(t, r, "detail=fleet-stale-if-error")
	// Control: with no copy anywhere in the fleet, the same outage is an error.
	r = do(t, f.client, http.MethodGet, owner.Addr(), testHost, obj("/nowhere", "cc", "max-age=10, stale-if-error=3600"))
	if r.status < 500 {
		t.Errorf("a key no node holds during the outage = %d, want a 5xx", r.status)
	}
}

// TestFleetStaleAsksOutliveHandler: two nodes of the PoP hold a stale copy; the owner serves
// the first that answers, and the other ask goes on after its handler has returned, while the
// client's keep-alive connection sends its next requests. edge/http1 reuses the client's
// request for those: under the race detector this fails if an ask still reads it.
func TestFleetStaleAsksOutliveHandler(t *testing.T) {
	f := newFleet(t, []int{3}, noShield, func(c *Config) {
		if c.Node != "n0" { // n1 and n2 do not know n0: each keeps a copy of its own
			c.Peers = c.Peers[1:]
		}
		c.FleetStaleTimeout = 5 * time.Second
	})
	owner := f.nodes[0]
	p := ""
	for i := 0; p == ""; i++ {
		c := obj(fmt.Sprintf("/fleet-asks%d", i), "cc", "max-age=10, stale-if-error=3600")
		if rendezvous(owner.tiers.Load().peers, owner.key(c))[0].ID == owner.cfg.Node {
			p = c
		}
	}
	for _, holder := range f.nodes[1:] {
		if r := do(t, f.client, http.MethodGet, holder.Addr(), testHost, p); r.status != http.StatusOK {
			t.Fatalf("warming %s = %d", holder.cfg.Node, r.status)
		}
	}
	f.clock.Advance(time.Minute)
	f.origin.SetFault("", origin.Fault{Drop: true})
	c, err := net.Dial("tcp", owner.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 20 {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/plain\r\nX-Request: %d\r\n\r\n", p, testHost, i)
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK || !strings.Contains(r.Header.Get("Cache-Status"), "fleet-stale-if-error") {
			t.Fatalf("request %d = %d, Cache-Status %q; want a holder's stale copy", i, r.StatusCode, r.Header.Get("Cache-Status"))
		}
	}
}

// TestUnsafeInvalidatesThroughTiers: a node that passes a successful unsafe request through
// invalidates its copy (RFC 9111 §4.4), and its next fill asks the tiers above it, which did
// not see the request and still hold the old copy, for nothing older (Cache-Control: max-age
// on the signed fill): the shield, and the key's owner in the PoP on the way, revalidate, and
// the client that wrote reads what it wrote. A client's own max-age is still ignored.
func TestUnsafeInvalidatesThroughTiers(t *testing.T) {
	f := newFleet(t, []int{1, 2}, func(string) string { return "p0" }, nil)
	for i, n := range f.nodes[1:] { // p1's two nodes: for one of them the key's owner is the other
		path := fmt.Sprintf("/inv%d", i)
		p := obj(path, "cc", "max-age=600")
		if r := do(t, f.client, http.MethodGet, n.Addr(), testHost, p); !strings.HasPrefix(r.body, path+"@v1:") {
			t.Fatalf("first GET %s on %s = %d %.30q, want v1", path, n.Name(), r.status, r.body)
		}
		f.clock.Advance(time.Second)
		if r := do(t, f.client, http.MethodPost, n.Addr(), testHost, p); r.status/100 != 2 {
			t.Fatalf("POST %s on %s = %d, want 2xx", path, n.Name(), r.status)
		}
		r := do(t, f.client, http.MethodGet, n.Addr(), testHost, p)
		if !strings.HasPrefix(r.body, path+"@v2:") {
			t.Errorf("GET %s on %s after the POST = %d %.30q (Cache-Status %q), want v2 from the origin",
				path, n.Name(), r.status, r.body, r.header.Get("Cache-Status"))
		}
		// A client's max-age is not a fleet node's: the copy now stored is served as a hit.
		f.clock.Advance(time.Second)
		if r := do(t, f.client, http.MethodGet, n.Addr(), testHost, p, "Cache-Control", "max-age=0"); !strings.Contains(r.header.Get("Cache-Status"), "hit") {
			t.Errorf("GET %s with a client's max-age=0 = Cache-Status %q, want a hit", path, r.header.Get("Cache-Status"))
		}
	}
}

// TestBoundedFillJoinsUnbounded: at the key's owner, a fleet node's fill that asks for nothing
// older than its invalidation (max-age) joins a fill of the owner's own client, which carries
// no bound and gets the shield's old copy: the bounded one fills again with its bound
// (filler.collapse) and the writer reads its write.
func TestBoundedFillJoinsUnbounded(t *testing.T) {
	clock := newFakeClock()
	_, originAddr := startOrigin(t, "127.0.0.10", clock.Now)
	lnS, lnA, lnB := listen(t, "127.0.1.10"), listen(t, "127.0.2.10"), listen(t, "127.0.2.11")
	members := map[string][]Peer{
		"p0": {{ID: "n0", Addr: lnS.Addr().String()}},
		"p1": {{ID: "n0", Addr: lnA.Addr().String()}, {ID: "n1", Addr: lnB.Addr().String()}},
	}
	cfg := func(pop, id string) Config {
		return Config{PoP: pop, Node: id, Clock: clock.Now, PeerKey: testPeerKey, Peers: members[pop], Shields: members,
			Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr, Shield: "p0"}}}
	}
	const path = "/race"
	p := obj(path, "cc", "max-age=600")
	pp, q, _ := strings.Cut(p, "?")
	key := httpcache.Key(testHost, pp, q, httpcache.KeyOptions{})
	owner := rendezvous(members["p1"], key)[0].ID
	startEdge(t, lnS, cfg("p0", "n0"))
	hold := make(chan chan struct{}, 1) // the next fill at the owner waits on the channel sent
	nodes := map[string]*Node{}
	for id, ln := range map[string]net.Listener{"n0": lnA, "n1": lnB} {
		nodes[id], _ = startEdgeWith(t, ln, cfg("p1", id), func(n *Node) {
			if id == owner {
				n.fill.runHook = func(string) {
					select {
					case release := <-hold:
						<-release
					default:
					}
				}
			}
		})
	}
	o := nodes[owner]
	e := nodes["n0"]
	if owner == "n0" {
		e = nodes["n1"]
	}
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	if r := do(t, client, http.MethodGet, e.Addr(), testHost, p); !strings.HasPrefix(r.body, path+"@v1:") {
		t.Fatalf("first GET = %d %.20q, want v1", r.status, r.body)
	}
	clock.Advance(time.Second)
	if r := do(t, client, http.MethodPost, e.Addr(), testHost, p); r.status/100 != 2 {
		t.Fatalf("POST = %d, want 2xx", r.status)
	}
	clock.Advance(time.Second)
	o.store.Delete(key) // gone at the owner; the shield still holds v1
	release := make(chan struct{})
	hold <- release
	own, read := make(chan error, 1), make(chan error, 1)
	go func() { // the owner's own client: an unbounded fill, held
		_, err := tryDo(client, http.MethodGet, o.Addr(), testHost, p)
		own <- err
	}()
	wait.For(t, 5*time.Second, "the owner's own fill to start", func() bool { return len(hold) == 0 })
	var got resp
	go func() { // the writer reads back
		var err error
		got, err = tryDo(client, http.MethodGet, e.Addr(), testHost, p)
		read <- err
	}()
	// The writer's fill reaches the owner and waits in the flight its own client's fill leads.
	wait.For(t, 5*time.Second, "the bounded fill to join the flight", func() bool {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "singleflight.(*Group).Do(") >= 2
	})
	close(release)
	if err := <-own; err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got.body, path+"@v2:") {
		t.Errorf("the writer read %d %.20q (Cache-Status %q), want v2", got.status, got.body, got.header.Get("Cache-Status"))
	}
}

// TestPeerAnswerAfterHeaderTimeout: a shield node's answer waits for its own fill, so the
// edge waits for it up to peer_timeout, not the origin's response_header_timeout: a shield
// that answers after 1.5 s, past the 1 s the origin is given, is still the one that answers.
func TestPeerAnswerAfterHeaderTimeout(t *testing.T) {
	clock := newFakeClock()
	o, originAddr := startOrigin(t, "127.0.0.10", clock.Now)
	slow := listen(t, "127.0.1.10")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond) // the fault: a shield whose own fill is slow
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("from-shield"))
	})}
	go srv.Serve(slow)
	t.Cleanup(func() { srv.Close() })
	n, _ := startEdge(t, listen(t, "127.0.2.10"), Config{PoP: "p1", Node: "n0", Clock: clock.Now, PeerKey: testPeerKey,
		Hosts:    []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr, Shield: "p0"}},
		Shields:  map[string][]Peer{"p0": {{ID: "s0", Addr: slow.Addr().String()}}},
		Upstream: UpstreamConfig{ResponseHeaderTimeout: time.Second}})
	if n.cfg.PeerTimeout != 6*time.Second {
		t.Fatalf("peer_timeout = %v, want 6s (response_header_timeout + 5s)", n.cfg.PeerTimeout)
	}
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	r := do(t, client, http.MethodGet, n.Addr(), testHost, obj("/slow", "cc", "max-age=60"))
	if r.body != "from-shield" || !strings.Contains(r.header.Get("Cache-Status"), "detail=shield") {
		t.Errorf("GET = %d %.20q (Cache-Status %q), want the shield's answer", r.status, r.body, r.header.Get("Cache-Status"))
	}
	if got := o.Total(); got != 0 {
		t.Errorf("the origin was asked %d times, want 0 (the shield answered)", got)
	}
}

// TestRevalidationRefreshesEveryTier: an origin whose 304 brings a new Last-Modified (RFC 9111
// §4.3.4: the stored fields are updated) changes it at the shield and, through the shield's own
// 304 to the edge, at the edge too: a 304 to a fleet node carries the Last-Modified that
// http.ServeContent leaves out of a 304 with an ETag. The edge then compares a client's
// If-Modified-Since with the new date, not the one it first stored. The same for an object
// kept in slices, whose slices are revalidated with Range.
func TestRevalidationRefreshesEveryTier(t *testing.T) {
	// Objects over max_object_bytes are kept in slices.
	slices := wire.CacheOptions{MaxObjectBytes: 64 << 10, SliceBytes: 64 << 10}
	for _, tc := range []struct {
		name         string
		size         int
		shield, edge wire.CacheOptions
		shieldFirst  bool // a client of the shield's revalidates there first: the edge's finds it fresh
	}{
		{"whole", 8, wire.CacheOptions{}, wire.CacheOptions{}, false},
		{"whole, shield fresh", 8, wire.CacheOptions{}, wire.CacheOptions{}, true},
		{"sliced", 200 << 10, slices, slices, false},
		{"sliced, shield fresh", 200 << 10, slices, slices, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testRevalidationRefreshesEveryTier(t, tc.size, map[string]wire.CacheOptions{"p0": tc.shield, "p1": tc.edge}, tc.shieldFirst)
		})
	}
}

func testRevalidationRefreshesEveryTier(t *testing.T, size int, cache map[string]wire.CacheOptions, shieldFirst bool) {
	clock := newFakeClock()
	const oldLM, newLM = "Wed, 01 Jan 2020 00:00:00 GMT", "Thu, 02 Jan 2020 00:00:00 GMT"
	body := strings.Repeat("x", size)
	var (
		mu           sync.Mutex
		lastModified = oldLM
		full, cond   int
	)
	oln := listen(t, "127.0.0.10")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		h := w.Header()
		h.Set("Cache-Control", "max-age=2")
		h.Set("ETag", `"v1"`)
		h.Set("Last-Modified", lastModified)
		if r.Header.Get("If-None-Match") == `"v1"` {
			cond++
			w.WriteHeader(http.StatusNotModified) // with Last-Modified, unlike http.ServeContent's
			return
		}
		full++
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body)) // Range, for slices
	})}
	go srv.Serve(oln)
	t.Cleanup(func() { srv.Close() })
	lnS, lnE := listen(t, "127.0.1.10"), listen(t, "127.0.2.10")
	members := map[string][]Peer{"p0": {{ID: "n0", Addr: lnS.Addr().String()}}, "p1": {{ID: "n0", Addr: lnE.Addr().String()}}}
	cfg := func(pop string) Config {
		return Config{PoP: pop, Node: "n0", Clock: clock.Now, PeerKey: testPeerKey, Peers: members[pop], Shields: members,
			Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + oln.Addr().String(), Shield: "p0", Cache: cache[pop]}}}
	}
	shield, _ := startEdge(t, lnS, cfg("p0"))
	e, _ := startEdge(t, lnE, cfg("p1"))
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	if r := do(t, client, http.MethodGet, e.Addr(), testHost, "/meta"); r.body != body || r.header.Get("Last-Modified") != oldLM {
		t.Fatalf("first GET = %d, %d bytes, Last-Modified %q", r.status, len(r.body), r.header.Get("Last-Modified"))
	}
	mu.Lock()
	lastModified = newLM
	fullBefore := full
	mu.Unlock()
	clock.Advance(3 * time.Second) // stale at both tiers
	if shieldFirst {
		if r := do(t, client, http.MethodGet, shield.Addr(), testHost, "/meta"); r.header.Get("Last-Modified") != newLM {
			t.Fatalf("GET at the shield: %d, Last-Modified %q, want %q", r.status, r.header.Get("Last-Modified"), newLM)
		}
	}
	r := do(t, client, http.MethodGet, e.Addr(), testHost, "/meta")
	if !strings.Contains(r.header.Get("Cache-Status"), "fwd-status=304") {
		t.Fatalf("second GET: Cache-Status %q, want a revalidation", r.header.Get("Cache-Status"))
	}
	mu.Lock()
	if full != fullBefore || cond == 0 {
		t.Errorf("revalidation: origin answered %d full and %d conditional requests, want only conditional ones", full-fullBefore, cond)
	}
	mu.Unlock()
	for _, tt := range []struct {
		name string
		hdr  []string
		code int
	}{
		{"revalidated answer", nil, http.StatusOK},
		{"hit", nil, http.StatusOK},
		{"client's If-Modified-Since, the old date", []string{"If-Modified-Since", oldLM}, http.StatusOK},
		{"client's If-Modified-Since, the new date", []string{"If-Modified-Since", newLM}, http.StatusNotModified},
	} {
		if tt.name != "revalidated answer" {
			r = do(t, client, http.MethodGet, e.Addr(), testHost, "/meta", tt.hdr...)
		}
		if r.status != tt.code {
			t.Errorf("%s: %d, want %d", tt.name, r.status, tt.code)
		}
		if lm := r.header.Get("Last-Modified"); tt.code == http.StatusOK && lm != newLM {
			t.Errorf("%s: Last-Modified %q, want the 304's %q", tt.name, lm, newLM)
		}
	}
}

// TestPeerBodyOutlivesPeerTimeout: peer_timeout bounds the wait for a peer's header, not its
// body. An owner node that answers at once and streams a body for longer than peer_timeout is
// read to the end (found by a review helper: the body was cut after peer_timeout, as it never
// is from the origin).
func TestPeerBodyOutlivesPeerTimeout(t *testing.T) {
	const chunk, chunks = 20 << 10, 8
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(chunk*chunks))
		for range chunks {
			w.Write([]byte(strings.Repeat("x", chunk)))
			w.(http.Flusher).Flush()
			time.Sleep(200 * time.Millisecond) // the fault: a slow link, 1.6 s in all
		}
	}))
	lns := []net.Listener{listen(t, "127.0.1.10"), listen(t, "127.0.1.11")}
	var peers []Peer
	for i, l := range lns {
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), Addr: l.Addr().String()})
	}
	var nodes []*Node
	for i, l := range lns {
		n, _ := startEdge(t, l, Config{PoP: "p0", Node: peers[i].ID, Peers: peers, PeerKey: testPeerKey,
			PeerTimeout: time.Second, FillTimeout: 30 * time.Second,
			Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr, Cache: wire.CacheOptions{DisableCompression: true}}}})
		nodes = append(nodes, n)
	}
	path := ""
	for i := 0; path == ""; i++ {
		if p := fmt.Sprintf("/slow%d", i); rendezvous(nodes[0].tiers.Load().peers, nodes[0].key(p))[0].ID == "n1" {
			path = p
		}
	}
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	r, err := tryDo(c, http.MethodGet, nodes[0].Addr(), testHost, path)
	if err != nil || len(r.body) != chunk*chunks {
		t.Errorf("through the owner node: err %v, %d of %d bytes (Cache-Status %q)", err, len(r.body), chunk*chunks, r.header.Get("Cache-Status"))
	}
}
