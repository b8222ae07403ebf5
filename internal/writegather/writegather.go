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
// What a caller sees: Write returns once its bytes are buffered (it waits while maxPending
// bytes are gathered, so at most about twice that is held: one send's worth under way and the
// next gathering), and a send error is returned by the next Write. A write of minDirect
// bytes or more that finds nothing gathered and no send under way is made at once, as on a
// plain connection: a large object streams as full TLS records, which gain nothing from
// gathering and would cost a copy each. A write deadline bounds Write's wait and the sends
// (the one under way too) as it bounds a plain connection's writes, and a Write after it fails
// at once, except for one case: when it is set to the past while bytes accepted earlier are
// still gathered or being sent, those get closeWait from that moment to leave. crypto/tls sets
// the deadline to the past right after queueing its close_notify, which would otherwise cut off
// what was gathered before it. Close sends what has gathered, for at most closeWait, then
// closes.
package writegather

import (
	"errors"
	"net"
	"os"
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
	// minDirect is the size from which a write finding nothing gathered and no send under way
	// is made at once on the caller's goroutine (see the package comment).
	minDirect = 8 << 10
)

var pool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// Conn is a net.Conn whose writes are gathered; see the package comment.
type Conn struct {
	net.Conn
	mu      sync.Mutex
	cond    sync.Cond
	buf     *[]byte   // gathered, not yet handed to the socket; nil when empty
	sending bool      // a send (a goroutine's, or a direct write) is under way
	direct  bool      // the send under way is a caller's direct write
	closed  bool      // Close was called
	err     error     // the first send error; sticky
	wd      time.Time // the write deadline the caller set
	grace   time.Time // set when wd was set to the past with bytes accepted: their deadline
	closeBy time.Time // set by Close: no send lasts past it
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

// expiredLocked reports whether the caller's deadline has passed.
func (g *Conn) expiredLocked() bool { return !g.wd.IsZero() && !g.wd.After(time.Now()) }

// Write buffers p and makes sure a send is under way.
func (g *Conn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var wake *time.Timer // wakes the wait below at the deadline
	var wakeAt time.Time
	defer func() {
		if wake != nil {
			wake.Stop()
		}
	}()
	for {
		switch {
		case g.err != nil:
			return 0, g.err
		case g.closed:
			return 0, net.ErrClosed
		case g.expiredLocked():
			return 0, os.ErrDeadlineExceeded
		}
		if g.buf == nil || len(*g.buf)+len(p) <= maxPending {
			break
		}
		if !g.wd.IsZero() && !g.wd.Equal(wakeAt) {
			if wake != nil {
				wake.Stop()
			}
			wakeAt = g.wd
			wake = time.AfterFunc(time.Until(wakeAt), func() {
				g.mu.Lock()
				g.cond.Broadcast()
				g.mu.Unlock()
			})
		}
		g.cond.Wait()
	}
	if len(p) >= minDirect && !g.sending && g.buf == nil {
		// Marked as sending so that writes meanwhile gather behind this one.
		g.sending, g.direct = true, true
		g.mu.Unlock()
		n, err := g.writeNow(p)
		g.mu.Lock()
		g.direct = false
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
		_, err := g.writeNow(*b)
		if cap(*b) <= maxPooled {
			*b = (*b)[:0]
			pool.Put(b)
		}
		g.mu.Lock()
		if err != nil {
			g.err = err
			g.buf = nil // never sent: dropped with the connection
		}
	}
	g.sending = false
	g.cond.Broadcast()
	g.mu.Unlock()
}

// deadlineLocked is the deadline for the send under way (see the package comment).
func (g *Conn) deadlineLocked() time.Time {
	d := g.wd
	if !g.direct && !g.grace.IsZero() {
		d = g.grace
	}
	if !g.closeBy.IsZero() && (d.IsZero() || g.closeBy.Before(d)) {
		d = g.closeBy
	}
	return d
}

// applyLocked sets the send's deadline on the connection if it changed.
func (g *Conn) applyLocked() error {
	d := g.deadlineLocked()
	if d.Equal(g.applied) {
		return nil
	}
	g.applied = d
	return g.Conn.SetWriteDeadline(d)
}

// writeNow writes p to the connection under the send's deadline. Only the holder of sending
// calls it.
func (g *Conn) writeNow(p []byte) (int, error) {
	g.mu.Lock()
	err := g.applyLocked()
	g.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return g.Conn.Write(p)
}

// SetWriteDeadline sets the deadline for Write and for the sends, the one under way included.
func (g *Conn) SetWriteDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wd = t
	g.grace = time.Time{}
	if now := time.Now(); !t.IsZero() && !t.After(now) && (g.buf != nil || (g.sending && !g.direct)) {
		g.grace = now.Add(closeWait) // fixed here: bytes accepted before get this long, once
	}
	g.cond.Broadcast() // a Write waiting for room looks at the new deadline
	if g.sending {
		return g.applyLocked()
	}
	return nil
}

// SetDeadline sets the read deadline of the connection and the write deadline as
// SetWriteDeadline does.
func (g *Conn) SetDeadline(t time.Time) error {
	if err := g.SetWriteDeadline(t); err != nil {
		return err
	}
	return g.Conn.SetReadDeadline(t)
}

// Close sends what has gathered, for at most closeWait, and closes the connection. It returns
// the error that dropped gathered bytes, if one did.
func (g *Conn) Close() error {
	g.mu.Lock()
	g.closed = true
	g.closeBy = time.Now().Add(closeWait)
	g.cond.Broadcast() // writers waiting for room give up
	if g.sending {
		_ = g.applyLocked() // the send under way ends by closeBy
		for g.sending {
			g.cond.Wait()
		}
	}
	sendErr := g.err
	g.mu.Unlock()
	if err := g.Conn.Close(); err != nil {
		return err
	}
	if sendErr != nil && !errors.Is(sendErr, net.ErrClosed) {
		return sendErr
	}
	return nil
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
