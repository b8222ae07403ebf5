// Package origin is the reference origin server that demos, tests and the simulator put behind
// the edge.
package origin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures an origin server. The zero value works; every default is stated per field.
type Config struct {
	// Addr is the TCP address Run listens on. Default "127.0.0.1:8080".
	Addr string
	// Logger receives start, stop and serving errors. Nil means discard.
	Logger *slog.Logger
	// Clock is the time source for Date, Last-Modified, Expires and version creation times.
	// Nil means time.Now.
	Clock func() time.Time
	// ShutdownTimeout is how long Run and Serve wait for in-flight requests to finish once the
	// context ends, before closing their connections. Default 5s.
	ShutdownTimeout time.Duration
	// BodyCacheBytes bounds the memory kept for generated bodies (a body over 64 KiB is kept
	// as its first 64 KiB plus one unit, from which the rest is streamed); past it the least
	// recently used are forgotten. Default 64 MiB; negative disables the cache.
	BodyCacheBytes int
	// IdleTimeout is how long a keep-alive connection may wait for its next request before
	// the server closes it. Default 75s (nginx's keepalive_timeout); without one, every idle
	// client held a connection and its goroutine for good.
	IdleTimeout time.Duration
	// MaxPaths bounds how many paths the origin keeps state for, in each of its three tables:
	// request statistics (counts, body bytes, last request headers), versions of bumped paths,
	// and per-path faults. Past it, the table forgets its least recently used path, which then
	// gets what a path never seen gets; but a fault whose bump_after is still to fire is kept
	// apart and never forgotten, and past MaxPaths of those, another is refused (SetFault). Each table also keeps at most 64 MiB of path names
	// (and, for the statistics, of request headers). Default 100,000: five times the
	// simulator's default catalogue, far more than any test uses, and at most a few hundred
	// MiB with the 64 MiB bounds; without a bound, a client asking for ever new URLs grew the
	// origin's memory for good. Negative is an error.
	MaxPaths int
}

// defaultMaxPaths is Config.MaxPaths's default.
const defaultMaxPaths = 100_000

// maxStateBytes bounds the path names (and statistics' request headers) each per-path table
// keeps: paths and headers may each be up to a megabyte (net/http's MaxHeaderBytes), so a
// count alone would still allow gigabytes.
const maxStateBytes = 64 << 20

// Server is the reference origin. Its handler is safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	start  time.Time // creation time of every object's first version
	bodies *bodyCache

	mu          sync.Mutex           // guards versions, globalBump, globalAt, faults, bumps, bumpBytes and globalFault
	versions    *lru[string, object] // paths bumped at least once
	globalBump  int                  // bumps of every path (POST /_bump without path)
	globalAt    time.Time            // when globalBump last changed
	faults      *lru[string, Fault]  // per-path faults without a BumpAfter still to fire
	bumps       map[string]Fault     // per-path faults with one, never forgotten (SetFault)
	bumpBytes   int                  // the bytes of bumps' paths
	globalFault Fault                // the fault of paths without one of their own (path "")

	stats stats

	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	inFlight prometheus.Gauge

	handler http.Handler
}

// object is the version state of one path that has been bumped at least once.
type object struct {
	bumps int
	at    time.Time // when bumps last changed
}

// New validates cfg and returns a server. It starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("new origin: addr %q: %w", cfg.Addr, err)
	}
	if cfg.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("new origin: shutdown timeout %v is negative", cfg.ShutdownTimeout)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	if cfg.BodyCacheBytes == 0 {
		cfg.BodyCacheBytes = 64 << 20
	}
	if cfg.IdleTimeout < 0 {
		return nil, fmt.Errorf("new origin: idle timeout %v is negative", cfg.IdleTimeout)
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 75 * time.Second
	}
	if cfg.BodyCacheBytes < 0 {
		cfg.BodyCacheBytes = 0
	}
	if cfg.MaxPaths < 0 {
		return nil, fmt.Errorf("new origin: max paths %d is negative", cfg.MaxPaths)
	}
	if cfg.MaxPaths == 0 {
		cfg.MaxPaths = defaultMaxPaths
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		now:      cfg.Clock,
		start:    cfg.Clock(),
		bodies:   newBodyCache(cfg.BodyCacheBytes, min(cfg.BodyCacheBytes/4, 8<<20)),
		versions: newLRU[string, object](cfg.MaxPaths, maxStateBytes, pathCost),
		faults:   newLRU[string, Fault](cfg.MaxPaths, maxStateBytes, pathCost),
		bumps:    map[string]Fault{},
		reg:      prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "origin_requests_total",
			Help: "Object requests answered, by status code (\"dropped\" for connections closed without a response).",
		}, []string{"code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "origin_requests_in_flight",
			Help: "Object requests being served.",
		}),
	}
	s.stats.init(cfg.MaxPaths)
	s.reg.MustRegister(s.requests, s.inFlight)
	mux := http.NewServeMux()
	mux.HandleFunc("/_bump", s.serveBump)
	mux.HandleFunc("/_fault", s.serveFault)
	mux.HandleFunc("/_stats", s.serveStats)
	mux.HandleFunc("/_health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("/_/", http.NotFoundHandler())
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch path := r.URL.Path; {
		case isControlPath(path):
			mux.ServeHTTP(w, r)
			return
		case path == "":
			// An absolute-form target without a path ("GET http://host"): its path is "/"
			// (RFC 9110 §4.2.3). Left empty, it was an object of its own, and an unsafe
			// method on it bumped every path (Bump's "").
			r = r.Clone(r.Context())
			r.URL.Path, r.URL.RawPath = "/", ""
		case path[0] != '/':
			// "*" (asterisk-form), or anything else that names no object.
			http.Error(w, fmt.Sprintf("request target %q is not an object path", path), http.StatusBadRequest)
			return
		}
		s.serveObject(w, r)
	})
	return s, nil
}

// isControlPath reports whether path is one of the origin's own endpoints rather than an object:
// everything under "/_" and "/metrics".
func isControlPath(path string) bool {
	return len(path) >= 2 && path[:2] == "/_" || path == "/metrics"
}

// Handler returns the origin's HTTP handler, for callers that run their own server.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on Config.Addr and serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("run origin: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then waits up to ShutdownTimeout for in-flight requests,
// closes what remains, and returns once every handler it started has returned. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// base is every request's parent context; canceling it ends delays and stalls at hard stop.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	var tr tracker
	srv := &http.Server{
		Handler:           tr.wrap(s.handler),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       s.cfg.IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("origin serving", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("serve origin on %s: %w", ln.Addr(), err)
		srv.Close()
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		if serr := srv.Shutdown(sctx); serr != nil {
			s.log.Warn("origin shutdown timed out; closing connections", "addr", ln.Addr().String(), "err", serr)
			srv.Close()
		}
		cancel()
		<-errc
	}
	cancelBase()
	tr.wait()
	s.log.Info("origin stopped", "addr", ln.Addr().String())
	return err
}

// tracker counts running handlers so Serve can wait for them, including hijacked ones that
// http.Server.Shutdown does not wait for.
type tracker struct {
	mu     sync.Mutex // guards closed and orders wg.Add before wg.Wait
	closed bool
	wg     sync.WaitGroup
}

func (t *tracker) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			http.Error(w, "origin shutting down", http.StatusServiceUnavailable)
			return
		}
		t.wg.Add(1)
		t.mu.Unlock()
		defer t.wg.Done()
		h.ServeHTTP(w, r)
	})
}

func (t *tracker) wait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}

// Version returns the current version of path (1 until it is first bumped, or once its bumps
// are forgotten, see Config.MaxPaths).
func (s *Server) Version(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, _ := s.versionLocked(s.versions.peek(path))
	return v
}

// versionLocked returns the version, and when it was created, of the path whose bumps are e
// (nil for a path never bumped, or forgotten).
func (s *Server) versionLocked(e *lruEntry[string, object]) (int, time.Time) {
	v, at := 1+s.globalBump, s.start
	if s.globalAt.After(at) {
		at = s.globalAt
	}
	if e != nil {
		v += e.val.bumps
		if e.val.at.After(at) {
			at = e.val.at
		}
	}
	return v, at
}

// Bump increments the version of path, or of every path if path is empty, and returns path's new
// version (for an empty path, the version of a never-bumped path).
func (s *Server) Bump(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if path == "" {
		s.globalBump++
		s.globalAt = now
		v, _ := s.versionLocked(nil)
		return v
	}
	e := s.versions.add(path)
	e.val.bumps++
	e.val.at = now
	v, _ := s.versionLocked(e)
	return v
}

// sleep waits for d or until ctx ends, reporting whether the full wait happened.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
