// Package control is the control plane: it runs (or joins) NATS with JetStream, keeps the
// fleet and config buckets, and serves the authenticated HTTP API over them.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/reuseport"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// Defaults for the zero Config.
const (
	DefaultListen       = "127.0.0.1:7070"
	DefaultNATSListen   = "127.0.0.1:4222"
	DefaultStoreDir     = "meridian-control-data"
	DefaultMaxBodyBytes = 1 << 20
	// TokensFileEnv names the environment variable read when Config.TokensFile is empty.
	TokensFileEnv = "MERIDIAN_TOKENS_FILE"
)

// Config configures a Server. The zero value serves on DefaultListen with an embedded NATS,
// once tokens are given (by TokensFile, $MERIDIAN_TOKENS_FILE or Tokens).
type Config struct {
	// Listen is the HTTP API's address; empty means DefaultListen. Unused by Serve.
	Listen string
	// NATSURL is an existing NATS server or cluster (comma-separated URLs) to use; empty means
	// run an embedded NATS server with JetStream.
	NATSURL string
	// NATSCreds is the credentials file control connects to NATSURL with (see
	// `meridian control creds` and docs/security.md); empty means none, which only a NATS
	// server without authentication accepts. Unused with the embedded server, whose
	// credentials control creates in StoreDir.
	NATSCreds string
	// NATSListen is the embedded NATS server's client address; empty means DefaultNATSListen.
	// Port 0 picks a free port (see NATSURL()).
	NATSListen string
	// StoreDir is where the embedded NATS server keeps JetStream data; empty means
	// DefaultStoreDir in the working directory.
	StoreDir string
	// Prefix prefixes every NATS bucket and subject; empty means wire.DefaultPrefix.
	Prefix string
	// HeartbeatTTL is how long a node stays in the fleet after its last heartbeat; zero means
	// fleet.DefaultTTL (3 s).
	HeartbeatTTL time.Duration
	// Replicas is the JetStream replica count of the buckets; zero means 1 (use 3 on a
	// three-node cluster).
	Replicas int
	// MaxConsumers bounds the consumers of each of the fleet's streams (the purge stream and
	// the buckets), whoever made them; zero means DefaultMaxConsumers (1,000, nats-server's
	// own default). Size it for the fleet: every process watches some of them
	// (docs/security.md, "Consumers").
	MaxConsumers int
	// ConsumerInactiveLimit is how long a consumer of the fleet's streams may go unused before
	// the server deletes it, at most: one asking for longer is refused, a durable one that asks
	// for nothing gets it. Zero means DefaultConsumerInactiveLimit (30 s).
	ConsumerInactiveLimit time.Duration
	// LatencyMaxBytes bounds the latency bucket's bytes (the records edges write for DNS):
	// applied to the bucket at every start, raised or lowered. Zero keeps the bucket's bound,
	// fleet.LatencyMaxBytes (64 MiB) for a bucket this start creates or one without a bound.
	// Size it for the fleet: honest edges fill 64 MiB on a busy one (docs/deploy.md, "Latency
	// bucket size").
	LatencyMaxBytes int64
	// TokensFile is the API tokens file (see ParseTokens); empty means $MERIDIAN_TOKENS_FILE.
	TokensFile string
	// Tokens are API tokens given in code, in addition to the file's.
	Tokens []Token
	// MaxBodyBytes limits request bodies; zero means DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// PurgeRetention is how long the purge stream keeps purges for nodes that were away to
	// replay, and how long receipts are kept; zero means purge.DefaultRetention (24 h).
	PurgeRetention time.Duration
	// PurgeRate is how many POST /v1/purge requests per second each token may make (a request
	// refused before it is published spends nothing); zero means DefaultPurgeRate (50),
	// negative means unlimited.
	PurgeRate float64
	// PurgeBurst is how many purge requests a token may make at once before PurgeRate applies;
	// zero means DefaultPurgeBurst (100).
	PurgeBurst int
	// ShutdownTimeout bounds how long in-flight requests may take once Run's context ends;
	// zero means 5 s.
	ShutdownTimeout time.Duration
	// TLSCert and TLSKey are the API's certificate and key files (PEM), reloaded when they
	// change; both empty means plain HTTP, which only a loopback Listen allows (see
	// CheckPlaintextListen) unless InsecureHTTP is set.
	TLSCert, TLSKey string
	// InsecureHTTP allows plain HTTP on a non-loopback Listen, for a TLS proxy in front.
	InsecureHTTP bool
	// TrustedProxies are the addresses (CIDRs, or single IPs) of proxies in front of the API,
	// such as the TLS-terminating one InsecureHTTP is for. For a request from one of them the
	// client is the rightmost X-Forwarded-For address that is not itself a trusted proxy
	// (nginx's realip module with real_ip_recursive on); from any other peer the header is
	// ignored. The client address keys the failed-authentication throttle. Empty means none:
	// the client is always the TCP peer.
	TrustedProxies []string
	// InsecureNATS allows the embedded NATS server (which has no TLS) on a non-loopback
	// NATSListen, for a private network that is itself encrypted (a container network on one
	// host, a VPN). Without it such an address is refused: credentials would cross in clear.
	InsecureNATS bool
	// AuthFailureBurst is how many failed authentications (401s) a client IP may make before it
	// gets 429s; zero means DefaultAuthFailureBurst (60).
	AuthFailureBurst int
	// AuthFailureRate is how many failed authentications per second a throttled client IP earns
	// back; zero means DefaultAuthFailureRate (1), negative turns the throttle off.
	AuthFailureRate float64
	// Logger receives the server's log; nil discards. Tokens are never logged.
	Logger *slog.Logger
}

// Server is the control plane. Create it with New, add routes with Handle, then Run or Serve.
type Server struct {
	cfg   Config
	log   *slog.Logger
	auth  *authenticator
	mux   *http.ServeMux
	reg   *prometheus.Registry
	reqs  *prometheus.CounterVec
	ready chan struct{}
	// limiter limits purge requests per token.
	limiter *purgeLimiter
	// authFails throttles clients that keep failing authentication; nil when turned off.
	authFails *authThrottle
	// trusted are Config.TrustedProxies, parsed.
	trusted []netip.Prefix
	// certs serves the API's TLS certificate; nil for plain HTTP.
	certs *certReloader
	// waits is cancelled when the server starts stopping, to end POST /v1/purge?wait early.
	waits context.Context
	// observers are the goroutines timing each purge to its last ack for the metrics; they
	// end with waits and Serve waits for them.
	observers sync.WaitGroup
	purgeDur  prometheus.Histogram
	purgeLate prometheus.Counter
	endWaits  context.CancelFunc
	// consumersDeleted counts the hostile push consumers the sweeper deleted.
	consumersDeleted prometheus.Counter
	streamUsage      *streamUsage // the fleet's streams against their bounds, as the consumer sweeps see them
	// sweepEvery is how often the consumers of the fleet's streams are listed; zero means
	// consumerSweepEvery. Tests set it before Serve.
	sweepEvery time.Duration
	// now tells the time the start-up grace is measured by (startGrace); nil means time.Now.
	// Tests set it before Serve.
	now func() time.Time
	// readyAt is when Ready was closed, on now's clock; set before Ready is closed.
	readyAt time.Time
	// reconnectAt is when control's NATS connection last came back after a cut, on now's
	// clock (zero: never): the start-up grace runs again from then (inStartGrace).
	reconnectAt time.Time

	// graceMu serialises the starts and ends of the holds of purge receipts for the grace
	// (holdReceipts, releaseReceipts); graceOn (under it) is set once Ready is about to close.
	graceMu sync.Mutex
	graceOn bool
	// heldUntil is, while the tracker holds new receipts for registrations, when the grace
	// ends on now's clock; nil otherwise, so that a purge after the grace loads a nil pointer
	// and does nothing more.
	heldUntil atomic.Pointer[time.Time]
	// graceWake wakes runGrace when a hold starts or moves (capacity 1).
	graceWake chan struct{}

	// natsMu serialises changes of the embedded NATS server's users.
	natsMu sync.Mutex

	mu        sync.Mutex // guards the fields below
	tracker   *purge.Tracker
	expected  *expectedNodes
	publisher *purge.Publisher
	routes    []Route
	started   bool
	stopping  bool
	natsURL   string
	embedded  *server.Server // the embedded NATS server; nil with an external one
	nc        *nats.Conn
	js        jetstream.JetStream
	view      *fleet.View
	config    *fleet.ConfigView
	sweeper   *consumerSweeper

	// reloadUsers sets the embedded NATS server's users to the users file's records and
	// returns how many there are; nil without an embedded server.
	reloadUsers func() (int, error)

	// wrapAPI, when set before Serve, wraps the API handler: the tests check every exchange
	// against the OpenAPI spec through it.
	wrapAPI func(http.Handler) http.Handler
}

// Route is one API route: a net/http pattern ("GET /v1/pops") and the scope it needs (empty
// for public routes).
type Route struct {
	Pattern string
	Scope   string
}

// MinLatencyMaxBytes is the smallest non-zero LatencyMaxBytes accepted (1 MiB, about 2,000
// records): a smaller one is a slip of unit.
const MinLatencyMaxBytes = 1 << 20

// New validates cfg, loads the tokens and registers the API routes; it starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	// Negative values mean nothing (only PurgeRate's and AuthFailureRate's do): refuse them
	// rather than fall back to the default, so that --replicas -3 is not silently 1.
	for _, n := range []struct {
		flag string
		v    int64
	}{
		{"--heartbeat-ttl", int64(cfg.HeartbeatTTL)}, {"--replicas", int64(cfg.Replicas)},
		{"--max-body-bytes", cfg.MaxBodyBytes}, {"--purge-retention", int64(cfg.PurgeRetention)},
		{"--purge-burst", int64(cfg.PurgeBurst)}, {"--max-consumers", int64(cfg.MaxConsumers)},
		{"ConsumerInactiveLimit", int64(cfg.ConsumerInactiveLimit)},
		{"--latency-max-bytes", cfg.LatencyMaxBytes},
	} {
		if n.v < 0 {
			return nil, fmt.Errorf("new control: %s is negative", n.flag)
		}
	}
	if b := cfg.LatencyMaxBytes; b > 0 && b < MinLatencyMaxBytes {
		// A bound this small holds a few thousand records at most: a slip of unit, which would
		// leave the bucket refusing every edge's records (and DNS routing by geography alone).
		hint := ""
		if b <= 1<<13 {
			hint = fmt.Sprintf("; did you mean %d MiB (%d)?", b, b<<20)
		}
		return nil, fmt.Errorf("new control: --latency-max-bytes %d is below 1 MiB (%d): it counts bytes%s", b, MinLatencyMaxBytes, hint)
	}
	if _, _, err := splitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("new control: --listen %q: %w", cfg.Listen, err)
	}
	if cfg.NATSListen == "" {
		cfg.NATSListen = DefaultNATSListen
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = DefaultStoreDir
	}
	if cfg.HeartbeatTTL <= 0 {
		cfg.HeartbeatTTL = fleet.DefaultTTL
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxConsumers == 0 {
		cfg.MaxConsumers = DefaultMaxConsumers
	}
	if cfg.ConsumerInactiveLimit == 0 {
		cfg.ConsumerInactiveLimit = DefaultConsumerInactiveLimit
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	if cfg.PurgeRetention <= 0 {
		cfg.PurgeRetention = purge.DefaultRetention
	}
	if cfg.PurgeRate == 0 {
		cfg.PurgeRate = DefaultPurgeRate
	}
	if cfg.PurgeRate < 0 {
		cfg.PurgeRate = math.Inf(1) // rate.Inf: no limit
	}
	if cfg.PurgeBurst <= 0 {
		cfg.PurgeBurst = DefaultPurgeBurst
	}
	if cfg.TokensFile == "" {
		cfg.TokensFile = os.Getenv(TokensFileEnv)
	}
	if cfg.NATSURL == "" {
		host, _, err := splitHostPort(cfg.NATSListen)
		if err != nil {
			return nil, fmt.Errorf("new control: nats listen %q: %w", cfg.NATSListen, err)
		}
		if !wire.LoopbackHost(host) && !cfg.InsecureNATS {
			return nil, fmt.Errorf("new control: refusing to serve the embedded NATS server in plain text on %s, which is not a loopback address: keep --nats-listen on loopback, point --nats at a NATS cluster with TLS, or give --insecure-nats on an encrypted private network", cfg.NATSListen)
		}
	}
	toks := append([]Token(nil), cfg.Tokens...)
	if cfg.TokensFile != "" {
		ft, err := loadTokensFile(cfg.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("new control: %w", err)
		}
		toks = append(toks, ft...)
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("new control: no API tokens: give a tokens file (--tokens or $%s)", TokensFileEnv)
	}
	auth, err := newAuthenticator(toks)
	if err != nil {
		return nil, fmt.Errorf("new control: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.AuthFailureBurst <= 0 {
		cfg.AuthFailureBurst = DefaultAuthFailureBurst
	}
	if cfg.AuthFailureRate == 0 {
		cfg.AuthFailureRate = DefaultAuthFailureRate
	}
	trusted, err := parseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("new control: %w", err)
	}
	certs, err := setupTLS(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("new control: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		auth:    auth,
		mux:     http.NewServeMux(),
		reg:     prometheus.NewRegistry(),
		ready:   make(chan struct{}),
		limiter: newPurgeLimiter(cfg.PurgeRate, cfg.PurgeBurst),

		graceWake: make(chan struct{}, 1),

		authFails: newAuthThrottle(cfg.AuthFailureRate, cfg.AuthFailureBurst),
		trusted:   trusted,
		certs:     certs,
	}
	s.waits, s.endWaits = context.WithCancel(context.Background())
	s.initMetrics()
	s.routesAPI()
	s.routesPurge()
	return s, nil
}

// Handle registers h for pattern (net/http syntax, "METHOD /path") behind the API's bearer
// auth: requests need a token with scope (empty scope: no token needed). Once past the auth, a
// request body over MaxBodyBytes gets 413 before h runs, whether h reads a body or not (see
// limitBody). Errors written by the auth use the API's JSON error format. Handle must be
// called before Run or Serve, and panics otherwise or on a conflicting pattern, like
// http.ServeMux.
func (s *Server) Handle(pattern, scope string, h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		panic("control: Handle called after Run")
	}
	s.mux.Handle(pattern, s.instrument(pattern, s.authorize(scope, s.limitBody(h, scope != ""))))
	s.routes = append(s.routes, Route{Pattern: pattern, Scope: scope})
}

// Routes lists the registered routes in registration order.
func (s *Server) Routes() []Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Route(nil), s.routes...)
}

// Ready is closed once NATS is up, the buckets exist, the views are loaded and the API serves.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// clock is the time the start-up grace is measured by.
func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// NATSURL is the client URL of the NATS server in use (the embedded one's when embedded),
// for edges in the same process to connect to. Valid once Ready is closed.
func (s *Server) NATSURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.natsURL
}

// Conn is the server's NATS connection; valid once Ready is closed.
func (s *Server) Conn() *nats.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nc
}

// embeddedNATS is the embedded NATS server, nil with an external one; valid once Ready is
// closed.
func (s *Server) embeddedNATS() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.embedded
}

// JetStream is the server's JetStream context; valid once Ready is closed.
func (s *Server) JetStream() jetstream.JetStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.js
}

// Fleet is the live fleet view the API serves; valid once Ready is closed.
func (s *Server) Fleet() *fleet.View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// Prefix is the NATS name prefix in use: wire.DefaultPrefix when Config.Prefix is empty.
func (s *Server) Prefix() string {
	if s.cfg.Prefix == "" {
		return wire.DefaultPrefix
	}
	return s.cfg.Prefix
}

// ensureStreams creates the buckets and the purge stream and bounds their consumers, retrying: right after a cluster forms
// (or several controls start at once) a JetStream request can go unanswered, and one lost reply
// must not take the control plane down. It gives up after a minute or when ctx ends.
func (s *Server) ensureStreams(ctx context.Context, js jetstream.JetStream) error {
	deadline := time.Now().Add(time.Minute)
	retry := fleet.Backoff(250*time.Millisecond, 5*time.Second)
	var held uint64 // the latency bucket's bytes
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := fleet.EnsureBuckets(actx, js, s.cfg.Prefix, s.cfg.HeartbeatTTL, s.cfg.Replicas)
		if err == nil {
			// Applied at every start that gives it; EnsureBuckets kept the bound meanwhile.
			held, err = fleet.SetLatencyMaxBytes(actx, js, s.cfg.Prefix, s.cfg.LatencyMaxBytes)
		}
		if err == nil {
			err = purge.EnsureStream(actx, js, s.cfg.Prefix, s.cfg.PurgeRetention, s.cfg.Replicas)
		}
		// After both: a stream just made has no bounds yet (both keep those set before).
		for _, st := range fleetStreams(s.cfg.Prefix) {
			if err != nil {
				break
			}
			err = boundConsumers(actx, js, st, s.cfg.MaxConsumers, s.cfg.ConsumerInactiveLimit, s.consumersDeleted, s.log)
		}
		cancel()
		if err == nil && s.cfg.LatencyMaxBytes > 0 && held > uint64(s.cfg.LatencyMaxBytes) {
			// Nothing is deleted: edges' writes are refused (on a cluster their updates too)
			// until records expire, and DNS's latency map ages meanwhile.
			s.log.Warn("the latency bucket holds more than --latency-max-bytes: it refuses new records, and on a cluster every update, until enough expire (docs/deploy.md, \"Latency bucket size\")",
				"bytes", held, "max_bytes", s.cfg.LatencyMaxBytes)
		}
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		s.log.Warn("creating buckets and streams failed; retrying", "err", err)
		if !fleet.Wait(ctx, retry) {
			return ctx.Err()
		}
	}
}

// Run listens on Config.Listen and serves until ctx ends (see Serve).
func (s *Server) Run(ctx context.Context) error {
	// SO_REUSEPORT: with an external NATS (--nats), a new control process can take over the
	// API port before the old one exits. The embedded NATS server cannot share its port or
	// store, so a control with embedded NATS restarts with a short API gap.
	ln, err := reuseport.Listen(ctx, s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("control: listen on %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve starts NATS (embedded, unless Config.NATSURL is set), creates the buckets and the purge
// stream, starts the purge tracker and the sweeper of hostile consumers, and serves
// the API on ln until ctx ends. Then it answers 503 on /healthz, lets in-flight requests finish
// (up to ShutdownTimeout), stops its watchers, closes NATS, and returns once everything it
// started has exited. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) (err error) {
	defer ln.Close()
	if ln, err = s.apiListener(ln); err != nil {
		return err
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("control: Serve called twice")
	}
	s.started = true
	s.mu.Unlock()

	// The API answers from the start: while NATS and the buckets come up (a minute, say, while
	// JetStream is not ready), /healthz says "starting" with a 503 and every other route a 503,
	// rather than a probe timing out on a port that accepts and never answers.
	var api atomic.Pointer[http.Handler]
	startingHealth := s.limitBody(http.HandlerFunc(s.healthz), false) // as the route will be
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h := api.Load(); h != nil {
				(*h).ServeHTTP(w, r)
				return
			}
			if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
				startingHealth.ServeHTTP(w, r)
				return
			}
			WriteError(w, http.StatusServiceUnavailable, "", errors.New("the control plane is starting"))
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	apiDone := make(chan struct{})
	go func() {
		defer close(apiDone)
		serveErr <- hs.Serve(ln)
	}()
	apiShutDown := false
	defer func() {
		if !apiShutDown { // returned before the API's graceful shutdown below
			hs.Close()
		}
		<-apiDone
	}()

	url := s.cfg.NATSURL
	var auth []nats.Option
	if url == "" {
		ns, cred, stopNATS, err := s.startNATS()
		if err != nil {
			return err
		}
		defer stopNATS()
		url = ns.ClientURL()
		if auth, err = cred.Options(); err != nil {
			return fmt.Errorf("control: %w", err)
		}
		// Control's own connection runs in process, over a pipe: a purge crosses it to be
		// stored, back with the stream's ack, out again to be announced, and back with every
		// node's ack, and a pipe spares each crossing the loopback stack and two system calls
		// (ack p50 -16 to -19 %, docs/benchmarks.md "Twenty-ninth pass"). It authenticates and is
		// held to its permissions as a TCP client is; TLS has nothing to protect on a pipe.
		auth = append(auth, nats.InProcessServer(ns))
		s.mu.Lock()
		s.embedded = ns
		s.mu.Unlock()
	} else if s.cfg.NATSCreds != "" {
		if auth, err = natsauth.FileOptions(s.cfg.NATSCreds); err != nil {
			return fmt.Errorf("control: %w", err)
		}
	}
	// Asynchronous errors (a subscription that fell behind, say) go to the log, once a minute at
	// most: nats.go's default writes each to stderr.
	natsErrs := fleet.NewErrorLog(s.log)
	nc, err := nats.Connect(url, append(auth, nats.Name("meridian-control"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		natsErrs.Option(),
		fleet.LogDisconnects(s.log),
		nats.ReconnectHandler(func(c *nats.Conn) {
			// A cut longer than the heartbeat TTL expired the registrations, as a restart
			// does: the grace runs again (inStartGrace).
			s.mu.Lock()
			s.reconnectAt = s.clock()
			s.mu.Unlock()
			s.holdReceipts(false)
			s.log.Info("nats reconnected", "url", fleet.RedactURL(c.ConnectedUrl()))
		}))...)
	if err != nil {
		natsErrs.Close(nil)
		if s.cfg.NATSURL == "" {
			// A refused in-process CONNECT shows as a closed pipe (after the server's write
			// deadline), not as the authorization error a TCP client reads.
			return fmt.Errorf("control: connect in process to the embedded nats (is control.creds's key in users.json?): %w", err)
		}
		return fmt.Errorf("control: connect to nats %s: %w", fleet.RedactURLs(url), fleet.RedactError(err))
	}
	defer natsErrs.Close(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("control: jetstream: %w", err)
	}
	if err := s.ensureStreams(ctx, js); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while JetStream was not ready yet: a clean stop, not a failure
		}
		return fmt.Errorf("control: %w", err)
	}
	view := fleet.NewView(fleet.ViewConfig{JS: js, Prefix: s.cfg.Prefix, TTL: s.cfg.HeartbeatTTL, Logger: s.log})
	cview := fleet.NewConfigView(fleet.ConfigViewConfig{JS: js, Prefix: s.cfg.Prefix, Logger: s.log})
	sweeper := newConsumerSweeper(js, s.cfg.Prefix, s.sweepEvery, s.consumersDeleted, s.log)
	sweeper.usage = s.streamUsage
	s.mu.Lock()
	s.natsURL, s.nc, s.js, s.view, s.config, s.sweeper = url, nc, js, view, cview, sweeper
	s.mu.Unlock()

	wctx, stopWatch := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	wg.Go(func() { _ = view.Run(wctx) })
	wg.Go(func() { _ = cview.Run(wctx) })
	sweeper.subscribe()
	wg.Go(func() { sweeper.run(wctx) })
	if err := s.startPurge(wctx, &wg); err != nil {
		return err
	}
	wg.Go(func() { s.runGrace(wctx, view) })

	var h http.Handler = s
	if s.wrapAPI != nil {
		h = s.wrapAPI(h)
	}
	api.Store(&h)

	select {
	case <-view.Ready():
	case <-ctx.Done():
	}
	select {
	case <-cview.Ready():
	case <-ctx.Done():
	}
	if ctx.Err() == nil {
		s.mu.Lock()
		s.readyAt = s.clock()
		s.mu.Unlock()
		s.holdReceipts(true) // before Ready: every purge accepted in the grace is held
		close(s.ready)
		s.log.Info("control plane ready", "api", ln.Addr().String(), "nats", fleet.RedactURL(nc.ConnectedUrl()), "prefix", s.Prefix())
	}

	select {
	case <-ctx.Done():
		// Said at once, as the edge says "edge draining": what follows may take up to
		// shutdown_timeout, and a silent control could not be told from a hung one.
		natsStop := "connection closed"
		if s.cfg.NATSURL == "" {
			natsStop = "embedded server shut down last"
		}
		s.log.Info("control stopping", "waits_for", "API requests in flight (purge waits are answered at once)",
			"shutdown_timeout", s.cfg.ShutdownTimeout, "nats", natsStop)
	case err = <-serveErr:
		err = fmt.Errorf("control: serve api: %w", err)
	}
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.endWaits()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	apiShutDown = true
	if serr := hs.Shutdown(sctx); serr != nil {
		s.log.Warn("api shutdown", "err", serr)
		_ = hs.Close()
	}
	s.observers.Wait()
	return err
}

// startNATS runs the embedded NATS server with JetStream on StoreDir. Nobody connects
// anonymously: on first start it creates control's credential and the users file in StoreDir
// (see creds.go), and it takes that file's users whenever it changes. It returns control's
// credential and a function that stops the server.
func (s *Server) startNATS() (*server.Server, natsauth.Credential, func(), error) {
	var none natsauth.Credential
	host, port, err := splitHostPort(s.cfg.NATSListen)
	if err != nil {
		return nil, none, nil, fmt.Errorf("control: nats listen %q: %w", s.cfg.NATSListen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	cred, err := initCredentials(s.cfg.StoreDir)
	if err != nil {
		return nil, none, nil, fmt.Errorf("control: %w", err)
	}
	// The file as it was before the users in force were read from it: a change in between
	// is applied at the first sync.
	users := &usersSync{path: filepath.Join(credsDir(s.cfg.StoreDir), usersFileName), log: s.log}
	users.last, _ = os.ReadFile(users.path)
	recs, err := ListCredentials(s.cfg.StoreDir)
	if err != nil {
		return nil, none, nil, fmt.Errorf("control: %w", err)
	}
	// Users change while the server runs without reloading its options (see Authenticator).
	auth := natsauth.NewAuthenticator(s.cfg.Prefix, natsUsers(recs))
	auth.SetRefresh(users.sync)
	opts := &server.Options{
		ServerName: "meridian-control",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   s.cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	auth.Configure(opts)
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, none, nil, fmt.Errorf("control: embedded nats: %w", err)
	}
	// The file is read under the lock: two callers that read it before it changed and set
	// its users after would otherwise let the older read win (a revoked key accepted again).
	reload := func() (int, error) {
		s.natsMu.Lock()
		defer s.natsMu.Unlock()
		recs, err := ListCredentials(s.cfg.StoreDir)
		if err != nil {
			return 0, err
		}
		if n := auth.SetUsers(ns, natsUsers(recs)); n > 0 {
			s.log.Info("nats clients of revoked credentials disconnected", "clients", n)
		}
		return len(recs), nil
	}
	// Before Start: a client's check syncs the users file from the server's first
	// connection on (Authenticator.SetRefresh).
	users.reload = reload
	// The server reports a failure to listen (the port in use) only through its logger's
	// Fatalf, and ReadyForConnections waits its whole timeout regardless: catch the report
	// and stop waiting at once.
	fatal := make(chan string, 1)
	ns.SetLoggerV2(fatalLogger(fatal), false, false, false)
	go ns.Start()
	if err := waitNATSReady(ns, fatal, 30*time.Second); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, none, nil, fmt.Errorf("control: embedded nats on %s did not start: %w", s.cfg.NATSListen, err)
	}
	s.mu.Lock()
	s.reloadUsers = reload
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		users.watch(ctx)
	}()
	s.log.Info("embedded nats started", "url", ns.ClientURL(), "store_dir", s.cfg.StoreDir, "users", len(recs))
	return ns, cred, func() {
		cancel()
		<-done
		ns.Shutdown()
		ns.WaitForShutdown()
	}, nil
}

// IssueCredential issues a NATS credential for id in the embedded server's store (see the
// package-level IssueCredential) and makes the running server accept it at once. It needs the
// embedded server to be running.
func (s *Server) IssueCredential(id natsauth.Identity) (natsauth.Credential, error) {
	s.mu.Lock()
	reload := s.reloadUsers
	s.mu.Unlock()
	if reload == nil {
		return natsauth.Credential{}, errors.New("control: issue credential: no embedded NATS server running")
	}
	c, err := IssueCredential(s.cfg.StoreDir, id)
	if err != nil {
		return natsauth.Credential{}, fmt.Errorf("control: issue credential: %w", err)
	}
	if _, err := reload(); err != nil {
		return natsauth.Credential{}, fmt.Errorf("control: issue credential: %w", err)
	}
	return c, nil
}

func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	return host, port, nil
}

// waitNATSReady waits up to d for ns to accept connections, returning early with the error
// the server reported through its logger's Fatalf.
func waitNATSReady(ns *server.Server, fatal <-chan string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			return errors.New(msg)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", d)
		}
	}
}

// fatalLogger is the embedded NATS server's logger: it drops everything (the server runs with
// NoLog) except the first fatal error, which it hands to waitNATSReady.
type fatalLogger chan<- string

func (fatalLogger) Noticef(string, ...any) {}
func (fatalLogger) Warnf(string, ...any)   {}
func (fatalLogger) Errorf(string, ...any)  {}
func (fatalLogger) Debugf(string, ...any)  {}
func (fatalLogger) Tracef(string, ...any)  {}
func (l fatalLogger) Fatalf(format string, v ...any) {
	select {
	case l <- fmt.Sprintf(format, v...):
	default:
	}
}
