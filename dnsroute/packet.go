package dnsroute

import (
	"bytes"
	"encoding/binary"
	"net/netip"

	"github.com/miekg/dns"
)

// Wire constants of the fast path (RFC 1035 section 4.1, RFC 6891, RFC 7871).
const (
	headerLen    = 12
	typeOPT      = 41
	classIN      = 1
	optionECS    = 8
	optionPad    = 12 // RFC 7830
	familyIPv4   = 1
	familyIPv6   = 2
	v4CacheBits  = 24
	v6CacheBits  = 56
	maxQueryName = 255
)

// query is what the fast path reads from a packet.
type query struct {
	nameEnd   int // offset just past the question name
	qtype     uint16
	edns      bool
	udpSize   uint16
	do        bool
	ecs       bool
	ecsFamily uint16
	ecsSource uint8
	ecsAddr   []byte // points into the packet
}

// parseQuery reads the common shape of a query: QR clear, opcode QUERY, one IN question with
// an uncompressed name, no answer or authority records, and at most one OPT record whose only
// option is a well-formed ECS. Anything else reports false and takes the full parser.
func parseQuery(p []byte, q *query) bool {
	if len(p) < headerLen+5 || p[2]&0xF8 != 0 { // QR=0, opcode 0; AA and TC, meaningless in a query, are ignored as miekg/dns does
		return false
	}
	if binary.BigEndian.Uint16(p[4:]) != 1 || binary.BigEndian.Uint16(p[6:]) != 0 || binary.BigEndian.Uint16(p[8:]) != 0 {
		return false
	}
	ar := binary.BigEndian.Uint16(p[10:])
	if ar > 1 {
		return false
	}
	off := headerLen
	for {
		if off >= len(p) {
			return false
		}
		l := int(p[off])
		if l == 0 {
			off++
			break
		}
		if l > 63 || off+1+l > len(p) {
			return false
		}
		off += 1 + l
	}
	if off-headerLen > maxQueryName || off+4 > len(p) {
		return false
	}
	*q = query{nameEnd: off, qtype: binary.BigEndian.Uint16(p[off:])}
	if binary.BigEndian.Uint16(p[off+2:]) != classIN || metaRcode(q.qtype) != 0 {
		return false
	}
	off += 4
	if ar == 0 {
		return off == len(p)
	}
	// OPT: root name, type, class = UDP size, TTL = ext-rcode/version/flags, rdlength.
	if off+11 > len(p) || p[off] != 0 || binary.BigEndian.Uint16(p[off+1:]) != typeOPT {
		return false
	}
	q.edns = true
	q.udpSize = binary.BigEndian.Uint16(p[off+3:])
	if p[off+5] != 0 || p[off+6] != 0 { // extended rcode and version 0
		return false
	}
	q.do = p[off+7]&0x80 != 0
	rdlen := int(binary.BigEndian.Uint16(p[off+9:]))
	off += 11
	if off+rdlen != len(p) {
		return false
	}
	// Options: ECS at most once; others (cookies, padding, ...) are ignored, as a server that
	// does not implement them must (RFC 6891 section 6.1.2), malformed or not, as the full
	// parser ignores them (unreadOptionsPadded).
	for end := off + rdlen; off < end; {
		if off+4 > end {
			return false
		}
		code, olen := binary.BigEndian.Uint16(p[off:]), int(binary.BigEndian.Uint16(p[off+2:]))
		if off+4+olen > end {
			return false
		}
		if code == optionECS && (q.ecs || !parseECS(p, off+4, olen, q)) {
			return false
		}
		off += 4 + olen
	}
	return true
}

// metaRcode is the rcode of a question for type qtype that the server answers whatever its
// name, 0 for the rest: a meta-TYPE or Q-TYPE (RFC 6895 section 3.1: 41 and 128 to 255) it
// does not serve, answered as BIND answers it. MAILB and MAILA (RFC 1035 QTYPEs) and TKEY
// (RFC 2930 key agreement: the server holds no keys) are NOTIMP; OPT and TSIG, records of one
// message that no question can ask for, and the unassigned types 128 to 248 are FORMERR.
// AXFR and IXFR (REFUSED, answer) and ANY are served. Never an entry of the answer cache: the
// fast path leaves these questions to the full parser, which caches no error.
func metaRcode(qtype uint16) int {
	switch {
	case qtype == dns.TypeMAILA || qtype == dns.TypeMAILB || qtype == dns.TypeTKEY:
		return dns.RcodeNotImplemented
	case qtype == typeOPT || qtype == dns.TypeTSIG || qtype >= 128 && qtype < dns.TypeTKEY:
		return dns.RcodeFormatError
	}
	return 0
}

// parseECS reads an ECS option body of length n at p[off:].
func parseECS(p []byte, off, n int, q *query) bool {
	if n < 4 {
		return false
	}
	fam, src, scope := binary.BigEndian.Uint16(p[off:]), p[off+2], p[off+3]
	addr := p[off+4 : off+n]
	switch {
	case fam == familyIPv4 && src <= 32, fam == familyIPv6 && src <= 128:
	default:
		return false
	}
	if scope != 0 || len(addr) != (int(src)+7)/8 {
		return false
	}
	if src%8 != 0 && addr[len(addr)-1]&(0xFF>>(src%8)) != 0 {
		return false // bits beyond the source prefix must be zero (RFC 7871 section 6)
	}
	q.ecs, q.ecsFamily, q.ecsSource, q.ecsAddr = true, fam, src, addr
	return true
}

// badECS reports whether p, a query of opcode QUERY, carries an ECS option that RFC 7871
// section 6 rejects (as parseECS reads it), or two, in an OPT record of version 0: another
// version's options are its own (RFC 6891 section 6.1.3), and the query gets BADVERS. miekg/dns, which parses what the fast
// path does not take, pads or cuts the ADDRESS to its family's length as it unpacks the
// option, so too few or too many octets show only in the wire form. A message that does
// not parse as far as its options reports false: the full parser rejects it.
func badECS(p []byte) bool {
	if len(p) < headerLen || p[2]&0xF8 != 0 {
		return false
	}
	be := binary.BigEndian
	off, anns, n := recordsStart(p)
	if off < 0 {
		return false
	}
	var q query
	for i := range n {
		if off = skipName(p, off); off < 0 || off+10 > len(p) {
			return false
		}
		typ, version, rdlen := be.Uint16(p[off:]), p[off+5], int(be.Uint16(p[off+8:]))
		off += 10
		if off+rdlen > len(p) {
			return false
		}
		if i >= anns && typ == typeOPT && version == 0 {
			for o, end := off, off+rdlen; o+4 <= end; {
				code, olen := be.Uint16(p[o:]), int(be.Uint16(p[o+2:]))
				if o+4+olen > end {
					return false
				}
				if code == optionECS && (q.ecs || !parseECS(p, o+4, olen, &q)) {
					return true
				}
				o += 4 + olen
			}
		}
		off += rdlen
	}
	return false
}

// unreadOptionsPadded returns the query p with the EDNS options the server does not read
// covered by padding options (RFC 7830) of the same length, in a copy; p itself when it has
// none, or does not walk as far. Not read: every option of an OPT record of another version
// than 0, covered by one padding option (options are defined per version, RFC 6891 section
// 6.1.3, and such a query is owed BADVERS whatever they hold), and every option but ECS of
// one of version 0 (section 6.1.2: an option the server does not implement is ignored, however
// malformed; BIND too checks the bodies of the options it implements only). miekg/dns reads
// each option it knows as it unpacks and refuses the whole message for one it finds
// malformed (an ECS of an unknown family, a short LLQ or UL). Offsets are kept, so names
// compressed past the OPT still read; p itself when a question name reads through what
// would be padded (sameQuestions). Left as they are: 1 to 3 bytes of another version's
// options, which hold no padding option, and an option that runs past its record, which
// makes the message malformed.
func unreadOptionsPadded(p []byte) []byte {
	be := binary.BigEndian
	off, anns, records := recordsStart(p)
	if off < 0 {
		return p
	}
	var out []byte
	pad := func(at, n int) { // covers the n bytes of options at p[at:]
		if out == nil {
			out = bytes.Clone(p)
		}
		be.PutUint16(out[at:], optionPad)
		be.PutUint16(out[at+2:], uint16(n-4))
		clear(out[at+4 : at+n])
	}
	for i := range records {
		if off = skipName(p, off); off < 0 || off+10 > len(p) {
			return p
		}
		typ, version, rdlen := be.Uint16(p[off:]), p[off+5], int(be.Uint16(p[off+8:]))
		off += 10
		if off+rdlen > len(p) {
			return p
		}
		if i >= anns && typ == typeOPT {
			if version != 0 && rdlen >= 4 {
				pad(off, rdlen)
			}
			for o, end := off, off+rdlen; version == 0 && o+4 <= end; {
				code, n := be.Uint16(p[o:]), 4+int(be.Uint16(p[o+2:]))
				if o+n > end {
					break
				}
				if code != optionECS && code != optionPad {
					pad(o, n)
				}
				o += n
			}
		}
		off += rdlen
	}
	if out == nil || !sameQuestions(p, out, int(be.Uint16(p[4:]))) {
		return p
	}
	return out
}

// sameQuestions reports whether the qd question names of messages p and out, which differ
// only past their questions, read alike. A name compressed into the options that
// unreadOptionsPadded pads over would not: its padding would end the name there, and the
// server would answer a question nobody asked.
func sameQuestions(p, out []byte, qd int) bool {
	off := headerLen
	for range qd {
		a, next, err := dns.UnpackDomainName(p, off)
		if err != nil {
			return false
		}
		if b, _, err := dns.UnpackDomainName(out, off); err != nil || a != b {
			return false
		}
		off = next + 4
	}
	return true
}

// optionFormErr appends to dst the FORMERR to p, a query of opcode QUERY whose ECS option is
// malformed (badECS): the header, the question as asked and an OPT record with no option,
// the query's DO bit and maxUDP as its size. RFC 6891 section 7 wants the OPT: a FORMERR
// without one is what a server without EDNS answers, and a resolver would take the server
// for one and query it without EDNS, and so without ECS, from then on. Written from the wire,
// as miekg/dns refuses some such options (a bad family) with the whole message. Never longer
// than p, whose OPT holds the option at least; a bare header when p has not one question
// with an uncompressed name of at most 255 octets.
func optionFormErr(dst, p []byte, maxUDP int) []byte {
	be := binary.BigEndian
	qEnd, do, ok := -1, false, be.Uint16(p[4:]) == 1
	off := headerLen
	for ok {
		if off >= len(p) || p[off] > 63 {
			ok = false
			break
		}
		if p[off] == 0 {
			qEnd = off + 5
			break
		}
		off += 1 + int(p[off])
	}
	// A longer name is no name (RFC 1035 section 3.1): copied, it would make a reply that
	// does not parse, and one longer than 512 bytes; the full parser refuses it bare.
	if ok = ok && qEnd <= len(p) && qEnd-4-headerLen <= maxQueryName; ok {
		ok = false
		off = qEnd
		for i := range int(be.Uint16(p[6:])) + int(be.Uint16(p[8:])) + int(be.Uint16(p[10:])) {
			if off = skipName(p, off); off < 0 || off+10 > len(p) {
				break
			}
			if i >= int(be.Uint16(p[6:]))+int(be.Uint16(p[8:])) && be.Uint16(p[off:]) == typeOPT {
				ok, do = true, p[off+6]&0x80 != 0
				break
			}
			off += 10 + int(be.Uint16(p[off+8:]))
		}
	}
	dst = headerReply(dst, p, dns.RcodeFormatError)
	if !ok {
		return dst
	}
	h := len(dst) - headerLen
	dst[h+5], dst[h+11] = 1, 1 // QDCOUNT, ARCOUNT
	dst = append(dst, p[headerLen:qEnd]...)
	return appendOPT(dst, do, maxUDP)
}

// appendOPT appends to dst the OPT record of a reply written from the wire: version 0, no
// option, the query's DO bit (RFC 3225 section 3) and maxUDP as its size.
func appendOPT(dst []byte, do bool, maxUDP int) []byte {
	var flags byte
	if do {
		flags = 0x80
	}
	return append(dst, 0, 0, typeOPT, byte(maxUDP>>8), byte(maxUDP), 0, 0, flags, 0, 0, 0)
}

// notImp appends to dst the NOTIMP to p, a query of another opcode than QUERY (rcodeReply):
// the OPT is found by walking the records as they are counted, whatever the opcode makes of
// them. An OPT of a version other than 0 gets BADVERS instead, whatever the opcode (RFC 6891
// section 6.1.3; BIND reads EDNS before the opcode): it returns the rcode it answered.
func notImp(dst, p []byte, maxUDP int) ([]byte, int) {
	rcode := dns.RcodeNotImplemented
	if off := queryOPT(p); off >= 0 && p[off+5] != 0 { // the OPT's VERSION
		rcode = dns.RcodeBadVers
	}
	return rcodeReply(dst, p, rcode, maxUDP), rcode
}

// rcodeReply appends to dst a reply to p that says rcode alone: the bare header (headerReply)
// and, when p has an OPT record, an OPT (appendOPT) holding the rcode's upper bits (BADVERS:
// 0 in the header's four, 1 in the OPT's extended RCODE). RFC 6891 section 7 wants the OPT
// whatever the rcode: without it the querier takes the server for one without EDNS. A
// message whose records do not walk as far as an OPT gets the bare header (with a BADVERS's
// lower bits, 0). Never longer than p, which holds a header and an OPT record at least.
func rcodeReply(dst, p []byte, rcode, maxUDP int) []byte {
	dst = headerReply(dst, p, rcode)
	off := queryOPT(p)
	if off < 0 {
		return dst
	}
	dst[len(dst)-1] = 1 // ARCOUNT
	dst = appendOPT(dst, p[off+6]&0x80 != 0, maxUDP)
	dst[len(dst)-6] = byte(rcode >> 4) // the OPT's extended RCODE
	return dst
}

// questionsWhole reports whether each of the first n questions of message p has its type and
// class (RFC 1035 section 4.1.2) and a name whose pointers each point before it (priorName).
// miekg/dns reads a question that the message ends after its name or its type as one of type
// or class 0, and follows a pointer forward: answered, the reply's question would hold fields
// the query never sent (REFUSED to class 0), or a name the query holds nowhere before it. The
// server answers such a message as one the parser rejects: FORMERR, a bare header.
func questionsWhole(p []byte, n int) bool {
	off := headerLen
	for range n {
		if off = priorName(p, off); off < 0 || off+4 > len(p) {
			return false
		}
		off += 4
	}
	return true
}

// recordsStart returns where the first record of message p starts, past its questions, with
// how many records its header counts (n) and how many of them come before the additional
// section (anns); off is -1 when p is shorter than a header or its questions do not walk.
func recordsStart(p []byte) (off, anns, n int) {
	if len(p) < headerLen {
		return -1, 0, 0
	}
	be := binary.BigEndian
	qd, an, ns, ar := int(be.Uint16(p[4:])), int(be.Uint16(p[6:])), int(be.Uint16(p[8:])), int(be.Uint16(p[10:]))
	off = headerLen
	for range qd {
		if off = skipName(p, off); off < 0 || off+4 > len(p) {
			return -1, 0, 0
		}
		off += 4
	}
	return off, an + ns, an + ns + ar
}

// countsHeld reports whether message p holds every question and record its header counts
// (RFC 1035 section 4.1.1: QDCOUNT, ANCOUNT, NSCOUNT and ARCOUNT count the entries of their
// sections). miekg/dns reads a message that ends before them as one that has no more, and
// an OPT record under ANCOUNT 1 as an answer; BIND, NSD and Knot answer FORMERR. Bytes after
// the last record counted are not looked at here.
func countsHeld(p []byte) bool { return recordsEnd(p) >= 0 }

// recordsEnd returns the offset just past the last question or record the header of message
// p counts, where bytes counted in no section start (len(p) when there are none), or -1 when p
// does not hold them all (countsHeld).
func recordsEnd(p []byte) int {
	be := binary.BigEndian
	off, _, n := recordsStart(p)
	if off < 0 {
		return -1
	}
	for range n {
		if off = skipName(p, off); off < 0 || off+10 > len(p) {
			return -1
		}
		if off += 10 + int(be.Uint16(p[off+8:])); off > len(p) {
			return -1
		}
	}
	return off
}

// priorName returns the offset just past the (possibly compressed) name at p[off:], as
// skipName does, or -1 when it is no name or one of its pointers does not point before the
// labels it ends: RFC 1035 section 4.1.4 allows a pointer to a prior occurrence of a name
// only. BIND and NSD refuse the message otherwise (FORMERR), and this rules out loops too.
func priorName(p []byte, off int) int {
	end, start := -1, off
	for off < len(p) {
		switch l := p[off]; {
		case l == 0:
			if end < 0 {
				end = off + 1
			}
			return end
		case l&0xC0 == 0xC0:
			if off+2 > len(p) {
				return -1
			}
			if end < 0 {
				end = off + 2
			}
			t := int(binary.BigEndian.Uint16(p[off:]) & 0x3FFF)
			if t >= start {
				return -1
			}
			off, start = t, t
		case l&0xC0 != 0:
			return -1
		default:
			off += 1 + int(l)
		}
	}
	return -1
}

// queryOPT returns the offset of the TYPE of the first OPT record in the additional section
// of message p, or -1 when it has none or its sections do not walk as far.
func queryOPT(p []byte) int {
	be := binary.BigEndian
	off, anns, n := recordsStart(p)
	if off < 0 {
		return -1
	}
	for i := range n {
		if off = skipName(p, off); off < 0 || off+10 > len(p) {
			return -1
		}
		if i >= anns && be.Uint16(p[off:]) == typeOPT {
			return off
		}
		off += 10 + int(be.Uint16(p[off+8:]))
	}
	return -1
}

// addrOffsets returns where the RDATA of the last count answer records of the packed reply b
// start, at and every step bytes on; they must be addresses of size bytes (A: 4, AAAA: 16)
// with owner names of one length (as compression makes them). ok is false when they are not.
func addrOffsets(b []byte, count, size int) (at, step uint16, ok bool) {
	if len(b) < headerLen || len(b) > 0xFFFF {
		return 0, 0, false
	}
	be := binary.BigEndian
	qd, an := int(be.Uint16(b[4:])), int(be.Uint16(b[6:]))
	if count < 1 || count > an {
		return 0, 0, false
	}
	want := uint16(dns.TypeA)
	if size == 16 {
		want = dns.TypeAAAA
	}
	off := headerLen
	for range qd {
		if off = skipName(b, off); off < 0 || off+4 > len(b) {
			return 0, 0, false
		}
		off += 4
	}
	prev := 0
	for i := range an {
		if off = skipName(b, off); off < 0 || off+10 > len(b) {
			return 0, 0, false
		}
		typ, rdlen := be.Uint16(b[off:]), int(be.Uint16(b[off+8:]))
		off += 10
		if off+rdlen > len(b) {
			return 0, 0, false
		}
		switch j := i - (an - count); {
		case j < 0:
		case typ != want || rdlen != size || j > 1 && off-prev != int(step):
			return 0, 0, false
		case j == 0:
			at = uint16(off)
		default:
			step = uint16(off - prev)
		}
		if i >= an-count {
			prev = off
		}
		off += rdlen
	}
	return at, step, true
}

// skipName returns the offset just past the (possibly compressed) name at p[off:], or -1
// when it runs past the end or uses a reserved label type.
func skipName(p []byte, off int) int {
	for off < len(p) {
		switch l := p[off]; {
		case l == 0:
			return off + 1
		case l&0xC0 == 0xC0:
			if off+2 > len(p) {
				return -1
			}
			return off + 2
		case l&0xC0 != 0:
			return -1
		default:
			off += 1 + int(l)
		}
	}
	return -1
}

// ecsPrefix is the client subnet the query's ECS option names.
func ecsPrefix(fam uint16, src uint8, addr []byte) netip.Prefix {
	if fam == familyIPv4 {
		var b [4]byte
		copy(b[:], addr)
		return netip.PrefixFrom(netip.AddrFrom4(b), int(src))
	}
	var b [16]byte
	copy(b[:], addr)
	return netip.PrefixFrom(netip.AddrFrom16(b), int(src))
}

// clientPrefix is the prefix the server locates and caches for: the ECS subnet when one was
// sent with a non-zero source length, else the source address; at most /24 or /56 wide so that
// a /32 never fragments the cache. An IPv4 network sent as an IPv4-mapped IPv6 one (family 2,
// ::ffff:a.b.c.d/96+n) is the IPv4 /n; the reply's scope is then written back in IPv6 bits
// (ecsScope). A family-2 prefix shorter than /96 covers more than mapped addresses and stays
// IPv6.
func clientPrefix(src netip.Addr, ecs netip.Prefix) netip.Prefix {
	a, bits := src.Unmap(), -1
	if ecs.IsValid() && ecs.Bits() > 0 {
		a, bits = ecs.Addr(), ecs.Bits()
		if a.Is4In6() && bits > mappedBits {
			a, bits = a.Unmap(), bits-mappedBits
		}
	}
	limit := v6CacheBits
	if a.Is4() {
		limit = v4CacheBits
	}
	if bits < 0 || bits > limit {
		bits = limit
	}
	p, _ := a.Prefix(bits)
	return p
}

// mappedBits is the length of the IPv4-mapped IPv6 prefix, ::ffff:0:0/96.
const mappedBits = 96

// ecsScope is the scope prefix length a reply states for an ECS option of family and source
// length src, from scope, the length in the client prefix's own bits (decision.scope): an
// IPv4 network sent in family 2 gets its scope back in IPv6 bits, as it was asked.
func ecsScope(family uint16, src uint8, client netip.Prefix, scope int) uint8 {
	if family == familyIPv6 && client.Addr().Is4() && int(src) > mappedBits {
		scope += mappedBits
	}
	return uint8(scope)
}

// appendKey appends the answer cache key of a query to dst: the lower-cased question name,
// the type, the EDNS shape (which changes the reply's bytes) and the client prefix.
func appendKey(dst, p []byte, q *query, client netip.Prefix) []byte {
	for _, c := range p[headerLen:q.nameEnd] {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	var flags byte
	if q.edns {
		flags |= 1
	}
	if q.do {
		flags |= 2
	}
	if q.ecs {
		flags |= 4
		if q.ecsFamily == familyIPv6 {
			flags |= 8
		}
	}
	dst = append(dst, byte(q.qtype>>8), byte(q.qtype), flags, q.ecsSource, byte(client.Bits()))
	if client.Addr().Is4() {
		b := client.Addr().As4()
		return append(dst, b[:]...)
	}
	b := client.Addr().As16()
	return append(dst, b[:]...)
}

// netKey appends the cache key of the answer for every client of database network network
// to dst: the query's key (appendKey) for the network, tagged so that it is never the key of
// a client prefix (an ECS /16 that is the network itself, say), which may hold a per-client
// answer.
func netKey(dst, p []byte, q *query, network netip.Prefix) []byte {
	return append(appendKey(dst, p, q, network), 0xFF)
}

// udpLimit is the largest reply the client can take over UDP.
func udpLimit(edns bool, size uint16, max int) int {
	if !edns || size < 512 {
		return 512
	}
	return min(int(size), max)
}
