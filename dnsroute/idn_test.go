package dnsroute

import (
	"cmp"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/wire"
)

// TestConfigInternationalisedNames: the names of the config (zone, ns names, soa mname and
// rname, hostnames, cnames and their targets) may be written in Unicode; they are held as
// their A-labels (idnhost.ToASCII, as edge, control and deploy convert hosts), the only form
// resolvers ask for, and a name IDNA refuses is a problem naming it as written, at its line.
// They were taken as written (miekg/dns takes any bytes in a label): a query for the A-label
// was refused or NXDOMAIN, and two spellings of one name were two names.
func TestConfigInternationalisedNames(t *testing.T) {
	base := "ns:\n  - {name: ns1, ipv4: [192.0.2.53]}\nmmdb: city.mmdb\n"
	tests := []struct {
		name string
		yaml string // added to base
		// The names held after defaults, when the config is valid.
		zone, mname, rname string
		ns, hostnames      []string
		cnames             map[string]string
		// Else the one problem expected: its field and what its message holds.
		field, msg string
	}{
		{name: "u-labels everywhere",
			yaml: "zone: Bücher.example.\nsoa: {mname: ns1.bücher.example., rname: hostmaster.Bücher.example.}\nhostnames: [straße, www.bücher.example.]\ncnames: {ñ: straße, x: ñ.example.org.}\n",
			zone: "xn--bcher-kva.example.", mname: "ns1.xn--bcher-kva.example.", rname: "hostmaster.xn--bcher-kva.example.",
			ns:        []string{"ns1.xn--bcher-kva.example."},
			hostnames: []string{"xn--strae-oqa.xn--bcher-kva.example.", "www.xn--bcher-kva.example."},
			cnames: map[string]string{
				"xn--ida.xn--bcher-kva.example.": "xn--strae-oqa.xn--bcher-kva.example.",
				"x.xn--bcher-kva.example.":       "xn--ida.example.org.",
			}},
		{name: "ideographic full stop ends an absolute name",
			yaml: "zone: cdn.example.\nhostnames: [\"bücher.cdn.example\u3002\"]\n",
			zone: "cdn.example.", mname: "ns1.cdn.example.", rname: "hostmaster.cdn.example.",
			ns: []string{"ns1.cdn.example."}, hostnames: []string{"xn--bcher-kva.cdn.example."}, cnames: map[string]string{}},
		{name: "invalid zone", yaml: "zone: \"a\u05d0.example.\"\n",
			field: "zone", msg: `"a` + "\u05d0" + `.example." is not a valid internationalised hostname`},
		{name: "invalid hostname", yaml: "zone: cdn.example.\nhostnames: [\"a\\u200db\"]\n",
			field: "hostnames[0]", msg: `"a\u200db" is not a valid internationalised hostname`},
		{name: "invalid cname name", yaml: "zone: cdn.example.\ncnames: {\"b\\u2028ü\": www}\n",
			field: "cnames.b\u2028ü", msg: `"b\u2028ü" is not a valid internationalised hostname`},
		{name: "invalid cname target", yaml: "zone: cdn.example.\ncnames: {a: \"-bücher\"}\n",
			field: "cnames.a", msg: `"-bücher" is not a valid internationalised hostname`},
		{name: "invalid mname", yaml: "zone: cdn.example.\nsoa: {mname: \"ns.b\\u2028ü\"}\n",
			field: "soa.mname", msg: `"ns.b\u2028ü" is not a valid internationalised hostname`},
		// An RNAME's first label is a mailbox's local part, no host label: an A-label there
		// would name another mailbox.
		{name: "unicode mailbox", yaml: "zone: cdn.example.\nsoa: {rname: jöhn.bücher.example.}\n",
			field: "soa.rname", msg: `"jöhn.bücher.example.": the mailbox "jöhn" is not ASCII`},
		// One name in two spellings is one name: two CNAMEs for it are refused as any two are.
		{name: "a cname as u-label and a-label", yaml: "zone: cdn.example.\nhostnames: [www]\ncnames: {bücher: www, xn--bcher-kva: static.example.org.}\n",
			field: "cnames.xn--bcher-kva", msg: "xn--bcher-kva.cdn.example. is also cnames.bücher (to www.cdn.example.); a name has one CNAME at most"},
		{name: "a cname on a routed a-label", yaml: "zone: cdn.example.\nhostnames: [xn--bcher-kva]\ncnames: {Bücher: static.example.org.}\n",
			field: "cnames.Bücher", msg: `"Bücher": xn--bcher-kva.cdn.example. is both a CNAME (to static.example.org.) and a routed hostname (hostnames[0])`},
		{name: "a u-label outside the zone", yaml: "zone: cdn.example.\nhostnames: [bücher.example.org.]\n",
			field: "hostnames[0]", msg: `"bücher.example.org.": xn--bcher-kva.example.org. is outside the zone cdn.example.`},
		// A DNS name may hold labels no host name has ("_acme-challenge", "*", an escaped
		// dot), which UTS #46 refuses: beside a U-label they are kept as written, as they are
		// in a name spelt with its A-labels, and only the U-labels are converted. The whole
		// name was refused ("disallowed rune U+005F").
		{name: "labels no host name has beside u-labels",
			yaml: "zone: Bücher.example.\nsoa: {rname: 'Host\\.Master.bücher.example.'}\n" +
				"hostnames: [\"*.Sub.bücher.example.\", 'a\\.b.bücher.example.', '\\065\\.x.straße']\n" +
				"cnames: {_acme-challenge.Bücher.example.: _acme-challenge.acme.example.org., _dmarc: _dmarc.bücher.example.org.}\n",
			zone: "xn--bcher-kva.example.", mname: "ns1.xn--bcher-kva.example.", rname: "host\\.master.xn--bcher-kva.example.",
			ns:        []string{"ns1.xn--bcher-kva.example."},
			hostnames: []string{"*.sub.xn--bcher-kva.example.", "a\\.b.xn--bcher-kva.example.", "\\065\\.x.xn--strae-oqa.xn--bcher-kva.example."},
			cnames: map[string]string{
				"_acme-challenge.xn--bcher-kva.example.": "_acme-challenge.acme.example.org.",
				"_dmarc.xn--bcher-kva.example.":          "_dmarc.xn--bcher-kva.example.org.",
			}},
		// Beside such a label, a U-label IDNA refuses is still refused, named as written...
		{name: "invalid u-label beside an underscore label", yaml: "zone: cdn.example.\nhostnames: [\"_x.b\\u2028ü\"]\n",
			field: "hostnames[0]", msg: `"_x.b\u2028ü": "b\u2028ü" is not a valid internationalised hostname`},
		// ...and so is a name the bidi rule refuses across its labels (RFC 5893: a label
		// starting with a digit in a name with a right-to-left label).
		{name: "bidi rule across labels beside an underscore label", yaml: "zone: cdn.example.\nhostnames: [\"_x.1a.\\u05d0\\u05d1\"]\n",
			field: "hostnames[0]", msg: `"_x.1a.` + "\u05d0\u05d1" + `" is not a valid internationalised hostname`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := base + tt.yaml
			p := filepath.Join(t.TempDir(), "dns.yaml")
			if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfig(p)
			if tt.field != "" {
				var fes wire.FieldErrors
				if !errors.As(err, &fes) || len(fes) != 1 || fes[0].Field != tt.field || fes[0].Line < 4 || !strings.Contains(fes[0].Error(), tt.msg) {
					t.Fatalf("LoadConfig = %v; want one problem, %s at its line: ...%s...", err, tt.field, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig = %v, want nil", err)
			}
			c, err := cfg.prepare()
			if err != nil {
				t.Fatalf("prepare = %v", err)
			}
			var ns []string
			for _, n := range c.NS {
				ns = append(ns, n.Name)
			}
			if c.Zone != tt.zone || c.SOA.MName != tt.mname || c.SOA.RName != tt.rname || !slices.Equal(ns, tt.ns) ||
				!slices.Equal(c.Hostnames, tt.hostnames) || !maps.Equal(c.CNAMEs, tt.cnames) {
				t.Errorf("names = zone %q soa %q %q ns %q hostnames %q cnames %q\nwant zone %q soa %q %q ns %q hostnames %q cnames %q",
					c.Zone, c.SOA.MName, c.SOA.RName, ns, c.Hostnames, c.CNAMEs, tt.zone, tt.mname, tt.rname, tt.ns, tt.hostnames, tt.cnames)
			}
		})
	}
}

// TestInternationalisedNamesServed: a zone, hostname, CNAME and name server written in
// Unicode are answered under their A-labels, over UDP and TCP, which is what a resolver
// asks for. Before, the zone held the UTF-8 names and refused the A-label questions.
func TestInternationalisedNamesServed(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Zone = "Bücher.example."
		c.NS = []NameServer{{Name: "nß", IPv4: []string{"127.0.0.53"}}}
		c.SOA.RName = ""
		c.Hostnames = []string{"www", "straße"}
		// "_svc" is no host label, so IDNA alone would refuse the whole name.
		c.CNAMEs = map[string]string{"ñ": "straße", "_svc.Bücher.example.": "straße"}
	})
	const (
		zone   = "xn--bcher-kva.example."
		routed = "xn--strae-oqa." + zone
		alias  = "xn--ida." + zone
		ns     = "xn--n-qfa." + zone
	)
	tests := []struct {
		name  string
		qname string
		qtype uint16
		want  []string // the answer's records as owner, type and data (TTL left out)
	}{
		{"routed name in the zone", "www." + zone, dns.TypeA, []string{"www." + zone + " A", "www." + zone + " A"}},
		{"routed u-label", routed, dns.TypeA, []string{routed + " A", routed + " A"}},
		{"u-label cname", alias, dns.TypeA, []string{alias + " CNAME " + routed, routed + " A", routed + " A"}},
		{"cname beside an underscore label", "_svc." + zone, dns.TypeA, []string{"_svc." + zone + " CNAME " + routed, routed + " A", routed + " A"}},
		{"name server", zone, dns.TypeNS, []string{zone + " NS " + ns}},
		{"soa", zone, dns.TypeSOA, []string{zone + " SOA " + ns + " hostmaster." + zone}},
		{"glue", ns, dns.TypeA, []string{ns + " A 127.0.0.53"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				r := ts.ask(t, tt.qname, tt.qtype, qopt{net: network, from: netip.MustParseAddr("127.1.1.1")})
				var got []string
				for _, rr := range r.Answer {
					s := rr.Header().Name + " " + dns.TypeToString[rr.Header().Rrtype]
					switch rr := rr.(type) {
					case *dns.CNAME:
						s += " " + rr.Target
					case *dns.NS:
						s += " " + rr.Ns
					case *dns.SOA:
						s += " " + rr.Ns + " " + rr.Mbox
					case *dns.A:
						if tt.qname == ns {
							s += " " + rr.A.String()
						}
					}
					got = append(got, s)
				}
				if r.Rcode != dns.RcodeSuccess || !r.Authoritative || !slices.Equal(got, tt.want) {
					t.Errorf("%s: %s %s = %s AA=%v %q; want NOERROR AA %q", network, tt.qname, dns.TypeToString[tt.qtype],
						dns.RcodeToString[r.Rcode], r.Authoritative, got, tt.want)
				}
			}
		})
	}
	// explain takes a name as the operator writes it, too.
	if ex, err := ts.Explain(netip.MustParseAddr("127.1.1.1"), "ñ", dns.TypeA); err != nil || ex.Name != routed {
		t.Errorf("Explain(ñ) = %+v, %v; want %s", ex, err, routed)
	}
	if ex, err := ts.Explain(netip.MustParseAddr("127.1.1.1"), "_svc.Bücher.example.", dns.TypeA); err != nil || ex.Name != routed {
		t.Errorf("Explain(_svc.Bücher.example.) = %+v, %v; want %s", ex, err, routed)
	}
}

// TestConfigNamesTooLongOnceAbsolute: a relative name is held with the zone after it, and a
// domain name is at most 255 octets (RFC 1035 section 2.3.4). Each name field was checked
// as written, relative, so a name that only grows past the limit with the zone (or with its
// A-labels: "ü" x 55 is a label of 61 bytes) was taken: an NS or SOA record holding it
// cannot be packed, and a hostname or CNAME holding it can never be asked for.
func TestConfigNamesTooLongOnceAbsolute(t *testing.T) {
	l60 := strings.Repeat("a", 60)
	long := strings.Join([]string{l60, l60, l60, l60}, ".") // 243 bytes; 257 with "cdn.example."
	u55 := strings.Repeat("ü", 55)
	ulong := strings.Join([]string{u55, u55, u55, u55}, ".") // 247 bytes as A-labels
	esc := strings.Repeat(`\065`, 60)
	l256 := strings.Join([]string{l60, l60, l60, l60[:59]}, ".") // 256 octets with cdn.example.
	tests := []struct {
		name, yaml     string
		field, written string // the problem expected, "" for none
		zone           string // "" for cdn.example.
	}{
		{"hostname", "hostnames: [" + long + "]\n", "hostnames[0]", long, ""},
		{"hostname in unicode", "hostnames: [" + ulong + "]\n", "hostnames[0]", ulong, ""},
		{"ns name", "", "ns[1].name", long, ""},
		{"cname name", "cnames: {" + long + ": www}\n", "cnames." + long, long, ""},
		{"cname target", "cnames: {a: " + ulong + "}\n", "cnames.a", ulong, ""},
		{"soa mname", "soa: {mname: " + long + "}\n", "soa.mname", long, ""},
		{"soa rname", "soa: {rname: " + long + "}\n", "soa.rname", long, ""},
		// An escape is one octet: 60 of them a label of 60 octets, and the name fits.
		{"escapes", "hostnames: ['" + strings.Join([]string{esc, esc, l60, "a"}, ".") + "']\n", "", "", ""},
		// The longest name: 255 octets (3 x 61, 59, and 13 for cdn.example.); one more is one
		// too many, though dns.IsDomainName takes it.
		{"255 octets", "hostnames: [" + strings.Join([]string{l60, l60, l60, l60[:58]}, ".") + "]\n", "", "", ""},
		{"256 octets", "hostnames: [" + l256 + "]\n", "hostnames[0]", l256, ""},
		{"zone", "", "zone", l256 + ".cdn.example.", l256 + ".cdn.example."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := "ns:\n  - {name: ns1, ipv4: [192.0.2.53]}\n"
			if tt.field == "ns[1].name" {
				ns += "  - {name: " + long + ", ipv4: [192.0.2.54]}\n"
			}
			_, err := ParseConfig([]byte("zone: " + cmp.Or(tt.zone, "cdn.example.") + "\nmmdb: city.mmdb\n" + ns + tt.yaml))
			if tt.field == "" {
				if err != nil {
					t.Fatalf("ParseConfig = %v, want nil", err)
				}
				return
			}
			var fes wire.FieldErrors
			if !errors.As(err, &fes) || len(fes) != 1 || fes[0].Field != tt.field ||
				!strings.Contains(fes[0].Error(), strconv.Quote(tt.written)) || !strings.Contains(fes[0].Error(), "longer than 255 octets") {
				t.Fatalf("ParseConfig = %v; want one problem, %s naming %q as longer than 255 octets", err, tt.field, tt.written)
			}
		})
	}
}
