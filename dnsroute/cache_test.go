package dnsroute

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
	"github.com/meridian-cdn/meridian/wire"
)

// TestAnswerCacheBoundedLRU: however many keys pass through, the cache holds at most its bound,
// and a key in use survives a stream of one-off keys (a full cache no longer empties itself).
func TestAnswerCacheBoundedLRU(t *testing.T) {
	const bound = 256
	c := newAnswerCache(bound, 1<<30)
	hot := []byte("www.cdn.example.|hot")
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c.put(hot, &entry{variants: [][]byte{{1}}}, now)
	for i := range 20 * bound {
		// Time passes, so that each hit of the hot key counts as recent use.
		now += promoteEvery
		c.put(fmt.Appendf(nil, "www.cdn.example.|%d", i), &entry{variants: [][]byte{{2}}}, now)
		if c.get(hot, now) == nil {
			t.Fatalf("after %d one-off keys: the hot key was evicted", i+1)
		}
		if n := c.len(); n > bound {
			t.Fatalf("after %d keys: %d entries held, bound %d", i+1, n, bound)
		}
	}
	if c.get([]byte("www.cdn.example.|0"), now) != nil {
		t.Errorf("the first one-off key is still held after %d newer ones", 20*bound)
	}
	if c.get([]byte("www.cdn.example.|nothing"), now) != nil {
		t.Errorf("a key never put was found")
	}
}

// TestRateLimiterBounded: the limiter forgets the prefixes that queried least recently once it
// holds its bound, never one that keeps querying: a flood of new prefixes neither grows memory
// nor frees a limited prefix, while an idle limited prefix is forgotten (its bucket would have
// refilled anyway).
func TestRateLimiterBounded(t *testing.T) {
	const perShard = 4
	r := newRateLimiterSized(RateLimit{QPS: 1, Burst: 2, Slip: -1}, perShard)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	busy, idle := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
	for _, a := range []netip.Addr{busy, idle} {
		for i := range 3 {
			if got, want := r.take(a, now), map[bool]limitAction{true: drop, false: allow}[i == 2]; got != want {
				t.Fatalf("%s query %d: action %v, want %v", a, i+1, got, want)
			}
		}
	}
	for i := range 2000 {
		r.take(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), now)
		if got := r.take(busy, now); got != drop {
			t.Fatalf("after %d new prefixes: the limited busy prefix got %v, want drop", i+1, got)
		}
	}
	held := 0
	for _, sh := range r.shards {
		held += sh.Len()
	}
	if held > perShard*rlShards {
		t.Errorf("%d prefixes held, bound %d", held, perShard*rlShards)
	}
	if got := r.take(idle, now); got != allow {
		t.Errorf("idle limited prefix after the flood: %v, want allow (forgotten, starts full)", got)
	}
}

// TestNetworkCache: a client prefix not yet in the cache gets the answer cached for its
// database network (one MMDB lookup, no routing) when that answer holds for every client
// there, and never when it does not: a network with measurements of its own, or a policy
// that hashes the client.
func TestNetworkCache(t *testing.T) {
	ts := startServer(t, nil)
	netHits := func() float64 { return metricValue(t, ts.Server, "meridian_dns_cache_network_hits_total", "") }
	ask := func(p netip.Prefix) (pop string, scope uint8) {
		r := ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: p})
		e := ecsOf(r)
		if e == nil {
			t.Fatalf("%s: no ECS in the reply", p)
		}
		return ts.popOf(t, r), e.SourceScope
	}
	if pop, scope := ask(cityPrefix(t, "London", 1)); pop != "lhr" || scope != 16 {
		t.Fatalf("first London /24: %s scope /%d, want lhr /16", pop, scope)
	}
	before := netHits()
	if pop, scope := ask(cityPrefix(t, "London", 2)); pop != "lhr" || scope != 16 {
		t.Errorf("second London /24: %s scope /%d, want lhr /16", pop, scope)
	}
	if got := netHits() - before; got != 1 {
		t.Errorf("second London /24: %v network hits, want 1", got)
	}

	measured := cityPrefix(t, "London", 3)
	now := time.Now()
	ts.lat.Put(wire.LatencyKey("lhr", "n1", measured), wire.LatencyRecord{Network: measured, Samples: 1, At: now,
		RTTMs: map[string]float64{"lhr": 80, "fra": 10}}, now)
	before = netHits()
	if pop, scope := ask(measured); pop != "fra" || scope != 24 {
		t.Errorf("measured London /24: %s scope /%d, want fra /24 (its own measurements, not the city's answer)", pop, scope)
	}
	if got := netHits() - before; got != 0 {
		t.Errorf("measured London /24: %v network hits, want 0", got)
	}
}

// TestNetworkCacheNotForPerClientAnswers: under weighted routing every answer depends on the
// client's hash, so no prefix takes another's answer, and the spread follows the weights.
func TestNetworkCacheNotForPerClientAnswers(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Policy.Policy = "weighted"
		c.Policy.Weights = map[string]float64{"lhr": 1, "fra": 1}
	})
	pops := map[string]int{}
	for i := range 64 {
		pops[ts.popOf(t, ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: cityPrefix(t, "London", byte(i))}))]++
	}
	if got := metricValue(t, ts.Server, "meridian_dns_cache_network_hits_total", ""); got != 0 {
		t.Errorf("%v network hits under weighted routing, want 0", got)
	}
	if pops["lhr"] < 16 || pops["fra"] < 16 {
		t.Errorf("64 London /24s went %v, want both lhr and fra about half", pops)
	}
}

// TestCacheScopeBySourceLength: sources of different lengths in one database network each get
// their own source, address and scope back, resolved, from the answer cache (by prefix and by
// network) and over TCP, whatever order they come in: the scope of one is never served to
// another. Geographic answers give every source ending in London's /16 the /16 (the /12 one
// too: RFC 7871 section 7.2.1); hashed ones give a longer source its own length; a followed
// latency map gives every one /24.
func TestCacheScopeBySourceLength(t *testing.T) {
	london := cityPrefix(t, "London", 9)
	src := func(bits int) netip.Prefix { return netip.PrefixFrom(london.Addr(), bits).Masked() }
	other := cityPrefix(t, "London", 10) // a second /24: the network cache's answer
	for _, tt := range []struct {
		name  string
		set   func(ts *testServer)
		scope map[netip.Prefix]uint8
	}{
		{"geographic", func(*testServer) {},
			map[netip.Prefix]uint8{london: 16, other: 16, src(20): 16, src(17): 16, src(16): 16, src(12): 16}},
		{"hashed", func(ts *testServer) {
			setPoP(ts.StaticFleet(), "lhr", func(n *wire.Node) { n.Load.RequestsPerSec = 0.9 * n.Capacity })
		}, map[netip.Prefix]uint8{london: 24, other: 24, src(20): 20, src(17): 17, src(16): 16, src(12): 16}},
		{"latency map followed", func(ts *testServer) { ts.lat.followed.Store(true) },
			map[netip.Prefix]uint8{london: 24, other: 24, src(20): 24, src(17): 24, src(16): 24, src(12): 24}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, nil)
			tt.set(ts)
			// Longest first, then shortest first: each order fills the cache for the other.
			order := []netip.Prefix{london, other, src(20), src(17), src(16), src(12)}
			for round := range 2 {
				for i := range order {
					p := order[i]
					if round == 1 {
						p = order[len(order)-1-i]
					}
					for _, nw := range []string{"udp", "udp", "tcp"} {
						r := ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{ecs: p, net: nw})
						e := ecsOf(r)
						if e == nil {
							t.Fatalf("%s over %s: no ECS in the reply", p, nw)
						}
						if int(e.SourceNetmask) != p.Bits() || !e.Address.Equal(net.IP(p.Addr().AsSlice())) || e.SourceScope != tt.scope[p] {
							t.Errorf("round %d, %s over %s: ECS %s/%d scope %d, want %s scope %d", round, p, nw, e.Address, e.SourceNetmask, e.SourceScope, p, tt.scope[p])
						}
					}
				}
			}
		})
	}
}

// heldEntries counts the answers st holds, by client prefix and by database network.
func heldEntries(st *state) int { return st.cache.len() }

// TestCacheBoundedUnderSpray: a flood of random names from random ECS subnets all over the
// database, sent over UDP, leaves at most cache_entries answers held, counting the network
// cache (docs/dns.md: "The cache holds at most cache_entries answers"), and names that do
// not exist add none at all.
func TestCacheBoundedUnderSpray(t *testing.T) {
	const bound = 64
	const maxBytes = 256 << 10 // 16 shards of 16 KiB: three or so of these entries each
	rng := rand.New(rand.NewPCG(1, 2))
	randomSubnet := func() netip.Prefix {
		c := geodata.Cities[rng.IntN(len(geodata.Cities))]
		b := c.V4.Addr().As4()
		b[2] = byte(rng.IntN(256))
		return netip.PrefixFrom(netip.AddrFrom4(b), 24)
	}
	for _, tt := range []struct {
		name      string
		hostnames []string
		qname     string // with a %d and a %x
		rcode     int
		maxHeld   int
		largePoPs bool
	}{
		{"names that do not exist", nil, "nx%d-%x.cdn.example.", dns.RcodeNameError, 0, false},
		{"routed names (wildcard)", []string{"*"}, "n%d-%x.cdn.example.", dns.RcodeSuccess, bound, false},
		// Long names in PoPs of 16 nodes (a reply per rotation turn): the entries are large,
		// and cache_bytes bounds them before cache_entries does.
		{"long routed names, large PoPs", []string{"*"}, strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." +
			strings.Repeat("c", 60) + ".n%d-%x.cdn.example.", dns.RcodeSuccess, bound, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) {
				c.CacheEntries = bound
				if tt.hostnames != nil {
					c.Hostnames = tt.hostnames
				}
				if tt.largePoPs {
					c.CacheBytes = maxBytes
					for i := range c.PoPs {
						for j := len(c.PoPs[i].Nodes); j < 16; j++ {
							c.PoPs[i].Nodes = append(c.PoPs[i].Nodes, NodeConfig{ID: fmt.Sprint("x", j), IPv4: fmt.Sprintf("192.0.2.%d", 16*i+j)})
						}
					}
				}
			})
			conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 1, 1, 78)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ts.addr)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, 4096)
			for i := range 20 * bound {
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf(tt.qname, i, rng.Uint64()), dns.TypeA)
				m.Id = uint16(i)
				m.SetEdns0(1232, false)
				m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET,
					Family: familyIPv4, SourceNetmask: 24, Address: net.IP(randomSubnet().Addr().AsSlice())})
				b, _ := m.Pack()
				if _, err := conn.Write(b); err != nil {
					t.Fatal(err)
				}
				var r dns.Msg
				for r.Id != m.Id || !r.Response {
					n, err := conn.Read(buf)
					if err != nil {
						t.Fatalf("no reply to query %d: %v", i, err)
					}
					if r.Unpack(buf[:n]) != nil {
						r = dns.Msg{}
					}
				}
				if r.Rcode != tt.rcode {
					t.Fatalf("query %d: rcode %s, want %s", i, dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if n := heldEntries(ts.st.Load()); n > tt.maxHeld {
					t.Fatalf("after %d queries of new names from random subnets: %d answers held, want at most %d", i+1, n, tt.maxHeld)
				}
				if b := ts.st.Load().cache.size(); tt.largePoPs && b > maxBytes {
					t.Fatalf("after %d queries of long names: the cache holds %d bytes, want at most %d", i+1, b, maxBytes)
				}
			}
			if n := heldEntries(ts.st.Load()); tt.largePoPs && n >= bound {
				t.Errorf("%d large answers held: the byte bound never evicted (entries %d)", n, bound)
			}
		})
	}
}

// TestAnswerCacheBoundedBytes: entries of very different sizes are bounded by bytes as well as
// by count; replacing an entry does not count it twice; and small entries are not evicted by
// the byte bound while under it.
func TestAnswerCacheBoundedBytes(t *testing.T) {
	const maxBytes = 1 << 20
	c := newAnswerCache(100000, maxBytes)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	big := make([][]byte, 16)
	for i := range big {
		big[i] = make([]byte, 600)
	}
	for i := range 2000 {
		c.put(fmt.Appendf(nil, "%0250d.cdn.example.|%d", 0, i), &entry{variants: big}, now)
		if got := c.size(); got > maxBytes {
			t.Fatalf("after %d large entries: %d bytes held, want at most %d", i+1, got, maxBytes)
		}
	}
	if n := c.len(); n < 50 || n > 120 {
		t.Errorf("%d large entries held in %d bytes; want about 100 (10 KiB each)", n, maxBytes)
	}
	// The same key again and again: one entry's bytes.
	c = newAnswerCache(100000, maxBytes)
	for range 100 {
		c.put([]byte("k"), &entry{variants: big}, now)
	}
	if got, want := c.size(), int64(entryOverhead+1+16*(600+24)); got != want {
		t.Errorf("one key replaced 100 times holds %d bytes, want %d", got, want)
	}
	// Typical entries (a short name, 4 turns of 100 bytes) under the default bound: the entry
	// bound, not the byte bound, is what the default configuration meets first.
	c = newAnswerCache(100000, 128<<20)
	small := [][]byte{make([]byte, 100), make([]byte, 100), make([]byte, 100), make([]byte, 100)}
	for i := range 100000 {
		c.put(fmt.Appendf(nil, "www.cdn.example.|%d|198.51.%d.0/24", i, i%256), &entry{variants: small}, now)
	}
	if n := c.len(); n < 99000 {
		t.Errorf("%d typical entries held of 100,000 under the default 128 MiB", n)
	}
}
