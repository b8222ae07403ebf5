package dnsroute

import (
	"context"
	"encoding/json"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// liveNode is a node heartbeating into a real NATS fleet registry with a saturation the test
// sets, as an edge's load report would carry it.
type liveNode struct {
	reg *fleet.Registrar
	mu  sync.Mutex // guards sat
	sat float64
}

func (n *liveNode) set(sat float64) {
	n.mu.Lock()
	n.sat = sat
	n.mu.Unlock()
	n.reg.Beat()
}

// skewClock is the real clock plus an offset the test advances.
type skewClock struct{ off atomic.Int64 }

func (c *skewClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *skewClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// liveFixture is a DNS server routing to a fleet registered in a real NATS server, served over
// real UDP on 127.0.2.x.
type liveFixture struct {
	*testServer
	view  *fleet.View
	nodes map[string]*liveNode // by PoP
	ns    *natstest.Server
}

// startLive registers one node per PoP (London and Frankfurt, no capacity configured) and
// starts a DNS server fed by the registry.
func startLive(t *testing.T, mutate func(*Config)) *liveFixture {
	t.Helper()
	return startLiveNodes(t, []wire.Node{
		{PoP: "lhr", ID: "n1", Lat: 51.5074, Lon: -0.1278, IPv4: "192.0.2.11"},
		{PoP: "fra", ID: "n1", Lat: 50.1109, Lon: 8.6821, IPv4: "192.0.2.21"},
	}, mutate)
}

// startLiveNodes is startLive with the given nodes, one per PoP.
func startLiveNodes(t *testing.T, nodes []wire.Node, mutate func(*Config)) *liveFixture {
	t.Helper()
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	if err := fleet.EnsureBuckets(ctx, js, "", 3*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	fx := &liveFixture{nodes: map[string]*liveNode{}}
	for _, n := range nodes {
		_, js := ns.ConnectAs(t, natsauth.Edge(n.PoP, n.ID))
		ln := &liveNode{}
		r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: n, Interval: 100 * time.Millisecond,
			Load: func() wire.LoadReport {
				ln.mu.Lock()
				defer ln.mu.Unlock()
				return wire.LoadReport{Healthy: true, Saturation: ln.sat}
			}})
		if err != nil {
			t.Fatal(err)
		}
		ln.reg = r
		fx.nodes[n.PoP] = ln
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Run(ctx)
		}()
	}
	cfg := testConfig(t)
	cfg.NATS, cfg.PoPs = ns.URL(), nil
	cfg.Creds = ns.CredsFile(t, natsauth.DNS("ns1"))
	if mutate != nil {
		mutate(&cfg)
	}
	fx.ns = ns
	l, err := newLiveFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Fleet = l.fleet()
	fx.view = l.view
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.run(ctx, s)
	}()
	nextIP.Lock()
	nextIP.n++
	ip := netip.AddrFrom4([4]byte{127, 0, 2, byte(nextIP.n)})
	nextIP.Unlock()
	udp, tcp, err := listen(ctx, netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Serve(ctx, udp, tcp); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	<-s.Ready()
	fx.testServer = &testServer{Server: s, addr: udp.LocalAddr().String()}
	for _, n := range nodes {
		fx.waitSaturation(t, n.PoP, 0)
	}
	return fx
}

// waitSaturation sets pop's saturation and waits until the registry shows it.
func (fx *liveFixture) waitSaturation(t *testing.T, pop string, sat float64) {
	t.Helper()
	fx.nodes[pop].set(sat)
	wait.For(t, 10*time.Second, "the PoP with its load in the view", func() bool {
		for _, p := range fx.view.PoPs() {
			if p.ID == pop && len(p.Nodes) == 1 && p.Nodes[0].Load.Saturation == sat && p.Nodes[0].Load.Healthy {
				return true
			}
		}
		return false
	})
}

// shedShare is the share of 200 London /24s that DNS sends away from lhr.
func (fx *liveFixture) shedShare(t *testing.T) float64 {
	t.Helper()
	moved := 0
	const n = 200
	for i := range n {
		r := fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: cityPrefix(t, "London", byte(i))})
		if fx.popOf(t, r) != "lhr" {
			moved++
		}
	}
	return float64(moved) / n
}

// TestLiveSaturationSheds: with no capacity configured, a node's own saturation figure, carried
// by real heartbeats through NATS, makes DNS shed the right share of /24s between the watermarks
// (0.8, 1.0), with hysteresis on the way down.
func TestLiveSaturationSheds(t *testing.T) {
	// Falls are judged on the highest load within one answer TTL (1 s here): the test's clock
	// runs ahead of the real one to pass it, and heartbeats stay fresh for an hour.
	var clock skewClock
	fx := startLive(t, func(c *Config) { c.Clock, c.TTL, c.HeartbeatTTL = clock.Now, time.Second, time.Hour })
	steps := []struct {
		name      string
		sat       float64
		wantShare float64
		ttlLater  bool
	}{
		{"below low watermark", 0.5, 0, false},
		{"halfway", 0.9, 0.5, false},
		{"three quarters", 0.95, 0.75, false},
		{"over high watermark", 1.3, 1, false},
		{"small fall inside the dead band", 1.0, 1, false},
		// What a shedding node reports is what it kept (5 %): 0.09 means a demand of 1.8,
		// which needs half of the /24s moved; 0.02 means the demand (0.4) is gone.
		{"demand behind the kept clients needs half", 0.09, 0.5, true},
		{"load gone", 0.02, 0, true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.ttlLater {
				clock.Advance(1100 * time.Millisecond)
			}
			fx.waitSaturation(t, "lhr", st.sat)
			if got := fx.shedShare(t); math.Abs(got-st.wantShare) > 0.12 {
				t.Errorf("saturation %.2f: shed share = %.2f, want %.2f±0.12", st.sat, got, st.wantShare)
			}
		})
	}
}

// TestLiveCacheKeptUntilOutcomeChanges: heartbeats whose load does not change any answer keep
// the answer cache (the next query is a hit), also a shedding PoP's load moving while its
// share stays; one that crosses the low watermark drops it.
func TestLiveCacheKeptUntilOutcomeChanges(t *testing.T) {
	fx := startLive(t, nil)
	q := qopt{ecs: cityPrefix(t, "London", 7)}
	ask := func() (hit bool) {
		h := metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "")
		fx.ask(t, "www.cdn.example.", dns.TypeA, q)
		return metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "") == h+1
	}
	fx.waitSaturation(t, "lhr", 0.30)
	ask() // fills the cache
	tests := []struct {
		name    string
		pop     string
		sat     float64
		wantHit bool
	}{
		{"same quantum", "lhr", 0.31, true},
		{"same quantum again", "lhr", 0.29, true},
		{"other PoP below the low watermark", "fra", 0.5, true},
		{"below the low watermark", "lhr", 0.62, true},
		{"crosses the low watermark", "lhr", 0.9, false},
		{"same shed share", "lhr", 0.901, true},
		// A shedding PoP's load hovering across a step while its share stays changes no
		// answer: its load decides only where a client goes that every usable PoP sheds.
		{"shedding PoP's load falls a step, same share", "lhr", 0.86, true},
		{"and rises back", "lhr", 0.9, true},
		{"overloaded", "lhr", 1.2, false},
		{"overloaded more, same share", "lhr", 1.3, true},
		// Once every usable PoP sheds, the least loaded takes whom all of them shed.
		{"fra sheds too", "fra", 0.9, false},
		{"both shed; lhr now the less loaded", "lhr", 0.85, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dropped := metricValue(t, fx.Server, "meridian_dns_state_rebuilds_total", "dropped")
			fx.waitSaturation(t, tt.pop, tt.sat)
			if got := ask(); got != tt.wantHit {
				t.Errorf("after %s saturation %.3f: cache hit = %v, want %v", tt.pop, tt.sat, got, tt.wantHit)
			}
			if got := metricValue(t, fx.Server, "meridian_dns_state_rebuilds_total", "dropped") - dropped; (got == 0) != tt.wantHit {
				t.Errorf("after %s saturation %.3f: %v rebuilds dropped the cache, want %v", tt.pop, tt.sat, got, map[bool]string{true: "none", false: "some"}[tt.wantHit])
			}
			if !tt.wantHit && !ask() {
				t.Errorf("second query after the change: not a cache hit")
			}
		})
	}
}

// metricValue reads a counter of the server's registry, with label value lv when not empty.
func metricValue(t *testing.T, s *Server, name, lv string) float64 {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if lv == "" || len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == lv {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// TestLiveFailsOpenWhenEveryReportIsStale: a server whose fleet's reports have all gone stale
// (cut off from NATS, its view keeps the last ones) fails open to the nearest PoP, as with a
// static fleet (docs/dns.md, "No usable PoP at all"), rather than answering NODATA to all.
func TestLiveFailsOpenWhenEveryReportIsStale(t *testing.T) {
	var clock skewClock
	fx := startLive(t, func(c *Config) { c.Clock = clock.Now })
	london := qopt{ecs: cityPrefix(t, "London", 3)}
	if pop := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, london)); pop != "lhr" {
		t.Fatalf("London with a fresh fleet: %s, want lhr", pop)
	}
	clock.Advance(time.Hour) // every report is an hour old
	r := fx.ask(t, "www.cdn.example.", dns.TypeA, london)
	if len(r.Answer) == 0 {
		t.Fatalf("London with every report stale: no answer, want lhr failed open to:\n%v", r)
	}
	if pop := fx.popOf(t, r); pop != "lhr" {
		t.Errorf("London with every report stale: %s, want lhr (nearest, failed open)", pop)
	}
	if got := metricValue(t, fx.Server, "meridian_dns_fail_open_total", ""); got != 1 {
		t.Errorf("fail-open answers = %v, want 1", got)
	}
}

// TestLiveNodeAheadOfTimeLeavesWhenSilent: a node whose clock runs an hour ahead of DNS's
// (its reports' At in DNS's future) leaves the answers a heartbeat TTL after its last report
// arrives, as any node does, not an hour later: a crashed node must not be answered for as
// long as its clock is wrong.
func TestLiveNodeAheadOfTimeLeavesWhenSilent(t *testing.T) {
	fx := startLive(t, func(c *Config) { c.HeartbeatTTL = time.Second })
	n2 := wire.Node{PoP: "lhr", ID: "n2", Lat: 51.5074, Lon: -0.1278, IPv4: "192.0.2.12",
		Load: wire.LoadReport{Healthy: true, At: time.Now().Add(time.Hour)}}
	_, js := fx.ns.ConnectAs(t, natsauth.Edge(n2.PoP, n2.ID))
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(n2)
	if err != nil {
		t.Fatal(err)
	}
	// One report, then silence: the node crashed.
	if _, err := kv.Put(ctx, wire.FleetKey(n2.PoP, n2.ID), b); err != nil {
		t.Fatal(err)
	}
	london := qopt{ecs: cityPrefix(t, "London", 3)}
	named := func() bool {
		for _, rr := range fx.ask(t, "www.cdn.example.", dns.TypeA, london).Answer {
			if a, ok := rr.(*dns.A); ok && a.A.String() == n2.IPv4 {
				return true
			}
		}
		return false
	}
	wait.For(t, 10*time.Second, "London answered with lhr's second node", named)
	wait.For(t, 10*time.Second, "the silent node gone from London's answers", func() bool { return !named() })
}

// TestLiveLeastLoadedHysteresis: under least-loaded, two PoPs whose loads are close keep the
// answer (and the answer cache) while one's load jitters across a quantisation step; only a
// move larger than the hysteresis band changes the answer, and then it does not come back
// on a jitter either.
func TestLiveLeastLoadedHysteresis(t *testing.T) {
	fx := startLive(t, func(c *Config) { c.Policy = wire.RoutingPolicy{Policy: "least-loaded"} })
	q := qopt{ecs: cityPrefix(t, "London", 7)}
	fx.waitSaturation(t, "fra", 0.42)
	fx.waitSaturation(t, "lhr", 0.42)
	if pop := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, q)); pop != "lhr" {
		t.Fatalf("London with equal loads: %s, want lhr (the nearer)", pop)
	}
	tests := []struct {
		name    string
		sat     float64 // lhr's; fra stays at 0.42
		wantPoP string
		wantHit bool
	}{
		{"lhr a hair over fra, across a step", 0.43, "lhr", true},
		{"and back", 0.42, "lhr", true},
		{"over again", 0.43, "lhr", true},
		{"lhr clearly more loaded", 0.60, "fra", false},
		{"lhr falls to a hair over fra", 0.43, "fra", false},
		{"lhr a hair under that, across a step", 0.42, "fra", true},
		{"lhr clearly less loaded", 0.30, "lhr", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "")
			dropped := metricValue(t, fx.Server, "meridian_dns_state_rebuilds_total", "dropped")
			fx.waitSaturation(t, "lhr", tt.sat)
			if pop := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, q)); pop != tt.wantPoP {
				t.Errorf("lhr at %.2f, fra at 0.42: London at %s, want %s", tt.sat, pop, tt.wantPoP)
			}
			if hit := metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "") == hits+1; hit != tt.wantHit {
				t.Errorf("lhr at %.2f: cache hit = %v, want %v", tt.sat, hit, tt.wantHit)
			}
			if got := metricValue(t, fx.Server, "meridian_dns_state_rebuilds_total", "dropped") - dropped; (got == 0) != tt.wantHit {
				t.Errorf("lhr at %.2f: %v rebuilds dropped the cache, want %s", tt.sat, got, map[bool]string{true: "none", false: "some"}[tt.wantHit])
			}
		})
	}
}

// waitDraining marks pop's node draining (or not) and waits until the registry shows it.
func (fx *liveFixture) waitDraining(t *testing.T, pop string, d bool) {
	t.Helper()
	fx.nodes[pop].reg.SetDraining(d)
	wait.For(t, 10*time.Second, "the PoP's drain in the view", func() bool {
		for _, p := range fx.view.PoPs() {
			if p.ID == pop && len(p.Nodes) == 1 && p.Nodes[0].Draining == d {
				return true
			}
		}
		return false
	})
}

// TestLiveLoneShedderKeepsCache: while a PoP is the only usable one, every client gets it
// whatever share it sheds (whom it sheds, nobody else takes), so a change of that share
// changes no answer and keeps the cache; only whether it sheds at all changes the answers
// (their ECS scope). Once another PoP takes the shed clients, a share change moves clients
// and drops the cache.
func TestLiveLoneShedderKeepsCache(t *testing.T) {
	fx := startLive(t, nil)
	q := qopt{ecs: cityPrefix(t, "London", 7)}
	fx.waitDraining(t, "fra", true)
	fx.waitSaturation(t, "lhr", 0.30)
	fx.ask(t, "www.cdn.example.", dns.TypeA, q) // fills the cache
	tests := []struct {
		name    string
		step    func(t *testing.T)
		wantPoP string // "" when either PoP may answer
		wantHit bool
	}{
		{"lone lhr starts shedding", func(t *testing.T) { fx.waitSaturation(t, "lhr", 0.85) }, "lhr", false},
		{"lone lhr sheds more", func(t *testing.T) { fx.waitSaturation(t, "lhr", 0.9) }, "lhr", true},
		{"lone lhr sheds three quarters", func(t *testing.T) { fx.waitSaturation(t, "lhr", 0.95) }, "lhr", true},
		{"fra back", func(t *testing.T) { fx.waitDraining(t, "fra", false) }, "", false},
		{"lhr sheds more to fra", func(t *testing.T) { fx.waitSaturation(t, "lhr", 1.2) }, "", false},
		{"fra drained again", func(t *testing.T) { fx.waitDraining(t, "fra", true) }, "lhr", false},
		{"lone lhr's share unchanged", func(t *testing.T) { fx.waitSaturation(t, "lhr", 1.3) }, "lhr", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "")
			dropped := metricValue(t, fx.Server, "meridian_dns_state_rebuilds_total", "dropped")
			tt.step(t)
			r := fx.ask(t, "www.cdn.example.", dns.TypeA, q)
			if pop := fx.popOf(t, r); tt.wantPoP != "" && pop != tt.wantPoP {
				t.Errorf("London at %s, want %s", pop, tt.wantPoP)
			}
			if hit := metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "") == hits+1; hit != tt.wantHit {
				t.Errorf("cache hit = %v, want %v (lhr sheds %.2f)", hit, tt.wantHit, fx.ShedShare("lhr"))
			}
			if got := metricValue(t, fx.Server, "meridian_dns_state_rebuilds_total", "dropped") - dropped; (got == 0) != tt.wantHit {
				t.Errorf("%v rebuilds dropped the cache, want %s", got, map[bool]string{true: "none", false: "some"}[tt.wantHit])
			}
		})
	}
}

// TestLiveWeightedKeepsCacheWhileShedding: weighted routing sends clients by their hash and
// the weights, never by shed shares or loads, so PoPs between the watermarks whose shares
// and loads move keep the cache.
func TestLiveWeightedKeepsCacheWhileShedding(t *testing.T) {
	fx := startLive(t, func(c *Config) {
		c.Policy = wire.RoutingPolicy{Policy: "weighted", Weights: map[string]float64{"lhr": 1, "fra": 1}}
	})
	q := qopt{ecs: cityPrefix(t, "London", 7)}
	fx.waitSaturation(t, "fra", 0.85)
	fx.waitSaturation(t, "lhr", 0.85)
	want := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, q)) // fills the cache
	for _, sat := range []float64{0.9, 0.95, 0.85, 1.2} {
		hits := metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "")
		fx.waitSaturation(t, "lhr", sat)
		if pop := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, q)); pop != want {
			t.Errorf("lhr at %.2f: London at %s, want %s (by weight, as before)", sat, pop, want)
		}
		if metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "") != hits+1 {
			t.Errorf("lhr at %.2f (sheds %.2f): not a cache hit", sat, fx.ShedShare("lhr"))
		}
	}
}

// fresh is where the server's current state routes a client of prefix ecs for family v6,
// computed now without the answer cache, and the answer's ECS scope ("" for no answer).
func (fx *liveFixture) fresh(t *testing.T, ecs netip.Prefix, v6 bool) (pop string, scope int) {
	t.Helper()
	s := fx.Server
	st := s.current(s.cfg.Clock())
	client := clientPrefix(netip.Addr{}, ecs)
	loc, err := s.geo.Lookup(client.Addr())
	if err != nil {
		t.Fatal(err)
	}
	d := st.route(loc, client, v6)
	if d.pop == nil {
		return "", 0
	}
	return d.pop.pop.ID, d.scope(client)
}

// served is where the server's answer sends a client of prefix ecs, and its ECS scope ("" for
// an answer without addresses).
func (fx *liveFixture) served(t *testing.T, ecs netip.Prefix, qtype uint16) (pop string, scope int) {
	t.Helper()
	r := fx.ask(t, "www.cdn.example.", qtype, qopt{ecs: ecs})
	if len(r.Answer) == 0 {
		return "", 0
	}
	e := ecsOf(r)
	if e == nil {
		t.Fatalf("answer without ECS to a query with it:\n%v", r)
	}
	return fx.popOf(t, r), int(e.SourceScope)
}

// TestLiveCachedAnswersMatchFresh: whatever the fleet does (loads between and past the
// watermarks, a PoP left alone in one family or both as the others drain, every PoP
// shedding), under every policy an answer served, from the cache or not, is the one the
// current state gives when routed afresh: a cache kept across a rebuild whose outcome key
// missed something an answer depends on would serve the old answer. The fleet mixes families:
// lhr is dual-stack, fra IPv4 only, ams IPv6 only.
func TestLiveCachedAnswersMatchFresh(t *testing.T) {
	nodes := []wire.Node{
		{PoP: "lhr", ID: "n1", Lat: 51.5074, Lon: -0.1278, IPv4: "192.0.2.11", IPv6: "2001:db8:ff::11"},
		{PoP: "fra", ID: "n1", Lat: 50.1109, Lon: 8.6821, IPv4: "192.0.2.21"},
		{PoP: "ams", ID: "n1", Lat: 52.3676, Lon: 4.9041, IPv6: "2001:db8:ff::31"},
	}
	type step struct {
		pop   string
		sat   float64
		drain int // 1 drains the PoP, -1 ends its drain; 0 sets sat
	}
	steps := []step{
		{"lhr", 0.3, 0}, {"lhr", 0.86, 0}, {"lhr", 0.9, 0}, {"lhr", 0.95, 0},
		{"fra", 0, 1}, // lhr alone in IPv4, not in IPv6
		{"lhr", 0.9, 0}, {"lhr", 0.97, 0},
		{"ams", 0, 1}, // lhr alone in both
		{"lhr", 0.85, 0}, {"lhr", 0.95, 0}, {"lhr", 1.2, 0},
		{"fra", 0, -1}, // lhr alone in IPv6 only
		{"lhr", 1.3, 0}, {"fra", 0.9, 0}, {"fra", 0.95, 0},
		{"ams", 0, -1}, {"ams", 0.9, 0}, {"ams", 0.85, 0}, // every PoP sheds in both families
		{"fra", 0.2, 0}, {"lhr", 0.5, 0},
	}
	var clients []netip.Prefix
	for _, city := range []string{"London", "Amsterdam", "Frankfurt"} {
		for i := range 8 {
			clients = append(clients, cityPrefix(t, city, byte(i*31)))
		}
	}
	for _, policy := range []wire.RoutingPolicy{
		{Policy: "nearest"}, {Policy: "latency"}, {Policy: "least-loaded"},
		{Policy: "weighted", Weights: map[string]float64{"lhr": 1, "fra": 1, "ams": 1}},
	} {
		t.Run(policy.Policy, func(t *testing.T) {
			fx := startLiveNodes(t, nodes, func(c *Config) { c.Policy = policy })
			hits := metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "")
			for i, st := range steps {
				switch st.drain {
				case 0:
					fx.waitSaturation(t, st.pop, st.sat)
				default:
					fx.waitDraining(t, st.pop, st.drain > 0)
				}
				for _, c := range clients {
					for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
						// Twice: the first may come from the cache of an earlier state, the
						// second surely from this one's.
						for range 2 {
							wantPoP, wantScope := fx.fresh(t, c, qt == dns.TypeAAAA)
							pop, scope := fx.served(t, c, qt)
							againPoP, againScope := fx.fresh(t, c, qt == dns.TypeAAAA)
							if againPoP != wantPoP || againScope != wantScope {
								continue // the state moved under the query: nothing to compare
							}
							if pop != wantPoP || scope != wantScope {
								t.Errorf("step %d (%s %+v): %s %s served %q scope /%d, routed afresh %q scope /%d",
									i, st.pop, st, c, dns.TypeToString[qt], pop, scope, wantPoP, wantScope)
							}
						}
					}
				}
			}
			if got := metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "") - hits; got == 0 {
				t.Error("no answer came from the cache: the test compared nothing cached")
			}
		})
	}
}

// TestLiveLoadHysteresisFollowsPolicyAndDrains: the kept figures are judged against the band
// in force at each rebuild, so a policy change that narrows load_hysteresis (from the config
// bucket: SetPolicy) moves a figure left behind by the wider band at once, with no reset
// needed; a PoP drained and back is compared by its load then, not by the one before it left.
func TestLiveLoadHysteresisFollowsPolicyAndDrains(t *testing.T) {
	wide := wire.RoutingPolicy{Policy: "least-loaded", LoadHysteresis: 0.5}
	fx := startLive(t, func(c *Config) { c.Policy = wide })
	q := qopt{ecs: cityPrefix(t, "London", 7)}
	fx.waitSaturation(t, "fra", 0.42)
	fx.waitSaturation(t, "lhr", 0.42)
	fx.ask(t, "www.cdn.example.", dns.TypeA, q) // the figures: both 0.40
	tests := []struct {
		name    string
		step    func(t *testing.T)
		wantPoP string
	}{
		{"lhr loaded, inside the wide band", func(t *testing.T) { fx.waitSaturation(t, "lhr", 0.8) }, "lhr"},
		{"band narrowed to the default", func(t *testing.T) {
			if err := fx.SetPolicy(wire.RoutingPolicy{Policy: "least-loaded"}); err != nil {
				t.Fatal(err)
			}
		}, "fra"},
		{"lhr drained", func(t *testing.T) { fx.waitDraining(t, "lhr", true) }, "fra"},
		{"lhr back, idle", func(t *testing.T) {
			fx.waitSaturation(t, "lhr", 0.1)
			fx.waitDraining(t, "lhr", false)
		}, "lhr"},
		{"fra a step lower, inside the band; lhr up to its figure", func(t *testing.T) {
			fx.waitSaturation(t, "fra", 0.36) // fra's figure stays 0.40
			fx.waitSaturation(t, "lhr", 0.38) // lhr's follows to 0.40: a tie, the nearer
		}, "lhr"},
		{"band off", func(t *testing.T) {
			if err := fx.SetPolicy(wire.RoutingPolicy{Policy: "least-loaded", LoadHysteresis: -1}); err != nil {
				t.Fatal(err)
			}
		}, "fra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.step(t)
			if pop := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, q)); pop != tt.wantPoP {
				t.Errorf("London at %s, want %s (load_ratio lhr %v, fra %v)", pop, tt.wantPoP,
					gaugeOf(t, fx.Server, "lhr"), gaugeOf(t, fx.Server, "fra"))
			}
		})
	}
}

// gaugeOf is meridian_dns_pop_load_ratio of pop, for messages.
func gaugeOf(t *testing.T, s *Server, pop string) float64 {
	v, _ := gaugeValue(t, s, "meridian_dns_pop_load_ratio", pop)
	return v
}
