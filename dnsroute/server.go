// Package dnsroute is Meridian's authoritative DNS server for the CDN zone: it answers each
// client with the nearest healthy, unloaded PoP from a pre-packed answer cache, and rate limits
// responses per client prefix.
package dnsroute

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
	"github.com/meridian-cdn/meridian/internal/reuseport"
	"github.com/meridian-cdn/meridian/wire"
)

// Server is an authoritative DNS server for one zone.
type Server struct {
	cfg    Config
	zone   *zone
	geo    *geo.DB
	fleet  Fleet
	static *StaticFleet // the fleet built from the config; nil when Config.Fleet was given
	policy atomic.Pointer[wire.RoutingPolicy]
	shed   geo.Shedder
	lat    *latencyMap // real-user measurements (fed from NATS by a live fleet)
	rl     *rateLimiter
	m      *metrics
	rr     atomic.Uint32 // rotation counter for uncached answers

	// coarseNow is the wall clock in Unix nanoseconds, refreshed by Serve every
	// coarseTick when Config.Clock is nil: reading the clock per query costs more than the
	// rest of a cache hit on some virtual machines. Zero means read the clock.
	coarseNow atomic.Int64
	userClock bool

	st   atomic.Pointer[state]
	stMu sync.Mutex // serialises state rebuilds

	ready     chan struct{}
	readyOnce sync.Once
	addrMu    sync.Mutex // guards udpAddr, tcpAddr and adminAddr
	udpAddr   net.Addr
	tcpAddr   net.Addr
	adminAddr net.Addr
}

// New validates cfg and builds a server; it opens the MMDB but starts nothing.
func New(cfg Config) (*Server, error) {
	c, err := cfg.prepare()
	if err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	s := &Server{cfg: c, zone: newZone(c), geo: c.Geo, fleet: c.Fleet, m: newMetrics(), ready: make(chan struct{}), userClock: cfg.Clock != nil,
		lat: newLatencyMap(0, 0)}
	if s.geo == nil {
		if s.geo, err = geo.Open(c.MMDB); err != nil {
			return nil, fmt.Errorf("dns config: mmdb: %w", err)
		}
	}
	if s.fleet == nil {
		s.static = NewStaticFleet(c.Nodes())
		s.fleet = s.static
	}
	s.m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meridian_dns_latency_changes_total",
		Help: "Changes of some client network's RTT order of PoPs in the latency map; each makes that network's cached answers stale, and no other's.",
	}, func() float64 { return float64(s.lat.changes.Load()) }))
	s.rl = newRateLimiter(c.RateLimit)
	// A fraction shapes the load for as long as resolvers keep the answers that carried it.
	s.shed.Lag, s.shed.Now = c.TTL, c.Clock
	pol := c.Policy
	s.policy.Store(&pol)
	s.st.Store(s.buildState(c.Clock()))
	return s, nil
}

// StaticFleet returns the fleet built from the config file, or nil when Config.Fleet was set.
func (s *Server) StaticFleet() *StaticFleet { return s.static }

// Registry is the server's own Prometheus registry.
func (s *Server) Registry() *prometheus.Registry { return s.m.reg }

// SetPolicy swaps in a new routing policy; an invalid one is refused and the old one stays.
func (s *Server) SetPolicy(p wire.RoutingPolicy) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("set routing policy: %w", err)
	}
	s.policy.Store(&p)
	s.invalidate()
	return nil
}

// ShedShare is the share of its clients PoP pop currently hands to the next PoP (0 to
// geo.MaxShed), as the shedder holds it.
func (s *Server) ShedShare(pop string) float64 { return s.shed.Fraction(pop) }

// invalidate rebuilds the state, dropping the answer cache.
func (s *Server) invalidate() {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	s.st.Store(s.buildState(s.cfg.Clock()))
}

// current returns the state valid at now, rebuilding it after a fleet change or when a
// heartbeat has gone stale.
func (s *Server) current(now time.Time) *state {
	st := s.st.Load()
	select {
	case <-st.changed:
	default:
		if !now.After(st.validUntil) {
			return st
		}
	}
	s.stMu.Lock()
	defer s.stMu.Unlock()
	if cur := s.st.Load(); cur != st {
		return cur
	}
	next := s.buildState(now)
	if next.outcome == st.outcome {
		// Same answers: keep the cache (heartbeats that moved load within a quantum).
		next.cache, next.netCache = st.cache, st.netCache
		s.m.stateKept.Inc()
	} else {
		s.m.stateDropped.Inc()
	}
	s.st.Store(next)
	return next
}

// coarseTick is how often Serve refreshes coarseNow; heartbeat and rate limit arithmetic
// does not need finer time.
const coarseTick = 5 * time.Millisecond

// now is the server's idea of the time: Config.Clock, or the coarse clock while serving.
func (s *Server) now() time.Time {
	if !s.userClock {
		if ns := s.coarseNow.Load(); ns != 0 {
			return time.Unix(0, ns)
		}
	}
	return s.cfg.Clock()
}

// tickClock keeps coarseNow current until ctx ends.
func (s *Server) tickClock(ctx context.Context) {
	t := time.NewTicker(coarseTick)
	defer t.Stop()
	defer s.coarseNow.Store(0)
	for {
		s.coarseNow.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Ready is closed once Serve (or Run) has its sockets serving.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addrs returns the UDP and TCP addresses being served (nil before Ready).
func (s *Server) Addrs() (udp, tcp net.Addr) {
	s.addrMu.Lock()
	defer s.addrMu.Unlock()
	return s.udpAddr, s.tcpAddr
}

// AdminAddr returns the admin listener's address (nil until Run has opened it).
func (s *Server) AdminAddr() net.Addr {
	s.addrMu.Lock()
	defer s.addrMu.Unlock()
	return s.adminAddr
}

// Run listens on Config.Listen (UDP and TCP) and Config.AdminListen, and serves until ctx
// ends; it returns after everything it started has stopped.
func (s *Server) Run(ctx context.Context) error {
	udps, tcp, err := listenN(ctx, s.cfg.Listen, s.workers())
	if err != nil {
		return err
	}
	closeAll := func() {
		for _, u := range udps {
			u.Close()
		}
		tcp.Close()
	}
	var wg sync.WaitGroup
	var admin *http.Server
	if s.cfg.AdminListen != "" {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.AdminListen)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen admin %s: %w", s.cfg.AdminListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
		wg.Go(func() {
			if err := admin.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.cfg.Logger.Error("dns admin listener failed", "err", err)
			}
		})
		s.addrMu.Lock()
		s.adminAddr = ln.Addr()
		s.addrMu.Unlock()
		s.cfg.Logger.Info("dns admin listening", "addr", ln.Addr().String())
	}
	s.cfg.Logger.Info("dns serving", "zone", s.cfg.Zone, "udp", udps[0].LocalAddr().String(), "tcp", tcp.Addr().String(), "udp_sockets", len(udps))
	err = s.serve(ctx, udps, tcp)
	if admin != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		admin.Shutdown(sctx)
		cancel()
	}
	wg.Wait()
	return err
}

// listen opens UDP and TCP on the same address; with port 0 the TCP port follows the UDP one.
func listen(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	udps, tcp, err := listenN(ctx, addr, 1)
	if err != nil {
		return nil, nil, err
	}
	return udps[0], tcp, nil
}

// listenN opens n UDP sockets sharing addr (SO_REUSEPORT where the system has it, else one)
// and a TCP listener on the same port.
func listenN(ctx context.Context, addr string, n int) ([]net.PacketConn, net.Listener, error) {
	if !reuseport.Available || n < 1 {
		n = 1
	}
	// SO_REUSEPORT always (where the platform has it): one socket per worker, and a new
	// process can bind the same address before the old one exits (restarts lose nothing).
	lc := reuseport.Config
	closeAll := func(cs []net.PacketConn) {
		for _, c := range cs {
			c.Close()
		}
	}
	for attempt := 0; ; attempt++ {
		first, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		udps := []net.PacketConn{first}
		bound := first.LocalAddr().String()
		for len(udps) < n {
			c, err := lc.ListenPacket(ctx, "udp", bound)
			if err != nil {
				closeAll(udps)
				return nil, nil, fmt.Errorf("listen udp %s: %w", bound, err)
			}
			udps = append(udps, c)
		}
		tcp, err := lc.Listen(ctx, "tcp", bound)
		if err == nil {
			return udps, tcp, nil
		}
		closeAll(udps)
		if _, port, _ := net.SplitHostPort(addr); port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("listen tcp %s: %w", addr, err)
		}
	}
}

// Serve answers queries on udp and tcp (either may be nil) until ctx ends, then closes them;
// it returns after every goroutine it started has exited.
func (s *Server) Serve(ctx context.Context, udp net.PacketConn, tcp net.Listener) error {
	var udps []net.PacketConn
	if udp != nil {
		udps = []net.PacketConn{udp}
	}
	return s.serve(ctx, udps, tcp)
}

// workers is the number of UDP readers (Config.UDPWorkers, default GOMAXPROCS).
func (s *Server) workers() int {
	if s.cfg.UDPWorkers > 0 {
		return s.cfg.UDPWorkers
	}
	return runtime.GOMAXPROCS(0)
}

// serve is Serve over several UDP sockets sharing one address: with one socket, all workers
// read it; with several, one worker each.
func (s *Server) serve(ctx context.Context, udps []net.PacketConn, tcp net.Listener) error {
	if len(udps) == 0 && tcp == nil {
		return errors.New("serve dns: no sockets")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)

	var tcpSrv *dns.Server
	tcpUp := make(chan struct{})
	if tcp != nil {
		tcpSrv = &dns.Server{
			Listener: tcp, Handler: dns.HandlerFunc(s.serveTCP),
			ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second },
			NotifyStartedFunc: func() { close(tcpUp) },
		}
		wg.Go(func() {
			if err := tcpSrv.ActivateAndServe(); err != nil {
				errc <- fmt.Errorf("serve dns tcp: %w", err)
				cancel()
			}
		})
	} else {
		close(tcpUp)
	}
	perSocket := 1
	if len(udps) == 1 {
		perSocket = s.workers()
	}
	for _, udp := range udps {
		for range perSocket {
			wg.Go(func() { s.serveUDP(ctx, udp) })
		}
	}
	if !s.userClock {
		s.coarseNow.Store(time.Now().UnixNano())
		wg.Go(func() { s.tickClock(ctx) })
	}
	if s.geo.Path() != "" && s.cfg.MMDBReload > 0 {
		wg.Go(func() { s.watchMMDB(ctx) })
	}
	select {
	case <-tcpUp:
		s.addrMu.Lock()
		if len(udps) > 0 {
			s.udpAddr = udps[0].LocalAddr()
		}
		if tcp != nil {
			s.tcpAddr = tcp.Addr()
		}
		s.addrMu.Unlock()
		s.readyOnce.Do(func() { close(s.ready) })
	case <-ctx.Done():
	}

	<-ctx.Done()
	for _, udp := range udps {
		udp.SetReadDeadline(time.Now()) // unblocks the workers' reads
	}
	if tcpSrv != nil {
		select {
		case <-tcpUp:
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := tcpSrv.ShutdownContext(sctx); err != nil {
				s.cfg.Logger.Warn("dns tcp shutdown", "err", err)
			}
			scancel()
		default:
			tcp.Close()
		}
	}
	wg.Wait()
	for _, udp := range udps {
		udp.Close()
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// watchMMDB reloads the database when its file changes.
func (s *Server) watchMMDB(ctx context.Context) {
	t := time.NewTicker(s.cfg.MMDBReload)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := s.geo.Reload()
		switch {
		case err != nil:
			s.m.reloadErr.Inc()
			s.cfg.Logger.Warn("dns mmdb reload failed; keeping the old copy", "err", err)
		case ok:
			s.cfg.Logger.Info("dns mmdb reloaded", "path", s.geo.Path())
			s.invalidate()
		}
	}
}

// ReloadMMDB reloads the MMDB file now if it changed, dropping the answer cache if so.
func (s *Server) ReloadMMDB() (bool, error) {
	ok, err := s.geo.Reload()
	if ok {
		s.invalidate()
	}
	return ok, err
}

// worker holds one UDP reader's buffers.
type worker struct {
	in, out, key []byte
	netKey       []byte // the key of the client's database network in netCache
	n            uint32 // queries handled, for sampling the latency of cache hits
}

// hitSample is how often a cache hit's latency is measured (1 in hitSample): two clock reads
// would double the cost of a hit.
const hitSample = 64

func newWorker() *worker {
	return &worker{in: make([]byte, 4096), out: make([]byte, 0, 4096), key: make([]byte, 0, 320), netKey: make([]byte, 0, 320)}
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
		if resp := s.handleUDP(w, w.in[:n], ua.AddrPort()); resp != nil {
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
			return slipReply(w.out[:0], p, &q)
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
			if len(v) <= udpLimit(q.edns, q.udpSize, s.cfg.MaxUDPSize) {
				out := append(w.out[:0], v...)
				patch(out, p, &q, e)
				s.m.hits.Add(1)
				e.queries.Inc()
				if e.answers != nil {
					e.answers.Inc()
				}
				if !start.IsZero() {
					s.m.latency.Observe(time.Since(start).Seconds())
				}
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
			w.netKey = appendKey(w.netKey[:0], p, &q, l.Network)
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
	req := new(dns.Msg)
	if err := req.Unpack(p); err != nil {
		s.m.queries.WithLabelValues("other", rcodeLabel(dns.RcodeFormatError)).Inc()
		return headerReply(w.out[:0], p, dns.RcodeFormatError)
	}
	limit := 512
	if o := req.IsEdns0(); o != nil {
		limit = udpLimit(true, o.UDPSize(), s.cfg.MaxUDPSize)
	}
	out, r, rcode := s.resolve(st, req, src.Addr(), loc, false)
	if out == nil {
		s.m.queries.WithLabelValues("other", rcodeLabel(rcode)).Inc()
		return headerReply(w.out[:0], p, rcode)
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
	e := &entry{variants: packed, slot: slot, gen: gen, queries: s.m.queries.WithLabelValues(qtypeLabel(qt), rcodeLabel(rcode))}
	if r.pop != "" && rcode == dns.RcodeSuccess {
		e.answers = s.m.answers.WithLabelValues(r.pop)
	}
	i := 0
	if parsed && r.cacheable && rcode == dns.RcodeSuccess && !r.failOpen {
		e.ecsAddrLen = len(q.ecsAddr)
		st.cache.put(w.key, e, now.UnixNano())
		if loc != nil && !r.perClient {
			st.netCache.put(w.netKey, &entry{variants: packed, ecsAddrLen: e.ecsAddrLen, queries: e.queries, answers: e.answers}, now.UnixNano())
		}
		i = int(e.next.Add(1)-1) % len(packed)
	} else if len(packed) > 1 {
		i = int(s.rr.Add(1)-1) % len(packed)
	}
	s.account(e, r)
	b := packed[i]
	if len(b) > limit {
		m := out[i]
		m.Truncate(limit)
		if tb, err := m.Pack(); err == nil {
			b = tb
		}
	}
	s.m.latency.Observe(time.Since(start).Seconds())
	return append(w.out[:0], b...)
}

// netHit answers from the answer for the client's database network (netCache, key in
// w.netKey) when there is one and it holds for this client, whose network is network with
// latency generation gen in slot: the network has no measurements (else the answer is the
// client's own). It caches the answer under the client's key too, so that the next query
// is an ordinary hit. nil means no such answer.
func (s *Server) netHit(st *state, w *worker, p []byte, q *query, network netip.Prefix, slot, gen uint32, now int64) []byte {
	ne := st.netCache.get(w.netKey, now)
	if ne == nil || s.lat.Has(network) {
		return nil
	}
	e := &entry{variants: ne.variants, ecsAddrLen: ne.ecsAddrLen, slot: slot, gen: gen, queries: ne.queries, answers: ne.answers}
	v := e.pick()
	if len(v) > udpLimit(q.edns, q.udpSize, s.cfg.MaxUDPSize) {
		return nil
	}
	st.cache.put(w.key, e, now)
	out := append(w.out[:0], v...)
	patch(out, p, q, e)
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
	out, r, rcode := s.resolve(st, req, src, nil, true)
	if out == nil {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		m.Question = nil
		s.m.queries.WithLabelValues("other", rcodeLabel(rcode)).Inc()
		w.WriteMsg(m)
		return
	}
	e := &entry{queries: s.m.queries.WithLabelValues(qtypeLabel(req.Question[0].Qtype), rcodeLabel(rcode))}
	if r.pop != "" && rcode == dns.RcodeSuccess {
		e.answers = s.m.answers.WithLabelValues(r.pop)
	}
	s.account(e, r)
	w.WriteMsg(out[int(s.rr.Add(1)-1)%len(out)])
	s.m.latency.Observe(time.Since(start).Seconds())
}

// resolve answers a parsed query. A nil result means reply with only a header and rcode
// (malformed or unsupported queries), so that garbage never earns more bytes than it sent.
func (s *Server) resolve(st *state, req *dns.Msg, src netip.Addr, loc *geo.Location, tcp bool) ([]*dns.Msg, reply, int) {
	if req.Opcode != dns.OpcodeQuery {
		return nil, reply{}, dns.RcodeNotImplemented
	}
	if len(req.Question) != 1 {
		return nil, reply{}, dns.RcodeFormatError
	}
	var opt *dns.OPT
	var ecs *dns.EDNS0_SUBNET
	for _, rr := range req.Extra {
		o, ok := rr.(*dns.OPT)
		if !ok {
			continue
		}
		if opt != nil {
			return nil, reply{}, dns.RcodeFormatError // RFC 6891 section 6.1.1
		}
		opt = o
		for _, op := range o.Option {
			sub, ok := op.(*dns.EDNS0_SUBNET)
			if !ok {
				continue
			}
			if ecs != nil || !validECS(sub) {
				return nil, reply{}, dns.RcodeFormatError
			}
			ecs = sub
		}
	}
	if opt != nil && opt.Version() != 0 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeBadVers)
		m.SetEdns0(uint16(s.cfg.MaxUDPSize), false)
		return []*dns.Msg{m}, reply{}, dns.RcodeBadVers
	}
	var ecsPfx netip.Prefix
	if ecs != nil {
		a, _ := netip.AddrFromSlice(ecs.Address)
		if ecs.Family == familyIPv4 {
			a = a.Unmap()
		}
		ecsPfx = netip.PrefixFrom(a, int(ecs.SourceNetmask))
	}
	r := s.answer(st, request{msg: req, src: src, ecs: ecs, client: clientPrefix(src, ecsPfx), tcp: tcp, loc: loc})
	for _, m := range r.variants {
		m.Compress = true
		if opt == nil {
			continue
		}
		o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		o.SetUDPSize(uint16(s.cfg.MaxUDPSize))
		o.SetDo(opt.Do())
		if ecs != nil {
			scope := uint8(0)
			if ecs.SourceNetmask > 0 {
				scope = uint8(r.scope)
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

// headerReply is a bare header with rcode: no question, no records, 12 bytes.
func headerReply(dst, p []byte, rcode int) []byte {
	dst = append(dst, p[0], p[1], 0x80|p[2]&0x79, byte(rcode&0xF), 0, 0, 0, 0, 0, 0, 0, 0)
	return dst
}

// slipReply is the query's header and question with QR and TC set: shorter than the query.
func slipReply(dst, p []byte, q *query) []byte {
	dst = append(dst, p[:q.nameEnd+4]...)
	dst[2] = 0x80 | 0x02 | p[2]&0x01 // QR, TC, RD
	dst[3] = 0
	for i := 6; i < headerLen; i++ {
		dst[i] = 0
	}
	return dst
}
