package dnsroute

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
)

// nameKind is what the zone holds at a name.
type nameKind int

const (
	kindOutside nameKind = iota // not in the zone: REFUSED
	kindNX                      // in the zone, nothing there: NXDOMAIN
	kindEmpty                   // an empty non-terminal: NODATA for every type
	kindApex
	kindNS
	kindCNAME
	kindRouted
)

// zone is the static part of the zone, derived from Config once.
type zone struct {
	origin   string // lower-case FQDN
	soa      *dns.SOA
	ns       []dns.RR
	glue     map[string][]netip.Addr // NS name -> addresses
	routed   map[string]bool
	wildcard bool
	cnames   map[string]string
	ents     map[string]bool
	ttl      uint32
}

func newZone(c Config) *zone {
	z := &zone{
		origin: c.Zone, glue: map[string][]netip.Addr{}, routed: map[string]bool{},
		cnames: c.CNAMEs, ents: map[string]bool{}, ttl: uint32(c.TTL.Seconds()),
	}
	zttl := uint32(c.ZoneTTL.Seconds())
	z.soa = &dns.SOA{
		Hdr: dns.RR_Header{Name: c.Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: zttl},
		Ns:  c.SOA.MName, Mbox: c.SOA.RName, Serial: c.SOA.Serial,
		Refresh: uint32(c.SOA.Refresh.Seconds()), Retry: uint32(c.SOA.Retry.Seconds()),
		Expire: uint32(c.SOA.Expire.Seconds()), Minttl: uint32(c.SOA.Minimum.Seconds()),
	}
	var names []string
	for _, ns := range c.NS {
		z.ns = append(z.ns, &dns.NS{Hdr: dns.RR_Header{Name: c.Zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: zttl}, Ns: ns.Name})
		for _, a := range append(append([]string{}, ns.IPv4...), ns.IPv6...) {
			z.glue[ns.Name] = append(z.glue[ns.Name], netip.MustParseAddr(a))
		}
		names = append(names, ns.Name)
	}
	for _, h := range c.Hostnames {
		if h == "*" {
			z.wildcard = true
			continue
		}
		z.routed[h] = true
		names = append(names, h)
	}
	for f := range c.CNAMEs {
		names = append(names, f)
	}
	for _, n := range names {
		if !dns.IsSubDomain(z.origin, n) {
			continue
		}
		// Every name between the zone apex and n exists (RFC 8020).
		for p := n; ; {
			i := strings.IndexByte(p, '.')
			if i < 0 || i == len(p)-1 {
				break
			}
			p = p[i+1:]
			if p == z.origin || !dns.IsSubDomain(z.origin, p) {
				break
			}
			z.ents[p] = true
		}
	}
	return z
}

// kind classifies a lower-case FQDN.
func (z *zone) kind(n string) nameKind {
	switch {
	case !dns.IsSubDomain(z.origin, n):
		return kindOutside
	case n == z.origin:
		return kindApex
	}
	if _, ok := z.glue[n]; ok {
		return kindNS
	}
	if _, ok := z.cnames[n]; ok {
		return kindCNAME
	}
	if z.routed[n] || z.wildcard {
		return kindRouted
	}
	if z.ents[n] {
		return kindEmpty
	}
	return kindNX
}

// routes says whether the lower-case FQDN n is routed: a routed name, or the apex when
// hostnames lists it ("@").
func (z *zone) routes(n string) bool {
	k := z.kind(n)
	return k == kindRouted || k == kindApex && z.routed[n]
}

// maxCNAMEChain is the most CNAMEs an answer follows: a longer chain is cut there, and the
// resolver asks for the rest (RFC 1034 section 3.6.2 wants chains followed but loops caught).
const maxCNAMEChain = 8

// chain follows the CNAMEs from the lower-case FQDN n (none when n is no alias) and returns
// their targets in order. follow says whether the last name is to be answered: false when the
// chain is cut at maxCNAMEChain, or loops (after each CNAME of the loop once: a config with a
// loop is refused at load, and this keeps an answer bounded whatever the zone holds).
func (z *zone) chain(n string) (targets []string, follow bool) {
	start := n
	for {
		t, ok := z.cnames[n]
		if !ok {
			return targets, true
		}
		if len(targets) == maxCNAMEChain {
			return targets, false
		}
		targets = append(targets, t)
		if t == start || slices.Contains(targets[:len(targets)-1], t) {
			return targets, false
		}
		n = t
	}
}

// longChains returns the CNAME chains longer than an answer follows (maxCNAMEChain), each
// from a name no CNAME points to, as its names to the last target, ordered by the first.
func (z *zone) longChains() [][]string {
	targets := map[string]bool{}
	for _, t := range z.cnames {
		targets[t] = true
	}
	var long [][]string
	for _, n := range slices.Sorted(maps.Keys(z.cnames)) {
		if targets[n] {
			continue // inside a chain: its first name reports it
		}
		names := []string{n}
		// Bounded by the number of CNAMEs: no chain is longer without a loop.
		for t, ok := z.cnames[n]; ok && len(names) <= len(z.cnames); t, ok = z.cnames[t] {
			names = append(names, t)
		}
		if len(names)-1 > maxCNAMEChain {
			long = append(long, names)
		}
	}
	return long
}

// negSOA is the SOA for the authority section of negative answers, with the TTL capped at the
// negative-caching TTL (RFC 2308 section 3).
func (z *zone) negSOA() dns.RR {
	soa := *z.soa
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return &soa
}

// request is one query with what the server learnt about its client.
type request struct {
	msg    *dns.Msg
	src    netip.Addr
	ecs    *dns.EDNS0_SUBNET // from the query; nil when absent
	client netip.Prefix
	tcp    bool
	// loc is the client's location when the caller looked it up already (nil: look it up).
	loc *geo.Location
	// turn is the rotation turn a routed answer holds over TCP, or with more turns than
	// maxVariants (UDP writes each query's turn into that one; see routed).
	turn uint32
}

// reply is the outcome of answering: one message per rotation turn, or one whose addresses
// rot rotates, and how to account for it.
type reply struct {
	variants []*dns.Msg
	// rot, when set, rotates the last rot.count answer records of the one variant (see
	// maxVariants).
	rot       *rotation
	cacheable bool
	pop       string // the PoP routed to, "" when the answer is not routed
	failOpen  bool
	// scope is the ECS scope prefix length: 0 unless the answer depends on the location.
	scope int
	// perClient is true when the answer holds for the client's own prefix only (a hash of it
	// or its network's measurements chose the PoP), not for every client at its location.
	perClient bool
}

// answer builds the reply to a well-formed query under st. It never returns nil variants.
func (s *Server) answer(st *state, req request) reply {
	q := req.msg.Question[0]
	m := new(dns.Msg)
	m.SetReply(req.msg)
	m.Authoritative = true
	m.RecursionAvailable = false
	if q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = false
		return reply{variants: []*dns.Msg{m}}
	}
	name := strings.ToLower(q.Name)
	z := s.zone
	kind := z.kind(name)
	if kind == kindOutside || q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = kind != kindOutside
		return reply{variants: []*dns.Msg{m}}
	}
	// owner is the name answered: the question, in the querier's spelling, or where its
	// CNAMEs lead.
	owner := q.Name
	if kind == kindCNAME {
		// Inside its own zone the server follows the chain, and the reply is the one the last
		// name gets (RFC 1034 section 4.3.2 step 3a; RFC 6604 section 2.1: NXDOMAIN when it
		// does not exist). A CNAME or ANY question matches the CNAME itself.
		targets, follow := []string{z.cnames[name]}, false
		if q.Qtype != dns.TypeCNAME && q.Qtype != dns.TypeANY {
			targets, follow = z.chain(name)
		}
		for _, t := range targets {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: z.ttl}, Target: t})
			owner = t
		}
		if name, kind = owner, z.kind(owner); !follow || kind == kindOutside {
			// A loop, a cut chain or another zone's name: the resolver goes on from there.
			return reply{variants: []*dns.Msg{m}, cacheable: true}
		}
	}
	nodata := func() reply {
		m.Ns = []dns.RR{z.negSOA()}
		return reply{variants: []*dns.Msg{m}, cacheable: true}
	}
	switch kind {
	case kindNX:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{z.negSOA()}
		return reply{variants: []*dns.Msg{m}}
	case kindEmpty:
		return nodata()
	case kindApex:
		switch q.Qtype {
		case dns.TypeSOA, dns.TypeANY: // ANY gets one RRset (RFC 8482)
			soa := *z.soa
			soa.Hdr.Name = owner
			m.Answer = append(m.Answer, &soa)
		case dns.TypeNS:
			for _, rr := range z.ns {
				ns := *rr.(*dns.NS)
				ns.Hdr.Name = owner
				m.Answer = append(m.Answer, &ns)
				for _, a := range z.glue[ns.Ns] {
					m.Extra = append(m.Extra, addrRR(ns.Ns, a, ns.Hdr.Ttl))
				}
			}
		case dns.TypeA, dns.TypeAAAA:
			if !z.routes(name) {
				return nodata()
			}
			return s.routed(st, req, m, owner)
		default:
			return nodata()
		}
		return reply{variants: []*dns.Msg{m}, cacheable: true}
	case kindNS:
		want := q.Qtype
		if want == dns.TypeANY { // one RRset (RFC 8482): A if there is one, else AAAA
			want = dns.TypeAAAA
			for _, a := range z.glue[name] {
				if a.Is4() {
					want = dns.TypeA
				}
			}
		}
		n := len(m.Answer) // the CNAMEs that led here
		for _, a := range z.glue[name] {
			if want == dns.TypeA && a.Is4() || want == dns.TypeAAAA && a.Is6() {
				m.Answer = append(m.Answer, addrRR(owner, a, z.soa.Hdr.Ttl))
			}
		}
		if len(m.Answer) == n {
			return nodata()
		}
		return reply{variants: []*dns.Msg{m}, cacheable: true}
	}
	// A routed name.
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		return s.routed(st, req, m, owner)
	case dns.TypeANY:
		// RFC 8482 lets ANY be answered with one RRset: the A answer.
		return s.routed(st, req, m, owner)
	}
	return nodata()
}

// routed appends the routed address records for owner to m: one message per rotation turn,
// or of more than maxVariants turns one at turn req.turn, to be rotated (reply.rot); over TCP,
// which is not cached, the one of turn req.turn.
func (s *Server) routed(st *state, req request, m *dns.Msg, owner string) reply {
	q := req.msg.Question[0]
	v6 := q.Qtype == dns.TypeAAAA
	var loc geo.Location
	if req.loc != nil {
		loc = *req.loc
	} else {
		var err error
		if loc, err = s.geo.Lookup(req.client.Addr()); err != nil {
			loc.Network = req.client
		}
	}
	d := st.route(loc, req.client, v6)
	r := reply{cacheable: true, scope: d.scope(req.client), perClient: d.perClient}
	if d.pop == nil || (d.failOpen && s.cfg.FailClosed) {
		if s.cfg.FailClosed && d.failOpen {
			m.Rcode = dns.RcodeServerFailure
			m.Answer = nil
			return reply{variants: []*dns.Msg{m}, failOpen: true}
		}
		// No PoP has a usable address of this family: NODATA. It depends on the fleet, so it
		// is cached by resolvers (RFC 2308 section 5: the SOA's TTL) no longer than an answer.
		soa := s.zone.negSOA()
		soa.Header().Ttl = min(soa.Header().Ttl, s.zone.ttl)
		m.Ns = []dns.RR{soa}
		r.variants = []*dns.Msg{m}
		return r
	}
	r.pop, r.failOpen = d.pop.pop.ID, d.failOpen
	turns := []uint32{req.turn}
	switch n := d.rot.turns(); {
	case req.tcp || n == 1:
	case n <= maxVariants:
		turns = turns[:0]
		for k := range n {
			turns = append(turns, uint32(k))
		}
	default:
		r.rot = d.rot
	}
	prefix := m.Answer
	for _, k := range turns {
		v := m.Copy()
		v.Answer = append(append([]dns.RR{}, prefix...), make([]dns.RR, 0, d.rot.count)...)
		for _, a := range d.rot.turn(k) {
			v.Answer = append(v.Answer, addrRR(owner, a, s.zone.ttl))
		}
		r.variants = append(r.variants, v)
	}
	return r
}

func addrRR(name string, a netip.Addr, ttl uint32) dns.RR {
	h := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: ttl}
	if a.Is4() {
		h.Rrtype = dns.TypeA
		return &dns.A{Hdr: h, A: net.IP(a.AsSlice())}
	}
	h.Rrtype = dns.TypeAAAA
	return &dns.AAAA{Hdr: h, AAAA: net.IP(a.AsSlice())}
}
