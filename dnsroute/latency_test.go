package dnsroute

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestLatencyMapBoundedAndExpiring is a property test: under any sequence of reports, deletes
// and clock steps, the map never holds more than its bound, never answers with a record older
// than its maximum age, and its merged RTT is always within the range of its fresh records.
func TestLatencyMapBoundedAndExpiring(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 16))
			const bound, maxAge = 64, time.Minute
			m := newLatencyMap(bound, maxAge)
			now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			// What the test knows was written last under each key.
			last := map[string]wire.LatencyRecord{}
			for step := range 2000 {
				switch op := rng.IntN(10); {
				case op < 7:
					network := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(rng.IntN(40)), 0}), 24)
					key := wire.LatencyKey([]string{"lhr", "fra", "nrt"}[rng.IntN(3)], "n1", network)
					r := wire.LatencyRecord{Network: network, Samples: 1 + rng.IntN(5),
						At: now.Add(-time.Duration(rng.IntN(90)) * time.Second), RTTMs: map[string]float64{}}
					for _, pop := range []string{"lhr", "fra", "nrt"} {
						if rng.IntN(2) == 0 {
							r.RTTMs[pop] = 1 + rng.Float64()*300
						}
					}
					m.Put(key, r, now)
					last[key] = r
				case op < 8:
					for k := range last {
						m.Delete(k, now)
						delete(last, k)
						break
					}
				case op < 9:
					now = now.Add(time.Duration(rng.IntN(20)) * time.Second)
				default:
					m.Sweep(now)
				}
				if n := m.Len(); n > bound {
					t.Fatalf("step %d: %d records held, bound %d", step, n, bound)
				}
				network := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(rng.IntN(40)), 0}), 24)
				rtt, _, _ := m.Lookup(network, now)
				for pop, got := range rtt {
					lo, hi, fresh := 1e9, -1.0, false
					for _, r := range last {
						if r.Network != network || now.Sub(r.At) > maxAge {
							continue
						}
						if ms, ok := r.RTTMs[pop]; ok {
							fresh = true
							lo, hi = min(lo, ms), max(hi, ms)
						}
					}
					if !fresh {
						t.Fatalf("step %d: %s -> %s = %.1f ms with no fresh record behind it", step, network, pop, got)
					}
					if got < lo-1e-9 || got > hi+1e-9 {
						t.Fatalf("step %d: %s -> %s = %.1f ms, outside its records' range [%.1f, %.1f]", step, network, pop, got, lo, hi)
					}
				}
			}
			now = now.Add(2 * maxAge)
			m.Sweep(now)
			if n := m.Len(); n != 0 {
				t.Errorf("after every record aged out: %d held, want 0", n)
			}
		})
	}
}

// putLatency writes a latency record as edge pop/n1 would, through NATS with that edge's
// credentials, and waits until the server's map has it.
func (fx *liveFixture) putLatency(t *testing.T, pop string, network netip.Prefix, rtt map[string]float64) {
	t.Helper()
	nc, _ := fx.ns.ConnectAs(t, natsauth.Edge(pop, "n1"))
	b, _ := json.Marshal(wire.LatencyRecord{Network: network, RTTMs: rtt, Samples: 3, At: time.Now()})
	if err := nc.Publish("$KV.meridian_latency."+wire.LatencyKey(pop, "n1", network), b); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the measurements in the map", func() bool {
		got, _, _ := fx.lat.Lookup(network, time.Now())
		for p, ms := range rtt {
			if got[p] != ms {
				return false
			}
		}
		return true
	})
}

// TestLiveLatencyRouting: measurements that edges publish over NATS send a network to the PoP
// with the lowest measured RTT, under both latency and nearest; networks without measurements
// go by geography; explain shows the figures; a stable small share explores the second best.
func TestLiveLatencyRouting(t *testing.T) {
	for _, policy := range []string{"latency", "nearest"} {
		t.Run(policy, func(t *testing.T) {
			fx := startLive(t, func(c *Config) { c.Policy.Policy = policy })
			// London's /24 number 5 is routed through a far hub to lhr: fra measures lower.
			measured := cityPrefix(t, "London", 5)
			fx.putLatency(t, "lhr", measured, map[string]float64{"lhr": 80, "fra": 15})
			tests := []struct {
				name   string
				client netip.Prefix
				want   string
			}{
				{"measured network", measured, "fra"},
				{"unmeasured network", cityPrefix(t, "London", 6), "lhr"},
			}
			for _, tt := range tests {
				if got := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: tt.client})); got != tt.want {
					t.Errorf("%s: PoP = %s, want %s", tt.name, got, tt.want)
				}
			}
			r := fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: measured})
			if e := ecsOf(r); e == nil || e.SourceScope != 24 {
				t.Errorf("scope of a measured answer = %v, want 24 (it holds for that network only)", e)
			}
			ex, err := fx.Explain(measured.Addr(), "www", dns.TypeA)
			if err != nil {
				t.Fatal(err)
			}
			var sb strings.Builder
			ex.Write(&sb)
			if ex.PoP != "fra" || ex.Samples != 3 || !strings.Contains(sb.String(), "15.0") || !strings.Contains(sb.String(), "3 beacon reports and 0 edge RTT samples from "+measured.String()) {
				t.Errorf("explain = %+v\n%s\nwant fra chosen from 3 reports, 15.0 ms shown", ex, sb.String())
			}
			// A saturated best PoP sheds as under nearest: measurements pick the order only.
			fx.waitSaturation(t, "fra", 1.5)
			if got := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: measured})); got != "lhr" {
				t.Errorf("best PoP overloaded: PoP = %s, want lhr", got)
			}
		})
	}
}

// TestLatencyExplores: about Explore of the measured networks go to the second best, always
// the same ones.
func TestLatencyExplores(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Policy.Policy = "latency"; c.Policy.Explore = 0.1 })
	now := time.Now()
	const n = 200
	for i := range n {
		p := cityPrefix(t, "London", byte(i))
		ts.lat.Put(wire.LatencyKey("lhr", "n1", p), wire.LatencyRecord{Network: p, Samples: 1, At: now,
			RTTMs: map[string]float64{"lhr": 50, "fra": 10}}, now)
	}
	round := func() []int {
		var explored []int
		for i := range n {
			if ts.popOf(t, ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: cityPrefix(t, "London", byte(i))})) == "lhr" {
				explored = append(explored, i)
			}
		}
		return explored
	}
	first, second := round(), round()
	if share := float64(len(first)) / n; share < 0.04 || share > 0.18 {
		t.Errorf("share exploring the second best = %.2f, want 0.10±0.06", share)
	}
	if !slices.Equal(first, second) {
		t.Errorf("exploring networks changed between rounds: %v then %v, want the same (stable hash)", first, second)
	}
}

// TestLiveLatencyInvalidatesOnlyItsNetwork: a measurement for network A that changes A's RTT
// order changes A's answer at once and leaves network B's cached answer (a hit) and the rest
// of the cache alone; a new figure that keeps A's order keeps A's answer too.
func TestLiveLatencyInvalidatesOnlyItsNetwork(t *testing.T) {
	fx := startLive(t, nil)
	a, b := cityPrefix(t, "London", 5), cityPrefix(t, "London", 6)
	hits := func() float64 { return metricValue(t, fx.Server, "meridian_dns_cache_hits_total", "") }
	// ask queries network p's answer and reports its PoP and whether it came from the cache.
	ask := func(p netip.Prefix) (string, bool) {
		h := hits()
		pop := fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: p}))
		return pop, hits() == h+1
	}
	for _, p := range []netip.Prefix{a, b} {
		if pop, _ := ask(p); pop != "lhr" {
			t.Fatalf("%s before any measurement: PoP = %s, want lhr", p, pop)
		}
		if _, hit := ask(p); !hit {
			t.Fatalf("%s asked twice: second answer not from the cache", p)
		}
	}
	dropped := metricValue(t, fx.Server, "meridian_dns_state_rebuilds_total", "dropped")
	changes := metricValue(t, fx.Server, "meridian_dns_latency_changes_total", "")

	fx.putLatency(t, "lhr", a, map[string]float64{"lhr": 80, "fra": 15})
	if pop, hit := ask(b); pop != "lhr" || !hit {
		t.Errorf("B after A's measurement: PoP %s, cache hit %v; want lhr from the cache", pop, hit)
	}
	if pop, hit := ask(a); pop != "fra" || hit {
		t.Errorf("A after its measurement: PoP %s, cache hit %v; want fra, freshly routed", pop, hit)
	}
	if pop, hit := ask(a); pop != "fra" || !hit {
		t.Errorf("A asked again: PoP %s, cache hit %v; want fra from the cache", pop, hit)
	}
	if got := metricValue(t, fx.Server, "meridian_dns_latency_changes_total", "") - changes; got != 1 {
		t.Errorf("latency order changes = %v, want 1", got)
	}
	if got := metricValue(t, fx.Server, "meridian_dns_state_rebuilds_total", "dropped") - dropped; got != 0 {
		t.Errorf("%v state rebuilds dropped the whole cache after a latency change, want 0", got)
	}

	fx.putLatency(t, "lhr", a, map[string]float64{"lhr": 70, "fra": 20})
	if pop, hit := ask(a); pop != "fra" || !hit {
		t.Errorf("A after a figure that keeps its order: PoP %s, cache hit %v; want fra from the cache", pop, hit)
	}
}

// TestLiveLatencyResnapshotsAfterReconnect: a record that disappears from the latency bucket
// while DNS is cut off from NATS, without any message a watch could see (a purge of its
// subject in the stream, as the bucket's own expiry does it), is gone from the map once DNS
// reconnects: the watch starts again from a snapshot.
func TestLiveLatencyResnapshotsAfterReconnect(t *testing.T) {
	var cut *natstest.Cutter
	fx := startLive(t, func(c *Config) {
		cut = natstest.NewCutter(t, "127.0.0.1", c.NATS)
		c.NATS = cut.URL()
	})
	measured := cityPrefix(t, "London", 9)
	fx.putLatency(t, "lhr", measured, map[string]float64{"lhr": 80, "fra": 15})
	pop := func() string { return fx.popOf(t, fx.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: measured})) }
	if got := pop(); got != "fra" {
		t.Fatalf("measured network: PoP = %s, want fra", got)
	}

	cut.Cut()
	_, js := fx.ns.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "KV_"+wire.Bucket("", wire.LatencyBucket))
	if err != nil {
		t.Fatal(err)
	}
	subject := "$KV." + wire.Bucket("", wire.LatencyBucket) + "." + wire.LatencyKey("lhr", "n1", measured)
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		t.Fatal(err)
	}
	cut.Restore()

	wait.For(t, 15*time.Second, "the expired measurements gone", func() bool {
		rtt, _, _ := fx.lat.Lookup(measured, time.Now())
		return rtt == nil
	})
	if got := pop(); got != "lhr" {
		t.Errorf("after the record vanished: PoP = %s, want lhr (by geography)", got)
	}
}

// TestLatencyMapGenerations: a record that changes a network's RTT order moves that network's
// generation on and no other's; one that keeps the order, or a snapshot that repeats what the
// map holds, moves none; a snapshot without the record moves it again.
func TestLatencyMapGenerations(t *testing.T) {
	m := newLatencyMap(0, 0)
	now := time.Now()
	a, b := netip.MustParsePrefix("100.64.3.0/24"), netip.MustParsePrefix("100.64.4.0/24")
	for genSlot(b) == genSlot(a) { // a neighbour in another slot (the seed is per process)
		b = netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, b.Addr().As4()[2] + 1, 0}), 24)
	}
	sa, sb := genSlot(a), genSlot(b)
	put := func(rtt map[string]float64) (string, wire.LatencyRecord) {
		r := wire.LatencyRecord{Network: a, Samples: 1, At: now, RTTMs: rtt}
		k := wire.LatencyKey("lhr", "n1", a)
		m.Put(k, r, now)
		return k, r
	}
	ga, gb := m.gen(sa), m.gen(sb)
	put(map[string]float64{"lhr": 80, "fra": 15})
	if m.gen(sa) == ga || m.gen(sb) != gb {
		t.Fatalf("first record for A: generations A %d->%d, B %d->%d; want A moved, B kept", ga, m.gen(sa), gb, m.gen(sb))
	}
	ga = m.gen(sa)
	k, r := put(map[string]float64{"lhr": 70, "fra": 20})
	if m.gen(sa) != ga {
		t.Errorf("a figure that keeps A's order moved A's generation")
	}
	m.Replace(map[string]wire.LatencyRecord{k: r}, now)
	if m.gen(sa) != ga {
		t.Errorf("a snapshot repeating the map moved A's generation")
	}
	m.Replace(nil, now)
	if m.gen(sa) == ga || m.gen(sb) != gb || m.Len() != 0 {
		t.Errorf("an empty snapshot: generation A moved %v, B moved %v, %d records left; want A moved, B not, none left",
			m.gen(sa) != ga, m.gen(sb) != gb, m.Len())
	}
}

// TestScopeFloorWhileFollowingLatency: once the server follows a latency map, an answer's
// ECS scope is never wider than one client network (/24, /48), geographic or measured, and
// not even for a source prefix shorter than that: with the database's /16, a resolver would
// reuse it for a /24 inside that has measurements of its own, and an answer routed on the
// measurements of the /24 at a /20's address holds for that /24 only. Found by a bug hunter:
// a /20 was routed on one /24's measurements and answered with scope /20.
func TestScopeFloorWhileFollowingLatency(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Policy.Explore = -1 })
	scope := func(p netip.Prefix) (string, uint8) {
		r := ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: p})
		e := ecsOf(r)
		if e == nil {
			t.Fatalf("%s: no ECS in the reply", p)
		}
		return ts.popOf(t, r), e.SourceScope
	}
	if _, got := scope(cityPrefix(t, "London", 5)); got != 16 {
		t.Fatalf("no latency map followed: scope /%d, want the database network's /16", got)
	}
	// Following starts before the first query in a live server (natsfleet), so the answers
	// cached so far do not count: other database networks below.
	tokyo := cityPrefix(t, "Tokyo", 1)
	if l, err := ts.geo.Lookup(tokyo.Addr()); err != nil || l.Network.Bits() >= 24 {
		t.Fatalf("Tokyo's database network = %v (%v), want one wider than /24", l.Network, err)
	}
	ts.lat.followed.Store(true)
	// Paris's 100.x.16.0/24 measured fra far better than lhr: it goes to fra, and so does a
	// /20 (or a /116 of IPv4-mapped IPv6) at its address, on its measurements.
	paris := cityPrefix(t, "Paris", 16)
	now := time.Now()
	ts.lat.Put(wire.LatencyKey("fra", "fra-1", paris), wire.LatencyRecord{Network: paris, Samples: 9, At: now,
		RTTMs: map[string]float64{"lhr": 90, "fra": 10}}, now)
	mapped := func(p netip.Prefix) netip.Prefix {
		b := p.Addr().As4()
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}), 96+p.Bits())
	}
	for _, tt := range []struct {
		name    string
		ecs     netip.Prefix
		wantPoP string // "" any
		want    uint8
	}{
		{"geographic /24", tokyo, "nrt", 24},
		{"geographic /20", netip.PrefixFrom(cityPrefix(t, "Sydney", 32).Addr(), 20), "syd", 24},
		{"measured /24", paris, "fra", 24},
		{"measured /20", netip.PrefixFrom(paris.Addr(), 20), "fra", 24},
		{"measured /20 as IPv4-mapped /116", mapped(netip.PrefixFrom(paris.Addr(), 20)), "fra", 96 + 24},
		{"IPv6 /40, unknown: the default PoP", netip.MustParsePrefix("2001:db8::/40"), "iad", 48},
	} {
		for _, how := range []string{"resolved", "cached"} {
			if pop, got := scope(tt.ecs); got != tt.want || pop != tt.wantPoP {
				t.Errorf("%s (%s, %s): %s with scope /%d, want %s with /%d", tt.name, tt.ecs, how, pop, got, tt.wantPoP, tt.want)
			}
		}
	}
}

// TestConfigLatencyRecords: latency_records in a `meridian dns` config file bounds the
// server's latency map (default 200,000), and a negative bound is refused from Go as from a
// file. It was a constant, so a fleet whose bucket held more records than 200,000 routed no
// more networks by RTT however large deploy made the bucket.
func TestConfigLatencyRecords(t *testing.T) {
	base, err := os.ReadFile("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mmdb := testMMDB(t, t.TempDir())
	for _, tt := range []struct {
		name, yaml string
		want       int
	}{
		{"default", "", DefaultLatencyRecords},
		{"small", "latency_records: 1000\n", 1000},
		{"fleet of 40 edges", "latency_records: 400000\n", 400_000},
		{"written as a float", "latency_records: 2.5e5\n", 250_000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text := strings.Replace(string(base), "mmdb: test-city.mmdb", "mmdb: "+mmdb, 1) + tt.yaml
			p := filepath.Join(t.TempDir(), "dns.yaml")
			if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfig(p)
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if s.lat.max != tt.want {
				t.Fatalf("latency map bound = %d, want %d", s.lat.max, tt.want)
			}
			if tt.want > 1000 {
				return // the bound's effect, below, at a size a test fills quickly
			}
			now := time.Now()
			fillLatency(t, s.lat, 0, tt.want, 1, now.Add(-time.Minute), now)
			if n := s.lat.Len(); n != tt.want {
				t.Errorf("after %d records the map holds %d, want all of them", tt.want, n)
			}
			fillLatency(t, s.lat, tt.want, tt.want+10, 1, now.Add(-time.Minute), now)
			if n := s.lat.Len(); n > tt.want {
				t.Errorf("after %d records the map holds %d, more than its bound %d", tt.want+10, n, tt.want)
			}
		})
	}
	cfg := testConfig(t)
	cfg.LatencyRecords = -1
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "latency_records: is negative") {
		t.Errorf("New with LatencyRecords -1: %v, want latency_records: is negative", err)
	}
}

// TestLatencyMapEvictsOldest: a full map drops its oldest measured record for a newer one,
// and only that one: the generation of no other network moves. A record older than all a full
// map holds is not taken, a rewritten record counts as new, and a snapshot twice the bound
// leaves the bound's newest records whatever order it is put in. The map once dropped an
// eighth at a time (sorting every record under its lock) and kept whichever records of a
// snapshot came last in map order.
func TestLatencyMapEvictsOldest(t *testing.T) {
	const bound = 8
	now := time.Now()
	base := now.Add(-time.Minute)
	rec := func(i int, at time.Duration) (string, wire.LatencyRecord) {
		return latencyEntry(t, i, 2, base.Add(at))
	}
	m := newLatencyMap(bound, 0)
	put := func(i int, at time.Duration) {
		k, r := rec(i, at)
		m.Put(k, r, now)
	}
	for _, i := range rand.Perm(bound) { // record i measured at base + i s
		put(i, time.Duration(i)*time.Second)
	}
	held := func() (nets []int) {
		for i := range 4 * bound {
			if m.Has(latencyNetwork(i)) {
				nets = append(nets, i)
			}
		}
		return nets
	}
	gens := func() (g []uint32) {
		for i := range 4 * bound {
			g = append(g, m.gen(genSlot(latencyNetwork(i))))
		}
		return g
	}
	// moved lists the networks whose slot moved, but for those sharing a slot with one of
	// want (the seed is per process).
	moved := func(before []uint32, want ...int) (got []int) {
		for i, g := range gens() {
			shares := slices.ContainsFunc(want, func(w int) bool { return genSlot(latencyNetwork(w)) == genSlot(latencyNetwork(i)) })
			if g != before[i] && (!shares || slices.Contains(want, i)) {
				got = append(got, i)
			}
		}
		return got
	}
	steps := []struct {
		name      string
		put       func()
		held      []int
		wantMoved []int
	}{
		{"a newer record", func() { put(8, 8*time.Second) }, []int{1, 2, 3, 4, 5, 6, 7, 8}, []int{0, 8}},
		{"a record older than all held", func() { put(9, -time.Second) }, []int{1, 2, 3, 4, 5, 6, 7, 8}, nil},
		{"a rewrite makes a record new", func() { put(1, 9*time.Second) }, []int{1, 2, 3, 4, 5, 6, 7, 8}, nil},
		{"then the oldest is the next", func() { put(10, 10*time.Second) }, []int{1, 3, 4, 5, 6, 7, 8, 10}, []int{2, 10}},
	}
	for _, st := range steps {
		before := gens()
		st.put()
		if got := held(); !slices.Equal(got, st.held) {
			t.Errorf("%s: networks held %v, want %v", st.name, got, st.held)
		}
		if got := moved(before, st.wantMoved...); !slices.Equal(got, st.wantMoved) {
			t.Errorf("%s: generations of networks %v moved, want %v", st.name, got, st.wantMoved)
		}
		if n := m.Len(); n != bound {
			t.Errorf("%s: %d records held, want %d", st.name, n, bound)
		}
	}
	snap := map[string]wire.LatencyRecord{}
	for i := 2 * bound; i < 4*bound; i++ {
		k, r := rec(i, time.Duration(i)*time.Second)
		snap[k] = r
	}
	for range 5 { // map order differs each time
		m.Replace(snap, now)
		if got, want := held(), []int{24, 25, 26, 27, 28, 29, 30, 31}; !slices.Equal(got, want) {
			t.Errorf("after a snapshot of %d records: networks held %v, want the newest %v", len(snap), got, want)
		}
	}
}

// TestLatencyRecordMemory: what one record costs the DNS process's heap in a full map (its
// key, the record decoded from the bucket's JSON with its RTT map, and the map's indexes),
// which says what latency_records costs in RAM (docs/dns.md, "Latency map"): about 680
// bytes with the node's own PoP only, about 1,520 with the 16 PoPs a record keeps at most.
func TestLatencyRecordMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills maps of 20,000 records")
	}
	const records = 20_000
	for _, tt := range []struct {
		name     string
		pops     int
		min, max uint64 // bytes per record, as docs/dns.md says (-race adds some 15%)
	}{
		{"own PoP only", 1, 500, 800},
		{"16 PoPs", 16, 1300, 1800},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			heapInUse := func() uint64 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			before := heapInUse()
			m := newLatencyMap(records, 0)
			fillLatency(t, m, 0, records, tt.pops, now.Add(-time.Minute), now)
			after := heapInUse()
			if m.Len() != records {
				t.Fatalf("%d records held, want %d", m.Len(), records)
			}
			runtime.KeepAlive(m)
			per := (after - min(after, before)) / records
			t.Logf("%d records of %d PoPs: %d bytes each", records, tt.pops, per)
			if per < tt.min || per > tt.max {
				t.Errorf("a record costs the heap %d bytes, want %d-%d (the documented figures)", per, tt.min, tt.max)
			}
		})
	}
}

// TestLatencyMapFutureRecordsAgeFromArrival: a record can claim any measurement time (an
// edge's clock, or a hostile edge), and a full map keeps its newest records, so records
// dated in the future would have held the map against every honest one, and never been
// swept, until the bucket's TTL deleted them. A record counts from its arrival at the latest.
func TestLatencyMapFutureRecordsAgeFromArrival(t *testing.T) {
	const bound = 4
	now := time.Now()
	m := newLatencyMap(bound, time.Minute)
	for i := range bound {
		k, r := latencyEntry(t, i, 2, now.Add(time.Hour))
		m.Put(k, r, now)
	}
	k, r := latencyEntry(t, bound, 2, now.Add(500*time.Millisecond))
	m.Put(k, r, now.Add(time.Second))
	if !m.Has(latencyNetwork(bound)) {
		t.Error("an honest record refused by a full map of records dated an hour ahead")
	}
	if got := m.Len(); got != bound {
		t.Errorf("%d records held, want the bound %d", got, bound)
	}
	m.Sweep(now.Add(time.Minute + 200*time.Millisecond))
	for i := range bound {
		if m.Has(latencyNetwork(i)) {
			t.Errorf("network %d, dated an hour ahead, still held a minute (maxAge) after it came", i)
		}
	}
	if !m.Has(latencyNetwork(bound)) {
		t.Error("the honest record, measured within maxAge, was swept")
	}
}

// TestLatencyMapHeapConsistent is a property test of the age heap's bookkeeping: under any
// sequence of puts (a key moving to another network, records dated ahead, records too old),
// deletes (of keys held or not), snapshots and sweeps, the heap holds exactly the map's
// records, each at the index it records, in heap order; the network index lists exactly the
// keys of each network; a network whose RTT order changed has its generation moved; and a
// snapshot leaves its newest records up to the bound.
func TestLatencyMapHeapConsistent(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1024))
			const bound, maxAge, networks = 16, time.Minute, 12
			m := newLatencyMap(bound, maxAge)
			now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			network := func() netip.Prefix {
				return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(rng.IntN(networks)), 0}), 24)
			}
			// Keys are node and slot, so that one key holds records of different networks.
			key := func() string { return fmt.Sprintf("lhr.n%d.%d", rng.IntN(3), rng.IntN(12)) }
			record := func() wire.LatencyRecord {
				r := wire.LatencyRecord{Network: network(), Samples: 1 + rng.IntN(5),
					At: now.Add(time.Duration(rng.IntN(100)-80) * time.Second), RTTMs: map[string]float64{}}
				for _, pop := range []string{"lhr", "fra", "nrt"} {
					if rng.IntN(2) == 0 {
						r.RTTMs[pop] = float64(1 + rng.IntN(5))
					}
				}
				return r
			}
			orders := func() (o []string) {
				for i := range networks {
					rtt, _, _ := m.Lookup(netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), 0}), 24), now)
					pops := slices.Collect(maps.Keys(rtt))
					slices.SortFunc(pops, func(a, b string) int {
						if c := cmp.Compare(rtt[a], rtt[b]); c != 0 {
							return c
						}
						return strings.Compare(a, b)
					})
					o = append(o, strings.Join(pops, ","))
				}
				return o
			}
			gens := func() (g []uint32) {
				for i := range networks {
					g = append(g, m.gen(genSlot(netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), 0}), 24))))
				}
				return g
			}
			for step := range 3000 {
				beforeOrder, beforeGen := orders(), gens()
				var op string
				var snap map[string]wire.LatencyRecord
				switch n := rng.IntN(20); {
				case n < 12:
					op = "put"
					m.Put(key(), record(), now)
				case n < 15:
					op = "delete"
					m.Delete(key(), now)
				case n < 16:
					op = "replace"
					snap = map[string]wire.LatencyRecord{}
					for range rng.IntN(3 * bound) {
						// The bucket's latest value under a key is measured no earlier than
						// the one the map holds.
						k, r := key(), record()
						m.mu.Lock()
						if h := m.recs[k]; h != nil && h.At.After(r.At) {
							r.At = h.At
						}
						m.mu.Unlock()
						snap[k] = r
					}
					m.Replace(snap, now)
				case n < 17:
					op = "sweep"
					m.Sweep(now)
				default:
					op = "clock"
					now = now.Add(time.Duration(rng.IntN(10)) * time.Second)
					beforeOrder = orders() // records may age out of the order without a change
				}
				m.mu.Lock()
				if len(m.byAge) != len(m.recs) || len(m.recs) > bound {
					t.Fatalf("step %d (%s): heap %d, map %d records, bound %d", step, op, len(m.byAge), len(m.recs), bound)
				}
				for i, r := range m.byAge {
					if r.idx != i || m.recs[r.key] != r {
						t.Fatalf("step %d (%s): heap[%d] = %s with idx %d, map holds it: %v", step, op, i, r.key, r.idx, m.recs[r.key] == r)
					}
					if i > 0 && m.byAge.Less(i, (i-1)/2) {
						t.Fatalf("step %d (%s): heap[%d] older than its parent", step, op, i)
					}
				}
				keys := 0
				for n, ks := range m.nets {
					for _, k := range ks {
						if r := m.recs[k]; r == nil || r.Network != n {
							t.Fatalf("step %d (%s): network %s lists %s, not its record", step, op, n, k)
						}
					}
					keys += len(ks)
				}
				if keys != len(m.recs) {
					t.Fatalf("step %d (%s): networks list %d keys, map holds %d", step, op, keys, len(m.recs))
				}
				if snap != nil {
					var want []*latencyRec
					for k, r := range snap {
						if r.At.After(now) {
							r.At = now
						}
						if now.Sub(r.At) <= maxAge {
							want = append(want, &latencyRec{LatencyRecord: r, key: k})
						}
					}
					slices.SortFunc(want, func(a, b *latencyRec) int {
						if b.newer(a) {
							return 1
						}
						return -1
					})
					want = want[:min(len(want), bound)]
					var got []string
					for _, r := range m.byAge {
						got = append(got, r.key)
					}
					if len(got) != len(want) || slices.ContainsFunc(want, func(r *latencyRec) bool { return m.recs[r.key] == nil || !m.recs[r.key].At.Equal(r.At) }) {
						t.Fatalf("step %d: after a snapshot the map holds %v, want the newest %d of it", step, got, len(want))
					}
				}
				m.mu.Unlock()
				afterOrder, afterGen := orders(), gens()
				for i := range networks {
					if afterOrder[i] != beforeOrder[i] && afterGen[i] == beforeGen[i] {
						t.Fatalf("step %d (%s): network %d's order %q -> %q, its generation stayed %d", step, op, i, beforeOrder[i], afterOrder[i], afterGen[i])
					}
				}
			}
		})
	}
}

// TestLatencyMapExpiryMovesGeneration: a network whose records aged out is routed without
// them (by geography) until the next sweep, and that answer is cached under the network's
// generation then; a new record that brings the old order back must move the generation, or
// the cached answer outlives it. The map compared the new order with the one it stored
// before the records aged out, found it the same, and kept the generation.
func TestLatencyMapExpiryMovesGeneration(t *testing.T) {
	const maxAge = time.Minute
	now := time.Now()
	network := netip.MustParsePrefix("100.64.7.0/24")
	slot := genSlot(network)
	for _, tt := range []struct {
		name  string
		write func(m *latencyMap, at time.Time)
	}{
		{"the same key", func(m *latencyMap, at time.Time) {
			m.Put(wire.LatencyKey("lhr", "n1", network), wire.LatencyRecord{Network: network, Samples: 1, At: at, RTTMs: map[string]float64{"fra": 10, "lhr": 20}}, at)
		}},
		{"another node's key", func(m *latencyMap, at time.Time) {
			m.Put(wire.LatencyKey("fra", "n2", network), wire.LatencyRecord{Network: network, Samples: 1, At: at, RTTMs: map[string]float64{"fra": 10, "lhr": 20}}, at)
		}},
		{"a snapshot", func(m *latencyMap, at time.Time) {
			m.Replace(map[string]wire.LatencyRecord{wire.LatencyKey("fra", "n2", network): {Network: network, Samples: 1, At: at, RTTMs: map[string]float64{"fra": 10, "lhr": 20}}}, at)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newLatencyMap(0, maxAge)
			m.Put(wire.LatencyKey("lhr", "n1", network), wire.LatencyRecord{Network: network, Samples: 1, At: now, RTTMs: map[string]float64{"fra": 10, "lhr": 20}}, now)
			later := now.Add(maxAge + time.Second)
			if rtt, _, _ := m.Lookup(network, later); rtt != nil {
				t.Fatalf("an aged-out record still counts: %v", rtt)
			}
			cached := m.gen(slot) // an answer routed by geography now is cached under it
			tt.write(m, later)
			if rtt, _, _ := m.Lookup(network, later); rtt == nil {
				t.Fatal("the new record does not count")
			}
			if m.gen(slot) == cached {
				t.Errorf("measurements came back to a network routed without them, and its generation stayed %d: the answer routed by geography stays cached", cached)
			}
		})
	}
}
