package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meridian-cdn/meridian/edge/http1"
)

// tlsListener is the HTTPS port's listener for net/http: it does each connection's TLS
// handshake itself, in a goroutine of its own (a client slow to handshake holds up nobody),
// and hands net/http the connection once it is done. One that negotiated h2 is handed as the
// *tls.Conn it is: net/http's own handshake call on it does nothing and it dispatches it to
// TLSNextProto (edge/h2, or net/http's HTTP/2 under http2: std) as before. One that speaks
// HTTP/1.1 (by ALPN or without it) is handed read through the guard against HTTP/1.0 requests
// with Transfer-Encoding (http1.TLSGuardConn), as every HTTP/1 connection net/http serves on
// the plain port is: net/http would frame such a request by its Content-Length. The guarded
// connection carries its TLS state, from which net/http sets each request's TLS.
//
// What net/http did for a *tls.Conn before the first request is redone here: the handshake
// under its timeout (net/http's, from the server's timeouts), and its 400 to a plain HTTP
// request. Closing the listener (at the server's shutdown, or when its Serve returns) closes
// the connections still handshaking or not yet taken, and returns once every goroutine of the
// listener has ended.
type tlsListener struct {
	inner   net.Listener
	config  *tls.Config
	timeout time.Duration // per handshake; 0: none
	log     *slog.Logger
	// count adds to the node's open connections: a connection counts from its accept, as
	// when net/http tracked it from there (StateNew), until net/http takes it.
	count func(int64) int64

	ready chan net.Conn // handshaken connections, for Accept
	errs  chan error    // the inner listener's Accept errors, for Accept
	ctx   context.Context
	stop  context.CancelFunc // ends ctx: at Close

	mu      sync.Mutex // protects started, closed; held while the loop's Add is made
	started bool
	closed  bool
	wg      sync.WaitGroup // the accept loop and the handshakes under way
	once    sync.Once
	err     error // Close's
}

// plainHTTPAnswer is net/http's answer to a plain HTTP request on its TLS port.
const plainHTTPAnswer = "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"

func newTLSListener(inner net.Listener, config *tls.Config, timeout time.Duration, log *slog.Logger, count func(int64) int64) *tlsListener {
	ctx, stop := context.WithCancel(context.Background())
	return &tlsListener{inner: inner, config: config, timeout: timeout, log: log, count: count,
		ready: make(chan net.Conn), errs: make(chan error), ctx: ctx, stop: stop}
}

// netHTTPHandshakeTimeout is the handshake timeout net/http gives srv's TLS connections
// (tlsHandshakeTimeout in its server.go): the least positive one of ReadHeaderTimeout,
// ReadTimeout and WriteTimeout, 0 (none) if none is positive.
func netHTTPHandshakeTimeout(srv *http.Server) time.Duration {
	var d time.Duration
	for _, v := range []time.Duration{srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout} {
		if v > 0 && (d == 0 || v < d) {
			d = v
		}
	}
	return d
}

// Accept returns the next connection whose handshake is done. The first call starts the
// accept loop; an error of the inner listener is returned as it comes (net/http's Serve backs
// off after a temporary one, meanwhile the loop waits to hand over the next).
func (l *tlsListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.started && !l.closed {
		l.started = true
		l.wg.Add(1)
		go l.acceptLoop()
	}
	l.mu.Unlock()
	select {
	case c := <-l.ready:
		l.count(-1) // net/http counts it from here (StateNew)
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// acceptLoop accepts connections and starts a handshake for each, until Close.
func (l *tlsListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errs <- err:
				continue
			case <-l.ctx.Done():
				return
			}
		}
		l.count(1)
		l.wg.Add(1)
		go l.handshake(c)
	}
}

// handshake does c's TLS handshake and hands the connection to Accept, or closes it.
func (l *tlsListener) handshake(c net.Conn) {
	defer l.wg.Done()
	tc := tls.Server(c, l.config)
	// Close cuts the handshake off. The callback runs in a goroutine of its own, which Close
	// waits for as for the handshake's (wg).
	l.wg.Add(1)
	stopClose := context.AfterFunc(l.ctx, func() {
		defer l.wg.Done()
		c.Close()
	})
	if l.timeout > 0 {
		dl := time.Now().Add(l.timeout)
		c.SetReadDeadline(dl)
		c.SetWriteDeadline(dl)
	}
	err := tc.Handshake()
	if !stopClose() { // Close came first: c is closed, or being closed
		l.count(-1)
		return
	}
	l.wg.Done() // the callback's: it will not run
	if err != nil {
		reason := err.Error()
		// A client that speaks plain HTTP gets net/http's answer, on the connection beneath.
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			io.WriteString(re.Conn, plainHTTPAnswer)
			reason = "client sent an HTTP request to an HTTPS server"
		}
		c.Close()
		l.count(-1)
		l.log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "err", reason)
		return
	}
	if l.timeout > 0 {
		c.SetReadDeadline(time.Time{})
		c.SetWriteDeadline(time.Time{})
	}
	var hand net.Conn = tc
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		hand = http1.NewTLSGuardConn(tc)
	}
	select {
	case l.ready <- hand:
	case <-l.ctx.Done():
		c.Close()
		l.count(-1)
	}
}

// looksLikeHTTP is net/http's test (tlsRecordHeaderLooksLikeHTTP) of whether what came as a
// TLS record header is the start of a plain HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// Close stops accepting, closes the connections still handshaking or not yet taken, and
// returns once the listener's goroutines have ended.
func (l *tlsListener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.stop()
		l.err = l.inner.Close()
		l.wg.Wait()
	})
	return l.err
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }
