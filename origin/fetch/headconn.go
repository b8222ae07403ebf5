package fetch

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
)

// headConn is a connection of the built *http.Transport that bounds the bytes read for an
// answer's heads, every 1xx head and the final one together (Config.MaxHeadBytes), as
// h1Transport's limitReader does. The Transport bounds them so itself only when no
// Got1xxResponse hook takes the 1xx; with one (exchangeTrace's always, to count them), it
// gives each head after a 1xx the whole bound again beyond what its read buffer already holds,
// and an upstream could send max1xx+1 heads of the bound each.
//
// An exchange arms the bound when it gets the connection (GotConn) and disarms it once the
// Transport has handed back the answer's head, before any read of the body. A read already
// waiting when the exchange begins (the Transport's on an idle connection) is not cut to the
// bound: its bytes count, and the Transport's read buffer is no larger than the bound. (Over
// TLS it is the TLS layer's read, of up to a record, 16 KiB: a bound under that may let heads
// of up to that through.)
type headConn struct {
	net.Conn

	mu    sync.Mutex // guards the fields below; reads come from the Transport's goroutines
	armed bool       // an exchange's heads are being read
	max   int64      // the bound armed
	left  int64      // what the heads may still take
	over  bool       // a read was asked for past the bound
}

// headConnOf returns the headConn under a connection GotConn reports, or nil if there is none
// or the connection speaks HTTP/2, whose heads the Transport bounds each as HTTP/2 counts them.
func headConnOf(c net.Conn) *headConn {
	if tc, ok := c.(*tls.Conn); ok {
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return nil
		}
		c = tc.NetConn()
	}
	hc, _ := c.(*headConn)
	return hc
}

// arm starts bounding the heads of an exchange to max bytes.
func (c *headConn) arm(max int64) {
	c.mu.Lock()
	c.armed, c.max, c.left, c.over = true, max, max, false
	c.mu.Unlock()
}

// disarm stops bounding and reports whether a read went past the bound.
func (c *headConn) disarm() (over bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	return c.over
}

func (c *headConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.armed {
		if c.left <= 0 {
			c.over = true
			err := headTooLargeError{c.max}
			c.mu.Unlock()
			return 0, err
		}
		p = p[:min(int64(len(p)), c.left)]
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if c.armed {
		c.left -= int64(n)
	}
	c.mu.Unlock()
	return n, err
}

// ReadFrom keeps the connection's own (sendfile, splice) for request bodies.
func (c *headConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }
