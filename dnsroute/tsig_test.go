package dnsroute

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestTSIGQuery: the server holds no TSIG keys, so a query signed with any key gets NOTAUTH
// with an unsigned TSIG of error BADKEY (RFC 8945 section 5.2.1), over UDP and TCP, with and
// without EDNS, whether or not the cache holds an answer for its question; a TSIG that is not
// the last record is FORMERR (section 5.1). Answered unsigned as if it were not signed, a
// client that signs its queries (to make sure of the answer) discards the reply.
func TestTSIGQuery(t *testing.T) {
	ts := startServer(t, nil)
	const key, secret = "k.example.", "c2VjcmV0c2VjcmV0c2VjcmV0"
	tests := []struct {
		name      string
		edns      bool
		move      string // "opt after": an OPT after the TSIG; "authority": the TSIG there
		wantRcode int
	}{
		{"signed", false, "", dns.RcodeNotAuth},
		{"signed with EDNS", true, "", dns.RcodeNotAuth},
		{"TSIG not last", false, "opt after", dns.RcodeFormatError},
		{"TSIG in the authority section", false, "authority", dns.RcodeFormatError},
	}
	for _, network := range []string{"udp", "tcp"} {
		// An answer in the cache for the question first: a signed query must not be served it.
		if r := ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{net: network, edns: true}); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			t.Fatalf("%s: unsigned query = %s with %d answers, want NOERROR with some", network, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		for _, tt := range tests {
			m := new(dns.Msg)
			m.SetQuestion("www.cdn.example.", dns.TypeA)
			if tt.edns {
				m.SetEdns0(1232, false)
			}
			m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
			buf, _, err := dns.TsigGenerate(m, secret, "", false)
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			if tt.move != "" {
				// Re-pack the signed message with its TSIG elsewhere.
				var signed dns.Msg
				if err := signed.Unpack(buf); err != nil {
					t.Fatal(err)
				}
				if tt.move == "authority" {
					signed.Ns, signed.Extra = signed.Extra, nil
				} else {
					signed.Extra = append(signed.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}})
				}
				if buf, err = signed.Pack(); err != nil {
					t.Fatal(err)
				}
			}
			send := rawExchange
			if network == "tcp" {
				send = rawTCPExchange
			}
			r := new(dns.Msg)
			if err := r.Unpack(send(t, ts.addr, buf)); err != nil {
				t.Fatalf("%s %s: unpack the reply: %v", network, tt.name, err)
			}
			if r.Id != m.Id || r.Rcode != tt.wantRcode || len(r.Answer) != 0 {
				t.Errorf("%s %s: reply id %d rcode %s with %d answers, want id %d %s with none", network, tt.name,
					r.Id, dns.RcodeToString[r.Rcode], len(r.Answer), m.Id, dns.RcodeToString[tt.wantRcode])
				continue
			}
			if tt.wantRcode != dns.RcodeNotAuth {
				continue
			}
			tsig, ok := r.Extra[len(r.Extra)-1].(*dns.TSIG)
			switch {
			case !ok:
				t.Errorf("%s %s: last additional record %v, want a TSIG", network, tt.name, r.Extra[len(r.Extra)-1])
			case tsig.Hdr.Name != key || tsig.Algorithm != dns.HmacSHA256 || tsig.Error != dns.RcodeBadKey || tsig.MACSize != 0 || tsig.MAC != "" || tsig.OrigId != m.Id:
				t.Errorf("%s %s: TSIG %v, want key %s, %s, error BADKEY, no MAC, original id %d", network, tt.name, tsig, key, dns.HmacSHA256, m.Id)
			}
			if tt.edns != (r.IsEdns0() != nil) {
				t.Errorf("%s %s: reply has OPT %v, want %v", network, tt.name, r.IsEdns0() != nil, tt.edns)
			}
		}
	}
	// The refusals changed nothing for unsigned queries.
	if r := ts.ask(t, "www.cdn.example.", dns.TypeA, qopt{}); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Errorf("unsigned query after = %s with %d answers, want NOERROR with some", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
}

// TestTSIGMalformed: a TSIG record that cannot be interpreted makes the message corrupt,
// FORMERR (RFC 8945 section 5.2), over UDP and TCP: one without RDATA (miekg/dns reads it as
// a TSIG with every field empty) or of a class other than ANY (section 4.2). The server
// answered the first NOTAUTH with a TSIG of no algorithm name, a reply that does not parse,
// and the second as if it were signed.
func TestTSIGMalformed(t *testing.T) {
	ts := startServer(t, nil)
	q := new(dns.Msg)
	q.SetQuestion("www.cdn.example.", dns.TypeA)
	base, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	base[11] = 1 // ARCOUNT: the TSIG appended below
	// A well-formed TSIG's RDATA: algorithm hmac-sha256., time, fudge 300, no MAC, original
	// id, no error, no other data.
	rdata := []byte{11, 'h', 'm', 'a', 'c', '-', 's', 'h', 'a', '2', '5', '6', 0, 0, 0, 0x6a, 0, 0, 0, 1, 44, 0, 0, byte(q.Id >> 8), byte(q.Id), 0, 0, 0, 0}
	tsig := func(class uint16, rdata []byte) []byte {
		b := append([]byte{}, base...)
		b = append(b, 1, 'k', 0, 0, byte(dns.TypeTSIG), byte(class>>8), byte(class), 0, 0, 0, 0, byte(len(rdata)>>8), byte(len(rdata)))
		return append(b, rdata...)
	}
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"no RDATA", tsig(dns.ClassANY, nil)},
		{"class IN", tsig(dns.ClassINET, rdata)},
	}
	for _, tt := range tests {
		for _, network := range []string{"udp", "tcp"} {
			send := rawExchange
			if network == "tcp" {
				send = rawTCPExchange
			}
			r := new(dns.Msg)
			if err := r.Unpack(send(t, ts.addr, tt.pkt)); err != nil {
				t.Errorf("%s %s: the reply does not parse: %v", network, tt.name, err)
				continue
			}
			if r.Id != q.Id || r.Rcode != dns.RcodeFormatError || len(r.Extra) != 0 {
				t.Errorf("%s %s: reply id %d %s with %d additional records, want id %d FORMERR with none", network, tt.name,
					r.Id, dns.RcodeToString[r.Rcode], len(r.Extra), q.Id)
			}
		}
	}
	// The well-formed record, class ANY, is a signed query: the premise of the cases above.
	r := new(dns.Msg)
	if err := r.Unpack(rawExchange(t, ts.addr, tsig(dns.ClassANY, rdata))); err != nil || r.Rcode != dns.RcodeNotAuth {
		t.Errorf("well-formed TSIG: %v, %v; want NOTAUTH", r, err)
	}
}
