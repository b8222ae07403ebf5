package dnsroute

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
)

func benchQuery(b *testing.B, ecs bool, third byte) []byte {
	m := new(dns.Msg)
	m.SetQuestion("www.cdn.example.", dns.TypeA)
	if ecs {
		m.SetEdns0(1232, false)
		p := cityPrefix(b, "London", third)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: familyIPv4, SourceNetmask: 24, Address: net.IP(p.Addr().AsSlice())})
	}
	pkt, err := m.Pack()
	if err != nil {
		b.Fatal(err)
	}
	return pkt
}

// BenchmarkHandleUDP measures the handler alone (no sockets): a cache hit is a key build, a
// map lookup and a patch of the pre-packed reply.
func BenchmarkHandleUDP(b *testing.B) {
	cfg := testConfig(b)
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	src := netip.MustParseAddrPort("127.1.1.1:4000")
	s.coarseNow.Store(time.Now().UnixNano()) // as Serve's clock ticker would
	for _, bc := range []struct {
		name string
		ecs  bool
	}{{"hit", false}, {"hit-ecs", true}} {
		b.Run(bc.name, func(b *testing.B) {
			benchHits(b, s, benchQuery(b, bc.ecs, 1), src)
		})
	}
	b.Run("miss-ecs", func(b *testing.B) {
		pkts := make([][]byte, 256)
		for i := range pkts {
			pkts[i] = benchQuery(b, true, byte(i))
		}
		w := newWorker()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			s.invalidate() // every query misses
			if s.handleUDP(w, pkts[i%len(pkts)], src) == nil {
				b.Fatal("no reply")
			}
			i++
		}
	})
}

// BenchmarkHandleUDPLargePoP measures cache hits of an answer from a PoP of 200 nodes: the
// hit writes its rotation turn's addresses into one cached reply, as for a PoP of two.
func BenchmarkHandleUDPLargePoP(b *testing.B) {
	cfg := testConfig(b)
	for k := range 198 {
		cfg.PoPs[0].Nodes = append(cfg.PoPs[0].Nodes, NodeConfig{ID: fmt.Sprintf("lhr-x%03d", k), IPv4: netip.AddrFrom4([4]byte{198, 51, byte(k / 200), byte(k%200 + 1)}).String(), Capacity: 1000})
	}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	src := netip.MustParseAddrPort("127.1.1.1:4000")
	s.coarseNow.Store(time.Now().UnixNano())
	benchHits(b, s, benchQuery(b, true, 1), src)
}

// benchHits answers pkt once (a miss that fills the cache), then measures its hits.
func benchHits(b *testing.B, s *Server, pkt []byte, src netip.AddrPort) {
	w := newWorker()
	s.handleUDP(w, pkt, src)
	b.ReportAllocs()
	for b.Loop() {
		if s.handleUDP(w, pkt, src) == nil {
			b.Fatal("no reply")
		}
	}
}

// BenchmarkServeUDP measures whole round trips over loopback with the miekg/dns client.
func BenchmarkServeUDP(b *testing.B) {
	benchServeUDP(b, startServer(b, nil).addr)
}

// BenchmarkServeUDPWildcard is BenchmarkServeUDP against a server bound to every address
// (listen's default), whose replies carry the address each query was sent to as their
// source (IP_PKTINFO).
func BenchmarkServeUDPWildcard(b *testing.B) {
	s, err := New(testConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	ts, err := serveOn(b, s, "0.0.0.0:0")
	if err != nil {
		b.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ts.addr)
	benchServeUDP(b, net.JoinHostPort("127.0.0.1", port))
}

func benchServeUDP(b *testing.B, addr string) {
	pkt := benchQuery(b, true, 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("udp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 1500)
		for pb.Next() {
			if _, err := c.Write(pkt); err != nil {
				b.Fatal(err)
			}
			if _, err := c.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkNewPrefixes measures queries from client /24s that are not in the answer cache
// (the cache holds 1,024 answers; the queries cycle over 9,728 /24s of 38 cities): what a
// server sees from the long tail of resolvers' ECS subnets.
func BenchmarkNewPrefixes(b *testing.B) {
	cfg := testConfig(b)
	cfg.CacheEntries = 1024
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	s.coarseNow.Store(time.Now().UnixNano())
	var pkts [][]byte
	for third := range 256 {
		for _, c := range geodata.Cities {
			m := new(dns.Msg)
			m.SetQuestion("www.cdn.example.", dns.TypeA)
			m.SetEdns0(1232, false)
			a := c.V4.Addr().As4()
			a[2] = byte(third)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IP(a[:])})
			pkt, err := m.Pack()
			if err != nil {
				b.Fatal(err)
			}
			pkts = append(pkts, pkt)
		}
	}
	src := netip.MustParseAddrPort("127.1.1.1:4000")
	w := newWorker()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if s.handleUDP(w, pkts[i%len(pkts)], src) == nil {
			b.Fatal("no reply")
		}
		i++
	}
}

// BenchmarkHandleUDPParallel measures cache hits of one hot answer from every core at once,
// as the UDP workers serve a popular name.
func BenchmarkHandleUDPParallel(b *testing.B) {
	s, err := New(testConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	s.coarseNow.Store(time.Now().UnixNano())
	src := netip.MustParseAddrPort("127.1.1.1:4000")
	pkt := benchQuery(b, true, 1)
	s.handleUDP(newWorker(), pkt, src)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := newWorker()
		for pb.Next() {
			if s.handleUDP(w, pkt, src) == nil {
				b.Error("no reply")
				return
			}
		}
	})
}
