package dnsroute

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
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
			pkt := benchQuery(b, bc.ecs, 1)
			w := newWorker()
			s.handleUDP(w, pkt, src)
			b.ReportAllocs()
			for b.Loop() {
				if s.handleUDP(w, pkt, src) == nil {
					b.Fatal("no reply")
				}
			}
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

// BenchmarkServeUDP measures whole round trips over loopback with the miekg/dns client.
func BenchmarkServeUDP(b *testing.B) {
	ts := startServer(b, nil)
	pkt := benchQuery(b, true, 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("udp", ts.addr)
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
