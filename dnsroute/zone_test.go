package dnsroute

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/wire"
)

func TestZoneAnswers(t *testing.T) {
	ts := startServer(t, nil)
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		rcode     int
		answers   []uint16 // types in the answer section
		authority bool     // SOA in authority
		aa        bool
	}{
		{"routed A", "www.cdn.example.", dns.TypeA, dns.RcodeSuccess, []uint16{dns.TypeA, dns.TypeA}, false, true},
		{"routed AAAA", "static.cdn.example.", dns.TypeAAAA, dns.RcodeSuccess, []uint16{dns.TypeAAAA, dns.TypeAAAA}, false, true},
		{"routed TXT is NODATA", "www.cdn.example.", dns.TypeTXT, dns.RcodeSuccess, nil, true, true},
		{"ANY is one RRset", "www.cdn.example.", dns.TypeANY, dns.RcodeSuccess, []uint16{dns.TypeA, dns.TypeA}, false, true},
		{"empty non-terminal is NODATA", "assets.cdn.example.", dns.TypeA, dns.RcodeSuccess, nil, true, true},
		{"unknown name is NXDOMAIN", "nope.cdn.example.", dns.TypeA, dns.RcodeNameError, nil, true, true},
		{"below a routed name is NXDOMAIN", "x.www.cdn.example.", dns.TypeA, dns.RcodeNameError, nil, true, true},
		{"apex SOA", "cdn.example.", dns.TypeSOA, dns.RcodeSuccess, []uint16{dns.TypeSOA}, false, true},
		{"apex NS", "cdn.example.", dns.TypeNS, dns.RcodeSuccess, []uint16{dns.TypeNS, dns.TypeNS}, false, true},
		{"apex ANY", "cdn.example.", dns.TypeANY, dns.RcodeSuccess, []uint16{dns.TypeSOA}, false, true},
		{"apex A is NODATA", "cdn.example.", dns.TypeA, dns.RcodeSuccess, nil, true, true},
		{"glue A", "ns1.cdn.example.", dns.TypeA, dns.RcodeSuccess, []uint16{dns.TypeA}, false, true},
		{"glue AAAA", "ns2.cdn.example.", dns.TypeAAAA, dns.RcodeSuccess, []uint16{dns.TypeAAAA}, false, true},
		{"glue AAAA missing is NODATA", "ns1.cdn.example.", dns.TypeAAAA, dns.RcodeSuccess, nil, true, true},
		{"CNAME chased", "alias.cdn.example.", dns.TypeA, dns.RcodeSuccess, []uint16{dns.TypeCNAME, dns.TypeA, dns.TypeA}, false, true},
		{"CNAME itself", "alias.cdn.example.", dns.TypeCNAME, dns.RcodeSuccess, []uint16{dns.TypeCNAME}, false, true},
		{"outside the zone", "www.example.org.", dns.TypeA, dns.RcodeRefused, nil, false, false},
		{"parent of the zone", "example.", dns.TypeNS, dns.RcodeRefused, nil, false, false},
		{"zone transfer", "cdn.example.", dns.TypeAXFR, dns.RcodeRefused, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				for range 2 { // the second UDP query is answered from the cache
					r := ts.ask(t, tt.qname, tt.qtype, qopt{net: network, edns: true})
					if r.Rcode != tt.rcode {
						t.Errorf("%s: rcode = %s, want %s", network, dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
					}
					var got []uint16
					for _, rr := range r.Answer {
						got = append(got, rr.Header().Rrtype)
					}
					if !slices.Equal(got, tt.answers) {
						t.Errorf("%s: answer types = %v, want %v", network, got, tt.answers)
					}
					hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
					if hasSOA != tt.authority {
						t.Errorf("%s: SOA in authority = %v, want %v (%v)", network, hasSOA, tt.authority, r.Ns)
					}
					if r.Authoritative != tt.aa || r.RecursionAvailable {
						t.Errorf("%s: AA=%v RA=%v, want AA=%v RA=false", network, r.Authoritative, r.RecursionAvailable, tt.aa)
					}
				}
			}
		})
	}
	t.Run("NS has glue", func(t *testing.T) {
		r := ts.ask(t, "cdn.example.", dns.TypeNS, qopt{edns: true})
		glue := 0
		for _, rr := range r.Extra {
			if rr.Header().Rrtype == dns.TypeA || rr.Header().Rrtype == dns.TypeAAAA {
				glue++
			}
		}
		if glue != 3 {
			t.Errorf("glue records = %d, want 3 (%v)", glue, r.Extra)
		}
	})
	t.Run("negative TTL is the SOA minimum", func(t *testing.T) {
		r := ts.ask(t, "nope.cdn.example.", dns.TypeA, qopt{})
		if ttl := r.Ns[0].Header().Ttl; ttl != 60 {
			t.Errorf("negative SOA TTL = %d, want 60", ttl)
		}
	})
	t.Run("routed TTL", func(t *testing.T) {
		r := ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{})
		if ttl := r.Answer[0].Header().Ttl; ttl != 30 {
			t.Errorf("answer TTL = %d, want 30", ttl)
		}
	})
}

func TestCasePreserved(t *testing.T) {
	ts := startServer(t, nil)
	for _, name := range []string{"www.cdn.example.", "WwW.CdN.eXaMpLe.", "WWW.CDN.EXAMPLE.", "wWw.cDn.ExAmPlE."} {
		for _, network := range []string{"udp", "tcp"} {
			r := ts.ask(t, name, dns.TypeA, qopt{net: network, ecs: cityPrefix(t, "London", 5)})
			if r.Question[0].Name != name {
				t.Errorf("%s: question = %q, want %q", network, r.Question[0].Name, name)
			}
			for _, rr := range r.Answer {
				if rr.Header().Name != name {
					t.Errorf("%s: answer owner = %q, want %q", network, rr.Header().Name, name)
				}
			}
		}
	}
}

func TestTruncationAndTCP(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.AnswerCount = 64
		for i := range 40 {
			c.PoPs[0].Nodes = append(c.PoPs[0].Nodes, NodeConfig{
				ID: "big-" + string(rune('a'+i/26)) + string(rune('a'+i%26)), Capacity: 1000,
				IPv6: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xee, 15: byte(i + 1)}).String(),
			})
		}
	})
	london := cityPrefix(t, "London", 6)
	tests := []struct {
		name   string
		o      qopt
		wantTC bool
	}{
		{"no EDNS over UDP", qopt{from: loopbackCities["London"].Addr().Next()}, true},
		{"EDNS 512", qopt{ecs: london, bufsize: 512}, true},
		{"EDNS 4096 over UDP", qopt{ecs: london, bufsize: 4096}, false},
		{"TCP", qopt{ecs: london, net: "tcp"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 {
				r := ts.ask(t, "www.cdn.example.", dns.TypeAAAA, tt.o)
				if r.Truncated != tt.wantTC {
					t.Errorf("TC = %v, want %v", r.Truncated, tt.wantTC)
				}
				if !tt.wantTC && len(r.Answer) != 42 {
					t.Errorf("answers = %d, want 42", len(r.Answer))
				}
				if tt.wantTC {
					r.Compress = true
					if b, _ := r.Pack(); len(b) > 512 {
						t.Errorf("truncated reply is %d bytes, want <= 512", len(b))
					}
					// A real client retries over TCP.
					o := tt.o
					o.net = "tcp"
					if r := ts.ask(t, "www.cdn.example.", dns.TypeAAAA, o); r.Truncated || len(r.Answer) != 42 {
						t.Errorf("TCP retry: TC=%v answers=%d, want full 42", r.Truncated, len(r.Answer))
					}
				}
			}
		})
	}
}

// TestGlueLeftOutWithoutTC: an apex NS answer whose glue does not all fit in a UDP reply
// keeps the whole NS RRset and the glue that fits, without TC: RFC 2181 section 9 sets TC
// only when records the answer needs are left out, not extra information (the server gives
// no referrals, whose glue RFC 9471 requires). BIND 9.18 and NSD 4.6 answer so. Found by a
// differential run: the reply had TC set (miekg/dns's Truncate sets it for any record it
// drops), and a resolver asked again over TCP for nothing.
func TestGlueLeftOutWithoutTC(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.NS = nil
		for i := range 10 {
			c.NS = append(c.NS, NameServer{
				Name: fmt.Sprintf("ns%d.cdn.example.", i+1),
				IPv4: []string{fmt.Sprintf("127.0.1.%d", i+1)},
				IPv6: []string{fmt.Sprintf("2001:db8:ffff::%d", i+1)},
			})
		}
	})
	for name, o := range map[string]qopt{"no EDNS": {}, "EDNS 512": {edns: true, bufsize: 512}} {
		t.Run(name, func(t *testing.T) {
			for _, pass := range []string{"resolved", "from the cache"} {
				r := ts.ask(t, "cdn.example.", dns.TypeNS, o)
				if r.Truncated || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 10 {
					t.Errorf("%s: TC=%v rcode %s, %d NS records; want no TC, NOERROR, all 10", pass, r.Truncated, dns.RcodeToString[r.Rcode], len(r.Answer))
				}
				glue := 0
				for _, rr := range r.Extra {
					if rr.Header().Rrtype == dns.TypeA || rr.Header().Rrtype == dns.TypeAAAA {
						glue++
					}
				}
				if glue == 0 || glue == 20 {
					t.Errorf("%s: %d glue records, want some of the 20 (not all fit)", pass, glue)
				}
				r.Compress = true
				if b, _ := r.Pack(); len(b) > 512 {
					t.Errorf("%s: reply is %d bytes, want <= 512", pass, len(b))
				}
			}
		})
	}
}

// TestGlueRRsetsWhole: glue left out of a UDP reply without TC (TestGlueLeftOutWithoutTC)
// is left out by whole RRsets: RFC 2181 section 9 omits "the entire RRSet that will not fit",
// and section 5 never splits one; a resolver takes an RRset in a reply without TC as all
// there is and caches it so. Name servers with two addresses of each family make RRsets of
// two records; buffer sizes from 512 up cut the glue at every point.
func TestGlueRRsetsWhole(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.NS = nil
		for i := range 10 {
			c.NS = append(c.NS, NameServer{
				Name: fmt.Sprintf("ns%d.cdn.example.", i+1),
				IPv4: []string{fmt.Sprintf("127.0.1.%d", i+1), fmt.Sprintf("127.0.2.%d", i+1)},
				IPv6: []string{fmt.Sprintf("2001:db8:ffff::%d", i+1), fmt.Sprintf("2001:db8:fffe::%d", i+1)},
			})
		}
	})
	cut := 0
	for size := uint16(512); size <= 1024; size += 4 {
		for _, pass := range []string{"resolved", "from the cache"} {
			r := ts.ask(t, "cdn.example.", dns.TypeNS, qopt{edns: true, bufsize: size})
			if r.Truncated || len(r.Answer) != 10 {
				t.Fatalf("EDNS %d, %s: TC=%v, %d NS records; want no TC, all 10", size, pass, r.Truncated, len(r.Answer))
			}
			rrsets := map[string]int{}
			for _, rr := range r.Extra {
				if h := rr.Header(); h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA {
					rrsets[strings.ToLower(h.Name)+"/"+dns.TypeToString[h.Rrtype]]++
				}
			}
			for k, n := range rrsets {
				if n != 2 {
					t.Errorf("EDNS %d, %s: glue RRset %s has %d of its 2 records", size, pass, k, n)
				}
			}
			if len(rrsets) < 20 {
				cut++
			}
		}
	}
	if cut == 0 {
		t.Fatal("no reply left glue out: the test does not test")
	}
}

// rawExchange sends pkt over UDP and then a valid query; it returns whatever came back for
// pkt (nil if the valid answer came first, meaning pkt got no reply).
func rawExchange(t *testing.T, addr string, pkt []byte) []byte {
	t.Helper()
	c := sendUDP(t, addr, pkt)
	defer c.Close()
	probe := new(dns.Msg)
	probe.SetQuestion("www.cdn.example.", dns.TypeA)
	probe.Id = 0xBEEF
	pb, _ := probe.Pack()
	if _, err := c.Write(pb); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("server did not answer the probe after the bad packet: %v", err)
		}
		if n >= 2 && buf[0] == 0xBE && buf[1] == 0xEF {
			var m dns.Msg
			if m.Unpack(buf[:n]) == nil && len(m.Answer) > 0 {
				return got
			}
		}
		got = append([]byte(nil), buf[:n]...)
	}
}

func TestBadPacketsNeverAmplify(t *testing.T) {
	ts := startServer(t, nil)
	valid := new(dns.Msg)
	valid.SetQuestion("www.cdn.example.", dns.TypeA)
	valid.Id = 7
	vb, _ := valid.Pack()
	resp := new(dns.Msg)
	resp.SetQuestion("www.cdn.example.", dns.TypeA)
	resp.Response = true
	resp.Id = 8
	rb, _ := resp.Pack()
	two := new(dns.Msg)
	two.Id = 9
	two.Question = []dns.Question{{Name: "www.cdn.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, {Name: "static.cdn.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	tb, _ := two.Pack()
	tests := []struct {
		name    string
		pkt     []byte
		noReply bool
	}{
		{"empty", []byte{}, true},
		{"short header", []byte{1, 2, 3}, true},
		{"truncated question", vb[:len(vb)-3], false},
		{"garbage", []byte(strings.Repeat("\xff\x00garbage", 20)), false},
		{"oversized", append(append([]byte{}, vb...), make([]byte, 3000)...), false},
		{"a response", rb, true},
		{"two questions", tb, false},
		{"header only", vb[:12], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rawExchange(t, ts.addr, tt.pkt)
			if tt.noReply && got != nil {
				t.Errorf("reply %x to a packet that deserves none", got)
			}
			if len(got) > max(len(tt.pkt), headerLen) {
				t.Errorf("reply of %d bytes to a %d byte packet: amplification", len(got), len(tt.pkt))
			}
		})
	}
}

// TestBareRepliesAlike: a query answered with only a header (another opcode: NOTIMP; a
// malformed one: FORMERR) gets the same 12 bytes over UDP and TCP: the query's ID and opcode,
// and its RD and CD only for a QUERY (RFC 1035 defines them for no other opcode; ISC's
// genreport flags a NOTIMP that echoes RD). miekg/dns's own rejection, which TCP used, echoed
// TC, AD and CD and answered a NOTIFY without a question as a QUERY. A query that UDP answers
// (two answer records, which miekg/dns's default refused) is answered over TCP too. (Two OPT
// records get FORMERR with the question and an OPT: TestEDNSErrorsKeepOPT.)
func TestBareRepliesAlike(t *testing.T) {
	ts := startServer(t, nil)
	const (
		qr, aa, tc, rd = 0x80, 0x04, 0x02, 0x01 // in the third byte
		z, ad, cd      = 0x40, 0x20, 0x10       // in the fourth
	)
	q := new(dns.Msg)
	q.SetQuestion("www.cdn.example.", dns.TypeA)
	qb, _ := q.Pack()
	question := qb[headerLen:]
	// pkt is a query with id 0x1234, opcode op, every flag set, qd questions and the records
	// counted in an (answer) and ar (additional) appended as rest.
	pkt := func(op byte, qd int, rest []byte, an, ar uint16) []byte {
		b := []byte{0x12, 0x34, op<<3 | aa | tc | rd, z | ad | cd, 0, byte(qd), byte(an >> 8), byte(an), 0, 0, byte(ar >> 8), byte(ar)}
		for range qd {
			b = append(b, question...)
		}
		return append(b, rest...)
	}
	// oneQuestion sets QDCOUNT to 1 in b, whose question pkt did not write.
	oneQuestion := func(b []byte) []byte { b[5] = 1; return b }
	// counts sets the low byte of the header's count at (4: questions, 6: answers, 8:
	// authority, 10: additional) to n in b.
	counts := func(b []byte, at int, n byte) []byte { b[at+1] = n; return b }
	optRR := []byte{0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0} // ".", OPT, 1232, no options
	aRR := []byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1}
	tests := []struct {
		name  string
		pkt   []byte
		rcode int // -1: answered, not bare
	}{
		{"NOTIFY", pkt(dns.OpcodeNotify, 1, nil, 0, 0), dns.RcodeNotImplemented},
		{"NOTIFY without a question", pkt(dns.OpcodeNotify, 0, nil, 0, 0), dns.RcodeNotImplemented},
		{"NOTIFY, question cut short", pkt(dns.OpcodeNotify, 1, nil, 0, 0)[:headerLen+5], dns.RcodeNotImplemented},
		{"UPDATE, records counted but cut short", pkt(dns.OpcodeUpdate, 1, optRR[:4], 0, 1), dns.RcodeNotImplemented},
		{"UPDATE", pkt(dns.OpcodeUpdate, 1, nil, 0, 0), dns.RcodeNotImplemented},
		{"STATUS", pkt(dns.OpcodeStatus, 1, nil, 0, 0), dns.RcodeNotImplemented},
		{"opcode 15, header only", pkt(15, 0, nil, 0, 0), dns.RcodeNotImplemented},
		{"QUERY, header only", pkt(dns.OpcodeQuery, 0, nil, 0, 0), dns.RcodeFormatError},
		{"QUERY, two questions", pkt(dns.OpcodeQuery, 2, nil, 0, 0), dns.RcodeFormatError},
		{"QUERY, question cut short", pkt(dns.OpcodeQuery, 1, nil, 0, 0)[:headerLen+5], dns.RcodeFormatError},
		// miekg/dns reads a question that ends after its name or its type as one of type or
		// class 0 (REFUSED, and over TCP with a question longer than the one sent).
		{"QUERY, question without its class", pkt(dns.OpcodeQuery, 1, nil, 0, 0)[:headerLen+len(question)-2], dns.RcodeFormatError},
		{"QUERY, question without type and class", pkt(dns.OpcodeQuery, 1, nil, 0, 0)[:headerLen+len(question)-4], dns.RcodeFormatError},
		{"QUERY, question cut inside its class", pkt(dns.OpcodeQuery, 1, nil, 0, 0)[:headerLen+len(question)-1], dns.RcodeFormatError},
		{"QUERY, second question without its class", pkt(dns.OpcodeQuery, 2, nil, 0, 0)[:headerLen+2*len(question)-2], dns.RcodeFormatError},
		// RFC 1035 section 4.1.4: a pointer is to a prior occurrence of a name. miekg/dns
		// follows one forward too (here past the question, to bytes counted in no section).
		{"QUERY, question name a pointer forward", oneQuestion(append(pkt(dns.OpcodeQuery, 0, []byte{0xc0, headerLen + 6, 0, 1, 0, 1}, 0, 0), question[:len(question)-4]...)), dns.RcodeFormatError},
		{"QUERY, question name a pointer to itself", oneQuestion(pkt(dns.OpcodeQuery, 0, []byte{0xc0, headerLen, 0, 1, 0, 1}, 0, 0)), dns.RcodeFormatError},
		// Counts of more than the message holds (RFC 1035 section 4.1.1: each counts the
		// entries of its section): miekg/dns reads what is there as all there is, and the
		// query was answered, an OPT under ANCOUNT 1 as an answer record; BIND, NSD and Knot
		// answer FORMERR.
		{"QUERY, additional records counted but absent", pkt(dns.OpcodeQuery, 1, nil, 0, 3), dns.RcodeFormatError},
		{"QUERY, an OPT and one more additional record counted", pkt(dns.OpcodeQuery, 1, optRR, 0, 2), dns.RcodeFormatError},
		{"QUERY, an answer counted: the OPT read as it, the additional record absent", pkt(dns.OpcodeQuery, 1, optRR, 1, 1), dns.RcodeFormatError},
		{"QUERY, an authority record counted but absent", counts(pkt(dns.OpcodeQuery, 1, nil, 0, 0), 8, 1), dns.RcodeFormatError},
		{"QUERY, a second question counted but absent", counts(pkt(dns.OpcodeQuery, 1, nil, 0, 0), 4, 2), dns.RcodeFormatError},
		// More additional records than miekg/dns's default MsgAcceptFunc takes over TCP (2).
		{"QUERY with three additional records", pkt(dns.OpcodeQuery, 1, slices.Concat(aRR, aRR, optRR), 0, 3), -1},
		{"QUERY with two answer records", pkt(dns.OpcodeQuery, 1, append(slices.Clone(aRR), aRR...), 2, 0), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			udp := rawUDPReply(t, ts.addr, tt.pkt)
			tcp := rawTCPExchange(t, ts.addr, tt.pkt)
			if tt.rcode < 0 {
				for _, r := range []struct {
					net string
					b   []byte
				}{{"udp", udp}, {"tcp", tcp}} {
					var m dns.Msg
					if err := m.Unpack(r.b); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
						t.Errorf("%s: want an answer, got %v (%v)", r.net, &m, err)
					}
				}
				return
			}
			op := tt.pkt[2] & 0x78
			want := []byte{0x12, 0x34, qr | op, byte(tt.rcode), 0, 0, 0, 0, 0, 0, 0, 0}
			if op == 0 {
				want[2] |= rd
				want[3] |= cd
			}
			if !bytes.Equal(udp, want) {
				t.Errorf("udp reply %x, want %x", udp, want)
			}
			if !bytes.Equal(tcp, want) {
				t.Errorf("tcp reply %x, want %x", tcp, want)
			}
		})
	}
}

// TestNotImpKeepsOPT: a query of another opcode that carries an OPT record gets NOTIMP with
// an OPT record of version 0, the server's UDP size and the query's DO bit, and no option
// (RFC 6891 section 7: a responder that supports EDNS includes one in its responses to a
// request with one, whatever the rcode; without it the querier takes the server for one
// without EDNS), the same bytes over UDP and TCP and no longer than the query; one without
// EDNS, or whose records do not read as far as an OPT, gets the bare header. Found in
// review: NOTIMP, written before any parse, never had an OPT.
func TestNotImpKeepsOPT(t *testing.T) {
	ts := startServer(t, nil)
	const rd, do = 0x01, 0x8000
	q := new(dns.Msg)
	q.SetQuestion("www.cdn.example.", dns.TypeSOA)
	qb, _ := q.Pack()
	question := qb[headerLen:]
	aRR := []byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1}
	// pkt is a query with id 0x4242, opcode op and RD, the question qd times, then the records
	// of each section (answer, authority, additional).
	pkt := func(op byte, qd int, an, ns, ar [][]byte) []byte {
		b := []byte{0x42, 0x42, op<<3 | rd, 0, 0, byte(qd), 0, byte(len(an)), 0, byte(len(ns)), 0, byte(len(ar))}
		for range qd {
			b = append(b, question...)
		}
		for _, sec := range [][][]byte{an, ns, ar} {
			for _, rr := range sec {
				b = append(b, rr...)
			}
		}
		return b
	}
	cookie := ednsOption(10, make([]byte, 8))
	tests := []struct {
		name    string
		pkt     []byte
		opt     bool
		do      bool
		badVers bool // another EDNS version: BADVERS, whatever the opcode (RFC 6891 section 6.1.3)
	}{
		{"NOTIFY with EDNS", pkt(dns.OpcodeNotify, 1, nil, nil, [][]byte{optRR(4096, 0, 0, 0)}), true, false, false},
		{"NOTIFY with EDNS, DO and a cookie", pkt(dns.OpcodeNotify, 1, nil, nil, [][]byte{optRR(1400, 0, 0, do, cookie)}), true, true, false},
		{"UPDATE with records and EDNS", pkt(dns.OpcodeUpdate, 1, [][]byte{aRR}, [][]byte{aRR}, [][]byte{aRR, optRR(1232, 0, 0, do)}), true, true, false},
		{"STATUS with EDNS of version 1", pkt(dns.OpcodeStatus, 1, nil, nil, [][]byte{optRR(512, 0, 1, do)}), true, true, true},
		{"NOTIFY with EDNS of version 255", pkt(dns.OpcodeNotify, 1, nil, nil, [][]byte{optRR(1232, 0, 255, 0)}), true, false, true},
		{"opcode 15, no question, EDNS", pkt(15, 0, nil, nil, [][]byte{optRR(512, 0, 0, 0)}), true, false, false},
		{"NOTIFY without EDNS", pkt(dns.OpcodeNotify, 1, nil, nil, nil), false, false, false},
		{"NOTIFY, OPT cut short", pkt(dns.OpcodeNotify, 1, nil, nil, [][]byte{optRR(512, 0, 0, do)[:9]}), false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := tt.pkt[2] & 0x78
			want := []byte{0x42, 0x42, 0x80 | op, dns.RcodeNotImplemented, 0, 0, 0, 0, 0, 0, 0, 0}
			if tt.opt {
				want[11] = 1
				var flags, ext byte
				if tt.do {
					flags = 0x80
				}
				if tt.badVers {
					want[3], ext = 0, dns.RcodeBadVers>>4
				}
				want = append(want, 0, 0, typeOPT, 1232>>8, 1232&0xFF, ext, 0, flags, 0, 0, 0)
			}
			for _, r := range []struct {
				net string
				b   []byte
			}{{"udp", rawUDPReply(t, ts.addr, tt.pkt)}, {"tcp", rawTCPExchange(t, ts.addr, tt.pkt)}} {
				if !bytes.Equal(r.b, want) {
					t.Errorf("%s reply %x, want %x", r.net, r.b, want)
				}
				if len(r.b) > len(tt.pkt) {
					t.Errorf("%s reply of %d bytes to a query of %d", r.net, len(r.b), len(tt.pkt))
				}
			}
		})
	}
}

// sendUDP sends pkt from a new UDP socket connected to addr, which it returns with a 5 s
// deadline.
func sendUDP(t *testing.T, addr string, pkt []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(pkt); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// rawUDPReply sends pkt over UDP and returns the reply that carries its ID. (rawExchange's
// probe can overtake a reply that takes the slow path: the test server's workers share one
// socket.)
func rawUDPReply(t *testing.T, addr string, pkt []byte) []byte {
	t.Helper()
	c := sendUDP(t, addr, pkt)
	defer c.Close()
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no udp reply: %v", err)
		}
		if n >= 2 && buf[0] == pkt[0] && buf[1] == pkt[1] {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// rawTCPExchange sends pkt over a new TCP connection and returns the first reply.
func rawTCPExchange(t *testing.T, addr string, pkt []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(append([]byte{byte(len(pkt) >> 8), byte(len(pkt))}, pkt...)); err != nil {
		t.Fatal(err)
	}
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatalf("no tcp reply: %v", err)
	}
	b := make([]byte, int(n[0])<<8|int(n[1]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("tcp reply cut short: %v", err)
	}
	return b
}

func TestRateLimit(t *testing.T) {
	clock := newFakeClock()
	cfg := testConfig(t)
	cfg.Clock = clock.Now
	cfg.RateLimit = RateLimit{QPS: 5, Burst: 5, Slip: 2}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	q := new(dns.Msg)
	q.SetQuestion("www.cdn.example.", dns.TypeA)
	pkt, _ := q.Pack()
	// A query whose ECS option names other's network, from a third prefix.
	q.SetEdns0(1232, false)
	q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: familyIPv4, SourceNetmask: 24, Address: net.IPv4(127, 1, 2, 0)})
	ecsPkt, _ := q.Pack()
	w := newWorker()
	src := netip.MustParseAddrPort("127.1.1.9:5353")
	other := netip.MustParseAddrPort("127.1.2.9:5353")
	spoofer := netip.MustParseAddrPort("127.1.3.9:5353")
	count := func(from netip.AddrPort, pkt []byte, n int) (answered, slipped, dropped int) {
		for range n {
			r := s.handleUDP(w, pkt, from)
			var m dns.Msg
			switch {
			case r == nil:
				dropped++
			case m.Unpack(r) == nil && m.Truncated && len(m.Answer) == 0:
				slipped++
			default:
				answered++
			}
		}
		return
	}
	steps := []struct {
		name                    string
		from                    netip.AddrPort
		pkt                     []byte
		advance                 time.Duration
		n                       int
		answered, slipped, drop int
	}{
		{"burst", src, pkt, 0, 5, 5, 0, 0},
		{"over the limit", src, pkt, 0, 10, 0, 5, 5},
		{"another prefix is not limited", other, pkt, 0, 5, 5, 0, 0},
		{"one second refills", src, pkt, time.Second, 5, 5, 0, 0},
		// The limit is by source, never by the ECS subnet a query names: a spoofer cannot
		// spend another network's budget by naming it.
		{"ECS naming another network spends the sender's tokens", spoofer, ecsPkt, 0, 10, 5, 2, 3},
		{"the network named keeps its own", other, pkt, 0, 5, 5, 0, 0},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		a, sl, d := count(st.from, st.pkt, st.n)
		if a != st.answered || sl != st.slipped || d != st.drop {
			t.Errorf("%s: answered/slipped/dropped = %d/%d/%d, want %d/%d/%d", st.name, a, sl, d, st.answered, st.slipped, st.drop)
		}
	}
}

// TestCacheDroppedOnFleetChange: a fleet change that changes no answer (load within a quantum)
// keeps the cache; one that changes an outcome (a node's health) drops it.
func TestCacheDroppedOnFleetChange(t *testing.T) {
	ts := startServer(t, nil)
	london := qopt{ecs: cityPrefix(t, "London", 8)}
	// Each answer is cached for its client prefix and for its database network.
	ts.ask(t, "www.cdn.example.", dns.TypeA, london)
	if n := ts.st.Load().cache.len(); n != 2 {
		t.Fatalf("cache entries = %d, want 2", n)
	}
	n, _ := ts.StaticFleet().Node("fra", "fra-1")
	n.Load.RequestsPerSec = 1
	ts.StaticFleet().SetNode(n)
	ts.ask(t, "static.cdn.example.", dns.TypeA, london)
	if n := ts.st.Load().cache.len(); n != 4 {
		t.Errorf("cache entries after a load change that moves no answer = %d, want 4 (kept)", n)
	}
	n.Load.Healthy = false
	ts.StaticFleet().SetNode(n)
	ts.ask(t, "static.cdn.example.", dns.TypeA, london)
	if n := ts.st.Load().cache.len(); n != 2 {
		t.Errorf("cache entries after a health change = %d, want 2 (old ones dropped)", n)
	}
	ts.StaticFleet().RemoveNode("lhr", "lhr-1")
	ts.StaticFleet().RemoveNode("lhr", "lhr-2")
	if got := ts.popOf(t, ts.ask(t, "www.cdn.example.", dns.TypeA, london)); got != "fra" {
		t.Errorf("after removing lhr's nodes: PoP = %s, want fra", got)
	}
}

// recordsWire is the answer, authority and additional sections of r (without the OPT), each
// record packed without compression: names in them as they are spelt, byte for byte.
func recordsWire(t *testing.T, r *dns.Msg) ([]byte, []string) {
	t.Helper()
	var b []byte
	var text []string
	buf := make([]byte, dns.MaxMsgSize)
	for _, sec := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			n, err := dns.PackRR(rr, buf, 0, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, buf[:n]...)
			text = append(text, rr.String())
		}
		b = append(b, 0xFF) // section boundary
	}
	return b, text
}

// TestCachedAnswerNamesAsUncached: every name in an answer from the cache is spelt as in the
// uncached answer to the same question (TCP is never cached): names that are the question
// in the querier's spelling, names from the zone (the SOA in the authority section, NS
// targets, glue, CNAME targets) in the zone's lower case, whoever filled the cache. Found in
// review: the cached reply was packed for the first querier, whose question the zone's names
// were compressed into when its spelling matched theirs, so the next querier's spelling,
// patched into the question, showed through them too ("ns1.CdN.eXaMpLe.").
func TestCachedAnswerNamesAsUncached(t *testing.T) {
	mixed := func(n string) string { // wWw.CdN.eXaMpLe.
		b := []byte(n)
		for i := 1; i < len(b); i += 2 {
			b[i] = strings.ToUpper(string(b[i]))[0]
		}
		return string(b)
	}
	mixed2 := func(n string) string { return strings.ToUpper(n[:1]) + n[1:2] + strings.ToUpper(n[2:]) }
	spellings := []struct {
		name          string
		first, second func(string) string
	}{
		{"lower then mixed", strings.ToLower, mixed},
		{"upper then mixed", strings.ToUpper, mixed},
		{"mixed then lower", mixed, strings.ToLower},
		{"mixed then other mixed", mixed, mixed2},
	}
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		cached bool
	}{
		{"NOERROR A", "www.cdn.example.", dns.TypeA, dns.RcodeSuccess, true},
		{"CNAME to a routed name", "alias.cdn.example.", dns.TypeA, dns.RcodeSuccess, true},
		{"CNAME to NODATA", "alias.cdn.example.", dns.TypeTXT, dns.RcodeSuccess, true},
		{"NODATA TXT", "www.cdn.example.", dns.TypeTXT, dns.RcodeSuccess, true},
		{"NODATA MX", "static.cdn.example.", dns.TypeMX, dns.RcodeSuccess, true},
		{"NODATA empty non-terminal", "assets.cdn.example.", dns.TypeA, dns.RcodeSuccess, true},
		{"NODATA at the apex", "cdn.example.", dns.TypeA, dns.RcodeSuccess, true},
		{"NXDOMAIN", "nope.cdn.example.", dns.TypeA, dns.RcodeNameError, false},
		{"apex SOA", "cdn.example.", dns.TypeSOA, dns.RcodeSuccess, true},
		{"apex NS with glue", "cdn.example.", dns.TypeNS, dns.RcodeSuccess, true},
		{"glue A", "ns1.cdn.example.", dns.TypeA, dns.RcodeSuccess, true},
	}
	for _, sp := range spellings {
		t.Run(sp.name, func(t *testing.T) {
			// A server of its own, so that the first spelling is what fills the cache (also
			// the entry of the client's database network); Singapore has one node, so routed
			// answers do not rotate.
			ts := startServer(t, nil)
			o := qopt{ecs: cityPrefix(t, "Singapore", 1)}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					for i, spell := range []func(string) string{sp.first, sp.second} {
						name := spell(tt.qname)
						o.net = "tcp"
						want := ts.ask(t, name, tt.qtype, o)
						o.net = "udp"
						hits := ts.m.hits.Load()
						got := ts.ask(t, name, tt.qtype, o)
						if hit := ts.m.hits.Load() > hits; hit != (i == 1 && tt.cached) {
							t.Errorf("%s (query %d): cache hit = %v, want %v", name, i+1, hit, !hit)
						}
						if got.Rcode != tt.rcode || want.Rcode != tt.rcode {
							t.Fatalf("%s: rcode UDP %s TCP %s, want %s", name, dns.RcodeToString[got.Rcode], dns.RcodeToString[want.Rcode], dns.RcodeToString[tt.rcode])
						}
						if got.Question[0].Name != name {
							t.Errorf("%s: question = %q", name, got.Question[0].Name)
						}
						gb, gt := recordsWire(t, got)
						wb, wt := recordsWire(t, want)
						if !bytes.Equal(gb, wb) {
							t.Errorf("%s (query %d) over UDP:\n%s\nuncached over TCP:\n%s", name, i+1, strings.Join(gt, "\n"), strings.Join(wt, "\n"))
						}
					}
				})
			}
		})
	}
}

// TestEDNSErrorsKeepOPT: a query of an EDNS version other than 0 gets BADVERS whatever its
// options (RFC 6891 section 6.1.3: options are defined per version, so one that version 0
// would refuse is no format error of version 1), and a query with two OPT records FORMERR
// (section 6.1.1); each with the question as asked and one OPT record of version 0 that
// copies the query's DO bit (RFC 3225 section 3) and echoes no option, over UDP (twice) and
// TCP. Found hunting: BADVERS cleared DO, a version 1 query with such an ECS option got
// FORMERR, and two OPT records got a bare header. Found in review: an option miekg/dns
// refuses as it unpacks (an ECS of an unknown family or a prefix over 32, a short LLQ) still
// got a bare FORMERR in a version 1 OPT, miekg/dns reading it as version 0's.
func TestEDNSErrorsKeepOPT(t *testing.T) {
	ts := startServer(t, nil)
	const do = 0x8000
	short := ednsOption(optionECS, ecsBody(familyIPv4, 24, 0, 100, 64)) // a /24 in 2 octets
	tests := []struct {
		name  string
		extra [][]byte
		rcode int
		do    bool
	}{
		{"version 1", [][]byte{optRR(1232, 0, 1, 0)}, dns.RcodeBadVers, false},
		{"version 1 with DO", [][]byte{optRR(1232, 0, 1, do)}, dns.RcodeBadVers, true},
		{"version 1 with an ECS version 0 refuses", [][]byte{optRR(1232, 0, 1, do, short)}, dns.RcodeBadVers, true},
		{"version 1 with an ECS of a family miekg/dns refuses", [][]byte{optRR(1232, 0, 1, do, ednsOption(optionECS, ecsBody(3, 24, 0, 100, 64, 1)))}, dns.RcodeBadVers, true},
		{"version 1 with an ECS prefix miekg/dns refuses", [][]byte{optRR(1232, 0, 1, 0, ednsOption(optionECS, ecsBody(familyIPv4, 33, 0, 100, 64, 1, 0, 0)))}, dns.RcodeBadVers, false},
		{"version 1 with an LLQ miekg/dns refuses", [][]byte{optRR(1232, 0, 1, do, ednsOption(1, []byte{0, 1}))}, dns.RcodeBadVers, true},
		{"version 255 with DO", [][]byte{optRR(512, 0, 255, do)}, dns.RcodeBadVers, true},
		{"two OPT records", [][]byte{optRR(1232, 0, 0, do), optRR(1232, 0, 0, 0)}, dns.RcodeFormatError, true},
	}
	for _, tt := range tests {
		pkt := rawMsg{name: wireName("wWw"), extra: tt.extra}.pack(0x2345)
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				c, err := dns.Dial(network, ts.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				for range 2 {
					r := rawAsk(t, c, pkt)
					if r.Id != 0x2345 || r.Rcode != tt.rcode || len(r.Answer)+len(r.Ns) != 0 {
						t.Errorf("id %#x rcode %s with %d records, want id 0x2345 rcode %s with none", r.Id, dns.RcodeToString[r.Rcode], len(r.Answer)+len(r.Ns), dns.RcodeToString[tt.rcode])
					}
					if want := (dns.Question{Name: "wWw.cdn.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}); len(r.Question) != 1 || r.Question[0] != want {
						t.Errorf("question %v, want %v as asked", r.Question, want)
					}
					if o := r.IsEdns0(); len(r.Extra) != 1 || o == nil || o.Version() != 0 || o.Do() != tt.do || len(o.Option) != 0 {
						t.Errorf("additional section %v, want one OPT of version 0, DO %v, no option", r.Extra, tt.do)
					}
				}
			})
		}
	}
}

// TestMisplacedOPTIsFormErr: an OPT record in the answer or authority section, or one whose
// owner is not the root, is FORMERR (RFC 6891 section 6.1.1: the OPT's owner MUST be 0, the
// root; it is a pseudo-RR of the additional data section, one per message), over UDP and
// TCP, with the question as asked and, when the additional section holds an OPT, an OPT of
// version 0 with its DO bit and no option (section 7); BIND and NSD answer FORMERR. Found in a
// differential run: such a query was answered, an OPT in the answer section as if the query
// had no EDNS.
func TestMisplacedOPTIsFormErr(t *testing.T) {
	ts := startServer(t, nil)
	const do = 0x8000
	nonRoot := func(opt []byte) []byte { return append([]byte{0xc0, headerLen}, opt[1:]...) } // owned by the question's name
	tests := []struct {
		name       string
		msg        rawMsg
		opt, optDO bool // the reply's OPT and its DO bit
	}{
		{"OPT in the answer section", rawMsg{an: [][]byte{optRR(1232, 0, 0, do)}}, false, false},
		{"OPT in the authority section", rawMsg{ns: [][]byte{optRR(1232, 0, 0, 0)}}, false, false},
		{"OPT in the answer and the additional section", rawMsg{an: [][]byte{optRR(1232, 0, 0, 0)}, extra: [][]byte{optRR(1232, 0, 0, do)}}, true, true},
		{"OPT owned by the question's name", rawMsg{extra: [][]byte{nonRoot(optRR(1232, 0, 0, do))}}, true, true},
		{"OPT owned by a name, without DO", rawMsg{extra: [][]byte{nonRoot(optRR(4096, 0, 0, 0))}}, true, false},
	}
	for _, tt := range tests {
		tt.msg.name = wireName("wWw")
		pkt := tt.msg.pack(0x3456)
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				c, err := dns.Dial(network, ts.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				r := rawAsk(t, c, pkt)
				if r.Id != 0x3456 || r.Rcode != dns.RcodeFormatError || len(r.Answer)+len(r.Ns) != 0 {
					t.Errorf("id %#x rcode %s with %d records, want id 0x3456 FORMERR with none", r.Id, dns.RcodeToString[r.Rcode], len(r.Answer)+len(r.Ns))
				}
				if want := (dns.Question{Name: "wWw.cdn.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}); len(r.Question) != 1 || r.Question[0] != want {
					t.Errorf("question %v, want %v as asked", r.Question, want)
				}
				o := r.IsEdns0()
				switch {
				case !tt.opt && len(r.Extra) != 0:
					t.Errorf("additional section %v, want none (the query has no OPT there)", r.Extra)
				case tt.opt && (len(r.Extra) != 1 || o == nil || o.Hdr.Name != "." || o.Version() != 0 || o.Do() != tt.optDO || len(o.Option) != 0):
					t.Errorf("additional section %v, want one OPT of version 0, DO %v, no option", r.Extra, tt.optDO)
				}
			})
		}
	}
}

// TestSlipKeepsEDNS: a slip (the truncated reply rate limiting sends instead of dropping) to a
// query with EDNS carries an OPT record (RFC 6891 section 7), with the query's DO bit and its
// ECS option echoed at scope 0 (RFC 7871 section 7.2.1), and is still no larger than the query;
// a query without EDNS gets none.
func TestSlipKeepsEDNS(t *testing.T) {
	clock := newFakeClock() // no refill while the test runs
	ts := startServer(t, func(c *Config) {
		c.Clock = clock.Now
		c.RateLimit = RateLimit{QPS: 1, Burst: 1, Slip: 1}
	})
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 1, 1, 77)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ts.addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	id := uint16(100)
	exchange := func(m *dns.Msg) (reply *dns.Msg, queryLen, replyLen int) {
		t.Helper()
		id++
		m.Id = id
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("no reply to query %d: %v", id, err)
			}
			r := new(dns.Msg)
			if r.Unpack(buf[:n]) == nil && r.Id == id {
				return r, len(b), n
			}
		}
	}
	plain := new(dns.Msg)
	plain.SetQuestion("www.cdn.example.", dns.TypeA)
	if r, _, _ := exchange(plain); r.Truncated || len(r.Answer) == 0 {
		t.Fatalf("first query (within the burst): %v", r)
	}
	ecs := cityPrefix(t, "London", 9)
	withECS := new(dns.Msg)
	withECS.SetQuestion("www.cdn.example.", dns.TypeA)
	withECS.SetEdns0(1232, true)
	withECS.IsEdns0().Option = append(withECS.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET,
		Family: familyIPv4, SourceNetmask: 24, Address: net.IP(ecs.Addr().AsSlice())})
	ednsOnly := new(dns.Msg)
	ednsOnly.SetQuestion("www.cdn.example.", dns.TypeA)
	ednsOnly.SetEdns0(4096, false)
	for _, tt := range []struct {
		name   string
		q      *dns.Msg
		opt    bool
		do     bool
		ecsLen int // source prefix echoed; 0: no ECS
	}{
		{"no EDNS", plain, false, false, 0},
		{"EDNS, DO and ECS", withECS, true, true, 24},
		{"EDNS only", ednsOnly, true, false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, ql, rl := exchange(tt.q.Copy())
			if !r.Truncated || !r.Response || len(r.Answer)+len(r.Ns) != 0 {
				t.Fatalf("not a slip: %v", r)
			}
			if rl > ql {
				t.Errorf("slip of %d bytes to a query of %d: larger than the query", rl, ql)
			}
			o := r.IsEdns0()
			if (o != nil) != tt.opt {
				t.Fatalf("OPT in the slip = %v, want %v: %v", o != nil, tt.opt, r)
			}
			if o == nil {
				return
			}
			if o.Version() != 0 || o.Do() != tt.do {
				t.Errorf("OPT version %d DO %v, want 0 and %v", o.Version(), o.Do(), tt.do)
			}
			e := ecsOf(r)
			switch {
			case tt.ecsLen == 0 && e != nil:
				t.Errorf("ECS %v in the slip to a query without one", e)
			case tt.ecsLen != 0 && e == nil:
				t.Errorf("no ECS echoed in the slip: %v", r)
			case e != nil && (e.Family != familyIPv4 || e.SourceNetmask != uint8(tt.ecsLen) || e.SourceScope != 0 || !e.Address.Equal(net.IP(ecs.Addr().AsSlice()))):
				t.Errorf("ECS echoed as %v, want %s scope 0", e, ecs)
			}
		})
	}
}

// TestApexRouted: the zone's apex, listed in hostnames ("@" or the zone's own name), is routed
// like any other hostname: A and AAAA get the nearest PoP's addresses, over UDP (cached or
// not) and TCP, whatever the case of the question; its SOA, NS and ANY (the SOA, RFC 8482)
// answers stay what they are, and a type it has nothing of is still NODATA with the SOA.
// The config took the apex and the server never routed it: every A query got NODATA.
func TestApexRouted(t *testing.T) {
	for _, h := range []string{"@", "cdn.example."} {
		t.Run(h, func(t *testing.T) {
			ts := startServer(t, func(c *Config) {
				c.Hostnames = append(c.Hostnames, h)
				c.CNAMEs = map[string]string{"alias": "www", "top": "@"}
			})
			o := qopt{ecs: cityPrefix(t, "London", 9)}
			for _, name := range []string{"cdn.example.", "CdN.eXaMpLe."} {
				for _, network := range []string{"udp", "tcp"} {
					o.net = network
					for range 2 { // the second UDP query is answered from the cache
						for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
							r := ts.ask(t, name, qt, o)
							if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 2 || len(r.Ns) != 0 {
								t.Fatalf("%s %s over %s: want 2 routed answers, got %v", name, dns.TypeToString[qt], network, r)
							}
							if pop := ts.popOf(t, r); pop != "lhr" {
								t.Errorf("%s %s over %s: PoP %s, want lhr", name, dns.TypeToString[qt], network, pop)
							}
							if r.Answer[0].Header().Name != name {
								t.Errorf("%s %s over %s: owner %q", name, dns.TypeToString[qt], network, r.Answer[0].Header().Name)
							}
							if e := ecsOf(r); e == nil || e.SourceScope == 0 {
								t.Errorf("%s %s over %s: ECS %v, want a non-zero scope", name, dns.TypeToString[qt], network, e)
							}
						}
						for _, tt := range []struct {
							qtype, want uint16
							n           int
						}{{dns.TypeSOA, dns.TypeSOA, 1}, {dns.TypeNS, dns.TypeNS, 2}, {dns.TypeANY, dns.TypeSOA, 1}, {dns.TypeTXT, 0, 0}} {
							r := ts.ask(t, name, tt.qtype, o)
							if r.Rcode != dns.RcodeSuccess || len(r.Answer) != tt.n {
								t.Fatalf("%s %s over %s: got %v", name, dns.TypeToString[tt.qtype], network, r)
							}
							for _, rr := range r.Answer {
								if rr.Header().Rrtype != tt.want {
									t.Errorf("%s %s over %s: answer %v", name, dns.TypeToString[tt.qtype], network, rr)
								}
							}
							if hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA; hasSOA != (tt.n == 0) {
								t.Errorf("%s %s over %s: authority %v", name, dns.TypeToString[tt.qtype], network, r.Ns)
							}
						}
					}
				}
			}
			// A CNAME to the apex is followed to its addresses, as one to any routed name.
			if r := ts.ask(t, "top.cdn.example.", dns.TypeA, o); len(r.Answer) != 3 || r.Answer[0].Header().Rrtype != dns.TypeCNAME || ts.popOf(t, r) != "lhr" {
				t.Errorf("CNAME to the apex: got %v, want the CNAME and lhr's addresses", r)
			}
			if ex, err := ts.Explain(o.ecs.Addr(), "cdn.example.", dns.TypeA); err != nil || ex.PoP != "lhr" {
				t.Errorf("Explain(apex) = %+v, %v; want lhr", ex, err)
			}
		})
	}
	// Not listed, the apex is not routed: NODATA, and explain says so.
	ts := startServer(t, nil)
	if r := ts.ask(t, "cdn.example.", dns.TypeA, qopt{}); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("apex A, not in hostnames: got %v, want NODATA", r)
	}
	if _, err := ts.Explain(netip.MustParseAddr("100.64.1.1"), "cdn.example.", dns.TypeA); err == nil {
		t.Error("Explain(apex), not in hostnames: nil error, want not routed")
	}
}

// TestCNAMEChain: a CNAME whose target is in the zone is followed there, and the reply is
// the one the last name of the chain gets (RFC 1034 section 4.3.2, RFC 6604 section 2.1):
// NXDOMAIN with the SOA when that name does not exist, NODATA with the SOA when it has
// nothing of the asked type, its records when it has them. A CNAME or ANY question gets the
// CNAME alone; a target outside the zone ends the chain with NOERROR and no SOA. A long
// chain is cut after maxCNAMEChain CNAMEs: the resolver follows the rest. (A loop is refused
// with the config: TestConfigCNAMELoops.) The server answered every CNAME to a name it does
// not route with the CNAME alone, NOERROR and no SOA.
func TestCNAMEChain(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.CNAMEs = map[string]string{
			"alias": "www", "gone": "nothere", "gone2": "gone", "two": "alias", "ent": "assets",
			"glue": "ns1", "top": "@", "out": "www.example.org.", "c0": "c1", "c1": "c2", "c2": "c3", "c3": "c4", "c4": "c5", "c5": "c6",
			"c6": "c7", "c7": "c8", "c8": "c9", "c9": "www",
		}
	})
	const (
		cn   = dns.TypeCNAME
		a    = dns.TypeA
		aaaa = dns.TypeAAAA
	)
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		rcode     int
		answers   []uint16 // types in the answer section
		authority bool     // SOA in authority
	}{
		{"to a routed name", "alias", a, dns.RcodeSuccess, []uint16{cn, a, a}, false},
		{"to a routed name, type it has not", "alias", dns.TypeTXT, dns.RcodeSuccess, []uint16{cn}, true},
		{"to no name", "gone", a, dns.RcodeNameError, []uint16{cn}, true},
		{"to no name, AAAA", "gone", aaaa, dns.RcodeNameError, []uint16{cn}, true},
		{"to no name, TXT", "gone", dns.TypeTXT, dns.RcodeNameError, []uint16{cn}, true},
		{"to no name, CNAME question", "gone", cn, dns.RcodeSuccess, []uint16{cn}, false},
		{"to no name, ANY question", "gone", dns.TypeANY, dns.RcodeSuccess, []uint16{cn}, false},
		{"chain to no name", "gone2", a, dns.RcodeNameError, []uint16{cn, cn}, true},
		{"chain to a routed name", "two", aaaa, dns.RcodeSuccess, []uint16{cn, cn, aaaa, aaaa}, false},
		{"to an empty non-terminal", "ent", a, dns.RcodeSuccess, []uint16{cn}, true},
		{"to a name server, its glue", "glue", a, dns.RcodeSuccess, []uint16{cn, a}, false},
		{"to a name server, no glue of the type", "glue", aaaa, dns.RcodeSuccess, []uint16{cn}, true},
		{"to the apex, not routed", "top", a, dns.RcodeSuccess, []uint16{cn}, true},
		{"to the apex, SOA", "top", dns.TypeSOA, dns.RcodeSuccess, []uint16{cn, dns.TypeSOA}, false},
		{"outside the zone", "out", a, dns.RcodeSuccess, []uint16{cn}, false},
		{"longer than the bound", "c0", a, dns.RcodeSuccess, slices.Repeat([]uint16{cn}, maxCNAMEChain), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			qname := tt.qname + ".cdn.example."
			for _, network := range []string{"udp", "tcp"} {
				for range 2 { // the second UDP query is answered from the cache when cacheable
					r := ts.ask(t, qname, tt.qtype, qopt{net: network, edns: true})
					if r.Rcode != tt.rcode || !r.Authoritative {
						t.Errorf("%s: rcode = %s AA = %v, want %s AA", network, dns.RcodeToString[r.Rcode], r.Authoritative, dns.RcodeToString[tt.rcode])
					}
					var got []uint16
					owner := qname
					for i, rr := range r.Answer {
						got = append(got, rr.Header().Rrtype)
						if !strings.EqualFold(rr.Header().Name, owner) {
							t.Errorf("%s: answer[%d] owner = %s, want %s", network, i, rr.Header().Name, owner)
						}
						if c, ok := rr.(*dns.CNAME); ok {
							owner = c.Target // the chain goes on from the target
						}
					}
					if !slices.Equal(got, tt.answers) {
						t.Errorf("%s: answer types = %v, want %v (%v)", network, got, tt.answers, r.Answer)
					}
					hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
					if hasSOA != tt.authority {
						t.Errorf("%s: SOA in authority = %v, want %v (%v)", network, hasSOA, tt.authority, r.Ns)
					}
				}
			}
		})
	}
	// explain follows the chain to the name a resolver ends at: a chain the answer cuts is
	// asked for again from where it was cut; one to a name that is not routed is no route.
	london := netip.MustParseAddr("127.1.1.1")
	for _, name := range []string{"two", "c0"} {
		if ex, err := ts.Explain(london, name, dns.TypeA); err != nil || ex.Name != "www.cdn.example." {
			t.Errorf("Explain(%s) = %+v, %v; want www.cdn.example.", name, ex, err)
		}
	}
	if _, err := ts.Explain(london, "gone2", dns.TypeA); err == nil {
		t.Error("Explain(gone2) = nil error, want not routed")
	}
}

// TestMetaTypesInQuestion: a question for a meta-TYPE or Q-TYPE (RFC 6895 section 3.1: 41
// and 128 to 255) the server does not serve is answered as BIND answers it, over UDP (twice:
// the second would be a cache hit) and TCP, with the question as asked, no records and, for a
// query with EDNS, an OPT: MAILB, MAILA (RFC 1035 QTYPEs) and TKEY (RFC 2930, key agreement)
// NOTIMP, types that are no question (OPT, TSIG: records of one message) and the unassigned
// rest of 128 to 248 FORMERR, whatever the name; AXFR and IXFR stay REFUSED, ANY is answered.
// Found in review: all but AXFR and IXFR got NODATA, cached and served from the cache.
func TestMetaTypesInQuestion(t *testing.T) {
	ts := startServer(t, nil)
	const do = 0x8000
	outside := []byte("\x07example\x03org\x00")
	tests := []struct {
		name  string
		qname []byte
		qtype uint16
		rcode int
	}{
		{"OPT", nil, dns.TypeOPT, dns.RcodeFormatError},
		{"TSIG", nil, dns.TypeTSIG, dns.RcodeFormatError},
		{"TSIG outside the zone", outside, dns.TypeTSIG, dns.RcodeFormatError},
		{"TKEY", nil, dns.TypeTKEY, dns.RcodeNotImplemented},
		{"MAILB", nil, dns.TypeMAILB, dns.RcodeNotImplemented},
		{"MAILA at the apex", []byte("\x03cdn\x07example\x00"), dns.TypeMAILA, dns.RcodeNotImplemented},
		{"type 128", nil, 128, dns.RcodeFormatError},
		{"type 248", nil, 248, dns.RcodeFormatError},
		{"AXFR", nil, dns.TypeAXFR, dns.RcodeRefused},
		{"IXFR", nil, dns.TypeIXFR, dns.RcodeRefused},
		{"ANY", nil, dns.TypeANY, dns.RcodeSuccess},
		{"type 256 (URI), a data type", nil, dns.TypeURI, dns.RcodeSuccess},
	}
	for _, tt := range tests {
		for _, edns := range []bool{false, true} {
			m := rawMsg{name: tt.qname, qtype: tt.qtype}
			if edns {
				m.extra = [][]byte{optRR(4096, 0, 0, do)}
			}
			pkt := m.pack(0x7777)
			t.Run(tt.name+"/edns="+strconv.FormatBool(edns), func(t *testing.T) {
				var q query
				// The fast path takes no question it would answer otherwise than the full parser.
				if got, want := parseQuery(pkt, &q), tt.rcode == dns.RcodeSuccess || tt.rcode == dns.RcodeRefused; got != want {
					t.Errorf("parseQuery = %v, want %v", got, want)
				}
				for _, r := range []struct {
					net string
					b   []byte
				}{{"udp", rawUDPReply(t, ts.addr, pkt)}, {"udp again", rawUDPReply(t, ts.addr, pkt)}, {"tcp", rawTCPExchange(t, ts.addr, pkt)}} {
					var got dns.Msg
					if err := got.Unpack(r.b); err != nil {
						t.Fatalf("%s: reply does not parse: %v", r.net, err)
					}
					if got.Id != 0x7777 || got.Rcode != tt.rcode {
						t.Errorf("%s: id %#x rcode %s, want 0x7777 %s", r.net, got.Id, dns.RcodeToString[got.Rcode], dns.RcodeToString[tt.rcode])
					}
					if len(got.Question) != 1 || got.Question[0].Qtype != tt.qtype {
						t.Errorf("%s: question %v, want the one asked", r.net, got.Question)
					}
					if o := got.IsEdns0(); (o != nil) != edns || o != nil && (!o.Do() || o.Version() != 0) {
						t.Errorf("%s: OPT %v, want one of version 0 with DO = %v", r.net, o, edns)
					}
					if tt.rcode != dns.RcodeSuccess && len(got.Answer)+len(got.Ns) != 0 {
						t.Errorf("%s: %d answer and authority records, want none", r.net, len(got.Answer)+len(got.Ns))
					}
				}
			})
		}
	}
}

// TestMetaTypeErrorNoLonger: an error reply (the FORMERR or NOTIMP to a meta-type question
// or to two OPT records, the REFUSED to a name outside the zones, the BADVERS to another EDNS
// version) is never longer than the query over UDP, whose source address nobody checked: a
// question name compressed into the header (a pointer to offset 0 reads the ID's first byte
// as a label length) grows when the reply copies it whole, so such a query gets the header
// with the rcode and no question, and an OPT when it had one (RFC 6891 section 7; BADVERS's
// upper bits are the OPT's), as a malformed ECS option's FORMERR does for a question it cannot
// copy as it is. Found in review: 18 bytes earned 28, 29 with EDNS earned 41; REFUSED and
// BADVERS earned as much until the fifty-first pass.
func TestMetaTypeErrorNoLonger(t *testing.T) {
	ts := startServer(t, nil)
	opt := optRR(1232, 0, 0, 0)
	tests := []struct {
		name  string
		qtype uint16
		opts  [][]byte // OPT records
		rcode int
	}{
		{"TSIG", dns.TypeTSIG, nil, dns.RcodeFormatError},
		{"TSIG with EDNS", dns.TypeTSIG, [][]byte{opt}, dns.RcodeFormatError},
		{"type 128", 128, nil, dns.RcodeFormatError},
		{"type 128 with EDNS", 128, [][]byte{opt}, dns.RcodeFormatError},
		{"MAILA", dns.TypeMAILA, nil, dns.RcodeNotImplemented},
		{"MAILA with EDNS", dns.TypeMAILA, [][]byte{opt}, dns.RcodeNotImplemented},
		{"TKEY with EDNS", dns.TypeTKEY, [][]byte{opt}, dns.RcodeNotImplemented},
		{"A with two OPT records", dns.TypeA, [][]byte{opt, opt}, dns.RcodeFormatError},
		// The name the header spells is in no zone.
		{"A", dns.TypeA, nil, dns.RcodeRefused},
		{"A with EDNS", dns.TypeA, [][]byte{opt}, dns.RcodeRefused},
		{"A with EDNS version 1", dns.TypeA, [][]byte{optRR(1232, 0, 1, 0x8000)}, dns.RcodeBadVers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := rawMsg{name: []byte{0xc0, 0}, qtype: tt.qtype, extra: tt.opts}
			pkt := m.pack(0x0a00) // the ID's first byte, 10, is the length of a label
			r := rawUDPReply(t, ts.addr, pkt)
			if len(r) > len(pkt) {
				t.Errorf("reply of %d bytes to a query of %d", len(r), len(pkt))
			}
			if len(r) < headerLen || int(r[3]&0xF) != tt.rcode&0xF {
				t.Fatalf("reply %x, want rcode %s", r, dns.RcodeToString[tt.rcode])
			}
			got := new(dns.Msg)
			if err := got.Unpack(r); err != nil {
				t.Fatalf("reply %x does not parse: %v", r, err)
			}
			if got.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[got.Rcode], dns.RcodeToString[tt.rcode])
			}
			if o := got.IsEdns0(); (o != nil) != (len(tt.opts) > 0) {
				t.Errorf("reply OPT %v to a query with %d OPT records", o, len(tt.opts))
			} else if o != nil && (o.Version() != 0 || o.Do() != (tt.opts[0][7]&0x80 != 0)) {
				t.Errorf("reply OPT version %d, DO %v; want version 0, the query's DO", o.Version(), o.Do())
			}
		})
	}
}

// TestCutServFailCountsFailOpen: a fail-closed SERVFAIL cut to its header because the query's
// question name, compressed into the header, would make it longer than the query is still an
// answer given while no PoP was usable (meridian_dns_fail_open_total), as the same SERVFAIL
// to a well-formed query is. Under a wildcard (the default hostnames) such a name is routed.
func TestCutServFailCountsFailOpen(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.FailClosed = true
		c.Hostnames = []string{"*"}
	})
	for _, p := range ts.StaticFleet().PoPs() {
		setPoP(ts.StaticFleet(), p.ID, func(n *wire.Node) { n.Load.Healthy = false })
	}
	// The question name points at offset 0, where the ID's first byte, 16, starts a label
	// over the rest of the header, the pointer and the question's type and first class byte;
	// the class's second, 1, starts one over the additional record's first byte, and the
	// name ends in cdn.example. with the bytes that record's owner, one label of 12, covers.
	pkt := []byte{
		0x10, 0x00, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, // ID, RD, one question, one additional
		0xc0, 0x00, 0, 1, 0, 1, // the question: A IN
		12, 3, 'c', 'd', 'n', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, // an owner name
		0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 1, // A IN, TTL 0, an address
	}
	var q dns.Msg
	if err := q.Unpack(pkt); err != nil || len(q.Question) != 1 || !dns.IsSubDomain("cdn.example.", q.Question[0].Name) {
		t.Fatalf("query %v (%v), want one question under cdn.example.", &q, err)
	}
	r := rawUDPReply(t, ts.addr, pkt)
	if len(r) > len(pkt) {
		t.Errorf("reply of %d bytes to a query of %d", len(r), len(pkt))
	}
	if len(r) < headerLen || int(r[3]&0xF) != dns.RcodeServerFailure {
		t.Fatalf("reply %x, want SERVFAIL", r)
	}
	if got := metricValue(t, ts.Server, "meridian_dns_fail_open_total", ""); got != 1 {
		t.Errorf("fail-open answers = %v, want 1", got)
	}
}

// TestQuestionCountFormErrKeepsOPT: a query that parses but asks no question or two, or has a
// TSIG record that is not last, gets FORMERR with no question over UDP and TCP, and with an
// OPT (version 0, the query's DO bit) when it has one: RFC 6891 section 7, else the querier
// takes the server for one without EDNS. Only a message the parser rejects gets the bare
// header whatever it carries. A review found these bare (fifty-first pass).
func TestQuestionCountFormErrKeepsOPT(t *testing.T) {
	ts := startServer(t, nil)
	doOPT := optRR(1232, 0, 0, 0x8000)
	tsig := append(wireName("key"), 0, 250, 0, 255, 0, 0, 0, 0, 0, 0) // TSIG, class ANY, no RDATA
	tests := []struct {
		name string
		m    rawMsg
		opt  bool
	}{
		{"no question", rawMsg{qd: -1}, false},
		{"no question, EDNS", rawMsg{qd: -1, extra: [][]byte{doOPT}}, true},
		{"two questions, EDNS", rawMsg{qd: 2, extra: [][]byte{doOPT}}, true},
		{"a TSIG before the OPT", rawMsg{extra: [][]byte{tsig, doOPT}}, true},
	}
	for _, tt := range tests {
		pkt := tt.m.pack(0x4242)
		for _, tr := range []struct {
			name  string
			reply func() []byte
		}{{"udp", func() []byte { return rawUDPReply(t, ts.addr, pkt) }}, {"tcp", func() []byte { return rawTCPExchange(t, ts.addr, pkt) }}} {
			t.Run(tt.name+"/"+tr.name, func(t *testing.T) {
				r := tr.reply()
				got := new(dns.Msg)
				if err := got.Unpack(r); err != nil {
					t.Fatalf("reply %x does not parse: %v", r, err)
				}
				if got.Rcode != dns.RcodeFormatError || len(got.Question)+len(got.Answer)+len(got.Ns) != 0 {
					t.Errorf("reply %v, want FORMERR and no question or records", got)
				}
				o := got.IsEdns0()
				if (o != nil) != tt.opt || len(got.Extra) > 1 {
					t.Fatalf("reply's additional records %v, want an OPT: %v", got.Extra, tt.opt)
				}
				if o != nil && (o.Version() != 0 || !o.Do() || len(o.Option) != 0) {
					t.Errorf("reply OPT %v, want version 0, DO, no option", o)
				}
			})
		}
	}
}

// TestTrailingBytesIgnored: bytes after a query's last counted record (RFC 1035 section
// 4.1.1 counts entries, not bytes) are not read: the query is answered, over UDP and TCP, as
// the same query without them, the same reply bytes. The references differ here (checked
// 2026-12-07 on 127.0.0.1 with a one-host zone): BIND 9.18.49 answers as if the bytes were
// not there (it logs "message has N byte(s) of trailing garbage" at debug level 3), NSD 4.6.1
// answers likewise, Knot 3.2.6 answers FORMERR; two of three and miekg/dns ignore them, and
// so does the server. The fast path (parseQuery) leaves such a query to the full parser,
// which must not read the bytes as a record: an OPT counted in no section is no EDNS.
func TestTrailingBytesIgnored(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		for i := range c.PoPs { // one node per PoP: no rotation between the two replies
			c.PoPs[i].Nodes = c.PoPs[i].Nodes[:1]
		}
	})
	edns := optRR(1232, 0, 0, 0x8000)
	ecs := optRR(1232, 0, 0, 0, ecsOption(familyIPv4, 24, cityPrefix(t, "London", 7).Addr()))
	tests := []struct {
		name     string
		id       uint16 // 0 means 0x7a7a
		msg      rawMsg
		trailing []byte
	}{
		{"a zero octet after the question", 0, rawMsg{}, []byte{0}},
		{"three octets after the question", 0, rawMsg{}, []byte{0, 0, 0}},
		{"a header's worth of 0xff after the question", 0, rawMsg{}, bytes.Repeat([]byte{0xff}, headerLen)},
		{"an OPT counted in no section after the question", 0, rawMsg{}, optRR(1232, 0, 0, 0x8000)},
		{"an A record counted in no section after the OPT", 0, rawMsg{extra: [][]byte{edns}}, []byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1}},
		{"three octets after an OPT with ECS", 0, rawMsg{extra: [][]byte{ecs}}, []byte{0, 0, 0}},
		{"three octets after an AAAA question", 0, rawMsg{qtype: dns.TypeAAAA}, []byte{1, 2, 3}},
		{"three octets after a name outside the zone", 0, rawMsg{name: []byte("\x07example\x03org\x00")}, []byte{1, 2, 3}},
		// The question a pointer to the header (ID 0x0161, RD: a.\000.), outside the zone: the
		// REFUSED with the question copied is 4 bytes longer than the query, so it goes bare;
		// the trailing bytes must not make room for it.
		{"eight octets after a question compressed into the header", 0x0161, rawMsg{flags: 0x0100, name: []byte{0xc0, 0}}, make([]byte, 8)},
	}
	for _, tt := range tests {
		id := cmp.Or(tt.id, 0x7a7a)
		clean := tt.msg.pack(id)
		tt.msg.trailing = tt.trailing
		withBytes := tt.msg.pack(id)
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				ask := rawUDPReply
				if network == "tcp" {
					ask = rawTCPExchange
				}
				want := ask(t, ts.addr, clean)
				got := ask(t, ts.addr, withBytes)
				if !bytes.Equal(got, want) {
					t.Errorf("reply with %d bytes after the last record:\n%x\nwithout them:\n%x", len(tt.trailing), got, want)
				}
			})
		}
	}
}
