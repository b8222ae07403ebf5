// Package edge is Meridian's HTTP cache node: the request pipeline (route, key, lookup, deliver),
// fills through request collapsing and the peer and shield tiers, purge application, and the
// node's load report.
package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/edge/compress"
	"github.com/meridian-cdn/meridian/edge/h2"
	"github.com/meridian-cdn/meridian/edge/http1"
	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/sendtimeout"
	"github.com/meridian-cdn/meridian/edge/store"
	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/meridian-cdn/meridian/internal/reuseport"
	"github.com/meridian-cdn/meridian/internal/writegather"
	"github.com/meridian-cdn/meridian/origin/fetch"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// Node is one edge cache node. Build it with New, then Run or Serve it.
type Node struct {
	cfg   Config
	name  string // "<pop>-<node>": this cache's name in Cache-Status and Via
	via11 string // "1.1 <name>": the Via value of an HTTP/1.1 hop with no Via before it
	log   *slog.Logger
	clock func() time.Time
	since func(time.Time) time.Duration // the time since a reading of clock

	hosts atomic.Pointer[map[string]*hostState] // swapped by swapHosts only
	// keyEras are the hosts' past key options, which URL purges name copies under too.
	keyEras keyEras
	tiers   atomic.Pointer[tierSet]
	// peerKeys signs and verifies fill requests between nodes (hopauth.go); nil means none.
	peerKeys atomic.Pointer[wire.PeerKeyring]

	store *store.Store
	// invalidations are the URLs this node invalidated after unsafe requests (invalidations.go).
	invalidations invalidations
	fill          *filler // owns every fill, the upstream clients and background revalidations
	metrics       *metrics
	// decodes bounds the windows of answers decoded for clients (cache.decode_window_bytes,
	// encoding.go).
	decodes *compress.Budget

	draining atomic.Bool
	// pastLameDuck is set once a stop's lame duck is over: the node takes no new requests then
	// but those whose heads were arriving, and treats its cache as lagging (purgeLagging), so
	// that a restart's new process holds its acks only for the lame duck (ackHold), not for
	// the whole shutdown_timeout its requests in flight may take.
	pastLameDuck atomic.Bool
	ready        chan struct{}
	addr         atomic.Pointer[string]
	httpsAddr    atomic.Pointer[string]
	altSvc       atomic.Pointer[string] // Alt-Svc value advertising HTTP/3, when it is served
	adminAddr    string                 // set before the fleet is joined

	registrar  atomic.Pointer[fleet.Registrar] // set while the node is in a fleet
	fleetReady chan struct{}
	// purgeSub is the fleet's purge subscriber, set before serving starts when the node joins
	// a fleet; its CaughtUpAt bounds how stale the cache may be (purgeorder.go).
	purgeSub atomic.Pointer[purge.Subscriber]
	// purgeBase is set once what the node stored before its purge subscription started is
	// marked stale (joinFleet): the purges already in the stream then were never applied here.
	purgeBase atomic.Bool
	// The restart overlap (ackHold, registrationLapsed; fleet.go): when the registrar's last
	// answered heartbeat was sent and when one last found another process's write on the
	// node's key (nil: never). Readings of time.Now, so their monotonic clock: a step of the
	// wall clock (NTP, an operator) neither ends a hold early nor keeps a lapse from showing.
	writtenAt atomic.Pointer[time.Time]
	sharedAt  atomic.Pointer[time.Time]
	// keyLags are the purge.max_lag values registrations on the node's key carried (this
	// process's, or another's of the node), each at most wire.MaxPurgeMaxLag, with when it was
	// last seen: how long another process may serve fresh hits unconfirmed (ackHold), for as
	// long as it may still serve. Sorted by max_lag, longest first; none is shorter and seen
	// later than another (it would never count).
	keyLagsMu sync.Mutex
	keyLags   []keyLag
	// ownKey is the watch of the node's key (nil: standalone, or not joined yet).
	ownKey atomic.Pointer[ownKeyWatch]
	// registrarJS, if not nil, wraps the JetStream context the registrar writes through (a
	// test's seam: a fake that loses a heartbeat's answer while the write is stored).
	registrarJS func(jetstream.JetStream) jetstream.JetStream
	// registeredOnce closes registeredCh at the first answered heartbeat: FleetReady waits
	// for it (a process no heartbeat registered lags: registrationLapsed).
	registeredOnce sync.Once
	registeredCh   chan struct{}
	// lapse is the generation of the last answered heartbeat while the registration stands,
	// 0 once it may have lapsed (or before the first): registrationLapsed reads it on every
	// hit, where a clock reading per hit is what issue 15 took out. lapseTimer (lapseGen's)
	// sets it to 0 the bucket's TTL after that heartbeat was sent; the registrar's goroutine
	// alone arms it (armLapse), the fleet's stop stops it.
	lapse      atomic.Uint64
	lapseGen   uint64
	lapseTimer *time.Timer
	// yieldedDraining is set when a heartbeat sent while draining found another process's
	// write on the node's key: the registrar left the key to it (a restart's new process),
	// whose ack hold counts this one's lame duck by its own lame_duck, which may be shorter.
	yieldedDraining atomic.Bool
	// rejoinedAt is when (n.clock) a heartbeat answered after the registration had lapsed:
	// the node lags until its purge subscription confirms after it (purgeLagging; nil: no
	// such heartbeat, or confirmed since).
	rejoinedAt atomic.Pointer[time.Time]

	// purgeSeq is the stream sequence of the last purge applied; purgeWake, made by the first
	// fill that waits for a sequence, is closed when it advances (see purgeorder.go).
	purgeSeq atomic.Uint64
	// purgeSeqAsked is at least purgeSeq, and raised to a purge's sequence before its records go
	// into the store: what fills ask fleet nodes for (purgeorder.go).
	purgeSeqAsked atomic.Uint64
	purgeMu       sync.Mutex // protects purgeWake
	purgeWake     chan struct{}
	// appliedHook, if set before any purge is applied, is called by ApplyPurge once the purge's
	// records are in the store, before purgeSeq says so (tests).
	appliedHook func()
	// keyOptsHook, if set before any purge is applied, is called by ApplyPurge of a URL purge
	// once it has read the host's key options (tests).
	keyOptsHook func()

	openConns atomic.Int64
	tunnels   tunnels    // switched WebSocket upgrades (pass.go)
	sat       saturation // in-flight requests, for the load report's saturation (saturation.go)
	rum       rum        // beacon reports from clients and the node's own RTT samples (beacon.go, rtt.go)
	h3RTT     quicRTT    // RTT samples of HTTP/3 connections (rtt.go)
	h3Conns   h3Conns    // the HTTP/3 connections, for the drain (h3.go)
	hitLat    hitWindow  // cache hits' service times, for the saturation figure (saturation.go)
	loadMu    sync.Mutex // protects lastLoad
	lastLoad  loadMark
	closed    atomic.Bool
	// sendTimeout bounds every write to a client, over each protocol: a write the client
	// takes nothing of for this long ends its connection or stream (0: sendtimeout.Default,
	// nginx's send_timeout). Tests shorten it before serving.
	sendTimeout time.Duration
	// idleTimeout closes a client connection that has had no request for this long, over
	// each protocol (0: 120 s). Tests shorten it before serving.
	idleTimeout time.Duration
	// handshakeTimeout bounds a TLS handshake on the HTTPS port (0: net/http's, from the
	// server's timeouts: tlsHandshakeTimeout). Tests shorten it before serving.
	handshakeTimeout time.Duration
}

// hostState is one configured hostname, ready for the hot path.
type hostState struct {
	cfg    wire.HostConfig
	origin *url.URL
	// originNames are the authorities by which the origin may name itself in an answer's
	// URLs, which its clients get as the host's own (redirect.go) unless keepURLs.
	originNames []originName
	// keepURLs: response_headers.origin_urls is keep, clients get those URLs as the origin
	// wrote them. Invalidation still reads them as the host's (pass.go).
	keepURLs  bool
	keyOpts   httpcache.KeyOptions
	maxObject int64
	// firstRange is the Range of a fill's first-slice request (slices.go), built once here
	// rather than formatted on every miss.
	firstRange string
	// upstreamNamed are the request_headers deny and set names, lower-case, and node the node
	// serving the host: a lookup keyed on the upstream header builds it (request.VaryHeader).
	upstreamNamed []string
	node          *Node
}

// New validates cfg and builds a node. It listens on nothing and serves nothing; its store runs
// goroutines of its own (edge/store), which Run or ServeListeners stops when it returns.
func New(cfg Config) (*Node, error) {
	realClock := cfg.Clock == nil
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid edge config: %w", err)
	}
	// Served, merged with the config bucket's and purged under the names clients send.
	cfg.Hosts = configHosts(cfg.Hosts)
	st, err := store.New(store.Config{MaxBytes: cfg.Cache.MaxBytes, Clock: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("create edge store: %w", err)
	}
	n := &Node{
		cfg:        cfg,
		name:       cfg.PoP + "-" + cfg.Node,
		log:        cfg.Logger.With("pop", cfg.PoP, "node", cfg.Node),
		clock:      cfg.Clock,
		store:      st,
		decodes:    compress.NewBudget(cfg.Cache.DecodeWindowBytes),
		ready:      make(chan struct{}),
		fleetReady: make(chan struct{}),

		registeredCh: make(chan struct{}),
	}
	n.since = func(t time.Time) time.Duration { return n.clock().Sub(t) }
	if realClock {
		// From a reading of time.Now, the monotonic clock alone: one clock read where
		// clock().Sub reads two (issue 15: a hit took seven readings).
		n.since = time.Since
	}
	n.via11 = appendVia("", 1, 1, n.name)
	n.fill = newFiller(n)
	n.metrics = newMetrics(n)
	n.h3RTT.n = n
	if err := n.SetHosts(cfg.Hosts); err != nil {
		st.Close()
		return nil, err
	}
	n.SetPeers(cfg.Peers)
	n.SetShields(cfg.Shields)
	ring, err := loadPeerKey(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	if ring != nil {
		n.peerKeys.Store(ring)
	}
	return n, nil
}

// Name is the node's cache name, "<pop>-<node>".
func (n *Node) Name() string { return n.name }

// SetHosts validates hosts and swaps them in atomically. An invalid set (one name twice among
// them, however spelt, included) is refused whole and the current one keeps serving.
func (n *Node) SetHosts(hosts []wire.HostConfig) error {
	table := make(map[string]*hostState, len(hosts))
	var errs []error
	for i, h := range hosts {
		name, err := idnhost.ToASCII(h.Host)
		if err != nil {
			errs = append(errs, fmt.Errorf("hosts[%d].%w", i, &wire.FieldError{Field: "host", Err: err}))
			continue
		}
		written := h.Host
		h.Host = name
		if err := validateHost(h, written); err != nil {
			errs = append(errs, fmt.Errorf("hosts[%d].%w", i, err))
			continue
		}
		if table[h.Host] != nil { // as Validate: which of two entries to serve is not ours to pick
			errs = append(errs, fmt.Errorf("hosts[%d].%w", i, &wire.FieldError{Field: "host", Err: fmt.Errorf("%s is listed twice", idnhost.Quote(written, h.Host))}))
			continue
		}
		u, _ := url.Parse(h.Origin) // Validate parsed it already
		u.Path = strings.TrimSuffix(u.Path, "/")
		maxObj := n.cfg.Cache.MaxObjectBytes
		if h.Cache.MaxObjectBytes > 0 {
			maxObj = h.Cache.MaxObjectBytes
		}
		hs := &hostState{
			cfg:         h,
			origin:      u,
			originNames: originNames(u, h.OriginHost),
			keepURLs:    h.ResponseHeaders.OriginURLs == wire.OriginURLsKeep,
			keyOpts: httpcache.KeyOptions{
				IgnoreQuery: h.Cache.IgnoreQuery,
				KeepParams:  h.Cache.KeepParams,
				SortQuery:   h.Cache.SortQuery,
			},
			maxObject:     maxObj,
			upstreamNamed: upstreamNames(h.RequestHeaders),
			node:          n,
		}
		hs.firstRange = "bytes=0-" + strconv.FormatInt(hs.sliceBytes()-1, 10)
		table[h.Host] = hs
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("refuse host config: %w", err)
	}
	n.swapHosts(table)
	return nil
}

// Hosts returns the hostnames currently served.
func (n *Node) Hosts() []wire.HostConfig {
	t := *n.hosts.Load()
	out := make([]wire.HostConfig, 0, len(t))
	for _, h := range t {
		out = append(out, h.cfg)
	}
	return out
}

// SetDraining marks the node draining (health answers 503, the registry says so at once, so
// DNS stops sending clients and peers stop filling from it) or not.
func (n *Node) SetDraining(d bool) {
	n.draining.Store(d)
	if r := n.registrar.Load(); r != nil {
		r.SetDraining(d)
	}
}

// Draining reports whether the node is draining.
func (n *Node) Draining() bool { return n.draining.Load() }

// Ready is closed once the node accepts requests.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Addr is the HTTP listener's address once Ready is closed.
func (n *Node) Addr() string {
	if a := n.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// Run listens on the configured addresses (with SO_REUSEPORT, so a new process can take over
// the ports before this one exits) and serves until ctx ends. Like ServeListeners, it closes
// the node whatever it returns, a failed listen included.
func (n *Node) Run(ctx context.Context) error {
	defer n.close()
	var ls Listeners
	var err error
	if ls.HTTP, err = reuseport.Listen(ctx, n.cfg.Listen); err != nil {
		return fmt.Errorf("edge listen on %s: %w", n.cfg.Listen, err)
	}
	if n.cfg.HTTPSListen != "" {
		if ls.HTTPS, ls.QUIC, err = listenHTTPS(ctx, n.cfg.HTTPSListen, !n.cfg.TLS.DisableHTTP3); err != nil {
			ls.close()
			return err
		}
	}
	if n.cfg.AdminListen != "off" {
		if ls.Admin, err = reuseport.Listen(ctx, n.cfg.AdminListen); err != nil {
			ls.close()
			return fmt.Errorf("edge admin listen on %s: %w", n.cfg.AdminListen, err)
		}
	}
	return n.ServeListeners(ctx, ls)
}

// listenHTTPS opens the TLS listener on addr and, with quic, the HTTP/3 socket on the same
// address. With port 0 the kernel picks a TCP port whose UDP twin may be taken by someone
// else, so it tries other ports a few times, as dnsroute does for its UDP/TCP pair; that UDP
// socket is opened without SO_REUSEPORT, which would share a port another process holds so
// (a fixed port keeps it, for restarts that hand the port over).
func listenHTTPS(ctx context.Context, addr string, quic bool) (net.Listener, net.PacketConn, error) {
	_, port, _ := net.SplitHostPort(addr)
	ephemeral := port == "0" || port == ""
	for attempt := 0; ; attempt++ {
		tcp, err := reuseport.Listen(ctx, addr)
		if err != nil {
			return nil, nil, fmt.Errorf("edge https listen on %s: %w", addr, err)
		}
		if !quic {
			return tcp, nil, nil
		}
		var udp net.PacketConn
		if ephemeral {
			var lc net.ListenConfig
			udp, err = lc.ListenPacket(ctx, "udp", tcp.Addr().String())
		} else {
			udp, err = reuseport.ListenPacket(ctx, tcp.Addr().String())
		}
		if err == nil {
			return tcp, udp, nil
		}
		tcp.Close()
		if !ephemeral || attempt == 10 {
			return nil, nil, fmt.Errorf("edge http/3 listen on %s: %w", tcp.Addr(), err)
		}
	}
}

// Listeners are the sockets a node serves on; nil ones are not served. ServeListeners takes
// them over: it closes every one before it returns.
type Listeners struct {
	HTTP  net.Listener   // plain HTTP/1.1 (and h2c if configured)
	HTTPS net.Listener   // TLS: HTTP/1.1 and HTTP/2
	QUIC  net.PacketConn // HTTP/3; needs HTTPS's certificates (without HTTPS, only closed)
	Admin net.Listener   // /healthz and /metrics
}

// close closes every listener in ls.
func (ls Listeners) close() {
	for _, c := range []io.Closer{ls.HTTP, ls.HTTPS, ls.QUIC, ls.Admin} {
		if c != nil {
			c.Close()
		}
	}
}

// Serve serves plain HTTP on ln and, if admin is not nil, /healthz and /metrics on admin,
// until ctx ends (see ServeListeners).
func (n *Node) Serve(ctx context.Context, ln, admin net.Listener) error {
	return n.ServeListeners(ctx, Listeners{HTTP: ln, Admin: admin})
}

// ServeListeners serves on every listener in ls until ctx ends. Then it drains: it reports
// itself draining (health 503, the registry says so, so DNS stops sending clients), keeps
// serving for LameDuck, stops accepting, lets requests in flight finish (up to ShutdownTimeout),
// stops background work, and returns once everything it started has exited. It owns the
// listeners in ls, as http.Server.Serve owns its listener: each is closed once, whatever it
// returns. It owns the node too: a node serves once, and whatever ServeListeners returns, an
// error before serving included, the node is closed (its store's goroutines, which New
// started, have stopped).
func (n *Node) ServeListeners(ctx context.Context, ls Listeners) error {
	defer n.close()
	// Each server closes its listener at its shutdown (HTTP/3's socket is closed by its
	// drain, shutdownH3: quic-go leaves a PacketConn it was given open); those no server was
	// started on are closed here.
	unserved := ls
	defer func() { unserved.close() }()
	h3Served := false
	if n.closed.Load() || ls.HTTP == nil {
		return errors.New("edge serve: already served, or no HTTP listener")
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(n.cfg.H2C)
	idleTimeout := n.idleTimeout
	if idleTimeout == 0 {
		idleTimeout = 120 * time.Second
	}
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ConnState:         n.trackConn,
			ConnContext:       n.rttConnContext,
			MaxHeaderBytes:    n.cfg.MaxHeaderBytes,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       idleTimeout,
			ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
			Protocols:         protocols,
			// OPTIONS * is the node's to answer (serveNetHTTP): net/http's own answer kept an
			// HTTP/1.0 keep-alive connection, and read a chunked body as the next request.
			DisableGeneralOptionsHandler: true,
		}
	}
	type served struct {
		shutdown func(context.Context) error
		serve    func() error
	}
	var all []served
	srv := newServer(http.HandlerFunc(n.serveNetHTTP))
	// srv serves its connections through the guard (http1.GuardConn), the fast path's hand-offs
	// and every one under http1: std alike; a switched upgrade's tunnel is the handler's.
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		http1.StopOnHijack(c, s)
		n.trackConn(c, s)
	}
	if n.cfg.HTTP1 != HTTP1Std {
		// Plain HTTP/1.1 through the fast path; every connection it hands over (a request
		// with a body, an upgrade, h2c, anything unusual) is served by srv as before.
		fast := &http1.Server{
			Handler:           n,
			Fallback:          srv,
			ConnContext:       srv.ConnContext,
			ConnState:         srv.ConnState,
			ReadHeaderTimeout: srv.ReadHeaderTimeout,
			IdleTimeout:       srv.IdleTimeout,
			WriteTimeout:      n.sendTimeout,
			MaxHeaderBytes:    srv.MaxHeaderBytes,
			ErrorLog:          srv.ErrorLog,
		}
		all = append(all, served{fast.Shutdown, func() error { return fast.Serve(n.rttListen(ls.HTTP)) }})
	} else {
		// The guard has net/http refuse an HTTP/1.0 request with Transfer-Encoding, which it
		// would frame by its Content-Length (http1.GuardConn), as the fast path's hand-offs do.
		ln := sendtimeout.Listener{Listener: http1.GuardListener{Listener: n.rttListen(ls.HTTP)}, Timeout: n.sendTimeout}
		all = append(all, served{srv.Shutdown, func() error { return srv.Serve(ln) }})
	}

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	var watchers sync.WaitGroup
	defer watchers.Wait()
	if ls.HTTPS != nil {
		certs, err := newCertStore(n.cfg.TLS, n.hostNames(), n.log)
		if err != nil {
			return fmt.Errorf("edge tls: %w", err)
		}
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			certs.watch(bg, n.cfg.TLS.ReloadInterval)
		}()
		tlsSrv := newServer(http.HandlerFunc(n.serveNetHTTP))
		tlsProtocols := new(http.Protocols)
		tlsProtocols.SetHTTP1(true)
		tlsProtocols.SetHTTP2(true)
		tlsSrv.Protocols = tlsProtocols
		tlsSrv.TLSConfig = certs.tlsConfig()
		if n.cfg.HTTP2 != HTTP2Std {
			// HTTP/2 through the edge's own server; HTTP/1.1 over TLS stays with net/http.
			(&h2.Server{
				MaxHeaderBytes: n.cfg.MaxHeaderBytes,
				IdleTimeout:    tlsSrv.IdleTimeout,
				WriteTimeout:   n.sendTimeout,
				ErrorLog:       slog.NewLogLogger(n.log.Handler(), slog.LevelError), // handler panics
				Answered:       n.h2Answered,                                        // its own 400s and 431s, logged and counted
			}).Configure(tlsSrv)
		}
		shutdownTLS := func(ctx context.Context) error {
			err := tlsSrv.Shutdown(ctx)
			if err != nil {
				tlsSrv.Close() // out of time: connections still open end now, before the store closes
			}
			return err
		}
		// net/http's writes (HTTP/1.1, and HTTP/2 with http2: std) have no timeout of their own:
		// each connection gets the send timeout beneath TLS, where a write can go on after a
		// deadline (edge/h2's sets its own and is bounded by both).
		tcpLn := writegather.Listener{Listener: sendtimeout.Listener{Listener: n.rttListen(ls.HTTPS), Timeout: n.sendTimeout}}
		// The edge does the TLS handshakes itself (tlsListener), so that HTTP/1.1 is served
		// through the guard (http1.TLSGuardConn), as on the plain port; h2 goes to
		// TLSNextProto as a *tls.Conn. tlsSrv keeps its TLSConfig, which names h2: Serve
		// then sets up net/http's HTTP/2 under http2: std, as ServeTLS did.
		hsTimeout := n.handshakeTimeout
		if hsTimeout == 0 {
			hsTimeout = netHTTPHandshakeTimeout(tlsSrv)
		}
		tlsLn := newTLSListener(tcpLn, certs.tlsConfig(), hsTimeout, n.log, n.openConns.Add)
		// A switched upgrade's tunnel is the handler's (http1.StopOnHijack), as on the plain port.
		tlsSrv.ConnState = srv.ConnState
		all = append(all, served{shutdownTLS, func() error { return tlsSrv.Serve(tlsLn) }})
		if ls.QUIC != nil {
			h3 := &http3.Server{
				Handler:        http.HandlerFunc(n.serveH3),
				TLSConfig:      http3.ConfigureTLSConfig(certs.tlsConfig()),
				QUICConfig:     &quic.Config{Allow0RTT: n.cfg.TLS.Allow0RTT},
				MaxHeaderBytes: n.cfg.MaxHeaderBytes,
				// Without it only QUIC's idle timeout applies, which a client's PINGs reset: a
				// connection with no request was kept for as long as its client pinged.
				IdleTimeout: tlsSrv.IdleTimeout,
				Logger:      n.log,
			}
			h3.ConnContext = func(ctx context.Context, qc *quic.Conn) context.Context {
				if !n.cfg.RTT.Disable {
					ctx = n.h3RTT.connContext(ctx, qc)
				}
				return n.h3Conns.connContext(ctx, qc)
			}
			_, port, _ := net.SplitHostPort(ls.QUIC.LocalAddr().String())
			alt := fmt.Sprintf(`h3=":%s"; ma=86400`, port)
			n.altSvc.Store(&alt)
			shutdownH3 := func(ctx context.Context) error {
				// Closed as soon as HTTP/3 has shut down, not when the process exits: bound
				// with SO_REUSEPORT beside a restarted node's socket, it would get a share of
				// the new node's QUIC packets meanwhile, and drop them.
				defer ls.QUIC.Close()
				// quic-go waits for every connection to close: those with no request in
				// flight are closed once quiet for a few round trips (h3Conns).
				idleCtx, stopIdle := context.WithCancel(ctx)
				var closer sync.WaitGroup
				closer.Go(func() { n.h3Conns.closeIdle(idleCtx) })
				defer closer.Wait()
				defer stopIdle()
				return h3.Shutdown(ctx)
			}
			all = append(all, served{shutdownH3, func() error { return h3.Serve(ls.QUIC) }})
			h3Served = true
		}
	}
	if ls.Admin != nil {
		// Idle keep-alive connections from scrapers are closed, so they cannot pile up.
		adminSrv := &http.Server{Handler: n.AdminHandler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
		n.adminAddr = ls.Admin.Addr().String()
		all = append(all, served{adminSrv.Shutdown, func() error { return adminSrv.Serve(ls.Admin) }})
	}
	addr := ls.HTTP.Addr().String()
	n.addr.Store(&addr)
	if t := n.tiers.Load(); len(t.peers) == 1 && t.peers[0].Addr == "" {
		n.SetPeers(nil) // learn our own address for the hash ring
	}
	if ls.HTTPS != nil {
		a := ls.HTTPS.Addr().String()
		n.httpsAddr.Store(&a)
	}
	fleetCtx, stopFleet := context.WithCancel(context.Background())
	defer stopFleet()
	waitFleet := func() {}
	if n.cfg.Fleet.enabled() {
		w, err := n.joinFleet(fleetCtx)
		if err != nil {
			return fmt.Errorf("edge join fleet: %w", err)
		}
		waitFleet = w
	}
	unserved = Listeners{} // the servers' now: every shutdown below runs
	if !h3Served {
		unserved.QUIC = ls.QUIC
	}
	errc := make(chan error, len(all))
	for _, s := range all {
		go func() { errc <- s.serve() }()
	}
	close(n.ready)
	n.log.Info("edge serving", "addr", addr, "https", n.HTTPSAddr(), "hosts", len(*n.hosts.Load()))

	var err error
	running := len(all)
	select {
	case <-ctx.Done():
	case err = <-errc:
		running--
		err = fmt.Errorf("edge serve: %w", err)
	}
	n.SetDraining(true)
	if err == nil {
		// Said even without a lame duck: the operator sees the stop begin, and for how long it
		// may wait.
		n.log.Info("edge draining", "lame_duck", n.cfg.LameDuck, "shutdown_timeout", n.cfg.ShutdownTimeout)
		if n.cfg.LameDuck > 0 {
			t := time.NewTimer(n.cfg.LameDuck)
			<-t.C
		}
	}
	n.pastLameDuck.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	// The client listeners drain together: one after another, HTTP/3 clients got their GOAWAY
	// only once the TCP servers' requests had all finished, and had their new requests taken
	// meanwhile. The admin listener, last in all, answers (draining) until they are done.
	errs := make([]error, len(all))
	var drain sync.WaitGroup
	for i, s := range all {
		if ls.Admin != nil && i == len(all)-1 {
			break
		}
		drain.Go(func() { errs[i] = s.shutdown(sctx) })
	}
	drain.Wait()
	// Switched WebSocket upgrades are no server's (net/http stops following a connection it
	// hands over): they get what is left of shutdown_timeout, as nginx's worker_shutdown_timeout
	// bounds them, and are closed then.
	if cut := n.tunnels.drain(sctx); cut > 0 {
		n.log.Info("edge closed WebSocket tunnels open at shutdown_timeout", "tunnels", cut, "shutdown_timeout", n.cfg.ShutdownTimeout)
	}
	if ls.Admin != nil {
		errs[len(all)-1] = all[len(all)-1].shutdown(sctx)
	}
	for _, serr := range errs {
		if serr != nil && err == nil {
			if errors.Is(serr, context.DeadlineExceeded) {
				// Say which limit cut the connections off, not just "context deadline exceeded".
				serr = fmt.Errorf("connections still open after shutdown_timeout (%v) were closed: %w", n.cfg.ShutdownTimeout, serr)
			}
			err = fmt.Errorf("edge shutdown: %w", serr)
		}
	}
	for range running {
		<-errc // every Serve has returned
	}
	// The HTTP/3 connections closed: their RTT samples go out while the node is in the fleet.
	n.h3RTT.wait(sctx)
	stopFleet() // the registrar deletes the node's key: it leaves the fleet at once
	waitFleet()
	stopBG()
	// Handlers whose clients left may still wait for a fill (edge/http1's connections close
	// under them, so the servers did not wait): ending the fills ends them; the store closes
	// once they have returned.
	n.fill.close()
	n.awaitRequests(sctx)
	n.close()
	return err
}

// awaitRequests waits until no client request is being served, or ctx ends. It polls: the
// count is two counters every request keeps already (inFlight), and an event to await would
// cost every request a third hook for the one wait at shutdown.
func (n *Node) awaitRequests(ctx context.Context) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for n.inFlight() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// HTTPSAddr is the HTTPS listener's address ("" without TLS).
func (n *Node) HTTPSAddr() string {
	if a := n.httpsAddr.Load(); a != nil {
		return *a
	}
	return ""
}

func (n *Node) hostNames() []string {
	var out []string
	for h := range *n.hosts.Load() {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// close stops the filler's work and releases upstreams and the store. It is idempotent.
func (n *Node) close() {
	if n.closed.Swap(true) {
		return
	}
	n.fill.close()
	n.store.Close()
}

// sourceBoundDialer dials from the node's own listen address when it is a specific IP, so that
// peers see fill requests come from the address the fleet knows the node by (on loopback every
// node would otherwise appear as 127.0.0.1). It returns nil (fetch's default dialer) otherwise.
func (n *Node) sourceBoundDialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(n.Addr())
	ip := net.ParseIP(host)
	if err != nil || ip == nil || ip.IsUnspecified() {
		return nil
	}
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: ip}}
	return d.DialContext
}

// upstreamStats snapshots every upstream's breaker and bulkhead counters.
func (n *Node) upstreamStats() []fetch.Stats { return n.fill.upstreamStats() }
