// Package dnsroute is Meridian's authoritative DNS server for the CDN zone: it answers each
// client with the nearest healthy, unloaded PoP from a pre-packed answer cache, and rate limits
// responses per client prefix.
package dnsroute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

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

	tcpSources *sourceLimiter // TCP connections open per client address

	// coarseNow is the wall clock in Unix nanoseconds, refreshed by Serve every
	// coarseTick when Config.Clock is nil: reading the clock per query costs more than the
	// rest of a cache hit on some virtual machines. Zero means read the clock.
	coarseNow atomic.Int64
	userClock bool

	st   atomic.Pointer[state]
	stMu sync.Mutex // serialises state rebuilds; guards loadLevel
	// loadLevel is each PoP's utilisation as routing compares it (see buildState), kept from
	// one state to the next for its hysteresis.
	loadLevel map[string]float64

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
		lat: newLatencyMap(c.LatencyRecords, 0), tcpSources: newSourceLimiter(c.MaxTCPConnectionsPerSource)}
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
	s.m.reg.MustRegister(newPopCollector(s))
	if h, ok := s.fleet.(liveFleetHealth); ok {
		s.m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meridian_dns_nats_connected",
			Help: "1 while the server's NATS connection is up; 0 while it answers from the last fleet view it saw.",
		}, func() float64 {
			if h.connected() {
				return 1
			}
			return 0
		}))
	}
	return s, nil
}

// healthz answers 200 while the server answers queries: "ok", or "degraded: " and why its fleet
// may be out of date (NATS away, the registry not loaded yet). A server cut off from NATS still
// answers from the last fleet view it saw, which is the right service, so a load balancer keeps
// it; the body, and meridian_dns_nats_connected, tell an operator.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if h, ok := s.fleet.(liveFleetHealth); ok {
		if d := h.degraded(); d != "" {
			fmt.Fprintln(w, "degraded: "+d)
			return
		}
	}
	fmt.Fprintln(w, "ok")
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
		next.cache = st.cache
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
	// Legal, and resolved (the resolver asks for the rest of the chain), but resolvers bound
	// how far they follow one (PowerDNS Recursor: 10 CNAMEs by default): the operator may
	// not know the chain is this long.
	for _, c := range s.zone.longChains() {
		s.cfg.Logger.Warn("dns CNAME chain longer than an answer follows; resolvers ask for the rest",
			"cnames", len(c)-1, "followed", maxCNAMEChain, "chain", strings.Join(c, " -> "))
	}
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
		// SO_REUSEPORT, as the DNS sockets: a new process started while this one still
		// serves must bind the admin address too, or it exits and the restart fails.
		ln, err := reuseport.Listen(ctx, s.cfg.AdminListen)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen admin %s: %w", s.cfg.AdminListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", s.healthz)
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
		// Bounded (RFC 7766 section 10): each connection holds a file descriptor for up to
		// 10 s idle, and at the process's limit miekg/dns retries a failing accept without
		// a pause, while nothing else of the server can open a file or socket.
		// Beyond the bound, connections wait in the kernel's accept queue. Inside it, one
		// client address gets at most MaxTCPConnectionsPerSource of them, so that it cannot
		// take them all; beyond that its connections are reset as they are accepted.
		perSource := sourceListener{Listener: lingerListener{tcp}, lim: s.tcpSources,
			refused: s.m.dropped.WithLabelValues("tcp_per_source")}
		limited := netutil.LimitListener(perSource, s.cfg.MaxTCPConnections)
		tcpSrv = &dns.Server{
			Listener: limited, Handler: dns.HandlerFunc(s.serveTCP), DecorateReader: s.decorateTCP, MsgAcceptFunc: acceptTCP,
			ReadTimeout: tcpReadTimeout, IdleTimeout: func() time.Duration { return tcpIdleTimeout },
			NotifyStartedFunc: func() { close(tcpUp) },
		}
		wg.Go(func() {
			// Once the server is stopping, an error is the stop's: a stop that came before
			// the TCP server started closes its listener under it (below), and it returns
			// the closed listener's error, which made `meridian dns` exit 1 on SIGTERM.
			if err := tcpSrv.ActivateAndServe(); err != nil && ctx.Err() == nil {
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

// tcpWriteTimeout bounds how long one TCP answer may wait for the client to take it.
const tcpWriteTimeout = 5 * time.Second

// tcpReadTimeout bounds the wait for a connection's first query, and tcpIdleTimeout the wait
// for each later one (dns.Server's ReadTimeout and IdleTimeout); each query must arrive whole
// within it.
const (
	tcpReadTimeout = 5 * time.Second
	tcpIdleTimeout = 10 * time.Second
)

// lingerListener's connections close gracefully. miekg/dns closes a connection after
// MaxTCPQueries queries (and tcpReader after maxBadTCP malformed ones); a client that
// pipelined more has queries still unread then, and closing a socket with unread data makes
// the kernel send a reset, which discards the answers the client has not read yet.
type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		return lingerConn{tc}, nil
	}
	return c, err
}

// tcpLinger bounds how long a closing connection waits for the client to close its side.
const tcpLinger = time.Second

type lingerConn struct{ *net.TCPConn }

// Write gives up after tcpWriteTimeout: miekg/dns sets no write deadline (its
// Server.WriteTimeout is unused), so a client that does not read held the connection's
// goroutine, and the server's shutdown, for good.
func (c lingerConn) Write(b []byte) (int, error) {
	c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
	return c.TCPConn.Write(b)
}

// reset closes the connection at once with a TCP reset, without lingering.
func (c lingerConn) reset() error {
	c.SetLinger(0)
	return c.TCPConn.Close()
}

// Close sends FIN after the answers written, discards what the client still sends until it
// closes its side (having read them) or tcpLinger passes, and then closes.
func (c lingerConn) Close() error {
	if c.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(tcpLinger))
		io.Copy(io.Discard, c.TCPConn)
	}
	return c.TCPConn.Close()
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
