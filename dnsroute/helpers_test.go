package dnsroute

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
	"github.com/meridian-cdn/meridian/internal/clocktest"
)

// loopbackCities maps loopback /24s to cities so that tests can be located by their source
// address: a client bound to 127.1.1.x is in London.
var loopbackCities = map[string]netip.Prefix{
	"London":    netip.MustParsePrefix("127.1.1.0/24"),
	"Tokyo":     netip.MustParsePrefix("127.1.2.0/24"),
	"Sao Paulo": netip.MustParsePrefix("127.1.3.0/24"),
	"Sydney":    netip.MustParsePrefix("127.1.4.0/24"),
}

var (
	mmdbOnce  sync.Once
	mmdbBytes []byte
)

// testMMDB writes the test database, plus the loopback ranges, into dir and returns its path.
func testMMDB(t testing.TB, dir string) string {
	t.Helper()
	mmdbOnce.Do(func() {
		cities := slices.Clone(geodata.Cities)
		for name, p := range loopbackCities {
			c, _ := geodata.Lookup(name)
			c.V4, c.V6 = p, netip.Prefix{}
			cities = append(cities, c)
		}
		// Map order varies; sort for stable bytes.
		slices.SortFunc(cities, func(a, b geodata.City) int { return a.V4.Addr().Compare(b.V4.Addr()) })
		var buf bytes.Buffer
		if err := geodata.WriteCities(&buf, cities); err != nil {
			panic(err)
		}
		mmdbBytes = buf.Bytes()
	})
	path := filepath.Join(dir, "test-city.mmdb")
	if err := os.WriteFile(path, mmdbBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testConfig loads testdata/dns.yaml with a fresh test MMDB.
func testConfig(t testing.TB) Config {
	t.Helper()
	cfg, err := LoadConfig("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.MMDB = testMMDB(t, t.TempDir())
	return cfg
}

// fakeClock is the tests' settable clock (clocktest.Clock).
type fakeClock = clocktest.Clock

func newFakeClock() *fakeClock { return clocktest.New(time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)) }

// testServer is a running server on 127.0.0.x with its address.
type testServer struct {
	*Server
	addr string // host:port, same port for UDP and TCP
}

var nextIP = struct {
	sync.Mutex
	n int
}{n: 10}

// startServer builds a server from testdata/dns.yaml, lets mutate change the config, and
// serves it on a fresh 127.0.0.x address until the test ends.
func startServer(t testing.TB, mutate func(*Config)) *testServer {
	t.Helper()
	return startServerWith(t, mutate, nil)
}

// startServerWith is startServer with the TCP listener wrapped by wrap (nil: as it is), for
// tests that shape the server's sockets.
func startServerWith(t testing.TB, mutate func(*Config), wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	cfg := testConfig(t)
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	nextIP.Lock()
	nextIP.n++
	ip := netip.AddrFrom4([4]byte{127, 0, 2, byte(nextIP.n)})
	nextIP.Unlock()
	ts, err := serveOnWith(t, s, netip.AddrPortFrom(ip, 0).String(), wrap)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// serveOn serves s on addr (UDP and TCP) until the test ends.
func serveOn(t testing.TB, s *Server, addr string) (*testServer, error) {
	t.Helper()
	return serveOnWith(t, s, addr, nil)
}

// serveOnWith is serveOn with the TCP listener wrapped by wrap (nil: as it is).
func serveOnWith(t testing.TB, s *Server, addr string, wrap func(net.Listener) net.Listener) (*testServer, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	udp, tcp, err := listen(ctx, addr)
	if err != nil {
		cancel()
		return nil, err
	}
	if wrap != nil {
		tcp = wrap(tcp)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, udp, tcp) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("server not ready")
	}
	return &testServer{Server: s, addr: udp.LocalAddr().String()}, nil
}

// query options.
type qopt struct {
	net      string     // "udp" (default) or "tcp"
	from     netip.Addr // local address to send from
	ecs      netip.Prefix
	edns     bool
	bufsize  uint16
	noRecurs bool
}

// ask sends one query and returns the reply.
func (ts *testServer) ask(t testing.TB, name string, qtype uint16, o qopt) *dns.Msg {
	t.Helper()
	r, err := ts.exchange(name, qtype, o)
	if err != nil {
		t.Fatalf("query %s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

func (ts *testServer) exchange(name string, qtype uint16, o qopt) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = !o.noRecurs
	if o.edns || o.ecs.IsValid() {
		size := o.bufsize
		if size == 0 {
			size = 1232
		}
		m.SetEdns0(size, false)
		if o.ecs.IsValid() {
			e := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, SourceNetmask: uint8(o.ecs.Bits()), Address: net.IP(o.ecs.Masked().Addr().AsSlice())}
			e.Family = familyIPv4
			if o.ecs.Addr().Is6() {
				e.Family = familyIPv6
			}
			m.IsEdns0().Option = append(m.IsEdns0().Option, e)
		}
	}
	c := &dns.Client{Net: o.net, Timeout: 5 * time.Second}
	if o.from.IsValid() {
		if o.net == "tcp" {
			c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: o.from.AsSlice()}, Timeout: 5 * time.Second}
		} else {
			c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: o.from.AsSlice()}, Timeout: 5 * time.Second}
		}
	}
	if o.bufsize != 0 {
		c.UDPSize = o.bufsize
	}
	r, _, err := c.Exchange(m, ts.addr)
	return r, err
}

// popOf maps an answer address to the PoP whose node has it.
func (ts *testServer) popOf(t testing.TB, r *dns.Msg) string {
	t.Helper()
	if len(r.Answer) == 0 {
		t.Fatalf("no answer in %v", r)
	}
	var ip net.IP
	switch rr := r.Answer[len(r.Answer)-1].(type) {
	case *dns.A:
		ip = rr.A
	case *dns.AAAA:
		ip = rr.AAAA
	default:
		t.Fatalf("last answer %v is not an address", rr)
	}
	a, _ := netip.AddrFromSlice(ip)
	a = a.Unmap()
	for _, p := range ts.fleet.PoPs() {
		for _, n := range p.Nodes {
			if n.IPv4 == a.String() || n.IPv6 == a.String() {
				return p.ID
			}
		}
	}
	t.Fatalf("answer %s belongs to no PoP", a)
	return ""
}

// ecs returns the ECS option of a reply, or nil.
func ecsOf(r *dns.Msg) *dns.EDNS0_SUBNET {
	if o := r.IsEdns0(); o != nil {
		for _, op := range o.Option {
			if e, ok := op.(*dns.EDNS0_SUBNET); ok {
				return e
			}
		}
	}
	return nil
}

// cityPrefix is a /24 inside a test city's range.
func cityPrefix(t testing.TB, city string, third byte) netip.Prefix {
	t.Helper()
	c, ok := geodata.Lookup(city)
	if !ok {
		t.Fatalf("no city %q", city)
	}
	b := c.V4.Addr().As4()
	b[2] = third
	return netip.PrefixFrom(netip.AddrFrom4(b), 24)
}

// freeAddr returns an address on ip with a port free for network ("udp" or "tcp") when asked.
func freeAddr(t *testing.T, network, ip string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
