package edge

import (
	"context"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http/httpguts"

	"github.com/meridian-cdn/meridian/edge/sendtimeout"
)

// serveH3 is the HTTP/3 server's handler: the node's, with a send timeout on every write to
// the client (h3Writer), counted as a request in flight on its connection (h3Conns).
func (n *Node) serveH3(w http.ResponseWriter, r *http.Request) {
	if hc, _ := r.Context().Value(h3ConnKey{}).(*h3Conn); hc != nil {
		hc.running.Add(1)
		defer hc.handlerReturned(r.Context())
	}
	// quic-go refused a Host that differs from :authority, and took it for r.Host where there
	// is none; it leaves it in the header, where edge/h2 and net/http take it out: kept, it
	// made an answer's "Vary: Host" another variant over HTTP/3 than over the others.
	delete(r.Header, "Host")
	if r.Method == http.MethodOptions && r.RequestURI == "*" {
		// A request about the server, not a resource (RFC 9110, section 9.3.7): net/http
		// answers it itself over HTTP/1.1 and HTTP/2, with 200 and an empty body, and the
		// pipeline, which quic-go handed it to, answered 400 (a target that is no path).
		answerServerOptions(w)
		return
	}
	serveSendTimeout(w, r, n.sendTimeout, n.ServeHTTP)
}

// serveSendTimeout serves r with serve, every write of its answer to the client under the
// send timeout (h3Writer).
func serveSendTimeout(w http.ResponseWriter, r *http.Request, timeout time.Duration, serve http.HandlerFunc) {
	target, ok := w.(sendtimeout.Target)
	if !ok {
		serve(w, r)
		return
	}
	hw := &h3Writer{ResponseWriter: w}
	hw.d.Init(target, timeout)
	if r.Body != nil && r.ContentLength != 0 && httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue") {
		r.Body = &expectContinue{ReadCloser: r.Body, w: hw}
	}
	serve(hw, r)
	dropConnectionFields(w.Header()) // quic-go writes a header not yet sent once serve returns
	// quic-go writes what the answer still holds once the handler has returned (its header
	// and a short body): under the timeout too. After a write that failed the deadline stays
	// as it was (passed, if it timed out), and quic-go resets the stream it cannot finish.
	if hw.err == nil {
		hw.d.Arm()
	}
}

// h3Writer gives an HTTP/3 answer's writes a send timeout, as nginx's send_timeout: a write
// the client takes nothing of for the timeout (it grants no flow-control credit) fails, the
// handler returns, and quic-go resets the stream; a client that keeps reading keeps its
// download, however long. It sets quic-go's stream write deadline, after which a write can go
// on where it stopped (package sendtimeout). Used by one goroutine at a time, as a
// ResponseWriter is.
type h3Writer struct {
	http.ResponseWriter // quic-go's
	d                   sendtimeout.Deadline

	// final: the answer's final status is given (or a body written, which gives it).
	final bool

	// err is the first write's or flush's failure: the stream is to be reset. Every write and
	// flush after it fails with it at once, as on a broken HTTP/1.1 connection: one that went
	// to the stream waited for the client another whole timeout, holding the handler, and
	// could finish the failed write's DATA frame with later bytes, a body with a hole in it.
	err error
}

// connectionFields are the connection-specific fields, malformed in an HTTP/3 message (RFC
// 9114, section 4.2).
var connectionFields = [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// dropConnectionFields removes the connection-specific fields from an answer's header before
// quic-go sends it, which it does as the header is: a client refuses an answer with one as
// malformed (quic-go's: "invalid header field name"). The pipeline sets Connection: close for
// HTTP/1.1's sake (a request body it did not read); edge/h2 leaves these fields out too.
func dropConnectionFields(h http.Header) {
	for _, k := range connectionFields {
		delete(h, k)
	}
}

func (w *h3Writer) WriteHeader(code int) {
	dropConnectionFields(w.Header())
	if code >= 200 {
		w.final = true
	}
	if code < 200 && w.err == nil {
		w.d.Arm() // quic-go writes an interim answer at once
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *h3Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	dropConnectionFields(w.Header()) // a Write without WriteHeader sends a 200
	w.final = true
	n, err := w.d.Write(w, p, nil)
	w.err = err
	return n, err
}

// Writev is how Deadline writes (b is always empty).
func (w *h3Writer) Writev(a, _ []byte) (int, error) { return w.ResponseWriter.Write(a) }

func (w *h3Writer) Flush() { w.FlushError() }

// FlushError sends what quic-go holds of the answer (a short body is held for its
// Content-Length): at most a few KiB, bounded by the timeout as one write.
func (w *h3Writer) FlushError() error {
	if w.err != nil {
		return w.err
	}
	dropConnectionFields(w.Header())
	if err := w.d.Arm(); err != nil {
		w.err = err
		return err
	}
	w.err = http.NewResponseController(w.ResponseWriter).Flush()
	return w.err
}

// SetWriteDeadline is http.ResponseController's: a deadline besides the send timeout.
func (w *h3Writer) SetWriteDeadline(t time.Time) error { return w.d.SetWriteDeadline(t) }

func (w *h3Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// expectContinue is the body of a request that expects 100-continue (RFC 9110, section
// 10.1.1): its first read sends 100 Continue, unless the final answer has begun, as net/http
// and edge/h2 do. quic-go's server never sends it, and a client that waits for it before
// sending its body waited for its own timeout. Its first read is the handler's (the pass's
// bufferBody, the beacon's decoder), so it shares the writer with no other goroutine.
type expectContinue struct {
	io.ReadCloser
	w    *h3Writer
	sent bool
}

func (b *expectContinue) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		if !b.w.final && b.w.err == nil {
			// A status alone: quic-go sends an interim answer with every field set so far.
			h := b.w.Header()
			set := maps.Clone(h)
			clear(h)
			b.w.WriteHeader(http.StatusContinue)
			maps.Copy(h, set)
		}
	}
	return b.ReadCloser.Read(p)
}

// h3Conns are the HTTP/3 connections being served, for the drain. quic-go's graceful shutdown
// sends GOAWAY and waits for every connection to be closed, which a client does once its
// answers are in; but one that keeps its connection (or sent half a request head, which
// quic-go reads without a time limit, and then nothing) held the node's shutdown for the whole
// shutdown_timeout. So the drain closes every connection with no request in flight once it
// has been quiet for its linger (closeIdle), and waits, up to shutdown_timeout, for those
// with one, as the TCP servers wait for their active connections.
type h3Conns struct {
	mu    sync.Mutex // protects conns
	conns map[*quic.Conn]*h3Conn
}

// h3Conn is one HTTP/3 connection's requests in flight. A request is in flight from its
// handler's start until quic-go is done with its stream, which is after the handler returned:
// quic-go then writes what the answer still holds (its header and a body under 4 KiB, held
// for their Content-Length), for a client slow to take them long after. The request's context
// ends once it is done (the stream's end queued, or the stream reset, or the connection gone).
type h3Conn struct {
	running atomic.Int32 // request handlers running

	mu sync.Mutex // protects finishing
	// finishing are the contexts of requests whose handler returned, until seen ended: a
	// list, and not a context.AfterFunc per request, which cost every HTTP/3 request a
	// goroutine and half a KiB.
	finishing []context.Context
}

type h3ConnKey struct{}

// handlerReturned moves the request whose context is ctx from running to finishing.
func (hc *h3Conn) handlerReturned(ctx context.Context) {
	hc.mu.Lock()
	hc.finishing = slices.DeleteFunc(hc.finishing, contextEnded) // those finished meanwhile: a few at most
	hc.finishing = append(hc.finishing, ctx)
	hc.mu.Unlock()
	hc.running.Add(-1) // after: inFlight reads running first
}

// inFlight reports whether a request is in flight on the connection.
func (hc *h3Conn) inFlight() bool {
	if hc.running.Load() > 0 {
		return true
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.finishing = slices.DeleteFunc(hc.finishing, contextEnded)
	return len(hc.finishing) > 0
}

func contextEnded(ctx context.Context) bool { return ctx.Err() != nil }

// connContext registers qc for as long as it is open and makes it known to its requests.
func (c *h3Conns) connContext(ctx context.Context, qc *quic.Conn) context.Context {
	hc := &h3Conn{}
	c.mu.Lock()
	if c.conns == nil {
		c.conns = map[*quic.Conn]*h3Conn{}
	}
	c.conns[qc] = hc
	c.mu.Unlock()
	context.AfterFunc(qc.Context(), func() {
		c.mu.Lock()
		delete(c.conns, qc)
		c.mu.Unlock()
	})
	return context.WithValue(ctx, h3ConnKey{}, hc)
}

// h3Linger is how long a connection with no request in flight is left open in the drain
// while its client sends nothing: three probe timeouts of its path (RFC 9002 §6.2.1), as long
// as RFC 9000 §10.2 keeps a closing connection. Within it arrives a request head that its
// client sent before our GOAWAY reached it, and the client acknowledges the end of its last
// answer (or it is sent again); a client that has all its answers closes the connection
// itself on the GOAWAY. It scales with the path: tens of milliseconds on a LAN, not the fixed
// second it was, which a drain with nothing in flight waited out for every client that kept
// its connection.
func h3Linger(st quic.ConnectionStats) time.Duration {
	srtt, rttvar := st.SmoothedRTT, st.MeanDeviation
	if srtt == 0 { // no sample yet: RFC 9002's initial RTT
		srtt, rttvar = 333*time.Millisecond, 333*time.Millisecond/2
	}
	const maxAckDelay = 25 * time.Millisecond // the client's, by default (RFC 9000 §18.2)
	return 3 * (srtt + max(4*rttvar, time.Millisecond) + maxAckDelay)
}

// h3DrainPoll is the longest the drain goes without looking at the connections: a request
// that ended is noticed within it.
const h3DrainPoll = 50 * time.Millisecond

// closeIdle closes, until ctx ends, every connection that has had no request in flight and
// received nothing from its client for its linger (h3Linger), counted from the drain's start
// at the earliest. Every packet from the client starts the linger again: a request head
// still arriving, acknowledgements of an answer's end still on its way. A client that sent
// half a head and then nothing is closed a linger into the drain.
func (c *h3Conns) closeIdle(ctx context.Context) {
	type quiet struct {
		packets uint64    // received from the client, when last looked at
		busy    bool      // a request was in flight then
		since   time.Time // the start of the quiet
	}
	seen := map[*quic.Conn]*quiet{}
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		c.mu.Lock()
		conns := maps.Clone(c.conns)
		c.mu.Unlock()
		next := h3DrainPoll
		for qc, hc := range conns {
			if qc.Context().Err() != nil {
				continue // closed, and about to leave conns
			}
			st := qc.ConnectionStats()
			q := seen[qc]
			if q == nil {
				q = &quiet{packets: st.PacketsReceived, since: start}
				seen[qc] = q
			}
			busy := hc.inFlight()
			if busy || q.busy || st.PacketsReceived != q.packets {
				q.packets, q.since = st.PacketsReceived, now
			}
			q.busy = busy
			if left := q.since.Add(h3Linger(st)).Sub(now); left > 0 {
				next = min(next, max(left, time.Millisecond))
				continue
			}
			qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		}
		for qc := range seen {
			if _, ok := conns[qc]; !ok {
				delete(seen, qc)
			}
		}
		t.Reset(next)
	}
}
