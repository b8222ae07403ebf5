package edge

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/edge/sendtimeout"
)

// serveH3 is the HTTP/3 server's handler: the node's, with a send timeout on every write to
// the client (h3Writer), counted as a request in progress on its connection (h3Conns).
func (n *Node) serveH3(w http.ResponseWriter, r *http.Request) {
	if hc, _ := r.Context().Value(h3ConnKey{}).(*h3Conn); hc != nil {
		hc.running.Add(1)
		defer func() {
			hc.ended.Store(time.Now().UnixNano()) // before the count falls: closeIdle reads them in that order
			hc.running.Add(-1)
		}()
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
	serve(hw, r)
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

	// err is the first write's or flush's failure: the stream is to be reset. Every write and
	// flush after it fails with it at once, as on a broken HTTP/1.1 connection: one that went
	// to the stream waited for the client another whole timeout, holding the handler, and
	// could finish the failed write's DATA frame with later bytes, a body with a hole in it.
	err error
}

func (w *h3Writer) WriteHeader(code int) {
	if code < 200 && w.err == nil {
		w.d.Arm() // quic-go writes an interim answer at once
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *h3Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
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

// h3HeadGrace is how long after the drain began an HTTP/3 connection with no request in
// progress is closed (h3Conns.closeIdle), as edge/http1's headGrace bounds a request head still
// arriving over TCP.
const h3HeadGrace = time.Second

// h3Conns are the HTTP/3 connections being served, for the drain. quic-go's graceful shutdown
// sends GOAWAY and waits for every connection to be closed, which a client does once its
// answers are in; but a stream whose request head never arrives whole (a client that sent
// half a HEADERS frame and then nothing) is read for ever, and held the node's shutdown for
// the whole shutdown_timeout. quic-go shows no stream before its head is read, so the drain
// closes, a grace after it began, every connection on which no request is in progress.
type h3Conns struct {
	mu    sync.Mutex // protects conns
	conns map[*quic.Conn]*h3Conn
}

// h3Conn is one HTTP/3 connection's requests.
type h3Conn struct {
	running atomic.Int32 // request handlers running
	ended   atomic.Int64 // when the last handler returned (Unix ns), 0 before
}

type h3ConnKey struct{}

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

// closeIdle closes, from grace on and until ctx ends, every connection on which no handler
// runs or returned within grace: its requests are answered, and what it may still be sending
// is no request (a head that did not arrive within the grace). A handler that returned less
// than grace ago may still have its answer's end on the way.
func (c *h3Conns) closeIdle(ctx context.Context, grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		var idle []*quic.Conn
		c.mu.Lock()
		for qc, hc := range c.conns {
			if hc.running.Load() == 0 && now-hc.ended.Load() >= int64(grace) {
				idle = append(idle, qc)
			}
		}
		c.mu.Unlock()
		for _, qc := range idle {
			qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		}
		t.Reset(grace / 10)
	}
}
