package edge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/edge/compress"
	"github.com/meridian-cdn/meridian/edge/http1"
	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/origin/fetch"
	"golang.org/x/net/http/httpguts"
)

// pass sends a request that the cache does not answer (unsafe methods, cookies passed, event
// streams, WebSocket upgrades) to the origin and streams the answer back as it arrives, with
// any 1xx interim response (103 Early Hints) before it. The request body is buffered whole
// before the request takes an origin slot. A successful unsafe request invalidates what the
// cache holds for the target and for same-host Location and Content-Location (RFC 9111 §4.4),
// and for the groups named by Cache-Group-Invalidation (RFC 9875).
func (n *Node) pass(w *logWriter, req *request) {
	r := req.r
	w.cacheStatus, w.tier = "pass", "origin"
	req.clientAE = r.Header["Accept-Encoding"] // sent on as it is: what undoCoding reads
	switch r.Method {
	case http.MethodConnect, http.MethodTrace:
		if r.Method == http.MethodConnect && r.ProtoMajor == 1 {
			// The guard beneath net/http (http1.GuardConn) stops following a connection at a
			// CONNECT, whose bytes may be a tunnel's: kept, an HTTP/1.0 request with
			// Transfer-Encoding behind it would be framed by its Content-Length.
			w.Header().Set("Connection", "close")
		}
		n.fail(w, req, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	mf, hasMF := maxForwards(r)
	if hasMF && mf == 0 {
		// RFC 9110 §7.6.2: an intermediary forwards no OPTIONS whose Max-Forwards is 0, and
		// answers it as its final recipient.
		w.tier = "edge"
		h := w.Header()
		h.Set("Allow", "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE")
		h.Set("Content-Length", "0")
		h.Set("Cache-Status", httpcache.Status{Cache: n.name, Proto: req.proto, Detail: "max-forwards"}.String())
		w.WriteHeader(http.StatusOK)
		return
	}
	o := req.host.origin
	// req.path, not r.URL.RequestURI(): its path may turn a "%2F" into "/" (wire.EscapedPath).
	uri := req.path
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		uri += "?" + r.URL.RawQuery
	}
	target, err := url.Parse(o.Scheme + "://" + o.Host + o.Path + uri)
	if err != nil {
		n.fail(w, req, http.StatusBadRequest, "bad request target")
		return
	}
	upgrade := isUpgrade(r)
	var transport http.RoundTripper
	if upgrade {
		transport = n.upgradeTransport()
	} else {
		transport = roundTripper{n.fill.passUpstream(req.host)}
	}
	// An upgrade's body, if it has one, is bounded and buffered like any other (it went to the
	// origin unbounded); the bytes after its head that belong to the new protocol are not its
	// body, and stay in the connection ReverseProxy hijacks.
	if r.ContentLength > n.cfg.MaxRequestBodyBytes {
		n.fail(w, req, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	body, size, err := n.bufferBody(w, r)
	if err != nil {
		status, msg := http.StatusBadRequest, "request body not read"
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			status, msg = http.StatusRequestEntityTooLarge, "request body too large"
		case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
			status, msg = http.StatusRequestTimeout, "request body too slow"
		case errors.Is(err, errBufferStorage):
			// The edge's fault, not the request's (a 400 told the client it was malformed).
			status, msg = http.StatusInternalServerError, "request body not buffered"
		}
		w.Header().Set("Connection", "close")
		n.fail(w, req, status, msg)
		w.note = err.Error() // after fail, which sets its own: the log says why
		return
	}
	defer body.Close()
	// The exchange's context, which a failed flush to the client ends (passWriter).
	ctx, cut := context.WithCancelCause(r.Context())
	defer cut(nil)
	pw := &passWriter{logWriter: w, cut: cut, n: n}
	defer pw.endTunnel()
	r = r.WithContext(ctx) // a shallow copy, whose body is the buffer
	r.Body, r.ContentLength, r.TransferEncoding = body, size, nil
	// ReverseProxy clears the client's header map after each 1xx it forwards: what the edge
	// set before the exchange (Connection: close after a chunked request, Alt-Svc) is set again
	// for the final answer, or a request with Transfer-Encoding would keep its connection.
	preset := w.Header().Clone()
	restore := func() {
		h := w.Header()
		for k, v := range preset {
			if _, ok := h[k]; !ok {
				h[k] = v
			}
		}
	}
	fwd := "method"
	if safeMethod(r.Method) {
		fwd = "bypass" // cookies passed, or an event stream
	}
	// The answer's body decoded for a client that does not accept its coding (undoCoding), if
	// it is; and the body as ReverseProxy copies it (decoded or not), whose first read error
	// it keeps. ReverseProxy reads both on this goroutine. A read error aborts the answer,
	// which ReverseProxy does itself only under net/http's servers (http.ServerContextKey):
	// over HTTP/3 an answer the upstream cut short, or whose exchange ended with its client,
	// ended cleanly, complete-looking. The log says why.
	var decoded *decodedBody
	var copied *sourceReader
	defer func() {
		// Also when ReverseProxy panics (http.ErrAbortHandler), as it does under net/http's
		// servers at a failed copy.
		switch ferr := pw.flushErr(); {
		case ferr != nil:
			// The body's read failed too, if it did, because the flush ended the exchange. A
			// write that failed first noted its own error (logWriter.Write), which is kept:
			// ReverseProxy flushes after a failed write too, and that flush's error says less
			// (HTTP/2's: the stream closed, the edge having reset it at the send timeout).
			if w.note == "" {
				w.note = "stream aborted: " + ferr.Error()
			}
		case decoded != nil && decoded.err != nil:
			w.note = n.decodeFailure(req, decoded.coding, decoded.src, decoded.err)
		case copied != nil && copied.err != nil:
			w.note = "stream aborted: " + copied.err.Error()
			w.sendHeld() // the upstream cut it: the client sees the head, then the cut
		}
	}()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			h := n.upstreamHeader(req, passThrough, 3)
			// ReverseProxy set these for an upgrade or a trailers-aware client.
			for _, k := range []string{"Connection", "Upgrade", "Te"} {
				if v, ok := pr.Out.Header[k]; ok {
					h[k] = v
				}
			}
			delete(h, "Expect") // the body is already here
			if _, sent := h["Max-Forwards"]; sent && hasMF {
				h.Set("Max-Forwards", strconv.FormatInt(mf-1, 10)) // RFC 9110 §7.6.2
			}
			pr.Out.Header = h
			pr.Out.URL = target
			pr.Out.RequestURI = "" // fetch sends it with an http.Client
			pr.Out.Host = req.host.cfg.Host
			if req.host.cfg.OriginHost != "" {
				pr.Out.Host = req.host.cfg.OriginHost
			}
		},
		Transport: transport,
		ModifyResponse: func(resp *http.Response) error {
			restore()
			// The origin's own URLs are the host's, for the client and for invalidation.
			if !req.fromPeer {
				clientURLs(resp.Header, req)
			}
			if resp.StatusCode >= 200 && resp.StatusCode < 400 {
				inv := resp.Header
				if req.host.keepURLs && !req.fromPeer {
					// The client is told the origin's URL, but the copy it names is the
					// host's all the same: a shallow copy, since hostURLs replaces values.
					inv = maps.Clone(inv)
					hostURLs(inv, req)
				}
				n.invalidate(req, r, resp.StatusCode, inv)
			}
			h := resp.Header
			// Whether the client gets the answer decoded: decided on the origin's answer, whose
			// no-transform forbids it (RFC 9110 §7.7), before the host's policy sets the client's
			// Cache-Control, as on every other way an answer takes.
			coding := undoCoding(req, resp.StatusCode, h)
			// Another client would get it decoded: a cache downstream must key it on
			// Accept-Encoding, as a stored answer is (the fill adds the field).
			varies := coding == "" && decodableFor(req, resp.StatusCode, h) != ""
			// The fleet's fields, from an origin: no client may take them for the fleet's.
			deleteFleetFields(h)
			delete(h, "Alt-Svc") // the origin's endpoints are not ours (as on a fill)
			if !req.host.cfg.Cache.KeepSurrogateHeaders {
				httpcache.StripSurrogateHeaders(h)
			}
			applyResponsePolicy(h, req.host)
			if varies {
				h.Set("Vary", compress.MergeVary(h.Values("Vary"), "Accept-Encoding"))
			}
			if _, ok := h["Content-Type"]; !ok {
				// ReverseProxy copies fields value by value: the client's map gets noSniff's.
				noSniff(w.Header())
			}
			h.Set("Via", n.via(strings.Join(h["Via"], ", "), resp.ProtoMajor, resp.ProtoMinor))
			h.Set("Cache-Status", httpcache.Status{Cache: n.name, Proto: req.proto, Fwd: fwd, FwdStatus: resp.StatusCode}.String())
			if coding != "" {
				compress.DecodeHeader(h)
				if r.Method != http.MethodHead && bodyAllowed(resp.StatusCode) {
					stream := isEventStream(h) || resp.ContentLength < 0
					d, err := n.newDecodedBody(resp.Body, coding, stream)
					if err != nil {
						// Nothing was sent: ErrorHandler answers 502 (503 past the decode
						// budget) and notes err.
						if !errors.Is(err, compress.ErrOverBudget) {
							n.decodeFailure(req, coding, d.src, err)
						}
						return err
					}
					decoded, resp.Body, resp.ContentLength = d, d, -1
				}
			}
			if resp.StatusCode != http.StatusSwitchingProtocols { // an upgrade's body is the connection
				copied = &sourceReader{r: resp.Body}
				resp.Body = struct {
					io.Reader
					io.Closer
				}{copied, resp.Body}
			}
			return nil
		},
		ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) {
			restore()
			if errors.Is(err, compress.ErrOverBudget) {
				n.refuseDecode(w, req, err)
				return
			}
			status := upstreamErrorStatus(err)
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			n.fail(w, req, status, http.StatusText(status))
			w.note = err.Error() // fail noted the status text; the log wants the cause
		},
		ErrorLog: log.New(io.Discard, "", 0), // errors reach the access log through ErrorHandler
	}
	rp.ServeHTTP(pw, r)
	if pw.flushErr() != nil || copied != nil && copied.err != nil {
		// The client must see the answer cut short, not a complete-looking one.
		panic(http.ErrAbortHandler)
	}
}

// passWriter is the client's writer as a pass's ReverseProxy sees it. ReverseProxy flushes an
// event stream, or a body without a length, after every write and ignores the flush's error;
// it then waited for the upstream's next bytes, holding the exchange (and its bulkhead slot)
// open for a client already gone, as long as the upstream stayed quiet: for an event stream,
// up to pass_timeout. Over HTTP/3 nothing else notices (a failed write or flush does not end
// the request's context there). So a failed flush ends the exchange's context, which ends the
// upstream exchange and ReverseProxy's read of it.
type passWriter struct {
	*logWriter
	cut context.CancelCauseFunc // ends the exchange's context
	n   *Node
	tun *tunnel // the switched upgrade's, once hijacked (set and read on the handler's goroutine)

	mu  sync.Mutex // protects err: ReverseProxy also flushes from a timer's goroutine
	err error      // the first failed flush
}

// FlushError is what http.ResponseController, and so ReverseProxy, calls.
func (w *passWriter) FlushError() error {
	err := w.logWriter.FlushError()
	if err == nil {
		return nil
	}
	w.mu.Lock()
	if w.err == nil {
		w.err = fmt.Errorf("flush to the client: %w", err)
	}
	cause := w.err
	w.mu.Unlock()
	w.cut(cause)
	return err
}

func (w *passWriter) Flush() { w.FlushError() }

// WriteHeader writes the answer's head. ReverseProxy forwards the origin's 1xx (103 Early
// Hints) through it with the origin's fields, before ModifyResponse sees the final answer:
// the fleet's own fields are taken out of those here, as on a fill's (interim.got1xx).
func (w *passWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		deleteFleetFields(w.Header())
	}
	w.logWriter.WriteHeader(code)
}

// Hijack is what http.ResponseController, and so ReverseProxy, calls to switch protocols (an
// upgrade answered 101). The connection becomes a tunnel (tunnels): counted in the node's load
// and drained with it, closed once idle, logged as it ends. It is counted before net/http is
// asked to hand it over, so that no drain sees it neither as the server's nor as a tunnel.
//
// ReverseProxy copies the client's side of the tunnel from the connection alone (golang issue
// 80875), not from the bufio.Reader net/http hands with it, in which lie the bytes the client
// sent behind the upgrade's head that net/http had read ahead (early data): the connection
// returned gives those first, as nginx forwards what it read past an upgrade's head.
func (w *passWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	tun := w.n.tunnels.add(w.n, w.cut)
	conn, brw, err := http.NewResponseController(w.logWriter).Hijack()
	if err != nil {
		tun.end()
		return conn, brw, err
	}
	w.tun = tun
	tun.attach(conn)
	// ReverseProxy writes the 101 on the connection, past the writer: the log and the
	// metrics count it as what it is, not as the 200 a writer never told otherwise.
	w.status, w.wroteHeader = http.StatusSwitchingProtocols, true
	tc := &tunnelConn{Conn: conn, t: tun}
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		tc.early = bytes.Clone(early)
		brw.Reader.Discard(n)
		// The guard beneath net/http followed them as the request they would have been had
		// the upgrade not been switched, and may have marked one.
		http1.Unmark(conn, tc.early)
	}
	if _, ok := conn.(interface{ CloseWrite() error }); ok {
		return tunnelConnCW{tc}, brw, nil
	}
	return tc, brw, nil
}

// endTunnel ends the accounting of the exchange's tunnel, if it was switched to one, as the
// handler returns: the access log line gets the bytes sent to the client through it (bytes)
// and those the client sent, and why the edge closed it, if it did (note).
func (w *passWriter) endTunnel() {
	t := w.tun
	if t == nil {
		return
	}
	t.end()
	w.bytes += t.out.Load()
	note := fmt.Sprintf("tunnel: %d bytes from the client", t.in.Load())
	if why := t.why.Load(); why != nil {
		note += "; closed: " + (*why).Error()
	}
	if w.note != "" {
		note += "; " + w.note
	}
	w.note = note
}

// tunnelConn is a switched upgrade's client connection, as ReverseProxy copies it both ways: it
// gives the bytes net/http had read ahead of it (early) before its own, and counts what passes
// through it each way, and when (tunnel).
type tunnelConn struct {
	net.Conn
	early []byte
	t     *tunnel
}

func (c *tunnelConn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		c.t.passed(&c.t.in, n)
		return n, nil
	}
	n, err := c.Conn.Read(p)
	c.t.passed(&c.t.in, n)
	return n, err
}

func (c *tunnelConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.t.passed(&c.t.out, n)
	return n, err
}

// tunnelConnCW is a tunnelConn whose connection half-closes (ReverseProxy passes each side's
// end on as the other's half-close).
type tunnelConnCW struct{ *tunnelConn }

func (c tunnelConnCW) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// Errors a tunnel is closed with (tunnel.close), which its access log line gives.
var (
	errTunnelIdle     = errors.New("websocket_idle_timeout: no bytes either way")
	errTunnelShutdown = errors.New("still open at shutdown_timeout")
)

// tunnels are the node's switched WebSocket upgrades. net/http stops following a connection
// once it has handed it over (http.StateHijacked): these count it instead, as an open
// connection of the load report for as long as the tunnel lasts (its handler, still running,
// is a request in flight already), and the stop drains them (drain). The zero value is ready.
type tunnels struct {
	mu      sync.Mutex
	open    map[*tunnel]struct{}
	closed  bool          // drained: a tunnel switched since is closed at once
	emptied chan struct{} // closed when open empties, for drain (nil: nobody waits)
}

// tunnel is one switched upgrade: its exchange's context, whose end closes the origin's
// connection (ReverseProxy closes it at it), its client's connection, and what passed through
// it.
type tunnel struct {
	ts  *tunnels
	n   *Node
	cut context.CancelCauseFunc
	// The client's connection, once net/http handed it over (attach), which close closes: a
	// copy blocked writing to a client that reads nothing ends only then, not at the end of
	// the exchange's context (nor at the origin connection's close that follows it).
	mu      sync.Mutex
	conn    net.Conn
	closing bool                  // close was called
	why     atomic.Pointer[error] // why the edge closed it (close), if it did
	in, out atomic.Int64          // bytes from and to the client
	// start and last (a time since start, of the last byte either way) are the monotonic
	// clock's: idle reads them from its timer's goroutine, as the copies write last.
	start time.Time
	last  atomic.Int64
	idle  time.Duration
	timer *time.Timer
	ended atomic.Bool
}

// add counts a new tunnel of n's, whose exchange cut ends, and arms its idle timeout. Past the
// drain, it is closed at once.
func (ts *tunnels) add(n *Node, cut context.CancelCauseFunc) *tunnel {
	t := &tunnel{ts: ts, n: n, cut: cut, start: time.Now(), idle: n.cfg.WebSocketIdleTimeout}
	n.openConns.Add(1)
	ts.mu.Lock()
	if ts.open == nil {
		ts.open = map[*tunnel]struct{}{}
	}
	ts.open[t] = struct{}{}
	closed := ts.closed
	ts.mu.Unlock()
	if closed {
		t.close(errTunnelShutdown)
	}
	// Armed once set: checkIdle reads t.timer.
	t.timer = time.AfterFunc(math.MaxInt64, t.checkIdle)
	t.timer.Reset(t.idle)
	return t
}

// passed counts n bytes through the tunnel in counter c, and the time they passed.
func (t *tunnel) passed(c *atomic.Int64, n int) {
	if n > 0 {
		c.Add(int64(n))
		t.last.Store(int64(time.Since(t.start)))
	}
}

// checkIdle closes the tunnel if no byte passed either way for its idle timeout, and otherwise
// looks again when it would have, as nginx's timers on an upgraded connection, which each
// event on either side moves.
func (t *tunnel) checkIdle() {
	if t.ended.Load() {
		return
	}
	quiet := time.Since(t.start) - time.Duration(t.last.Load())
	if quiet >= t.idle {
		t.close(errTunnelIdle)
		return
	}
	t.timer.Reset(t.idle - quiet)
}

// close ends the tunnel for why: its exchange, and so its origin's connection, and its
// client's connection, as nginx closes both.
func (t *tunnel) close(why error) {
	t.why.CompareAndSwap(nil, &why)
	t.cut(why)
	t.mu.Lock()
	t.closing = true
	c := t.conn
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// attach gives the tunnel its client's connection, as net/http hands it over: closed at once
// if the tunnel was closed before (a switch past the drain).
func (t *tunnel) attach(c net.Conn) {
	t.mu.Lock()
	t.conn = c
	closing := t.closing
	t.mu.Unlock()
	if closing {
		c.Close()
	}
}

// end stops counting the tunnel, once its handler is done with it.
func (t *tunnel) end() {
	if t.ended.Swap(true) {
		return
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	t.n.openConns.Add(-1)
	ts := t.ts
	ts.mu.Lock()
	delete(ts.open, t)
	if len(ts.open) == 0 && ts.emptied != nil {
		close(ts.emptied)
		ts.emptied = nil
	}
	ts.mu.Unlock()
}

// count is the number of tunnels open.
func (ts *tunnels) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.open)
}

// drain waits for the open tunnels to end until ctx ends (what is left of shutdown_timeout),
// then closes those still open, and any switched later, and waits for their handlers to be
// done with them (at most tunnelCloseWait). It returns how many it closed.
func (ts *tunnels) drain(ctx context.Context) int {
	wait := func(ctx context.Context) bool {
		ts.mu.Lock()
		if len(ts.open) == 0 {
			ts.mu.Unlock()
			return true
		}
		if ts.emptied == nil {
			ts.emptied = make(chan struct{})
		}
		emptied := ts.emptied
		ts.mu.Unlock()
		select {
		case <-emptied:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if wait(ctx) {
		ts.mu.Lock()
		ts.closed = true
		ts.mu.Unlock()
		return 0
	}
	ts.mu.Lock()
	ts.closed = true
	open := make([]*tunnel, 0, len(ts.open))
	for t := range ts.open {
		open = append(open, t)
	}
	ts.mu.Unlock()
	for _, t := range open {
		t.close(errTunnelShutdown)
	}
	closing, cancel := context.WithTimeout(context.Background(), tunnelCloseWait)
	defer cancel()
	wait(closing)
	return len(open)
}

// tunnelCloseWait bounds the wait for tunnels closed at shutdown_timeout to be done: closing
// their connections ends their copies at once.
const tunnelCloseWait = 5 * time.Second

// flushErr is the first failed flush's error, or nil.
func (w *passWriter) flushErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Unwrap gives http.ResponseController the logWriter (a hijack for an upgrade, deadlines).
func (w *passWriter) Unwrap() http.ResponseWriter { return w.logWriter }

// decodedBody is a pass's answer body, decoded for a client that does not accept its coding:
// first the bytes decoded before the header went out (as deliverDecoded, so that a body not in
// its coding at all gets a 502), then the rest as ReverseProxy reads it.
type decodedBody struct {
	coding string
	body   io.Closer     // the answer's body
	src    *sourceReader // reads body as it came
	dec    io.ReadCloser
	first  []byte
	eof    bool  // the first read reached the end
	err    error // the first error other than io.EOF
}

// newDecodedBody starts decoding body from coding (newDecoder; readFirst: stream for an event
// stream or a body without a length). On an error, the returned body's src tells
// whose it was (decodeFailure).
func (n *Node) newDecodedBody(body io.ReadCloser, coding string, stream bool) (*decodedBody, error) {
	d := &decodedBody{coding: coding, body: body, src: &sourceReader{r: body}}
	dec, err := n.newDecoder(d.src, coding)
	if err != nil {
		return d, err
	}
	buf := make([]byte, 32<<10)
	nr, err := readFirst(dec, buf, stream)
	if err != nil && err != io.EOF {
		dec.Close()
		return d, err
	}
	d.dec, d.first, d.eof = dec, buf[:nr], err == io.EOF
	return d, nil
}

func (d *decodedBody) Read(p []byte) (int, error) {
	if len(d.first) > 0 {
		n := copy(p, d.first)
		d.first = d.first[n:]
		return n, nil
	}
	if d.eof {
		return 0, io.EOF
	}
	n, err := d.dec.Read(p)
	if err != nil && err != io.EOF && d.err == nil {
		d.err = err
	}
	return n, err
}

// Close releases the decoder, and its window, and closes the answer's body.
func (d *decodedBody) Close() error {
	d.dec.Close()
	return d.body.Close()
}

// maxForwards is the Max-Forwards of an OPTIONS request, which every intermediary decrements
// (RFC 9110 §7.6.2; TRACE, the other method it is for, is refused). One that is not a number
// is left as it is, as on other methods.
func maxForwards(r *http.Request) (int64, bool) {
	if r.Method != http.MethodOptions {
		return 0, false
	}
	v := strings.TrimSpace(fieldValue(r.Header, "Max-Forwards"))
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		n = math.MaxInt64 // more digits than an int64 holds: as good as no limit
	}
	return n, true
}

// isUpgrade reports an HTTP/1.1 WebSocket upgrade (RFC 6455: Connection names upgrade, Upgrade
// names websocket), the one upgrade passed through, as the client's own connection to the
// origin. serve has taken any other protocol off the request (keepWebSocketUpgrade).
func isUpgrade(r *http.Request) bool {
	up, ok := r.Header["Upgrade"]
	return ok && r.ProtoMajor == 1 && httpguts.HeaderValuesContainsToken(up, "websocket") &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
}

// keepWebSocketUpgrade leaves a request's Upgrade field only if it names websocket, and then
// naming websocket alone: the edge passes through WebSocket and no other upgrade. Any other
// (h2c, TLS/1.0, a token the edge does not know) is served as the request it is without the
// upgrade, as nginx serves it: passed through, an origin that switched to it (h2c behind x/net's
// h2c handler) gave the client a connection of its own to the origin, every request on it past
// the edge's cache, host policy, bulkhead and logs (h2c smuggling). Of a list naming websocket
// and others, only websocket is offered: the origin may switch to no protocol the edge does not
// pass. HTTP2-Settings, the h2c upgrade's, goes in every case, with an Upgrade or without: it is
// connection-specific (RFC 7540 §3.2.1, whose client names it in Connection so that it is not
// forwarded; RFC 9113 §3.1 deprecates it), about an HTTP/2 connection of this hop's that no
// request through the edge can make. edge/http1's fast path hands every request with either
// field to net/http (head.go), so serve skips this for the requests it serves.
func keepWebSocketUpgrade(h http.Header) {
	delete(h, "Http2-Settings")
	up, ok := h["Upgrade"]
	if !ok {
		return
	}
	if !httpguts.HeaderValuesContainsToken(up, "websocket") {
		delete(h, "Upgrade")
		return
	}
	if len(up) != 1 || !strings.EqualFold(strings.TrimSpace(up[0]), "websocket") {
		h["Upgrade"] = []string{"websocket"}
	}
}

// roundTripper sends a ReverseProxy's requests through an upstream's bulkhead and breaker.
type roundTripper struct{ u *fetch.Upstream }

func (t roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return t.u.Do(r) }

// upgradeTransport returns a transport for one protocol upgrade: the node's upstream settings
// (its answer's heads, 1xx and 101, bounded as any pass's), a connection never reused (it is
// the client's until either side closes it) and no bulkhead slot.
func (n *Node) upgradeTransport() http.RoundTripper { return n.fill.baseConfig().UpgradeTransport() }

// bufferBody reads r's whole body, at most MaxRequestBodyBytes within RequestBodyTimeout: the
// first RequestBufferBytes in memory, the rest in a temporary file (removed on Close). A
// request takes an origin slot only once its body is here, so a client trickling its body
// holds nothing but its own connection.
func (n *Node) bufferBody(w http.ResponseWriter, r *http.Request) (io.ReadCloser, int64, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return http.NoBody, 0, nil
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(n.cfg.RequestBodyTimeout)); err == nil {
		defer rc.SetReadDeadline(time.Time{})
	} else {
		// No deadlines on this connection (HTTP/3): closing the body ends a read in progress.
		t := time.AfterFunc(n.cfg.RequestBodyTimeout, func() { r.Body.Close() })
		defer t.Stop()
	}
	body := http.MaxBytesReader(w, r.Body, n.cfg.MaxRequestBodyBytes)
	var mem bytes.Buffer
	nr, err := io.CopyN(&mem, body, n.cfg.RequestBufferBytes+1)
	if errors.Is(err, io.EOF) {
		return io.NopCloser(bytes.NewReader(mem.Bytes())), nr, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read request body: %w", err)
	}
	f, err := os.CreateTemp(n.cfg.RequestBufferDir, "meridian-body-")
	if err != nil {
		return nil, 0, fmt.Errorf("buffer request body: %w: %w", errBufferStorage, err)
	}
	tb := &tempBody{f}
	src := &sourceReader{r: io.MultiReader(&mem, body)}
	size, err := io.Copy(f, src)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		tb.Close()
		if src.err != nil {
			return nil, 0, fmt.Errorf("read request body: %w", err)
		}
		return nil, 0, fmt.Errorf("buffer request body: %w: %w", errBufferStorage, err)
	}
	return tb, size, nil
}

// errBufferStorage marks a body that could not be buffered for a fault of the edge's own: its
// temporary file could not be created, written or read back (request_buffer_dir gone, full).
var errBufferStorage = errors.New("request buffer storage")

// tempBody is a request body buffered in a temporary file, removed when closed.
type tempBody struct{ *os.File }

func (b *tempBody) Close() error {
	err := b.File.Close()
	if rerr := os.Remove(b.Name()); err == nil {
		err = rerr
	}
	return err
}
