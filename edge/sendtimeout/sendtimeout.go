// Package sendtimeout bounds the edge's writes to a client as nginx's send_timeout does: a
// write fails once the client has taken none of its bytes for the timeout, however long the
// whole write takes while the client keeps reading.
//
// Why not a deadline per write: the edge writes a cached object in one write, and a deadline
// on it would bound the whole download (as net/http's Server.WriteTimeout does), cutting off a
// client on a slow link that reads all the time. So a write that reaches its deadline having
// made progress goes on under a new one. That needs a connection whose write cut short by a
// deadline can go on where it stopped: a TCP connection's or a QUIC stream's, not crypto/tls's
// (it makes the error permanent), so the edge puts Conn beneath TLS.
//
// While a write waits, its deadline comes every quarter of the timeout to see whether the
// client took anything meanwhile. A write that has taken nothing for the timeout has one last
// try, under a deadline a sixteenth of the timeout ahead, and fails only if that takes nothing
// too: the deadline may have passed while the writer was not running (a machine short of CPU),
// and Go's poller then reports it without trying the write again, which cut off clients that
// read all along. So a client that stops reading is cut off between the timeout and a quarter
// and a sixteenth more (60 to 78.75 s by default) after the last byte it took. A deadline is
// moved only once less than half of such a quarter is left, so a connection that writes often
// seldom pays for a timer; the last try costs only a write that fails. A write deadline the
// connection's user sets (SetWriteDeadline: crypto/tls's close_notify, net/http's, a
// handler's through http.ResponseController) bounds the writes too, and ends a write for good
// when it passes, with no last try.
package sendtimeout

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Default is nginx's send_timeout.
const Default = 60 * time.Second

// Target is what the write deadline is set on: a net.Conn, or an HTTP/3 response (quic-go's
// stream deadline).
type Target interface {
	SetWriteDeadline(time.Time) error
}

// Writev writes a and then b (either may be empty) and returns how many bytes of the two it
// wrote; after an error that is the target's deadline, a further call must be able to go on
// with the bytes not written.
type Writev interface {
	Writev(a, b []byte) (int, error)
}

// Deadline is the send timeout of one connection or stream. Init it before use; one write at a
// time.
type Deadline struct {
	timeout int64 // ns
	target  Target

	// writing says a Write is under way, for SetWriteDeadline: set under mu, cleared without it
	// (a SetWriteDeadline that sees it still set arms a deadline for nothing).
	writing atomic.Bool

	// Times are monotonic ns since epoch (now), which costs a write one clock read.
	mu        sync.Mutex // protects the fields below; never held during a write
	hasCaller bool       // the user set a deadline (SetWriteDeadline)...
	caller    int64      // ...this one
	applied   int64      // the deadline on the target, 0 if none
	since     int64      // when the write under way last made progress, or began (see again)
	tried     bool       // the write under way has had its last try (see again)
}

// epoch is where Deadline's times count from.
var epoch = time.Now()

// now is the monotonic time since epoch.
func now() int64 { return int64(time.Since(epoch)) }

// Init readies d to set deadlines on target; a timeout of 0 or less means Default.
func (d *Deadline) Init(target Target, timeout time.Duration) {
	if timeout <= 0 {
		timeout = Default
	}
	d.timeout, d.target = int64(timeout), target
	d.hasCaller, d.caller, d.applied, d.since = false, 0, 0, 0
}

// Write writes a and then b with w under the send timeout and the user's deadline, and
// returns how many bytes of the two it wrote.
func (d *Deadline) Write(w Writev, a, b []byte) (int, error) {
	d.mu.Lock()
	d.writing.Store(true)
	d.since, d.tried = now(), false
	err := d.armLocked(d.since, d.step())
	d.mu.Unlock()
	defer d.writing.Store(false)
	if err != nil {
		return 0, err
	}
	total := 0
	for {
		n, err := w.Writev(a, b)
		total += n
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		if n >= len(a) {
			a, b = nil, b[n-len(a):]
		} else {
			a = a[n:]
		}
		if len(a) == 0 && len(b) == 0 {
			return total, nil
		}
		if goOn, armErr := d.again(n > 0); armErr != nil {
			return total, armErr
		} else if !goOn {
			return total, err
		}
	}
}

// again decides whether a write that a deadline ended goes on, having written something
// (progress) or not; if so, it arms the deadline anew.
//
// A write that made no progress for the timeout has one last try before it fails, with a
// deadline a little ahead (lastTry), and fails only if that takes nothing too. The deadline
// that ended the write may have passed while the writer was not running (a loaded machine):
// Go's poller then reports it without trying the write again, and checks the deadline before
// a write's system call, so the write is tried only under a deadline still ahead. Without the
// last try a client that read all along, whose socket had room again long before the late
// wake, was cut off for taking nothing. The last try moves since so that since + timeout is
// its deadline, which a SetWriteDeadline meanwhile keeps (armLocked).
func (d *Deadline) again(progress bool) (bool, error) {
	t := now()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.hasCaller && d.caller <= t:
		return false, nil // the user's deadline
	case t < d.applied:
		// No deadline of ours passed: an error that stays (crypto/tls's), or one the user
		// moved just as it passed. Going on could only spin.
		return false, nil
	case progress:
		d.since, d.tried = t, false
	case t-d.since >= d.timeout:
		if d.tried {
			return false, nil // the client took nothing for the timeout, nor on the last try
		}
		d.since, d.tried = t+d.lastTry()-d.timeout, true
	}
	return true, d.armLocked(t, d.step())
}

// step is how often a write that waits looks for progress.
func (d *Deadline) step() int64 { return d.timeout / 4 }

// lastTry is how long the last try of a write that made no progress for the timeout has
// (again): a quarter of a step, long enough for a writer that just ran to reach the system
// call before its deadline.
func (d *Deadline) lastTry() int64 { return d.timeout / 16 }

// armLocked makes the target's deadline the soonest of the user's, since + timeout and t +
// step. One still ahead of t by half a step or more, and no later than that, is left as it is.
func (d *Deadline) armLocked(t, step int64) error {
	want := min(d.since+d.timeout, t+step)
	if d.hasCaller {
		want = min(want, d.caller)
	}
	if d.applied == want || d.applied <= want && d.applied-t >= step/2 {
		return nil
	}
	d.applied = want
	return d.target.SetWriteDeadline(epoch.Add(time.Duration(want)))
}

// Arm sets the deadline for a write the caller makes on the target itself, beginning now, that
// cannot go on after a deadline (an HTTP/3 flush): it has between half the timeout and the
// timeout, and no last try (Write's), since such a write cannot go on.
func (d *Deadline) Arm() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.since = now()
	return d.armLocked(d.since, d.timeout)
}

// SetWriteDeadline sets the user's deadline. It bounds the write under way at once, as a
// net.Conn's does; otherwise it is applied when the next write begins.
func (d *Deadline) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hasCaller = !t.IsZero()
	d.caller = int64(t.Sub(epoch))
	if !d.writing.Load() {
		return nil
	}
	return d.armLocked(now(), d.step())
}

// Conn is a connection whose writes have a send timeout. The connection beneath must be one
// whose write cut short by a deadline can go on (TCP's).
type Conn struct {
	net.Conn
	w connWriter
	d Deadline
}

// connWriter is the connection beneath as a Writev, for Deadline.Write.
type connWriter struct{ net.Conn }

func (w *connWriter) Writev(a, b []byte) (int, error) {
	n, err := w.Write(a)
	if err != nil || len(b) == 0 {
		return n, err
	}
	m, err := w.Write(b)
	return n + m, err
}

// NewConn wraps c with a send timeout (0 or less: Default).
func NewConn(c net.Conn, timeout time.Duration) *Conn {
	sc := &Conn{Conn: c, w: connWriter{c}}
	sc.d.Init(c, timeout)
	return sc
}

// Write writes p under the send timeout.
func (c *Conn) Write(p []byte) (int, error) { return c.d.Write(&c.w, p, nil) }

// SetWriteDeadline sets a deadline for writes besides the send timeout.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.d.SetWriteDeadline(t) }

// SetDeadline sets the read deadline, and the write deadline as SetWriteDeadline does.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.d.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(t)
}

// NetConn returns the connection beneath, as crypto/tls's Conn does.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection beneath when it can (net/http asks, before closing
// with a request body unread).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Listener wraps every connection it accepts with a send timeout of Timeout (0: Default).
type Listener struct {
	net.Listener
	Timeout time.Duration
}

// Accept accepts a connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, l.Timeout), nil
}
