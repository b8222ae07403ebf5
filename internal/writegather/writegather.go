// Package writegather wraps a connection so that writes made close together leave in one
// system call: Write copies into a buffer and a short-lived goroutine sends what has gathered
// while the previous send was under way.
//
// Why: Go's HTTP/2 server flushes whenever its write queue runs empty, so with many streams
// finishing one by one each response became its own TLS record and its own write (1.7 writes
// per response under h2load -m10, docs/benchmarks.md). A loopback write costs the sender the
// receiver's delivery too; gathering the records is what nginx's event loop does by
// construction. The edge wraps its TLS connections (under crypto/tls, so whole records are
// gathered).
//
// What a caller sees: Write returns once its bytes are buffered (it waits only while more than
// maxPending bytes are), and a send error is returned by the next Write. A write of direct
// bytes or more that finds nothing gathered and no send under way is made at once, as on a
// plain connection: a large object streams as full TLS records, which gain nothing from
// gathering and would cost a copy each. A write deadline
// bounds the sends as it bounds a plain connection's writes, except that bytes already
// accepted get closeWait more when the deadline is set to the past: crypto/tls does that right
// after its close_notify, which would otherwise cut off what was gathered before it. Close
// sends what has gathered, for at most closeWait, then closes.
package writegather

import (
	"net"
	"sync"
	"time"
)

const (
	// maxPending bounds the bytes a connection holds that the peer has not taken: past it,
	// Write waits, so a slow reader slows the writer as with a plain connection.
	maxPending = 256 << 10
	// closeWait is how long gathered bytes may still take to leave once the deadline was set
	// to the past or the connection is closing.
	closeWait = time.Second
	// maxPooled is the largest buffer kept for reuse.
	maxPooled = 1 << 20
	// direct is the size from which a write finding nothing gathered and no send under way
	// is made at once on the caller's goroutine (see the package comment).
	direct = 8 << 10
)

var pool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// Conn is a net.Conn whose writes are gathered; see the package comment.
type Conn struct {
	net.Conn
	mu      sync.Mutex
	cond    sync.Cond
	buf     *[]byte   // gathered, not yet handed to the socket; nil when empty
	sending bool      // a send goroutine is running (it owns the bytes it took)
	closed  bool      // Close was called
	err     error     // the first send error; sticky
	wd      time.Time // the write deadline the caller set
	applied time.Time // the deadline last set on the connection
}

// New wraps c.
func New(c net.Conn) *Conn {
	g := &Conn{Conn: c}
	g.cond.L = &g.mu
	return g
}

// NetConn returns the wrapped connection.
func (g *Conn) NetConn() net.Conn { return g.Conn }

// Write buffers p and makes sure a send is under way.
func (g *Conn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.err == nil && !g.closed && g.buf != nil && len(*g.buf)+len(p) > maxPending {
		g.cond.Wait()
	}
	switch {
	case g.err != nil:
		return 0, g.err
	case g.closed:
		return 0, net.ErrClosed
	case len(p) >= direct && !g.sending && g.buf == nil:
		// Marked as sending so that writes meanwhile gather behind this one.
		g.sending = true
		g.mu.Unlock()
		n, err := g.writeNow(p, false)
		g.mu.Lock()
		if err != nil && g.err == nil {
			g.err = err
		}
		if g.buf != nil && g.err == nil {
			go g.send() // what gathered meanwhile; sending stays true
		} else {
			g.buf = nil
			g.sending = false
			g.cond.Broadcast()
		}
		return n, err
	}
	if g.buf == nil {
		g.buf = pool.Get().(*[]byte)
	}
	*g.buf = append(*g.buf, p...)
	if !g.sending {
		g.sending = true
		go g.send()
	}
	return len(p), nil
}

// send writes what has gathered until nothing is left or a write fails.
func (g *Conn) send() {
	g.mu.Lock()
	for g.buf != nil && g.err == nil {
		b := g.buf
		g.buf = nil
		g.cond.Broadcast() // room for waiting writers
		g.mu.Unlock()
		_, err := g.writeNow(*b, true)
		if cap(*b) <= maxPooled {
			*b = (*b)[:0]
			pool.Put(b)
		}
		g.mu.Lock()
		if err != nil {
			g.err = err
			if g.buf != nil {
				g.buf = nil // never sent: dropped with the connection
			}
		}
	}
	g.sending = false
	g.cond.Broadcast()
	g.mu.Unlock()
}

// writeNow writes p to the connection under the caller's deadline; accepted says whether
// Write has already returned for p (see the package comment). Only the holder of sending calls
// it.
func (g *Conn) writeNow(p []byte, accepted bool) (int, error) {
	g.mu.Lock()
	d := g.wd
	g.mu.Unlock()
	if accepted && !d.IsZero() && !d.After(time.Now()) {
		d = time.Now().Add(closeWait) // see the package comment
	}
	if !d.Equal(g.applied) {
		if err := g.Conn.SetWriteDeadline(d); err != nil {
			return 0, err
		}
		g.applied = d // only the holder of sending touches applied
	}
	return g.Conn.Write(p)
}

// SetWriteDeadline sets the deadline for Write's wait and for the sends.
func (g *Conn) SetWriteDeadline(t time.Time) error {
	g.mu.Lock()
	g.wd = t
	g.mu.Unlock()
	return nil
}

// SetDeadline sets the read deadline of the connection and the write deadline of the sends.
func (g *Conn) SetDeadline(t time.Time) error {
	_ = g.SetWriteDeadline(t)
	return g.Conn.SetReadDeadline(t)
}

// Close sends what has gathered, for at most closeWait, and closes the connection.
func (g *Conn) Close() error {
	g.mu.Lock()
	g.closed = true
	g.cond.Broadcast() // writers waiting for room give up
	if g.sending {
		stuck := time.AfterFunc(closeWait, func() {
			// A send blocked on a peer that does not read: fail it now.
			_ = g.Conn.SetWriteDeadline(time.Now())
		})
		for g.sending {
			g.cond.Wait()
		}
		stuck.Stop()
	}
	g.mu.Unlock()
	return g.Conn.Close()
}

// Listener wraps every connection it accepts.
type Listener struct{ net.Listener }

// Accept accepts a connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return New(c), nil
}
