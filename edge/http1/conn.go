package http1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/edge/sendtimeout"
	"github.com/meridian-cdn/meridian/internal/rawconn"
)

// watchDelay is how long a handler runs before the connection is watched for the client
// going away (which cancels the request's context). A cache hit is answered well within it,
// so hits never pay for the watch.
const watchDelay = 5 * time.Millisecond

// aLongTimeAgo is a deadline in the past: it ends a read in progress at once.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one client connection on the fast path.
type conn struct {
	srv *Server
	nc  net.Conn
	raw *rawconn.Conn // nc with raw I/O; nil: nc's own
	cr  connReader
	br  *bufio.Reader
	// serve's and step's: where step goes on (stage), the first request's wait (first), the
	// longest head the fast path reads, and whether the connection goes to Fallback.
	stage     int
	first     bool
	maxHead   int
	handedOff bool
	looping   atomic.Bool     // serve's Loop runs: Close would wait for it (closeSocket)
	ctx       context.Context // the connection's: values only, never cancelled
	remote    string
	idle      atomic.Bool // waiting for a request: Shutdown gives it headGrace for one (cutIdle)
	idleCut   atomic.Bool // cutIdle ran: the grace is not given again
	// graceEnd is when the headGrace a Shutdown gave the connection ends (UnixNano), 0 before:
	// set once, by the first cutIdle or cutHead (grace).
	graceEnd atomic.Int64
	inHead   atomic.Bool // waiting for the rest of a request head: Shutdown cuts the wait (cutHead)
	// rdl is the read deadline setReadDeadline set last, zero when none or unknown;
	// rdlLost says a handler set one since (ResponseController).
	rdl     time.Time
	rdlLost atomic.Bool

	out     []byte // the answer being written
	vec     [2][]byte
	bufs    net.Buffers
	werr    error                // the first write error: the connection is done
	send    sendtimeout.Deadline // bounds every write (Server.WriteTimeout) when timed
	timed   bool                 // send is in use: nc is not a TLS connection (newConn)
	wdlSet  atomic.Bool          // a handler set a write deadline: cleared after its answer
	pending [bufferBeforeChunking]byte
	header  http.Header // the response header, reused (serveRequest)
	values  [16]string  // the response header's value slices, reused (ValueScratch)

	// What each request reuses from the one before (serveRequest): a cache hit allocates
	// nothing here but its head's string (issue 15). A handler must not keep any of it once
	// it has returned, nor the ResponseWriter, as with net/http.
	reqHeader http.Header
	reqValues [16]string // reqHeader's value slices (h1fields.ReadInto)
	url       url.URL
	rctx      *reqCtx
	base      http.Request // carries rctx; every other field zero
	req       http.Request
	resp      response
	state     any // HandlerState's

	// The watch for a client going away while a handler runs long: in a Loop, the server's
	// hangup watch (joinHangupWatch, hungUp); else a read of the connection (backgroundRead).
	mu      sync.Mutex
	timer   *time.Timer
	armed   bool    // serve's: the timer is set for the request in progress
	cancel  *reqCtx // the request in progress
	ended   bool    // the request in progress has ended: no watch may start
	reading bool    // a watch is reading
	watchWG sync.WaitGroup
	abort   atomic.Bool  // the watch's read is being ended on purpose
	joined  *hangupWatch // the hangup watch the connection is in, under joinID
	joinID  uint64
	noWatch bool // the hangup watch refused this connection: not tried again
	// The hangup watch heard the client's end. It hears it once (edge-triggered), so the
	// requests after (pipelined ahead of the end) are each checked by their timer (checkGone).
	endHeard bool

	closed      atomic.Bool // closeConn ran
	closeOnGone atomic.Bool // the request in progress asked for CloseWhenClientGone

	// For the lingering close (lingerClose). pipelined and closeLinger are serve's (a watch
	// writes pipelined before unwatch's wait for it returns).
	pipelined   bool        // a request was seen behind one not yet answered: more may be on the way
	closeLinger bool        // the last answer went out whole and ended the connection
	lingering   atomic.Bool // lingerClose is lingering: Close closes it beneath TLS (shut)
}

// connReader reads the connection, first giving back a byte a watch has read.
type connReader struct {
	nc      net.Conn
	loop    *rawconn.Conn // while serve's Loop runs: reads never wait (LoopRead)
	more    bool          // readHead waits for the rest of a head: in a Loop, LoopReadMore
	hasByte bool
	b       [1]byte
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.hasByte && len(p) > 0 {
		p[0] = r.b[0]
		r.hasByte = false
		return 1, nil
	}
	if r.loop != nil {
		if r.more {
			return r.loop.LoopReadMore(p)
		}
		return r.loop.LoopRead(p)
	}
	return r.nc.Read(p)
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, remote: nc.RemoteAddr().String()}
	// Reads and hand-offs go through cr.nc: the raw connection when there is one.
	c.cr.nc = rawconn.Wrap(nc)
	c.raw, _ = c.cr.nc.(*rawconn.Conn)
	// Over TLS the send timeout must lie beneath crypto/tls, which makes a write's deadline
	// error permanent: set on the TLS connection, it ended the download of a client that
	// reads steadily at its first look for progress. A TLS connection keeps what lies beneath
	// it (sendtimeout.Listener under tls.NewListener).
	if _, isTLS := nc.(*tls.Conn); !isTLS {
		c.send.Init(nc, s.WriteTimeout) // raw writes wait in the poller under nc's deadline too
		c.timed = true
	}
	c.br = bufio.NewReaderSize(&c.cr, readBufferSize)
	c.out = make([]byte, 0, 4<<10)
	c.reqHeader = make(http.Header, 8)
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.Fallback)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, nc.LocalAddr())
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, nc)
	}
	c.ctx = ctx
	return c
}

// serve reads and answers requests until the connection ends or is handed off. On a
// connection with raw I/O the requests are read and answered inside one rawconn Loop, so that
// the read after each answer, which would find the socket empty, is not made (step).
func (c *conn) serve() {
	defer func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		c.leaveHangupWatch(false) // its socket is closed below, which ends the kernel's entry
		if c.handedOff {
			c.srv.forget(c)
			return
		}
		if c.closeLinger {
			c.lingerClose()
		}
		c.closeConn()
		if c.raw != nil {
			// A closeConn from another goroutine during the Loop only shut the socket down
			// (closeSocket); closing twice is harmless.
			c.nc.Close()
		}
	}()
	c.maxHead = readBufferSize
	if m := c.srv.MaxHeaderBytes; m > 0 && m < c.maxHead {
		c.maxHead = m
	}
	c.first = true
	if c.raw == nil {
		c.step()
	} else {
		c.cr.loop = c.raw
		c.looping.Store(true)
		c.raw.Loop(c.step) // its error ends the connection, as a failed read does
		c.looping.Store(false)
		c.cr.loop = nil
	}
	if c.handedOff {
		c.leaveHangupWatch(true) // before Fallback owns the socket
		c.handOff()
	}
}

// The stages of step, kept between its calls.
const (
	atNext = iota // between requests
	atIdle        // waiting for the next request's first byte
	atHead        // reading a request head
)

// step reads and answers requests until the connection must end (false; c.handedOff says
// whether it goes to Fallback) or, in a Loop, until a read would wait (true: step is called
// again once the socket is readable, and goes on where it stopped).
func (c *conn) step() (wait bool) {
	for {
		if c.stage == atNext {
			// Past a Shutdown this answer did not say the connection ends (it began after
			// the answer was written: those written later do): the client may be sending its
			// next request now, which is read and answered (a pipelined one at once), or it
			// gets headGrace to send one (cutIdle), as a Shutdown gives an idle connection.
			if c.br.Buffered() == 0 {
				wait := c.srv.IdleTimeout
				if c.first || wait == 0 {
					wait = c.srv.ReadHeaderTimeout
				}
				// The deadline before idle: a Shutdown that sees idle cuts it after this.
				c.setReadDeadline(wait)
				c.idle.Store(true)
				if c.srv.shuttingDown() {
					c.cutIdle() // a Shutdown that began before idle was set may not see it
				}
				c.stage = atIdle
			} else {
				c.pipelined = true // the next request came before this one was answered
				c.stage = atHead
			}
		}
		if c.stage == atIdle {
			_, err := c.br.Peek(1)
			if err == rawconn.ErrWouldBlock {
				return true
			}
			c.idle.Store(false)
			if err != nil {
				return false
			}
			c.stage = atHead
		}
		c.first = false
		h, n, v, err := c.readHead(c.maxHead)
		if err == rawconn.ErrWouldBlock {
			return true
		}
		c.stage = atNext
		if err != nil {
			return false // a head cut short or too slow: nothing can be answered
		}
		var u *url.URL
		if v == fast {
			if u, err = parseTarget(h.target, &c.url); err != nil {
				v, n = handOff, h.skip
			}
		}
		if v == handOff {
			// Empty lines before the request line are dropped (parseHead): Fallback reads the
			// request from its first byte, and so does the check below.
			c.br.Discard(n)
			if buf, _ := c.br.Peek(c.br.Buffered()); http10WithTransferEncoding(buf) {
				// net/http drops Transfer-Encoding from an HTTP/1.0 request before any
				// handler sees it, frames the body by Content-Length and keeps the
				// connection: the chunked body would be read as the next request. RFC 9112
				// §6.1 calls such framing faulty; nginx answers 400 and closes, as here.
				// A head not whole in the buffer now, and those after, the guard has
				// net/http refuse (GuardConn); this answer lingers, net/http's does not.
				c.write([]byte(badHTTP10Framing))
				c.flush()
				c.closeLinger = c.werr == nil // the client may still be sending its body
				return false
			}
			c.handedOff = true
			return false // serve hands off, once a Loop has ended
		}
		c.br.Discard(n)
		if !c.serveRequest(&h, u) {
			return false
		}
	}
}

// badHTTP10Framing answers an HTTP/1.0 request with Transfer-Encoding.
var badHTTP10Framing = func() string {
	const body = "400 Bad Request: HTTP/1.0 request with Transfer-Encoding"
	return "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}()

// http10WithTransferEncoding reports whether buf starts with a request head (lines ended by
// CRLF or, as net/http also reads them, LF) whose version is HTTP/1.0 and in which a whole
// Transfer-Encoding field line has arrived.
func http10WithTransferEncoding(buf []byte) bool {
	line, rest, ok := bytes.Cut(buf, []byte("\n"))
	if !ok || !bytes.HasSuffix(bytes.TrimSuffix(line, []byte("\r")), []byte(" HTTP/1.0")) {
		return false
	}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return false // no such line yet: net/http judges the head
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return false
		}
		if name, _, found := bytes.Cut(line, []byte(":")); found && bytes.EqualFold(name, []byte("Transfer-Encoding")) {
			return true
		}
	}
}

// setReadDeadline sets the read deadline d from now, or none if d is 0. A deadline still
// between d and 15/16 of d away is kept as it is: re-arming the poller's timer for every
// request was 2 % of a hit's CPU (issue 15), and a connection waiting for its next request
// then times out up to d/16 early (7.5 s of the edge's 120 s idle timeout), never late.
func (c *conn) setReadDeadline(d time.Duration) {
	if c.rdlLost.Load() {
		c.rdlLost.Store(false)
		c.rdl = time.Time{}
	}
	if d <= 0 {
		c.rdl = time.Time{}
		c.nc.SetReadDeadline(time.Time{})
		return
	}
	// time.Until reads the monotonic clock alone (c.rdl has its reading), half of time.Now's
	// cost, paid after every answer (issue 15).
	if !c.rdl.IsZero() {
		if left := time.Until(c.rdl); left <= d && left >= d-d/16 {
			return
		}
	}
	c.rdl = time.Now().Add(d)
	c.nc.SetReadDeadline(c.rdl)
}

// readHead reads until the buffer holds a whole head or something the fast path hands off.
// In a Loop it returns rawconn.ErrWouldBlock when the rest has not arrived yet; the next call
// goes on with the same wait (inHead, and the header deadline, stay as they are).
func (c *conn) readHead(maxHead int) (head, int, verdict, error) {
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		h, n, v := parseHead(buf, c.reqHeader, c.reqValues[:])
		if v == incomplete && len(buf) >= maxHead {
			// Over the limit: handed over with the empty lines before the request line
			// dropped, so that Fallback judges the request itself (a 414 for a long line),
			// but not a buffer of empty lines alone, whose end is not in sight: net/http
			// refuses it.
			h, n, v = head{}, 0, handOff
			if skip := emptyLines(buf); skip < len(buf) && buf[skip] != '\r' {
				n = skip
			}
		}
		if v != incomplete {
			if c.inHead.Load() {
				c.inHead.Store(false)
			}
			return h, n, v, nil
		}
		if !c.inHead.Load() {
			c.setReadDeadline(c.srv.ReadHeaderTimeout)
			// After the deadline, so that a Shutdown that sees inHead cuts this one; a
			// Shutdown that began before is seen here.
			c.inHead.Store(true)
			if c.srv.shuttingDown() {
				c.cutHead()
			}
		}
		// The rest may never come: the read must not stop at the kernel's count, behind which
		// a client's reset (its close with unread bytes, or SO_LINGER 0) is announced by
		// nothing, which held the connection for the whole header timeout.
		c.cr.more = true
		_, err := c.br.Peek(len(buf) + 1)
		c.cr.more = false
		if err != nil {
			if err != rawconn.ErrWouldBlock {
				c.inHead.Store(false)
			}
			return head{}, 0, incomplete, err
		}
	}
}

// headGrace is how long a request head still arriving when Shutdown begins may take to
// arrive whole: a client whose head was on its way gets its answer, a stalled one does not
// hold the shutdown for the whole ReadHeaderTimeout.
const headGrace = time.Second

// cutHead brings the connection's read deadline to its grace's end (headGrace from the first
// cut: grace), for a head still arriving at Shutdown. It may run on Shutdown's goroutine as well as the connection's.
func (c *conn) cutHead() {
	c.setGraceDeadline()
	if c.srv.headCut != nil {
		c.srv.headCut()
	}
}

// cutIdle brings an idle connection's read deadline to its grace's end (grace), once: at
// Shutdown, a kept-alive client's next request may be on its way (a busy client sends it as
// soon as it has read an answer), and is answered, saying the connection ends; a client that
// sends nothing within headGrace has its connection closed. Closed at once, the request sent
// in that instant was lost (RFC 9112 section 9.3.1 lets a client retry it; many do not). It may
// run on Shutdown's goroutine as well as the connection's.
func (c *conn) cutIdle() {
	if c.idleCut.Swap(true) {
		return
	}
	c.setGraceDeadline()
}

// setGraceDeadline sets the connection's read deadline to its grace's end (grace). It may run
// on Shutdown's goroutine as well as the connection's.
func (c *conn) setGraceDeadline() {
	c.rdlLost.Store(true) // c.rdl no longer says what is set (setReadDeadline)
	d := c.grace()
	c.nc.SetReadDeadline(d)
	if c.srv.graceSet != nil {
		c.srv.graceSet(d)
	}
}

// grace is the end of the headGrace a Shutdown gives the connection: headGrace from the first
// call, the same for every later one. A connection idle at Shutdown whose client then sends
// part of a head has until the idle grace's end for the rest: given a second headGrace
// (readHead's cutHead), a client that sent a byte at the end of the first held the shutdown
// twice the second documented. It may run on Shutdown's goroutine as well as the connection's.
func (c *conn) grace() time.Time {
	for {
		if g := c.graceEnd.Load(); g != 0 {
			return time.Unix(0, g)
		}
		g := time.Now().Add(headGrace).UnixNano()
		if c.graceEnd.CompareAndSwap(0, g) {
			return time.Unix(0, g)
		}
	}
}

// handOff gives the connection, with the bytes not yet consumed, to Fallback: what the buffer
// holds, then the byte a watch read behind it, if it read one.
func (c *conn) handOff() {
	c.setReadDeadline(0)
	buffered, _ := c.br.Peek(c.br.Buffered())
	prefix := append([]byte(nil), buffered...)
	if c.cr.hasByte {
		prefix = append(prefix, c.cr.b[0])
		c.cr.hasByte = false
	}
	// net/http frames an HTTP/1.0 request with Transfer-Encoding by its Content-Length: the
	// guard has it refused, wherever its head comes (GuardConn). Only a handed-off connection
	// pays for it, and only in the requests net/http reads.
	var pc net.Conn = NewGuardConn(&prefixConn{Conn: c.cr.nc, prefix: prefix})
	if c.timed {
		// net/http writes with no timeout of its own: the handed-off connection keeps the
		// send timeout (over TLS, what lies beneath TLS bounds it).
		pc = sendtimeout.NewConn(pc, c.srv.WriteTimeout)
	}
	if c.srv.ConnState != nil {
		c.srv.ConnState(c.nc, http.StateHijacked)
	}
	if !c.srv.handoff.give(pc) {
		c.nc.Close() // Fallback has stopped: we are shutting down
	}
}

// serveRequest answers one request; false if the connection must end.
func (c *conn) serveRequest(h *head, u *url.URL) bool {
	if c.rctx == nil || !c.rctx.reuse() {
		c.rctx = &reqCtx{Context: c.ctx}
		c.base = *new(http.Request).WithContext(c.rctx)
	}
	ctx := c.rctx
	defer ctx.cancel()
	c.req = c.base
	r := &c.req
	r.Method = h.method
	r.URL = u
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = h.header
	r.Body = http.NoBody
	r.Host = h.host
	r.RemoteAddr = c.remote
	r.RequestURI = h.target
	r.Close = h.close
	// The response header map is the connection's, cleared after each answer: a hit copies a
	// dozen stored fields into it, and a fresh map would grow its table every time. The
	// handler must not keep it once it has returned (the edge's does not).
	if c.header == nil {
		c.header = make(http.Header, 16)
	}
	c.resp = response{c: c, req: r, header: c.header, head: h.method == http.MethodHead, cl: -1, pending: c.pending[:0]}
	w := &c.resp
	c.watch(ctx)
	ok := c.runHandler(w, r)
	c.unwatch()
	c.closeOnGone.Store(false)
	if !ok || c.closed.Load() {
		// Closed under the handler (CloseWhenClientGone): the requests still buffered are
		// not read on a connection that is no longer counted.
		return false
	}
	w.finish()
	if c.wdlSet.Load() {
		// A handler's write deadline bounds its own answer, as with net/http: kept, it cut
		// the next answer on this connection once it had passed.
		c.wdlSet.Store(false)
		c.setWriteDeadline(time.Time{})
	}
	closeAfter := w.closeAfter // w is cleared below
	// The answer is in c.out: its header and values, and the request, are no longer needed,
	// and an idle connection must not keep a stored object's memory alive through them.
	clear(c.header)
	clear(c.values[:])
	clear(c.reqHeader)
	clear(c.reqValues[:])
	c.url = url.URL{}
	c.req = http.Request{}
	c.resp = response{} // its header block is a stored object's
	// A watch that saw the client half-close leaves the requests already buffered to be
	// answered, as net/http does; the next read then ends the connection.
	if c.werr != nil {
		return false
	}
	if closeAfter {
		c.closeLinger = true // the close may linger, so that the client reads this answer whole
		return false
	}
	return true
}

// runHandler calls the handler; false if it panicked (http.ErrAbortHandler: a stream cut
// short), which ends the connection without completing the answer.
func (c *conn) runHandler(w *response, r *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logf("http1: panic serving %v: %v\n%s", c.remote, p, buf)
			}
			ok = false
		}
	}()
	c.srv.Handler.ServeHTTP(w, r)
	return true
}

// watch arms the watch for the request whose context is ctx: on a connection in the server's
// hangup watch nothing more is needed, until the watch has heard the client's end; else a
// timer starts a watch once the request has run watchDelay.
func (c *conn) watch(ctx *reqCtx) {
	c.mu.Lock()
	c.cancel, c.ended = ctx, false
	joined := c.joined != nil && !c.endHeard && !c.joined.dead.Load()
	c.mu.Unlock()
	if joined {
		return
	}
	c.armed = true
	c.watchWG.Add(1)
	if c.timer == nil {
		c.timer = time.AfterFunc(watchDelay, c.watchNow)
	} else {
		c.timer.Reset(watchDelay)
	}
}

// unwatch disarms the watch, ending its read if it started one.
func (c *conn) unwatch() {
	if c.armed {
		c.armed = false
		if c.timer.Stop() {
			c.watchWG.Done() // it never ran
			return
		}
	}
	c.mu.Lock()
	c.ended = true
	read := c.reading
	if read {
		c.abort.Store(true)
		c.nc.SetReadDeadline(aLongTimeAgo)
	}
	c.mu.Unlock()
	c.watchWG.Wait() // a watch's cancel must not reach the next request: its context is reused
	if read || !c.looping.Load() {
		c.abort.Store(false)
		c.rdl = time.Time{} // the watch changed the read deadline (backgroundRead)
	}
}

// watchNow starts the watch of the request in progress, once it has run watchDelay.
func (c *conn) watchNow() {
	if c.looping.Load() {
		c.joinHangupWatch()
	} else {
		c.backgroundRead()
	}
}

// joinHangupWatch puts a connection in a Loop, which holds its read side while the handler
// runs, in the server's hangup watch for the rest of its life (hungUp hears its client go). A
// connection the watch refuses (epoll's limit on watched descriptors, say) is not tried again,
// as every long request would try, and log.
func (c *conn) joinHangupWatch() {
	defer c.watchWG.Done()
	defer c.watchEnded()
	c.mu.Lock()
	if c.joined != nil && c.joined.dead.Load() {
		c.joined = nil // its watch ended (epoll_wait failed): join the next
	}
	joined := c.joined != nil
	c.mu.Unlock()
	if joined { // the watch has heard the client's end (watch): it will not again
		c.checkGone()
		return
	}
	w := c.srv.hangupWatch() // before c.mu: the server's lock comes first (anyConn)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joined != nil || c.noWatch || w == nil {
		return
	}
	id, err := w.join(c)
	if err != nil {
		c.noWatch = true
		if !c.srv.shuttingDown() { // else the watch may have ended meanwhile
			c.srv.logf("http1: no watch for a client going away on %v: %v", c.remote, err)
		}
		return
	}
	c.joined, c.joinID = w, id
}

// leaveHangupWatch takes the connection out of the hangup watch, if it joined; remove also
// takes its socket out of the epoll instance, for a socket that lives on.
func (c *conn) leaveHangupWatch(remove bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joined != nil {
		c.joined.leave(c, c.joinID, remove)
		c.joined = nil
	}
}

// hungUp is the hangup watch hearing the client of the connection joined under id end it:
// while a request runs, the request's context is cancelled, unless bytes wait in front of the
// end (a request pipelined behind, whose answer a half-closed client still reads, as from
// net/http, whose background read stops at such a byte; the Loop finds the end behind it).
// Between requests the Loop finds the end itself. The watch hears an end once: every request
// after it on the connection (pipelined in front of it, or read just before it was heard) is
// checked by its own timer once it runs watchDelay, as a background read would find the end.
func (c *conn) hungUp(w *hangupWatch, id uint64) {
	c.mu.Lock()
	mine := c.joined == w && c.joinID == id
	if mine {
		c.endHeard = true
	}
	c.mu.Unlock()
	if mine && c.checkGone() {
		c.watchEnded()
	}
}

// checkGone cancels the request in progress, and closes the connection if it asked, when a
// read would find the end of the stream or an error with no bytes in front; it reports
// whether it did.
func (c *conn) checkGone() bool {
	c.mu.Lock()
	if c.ended || c.cancel == nil || c.raw.Peek() != rawconn.PeekGone {
		c.mu.Unlock()
		return false
	}
	cancel := c.cancel
	c.watchWG.Add(1) // unwatch waits for the cancel and the close
	c.mu.Unlock()
	defer c.watchWG.Done()
	cancel.cancel()
	if c.closeOnGone.Load() { // after cancel: a handler that asked after it sees the context ended
		c.closeConn()
	}
	return true
}

// watchEnded tells a test that a watch has ended (joinHangupWatch: has joined or not).
func (c *conn) watchEnded() {
	if c.srv.watchEnded != nil {
		c.srv.watchEnded()
	}
}

// backgroundRead reads while a handler runs long, on a connection outside a Loop (over TLS,
// or without raw I/O): a byte is a pipelined request, kept for later; an end or error means
// the client is gone, and the request's context is cancelled. It does not read while a byte
// is kept (an earlier watch's, not consumed yet because the request after it was already
// buffered): the byte it read would take the kept one's place. net/http's background read
// does the same.
func (c *conn) backgroundRead() {
	defer c.watchWG.Done()
	defer c.watchEnded()
	c.mu.Lock()
	if c.ended || c.cr.hasByte {
		c.mu.Unlock()
		return
	}
	cancel := c.cancel
	c.reading = true
	c.nc.SetReadDeadline(time.Time{}) // the idle deadline must not end a long answer's watch
	c.mu.Unlock()
	n, err := c.nc.Read(c.cr.b[:])
	c.mu.Lock()
	c.reading = false
	c.mu.Unlock()
	if n == 1 {
		c.cr.hasByte = true
		c.pipelined = true
	}
	if err != nil && !(c.abort.Load() && errors.Is(err, os.ErrDeadlineExceeded)) {
		cancel.cancel()
		if c.closeOnGone.Load() { // after cancel: a handler that asked after it sees the context ended
			c.closeConn()
		}
	}
}

// closeConn closes the connection and stops counting it, once: when serve ends, or when a
// watch sees the client go away while the handler still runs.
func (c *conn) closeConn() {
	if c.closed.Swap(true) {
		return
	}
	c.closeSocket()
	c.srv.forget(c)
	if c.srv.ConnState != nil {
		c.srv.ConnState(c.nc, http.StateClosed)
	}
}

// closeSocket closes the connection; while serve's Loop runs (a handler under it, when called
// from another goroutine) it shuts the socket down instead, as Close would wait for the Loop:
// the client sees the end at once, the Loop wakes to it, and serve closes the socket after.
// Whatever shutdown(2) says: on a socket the client has reset it fails (ENOTCONN), and Close
// would then wait for the handler, which may be waiting for this caller (a watch's
// CloseWhenClientGone, in unwatch).
func (c *conn) closeSocket() {
	if c.looping.Load() {
		c.raw.ShutdownBoth()
		return
	}
	c.nc.Close()
}

// CloseWhenClientGone(true) asks that the connection be closed as soon as its client is seen
// to go away (the request's context is cancelled then), not when the handler returns: the
// handler is about to wait for work that outlives its client (the edge's collapsed fill), and
// must not hold the client's connection meanwhile, nor keep Shutdown waiting for it. A
// handler that asks must check the request's context afterwards: the client may have gone
// before it asked. CloseWhenClientGone(false) withdraws the request once the wait is over
// (the request's end does too): a client that half-closes still gets the answer then, and
// the requests it pipelined are read, as from net/http.
func (w *response) CloseWhenClientGone(on bool) { w.c.closeOnGone.Store(on) }

// write appends p to the output, writing it beside what is already there when it does not
// fit (one writev). It returns how many bytes of p the output took or the connection was
// given: all of them unless the write failed, and then those that went out before the
// failure, which the client may have received (the access log counts them).
func (c *conn) write(p []byte) int {
	if c.werr != nil {
		return 0
	}
	if len(c.out)+len(p) <= cap(c.out) {
		c.out = append(c.out, p...)
		return len(p)
	}
	n, err := c.writeOut(c.out, p)
	sent := min(max(n-len(c.out), 0), len(p)) // the output's bytes went first
	c.out = c.out[:0]
	c.writeFailed(err)
	return sent
}

// writeOut writes a and then b, with one writev when both have bytes, under the send timeout,
// and returns how many bytes of the two it wrote, also when it fails.
func (c *conn) writeOut(a, b []byte) (int, error) {
	var w sendtimeout.Writev = c
	if c.raw != nil {
		w = c.raw
	}
	if !c.timed {
		return w.Writev(a, b)
	}
	return c.send.Write(w, a, b)
}

// setWriteDeadline sets a write deadline besides the send timeout (a handler's, through
// http.ResponseController).
func (c *conn) setWriteDeadline(t time.Time) error {
	if !c.timed {
		return c.nc.SetWriteDeadline(t)
	}
	return c.send.SetWriteDeadline(t)
}

// Writev writes a and then b on a connection without raw I/O (for writeOut), with one writev
// when both have bytes and the connection has it.
func (c *conn) Writev(a, b []byte) (int, error) {
	switch {
	case len(a) == 0:
		return c.nc.Write(b)
	case len(b) == 0:
		return c.nc.Write(a)
	}
	c.vec[0], c.vec[1] = a, b
	c.bufs = c.vec[:]
	n, err := c.bufs.WriteTo(c.nc)
	c.vec = [2][]byte{}
	return int(n), err
}

// flush writes the output.
func (c *conn) flush() {
	if c.werr != nil || len(c.out) == 0 {
		c.out = c.out[:0]
		return
	}
	_, err := c.writeOut(c.out, nil)
	c.out = c.out[:0]
	c.writeFailed(err)
}

func (c *conn) writeFailed(err error) {
	if err == nil {
		return
	}
	c.werr = err
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel.cancel() // the client is gone: what the handler waits for is not needed
	}
}
