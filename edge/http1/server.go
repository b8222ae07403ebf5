// Package http1 serves plain HTTP/1.1 for the edge with a fast path for what a cache answers
// most: GET and HEAD requests without a body. It reads each request head in place and, when
// the head is one the fast path reads in exactly one way, calls the handler with a response
// that writes the whole answer in one system call; a connection whose next request is
// anything else (a body, an upgrade, HTTP/1.0, an odd byte) is handed, with every byte not yet
// consumed, to a net/http server that serves it from then on. So every doubtful request is
// judged by net/http, and smuggling, size limits and protocol errors keep net/http's answers,
// but one: an HTTP/1.0 request with Transfer-Encoding, which net/http frames by its
// Content-Length, is answered 400 and the connection closed (RFC 9112 §6.1): here when the
// fast path hands over its head, else by net/http itself, whose reads of a handed-off
// connection go through a guard that makes such a head malformed (GuardConn).
//
// What it leaves out of net/http's work on the fast path: a goroutine and a read per request
// to notice a client going away (here only once a handler runs long, and then, on a plain TCP
// connection, an entry in one epoll instance for the whole server, kept for the connection's
// life), sorting the response header, and a second write for a body beside its header (writev
// instead).
package http1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves HTTP/1.1 connections; see the package comment.
type Server struct {
	// Handler answers every request, on the fast path and on handed-off connections alike.
	Handler http.Handler
	// Fallback serves the connections the fast path hands over. Serve runs it and Shutdown
	// stops it; its Handler should be Handler. It must not be started by the caller.
	Fallback *http.Server
	// ConnContext, if set, derives each connection's context (as http.Server's does).
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// ConnState, if set, hears StateNew when a connection is accepted, StateClosed when the
	// fast path closes it, and StateHijacked when it is handed to Fallback (whose own
	// ConnState then follows it).
	ConnState func(net.Conn, http.ConnState)
	// ReadHeaderTimeout bounds the reading of a request head; IdleTimeout the wait for the
	// next request on a kept-alive connection.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// WriteTimeout bounds each write to the client, on the fast path and on handed-off
	// connections: a write the client takes nothing of for this long fails, and the
	// connection ends (default 60 s, nginx's send_timeout; see package sendtimeout). A client
	// that keeps reading keeps its download, however long it takes. Over TLS (a listener whose
	// connections are *tls.Conn) the server sets none: crypto/tls cannot go on after a write
	// deadline, so the send timeout must lie beneath TLS (sendtimeout.Listener under
	// tls.NewListener).
	WriteTimeout time.Duration
	// MaxHeaderBytes: heads longer than this, or than the read buffer, are handed over, and
	// Fallback applies its own limit to them.
	MaxHeaderBytes int
	ErrorLog       *log.Logger

	// LingerTimeout and LingerTime bound a lingering close: when a connection ends after an
	// answer and the client may have sent bytes the server has not read (pipelined requests),
	// the server half-closes it and reads and drops what comes until the client closes, so
	// that closing does not reset the connection under the answer's end. Each read waits at
	// most LingerTimeout (default 5 s) and the whole at most LingerTime (default 30 s), as
	// nginx's lingering_timeout and lingering_time; a negative LingerTime turns it off.
	// Shutdown waits for a lingering connection (bounded by its context); Close ends it at once.
	LingerTimeout time.Duration
	LingerTime    time.Duration

	initOnce      sync.Once
	handoff       *handoffListener
	fallbackDone  chan struct{}
	shutting      atomic.Bool
	mu            sync.Mutex
	listeners     map[net.Listener]struct{}
	conns         map[*conn]struct{}
	running       atomic.Int64  // connection goroutines (conn.serve) running, for the tests
	hw            *hangupWatch  // s.mu; see hangupWatch
	hwDone        chan struct{} // closed when the hangup watch's goroutine has returned (tests)
	hwStop        bool          // s.mu: the server has stopped; the hangup watch ends with its last connection
	noHangupWatch bool          // s.mu: the hangup watch has ended: none is made again
	hwFailed      bool          // s.mu: making it failed (logged), and is tried again at hwRetry
	hwRetry       time.Time
	watchEnded    func()                   // tests: called as each watch ends (but those unwatch ends)
	lingering     func()                   // tests: called when a connection has half-closed to linger
	headCut       func()                   // tests: called when a head still arriving at Shutdown gets headGrace
	graceSet      func(deadline time.Time) // tests: called with the read deadline cutIdle or cutHead set
}

// readBufferSize is a connection's read buffer, as net/http's.
const readBufferSize = 4 << 10

// init readies the server on first use, whichever of Serve, Shutdown and Close comes first.
func (s *Server) init() {
	s.initOnce.Do(func() {
		s.handoff = &handoffListener{conns: make(chan net.Conn), done: make(chan struct{})}
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
		s.fallbackDone = make(chan struct{})
		go func() {
			defer close(s.fallbackDone)
			s.Fallback.Serve(s.handoff)
		}()
	})
}

// Serve accepts connections on ln until ln fails or Shutdown is called; it then returns
// http.ErrServerClosed. It closes ln, as net/http's Serve does.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	// Shutdown closes only the listeners it finds: one whose Serve came after it (a node
	// stopped as it starts) stayed open, its connections queued for nobody.
	defer ln.Close()
	s.handoff.addr.CompareAndSwap(nil, &addrOf{ln.Addr()})
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait, as net/http does, and go on.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logf("http1: accept error: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.newConn(nc)
		s.mu.Lock()
		if s.shutting.Load() {
			s.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		if s.ConnState != nil {
			s.ConnState(nc, http.StateNew)
		}
		s.running.Add(1)
		go func() {
			defer s.running.Add(-1)
			c.serve()
		}()
	}
}

// Shutdown stops accepting, gives a request head still arriving one more second (headGrace)
// to arrive whole and an idle connection as long for its client's next request (each answered
// saying the connection ends, then closed), lets requests in flight and lingering closes
// finish, and shuts Fallback down; it returns once every connection is closed or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.shutting.Store(true)
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	defer s.stopHangupWatch()
	fallbackErr := make(chan error, 1)
	go func() { fallbackErr <- s.Fallback.Shutdown(ctx) }()
	s.cutHeads()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !s.cutIdle() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if err := <-fallbackErr; err != nil {
		return err
	}
	<-s.fallbackDone
	return nil
}

// Close closes every listener and connection at once, and Fallback.
func (s *Server) Close() error {
	s.init()
	s.shutting.Store(true)
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.shut()
	}
	s.mu.Unlock()
	s.stopHangupWatch()
	s.Fallback.Close()
	<-s.fallbackDone
	return nil
}

// cutIdle gives the connections waiting for a request headGrace for one (conn.cutIdle), and
// reports whether none is left. It closed them at once, and lost the request a busy client
// sent in that instant.
func (s *Server) cutIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle.Load() {
			c.cutIdle()
		}
	}
	return len(s.conns) == 0
}

// cutHeads gives the connections still receiving a request head headGrace to receive the
// rest (cutHead); those that begin one later see the shutdown themselves (readHead).
func (s *Server) cutHeads() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.inHead.Load() {
			c.cutHead()
		}
	}
}

func (s *Server) shuttingDown() bool { return s.shutting.Load() }

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.endHangupWatch()
	s.mu.Unlock()
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

// handoffListener is what Fallback serves: the connections the fast path hands over.
type handoffListener struct {
	addr      atomic.Pointer[addrOf] // the first served listener's
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr {
	if a := l.addr.Load(); a != nil {
		return a.Addr
	}
	return &net.TCPAddr{}
}

type addrOf struct{ net.Addr }

// give hands c to Fallback; false if Fallback has stopped.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// prefixConn is a handed-off connection: the bytes the fast path had buffered come first.
//
// It also gives a request line too long to parse its status. Fallback (net/http) answers any
// head over its limit with "431 Request Header Fields Too Large", written straight to the
// connection before a handler sees the request, also when it is the request line that did not
// end within the limit; RFC 9112 §3 asks for 414 URI Too Long there, which nginx answers. A
// handed-off connection starts at its request's first byte (the fast path hands over a head it
// could not take whole), so until Fallback has written anything, no line end read means the
// first request's line is still going on: a 431 written then is that line's, and becomes a
// 414. A head whose first line ended, and anything after Fallback's first write, is left as
// net/http answers it.
type prefixConn struct {
	net.Conn
	prefix []byte
	// lineEnded: a line end was read, or Fallback wrote: the 431 rewrite is off. Reads (net/http's
	// background read too) and writes happen on different goroutines.
	lineEnded atomic.Bool
	// rewriting: the 414 is being written, wrote bytes of it so far (writes only): a write a
	// send deadline cut short goes on with the rest of the 414, not of the 431.
	rewriting bool
	wrote     int
}

func (c *prefixConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if len(c.prefix) > 0 {
		n = copy(p, c.prefix)
		c.prefix = c.prefix[n:]
	} else {
		n, err = c.Conn.Read(p)
	}
	if n > 0 && !c.lineEnded.Load() && bytes.IndexByte(p[:n], '\n') >= 0 {
		c.lineEnded.Store(true)
	}
	return n, err
}

// headTooLarge starts net/http's answer to a head over its limit (net/http's server.go, "431
// Request Header Fields Too Large"); uriTooLong is that answer for a request line, in the same
// form, the connection closed after it as net/http closes it.
var headTooLarge = []byte("HTTP/1.1 431 ")

const uriTooLong = "HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n414 URI Too Long"

func (c *prefixConn) Write(p []byte) (int, error) {
	if c.rewriting {
		return c.writeTooLong(p)
	}
	if !c.lineEnded.Load() && !c.lineEnded.Swap(true) && bytes.HasPrefix(p, headTooLarge) && len(p) >= len(uriTooLong) {
		c.rewriting = true
		return c.writeTooLong(p)
	}
	return c.Conn.Write(p)
}

// writeTooLong writes the rest of uriTooLong in place of p, the rest of net/http's 431. The
// bytes of the 414 written count as bytes of p (the longer), p whole once the 414 is: a caller
// that goes on with p[n:] after an error (sendtimeout, after a send deadline cut the write
// short) gets the rest of the 414 written, not the 431 spliced after a part of it.
func (c *prefixConn) writeTooLong(p []byte) (int, error) {
	n, err := io.WriteString(c.Conn, uriTooLong[c.wrote:])
	c.wrote += n
	if err != nil {
		return min(n, len(p)), err
	}
	c.rewriting = false
	return len(p), nil
}

// NetConn returns the connection beneath, as tls.Conn's does.
func (c *prefixConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection beneath, which net/http asks of a connection it is
// about to close with a request body unread (closeWriteAndWait), so that the client reads the
// answer's end before the close. Without it a handed-off connection could not.
func (c *prefixConn) CloseWrite() error { return closeWrite(c.Conn) }
