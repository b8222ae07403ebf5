package fetch

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// headConn is a connection of the built *http.Transport that bounds the bytes read for an
// answer's heads, every 1xx head and the final one together (Config.MaxHeadBytes), as
// h1Transport's limitReader does. The Transport bounds them so itself only when no
// Got1xxResponse hook takes the 1xx; with one (exchangeTrace's always, to count them), it
// gives each head after a 1xx the whole bound again beyond what its read buffer already holds,
// and an upstream could send max1xx+1 heads of the bound each.
//
// An exchange arms the bound when it gets the connection (GotConn) and disarms it once the
// Transport has handed back the answer's head, before any read of the body; it disarms only
// its own arming, as the next exchange may have armed the connection before (the Transport
// puts the connection of an answer without a body back before it hands that answer back). A
// read already waiting when the exchange begins (the Transport's on an idle connection) is
// not cut to the bound: its bytes count, and the Transport's read buffer is no larger than the
// bound. (Over TLS it is the TLS layer's read, of up to a record, 16 KiB: a bound under that
// may let heads of up to that through.)
//
// Beneath TLS it counts records, not heads: the bound there has tlsRoom more (armBound).
type headConn struct {
	net.Conn

	// armed is set while an exchange's heads are being read. It changes under mu but is read
	// without it first: past its heads (a body, an upgraded connection's whole life) a read
	// costs two atomic loads, not two rounds of the mutex.
	armed atomic.Bool

	// mu guards the fields below and armed's changes; reads come from the Transport's
	// goroutines.
	mu   sync.Mutex
	max  int64  // Config.MaxHeadBytes, which the error names
	left int64  // what the heads may still take
	over bool   // a read was asked for past the bound
	gen  uint64 // arms so far: which exchange armed it last
}

// headConnOf returns the headConn under a connection GotConn reports, or nil if there is none
// or the connection speaks HTTP/2, whose heads the Transport bounds each as HTTP/2 counts them;
// overTLS says it lies beneath TLS.
func headConnOf(c net.Conn) (hc *headConn, overTLS bool) {
	if fc, ok := c.(*framingConn); ok {
		c = fc.Conn
	}
	if tc, ok := c.(*tls.Conn); ok {
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return nil, false
		}
		c, overTLS = tc.NetConn(), true
	}
	hc, _ = c.(*headConn)
	return hc, overTLS
}

// maxTLSRecord is the longest TLS record on the wire: a 5-byte header and 16 KiB of data with
// what protects it, up to 2 KiB in TLS 1.2 (RFC 5246 §6.2.3; 256 bytes in TLS 1.3).
const maxTLSRecord = 5 + 1<<14 + 2048

// tlsRoom is what a bound of max on heads allows beneath TLS besides max: TLS reads whole
// records, and the one that carries a head's end also carries the body's first bytes, up to
// 16 KiB of them (nginx's ssl_buffer_size; Go's servers past a connection's first 128 KiB),
// so a head of 48 KiB went past a bound of 64 KiB counted beneath TLS; and each record adds
// its framing, 22 to some 90 bytes, which a sixteenth of the bound covers for records of
// 1.5 KiB or more (even Go's first records, of some 1.2 KiB, add under 3 %). A TLS 1.3
// session ticket read with the first answer counts too, a few hundred bytes. Each head alone
// still has max as the Transport counts it, in plaintext (MaxResponseHeaderBytes).
func tlsRoom(max int64) int64 { return maxTLSRecord + max/16 }

// armBound returns what headConn lets an exchange's heads take beneath TLS or not.
func armBound(max int64, overTLS bool) int64 {
	if overTLS {
		return max + tlsRoom(max)
	}
	return max
}

// arm starts bounding the bytes read for an exchange's heads to bound; the error past it
// names max (Config.MaxHeadBytes). It returns the arming, for disarm.
func (c *headConn) arm(bound, max int64) (gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.max, c.left, c.over = max, bound, false
	c.armed.Store(true)
	return c.gen
}

// disarm stops the bound that arm's gen started and reports whether a read went past it. A
// later arming is another exchange's, whose bound stays: the exchange of gen had its head.
func (c *headConn) disarm(gen uint64) (over bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return false
	}
	c.armed.Store(false)
	return c.over
}

func (c *headConn) Read(p []byte) (int, error) {
	if c.armed.Load() {
		c.mu.Lock()
		// Checked again: disarmed since, the read is not cut to a bound that ended.
		if c.armed.Load() {
			if c.left <= 0 {
				c.over = true
				err := headTooLargeError{c.max}
				c.mu.Unlock()
				return 0, err
			}
			p = p[:min(int64(len(p)), c.left)]
		}
		c.mu.Unlock()
	}
	n, err := c.Conn.Read(p)
	// Looked at again after the read: one that began disarmed and was armed while it waited
	// (the Transport's on an idle connection) read the exchange's heads too.
	if n > 0 && c.armed.Load() {
		c.mu.Lock()
		if c.armed.Load() {
			c.left -= int64(n)
		}
		c.mu.Unlock()
	}
	return n, err
}

// ReadFrom keeps the connection's own (sendfile, splice) for request bodies.
func (c *headConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

// CloseWrite is the connection's own: the body of a 101 Switching Protocols answer is the
// connection, and ReverseProxy passes a client's half-close on to the upstream through it.
// Hidden, an upgraded connection was torn down at the client's half-close, and what the
// upstream sent after it was lost.
func (c *headConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("close write: %w", http.ErrNotSupported)
}
