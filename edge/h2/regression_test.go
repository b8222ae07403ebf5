package h2

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// streamEnded matches the frame that ends stream id's response.
func streamEnded(id uint32) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		return f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream) &&
			(f.Header().Type == http2.FrameData || f.Header().Type == http2.FrameHeaders)
	}
}

// TestHandoffAfterEarlierHandoff: a handler handed off earlier must not disarm the handoff of
// the handler that runs inline after it (they share the connection's timer). /b waits for
// /c's answer, which is read only if /b hands the reading off.
func TestHandoffAfterEarlierHandoff(t *testing.T) {
	aRelease := make(chan struct{})
	bStarted := make(chan struct{})
	cDone := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			<-aRelease // handed off by its timer, returns while /b runs inline
		case "/b":
			close(bStarted)
			close(aRelease)
			select {
			case <-cDone:
			case <-time.After(10 * time.Second):
				t.Error("/c was not read while /b ran: the reading was never handed off")
			}
		case "/c":
			close(cDone)
		}
		io.WriteString(w, "x")
	}))
	c := dialRaw(t, ts)
	c.headers(1, true, "/a")
	c.headers(3, true, "/b")
	<-bStarted
	c.headers(5, true, "/c")
	c.until("/c's answer", streamEnded(5))
}

// TestIdleTimeoutAfterHandedOffHandler: the idle deadline is set when the last handler ends
// on its own goroutine, while the reader already waits.
func TestIdleTimeoutAfterHandedOffHandler(t *testing.T) {
	release := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // long enough to be handed off
		io.WriteString(w, "x")
	}))
	ts.H2.IdleTimeout = 200 * time.Millisecond
	c := dialRaw(t, ts)
	c.headers(1, true, "/")
	time.AfterFunc(50*time.Millisecond, func() { close(release) })
	c.until("the answer", streamEnded(1))
	c.until("GOAWAY after the idle timeout", func(f http2.Frame) bool {
		_, ok := f.(*http2.GoAwayFrame)
		return ok
	})
}

// TestShrunkWindowAtEnd: a client may shrink SETTINGS_INITIAL_WINDOW_SIZE below what was
// sent; the stream still ends normally (END_STREAM needs no window).
func TestShrunkWindowAtEnd(t *testing.T) {
	shrunk := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 65535))
		w.(http.Flusher).Flush()
		<-shrunk
	}))
	c := dialRaw(t, ts)
	c.headers(1, true, "/")
	got := 0
	c.until("the window's worth", func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got += len(d.Data())
		}
		return got == 65535
	})
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	c.until("the SETTINGS ack", func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		return ok && s.IsAck()
	})
	close(shrunk)
	c.until("END_STREAM", func(f http2.Frame) bool {
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			t.Fatalf("stream reset with %v instead of ended", r.ErrCode)
		}
		return streamEnded(1)(f)
	})
}

// TestWholeAnswerLeavesAtOnce: a handler off the reader (here: handed off before it wrote)
// that writes its whole answer and then goes on working does not hold the answer back.
func TestWholeAnswerLeavesAtOnce(t *testing.T) {
	done := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // past handoffDelay: the reading moves on without it
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
		<-done // working on after the answer (storing, logging)
	}))
	defer close(done)
	c := dialRaw(t, ts)
	c.headers(1, true, "/")
	c.until("the answer, before the handler returns", streamEnded(1))
}

// TestTeardownCancelsEndedStreams: when the client goes away, handlers whose responses are
// complete but who still wait on their context are cancelled too, so the connection ends.
func TestTeardownCancelsEndedStreams(t *testing.T) {
	cancelled := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
			t.Error("context not cancelled after the client left")
		}
	}))
	c := dialRaw(t, ts)
	c.headers(1, true, "/")
	c.until("the answer", streamEnded(1))
	c.nc.Close()
	<-cancelled
}

// TestQueuedResetStreamGivesBackWindow: request body bytes buffered for a queued stream the
// client then resets go back to the connection's window.
func TestQueuedResetStreamGivesBackWindow(t *testing.T) {
	release := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			<-release // ignores its context: keeps its slot after the reset
		}
		io.Copy(io.Discard, r.Body)
	}))
	defer close(release)
	ts.H2.MaxConcurrentStreams = 1
	c := dialRaw(t, ts)
	c.headers(1, true, "/busy")
	c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	c.headers(3, false, "/queued")
	chunk := make([]byte, 16384)
	for range 32 { // 512 KiB, half the connection's window
		c.fr.WriteData(3, false, chunk)
	}
	c.fr.WriteRSTStream(3, http2.ErrCodeCancel)
	var given uint32
	c.until("the connection's window back", func(f http2.Frame) bool {
		if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 0 {
			given += wu.Increment
		}
		return given >= recvConnWindow-initialWindow+512<<10
	})
}

// TestMalformedHeadersCloseOnlyTheirStream: a HEADERS frame with an invalid field resets its
// stream; DATA that follows on it is a stream error too, and the connection goes on.
func TestMalformedHeadersCloseOnlyTheirStream(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
	}))
	c := dialRaw(t, ts)
	c.buf.Reset()
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "a"}, {":path", "/"}, {"Bad-Upper", "x"}} {
		c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.buf.Bytes(), EndHeaders: true})
	c.fr.WriteData(1, true, []byte("abc"))
	c.headers(3, true, "/")
	c.until("stream 3's answer", func(f http2.Frame) bool {
		if g, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatalf("connection closed with GOAWAY %v after a stream error", g.ErrCode)
		}
		return streamEnded(3)(f)
	})
}

// TestClientThatStopsReading: a client that grants a large window and never reads is cut off
// after WriteTimeout; the handler's write fails instead of blocking for good.
func TestClientThatStopsReading(t *testing.T) {
	writeErr := make(chan error, 1)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		for i := 0; i < 1024 && err == nil; i++ {
			_, err = w.Write(make([]byte, 64<<10))
		}
		writeErr <- err
	}))
	ts.H2.WriteTimeout = 300 * time.Millisecond
	c := dialRaw(t, ts)
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	c.fr.WriteWindowUpdate(0, 1<<31-1-initialWindow)
	c.headers(1, true, "/big")
	select {
	case err := <-writeErr:
		if err == nil {
			t.Fatal("64 MiB written to a client that reads nothing")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the handler's write still blocked long after the write timeout")
	}
}

// TestAnswersLikeNetHTTP: what a client sees of the framing net/http adds (Content-Length of
// a short body, sniffed Content-Type, HEAD, 204, a declared length) is the same from both
// servers.
func TestAnswersLikeNetHTTP(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short":
			io.WriteString(w, "<html>hello")
			io.WriteString(w, " world")
		case "/long":
			io.WriteString(w, strings.Repeat("plain text ", 1000))
		case "/empty":
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/declared":
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Content-Type", "application/x-test")
			io.WriteString(w, "12345")
		case "/flushed":
			io.WriteString(w, "part")
			w.(http.Flusher).Flush()
			io.WriteString(w, "s")
		}
	})
	ref := httptest.NewUnstartedServer(h)
	ref.EnableHTTP2 = true
	ref.StartTLS()
	defer ref.Close()
	ts := newTestServer(t, h)
	type answer struct {
		status      int
		cl          int64
		ctype, body string
	}
	get := func(cl *http.Client, method, url string) answer {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s %s over %s", method, url, resp.Proto)
		}
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, resp.ContentLength, resp.Header.Get("Content-Type"), string(b)}
	}
	for _, path := range []string{"/short", "/long", "/empty", "/nocontent", "/declared", "/flushed"} {
		for _, method := range []string{"GET", "HEAD"} {
			want := get(ref.Client(), method, ref.URL+path)
			got := get(ts.Client, method, ts.URL+path)
			if got != want {
				t.Errorf("%s %s: got %+v, net/http %+v", method, path, got, want)
			}
		}
	}
}

// TestBodyCloseEndsWaitingRead: closing a request body from another goroutine (the edge's
// body timeout does) makes a waiting Read fail at once; a body cut short never reads as whole.
func TestBodyCloseEndsWaitingRead(t *testing.T) {
	readErr := make(chan error, 1)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		io.ReadFull(r.Body, buf) // what the client sent so far
		time.AfterFunc(50*time.Millisecond, func() { r.Body.Close() })
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}))
	c := dialRaw(t, ts)
	c.headers(1, false, "/", "content-length", "10")
	c.fr.WriteData(1, false, []byte("abcde"))
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("a body closed half-way read as complete")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still waiting after Body.Close")
	}
}

// TestReadDeadline: http.ResponseController's SetReadDeadline bounds the body's reading; the
// handler can still answer.
func TestReadDeadline(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Errorf("SetReadDeadline: %v", err)
		}
		if _, err := io.ReadAll(r.Body); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read error %v, want a deadline", err)
		}
		w.WriteHeader(http.StatusRequestTimeout)
	}))
	c := dialRaw(t, ts)
	c.headers(1, false, "/")
	c.fr.WriteData(1, false, []byte("partial"))
	c.until("408", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		if ok && h.PseudoValue("status") != "408" {
			t.Fatalf("status %s", h.PseudoValue("status"))
		}
		return ok
	})
}

// TestWindowTimeout: a stream the client grants no window for WriteTimeout is reset, and the
// handler's write fails, returning the bytes of it that went out (the initial window's), as
// io.Writer asks: the edge's access log counts them. It returned 0.
func TestWindowTimeout(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	wrote := make(chan result, 1)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := w.Write(make([]byte, 100<<10)) // past the 64 KiB initial window
		wrote <- result{n, err}
	}))
	ts.H2.WriteTimeout = 200 * time.Millisecond
	c := dialRaw(t, ts)
	c.headers(1, true, "/")
	c.wantReset(1, http2.ErrCodeCancel, false)
	got := <-wrote
	if got.err == nil {
		t.Fatal("write succeeded without window")
	}
	if got.n != initialWindow {
		t.Errorf("Write = %d, %v; want the %d bytes of the initial window", got.n, got.err, initialWindow)
	}
}

// TestShutdownNotHeldByStalledClient: a connection whose lock is held (a writer blocked on a
// client that stopped reading holds it up to WriteTimeout) does not delay the GOAWAY of the
// others. The test holds that lock itself; with four other connections, a shutdown that
// visits connections one by one leaves at least one without its GOAWAY four times in five.
func TestShutdownNotHeldByStalledClient(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	stalled := dialRaw(t, ts)
	stalled.headers(1, true, "/")
	stalled.until("an answer", streamEnded(1))
	var others []*rawClient
	for range 4 {
		c := dialRaw(t, ts)
		c.headers(1, true, "/")
		c.until("an answer", streamEnded(1))
		others = append(others, c)
	}
	var held *conn
	ts.H2.mu.Lock()
	for c := range ts.H2.conns {
		if c.remoteAddr == stalled.nc.LocalAddr().String() {
			held = c
		}
	}
	ts.H2.mu.Unlock()
	if held == nil {
		t.Fatal("the stalled client's connection is not registered")
	}
	held.mu.Lock()
	go ts.H2.shutdown()
	for _, c := range others {
		c.until("GOAWAY while another connection's lock is held", func(f http2.Frame) bool {
			_, ok := f.(*http2.GoAwayFrame)
			return ok
		})
	}
	held.mu.Unlock()
}

// TestContentLengthEdges: a signed request length is malformed; a response whose declared
// body never came is reset, not ended.
func TestContentLengthEdges(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10") // and then nothing: an object whose read failed
	}))
	c := dialRaw(t, ts)
	c.headers(1, false, "/", "content-length", "+5")
	c.wantReset(1, http2.ErrCodeProtocol, true)
	c.headers(3, true, "/")
	c.wantReset(3, http2.ErrCodeInternal, true)
}

// TestBurstBehindSlowHandler: once a handler on the connection is slow (handed off), the
// requests after it start at once on goroutines of their own, not one handoff (2 ms) after
// another: none of 200 requests that each wait for all of them to start runs on the
// connection's reader. Which goroutine a handler runs on is read from the connection, not
// timed: one handoff each would take 400 ms, but so may 200 starts on a loaded machine.
func TestBurstBehindSlowHandler(t *testing.T) {
	const n = 200
	var started sync.WaitGroup
	started.Add(n)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	release := make(chan struct{})
	var inline atomic.Int32 // burst handlers that started on the reader
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
			return
		}
		// A handler started on the reader is the connection's inline stream until it is
		// handed off, and handed off for good after.
		st := w.(*responseWriter).st
		st.c.mu.Lock()
		if st.c.inline == st || st.handedOff {
			inline.Add(1)
		}
		st.c.mu.Unlock()
		started.Done()
		<-all
	}))
	defer close(release)
	c := dialRaw(t, ts)
	c.headers(1, true, "/slow") // handed off after 2 ms; the burst is read after it
	for i := range n {
		c.headers(uint32(3+2*i), true, "/burst")
	}
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatal("the burst never all started")
	}
	if got := inline.Load(); got != 0 {
		t.Fatalf("%d of %d requests behind a slow handler started on the reader: one handoff after another", got, n)
	}
}

// TestSlowSteadyReader: a client that grants window slowly but steadily gets the whole answer
// even when it takes longer than WriteTimeout; only a client that grants nothing for that
// long is cut off.
func TestSlowSteadyReader(t *testing.T) {
	body := make([]byte, 200<<10)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body) // one Write, as the edge writes a cached object
	}))
	// A second, and a transfer of 1.2 s (12 grants at 100 ms): a reader held off the CPU for a
	// few hundred milliseconds by a loaded machine must not look stopped.
	ts.H2.WriteTimeout = time.Second
	c := dialRawSettings(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 16 << 10})
	c.fr.WriteWindowUpdate(0, 1<<20)
	c.headers(1, true, "/")
	got := 0
	start := time.Now()
	c.until("the whole body", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			t.Fatalf("reset with %v after %d bytes in %v", f.ErrCode, got, time.Since(start))
		case *http2.DataFrame:
			got += len(f.Data())
			if len(f.Data()) > 0 && !f.StreamEnded() && got%(16<<10) == 0 {
				time.Sleep(100 * time.Millisecond) // a slow reader
				c.fr.WriteWindowUpdate(1, 16<<10)
			}
			return f.StreamEnded()
		}
		return false
	})
	if got != len(body) || time.Since(start) < ts.H2.WriteTimeout {
		t.Fatalf("%d bytes in %v: the test wants a transfer longer than the write timeout", got, time.Since(start))
	}
}

// lateReadConn is a server's connection whose reader learns of a failed read (its client
// gone) only once release is closed: a connection's reader may be late to see what its
// handlers' writes already found (it may be running a handler itself, or be off the CPU).
type lateReadConn struct {
	net.Conn
	release chan struct{}
}

func (c *lateReadConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		<-c.release
	}
	return n, err
}

// TestFlushErrorAfterFailedWrite: once a write to the client failed (it went away), a
// handler's Flush through http.ResponseController fails with that write's error, so that a
// handler streaming a long answer stops at once. It returned nil until the connection's
// reader had seen the client gone and torn the connection down.
func TestFlushErrorAfterFailedWrite(t *testing.T) {
	type result struct {
		flushes         int
		write, flushErr error
	}
	flushed := make(chan struct{}) // the first chunk went out
	gone := make(chan struct{})    // the client closed its connection
	done := make(chan result, 1)
	release := make(chan struct{})
	defer close(release) // the server's reader then sees the client gone, and tears down
	addr := serveH2CWrapped(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		chunk := make([]byte, 16<<10)
		for i := 0; ; i++ {
			_, werr := w.Write(chunk)
			ferr := rc.Flush()
			if werr != nil || ferr != nil {
				done <- result{i, werr, ferr}
				return
			}
			if i == 0 {
				close(flushed)
				<-gone
			}
		}
	}), func(nc net.Conn) net.Conn { return &lateReadConn{nc, release} })
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := newRawClient(t, nc)
	// Windows that never stop the handler's writes.
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow})
	c.fr.WriteWindowUpdate(0, maxWindow-initialWindow)
	c.headers(1, true, "/")
	<-flushed
	nc.(*net.TCPConn).SetLinger(0) // a reset: the server's next write fails
	nc.Close()
	close(gone)

	var got result
	select {
	case got = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still writes 10 s after its client went away")
	}
	if got.write != nil {
		t.Fatalf("Write failed with %v after %d flushes that returned nil", got.write, got.flushes)
	}
	var oe *net.OpError
	if !errors.As(got.flushErr, &oe) || oe.Op != "write" {
		t.Fatalf("Flush returned %v after %d flushes, want the connection's write error", got.flushErr, got.flushes)
	}
}
