// Package rawconn gives a TCP connection reads and writes by raw, non-blocking system calls
// (no entersyscall), parked in the runtime's network poller while the socket is empty or
// full, as net.Conn's own are.
//
// Why: a write over loopback (or to a fast peer) runs the receiver's delivery inline for
// tens of microseconds, long enough that the runtime's sysmon takes the P away from a
// goroutine in an ordinary system call and wakes another thread to run something else, which
// then parks again when the write returns. Under wrk against the edge that was most of the
// process's futex calls, and kept sysmon polling (2,178 futex and 8,078 nanosleep calls per
// 15,849 requests; docs/benchmarks.md, issue 15). A non-blocking socket call never blocks, so holding the P through it costs
// nothing. DNS's UDP loop does the same (dnsroute/udp_linux.go).
//
// It also peeks at a socket without reading or waiting (Prober, Conn.Peek), for a pool of
// kept-alive client connections that must not send on one the peer has written to or closed,
// and watches many sockets for their peers ending them on one goroutine (HangupWatch), for a
// server that must hear a client go away while its handler runs.
package rawconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// TCPer is implemented by a connection that wraps a TCP connection without changing its
// Read and Write (the edge's RTT sampling changes only Close), so raw I/O on the TCP socket
// is the same I/O.
type TCPer interface {
	TCP() *net.TCPConn
}

// Conn is a connection whose Read and Write are raw system calls on its TCP socket. Every
// other method (Close, deadlines, addresses) is the wrapped connection's; deadlines apply
// to raw reads and writes as to net.Conn's.
type Conn struct {
	net.Conn // the wrapped connection
	tcp      *net.TCPConn
	rc       syscall.RawConn

	rmu sync.Mutex // one read at a time owns r
	r   reader
	wmu sync.Mutex // one write at a time owns w
	w   writer
	x   exchanger // WriteRead's; under both rmu and wmu
	l   looper    // Loop's; under rmu
	pk  prober    // Peek's
	wc  watchCtl  // a HangupWatch's Add and Remove of it; one at a time
}

// New returns c with raw I/O, or nil when c is not a TCP connection (or a TCPer) or the
// system has no raw I/O here.
func New(c net.Conn) *Conn {
	var tc *net.TCPConn
	switch t := c.(type) {
	case *net.TCPConn:
		tc = t
	case TCPer:
		tc = t.TCP()
	}
	if tc == nil || !supported {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	rw := &Conn{Conn: c, tcp: tc, rc: rc}
	rw.r.init()
	rw.w.init()
	rw.x.init(&rw.r)
	rw.l.init()
	rw.pk.init()
	rw.wc.init()
	return rw
}

// Wrap returns c with raw I/O when New can give it, else c itself.
func Wrap(c net.Conn) net.Conn {
	if rw := New(c); rw != nil {
		return rw
	}
	return c
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// CloseWrite shuts down the writing side of the TCP connection, as net.TCPConn's does: a
// server that lingers before closing (net/http's, for a request body it did not read) sends
// its end of the answer first.
func (c *Conn) CloseWrite() error { return c.tcp.CloseWrite() }

// Read reads into p, waiting in the poller while the socket is empty.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.r.read(c.rc, p)
	if err != nil {
		err = c.opError("read", err)
	}
	return n, err
}

// Write writes p, waiting in the poller while the send buffer is full.
func (c *Conn) Write(p []byte) (int, error) { return c.Writev(p, nil) }

// Writev writes a and then b (either may be empty) with one writev where the socket takes
// them at once.
func (c *Conn) Writev(a, b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.w.write(c.rc, a, b)
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

// ErrWouldBlock is LoopRead having nothing to give: the step returns to wait for more.
var ErrWouldBlock = errors.New("rawconn: nothing to read until the socket is readable again")

// Loop calls step inside one RawConn.Read until step returns false or the wait fails (the
// read deadline, the connection closed); it returns that failure. A step reads with LoopRead,
// which never waits: when it returns ErrWouldBlock the step returns true, and Loop calls it
// again once the socket is readable.
//
// Why: a server that reads a request, answers it and reads again finds the socket empty on
// that second read (the client waits for the answer) and only then parks; that empty read was
// 3.5 % of a small cache hit's CPU (docs/benchmarks.md, issue 15). Read cannot skip it: each
// RawConn.Read clears the socket's readiness before its first call, so a request that arrived
// after the last read and was announced before the clearing would never wake the wait. Inside
// one RawConn.Read nothing clears it but the wake-up itself, so every byte that arrives after
// a read that emptied the socket is announced to the wait that follows: LoopRead reads until
// a read empties the socket, and from then on until the next wake-up says ErrWouldBlock
// without a system call. A read empties it when the kernel says nothing is left after it
// (TCP_INQ, Linux 4.18), not when it returns fewer bytes than asked for: such a read may have
// taken the end of the stream along (the client's FIN behind its last bytes), which nothing
// announces again. Without TCP_INQ only a read that finds the socket empty empties it. Still
// unannounced: a reset that arrived behind the bytes of the read (the kernel counts nothing
// left, and gives the error only to a read). A step that writes next learns of it from the
// write; one about to wait for the rest of what it has begun to read, with nothing to write
// meanwhile, reads with LoopReadMore, which finds it.
//
// While Loop runs, the connection's read side is held: Read waits for Loop to end, and so
// does Close (poll.FD.Close waits for the read in progress), from any goroutine. A step may
// write. Only the goroutine running Loop may call LoopRead, and only from step.
func (c *Conn) Loop(step func() (wait bool)) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	err := c.l.loop(c.rc, step)
	if err != nil {
		err = c.opError("read", err)
	}
	return err
}

// LoopRead reads into p without waiting, from Loop's step (see Loop): ErrWouldBlock when the
// socket is empty, or when a read since the step was called emptied it.
func (c *Conn) LoopRead(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.l.read(p, false)
	if err != nil && err != ErrWouldBlock {
		err = c.opError("read", err)
	}
	return n, err
}

// LoopReadMore is LoopRead for a step about to wait for the rest of something it has begun to
// read, with nothing to write meanwhile (half a request head): where the last read emptied the
// socket by the kernel's count it reads once more rather than say ErrWouldBlock at once, so
// that a reset that arrived behind that read's bytes, which nothing announces (see Loop), ends
// the wait now and not at the read deadline. That costs a read that finds the socket empty,
// once per wake-up; after it LoopReadMore says ErrWouldBlock without a system call, as
// LoopRead does.
func (c *Conn) LoopReadMore(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.l.read(p, true)
	if err != nil && err != ErrWouldBlock {
		err = c.opError("read", err)
	}
	return n, err
}

// ShutdownBoth shuts the TCP connection down both ways (shutdown(2)), without waiting for a
// Loop in progress as Close would: the peer sees the end at once, and a Loop waiting to read
// wakes to find it. The connection must still be closed.
func (c *Conn) ShutdownBoth() error {
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { err = shutdownBoth(fd) }); cerr != nil {
		return cerr
	}
	return err
}

// Peek says what a read of the socket would find now, without reading it and without
// waiting (one system call, whatever the deadlines): nothing yet (PeekQuiet), bytes
// (PeekData), or the end of the stream or an error (PeekGone). It may run while a Loop holds
// the read side. One Peek at a time.
func (c *Conn) Peek() PeekResult {
	if c.rc.Control(c.pk.fn) != nil {
		return PeekGone // closed
	}
	return c.pk.got
}

// PeekResult is what Peek found.
type PeekResult int

const (
	PeekQuiet PeekResult = iota // nothing to read, and the peer has not closed its side
	PeekData                    // at least one byte to read
	PeekGone                    // the end of the stream, or an error (a reset)
)

// A HangupWatch waits, on one goroutine parked in Go's poller, for the peers of many
// connections to end them (their end of the stream, a reset, or the connection failing),
// reading nothing: a server's watch for clients going away while their handlers run, at the
// cost of one system call per connection (Add) rather than a goroutine parked in a read per
// watched request. Bytes arriving are not reported. Linux only (epoll); NewHangupWatch fails
// elsewhere.
type HangupWatch struct {
	f  *os.File // the epoll instance, made pollable: Wait parks in the runtime's poller on it
	rc syscall.RawConn
	w  hangupWait // Wait's
}

// NewHangupWatch returns an empty HangupWatch.
func NewHangupWatch() (*HangupWatch, error) {
	f, err := newHangupWatchFile()
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	w := &HangupWatch{f: f, rc: rc}
	w.w.init()
	return w, nil
}

// Add watches c under id: Wait reports id each time c's peer ends its side or the connection
// fails (edge-triggered: once for each such change; at once if it has already happened). c
// stays in the watch until Remove, or until its socket is closed, which ends it in the kernel.
// A connection may be in it once; Add and Remove of one connection must not run at the same
// time.
func (w *HangupWatch) Add(c *Conn, id uint64) error { return w.ctl(c, watchAdd, id) }

// Remove ends the watch of c.
func (w *HangupWatch) Remove(c *Conn) error { return w.ctl(c, watchRemove, 0) }

// Wait calls hungUp with the id of each watched connection whose peer has ended it, on the
// calling goroutine, until Close; it then returns the error that ended it. hungUp must not
// call Wait; it may call Add and Remove.
func (w *HangupWatch) Wait(hungUp func(id uint64)) error {
	w.w.report = hungUp
	w.w.err = nil
	if err := w.rc.Read(w.w.fn); err != nil {
		return err
	}
	return w.w.err
}

// Close ends Wait and the watch. It waits for a hungUp in progress to return, so hungUp must
// not call it, nor wait for its caller.
func (w *HangupWatch) Close() error { return w.f.Close() }

// ctl runs op for c under c's watchCtl, whose callbacks are bound once, so that a watch
// allocates nothing.
func (w *HangupWatch) ctl(c *Conn, op watchOp, id uint64) error {
	x := &c.wc
	x.w, x.op, x.id, x.err = w, op, id, nil
	if err := c.rc.Control(x.onConn); err != nil {
		x.w = nil
		return err
	}
	x.w = nil
	return x.err
}

// watchCtl is a connection's Add or Remove in progress: c's socket, then the watch's
// epoll instance, each held open under Control while epoll_ctl runs.
type watchCtl struct {
	w      *HangupWatch
	op     watchOp
	id     uint64
	fd     uintptr
	err    error
	onConn func(fd uintptr)
	onW    func(epfd uintptr)
}

func (x *watchCtl) init() {
	x.onConn = func(fd uintptr) {
		x.fd = fd
		if err := x.w.rc.Control(x.onW); err != nil {
			x.err = err
		}
	}
	x.onW = func(epfd uintptr) { x.err = watchOpOn(epfd, x.op, x.fd, x.id) }
}

// ErrNotQuiet is WriteRead finding something to read before it sent anything: bytes, the end
// of the stream or an error. Nothing of out was sent and nothing was read.
var ErrNotQuiet = errors.New("connection has something to read before the exchange")

// WriteRead writes out and then reads the answer into p, for an exchange on a connection that
// has nothing to read until the peer has out (a request on a kept-alive client connection).
// It first checks that (as Prober.Quiet does, and failing with ErrNotQuiet), then writes, and
// waits in the poller for the answer at once, where Write followed by Read would first try a
// read that can only find the socket empty (on a loopback origin, one system call in four of a
// cache fill's exchange: issue 15). The check and the write happen after the socket's
// readiness was cleared for the wait, so whatever arrives after the check, the answer or the
// end of the connection, wakes it. A deadline applies as to Read, and to the rest of out when
// the socket takes only part of it at once (then sent as Write does, before the read). The
// write side stays held until the answer arrives: a concurrent Write waits for it. With an
// empty out it is Read (no check), with an empty p Write.
func (c *Conn) WriteRead(out, p []byte) (int, error) {
	switch {
	case len(out) == 0:
		return c.Read(p)
	case len(p) == 0:
		_, err := c.Write(out)
		return 0, err
	}
	c.wmu.Lock()
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, wrote, err := c.x.exchange(c.rc, out, p)
	if wrote < len(out) && err == nil {
		// The socket took only part of out: the rest as Write sends it, then a plain read.
		if _, err = c.w.write(c.rc, out[wrote:], nil); err == nil {
			wrote = len(out)
			n, err = c.r.read(c.rc, p)
		}
	}
	c.wmu.Unlock()
	switch {
	case err == nil || err == ErrNotQuiet:
	case wrote < len(out):
		err = c.opError("write", err)
	default:
		err = c.opError("read", err)
	}
	return n, err
}

// opError wraps a system call's error as net.Conn's methods do, so callers that look for
// net.Error or *net.OpError find one. Errors that are *net.OpError already (deadline, closed
// connection, from syscall.RawConn with Op "raw-read" or "raw-write") and io.EOF pass as they are.
func (c *Conn) opError(op string, err error) error {
	if _, ok := err.(*net.OpError); ok || err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// A Prober peeks at a connection's socket without reading from it and without waiting.
type Prober struct {
	mu sync.Mutex // one peek at a time owns p
	rc syscall.RawConn
	p  prober
}

// NewProber returns a Prober for c's TCP socket: c's own, a TCPer's, or that of a connection c
// wraps (NetConn, as crypto/tls and this package's Conn have), or nil when c has none or the
// system cannot peek.
func NewProber(c net.Conn) *Prober {
	if !supported {
		return nil
	}
	for range 8 { // wrappers of wrappers, within reason
		switch t := c.(type) {
		case *net.TCPConn:
			rc, err := t.SyscallConn()
			if err != nil {
				return nil
			}
			pr := &Prober{rc: rc}
			pr.p.init()
			return pr
		case TCPer:
			c = t.TCP()
		case interface{ NetConn() net.Conn }:
			c = t.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Quiet reports whether the socket has nothing to read and its peer has not closed it (one
// system call that never waits, whatever the connection's deadlines): what a pool asks of a
// kept-alive client connection before sending on it again, where anything readable is a
// stray answer or the end of the connection. It reads nothing, so a connection that is not
// quiet is as it was.
func (p *Prober) Quiet() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.p.probe(p.rc)
}
