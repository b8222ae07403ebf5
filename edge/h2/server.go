// Package h2 serves HTTP/2 over TLS for the edge with one goroutine per connection rather than
// one per stream. It reads frames with golang.org/x/net/http2's Framer (frame parsing, HPACK,
// CONTINUATION assembly and the header-list limit are the library's) and keeps the server's
// side here: stream states, flow control, the limits a client must not exceed, and responses.
//
// What it changes against net/http's HTTP/2 server, and why: a request without a body is
// answered on the goroutine that reads the connection, so a cache hit costs no goroutine, no
// channel hand-off and no wake-up; responses are gathered in the connection's buffer and
// written once the reader has nothing more to read, so a batch of requests costs one write. A
// handler that runs long (a miss waiting for its origin) or waits for the client's flow-control
// window hands the reading of the connection to a new goroutine and goes on as an ordinary
// stream handler, so one slow stream never holds up the others for longer than handoffDelay.
//
// Requests reach the handler as net/http's HTTP/2 server would give them (Proto "HTTP/2.0",
// Host from :authority, the TLS state, a context cancelled when the stream is reset), through
// the handler net/http passes to TLSNextProto, so http.Server's BaseContext and ConnContext
// apply.
package h2

import (
	"context"
	"crypto/tls"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server serves HTTP/2 connections negotiated by an http.Server's TLS listener; Configure
// installs it there.
type Server struct {
	// MaxConcurrentStreams is advertised to clients (default 250). Streams a client resets
	// while their handlers still run count against it too, up to a queue; past that the
	// connection is closed with ENHANCE_YOUR_CALM (the rapid-reset attack), as it is when
	// the client opens more than twice as many after the server's GOAWAY.
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a request's header list (SETTINGS_MAX_HEADER_LIST_SIZE); a larger
	// one is answered 431. Default http.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// IdleTimeout closes a connection without streams after this long (default 2 minutes).
	IdleTimeout time.Duration
	// WriteTimeout bounds one write to the client (default 60 s, nginx's send_timeout): a
	// client that stops reading is cut off after it rather than holding its streams.
	WriteTimeout time.Duration
	// ErrorLog receives handler panics; nil means the log package's standard logger.
	ErrorLog *log.Logger
	// Answered, if set, hears of each request the server answers itself, its handler never
	// called: 431 for a header list over MaxHeaderBytes, 400 for a malformed request that is
	// answered rather than reset (RFC 9113, sections 8.1.1 and 8.2.1). r is the request as
	// read (for a 431, its pseudo-fields and the other fields within the limit; its context
	// is done), reason says why.
	// It is called on the connection's reading goroutine, without its lock, after the answer
	// was written to the connection's buffer; the edge logs and counts such requests.
	Answered func(r *http.Request, status int, reason string)

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutting bool
}

// Defaults for the zero Server.
const (
	defaultMaxStreams  = 250
	defaultIdleTimeout = 2 * time.Minute
	// defaultWriteTimeout: see WriteTimeout.
	defaultWriteTimeout = 60 * time.Second
	// prefaceTimeout bounds the wait for the client's connection preface and first SETTINGS.
	prefaceTimeout = 10 * time.Second
)

// Configure makes hs serve HTTP/2 through s: every TLS connection that negotiates "h2" is
// handed to s, and hs.Shutdown sends each of them a GOAWAY and waits for their streams. hs
// must have HTTP/2 among its Protocols so that "h2" stays in its ALPN list.
func (s *Server) Configure(hs *http.Server) {
	if hs.TLSNextProto == nil {
		hs.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	hs.TLSNextProto["h2"] = func(_ *http.Server, tc *tls.Conn, h http.Handler) {
		ctx := context.Background()
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		state := tc.ConnectionState()
		s.ServeConn(ctx, tc, &state, h)
	}
	hs.RegisterOnShutdown(s.shutdown)
}

// ServeConn serves HTTP/2 on nc, whose client preface has not been read, until the
// connection ends; every request gets ctx's values, tlsState as its TLS and goes to h.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn, tlsState *tls.ConnectionState, h http.Handler) {
	c := newConn(s, ctx, nc, tlsState, h)
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	shutting := s.shutting
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.serve(shutting)
}

// shutdown sends every connection a GOAWAY: they finish the streams they have and close.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.shutting = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		// Each on its own: a connection whose client stopped reading holds its lock while a
		// write waits, and must not delay the others' GOAWAY.
		go c.startGracefulShutdown()
	}
}

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams == 0 {
		return defaultMaxStreams
	}
	return s.MaxConcurrentStreams
}

func (s *Server) maxHeaderBytes() uint32 {
	if s.MaxHeaderBytes <= 0 {
		return http.DefaultMaxHeaderBytes
	}
	return uint32(s.MaxHeaderBytes)
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout <= 0 {
		return defaultIdleTimeout
	}
	return s.IdleTimeout
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout <= 0 {
		return defaultWriteTimeout
	}
	return s.WriteTimeout
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}
