package dnsroute

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
)

// wireName is a question name in wire form, its labels byte for byte as given (a label may
// hold a dot, a zero or any octet), under cdn.example.
func wireName(labels ...string) []byte {
	var b []byte
	for _, l := range append(labels, "cdn", "example") {
		b = append(append(b, byte(len(l))), l...)
	}
	return append(b, 0)
}

// rawMsg is a query as its bytes go on the wire, for shapes miekg/dns would not pack.
type rawMsg struct {
	flags    uint16 // the header's third and fourth bytes
	qd       int    // questions (copies of the one below); 0 means 1, -1 none
	name     []byte // wire form; nil means www.cdn.example.
	qtype    uint16 // 0 means A
	qclass   uint16 // 0 means IN
	an, ns   [][]byte
	extra    [][]byte // additional records (an OPT: optRR)
	trailing []byte   // bytes after the last record, counted in no section
}

func (m rawMsg) pack(id uint16) []byte {
	qd := m.qd
	switch qd {
	case 0:
		qd = 1
	case -1:
		qd = 0
	}
	name := m.name
	if name == nil {
		name = wireName("www")
	}
	qtype, qclass := cmp.Or(m.qtype, dns.TypeA), cmp.Or(m.qclass, dns.ClassINET)
	b := binary.BigEndian.AppendUint16(nil, id)
	for _, n := range []int{int(m.flags), qd, len(m.an), len(m.ns), len(m.extra)} {
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	}
	for range qd {
		b = append(b, name...)
		b = binary.BigEndian.AppendUint16(b, qtype)
		b = binary.BigEndian.AppendUint16(b, qclass)
	}
	for _, sec := range [][][]byte{m.an, m.ns, m.extra} {
		for _, rr := range sec {
			b = append(b, rr...)
		}
	}
	return append(b, m.trailing...)
}

// optRR is an OPT record: UDP size, extended rcode, version, flags (DO is 0x8000) and
// options (ednsOption).
func optRR(size uint16, extRcode, version byte, flags uint16, options ...[]byte) []byte {
	var rdata []byte
	for _, o := range options {
		rdata = append(rdata, o...)
	}
	b := []byte{0, 0, typeOPT, byte(size >> 8), byte(size), extRcode, version, byte(flags >> 8), byte(flags)}
	b = binary.BigEndian.AppendUint16(b, uint16(len(rdata)))
	return append(b, rdata...)
}

// ednsOption is one EDNS option: code, length, data.
func ednsOption(code uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// ecsOption is an ECS option of family with source prefix length source and the address's
// first octets, as many as the prefix needs (RFC 7871 section 6).
func ecsOption(family uint16, source uint8, addr netip.Addr) []byte {
	a := addr.AsSlice()
	if family == familyIPv6 && addr.Is4() {
		a16 := addr.As16()
		a16[10], a16[11] = 0xff, 0xff
		a = a16[:]
	}
	return ednsOption(optionECS, ecsBody(family, source, 0, a[:(int(source)+7)/8]...))
}

// addrsMasked returns reply b with the RDATA of its address records zeroed, and those RDATA
// sorted: two replies whose rotation turns differ compare equal in the first and hold the
// same nodes in the second. A reply that does not walk is returned whole.
func addrsMasked(b []byte) ([]byte, []string) {
	out := bytes.Clone(b)
	if len(b) < headerLen {
		return out, nil
	}
	be := binary.BigEndian
	qd := int(be.Uint16(b[4:]))
	rrs := int(be.Uint16(b[6:])) + int(be.Uint16(b[8:])) + int(be.Uint16(b[10:]))
	off := headerLen
	for range qd {
		if off = skipName(b, off); off < 0 || off+4 > len(b) {
			return bytes.Clone(b), nil
		}
		off += 4
	}
	var addrs []string
	for range rrs {
		if off = skipName(b, off); off < 0 || off+10 > len(b) {
			return bytes.Clone(b), nil
		}
		typ, rdlen := be.Uint16(b[off:]), int(be.Uint16(b[off+8:]))
		off += 10
		if off+rdlen > len(b) {
			return bytes.Clone(b), nil
		}
		if typ == dns.TypeA || typ == dns.TypeAAAA {
			addrs = append(addrs, hex.EncodeToString(b[off:off+rdlen]))
			clear(out[off : off+rdlen])
		}
		off += rdlen
	}
	slices.Sort(addrs)
	return out, addrs
}

// TestCacheHitAnswersAsResolve is a differential test of the two paths a UDP query can take:
// each crafted query is asked of a fresh server twice, the first time resolved (through
// miekg/dns and routing) and the second from the answer cache when the query is cacheable,
// and the two replies must be the same bytes but for the rotation of the nodes (the same
// set of addresses). A query whose first asker spelt or framed it otherwise, or was another
// client of the same database network (fill), is asked of another fresh server after the
// fill, and that reply must be the first server's first; whether the fill's answer served it
// from the cache is checked too.
// The queries cover what the fast path reads differently from miekg/dns: header flags,
// EDNS version, flags and options, ECS shapes, the name's case and odd octets, section
// counts, and truncation with and without EDNS.
func TestCacheHitAnswersAsResolve(t *testing.T) {
	const (
		rd, aa, tc = 0x0100, 0x0400, 0x0200
		z, ad, cd  = 0x0040, 0x0020, 0x0010
		do         = 0x8000
		big, wild  = 1, 2 // configs
	)
	lon := cityPrefix(t, "London", 7).Addr()
	lonB := lon.Next().Next() // another address of the same /24
	tk, _ := geodata.Lookup("Tokyo")
	v6 := tk.V6.Addr()
	v6b := v6.As16()
	v6b[7] = 0x77 // another /64 of the same /56
	v6other := netip.AddrFrom16(v6b)
	v6b[6] = 0x42 // another /56 of the /48
	v6net := netip.AddrFrom16(v6b)
	lonNet := cityPrefix(t, "London", 8).Addr() // another /24 of London's network
	edns := optRR(1232, 0, 0, 0)
	mixed := wireName("WwW")
	upper := wireName("WWW")
	aRR := []byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1}
	soaRR := []byte{0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 60, 0, 22, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}
	tests := []struct {
		name   string
		config int
		probe  rawMsg
		fill   *rawMsg // asked first of the second server; nil: no second server
		hit    bool    // the second probe is a cache hit
		shared bool    // the probe after the fill is a cache hit (of its entry or its network's)
	}{
		// Header flags: RD and CD are echoed, AA, TC, Z, AD and a query's rcode are not.
		{name: "RD", probe: rawMsg{flags: rd}, hit: true},
		{name: "RD clear", probe: rawMsg{}, hit: true},
		{name: "RD clear after RD", probe: rawMsg{}, fill: &rawMsg{flags: rd}, hit: true, shared: true},
		{name: "CD", probe: rawMsg{flags: rd | cd}, fill: &rawMsg{flags: rd}, hit: true, shared: true},
		{name: "AD", probe: rawMsg{flags: rd | ad}, fill: &rawMsg{flags: rd}, hit: true, shared: true},
		{name: "Z", probe: rawMsg{flags: rd | z}, fill: &rawMsg{flags: rd}, hit: true, shared: true},
		{name: "AA and TC in a query", probe: rawMsg{flags: rd | aa | tc}, fill: &rawMsg{flags: rd}, hit: true, shared: true},
		{name: "rcode in a query", probe: rawMsg{flags: rd | 5}, fill: &rawMsg{flags: rd}, hit: true, shared: true},
		// EDNS.
		{name: "EDNS", probe: rawMsg{flags: rd, extra: [][]byte{edns}}, hit: true},
		{name: "EDNS after no EDNS", probe: rawMsg{flags: rd, extra: [][]byte{edns}}, fill: &rawMsg{flags: rd}, hit: true},
		{name: "no EDNS after EDNS", probe: rawMsg{flags: rd}, fill: &rawMsg{flags: rd, extra: [][]byte{edns}}, hit: true},
		{name: "DO", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, do)}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true},
		{name: "DO clear after DO", probe: rawMsg{extra: [][]byte{edns}}, fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, do)}}, hit: true},
		{name: "EDNS Z flags", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0x7fff)}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true, shared: true},
		{name: "EDNS version 1", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 1, do)}}, fill: &rawMsg{extra: [][]byte{edns}}},
		{name: "EDNS extended rcode in a query", probe: rawMsg{extra: [][]byte{optRR(1232, 1, 0, 0)}}, fill: &rawMsg{extra: [][]byte{edns}}},
		{name: "EDNS size 4096", probe: rawMsg{extra: [][]byte{optRR(4096, 0, 0, 0)}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true, shared: true},
		{name: "EDNS size 100", probe: rawMsg{extra: [][]byte{optRR(100, 0, 0, 0)}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true, shared: true},
		{name: "cookie", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ednsOption(10, []byte("8 octets")))}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true, shared: true},
		{name: "NSID and padding", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ednsOption(3, nil), ednsOption(12, make([]byte, 9)))}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true, shared: true},
		{name: "unknown option", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ednsOption(65001, []byte{1, 2, 3}))}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true, shared: true},
		{name: "TCP keepalive over UDP", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ednsOption(11, nil))}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true, shared: true},
		{name: "a short LLQ, which the server does not implement", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ednsOption(1, []byte{0, 1}))}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true, shared: true},
		// ECS.
		{name: "ECS /24", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 24, lon))}}, hit: true},
		{name: "ECS /24 with DO and a cookie", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, do, ednsOption(10, []byte("8 octets")), ecsOption(familyIPv4, 24, lon))}}, hit: true},
		{name: "ECS /32, another address of the /24", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 32, lonB))}},
			fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 32, lon))}}, hit: true, shared: true},
		{name: "ECS /20", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 20, netip.PrefixFrom(lon, 20).Masked().Addr()))}}, hit: true},
		{name: "ECS /0", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 0, netip.IPv4Unspecified()))}}, fill: &rawMsg{extra: [][]byte{edns}}, hit: true},
		{name: "ECS /0 family 2", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 0, netip.IPv6Unspecified()))}},
			fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 0, netip.IPv4Unspecified()))}}, hit: true},
		{name: "ECS v6 /56", probe: rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 56, v6))}}, hit: true},
		{name: "ECS v6 /64, another /64 of the /56", probe: rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 64, v6other))}},
			fill: &rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 64, v6))}}, hit: true, shared: true},
		{name: "ECS IPv4-mapped /120", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 120, lon))}},
			fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 24, lon))}}, hit: true},
		{name: "ECS IPv4-mapped /128", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 128, lonB))}},
			fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 128, lon))}}, hit: true, shared: true},
		{name: "ECS family 2 /96 of ::ffff:0:0", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 96, netip.IPv4Unspecified()))}}, hit: true},
		// A client prefix new to the cache takes its database network's answer (netHit).
		{name: "ECS: another /24 of the network", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 24, lon))}},
			fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 24, lonNet))}}, hit: true, shared: true},
		{name: "ECS /32 in another /24 of the network", probe: rawMsg{flags: rd | cd, extra: [][]byte{optRR(1232, 0, 0, do, ecsOption(familyIPv4, 32, lonB))}},
			fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, do, ecsOption(familyIPv4, 32, lonNet))}}, hit: true, shared: true},
		{name: "ECS IPv4-mapped: another /24 of the network", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 120, lon))}},
			fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 120, lonNet))}}, hit: true, shared: true},
		{name: "ECS v6: another /56 of the network", probe: rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 56, v6))}},
			fill: &rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv6, 56, v6net))}}, hit: true, shared: true},
		{name: "ECS address bits past the prefix", probe: rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ednsOption(optionECS, ecsBody(familyIPv4, 20, 0, 100, 64, 0x0f)))}},
			fill: &rawMsg{extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 20, netip.AddrFrom4([4]byte{100, 64, 0, 0})))}}},
		{name: "ECS for a name outside the zone", probe: rawMsg{name: []byte("\x07example\x03org\x00"), extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 24, lon))}}},
		// The name.
		{name: "0x20: mixed after lower", probe: rawMsg{name: mixed, flags: rd}, fill: &rawMsg{flags: rd}, hit: true, shared: true},
		{name: "0x20: lower after mixed", probe: rawMsg{flags: rd}, fill: &rawMsg{name: mixed, flags: rd}, hit: true, shared: true},
		{name: "0x20: upper with ECS after mixed", probe: rawMsg{name: upper, extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 24, lon))}},
			fill: &rawMsg{name: mixed, extra: [][]byte{optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 24, lon))}}, hit: true, shared: true},
		{name: "0x20: apex NS with glue", probe: rawMsg{name: []byte("\x03CDN\x07example\x00"), qtype: dns.TypeNS}, fill: &rawMsg{name: []byte("\x03cdn\x07EXAMPLE\x00"), qtype: dns.TypeNS}, hit: true, shared: true},
		{name: "0x20: apex SOA", probe: rawMsg{name: []byte("\x03CDN\x07example\x00"), qtype: dns.TypeSOA}, fill: &rawMsg{name: []byte("\x03cdn\x07example\x00"), qtype: dns.TypeSOA}, hit: true, shared: true},
		{name: "0x20: CNAME", probe: rawMsg{name: wireName("ALIAS")}, fill: &rawMsg{name: wireName("alias")}, hit: true, shared: true},
		{name: "0x20: NXDOMAIN", probe: rawMsg{name: wireName("NOPE")}, fill: &rawMsg{name: wireName("nope")}},
		{name: "a dot in a label", config: wild, probe: rawMsg{name: wireName("a.B")}, fill: &rawMsg{name: wireName("a", "b")}, hit: true},
		{name: "a zero octet in a label", config: wild, probe: rawMsg{name: wireName("x\x00Y")}, fill: &rawMsg{name: wireName("x\x00y")}, hit: true, shared: true},
		{name: "upper-case Latin-1 is another name", config: wild, probe: rawMsg{name: wireName("\xc4x")}, fill: &rawMsg{name: wireName("\xe4x")}, hit: true},
		{name: "a backslash and a space", config: wild, probe: rawMsg{name: wireName("A\\ b")}, fill: &rawMsg{name: wireName("a\\ b")}, hit: true, shared: true},
		{name: "longest name", config: wild, probe: rawMsg{name: wireName(strings.Repeat("A", 63), strings.Repeat("b", 63), strings.Repeat("c", 63), strings.Repeat("D", 47))}, hit: true},
		// Types and classes.
		{name: "NODATA TXT", probe: rawMsg{qtype: dns.TypeTXT}, hit: true},
		{name: "ANY", probe: rawMsg{qtype: dns.TypeANY}, hit: true},
		{name: "empty non-terminal", probe: rawMsg{name: wireName("assets")}, hit: true},
		{name: "AXFR over UDP", probe: rawMsg{qtype: dns.TypeAXFR}},
		{name: "class CH", probe: rawMsg{qclass: dns.ClassCHAOS}},
		{name: "class ANY", probe: rawMsg{qclass: dns.ClassANY}},
		// Sections.
		{name: "no question", probe: rawMsg{qd: -1}},
		{name: "two questions", probe: rawMsg{qd: 2}, fill: &rawMsg{}},
		{name: "an answer record", probe: rawMsg{an: [][]byte{aRR}}, fill: &rawMsg{}},
		{name: "an authority record", probe: rawMsg{ns: [][]byte{soaRR}}, fill: &rawMsg{}},
		{name: "an answer record and EDNS", probe: rawMsg{an: [][]byte{aRR}, extra: [][]byte{edns}}, fill: &rawMsg{extra: [][]byte{edns}}},
		{name: "an additional record besides the OPT", probe: rawMsg{extra: [][]byte{edns, aRR}}, fill: &rawMsg{extra: [][]byte{edns}}},
		{name: "bytes after the question", probe: rawMsg{trailing: []byte{0, 0, 0}}, fill: &rawMsg{}},
		{name: "bytes after the OPT", probe: rawMsg{extra: [][]byte{edns}, trailing: []byte{0, 0, 0}}, fill: &rawMsg{extra: [][]byte{edns}}},
		// Truncation: the default PoP holds 40 IPv6 nodes, all in each answer.
		{name: "long, no EDNS", config: big, probe: rawMsg{qtype: dns.TypeAAAA}, hit: true},
		{name: "long, EDNS 512", config: big, probe: rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(512, 0, 0, 0)}}, hit: true},
		{name: "long, EDNS 100", config: big, probe: rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(100, 0, 0, 0)}}, hit: true},
		{name: "long, EDNS 1232", config: big, probe: rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(1232, 0, 0, 0)}}, hit: true},
		{name: "long, EDNS 4096 over max_udp_size", config: big, probe: rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(4096, 0, 0, do)}}, hit: true},
		{name: "long, EDNS 512 after 4096", config: big, probe: rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(512, 0, 0, 0)}},
			fill: &rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{optRR(4096, 0, 0, 0)}}, hit: true, shared: true},
		{name: "long, 0x20, no EDNS after EDNS", config: big, probe: rawMsg{name: mixed, qtype: dns.TypeAAAA}, fill: &rawMsg{qtype: dns.TypeAAAA, extra: [][]byte{edns}}, hit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mutate := func(c *Config) {
				// One node per PoP, so that only the long answers rotate.
				for i := range c.PoPs {
					c.PoPs[i].Nodes = c.PoPs[i].Nodes[:1]
				}
				switch tt.config {
				case big:
					c.AnswerCount = 40
					iad := &c.PoPs[slices.IndexFunc(c.PoPs, func(p PoPConfig) bool { return p.ID == "iad" })]
					for i := range 39 {
						iad.Nodes = append(iad.Nodes, NodeConfig{ID: fmt.Sprintf("iad-%d", i+2), IPv6: fmt.Sprintf("2001:db8:ee::%x", i+2), Capacity: 1000})
					}
				case wild:
					c.Hostnames = []string{"*"}
				}
			}
			probe := tt.probe.pack(0x5a5a)
			ts := startServer(t, mutate)
			first := rawUDPReply(t, ts.addr, probe)
			hits := ts.m.hits.Load()
			second := rawUDPReply(t, ts.addr, probe)
			if hit := ts.m.hits.Load() > hits; hit != tt.hit {
				t.Errorf("second query: cache hit = %v, want %v", hit, tt.hit)
			}
			same(t, "second reply", second, "first", first)
			if tt.fill == nil {
				return
			}
			ts2 := startServer(t, mutate)
			rawUDPReply(t, ts2.addr, tt.fill.pack(0x1111))
			after := rawUDPReply(t, ts2.addr, probe)
			if hit := ts2.m.hits.Load() > 0; hit != tt.shared {
				t.Errorf("query after the fill: cache hit = %v, want %v", hit, tt.shared)
			}
			same(t, "reply after the fill", after, "resolved", first)
		})
	}
}

// same fails the test unless replies got and want are the same but for their rotation: the
// same bytes but for the addresses, and the same addresses unless truncated.
func same(t *testing.T, gotName string, got []byte, wantName string, want []byte) {
	t.Helper()
	gm, ga := addrsMasked(got)
	wm, wa := addrsMasked(want)
	// A truncated reply holds the first addresses of its turn: which ones depends on it.
	truncated := len(got) > 2 && got[2]&0x02 != 0
	if bytes.Equal(gm, wm) && (truncated || slices.Equal(ga, wa)) {
		return
	}
	text := func(b []byte) string {
		var m dns.Msg
		if err := m.Unpack(b); err != nil {
			return fmt.Sprintf("%x (%v)", b, err)
		}
		return m.String()
	}
	t.Errorf("%s differs from the %s one:\n%x\n%s\n%s:\n%x\n%s", gotName, wantName, got, text(got), wantName, want, text(want))
}
