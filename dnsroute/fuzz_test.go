package dnsroute

import (
	"encoding/binary"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/miekg/dns"
)

func seedQueries() [][]byte {
	var out [][]byte
	add := func(name string, qt uint16, ecs netip.Prefix, edns bool) {
		m := new(dns.Msg)
		m.SetQuestion(name, qt)
		if edns || ecs.IsValid() {
			m.SetEdns0(1232, false)
		}
		if ecs.IsValid() {
			fam := uint16(familyIPv4)
			if ecs.Addr().Is6() {
				fam = familyIPv6
			}
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: fam, SourceNetmask: uint8(ecs.Bits()), Address: net.IP(ecs.Addr().AsSlice())})
		}
		b, _ := m.Pack()
		out = append(out, b)
	}
	add("www.cdn.example.", dns.TypeA, netip.MustParsePrefix("100.64.1.0/24"), false)
	add("WWW.cdn.example.", dns.TypeAAAA, netip.MustParsePrefix("2001:db8:1::/56"), false)
	add("cdn.example.", dns.TypeANY, netip.Prefix{}, true)
	add("nope.cdn.example.", dns.TypeA, netip.Prefix{}, false)
	add("example.org.", dns.TypeA, netip.Prefix{}, false)
	return out
}

// FuzzHandle feeds raw packets to the UDP handler: it must never panic, never answer a
// response or a packet shorter than a header, and never reply with more than the client can
// take (512 bytes, or its EDNS buffer size) or, for a packet that is not a well-formed query,
// with more bytes than it sent, nor with a FORMERR or NOTIMP longer than the query. A
// malformed ECS option gets FORMERR with the question and an OPT record (RFC 6891 section 7),
// or a bare header when the query has no one question to copy, never longer than the query;
// a NOTIMP to a query with an OPT record has one. A reply with a question has the one asked,
// as the query's bytes spell it.
func FuzzHandle(f *testing.F) {
	for _, s := range seedQueries() {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte("\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"))
	// A question name compressed into the header: its REFUSED and BADVERS would copy it whole.
	f.Add([]byte("\x0a\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\xc0\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x01\x80\x00\x00\x00"))
	// A question cut after its type, and one whose name is a pointer forward (miekg/dns reads
	// both; TestBareRepliesAlike).
	f.Add([]byte("\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x03cdn\x07example\x00\x00\x01"))
	f.Add([]byte("\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x12\x00\x01\x00\x01\x03www\x03cdn\x07example\x00"))
	// Counts of more than the message holds: three additional records and none; an answer
	// and an additional record, and only an OPT (read as the answer). An OPT in the
	// authority section, and one owned by the question's name (TestMisplacedOPTIsFormErr).
	f.Add([]byte("\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x03\x03www\x03cdn\x07example\x00\x00\x01\x00\x01"))
	f.Add([]byte("\x00\x05\x00\x00\x00\x01\x00\x01\x00\x00\x00\x01\x03www\x03cdn\x07example\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("\x00\x06\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x03www\x03cdn\x07example\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"))
	f.Add([]byte("\x00\x07\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x03cdn\x07example\x00\x00\x01\x00\x01\xc0\x0c\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"))
	cfg := testConfig(f)
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	w := newWorker()
	src := netip.MustParseAddrPort("127.1.1.1:4000")
	f.Fuzz(func(t *testing.T, p []byte) {
		r := s.handleUDP(w, p, src)
		if r == nil {
			return
		}
		if len(p) < headerLen || p[2]&0x80 != 0 {
			t.Fatalf("answered a %d byte packet that is short or a response", len(p))
		}
		limit := 512
		var q dns.Msg
		// As the server reads it: without the options it does not read (unreadOptionsPadded).
		wellFormed := q.Unpack(unreadOptionsPadded(p)) == nil && len(q.Question) == 1 && q.Opcode == dns.OpcodeQuery
		if o := q.IsEdns0(); wellFormed && o != nil {
			limit = max(512, min(int(o.UDPSize()), s.cfg.MaxUDPSize))
		}
		if len(r) > limit {
			t.Fatalf("reply of %d bytes exceeds the client's limit %d", len(r), limit)
		}
		if !wellFormed && len(r) > len(p) {
			t.Fatalf("reply of %d bytes to a %d byte malformed packet", len(r), len(p))
		}
		bad := badECS(p)
		if bad && (len(r) > len(p) || int(r[3]&0xF) != dns.RcodeFormatError) {
			t.Fatalf("reply of %d bytes, rcode %d to a malformed ECS option of %d bytes, want FORMERR no longer", len(r), r[3]&0xF, len(p))
		}
		var m dns.Msg
		if err := m.Unpack(r); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		// An error (BADVERS's upper bits in the OPT included) needs no question and is never
		// longer than the query.
		if rc := m.Rcode; rc != dns.RcodeSuccess && rc != dns.RcodeNameError && len(r) > len(p) {
			t.Fatalf("%s of %d bytes to a %d byte query", rcodeLabel(rc), len(r), len(p))
		}
		if o := m.IsEdns0(); bad && len(r) > headerLen && (len(m.Question) != 1 || len(m.Answer)+len(m.Ns) != 0 || len(m.Extra) != 1 || o == nil || len(o.Option) != 0) {
			t.Fatalf("FORMERR to a malformed ECS option is %v, want the question and an OPT without options", &m)
		}
		if asked, _, err := dns.UnpackDomainName(p, headerLen); len(m.Question) > 0 && (err != nil || m.Question[0].Name != asked) {
			t.Fatalf("reply's question %v, the query asks for %q (%v)", m.Question[0], asked, err)
		}
		// The question echoed is one the query holds whole (RFC 1035 section 4.1.2): a name
		// whose pointers each point before the labels they end (section 4.1.4, BIND's rule:
		// priorName; the labels found there may run on past the pointer, as BIND reads them),
		// then the type and class as the query spells them.
		if _, end, err := dns.UnpackDomainName(p, headerLen); err == nil && p[2]&0x78 == 0 && binary.BigEndian.Uint16(p[4:]) > 0 && end+4 > len(p) && m.Rcode != dns.RcodeFormatError {
			t.Fatalf("%s to a query whose question ends after %d of its 4 bytes of type and class, want FORMERR", rcodeLabel(m.Rcode), len(p)-end)
		}
		if len(m.Question) > 0 {
			_, end, _ := dns.UnpackDomainName(p, headerLen)
			if end+4 > len(p) {
				t.Fatalf("reply's question %v, the query's ends after %d of its 4 bytes of type and class", m.Question[0], len(p)-end)
			}
			if priorName(p, headerLen) != end {
				t.Fatalf("reply's question %v, whose name the query spells with a pointer that is not to before it", m.Question[0])
			}
			if q := m.Question[0]; q.Qtype != binary.BigEndian.Uint16(p[end:]) || q.Qclass != binary.BigEndian.Uint16(p[end+2:]) {
				t.Fatalf("reply's question %v, the query's type and class are % x", q, p[end:end+4])
			}
		}
		// A QUERY gets anything but FORMERR only when it holds every entry its header counts
		// (RFC 1035 section 4.1.1; miekg/dns reads the ones there as all there are) and its
		// OPT records only in the additional section, owned by the root (RFC 6891 section
		// 6.1.1).
		if q := new(dns.Msg); p[2]&0x78 == 0 && m.Rcode != dns.RcodeFormatError && q.Unpack(unreadOptionsPadded(p)) == nil {
			be := binary.BigEndian
			if got := [4]int{len(q.Question), len(q.Answer), len(q.Ns), len(q.Extra)}; got != [4]int{int(be.Uint16(p[4:])), int(be.Uint16(p[6:])), int(be.Uint16(p[8:])), int(be.Uint16(p[10:]))} {
				t.Fatalf("%s to a query that holds %v of the entries its header counts", rcodeLabel(m.Rcode), got)
			}
			for i, rr := range slices.Concat(q.Answer, q.Ns, q.Extra) {
				if h := rr.Header(); h.Rrtype == dns.TypeOPT && (i < len(q.Answer)+len(q.Ns) || h.Name != ".") {
					t.Fatalf("%s to a query with an OPT record %d of its records, owned by %q", rcodeLabel(m.Rcode), i, h.Name)
				}
			}
		}
		if p[2]&0x78 != 0 && queryOPT(p) >= 0 && m.IsEdns0() == nil {
			t.Fatalf("NOTIMP to a query with an OPT record has none: %v", &m)
		}
		if !m.Response || m.RecursionAvailable {
			t.Fatalf("reply flags QR=%v RA=%v, want QR set, RA clear", m.Response, m.RecursionAvailable)
		}
	})
}

// FuzzParseQuery checks the fast path parser against miekg/dns: whatever it accepts, the
// full parser accepts, once the options neither reads are padded over as the slow path
// pads them (unreadOptionsPadded), with the same question and ECS option, and the slow
// path's check of the ECS option's wire form (badECS) agrees.
func FuzzParseQuery(f *testing.F) {
	for _, s := range seedQueries() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var q query
		if !parseQuery(p, &q) {
			return
		}
		var m dns.Msg
		if err := m.Unpack(unreadOptionsPadded(p)); err != nil {
			t.Fatalf("parseQuery accepted what miekg/dns rejects without the options the server does not read: %v", err)
		}
		if len(m.Question) != 1 || m.Question[0].Qtype != q.qtype {
			t.Fatalf("question %v, fast path qtype %d", m.Question, q.qtype)
		}
		if (m.IsEdns0() != nil) != q.edns {
			t.Fatalf("EDNS = %v, fast path %v", m.IsEdns0() != nil, q.edns)
		}
		if badECS(p) {
			t.Fatal("parseQuery accepted an ECS option that badECS rejects")
		}
		var sub *dns.EDNS0_SUBNET
		if o := m.IsEdns0(); o != nil {
			for _, op := range o.Option {
				if e, ok := op.(*dns.EDNS0_SUBNET); ok {
					sub = e
				}
			}
		}
		if (sub != nil) != q.ecs {
			t.Fatalf("ECS = %v, fast path %v", sub, q.ecs)
		}
		if sub != nil {
			a, _ := netip.AddrFromSlice(sub.Address)
			if sub.Family == familyIPv4 {
				a = a.Unmap()
			}
			if want, got := netip.PrefixFrom(a, int(sub.SourceNetmask)), ecsPrefix(q.ecsFamily, q.ecsSource, q.ecsAddr); sub.Family != q.ecsFamily || got != want {
				t.Fatalf("ECS %v family %d, fast path %v family %d", want, sub.Family, got, q.ecsFamily)
			}
		}
	})
}

// FuzzConfigNames: any name in a config's hostnames and cnames is refused with an error or
// held as the server answers it: ASCII (a resolver asks for A-labels, never UTF-8), in lower
// case, and for a name written in ASCII, the name as written in lower case; never a panic.
func FuzzConfigNames(f *testing.F) {
	for _, n := range []string{"www", "Bücher", "_acme-challenge.Straße", `a\.b`, `\065bc`, "*.sub", "xn--bcher-kva", "a..b", "ß.", "_x.1a.אב"} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if strings.ContainsAny(name, "\"\n\r") {
			return // not a YAML scalar in double quotes this test can write
		}
		q := strconv.Quote(name)
		c, err := ParseConfig([]byte("zone: cdn.example.\nns: [{name: ns1, ipv4: [192.0.2.53]}]\nmmdb: city.mmdb\nhostnames: [" + q + "]\ncnames: {" + q + "x: www}\n"))
		if err != nil {
			return
		}
		held := c.withDefaults()
		for _, h := range append(slices.Collect(maps.Keys(held.CNAMEs)), held.Hostnames...) {
			if h == "*" {
				continue
			}
			if !idnhost.IsASCII(h) || h != strings.ToLower(h) {
				t.Fatalf("%q is held as %q: not lower-case ASCII", name, h)
			}
		}
		if idnhost.IsASCII(name) && held.Hostnames[0] != absName(held.Zone, strings.ToLower(name)) && name != "*" {
			t.Fatalf("ASCII %q is held as %q, not as written", name, held.Hostnames[0])
		}
	})
}
