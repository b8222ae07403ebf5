package dnsroute

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// TestUDPBatchAnswersEachClient: queries that arrive together are read and answered in
// batches; every client gets its own reply (its ID, its question's case, routed by its own
// address) and no other's.
func TestUDPBatchAnswersEachClient(t *testing.T) {
	ts := startServer(t, nil)
	type client struct {
		c    *net.UDPConn
		id   uint16
		name string
		pop  string
	}
	var clients []client
	for i := range 64 {
		city, pop := "London", "lhr"
		from := netip.AddrFrom4([4]byte{127, 1, 1, byte(10 + i)})
		if i%2 == 1 {
			city, pop = "Tokyo", "nrt"
			from = netip.AddrFrom4([4]byte{127, 1, 2, byte(10 + i)})
		}
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ts.addr)))
		if err != nil {
			t.Fatalf("client in %s: %v", city, err)
		}
		defer c.Close()
		name := "www.cdn.example."
		if i%3 == 0 {
			name = "WwW.cdn.example."
		}
		clients = append(clients, client{c: c, id: uint16(1000 + i), name: name, pop: pop})
	}
	// Send everything first, so that the server finds a deep queue; some clients send a
	// packet that gets no answer first, so that replies and queries differ in position.
	resp := new(dns.Msg)
	resp.SetQuestion("www.cdn.example.", dns.TypeA)
	resp.Response = true
	rb, _ := resp.Pack()
	for i, cl := range clients {
		if i%5 == 0 {
			if _, err := cl.c.Write(rb); err != nil {
				t.Fatal(err)
			}
		}
		m := new(dns.Msg)
		m.SetQuestion(cl.name, dns.TypeA)
		m.Id = cl.id
		b, _ := m.Pack()
		if _, err := cl.c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	for _, cl := range clients {
		cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := cl.c.Read(buf)
		if err != nil {
			t.Fatalf("client %d: %v", cl.id, err)
		}
		var r dns.Msg
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatalf("client %d: %v", cl.id, err)
		}
		if r.Id != cl.id || r.Question[0].Name != cl.name {
			t.Errorf("client %d asking %s got the reply to %d asking %s", cl.id, cl.name, r.Id, r.Question[0].Name)
		}
		if got := ts.popOf(t, &r); got != cl.pop {
			t.Errorf("client %d sent to %s, want %s", cl.id, got, cl.pop)
		}
	}
}

// TestUDPOverIPv6: clients over IPv6 are read (sockaddr_in6) and answered.
func TestUDPOverIPv6(t *testing.T) {
	s, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := serveOn(t, s, "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	for i, ecs := range []netip.Prefix{{}, cityPrefix(t, "London", 1), netip.MustParsePrefix("2001:db8:1::/56")} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			r := ts.ask(t, "www.cdn.example.", dns.TypeAAAA, qopt{ecs: ecs})
			if len(r.Answer) == 0 {
				t.Fatalf("no answer over IPv6: %v", r)
			}
			if ecs == cityPrefix(t, "London", 1) {
				if got := ts.popOf(t, r); got != "lhr" {
					t.Errorf("London over IPv6 sent to %s", got)
				}
			}
		})
	}
}

// TestUDPLongerThanARead: a datagram longer than the read buffer gets FORMERR (its header,
// nothing more), and a long "response" gets nothing.
func TestUDPLongerThanARead(t *testing.T) {
	ts := startServer(t, nil)
	q := new(dns.Msg)
	q.SetQuestion("www.cdn.example.", dns.TypeA)
	q.Id = 0x1234
	qb, _ := q.Pack()
	long := append(qb, make([]byte, 2*udpBufLen)...)
	got := rawExchange(t, ts.addr, long)
	var r dns.Msg
	if err := r.Unpack(got); err != nil || len(got) != headerLen {
		t.Fatalf("reply %x (%v), want a bare header", got, err)
	}
	if r.Id != q.Id || r.Rcode != dns.RcodeFormatError || !r.Response {
		t.Errorf("reply id %#x rcode %s response %v, want %#x FORMERR response", r.Id, dns.RcodeToString[r.Rcode], r.Response, q.Id)
	}
	long[2] |= 0x80
	if got := rawExchange(t, ts.addr, long); got != nil {
		t.Errorf("reply %x to a long response", got)
	}
}

// TestUDPRefusedReplyDropsOnlyItself: when the kernel refuses one reply of a batch (its
// address is a spoofed source port 0, a broadcast address, or a firewall says no), that reply
// alone is dropped: the replies behind it in the batch still go. (Found in review: one such
// packet dropped up to 31 other clients' replies.)
func TestUDPRefusedReplyDropsOnlyItself(t *testing.T) {
	// Set before the server runs, and put back after it stopped (cleanups run last first).
	var refused atomic.Pointer[netip.AddrPort]
	sendBatch = func(fd uintptr, ms []unix.Mmsghdr) (int, syscall.Errno) {
		for i := range ms {
			if to, _ := sockaddrPort(unsafe.Slice(ms[i].Hdr.Name, ms[i].Hdr.Namelen)); refused.Load() != nil && to == *refused.Load() {
				if i == 0 {
					return 0, unix.EINVAL // as the kernel refuses a message it cannot send
				}
				return sendmmsg(fd, ms[:i])
			}
		}
		return sendmmsg(fd, ms)
	}
	t.Cleanup(func() { sendBatch = sendmmsg })
	ts := startServer(t, nil)
	var clients []*net.UDPConn
	for i := range 32 {
		from := netip.AddrFrom4([4]byte{127, 1, 1, byte(10 + i)})
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ts.addr)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	first := netip.MustParseAddrPort(clients[0].LocalAddr().String())
	refused.Store(&first)
	// The refused client first, the others behind it: they arrive together, and the server
	// answers them in one batch or a few.
	q := new(dns.Msg)
	q.SetQuestion("www.cdn.example.", dns.TypeA)
	b, _ := q.Pack()
	for _, c := range clients {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(5 * time.Second)
	for i, c := range clients[1:] {
		c.SetReadDeadline(deadline)
		if _, err := c.Read(buf); err != nil {
			t.Errorf("client %d behind the refused one: %v", i+1, err)
		}
	}
	if got := metricValue(t, ts.Server, "meridian_dns_dropped_total", "send"); got != 1 {
		t.Errorf("replies dropped at send: %v, want 1", got)
	}
}

// TestUDPWildcardRepliesFromQueriedAddress: a server listening on every address (listen's
// default, ":53") answers a UDP query from the address the query was sent to, whichever of
// the host's addresses that is, on a dual-stack socket, an IPv4 one and an IPv6 one. Found
// hunting: the replies left from the address the kernel picks for the client's route
// (127.0.0.1 for a loopback client), so a client that asked another address, as every
// resolver checks, never saw an answer (`dig @127.0.0.77` timed out; RFC 8906: no answer is
// a defect). miekg/dns's own UDP server sets the source per reply (IP_PKTINFO); the batch
// loop did not.
func TestUDPWildcardRepliesFromQueriedAddress(t *testing.T) {
	nextIP.Lock()
	nextIP.n++
	v4 := netip.AddrFrom4([4]byte{127, 0, 3, byte(nextIP.n)})
	nextIP.Unlock()
	tests := []struct {
		name, network, listen string
		ask                   []netip.Addr
	}{
		{"dual-stack [::]", "udp", "0.0.0.0:0", []netip.Addr{v4, netip.MustParseAddr("127.0.0.1")}},
		{"IPv4 0.0.0.0", "udp4", "0.0.0.0:0", []netip.Addr{v4}},
		{"IPv6 [::]", "udp6", "[::]:0", []netip.Addr{netip.IPv6Loopback()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc, err := net.ListenPacket(tt.network, tt.listen)
			if err != nil {
				t.Skipf("no %s socket here: %v", tt.network, err)
			}
			s, err := New(testConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx, pc, nil) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve: %v", err)
				}
			})
			<-s.Ready()
			port := pc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
			for _, a := range tt.ask {
				// dns.Client's UDP socket is connected: it takes replies from the address
				// it asked only, as a resolver does.
				c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
				m := new(dns.Msg)
				m.SetQuestion("wWw.cdn.example.", dns.TypeA)
				r, _, err := c.Exchange(m, netip.AddrPortFrom(a, port).String())
				if err != nil {
					t.Fatalf("ask %s: %v", a, err)
				}
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 || r.Question[0].Name != m.Question[0].Name {
					t.Errorf("ask %s: %v, want the answer to %s", a, r, m.Question[0].Name)
				}
			}
		})
	}
}
