package fetch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-cdn/meridian/internal/rawconn"
	"golang.org/x/net/http/httpguts"
)

// h1Transport is an HTTP/1.1 client for plain-http upstreams that does each exchange on the
// caller's goroutine: it writes the request, reads the response head and hands back a body
// that reads straight from the connection. net/http's Transport runs a reader and a writer
// goroutine per connection and hands every request between them and the caller, and its
// reader peeks for the next response as soon as a body ends (a read that finds nothing and
// parks in the poller): on a cache miss of a small object that is most of the client's cost
// (issue 15). Requests it does not handle (https, a request body, upgrades) go to fallback.
//
// A response head that can be read in exactly one way is read by readHead (h1read.go), and
// any other by net/http's own http.ReadResponse; the request head is what Request.Write writes
// (h1write.go). What is here is the connection's life: the idle pool, deadlines, the retry on
// a kept-alive connection the upstream had closed, and when a connection may be reused.
type h1Transport struct {
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	headerTimeout time.Duration
	maxHead       int64 // Config.MaxHeadBytes
	idleTimeout   time.Duration
	maxIdle       int
	fallback      *http.Transport

	mu    sync.Mutex // guards pools
	pools map[string]*h1Pool
}

const (
	// h1ReadBuffer holds a small object's whole answer, head and body, so it arrives in one
	// read system call; it is per connection and kept with it.
	h1ReadBuffer = 32 << 10
	// h1DrainBytes is how much of a body closed before its end is read to save the connection;
	// only what the connection's buffer already holds is read (the read deadline is set in the
	// past, so the socket is not read).
	h1DrainBytes = 4 << 10
)

// aLongTimeAgo is a deadline in the past: it makes blocked reads and writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

// newH1 returns the caller-goroutine transport c describes (defaults applied), handing what
// it does not handle to fallback.
func (c Config) newH1(fallback *http.Transport) *h1Transport {
	return &h1Transport{
		dial:          c.dialer(),
		headerTimeout: c.ResponseHeaderTimeout,
		maxHead:       int64(c.MaxHeadBytes),
		idleTimeout:   c.IdleConnTimeout,
		maxIdle:       c.MaxIdleConns,
		fallback:      fallback,
		pools:         map[string]*h1Pool{},
	}
}

// handles reports whether req is one h1Transport sends itself: plain http, no body to send,
// no protocol upgrade, an ASCII host (the Transport would convert others with IDNA).
func (t *h1Transport) handles(req *http.Request) bool {
	if req.URL == nil || req.URL.Scheme != "http" || req.Header == nil ||
		req.Body != nil && req.Body != http.NoBody ||
		len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 || req.Method == http.MethodConnect ||
		len(req.Header["Upgrade"]) > 0 || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "upgrade") {
		return false
	}
	for i := 0; i < len(req.URL.Host); i++ {
		if req.URL.Host[i] >= 0x80 {
			return false
		}
	}
	return true
}

// RoundTrip implements http.RoundTripper.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.handles(req) {
		return t.fallback.RoundTrip(req)
	}
	return t.send(req.Context(), time.Time{}, req)
}

// send is RoundTrip for a request t handles, under ctx rather than req's context, and ending
// at deadline unless it is zero: reads past it fail with os.ErrDeadlineExceeded (Upstream.Do's
// BodyTimeout, which needs no copy of the request nor a context of its own this way: issue 15).
func (t *h1Transport) send(ctx context.Context, deadline time.Time, req *http.Request) (*http.Response, error) {
	// The Transport's own checks, so that both refuse the same requests.
	if msg := invalidHeader(req.Header); msg != "" {
		return nil, fmt.Errorf("net/http: invalid header %s", msg)
	}
	if req.Method != "" && !httpguts.ValidHeaderFieldName(req.Method) {
		return nil, fmt.Errorf("net/http: invalid method %q", req.Method)
	}
	if req.URL.Host == "" {
		return nil, errors.New("http: no Host in request URL")
	}
	trace := httptrace.ContextClientTrace(ctx)
	p := t.pool(hostPort(req.URL.Host))
	if trace != nil && trace.GetConn != nil {
		trace.GetConn(p.addr)
	}
	var c *h1Conn
	notQuiet := 0 // idle connections found not quiet by this request
	again := replayable(req)
	if again {
		// Only a request that may be sent twice takes a kept-alive connection: the upstream may
		// have closed it while idle, which this transport finds out only by sending (net/http's
		// read loop sees such closes at once), and a request that may not go twice could not
		// be retried. Requests like those are rare here (a DELETE passed through): they dial.
		c = p.take()
	}
	for {
		if c == nil {
			var err error
			if c, err = p.dial(ctx); err != nil {
				return nil, &notReachedError{err}
			}
		}
		if trace != nil && trace.GotConn != nil {
			info := httptrace.GotConnInfo{Conn: c.nc, Reused: c.reused, WasIdle: c.reused}
			if c.reused {
				info.IdleTime = time.Since(c.idleAt)
			}
			trace.GotConn(info)
		}
		resp, err := c.exchange(ctx, deadline, req, trace)
		if stale, ok := err.(*staleConnError); ok { // exchange returns it unwrapped
			// The upstream closed a kept-alive connection as we sent on it (net/http retries
			// these too): once more on a new connection, if sending twice is harmless. One found
			// closed (or written to) before anything was sent is dropped for the next idle one.
			if again {
				c = nil
				// At most maxIdle of them: other exchanges may keep giving connections back.
				if errors.Is(stale.err, rawconn.ErrNotQuiet) && notQuiet < t.maxIdle {
					notQuiet++
					c = p.take()
				}
				continue
			}
			err = stale.err
		}
		return resp, err
	}
}

// dropInvalidFields removes the fields of an answer whose name is not a token.
// http.ReadResponse keeps a name with a space in it or before its colon ("Transfer-Encoding :
// chunked", golang.org/issue/34540), which a proxy must not forward as it is (RFC 9112 §5.1):
// a client that trims the space would frame the answer by it. net/http's server leaves such
// fields out when it writes them; the edge's own server (edge/http1) writes what it stores.
// readHead refuses such heads, so only the answers http.ReadResponse reads need it.
func dropInvalidFields(h http.Header) {
	for k := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			delete(h, k)
		}
	}
}

// invalidHeader says which field of h net/http would refuse to send, or "".
func invalidHeader(h http.Header) string {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Sprintf("field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Sprintf("field value for %q", k) // the value may be secret
			}
		}
	}
	return ""
}

// replayable is net/http's rule for sending a request again: no body, and a method that is
// idempotent or a request that says it is.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return len(req.Header["Idempotency-Key"]) > 0 || len(req.Header["X-Idempotency-Key"]) > 0
}

// hostPort is the address to dial for a URL host: port 80 unless it names one.
func hostPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i > strings.LastIndexByte(host, ']') {
		if i < len(host)-1 {
			return host
		}
		host = host[:i] // "host:" means the default port, as for the Transport
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), "80")
}

// pool returns the idle pool of addr, creating it on first use.
func (t *h1Transport) pool(addr string) *h1Pool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pools[addr]
	if p == nil {
		p = &h1Pool{t: t, addr: addr}
		t.pools[addr] = p
	}
	return p
}

// CloseIdleConnections closes every idle connection, of this transport and of the fallback.
// Connections in use are not affected and are pooled again when their exchange ends.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	pools := make([]*h1Pool, 0, len(t.pools))
	for _, p := range t.pools {
		pools = append(pools, p)
	}
	t.mu.Unlock()
	for _, p := range pools {
		p.closeIdle()
	}
	t.fallback.CloseIdleConnections()
}

// h1Pool keeps the idle connections to one address.
type h1Pool struct {
	t    *h1Transport
	addr string

	mu    sync.Mutex
	idle  []*h1Conn   // oldest first; the newest is taken first, so the oldest age out
	sweep *time.Timer // closes connections idle for longer than idleTimeout; nil until needed
	armed bool        // sweep is scheduled
}

// take returns the most recently used idle connection that is still quiet, or nil. One with
// something to read (bytes the upstream sent after its answer, which would be read as the
// next request's, or the end of the connection) is closed and the next one tried, as nginx
// and net/http's Transport drop such connections. A connection with raw I/O is not peeked at
// here: its exchange checks as it sends (rawconn.Conn.WriteRead), which leaves no moment
// between the check and the wait for the answer in which a close could go unseen.
func (p *h1Pool) take() *h1Conn {
	for {
		c := p.takeIdle()
		if c == nil || c.probe == nil || c.probe.Quiet() {
			return c
		}
		c.nc.Close()
	}
}

// takeIdle returns the most recently used idle connection, or nil. One idle for longer than
// idleTimeout is closed instead, with every older one.
func (p *h1Pool) takeIdle() *h1Conn {
	p.mu.Lock()
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	if time.Since(c.idleAt) < p.t.idleTimeout {
		p.mu.Unlock()
		return c
	}
	expired := append(p.idle, c)
	p.idle = nil
	p.mu.Unlock()
	for _, c := range expired {
		c.nc.Close()
	}
	return nil
}

// put keeps c for reuse, or closes it if the pool is full.
func (p *h1Pool) put(c *h1Conn) {
	c.reused = true
	c.idleAt = time.Now()
	p.mu.Lock()
	if len(p.idle) >= p.t.maxIdle {
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	p.idle = append(p.idle, c)
	if !p.armed {
		p.armed = true
		if p.sweep == nil {
			p.sweep = time.AfterFunc(p.t.idleTimeout, p.expire)
		} else {
			p.sweep.Reset(p.t.idleTimeout)
		}
	}
	p.mu.Unlock()
}

// expire closes the connections idle for idleTimeout or longer, and schedules itself for the
// next one to age out, if any.
func (p *h1Pool) expire() {
	now := time.Now()
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleAt) >= p.t.idleTimeout {
		i++
	}
	expired := slices.Clone(p.idle[:i])
	p.idle = slices.Delete(p.idle, 0, i) // zeroes the freed tail
	p.armed = len(p.idle) > 0
	if p.armed {
		p.sweep.Reset(p.idle[0].idleAt.Add(p.t.idleTimeout).Sub(now))
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.nc.Close()
	}
}

// closeIdle closes every idle connection.
func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if p.sweep != nil {
		p.sweep.Stop()
	}
	p.armed = false
	p.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

// dial opens a new connection to the pool's address.
func (p *h1Pool) dial(ctx context.Context) (*h1Conn, error) {
	nc, err := p.t.dial(ctx, "tcp", p.addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s: %w", p.addr, context.Cause(ctx))
		}
		return nil, err // a *net.OpError, which names the operation and address
	}
	// Raw system calls as the edge's own server makes (internal/rawconn) where nc has them,
	// whose exchanges check the socket themselves (WriteRead); else a socket take can peek at.
	c := &h1Conn{pool: p}
	if raw := rawconn.New(nc); raw != nil {
		nc = raw
		c.cr.raw = raw
		c.cw.probe = rawconn.NewProber(raw)
	} else {
		c.probe = rawconn.NewProber(nc)
	}
	c.nc = nc
	c.cr.nc, c.cr.maxHead = nc, p.t.maxHead
	c.br = bufio.NewReaderSize(&c.cr, h1ReadBuffer)
	c.cw.cr = &c.cr
	c.bw = bufio.NewWriterSize(&c.cw, 4<<10)
	c.abort = func() { nc.SetDeadline(aLongTimeAgo) }
	return c, nil
}

// h1Conn is one connection with its buffers.
type h1Conn struct {
	pool   *h1Pool
	nc     net.Conn
	probe  *rawconn.Prober // nc's socket, for take's peek; nil with raw I/O (WriteRead checks) or none to peek at
	cr     limitReader
	br     *bufio.Reader
	aside  *bufio.Reader // what the answer is read through after a head too long for br, or nil
	cw     sendWriter    // what bw flushes to
	bw     *bufio.Writer
	abort  func() // unblocks the connection's reads and writes: run when the context ends
	reused bool   // it served an exchange before
	idleAt time.Time
}

// limitReader is the connection as its bufio.Reader reads it: a response head may take at
// most limit bytes, and a read that met the end of the stream is remembered. With raw I/O, the
// request's last bytes wait in unsent until that first read, which sends them and then waits
// for the answer (rawconn.Conn.WriteRead) without first finding the socket empty.
type limitReader struct {
	nc     net.Conn
	raw    *rawconn.Conn // nc, where it has raw I/O
	unsent []byte        // the end of the request, held back for the read that waits for the answer
	stale  bool          // unsent is all of a request on a kept-alive connection: one not quiet went bad idle
	limit  int64
	sawEOF bool
	// maxHead is the bound limit starts from for an answer's heads, for the error past it.
	maxHead int64
}

func (r *limitReader) Read(p []byte) (int, error) {
	if r.limit <= 0 {
		return 0, headTooLargeError{r.maxHead}
	}
	if int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	var n int
	var err error
	if out := r.unsent; out != nil {
		r.unsent = nil
		n, err = r.raw.WriteRead(out, p)
		if err == rawconn.ErrNotQuiet && !r.stale {
			// A new connection, or part of the request went out before (checked then): what
			// there is to read is the upstream's own (an early answer, its close), which it
			// gets as it would have without the check.
			r.raw.Write(out) // its error, if any, is the read's to tell
			n, err = r.nc.Read(p)
		}
	} else {
		n, err = r.nc.Read(p)
	}
	if err == io.EOF {
		r.sawEOF = true
	}
	r.limit -= int64(n)
	return n, err
}

// sendWriter is the connection as its bufio.Writer writes it. While hold is set (exchange's
// last flush of a request, with raw I/O), what it is given stays in the bufio.Writer's buffer,
// untouched until the next request, and goes out with the read of the answer (limitReader),
// after WriteRead's check that the connection is quiet. A head larger than the buffer goes
// out in parts before that: on a kept-alive connection the first is checked here, as take
// checks connections without raw I/O.
type sendWriter struct {
	cr    *limitReader
	probe *rawconn.Prober // with raw I/O, the socket
	check bool            // a request on a kept-alive connection, nothing of it sent yet
	hold  bool
}

func (w *sendWriter) Write(p []byte) (int, error) {
	if w.hold && w.cr.unsent == nil {
		w.cr.unsent, w.cr.stale = p, w.check
		return len(p), nil
	}
	if w.check {
		w.check = false
		if w.probe != nil && !w.probe.Quiet() {
			return 0, rawconn.ErrNotQuiet
		}
	}
	return w.cr.nc.Write(p)
}

// staleConnError is a kept-alive connection failing before any byte of the answer came back:
// the upstream most likely closed it while it was idle, so the request may be sent again.
type staleConnError struct{ err error }

func (e *staleConnError) Error() string { return e.err.Error() }
func (e *staleConnError) Unwrap() error { return e.err }

// exchangeError is an exchange's failure, naming what was being done on which connection. Its
// Timeout is its cause's, as notReachedError's: url.Error.Timeout asks its Err directly, not
// through Unwrap, so a header timeout wrapped by fmt.Errorf read as no timeout through Do, and
// the edge answered a fill whose origin sent no head in time with 502 instead of 504.
type exchangeError struct{ err error }

func (e *exchangeError) Error() string { return e.err.Error() }
func (e *exchangeError) Unwrap() error { return e.err }

func (e *exchangeError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}

// errHeaderTimeout is ResponseHeaderTimeout expiring; like the Transport's, it is a net.Error
// whose Timeout is true.
var errHeaderTimeout error = headerTimeoutError{}

type headerTimeoutError struct{}

func (headerTimeoutError) Error() string   { return "timeout awaiting response headers" }
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }

// exchange sends req on c and reads the answer's head. On success c belongs to the response
// (its body gives it back); on error c is closed. Reads end at deadline, if not zero, and so
// does the write of the request when ctx has no deadline of its own (a fill's has: the
// context's end aborts the write, and the common case needs no second timer); a read or
// write that ends at deadline fails with errBodyTimeout, as the context's cause did.
func (c *h1Conn) exchange(ctx context.Context, deadline time.Time, req *http.Request, trace *httptrace.ClientTrace) (*http.Response, error) {
	// Cancellation without a goroutine: the context ending puts the connection's deadline
	// in the past, which ends whatever read or write is blocked on it.
	stop := afterFunc(ctx, c.abort)
	fail := func(what string, err error, beforeAnswer bool) error {
		stop()
		c.nc.Close()
		switch {
		case ctx.Err() != nil:
			err = context.Cause(ctx)
		case errors.Is(err, os.ErrDeadlineExceeded) && pastDeadline(deadline):
			err = errBodyTimeout
		case errors.Is(err, os.ErrDeadlineExceeded):
			err = errHeaderTimeout
		case beforeAnswer && c.reused:
			return &staleConnError{fmt.Errorf("%s %s, a kept-alive connection: %w", what, c.pool.addr, err)}
		}
		return &exchangeError{fmt.Errorf("%s %s: %w", what, c.pool.addr, err)}
	}
	_, bounded := ctx.Deadline()
	bounded = bounded || deadline.IsZero()
	if !bounded {
		c.nc.SetWriteDeadline(deadline) // until the head is in: the request's end may go out with its read
	}
	c.cw.check = c.reused // on a kept-alive connection nothing goes out before a check that it is quiet
	err := writeRequest(c.bw, req, trace)
	if err == nil {
		// With raw I/O the request's end goes out with the read of the answer (limitReader),
		// which first checks that the connection has nothing to read (WriteRead).
		c.cw.hold = c.cr.raw != nil
		err = c.bw.Flush()
		c.cw.hold, c.cw.check = false, false
	}
	if err != nil {
		return nil, fail("write request to", err, true)
	}
	hd := time.Now().Add(c.pool.t.headerTimeout)
	if !deadline.IsZero() && deadline.Before(hd) {
		hd = deadline
	}
	c.nc.SetReadDeadline(hd)
	if ctx.Err() != nil {
		// The context ended before the deadline was set, which may have undone its abort.
		return nil, fail("send request to", ctx.Err(), false)
	}
	c.cr.limit = c.cr.maxHead // for every head of the answer, 1xx and final, together
	if _, err := c.br.Peek(1); err != nil {
		return nil, fail("read response from", err, true)
	}
	if !bounded {
		c.nc.SetWriteDeadline(time.Time{}) // a pooled connection must not keep it
	}
	if trace != nil && trace.GotFirstResponseByte != nil {
		trace.GotFirstResponseByte()
	}
	// Every 1xx head and the final one come within the read deadline set above (hd), which
	// no 1xx extends: a 1xx flood ends at the response header timeout if not at max1xx.
	resp, length, fast := readHead(c.br, req)
	split := false // the final head has both Transfer-Encoding and Content-Length
	// A head longer than c.br's buffer is read aside, for framingFields to see it whole, and
	// what follows it read through hr (c.aside, which release also looks in). After a second
	// such head, what the first one's reader holds is seen by neither: c is not reused.
	hr, nested := c.br, false
	c.aside = nil
	for n1xx := 0; !fast; {
		te, cl, long := framingFields(hr)
		if long {
			head := readLongHead(hr)
			te, cl = scanFraming(head)
			nested = hr != c.br
			hr = bufio.NewReader(io.MultiReader(bytes.NewReader(head), hr))
			c.aside = hr
		}
		if resp, err = http.ReadResponse(hr, req); err != nil {
			return nil, fail("read response header from", err, false)
		}
		if te && !resp.ProtoAtLeast(1, 1) {
			return nil, fail("read response header from", errCodedHTTP10, false)
		}
		// A Transfer-Encoding net/http did not see: the body, read to the connection's end,
		// would hold the chunk sizes. With a Content-Length it is framed by that, as a field
		// of another name; its connection is not reused (split, below).
		if te && resp.TransferEncoding == nil && resp.ContentLength < 0 {
			return nil, fail("read response header from", errHiddenCoding, false)
		}
		split = te && cl
		dropInvalidFields(resp.Header)
		code := resp.StatusCode
		if code >= 200 {
			break
		}
		if code < 100 {
			// Not a 1xx: no status at all (http.ReadResponse takes any three digits).
			return nil, fail("read response header from", errStatusBelow100, false)
		}
		if code == http.StatusSwitchingProtocols {
			return nil, fail("read response header from", errUnexpectedSwitch, false)
		}
		if n1xx++; n1xx > max1xx {
			return nil, fail("read response header from", errTooMany1xx, false)
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, fail("handle 1xx response from", err, false)
			}
		}
	}
	c.cr.limit = math.MaxInt64
	c.nc.SetReadDeadline(deadline)
	if ctx.Err() != nil {
		return nil, fail("read response header from", ctx.Err(), false)
	}
	// An answer framed two ways is read by its chunks (RFC 9112 §6.3), but what its upstream
	// meant by the other could be read as the next request's answer: its connection is closed.
	keep := !resp.Close && !split && !nested && !req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")
	if resp.Body == http.NoBody {
		c.release(stop, keep)
		return resp, nil
	}
	b := &h1Body{rc: resp.Body, c: c, ctx: ctx, deadline: deadline, stop: stop, keep: keep}
	if fast {
		b.lb = lengthBody{br: c.br, n: length}
		b.rc = &b.lb
	}
	resp.Body = b
	return resp, nil
}

// release ends an exchange: c goes back to the pool if keep says the exchange left it
// clean, the context did not end meanwhile and the upstream did not close its side.
func (c *h1Conn) release(stop func() bool, keep bool) {
	// stop fails once the context ended: its abort ran, or is about to run, on c. Bytes
	// already buffered past the answer are not the next request's answer: c is not kept.
	if stop() && keep && !c.cr.sawEOF && c.br.Buffered() == 0 && (c.aside == nil || c.aside.Buffered() == 0) {
		c.aside = nil
		c.pool.put(c)
		return
	}
	c.nc.Close()
}

// errBodyClosed is a read after Close, as net/http words it.
var errBodyClosed = errors.New("http: read on closed response body")

// h1Body is a response body that gives its connection back once read to its end, and closes
// it if closed before (unless what is left has already arrived and is short).
type h1Body struct {
	rc       io.ReadCloser // the body as framed, reading from c's buffer: lb or http.ReadResponse's
	lb       lengthBody    // a body readHead framed
	c        *h1Conn
	ctx      context.Context
	deadline time.Time // when the exchange's reads end (its BodyTimeout), zero if never
	stop     func() bool
	keep     bool // the connection may be reused after this body

	mu      sync.Mutex // guards the fields below; Close may come while a Read is blocked
	reading bool       // a Read is using the connection
	closed  bool       // Close was called
	done    bool       // the connection was released; err is what reads return
	err     error
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return 0, errBodyClosed
	case b.done:
		b.mu.Unlock()
		return 0, b.err
	}
	b.reading = true
	b.mu.Unlock()

	n, err := b.rc.Read(p)

	b.mu.Lock()
	b.reading = false
	closed := b.closed
	if err != nil || closed {
		if err == nil {
			err = errBodyClosed
		} else if err != io.EOF && b.ctx.Err() != nil {
			// The abort ended the read: report why, as the Transport does.
			err = context.Cause(b.ctx)
		} else if errors.Is(err, os.ErrDeadlineExceeded) && pastDeadline(b.deadline) {
			err = errBodyTimeout
		}
		b.done, b.err = true, err
	}
	b.mu.Unlock()
	if err != nil {
		// At EOF the body is whole; a Close that came meanwhile closed the connection.
		b.c.release(b.stop, err == io.EOF && !closed && b.keep)
	}
	return n, err
}

// Close ends the exchange. A body read to its end has given its connection back already;
// otherwise up to h1DrainBytes of what already arrived are read to reach the end, and if that
// is not enough the connection is closed.
func (b *h1Body) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	if b.reading {
		// Unblock the Read; it sees closed and releases the connection.
		b.mu.Unlock()
		b.c.nc.Close()
		return nil
	}
	done := b.done
	b.done = true
	b.mu.Unlock()
	if done {
		return nil
	}
	keep := b.keep
	if keep {
		// Past deadline: only what the buffer already holds is read.
		b.c.nc.SetReadDeadline(aLongTimeAgo)
		n, err := io.CopyN(io.Discard, b.rc, h1DrainBytes+1)
		keep = err == io.EOF && n <= h1DrainBytes
	}
	b.c.release(b.stop, keep)
	return nil
}

// afterFunc is context.AfterFunc, calling ctx's own AfterFunc method directly when it has
// one, as context.AfterFunc would in the end: context.AfterFunc puts a cancelable context, a
// done channel and closures of its own between them, on every exchange under a fill's context
// (edge's fillContext; issue 15).
func afterFunc(ctx context.Context, f func()) (stop func() bool) {
	if a, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}
