package dnsroute

// The query pipeline: a UDP packet (or a TCP message) in, an answer out, from the pre-packed
// answer cache when it can and through routing (resolve) when it must.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
	"github.com/meridian-cdn/meridian/wire"
)

// worker holds one UDP reader's buffers.
type worker struct {
	in, out, key []byte
	netKey       []byte // the key of the client's database network's answer (see netKey)
	n            uint32 // queries handled, for sampling the latency of cache hits

	// Cache hits not yet added to the shared counters, which the UDP loops publish once a
	// batch (flushHits): a hit's three atomic additions were 15 % of it on one core, and
	// with both workers serving one answer (sharing the counters' cache lines) a hit took
	// twice as long with them as without. pend is the entry whose metric children pendN
	// hits owe; a batch of one hot answer adds to them once.
	hits  uint64
	pend  *entry
	pendN int
}

// hit counts a cache hit of e.
func (w *worker) hit(e *entry) {
	w.hits++
	if e != w.pend {
		w.flushEntry()
		w.pend = e
	}
	w.pendN++
}

func (w *worker) flushEntry() {
	if w.pendN > 0 {
		n := float64(w.pendN)
		w.pend.queries.Add(n)
		if w.pend.answers != nil {
			w.pend.answers.Add(n)
		}
	}
	w.pend, w.pendN = nil, 0
}

// flushHits publishes the hits w has counted; the UDP loops call it before sending a batch's
// replies, so a client that has its answer finds it counted.
func (s *Server) flushHits(w *worker) {
	w.flushEntry()
	if w.hits > 0 {
		s.m.hits.Add(w.hits)
		w.hits = 0
	}
}

// udpBatch is how many datagrams one worker reads (recvmmsg) and writes (sendmmsg) per system
// call; under load the kernel queue is deep and one call per datagram would dominate the cost.
const udpBatch = 32

// udpBufLen is the room for one datagram; a longer query is answered FORMERR (see tooLong).
const udpBufLen = 4096

// hitSample is how often a cache hit's latency is measured (1 in hitSample): two clock reads
// would double the cost of a hit.
const hitSample = 64

func newWorker() *worker {
	return &worker{in: make([]byte, udpBufLen), out: make([]byte, 0, udpBufLen), key: make([]byte, 0, 320), netKey: make([]byte, 0, 320)}
}

func (s *Server) serveUDP(ctx context.Context, pc net.PacketConn) {
	if uc, ok := pc.(*net.UDPConn); ok {
		s.serveUDPBatch(ctx, uc)
		return
	}
	w := newWorker()
	for {
		n, addr, err := pc.ReadFrom(w.in)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		resp := s.handleUDP(w, w.in[:n], ua.AddrPort())
		s.flushHits(w)
		if resp != nil {
			pc.WriteTo(resp, addr)
		}
	}
}

// handleUDP answers one UDP packet from src; nil means send nothing. The reply may alias w.out.
func (s *Server) handleUDP(w *worker, p []byte, src netip.AddrPort) []byte {
	w.n++
	var start time.Time
	if w.n%hitSample == 0 {
		start = time.Now()
	}
	if len(p) < headerLen {
		s.m.dropped.WithLabelValues("short").Inc()
		return nil
	}
	if p[2]&0x80 != 0 {
		s.m.dropped.WithLabelValues("response").Inc() // never answer answers: no loops
		return nil
	}
	now := s.now()
	var q query
	parsed := parseQuery(p, &q)
	if s.rl != nil {
		switch s.rl.take(src.Addr(), now) {
		case drop:
			s.m.limited.WithLabelValues("drop").Inc()
			return nil
		case slip:
			s.m.limited.WithLabelValues("slip").Inc()
			if !parsed {
				return nil
			}
			return slipReply(w.out[:0], p, &q, s.cfg.MaxUDPSize)
		}
	}
	st := s.current(now)
	var client netip.Prefix
	if parsed {
		var ecs netip.Prefix
		if q.ecs {
			ecs = ecsPrefix(q.ecsFamily, q.ecsSource, q.ecsAddr)
		}
		client = clientPrefix(src.Addr(), ecs)
		w.key = appendKey(w.key[:0], p, &q, client)
		if e := st.cache.get(w.key, now.UnixNano()); e != nil && e.gen == s.lat.gen(e.slot) {
			v := e.pick()
			limit := udpLimit(q.edns, q.udpSize, s.cfg.MaxUDPSize)
			if len(v) <= limit {
				out := append(w.out[:0], v...)
				patch(out, p, &q, e)
				if e.rot != nil {
					e.rotate(out)
				}
				w.hit(e)
				if !start.IsZero() {
					s.m.latency.Observe(time.Since(start).Seconds())
				}
				return out
			}
			// Too long for this client: the rotation's next turn, truncated. A fresh resolve
			// would start the rotation over (and store it so for every client of the key), so
			// such clients would always get the same first node.
			if out := s.truncatedHit(w, p, &q, e, v, limit); out != nil {
				return out
			}
		}
	}
	// The latency generation of the client's network, read before routing (see latencyMap.gen).
	var slot, gen uint32
	var loc *geo.Location
	if parsed {
		network := wire.ClientNetwork(client.Addr())
		slot = genSlot(network)
		gen = s.lat.gen(slot)
		if l, err := s.geo.Lookup(client.Addr()); err == nil && l.Found {
			loc = &l
			w.netKey = netKey(w.netKey[:0], p, &q, l.Network)
			if out := s.netHit(st, w, p, &q, network, slot, gen, now.UnixNano()); out != nil {
				if !start.IsZero() {
					s.m.latency.Observe(time.Since(start).Seconds())
				}
				return out
			}
		}
	}
	s.m.misses.Add(1)
	if start.IsZero() {
		start = time.Now()
	}
	if p[2]&0x78 != 0 {
		// Another opcode: NOTIMP (BADVERS for another EDNS version) before any parse, as
		// over TCP (tcpReject), whether the rest of the message reads or not.
		out, rcode := notImp(w.out[:0], p, s.cfg.MaxUDPSize)
		s.m.queries.WithLabelValues("other", rcodeLabel(rcode)).Inc()
		return out
	}
	if !parsed && badECS(p) {
		s.m.queries.WithLabelValues("other", rcodeLabel(dns.RcodeFormatError)).Inc()
		return optionFormErr(w.out[:0], p, s.cfg.MaxUDPSize)
	}
	req := new(dns.Msg)
	if err := req.Unpack(p); err != nil {
		// Options the server does not read (unreadOptionsPadded), which miekg/dns may refuse
		// the message for: the query again without them.
		b := unreadOptionsPadded(p)
		if req = new(dns.Msg); len(b) == 0 || &b[0] == &p[0] || req.Unpack(b) != nil {
			s.m.queries.WithLabelValues("other", rcodeLabel(dns.RcodeFormatError)).Inc()
			return headerReply(w.out[:0], p, dns.RcodeFormatError)
		}
	}
	// A query the fast path took holds what it counts (parseQuery): only the rest is walked.
	if !questionsWhole(p, len(req.Question)) || !parsed && !countsHeld(p) {
		s.m.queries.WithLabelValues("other", rcodeLabel(dns.RcodeFormatError)).Inc()
		return headerReply(w.out[:0], p, dns.RcodeFormatError)
	}
	if parsed {
		// The reply is built for the question spelt in upper case and then given the
		// querier's spelling (patch), as a cache hit is: the zone's names are lower case
		// (Config), so none of them (an SOA, NS targets, glue, a CNAME target) is compressed
		// into the question, whose case is the next querier's; the names that are the
		// question point at it and take each querier's spelling, as they do uncached.
		req.Question[0].Name = strings.ToUpper(req.Question[0].Name)
	}
	limit := 512
	if o := req.IsEdns0(); o != nil {
		limit = udpLimit(true, o.UDPSize(), s.cfg.MaxUDPSize)
	}
	// A rotated answer (reply.rot) is built at turn 0; this query's turn is written in below,
	// as a hit writes its own.
	out, r, rcode := s.resolve(st, req, src.Addr(), loc, false, 0)
	if out == nil {
		// Malformed but parsed (no question or two, a misplaced TSIG): the rcode, and an OPT
		// for a query with one.
		s.m.queries.WithLabelValues("other", rcodeLabel(rcode)).Inc()
		return rcodeReply(w.out[:0], p, rcode, s.cfg.MaxUDPSize)
	}
	packed := make([][]byte, len(out))
	for i, m := range out {
		b, err := m.Pack()
		if err != nil {
			s.m.queries.WithLabelValues("other", rcodeLabel(dns.RcodeServerFailure)).Inc()
			return headerReply(w.out[:0], p, dns.RcodeServerFailure)
		}
		packed[i] = b
	}
	qt := req.Question[0].Qtype
	queryLen := len(p) // parsed: the message ends at its last record (parseQuery)
	if !parsed {
		queryLen = recordsEnd(p) // bytes counted in no section change no reply (docs/dns.md)
	}
	if rcode != dns.RcodeSuccess && rcode != dns.RcodeNameError && len(packed[0]) > queryLen {
		// Garbage never amplifies: the question copied whole grows when the query compressed
		// it into its own header (a meta-type's FORMERR or NOTIMP, two OPT records, a name in
		// no zone, another EDNS version). An error needs no question: the rcode, with an OPT
		// for a query with one. Counted as the reply it stands for (account): a fail-closed
		// SERVFAIL is a fail-open answer too. Measured against the query without bytes after
		// its last record: they would make room for the question, a reply the same query
		// without them does not get.
		s.account(&entry{queries: s.m.queries.WithLabelValues(qtypeLabel(qt), rcodeLabel(rcode))}, r)
		return rcodeReply(w.out[:0], p, rcode, s.cfg.MaxUDPSize)
	}
	e := &entry{variants: packed, slot: slot, gen: gen, queries: s.m.queries.WithLabelValues(qtypeLabel(qt), rcodeLabel(rcode))}
	// A new entry's turns start where the server's are, not at 0: most client networks ask a
	// few times before their entry leaves the cache, and each one starting at 0 would have the
	// first nodes lead nearly every answer, whatever the rotation.
	e.next.Store(s.rr.Add(1) - 1)
	if r.rot != nil {
		// Never fails for a reply routed packs; if it did, the answer would just not rotate.
		if at, step, ok := addrOffsets(packed[0], r.rot.count, r.rot.size); ok {
			e.rot, e.at, e.step = r.rot, at, step
		}
	}
	if r.pop != "" && rcode == dns.RcodeSuccess {
		e.answers = s.m.answers.WithLabelValues(r.pop)
	}
	if parsed {
		e.ecsAddrLen = len(q.ecsAddr)
	}
	var turn uint32
	if parsed && r.cacheable && rcode == dns.RcodeSuccess && !r.failOpen {
		st.cache.put(w.key, e, now.UnixNano())
		if loc != nil && !r.perClient {
			st.cache.put(w.netKey, &entry{variants: packed, rot: e.rot, at: e.at, step: e.step, ecsAddrLen: e.ecsAddrLen, queries: e.queries, answers: e.answers}, now.UnixNano())
		}
		turn = e.next.Add(1) - 1
	} else if len(packed) > 1 || e.rot != nil {
		turn = s.rr.Add(1) - 1
	}
	s.account(e, r)
	b := append(w.out[:0], packed[int(turn%uint32(len(packed)))]...)
	if e.rot != nil {
		e.rot.write(b, e.at, e.step, turn)
	}
	if parsed {
		patch(b, p, &q, e) // the querier's reply is what a hit would give it (see the upper case above)
	}
	if len(b) > limit {
		if tb := truncate(b, limit); tb != nil {
			b = tb
		}
	}
	s.m.latency.Observe(time.Since(start).Seconds())
	return b
}

// truncatedHit answers from the cached variant v of e, too long for the client: the next turn
// for this query, cut to limit bytes as the resolving path cuts a reply (truncate); nil if it
// does not unpack or pack. Only clients without EDNS (or with a small buffer) asking for a
// long answer come here.
func (s *Server) truncatedHit(w *worker, p []byte, q *query, e *entry, v []byte, limit int) []byte {
	b := append(w.out[:0], v...)
	patch(b, p, q, e)
	if e.rot != nil {
		e.rotate(b)
	}
	out := truncate(b, limit)
	if out != nil {
		w.hit(e)
	}
	return out
}

// truncate cuts the packed reply b to limit bytes (dns.Msg.Truncate), with TC set when an
// answer or authority record is left out; nil if it does not unpack or pack. Additional
// records that do not fit (an NS answer's glue) are left out without TC: RFC 2181 section 9
// sets it only when the reply lacks records it needs, not extra information, as BIND and
// NSD answer (miekg/dns sets it for any record it drops). They are left out by whole RRsets
// (section 9: "the entire RRSet that will not fit"): miekg/dns keeps the records that fit,
// which may be part of one, and a resolver takes an RRset in a reply without TC as whole.
func truncate(b []byte, limit int) []byte {
	var m dns.Msg
	if m.Unpack(b) != nil {
		return nil
	}
	m.Compress = true
	an, ns := len(m.Answer), len(m.Ns)
	extra := slices.Clone(m.Extra)
	m.Truncate(limit)
	m.Truncated = len(m.Answer) < an || len(m.Ns) < ns
	if !m.Truncated {
		m.Extra = wholeRRsets(m.Extra, extra)
	}
	out, err := m.Pack()
	if err != nil {
		return nil
	}
	return out
}

// wholeRRsets returns kept, the additional records dns.Msg.Truncate kept of all (in their
// order, the OPT record apart), without those of an RRset that all has more records of.
func wholeRRsets(kept, all []dns.RR) []dns.RR {
	count := func(rrs []dns.RR, h *dns.RR_Header) (n int) {
		for _, rr := range rrs {
			if g := rr.Header(); g.Rrtype == h.Rrtype && g.Class == h.Class && strings.EqualFold(g.Name, h.Name) {
				n++
			}
		}
		return n
	}
	var out []dns.RR
	for _, rr := range kept {
		if h := rr.Header(); h.Rrtype == dns.TypeOPT || count(kept, h) == count(all, h) {
			out = append(out, rr)
		}
	}
	return out
}

// netHit answers from the answer for the client's database network (key in w.netKey) when there is one and it holds for this client, whose network is network with
// latency generation gen in slot: the network has no measurements (else the answer is the
// client's own). It caches the answer under the client's key too, so that the next query
// is an ordinary hit. nil means no such answer.
func (s *Server) netHit(st *state, w *worker, p []byte, q *query, network netip.Prefix, slot, gen uint32, now int64) []byte {
	ne := st.cache.get(w.netKey, now)
	if ne == nil || s.lat.Has(network) {
		return nil
	}
	e := &entry{variants: ne.variants, rot: ne.rot, at: ne.at, step: ne.step, ecsAddrLen: ne.ecsAddrLen, slot: slot, gen: gen, queries: ne.queries, answers: ne.answers}
	e.next.Store(s.rr.Add(1) - 1) // as a new entry's (handleUDP)
	v := e.pick()
	if len(v) > udpLimit(q.edns, q.udpSize, s.cfg.MaxUDPSize) {
		return nil
	}
	st.cache.put(w.key, e, now)
	out := append(w.out[:0], v...)
	patch(out, p, q, e)
	if e.rot != nil {
		e.rotate(out)
	}
	s.m.hits.Add(1)
	s.m.netHits.Add(1)
	e.queries.Inc()
	if e.answers != nil {
		e.answers.Inc()
	}
	return out
}

func (s *Server) account(e *entry, r reply) {
	e.queries.Inc()
	if e.answers != nil {
		e.answers.Inc()
	}
	if r.failOpen {
		s.m.failOpen.Inc()
	}
}

// serveTCP answers one query over TCP; TCP answers are not rate limited (it is the way
// around truncation and slip) and not cached.
func (s *Server) serveTCP(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	s.m.misses.Add(1)
	var src netip.Addr
	if ta, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		src = ta.AddrPort().Addr()
	}
	if req.Response {
		s.m.dropped.WithLabelValues("response").Inc()
		return
	}
	st := s.current(s.now())
	out, r, rcode := s.resolve(st, req, src, nil, true, s.rr.Add(1)-1)
	if out == nil {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		m.Question = nil
		if o := req.IsEdns0(); o != nil {
			m.Extra = []dns.RR{s.replyOPT(o)} // RFC 6891 section 7, as over UDP (rcodeReply)
		}
		s.m.queries.WithLabelValues("other", rcodeLabel(rcode)).Inc()
		s.writeTCP(w, m)
		return
	}
	e := &entry{queries: s.m.queries.WithLabelValues(qtypeLabel(req.Question[0].Qtype), rcodeLabel(rcode))}
	if r.pop != "" && rcode == dns.RcodeSuccess {
		e.answers = s.m.answers.WithLabelValues(r.pop)
	}
	s.account(e, r)
	s.writeTCP(w, out[0]) // TCP gets one message, of turn s.rr (see routed)
	s.m.latency.Observe(time.Since(start).Seconds())
}

// writeTCP sends m; when the client did not take it in time (lingerConn.Write), the answer is
// counted as dropped and the connection closed: the next answer would wait as long.
func (s *Server) writeTCP(w dns.ResponseWriter, m *dns.Msg) {
	if err := w.WriteMsg(m); err != nil {
		s.m.dropped.WithLabelValues("send").Inc()
		w.Close()
	}
}

// tcpReader reads TCP queries for miekg/dns's server and answers itself, byte for byte as
// UDP does, those that it rejects (tcpReject): another opcode (NOTIMP, with an OPT when the
// query has one: notImp), a message that does not parse (FORMERR with a bare header:
// headerReply; as is one whose question ends before its type or class: questionsWhole, or
// that holds fewer questions or records than it counts: countsHeld) or has
// other than one question (FORMERR, with an OPT when the query has one:
// rcodeReply), a
// malformed ECS option (badECS: that server's parser would accept it with the address padded
// or cut) with FORMERR and an OPT (optionFormErr). miekg/dns's own rejection echoes the
// query's TC, AD and CD bits and answers a NOTIFY without a question as a QUERY. It then
// reads the next query, waiting for it the idle timeout (tcpIdleTimeout), as miekg/dns
// waits after a query it answered. A message of length 0 ends the connection.
type tcpReader struct {
	dns.Reader
	s *Server
}

// decorateTCP wraps the TCP server's reader (dns.Server.DecorateReader).
func (s *Server) decorateTCP(r dns.Reader) dns.Reader { return tcpReader{Reader: r, s: s} }

func (r tcpReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	for bad := 0; ; bad++ {
		m, err := r.Reader.ReadTCP(conn, timeout)
		if err != nil {
			return m, err
		}
		if len(m) == 0 {
			// A length prefix of 0 frames no DNS message (RFC 1035 sections 4.1.1 and
			// 4.2.2: every one has a 12-octet header), nor an ID to answer: the client
			// does not speak DNS over TCP. The connection ends, gracefully (lingerConn), as
			// BIND, NSD and Knot end it; miekg/dns would read on.
			return nil, errors.New("read tcp query: message of length 0")
		}
		m, reply, rcode := r.s.tcpReject(m)
		if reply == nil {
			return m, nil
		}
		if bad == maxBadTCP {
			// Queries answered here are not counted by miekg/dns's limit of queries per
			// connection (MaxTCPQueries): this loop has one of its own. The connection ends.
			return nil, errors.New("too many malformed queries on one TCP connection")
		}
		r.s.m.misses.Add(1)
		r.s.m.queries.WithLabelValues("other", rcodeLabel(rcode)).Inc()
		b := append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reply)), uint16(len(reply))), reply...)
		// Bounded, so that a client that does not read cannot hold the connection's
		// goroutine; cleared after, as miekg/dns sets no write deadline of its own.
		conn.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
		_, err = conn.Write(b)
		conn.SetWriteDeadline(time.Time{})
		if err != nil {
			return nil, fmt.Errorf("write bare reply: %w", err)
		}
		// A query answered: the next one is waited for as miekg/dns waits after one it
		// answers (it passes the first read timeout, tcpReadTimeout, for a connection's
		// first query only).
		timeout = tcpIdleTimeout
	}
}

// tcpReject returns the reply to a TCP query m that is rejected before miekg/dns's server sees
// it, and its rcode; for a query that goes on, no reply and the message that miekg/dns is to
// read: m, or, as UDP reads it (handleUDP), m without the options the server does not read
// when miekg/dns would refuse it for one (unreadOptionsPadded). Shorter than a header or a
// response: on, miekg/dns drops those, as UDP does. The full parse here is a second one for
// the queries that pass; TCP carries few.
func (s *Server) tcpReject(m []byte) (next, reply []byte, rcode int) {
	if len(m) < headerLen || m[2]&0x80 != 0 {
		return m, nil, 0
	}
	if m[2]&0x78 != 0 {
		reply, rcode := notImp(nil, m, s.cfg.MaxUDPSize)
		return nil, reply, rcode
	}
	if badECS(m) {
		return nil, optionFormErr(nil, m, s.cfg.MaxUDPSize), dns.RcodeFormatError
	}
	var req dns.Msg
	if req.Unpack(m) != nil {
		m = unreadOptionsPadded(m)
		req = dns.Msg{}
		if req.Unpack(m) != nil {
			return nil, headerReply(nil, m, dns.RcodeFormatError), dns.RcodeFormatError
		}
	}
	if !questionsWhole(m, len(req.Question)) || !countsHeld(m) {
		return nil, headerReply(nil, m, dns.RcodeFormatError), dns.RcodeFormatError
	}
	if len(req.Question) != 1 {
		return nil, rcodeReply(nil, m, dns.RcodeFormatError, s.cfg.MaxUDPSize), dns.RcodeFormatError
	}
	return m, nil, 0
}

// acceptTCP is the TCP server's MsgAcceptFunc: every query goes on to the handler, which
// answers what UDP answers (miekg/dns's default refuses more than two additional records or
// one answer or authority record, which UDP serves), and responses are dropped.
func acceptTCP(dh dns.Header) dns.MsgAcceptAction {
	if dh.Bits&(1<<15) != 0 {
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}

// maxBadTCP is how many malformed queries in a row tcpReader answers on one connection:
// miekg/dns's default MaxTCPQueries.
const maxBadTCP = 128

// resolve answers a parsed query; a routed answer over TCP holds rotation turn turn (see
// routed). A nil result means reply with only a header and rcode, and an OPT when the query
// has one (malformed or unsupported queries), so that garbage never earns more bytes than it
// sent.
func (s *Server) resolve(st *state, req *dns.Msg, src netip.Addr, loc *geo.Location, tcp bool, turn uint32) ([]*dns.Msg, reply, int) {
	if req.Opcode != dns.OpcodeQuery {
		return nil, reply{}, dns.RcodeNotImplemented
	}
	if len(req.Question) != 1 {
		return nil, reply{}, dns.RcodeFormatError
	}
	var opt *dns.OPT
	for _, rr := range req.Extra {
		o, ok := rr.(*dns.OPT)
		if !ok {
			continue
		}
		if opt != nil {
			return []*dns.Msg{s.formErrOPT(req, opt)}, reply{}, dns.RcodeFormatError // RFC 6891 section 6.1.1
		}
		opt = o
	}
	if misplacedOPT(req, opt) {
		return []*dns.Msg{s.formErrOPT(req, opt)}, reply{}, dns.RcodeFormatError
	}
	tsig, ok := queryTSIG(req)
	if !ok {
		return nil, reply{}, dns.RcodeFormatError
	}
	if tsig != nil {
		return []*dns.Msg{s.badKey(req, opt, tsig)}, reply{}, dns.RcodeNotAuth
	}
	if opt != nil && opt.Version() != 0 {
		// Before the options: they are defined per version (RFC 6891 section 6.1.3), so one
		// that version 0 refuses is no error of this one.
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeBadVers)
		m.Extra = []dns.RR{s.replyOPT(opt)}
		return []*dns.Msg{m}, reply{}, dns.RcodeBadVers
	}
	var ecs *dns.EDNS0_SUBNET
	if opt != nil {
		for _, op := range opt.Option {
			sub, ok := op.(*dns.EDNS0_SUBNET)
			if !ok {
				continue
			}
			if ecs != nil || !validECS(sub) {
				return []*dns.Msg{s.formErrOPT(req, opt)}, reply{}, dns.RcodeFormatError
			}
			ecs = sub
		}
	}
	if rcode := metaRcode(req.Question[0].Qtype); rcode != 0 {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		if opt != nil {
			m.Extra = []dns.RR{s.replyOPT(opt)}
		}
		return []*dns.Msg{m}, reply{}, rcode
	}
	var ecsPfx netip.Prefix
	if ecs != nil {
		a, _ := netip.AddrFromSlice(ecs.Address)
		if ecs.Family == familyIPv4 {
			a = a.Unmap()
		}
		ecsPfx = netip.PrefixFrom(a, int(ecs.SourceNetmask))
	}
	client := clientPrefix(src, ecsPfx)
	r := s.answer(st, request{msg: req, src: src, ecs: ecs, client: client, tcp: tcp, loc: loc, turn: turn})
	for _, m := range r.variants {
		m.Compress = true
		if opt == nil {
			continue
		}
		o := s.replyOPT(opt)
		if ecs != nil {
			scope := uint8(0)
			if ecs.SourceNetmask > 0 {
				scope = ecsScope(ecs.Family, ecs.SourceNetmask, client, r.scope)
			}
			o.Option = append(o.Option, &dns.EDNS0_SUBNET{
				Code: dns.EDNS0SUBNET, Family: ecs.Family, SourceNetmask: ecs.SourceNetmask,
				SourceScope: scope, Address: ecs.Address,
			})
		}
		m.Extra = append(m.Extra, o)
	}
	return r.variants, r, r.variants[0].Rcode
}

// queryTSIG returns req's TSIG record, nil if it has none; ok is false if it has one anywhere
// but as the last additional record, or more than one (RFC 8945 section 5.1: FORMERR), or one
// that cannot be interpreted (section 5.2: FORMERR): without RDATA, which miekg/dns reads as a
// TSIG with every field empty (answered BADKEY, its algorithm would be echoed as no name at
// all, a reply that does not parse), or of a class other than ANY (section 4.2).
func queryTSIG(req *dns.Msg) (tsig *dns.TSIG, ok bool) {
	for _, rrs := range [][]dns.RR{req.Answer, req.Ns} {
		for _, rr := range rrs {
			if rr.Header().Rrtype == dns.TypeTSIG {
				return nil, false
			}
		}
	}
	for i, rr := range req.Extra {
		if rr.Header().Rrtype != dns.TypeTSIG {
			continue
		}
		t, isTSIG := rr.(*dns.TSIG)
		if !isTSIG || i != len(req.Extra)-1 || t.Hdr.Rdlength == 0 || t.Hdr.Class != dns.ClassANY {
			return nil, false
		}
		tsig = t
	}
	return tsig, true
}

// badKey is the reply to a query signed with TSIG: the server holds no keys, so the key is
// unknown whatever it is, which is NOTAUTH with a TSIG of error BADKEY, unsigned (no MAC), as
// the last record (RFC 8945 sections 5.2.1 and 5.3.2). Answered as if unsigned, the reply
// would be thrown away by a client that signs to make sure of it, with no word of why.
func (s *Server) badKey(req *dns.Msg, opt *dns.OPT, t *dns.TSIG) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeNotAuth)
	m.Compress = true
	if opt != nil {
		m.Extra = append(m.Extra, s.replyOPT(opt))
	}
	m.Extra = append(m.Extra, &dns.TSIG{
		Hdr:       dns.RR_Header{Name: t.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: t.Algorithm, TimeSigned: t.TimeSigned, Fudge: t.Fudge,
		OrigId: req.Id, Error: dns.RcodeBadKey,
	})
	return m
}

// misplacedOPT reports whether req has an OPT record where RFC 6891 section 6.1.1 allows
// none: in the answer or authority section (the OPT is a pseudo-RR of the additional data
// section, one per message), or, as opt, the additional section's, with an owner other than
// the root (it MUST be 0). BIND and NSD answer such a query FORMERR; miekg/dns reads it, and
// it was answered, an OPT in the answer section as if the query had no EDNS. The fast path
// (parseQuery) takes neither shape.
func misplacedOPT(req *dns.Msg, opt *dns.OPT) bool {
	if opt != nil && opt.Hdr.Name != "." {
		return true
	}
	for _, rrs := range [][]dns.RR{req.Answer, req.Ns} {
		for _, rr := range rrs {
			if rr.Header().Rrtype == dns.TypeOPT {
				return true
			}
		}
	}
	return false
}

// formErrOPT is the FORMERR reply to req, whose OPT record opt is malformed (or not the only
// one, or misplaced: misplacedOPT): the question as asked and an OPT record without options
// (RFC 6891 section 7), as optionFormErr writes it for a query miekg/dns does not read; no
// OPT when opt is nil (the query's only OPT is outside the additional section).
func (s *Server) formErrOPT(req *dns.Msg, opt *dns.OPT) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeFormatError)
	if opt != nil {
		m.Extra = []dns.RR{s.replyOPT(opt)}
	}
	return m
}

// replyOPT is the OPT record of a reply to a query with the OPT record opt: version 0, the
// server's UDP size and the query's DO bit, which every reply copies (RFC 3225 section 3),
// BADVERS and FORMERR too.
func (s *Server) replyOPT(opt *dns.OPT) *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(uint16(s.cfg.MaxUDPSize))
	o.SetDo(opt.Do())
	return o
}

// validECS checks an ECS option as RFC 7871 section 6 asks.
func validECS(e *dns.EDNS0_SUBNET) bool {
	var bits int
	switch e.Family {
	case familyIPv4:
		bits = 32
	case familyIPv6:
		bits = 128
	default:
		return false
	}
	if int(e.SourceNetmask) > bits || e.SourceScope != 0 {
		return false
	}
	a, ok := netip.AddrFromSlice(e.Address)
	if !ok {
		return false
	}
	if bits == 32 {
		a = a.Unmap()
		if !a.Is4() {
			return false
		}
	}
	p, err := a.Prefix(int(e.SourceNetmask))
	return err == nil && p.Addr() == a
}

// patch turns a cached reply into the reply to query p.
func patch(out, p []byte, q *query, e *entry) {
	out[0], out[1] = p[0], p[1]
	out[2] = out[2]&^0x01 | p[2]&0x01 // RD
	out[3] = out[3]&^0x10 | p[3]&0x10 // CD
	copy(out[headerLen:q.nameEnd], p[headerLen:q.nameEnd])
	if e.ecsAddrLen > 0 {
		copy(out[len(out)-e.ecsAddrLen:], q.ecsAddr)
	}
}

// tooLong answers a datagram longer than udpBufLen (p is its start) with FORMERR (NOTIMP for
// another opcode); no query is that long, and the rest of it was never read.
func (s *Server) tooLong(w *worker, p []byte) []byte {
	if len(p) < headerLen || p[2]&0x80 != 0 {
		s.m.dropped.WithLabelValues("long").Inc()
		return nil
	}
	rcode := dns.RcodeFormatError
	if p[2]&0x78 != 0 {
		rcode = dns.RcodeNotImplemented // as for a shorter one (handleUDP) and over TCP
	}
	s.m.queries.WithLabelValues("other", rcodeLabel(rcode)).Inc()
	return headerReply(w.out[:0], p, rcode)
}

// headerReply is a bare header with rcode: no question, no records, 12 bytes. RD and CD are
// copied for a QUERY only, as miekg/dns's SetReply does for the TCP path: they are defined for
// no other opcode, and ISC's compliance test (genreport's opcodeflg) flags a NOTIMP that
// echoes them.
func headerReply(dst, p []byte, rcode int) []byte {
	flags, low := 0x80|p[2]&0x78, byte(rcode&0xF)
	if p[2]&0x78 == 0 { // opcode QUERY
		flags |= p[2] & 0x01
		low |= p[3] & 0x10
	}
	dst = append(dst, p[0], p[1], flags, low, 0, 0, 0, 0, 0, 0, 0, 0)
	return dst
}

// slipReply is the query's header and question with QR and TC set and, for a query with EDNS,
// an OPT record (RFC 6891 section 7) with the query's DO bit and its ECS option echoed at scope
// 0 (RFC 7871 section 7.2.1): never larger than the query.
func slipReply(dst, p []byte, q *query, maxUDP int) []byte {
	dst = append(dst, p[:q.nameEnd+4]...)
	dst[2] = 0x80 | 0x02 | p[2]&0x01 // QR, TC, RD
	dst[3] = 0
	for i := 6; i < headerLen; i++ {
		dst[i] = 0
	}
	if !q.edns {
		return dst
	}
	dst[11] = 1 // ARCOUNT
	var flags byte
	if q.do {
		flags = 0x80
	}
	rdlen := 0
	if q.ecs {
		rdlen = 8 + len(q.ecsAddr)
	}
	dst = append(dst, 0, 0, typeOPT, byte(maxUDP>>8), byte(maxUDP), 0, 0, flags, 0, byte(rdlen>>8), byte(rdlen))
	if q.ecs {
		n := 4 + len(q.ecsAddr)
		dst = append(dst, 0, optionECS, byte(n>>8), byte(n), byte(q.ecsFamily>>8), byte(q.ecsFamily), q.ecsSource, 0)
		dst = append(dst, q.ecsAddr...)
	}
	return dst
}
