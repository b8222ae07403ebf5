package fetch

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
)

// framingConn is an HTTP/1 connection of the built *http.Transport (a plain one, or one over
// TLS that did not choose HTTP/2) whose answer heads are looked at in plaintext before the
// Transport reads them, for what h1Transport refuses or closes the connection after: an
// HTTP/1.0 answer with Transfer-Encoding (errCodedHTTP10), a Transfer-Encoding net/http does
// not see (whitespace before its colon) without a Content-Length (errHiddenCoding), and an
// answer framed two ways, whose connection must not be reused (RFC 9112 §6.3, §11.1). The
// Transport drops Transfer-Encoding from an HTTP/1.0 answer, and Content-Length beside
// Transfer-Encoding, before its caller sees the answer: only the bytes tell.
//
// An exchange arms it when it gets the connection (GotConn, before the request is written).
// Each head of the answer is then gathered whole before it is handed on: a 1xx as soon as it
// is, the final one once judged. A faulty final head fails the read past its status line, and
// so the exchange (refuse); one framed two ways is handed on with a "Connection: close" line
// added, so that the Transport closes the connection after it. A read already waiting when the
// exchange was armed (the Transport's, on an idle connection) has its bytes gathered too. Past
// maxHead bytes without the head's end, the bytes go on as they came, for the Transport's
// bound to fail them.
type framingConn struct {
	net.Conn
	maxHead int

	mu    sync.Mutex // guards the fields below; reads come from the Transport's goroutine
	armed bool       // the final head of the armed exchange is still to be judged
	buf   []byte     // bytes read from Conn and not yet handed on, from off
	off   int        // buf[:off] handed on
	ready int        // buf[off:ready] may be handed on
	from  int        // where the search for the end of the head at buf[ready:] goes on
	err   error      // the verdict on a faulty head: every read returns it
}

// arm makes the next bytes read the start of an exchange's answer.
func (c *framingConn) arm() {
	c.mu.Lock()
	c.armed, c.err, c.from = true, nil, 0
	c.mu.Unlock()
}

func (c *framingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	for {
		if c.off < c.ready {
			n := copy(p, c.buf[c.off:c.ready])
			c.off += n
			if c.off == len(c.buf) {
				c.buf, c.off, c.ready, c.from = c.buf[:0], 0, 0, 0
			}
			c.mu.Unlock()
			return n, nil
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return 0, err
		}
		if c.ready < len(c.buf) {
			if !c.armed {
				c.ready = len(c.buf)
				continue
			}
			if c.look() {
				continue
			}
		}
		armed := c.armed
		c.mu.Unlock()
		var n int
		var err error
		if !armed {
			// Nothing gathered: straight into p, unless the exchange was armed meanwhile.
			n, err = c.Conn.Read(p)
			c.mu.Lock()
			if n == 0 || !c.armed {
				c.mu.Unlock()
				return n, err
			}
			c.buf = append(c.buf, p[:n]...)
		} else {
			// Into buf's room: only this goroutine changes buf (arm does not touch it).
			c.buf = slices.Grow(c.buf, 4<<10)
			n, err = c.Conn.Read(c.buf[len(c.buf):cap(c.buf)])
			c.mu.Lock()
			c.buf = c.buf[:len(c.buf)+n]
		}
		if err != nil {
			// What came goes on as it came; the next read meets the error again (the end of
			// the stream, a deadline, the bound on heads), for the Transport to report.
			c.armed = false
			if c.ready == len(c.buf) {
				c.mu.Unlock()
				return 0, err
			}
		}
	}
}

// look judges the head at buf[ready:] once it is whole, and reports whether it moved on: a
// 1xx head may be handed on; a final head has its verdict (armed is cleared, err set for a
// faulty one). c.mu is held.
func (c *framingConn) look() bool {
	b := c.buf[c.ready:]
	end, next := headEnd(b, c.from)
	if end < 0 {
		c.from = next
		if len(b) > c.maxHead {
			c.armed = false
			return true
		}
		return false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if interim(line) {
		c.ready += end + 1
		if b[end] == '\r' {
			c.ready++
		}
		c.from = 0
		return true
	}
	c.armed = false
	te, cl, named := framingOf(b[:end])
	switch {
	case te && bytes.HasPrefix(line, []byte("HTTP/1.0")):
		c.refuse(errCodedHTTP10, len(line)+1)
	case te && !named && !cl:
		c.refuse(errHiddenCoding, len(line)+1)
	case te && cl:
		at := c.ready + end
		c.buf = append(c.buf[:at], append([]byte("Connection: close\r\n"), c.buf[at:]...)...)
	}
	return true
}

// refuse fails the head at buf[ready:] with err past its status line, of n bytes: a failed
// first read of an answer is one the Transport takes for a connection the upstream closed
// while idle, and it sends a GET again on a fresh one (the upstream was asked twice); a read
// of the fields that fails ends the exchange with err. c.mu is held.
func (c *framingConn) refuse(err error, n int) {
	c.err = fmt.Errorf("read response header: %w", err)
	c.ready += n
}

// interim reports whether line is the status line of a 1xx answer other than 101, which ends
// the heads (its connection is the upgraded protocol's).
func interim(line []byte) bool {
	_, rest, _ := bytes.Cut(line, []byte(" "))
	return len(rest) >= 3 && rest[0] == '1' && isDigit(rest[1]) && isDigit(rest[2]) && string(rest[:3]) != "101"
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// ReadFrom keeps the connection's own (sendfile, splice) for request bodies.
func (c *framingConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

// CloseWrite is the connection's own, as headConn's (an upgraded connection's half-close).
func (c *framingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("close write: %w", http.ErrNotSupported)
}

// tlsHandshakeTimeoutError is the Transport's own for a handshake past TLSHandshakeTimeout,
// which dialTLS now makes.
type tlsHandshakeTimeoutError struct{}

func (tlsHandshakeTimeoutError) Timeout() bool   { return true }
func (tlsHandshakeTimeoutError) Temporary() bool { return true }
func (tlsHandshakeTimeoutError) Error() string   { return "net/http: TLS handshake timeout" }

// dialTLS is the Transport's dial of an https upstream, made here so that an HTTP/1.1
// connection can be a framingConn: the handshake the Transport would make (the TLS config
// cloned, the server name from the address, HTTP/2 offered first, within TLSHandshakeTimeout).
// HTTP/2 is offered only if h2 (an upgrade's transport speaks HTTP/1.1 alone: offered HTTP/2,
// an upstream that speaks it chose it, and the Transport spoke HTTP/1.1 on it).
// A connection that chose HTTP/2 goes back as the *tls.Conn the Transport needs to speak it
// (whose heads are HPACK fields, not bytes to misread); any other as a framingConn, which the
// Transport takes for a connection without TLS: its answers carry no TLS state.
func (c Config) dialTLS(dial func(ctx context.Context, network, addr string) (net.Conn, error), h2 bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := &tls.Config{}
		if c.TLSConfig != nil {
			cfg = c.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg.ServerName = host
		}
		switch {
		case len(cfg.NextProtos) == 0 && h2:
			cfg.NextProtos = []string{"h2", "http/1.1"}
		case len(cfg.NextProtos) == 0:
			cfg.NextProtos = []string{"http/1.1"}
		case !h2:
			cfg.NextProtos = slices.DeleteFunc(slices.Clone(cfg.NextProtos), func(p string) bool { return p == "h2" })
		}
		hc := &headConn{Conn: nc}
		tc := tls.Client(hc, cfg)
		hctx := ctx
		if d := c.TLSHandshakeTimeout; d > 0 {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeoutCause(ctx, d, tlsHandshakeTimeoutError{})
			defer cancel()
		}
		if err := tc.HandshakeContext(hctx); err != nil {
			nc.Close()
			if cause := context.Cause(hctx); cause != nil && ctx.Err() == nil {
				return nil, cause
			}
			return nil, err
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return tc, nil
		}
		return &framingConn{Conn: tc, maxHead: c.MaxHeadBytes}, nil
	}
}
