package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

func serveFast(t *testing.T, h http.Handler, tweak func(*Server)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.63:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFastOn(t, ln, h, tweak)
}

// serveFastOn is serveFast on a listener of the test's (TLS, say).
func serveFastOn(t *testing.T, ln net.Listener, h http.Handler, tweak func(*Server)) (*Server, string) {
	t.Helper()
	s := &Server{Handler: h, Fallback: &http.Server{Handler: h}, ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 5 * time.Second}
	if tweak != nil {
		tweak(s)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

// A client that goes away while its handler waits cancels the request's context, as with
// net/http, even though the fast path starts watching only once a handler runs long.
func TestClientGoneCancelsContext(t *testing.T) { forWatchModes(t, testClientGoneCancelsContext) }

func testClientGoneCancelsContext(t *testing.T, serve serveFunc) {
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			cancelled <- r.Context().Err()
		case <-time.After(10 * time.Second):
			cancelled <- nil
		}
	})
	_, addr := serve(t, h, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	c.Close()
	if err := <-cancelled; err != context.Canceled {
		t.Fatalf("handler's context ended with %v, want context.Canceled", err)
	}
}

// A handler that asks CloseWhenClientGone loses its connection as soon as its client goes,
// while it still runs: the connection is closed and no longer counted (ConnState hears
// StateClosed, Shutdown does not wait for it), and what the handler writes later goes nowhere.
func TestCloseWhenClientGone(t *testing.T) { forWatchModes(t, testCloseWhenClientGone) }

func testCloseWhenClientGone(t *testing.T, serve serveFunc) {
	started := make(chan struct{})
	release := make(chan struct{})
	returned := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(interface{ CloseWhenClientGone(bool) }).CloseWhenClientGone(true)
		close(started)
		<-release // work that outlives the client
		io.WriteString(w, "late")
		w.(http.Flusher).Flush()
		returned <- r.Context().Err()
	})
	states := newConnStates()
	s, addr := serve(t, h, func(s *Server) { s.ConnState = states.note })
	c := dialSend(t, addr, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	c.Close()
	select {
	case <-states.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not closed while its handler ran")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown waited for the handler of a gone client: %v", err)
	}
	close(release)
	if err := <-returned; err != context.Canceled {
		t.Fatalf("handler's context: %v, want context.Canceled", err)
	}
}

// A connection closed under its handler (CloseWhenClientGone) reads no further request, not
// even one already buffered: it is no longer counted, so nothing may run on it.
func TestClosedUnderHandlerServesNoMore(t *testing.T) {
	forWatchModes(t, testClosedUnderHandlerServesNoMore)
}

func testClosedUnderHandlerServesNoMore(t *testing.T, serve serveFunc) {
	states := newConnStates()
	var next atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/next" {
			next.Add(1)
			return
		}
		w.(interface{ CloseWhenClientGone(bool) }).CloseWhenClientGone(true)
		w.Header().Set("Content-Length", "5") // all of it written here: nothing left for the end to write
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-states.closed // the client read the answer and left
	})
	s, addr := serve(t, h, func(s *Server) { s.ConnState = states.note })
	c := dialSend(t, addr, "GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the first answer: %v", err)
	}
	if b, _ := io.ReadAll(io.LimitReader(resp.Body, 5)); string(b) != "first" {
		t.Fatalf("first answer %q", b)
	}
	c.Close()
	wait.For(t, 5*time.Second, "the connection's goroutine to end", func() bool { return s.running.Load() == 0 })
	if n := next.Load(); n != 0 {
		t.Errorf("the pipelined request was served %d times on the closed connection", n)
	}
	if seen := states.list(); !slices.Equal(seen, []http.ConnState{http.StateNew, http.StateClosed}) {
		t.Errorf("ConnState saw %v, want [new closed]", seen)
	}
}

// connStates records what a server's ConnState hears; closed is closed at the first
// StateClosed.
type connStates struct {
	mu     sync.Mutex
	seen   []http.ConnState
	closed chan struct{}
}

func newConnStates() *connStates { return &connStates{closed: make(chan struct{})} }

func (cs *connStates) note(_ net.Conn, st http.ConnState) {
	cs.mu.Lock()
	cs.seen = append(cs.seen, st)
	first := st == http.StateClosed && !slices.Contains(cs.seen[:len(cs.seen)-1], http.StateClosed)
	cs.mu.Unlock()
	if first {
		close(cs.closed)
	}
}

func (cs *connStates) list() []http.ConnState {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return slices.Clone(cs.seen)
}

// dialSend connects to addr and sends raw; the test closes the connection.
func dialSend(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, raw)
	return c
}

// A client that half-closes still gets its answer, as from net/http, though its going cancels
// the request's context: from a handler that never asked CloseWhenClientGone, and from one
// that withdrew the ask once the wait it asked for was over.
func TestHalfCloseStillAnswered(t *testing.T) { forWatchModes(t, testHalfCloseStillAnswered) }

func testHalfCloseStillAnswered(t *testing.T, serve serveFunc) {
	for _, tc := range []struct {
		name string
		ask  bool
	}{{"not asked", false}, {"asked and withdrawn", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.ask {
					cg := w.(interface{ CloseWhenClientGone(bool) })
					cg.CloseWhenClientGone(true)
					cg.CloseWhenClientGone(false)
				}
				<-r.Context().Done() // the watch saw the end of the client's stream
				io.WriteString(w, "answer")
			})
			_, addr := serve(t, h, nil)
			c := dialSend(t, addr, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.(*net.TCPConn).CloseWrite()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			if b, _ := io.ReadAll(resp.Body); string(b) != "answer" {
				t.Fatalf("answer %q, want %q", b, "answer")
			}
		})
	}
}

// A client that pipelines two requests and half-closes gets both answers, and each request's
// context ends once it runs long, as a single request's does (TestHalfCloseStillAnswered),
// and as net/http's background read ends each: the end does not go unheard for the second.
// The hangup watch hears an end once (edge-triggered), during the first request here, and the
// second waited for its handler's whole bound (found in review).
func TestHalfCloseAfterPipelinedEndsEach(t *testing.T) {
	forWatchModes(t, testHalfCloseAfterPipelinedEndsEach)
}

func testHalfCloseAfterPipelinedEndsEach(t *testing.T, serve serveFunc) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			io.WriteString(w, r.URL.Path+" ended")
		case <-time.After(5 * time.Second):
			io.WriteString(w, r.URL.Path+" not ended")
		}
	})
	_, addr := serve(t, h, nil)
	c := dialSend(t, addr, "GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n")
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	c.(*net.TCPConn).CloseWrite()
	readAnswers(t, c, "/first ended", "/second ended")
}

// A request pipelined behind a long one is not mistaken for the client going away (a
// background read keeps its first byte; the hangup watch does not hear bytes), and is
// answered next.
func TestPipelinedBehindLongRequest(t *testing.T) { forWatchModes(t, testPipelinedBehindLongRequest) }

func testPipelinedBehindLongRequest(t *testing.T, serve serveFunc) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
				http.Error(w, "cancelled", http.StatusInternalServerError)
				return
			case <-release:
			}
		}
		io.WriteString(w, r.URL.Path)
	})
	s, addr := serve(t, h, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	wait.For(t, 5*time.Second, "the watch to read", func() bool { return watching(s) })
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	wait.For(t, 5*time.Second, "the watch to take the byte", func() bool { return !watchReading(s) })
	close(release)
	readAnswers(t, c, "/slow", "/next")
}

// Two long requests in a row, the second already buffered while the first runs, and a third
// whose first byte the first request's watch keeps: the second request's watch must not read
// the next byte into the same place, which lost the kept one (the third request then read as
// "ET /third"; found in review).
func TestTwoLongRequestsKeepPipelinedByte(t *testing.T) {
	// A connection in the hangup watch keeps no byte: only a background read can lose one.
	testTwoLongRequestsKeepPipelinedByte(t, serveFastUnraw)
}

func testTwoLongRequestsKeepPipelinedByte(t *testing.T, serve serveFunc) {
	release := map[string]chan struct{}{"/slow1": make(chan struct{}), "/slow2": make(chan struct{})}
	started := make(chan string, 3)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- r.URL.Path
		if ch := release[r.URL.Path]; ch != nil {
			<-ch
		}
		io.WriteString(w, r.Method+" "+r.URL.Path)
	})
	watched := make(chan struct{}, 4)
	s, addr := serve(t, h, func(s *Server) { s.watchEnded = func() { watched <- struct{}{} } })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /slow1 HTTP/1.1\r\nHost: a\r\n\r\nGET /slow2 HTTP/1.1\r\nHost: a\r\n\r\n")
	wait.For(t, 5*time.Second, "the first watch to read", func() bool { return watching(s) })
	io.WriteString(c, "GET /third HTTP/1.1\r\nHost: a\r\n\r\n")
	<-watched // it took the third request's first byte
	close(release["/slow1"])
	if got := <-started; got != "/slow1" {
		t.Fatalf("first handler for %s", got)
	}
	if got := <-started; got != "/slow2" {
		t.Fatalf("second handler for %s", got)
	}
	<-watched // the second request's watch has run
	close(release["/slow2"])
	readAnswers(t, c, "GET /slow1", "GET /slow2", "GET /third")
}

// A request handed to net/http behind a long one whose watch kept the byte after the buffered
// ones: net/http gets that byte too, in its place (it lost it: the POST's body read "elloG"
// and the next request "ET /after"; found in review).
func TestHandOffKeepsWatchedByte(t *testing.T) { forWatchModes(t, testHandOffKeepsWatchedByte) }

func testHandOffKeepsWatchedByte(t *testing.T, serve serveFunc) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.URL.Path+" body="+string(b))
	})
	s, addr := serve(t, h, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\nPOST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
	wait.For(t, 5*time.Second, "the watch to read", func() bool { return watching(s) })
	io.WriteString(c, "helloGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
	wait.For(t, 5*time.Second, "the watch to take the byte", func() bool { return !watchReading(s) })
	close(release)
	readAnswers(t, c, "GET /slow body=", "POST /post body=hello", "GET /after body=")
}

// A handed-off connection can be half-closed, as net/http's own can: net/http half-closes a
// connection before it closes it with a request body unread, so that the client reads the
// end of the answer first (closeWriteAndWait). Found in review: the hand-off's wrapper hid
// CloseWrite.
func TestHandedOffConnHalfCloses(t *testing.T) {
	got := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			got <- "hijack: " + err.Error()
			return
		}
		defer conn.Close()
		cw, ok := conn.(interface{ CloseWrite() error })
		if !ok {
			got <- fmt.Sprintf("%T has no CloseWrite", conn)
			return
		}
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
		if err := cw.CloseWrite(); err != nil {
			got <- "CloseWrite: " + err.Error()
			return
		}
		b, err := brw.ReadByte() // the connection still reads: it was half-closed, not closed
		got <- fmt.Sprintf("read %q %v", b, err)
	})
	_, addr := serveFast(t, h, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx") // handed off
	all, err := io.ReadAll(c)
	if err != nil || !strings.HasSuffix(string(all), "\r\n\r\nhi") {
		t.Fatalf("read %q, %v; want the answer, then the end of the stream", all, err)
	}
	io.WriteString(c, "!")
	if g := <-got; g != `read '!' <nil>` {
		t.Errorf("handler: %s", g)
	}
}

// serveFunc serves h as serveFast does.
type serveFunc func(t *testing.T, h http.Handler, tweak func(*Server)) (*Server, string)

// forWatchModes runs test with a plain TCP connection's watch (in a Loop: the server's hangup
// watch) and with that of a connection without raw I/O (TLS, say: a background read, which
// keeps the byte it reads).
func forWatchModes(t *testing.T, test func(*testing.T, serveFunc)) {
	for _, m := range []struct {
		name  string
		serve serveFunc
	}{
		{"hangup watch", serveFast},
		{"background read", serveFastUnraw},
	} {
		t.Run(m.name, func(t *testing.T) { test(t, m.serve) })
	}
}

// serveFastUnraw is serveFast on connections without raw I/O: the server sees no TCP
// connection in them.
func serveFastUnraw(t *testing.T, h http.Handler, tweak func(*Server)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.63:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFastOn(t, unrawListener{ln}, h, tweak)
}

type unrawListener struct{ net.Listener }

func (l unrawListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return unrawConn{c}, nil
}

// unrawConn hides its TCP connection, as a TLS connection does.
type unrawConn struct{ net.Conn }

// readAnswers reads one answer per body in want from c, each a 200 with that body.
func readAnswers(t *testing.T, c net.Conn, want ...string) {
	t.Helper()
	br := bufio.NewReader(c)
	for _, w := range want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer %q: %v", w, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != w {
			t.Errorf("answer %d %q, want 200 %q", resp.StatusCode, b, w)
		}
	}
}

// watching reports whether a request of one of s's connections is watched: by a read, or in
// the hangup watch.
func watching(s *Server) bool {
	return anyConn(s, func(c *conn) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.reading || c.joined != nil && !c.ended
	})
}

// watchReading reports whether a watch of one of s's connections is reading (backgroundRead):
// once a byte sent behind a request has reached a watch, none is.
func watchReading(s *Server) bool {
	return anyConn(s, func(c *conn) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.reading
	})
}

// anyConn reports whether f holds for one of s's connections, s.mu held. A test polls with it
// from the moment Serve's goroutine is started, maybe before that goroutine has readied s
// (init makes s.conns), so it readies s itself, as Shutdown and Close do: the Once orders
// init's writes before the read, which the race detector otherwise reports (CI, and once
// TestShutdownCutsHalfHead, whose inHead read s.conns unreadied).
func anyConn(s *Server, f func(*conn) bool) bool {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if f(c) {
			return true
		}
	}
	return false
}

// TestConnPollsBeforeServe: a test's poll of a server's connections may come before Serve's
// goroutine has readied the server, and must not race its init (-race; inHead did, once, in
// TestShutdownCutsHalfHead on a loaded machine). With one P, Serve's goroutine runs only once
// the test's blocks, so the poll comes first every time; the answer then makes Serve ready the
// server itself, before the test's cleanup (Close) could.
func TestConnPollsBeforeServe(t *testing.T) {
	for _, tc := range []struct {
		name string
		poll func(*Server) bool
	}{
		{"watching", watching},
		{"inHead", inHead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			s, addr := serveFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), nil)
			if tc.poll(s) {
				t.Errorf("%s = true before any connection", tc.name)
			}
			c := dialSend(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			defer c.Close()
			readAnswers(t, c, "ok")
		})
	}
}

// Shutdown closes idle connections at once and lets a request in flight finish, telling its
// client the connection ends.
func TestShutdownDrains(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	s, addr := serveFast(t, h, nil)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
	ibr := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(ibr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first answer: %v", err)
	} else {
		io.ReadAll(resp.Body)
	}
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	// The idle connection is closed: its next read ends.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: read returned %v, want EOF", err)
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("request in flight: %v", err)
	}
	if !resp.Close {
		t.Error("the answer in flight at shutdown does not say the connection ends")
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// A head that does not arrive within ReadHeaderTimeout ends the connection (slowloris).
func TestSlowHeadTimesOut(t *testing.T) {
	_, addr := serveFast(t, http.NotFoundHandler(), func(s *Server) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (the server did not close the connection)", err)
	}
	if len(b) != 0 {
		t.Errorf("got %q, want the connection closed without an answer", b)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("closed after %v", d)
	}
}

// A handed-off connection keeps every byte the fast path had read, in order.
func TestHandOffKeepsBytes(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	})
	_, addr := serveFast(t, h, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := strings.Repeat("z", 100<<10)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: 102400\r\n\r\n"+body+"GET /c HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"GET /a ", "PUT /b " + body, "GET /c "} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want {
			t.Errorf("answer %.40q (%d bytes), want %.40q (%d bytes)", b, len(b), want, len(want))
		}
	}
}

// Cleartext HTTP/2 with prior knowledge starts with a preface the fast path does not read: it
// is handed over, and Fallback serves it when configured to.
func TestH2CPriorKnowledgeHandedOver(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	_, addr := serveFast(t, h, func(s *Server) {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		s.Fallback.Protocols = p
	})
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/2.0" {
		t.Errorf("answered over %q, want HTTP/2.0", b)
	}
}

// Shutdown may come before Serve has run (a node stopped as it starts): Serve then returns
// at once, and closes its listener. It left it open, bound and queueing connections nobody
// would accept (an edge stopped right after "edge serving" kept its HTTP port).
func TestShutdownBeforeServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.63:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: http.NotFoundHandler(), Fallback: &http.Server{}}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := s.Serve(ln); err != http.ErrServerClosed {
		t.Fatalf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}
	if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("closing the listener after Serve = %v, want net.ErrClosed (Serve closed it)", err)
	}
}

// An answer larger than the socket buffers arrives whole: the raw writes wait in the poller
// for the client to read (internal/rawconn).
func TestLargeAnswer(t *testing.T) {
	body := strings.Repeat("x", 16<<20)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body)
	})
	_, addr := serveFast(t, h, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != body {
		t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(body))
	}
}

// TestValueScratchReused: a connection lends each request's handler the same value scratch
// (ValueScratch), cleared, and a value one answer put there is never in the next answer.
func TestValueScratchReused(t *testing.T) {
	var mu sync.Mutex
	scratches := map[*string]int{}
	_, addr := serveFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vs := w.(interface{ ValueScratch() []string }).ValueScratch()
		mu.Lock()
		scratches[&vs[0]]++
		mu.Unlock()
		for i, v := range vs {
			if v != "" {
				t.Errorf("request %s: value scratch starts with %q at %d", r.URL.Path, v, i)
			}
		}
		vs[0] = r.URL.Path
		w.Header()["X-Path"] = vs[0:1:1] // as the edge's hits use it (store.Object.SetHeader)
		if r.URL.Path == "/first" {
			vs[1] = "first only"
			w.Header()["X-First"] = vs[1:2:2]
		}
	}), nil)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	for _, p := range []string{"/first", "/second", "/third"} {
		resp, err := c.Get("http://" + addr + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Path"); got != p {
			t.Errorf("%s: X-Path %q", p, got)
		}
		if p != "/first" && resp.Header.Get("X-First") != "" {
			t.Errorf("%s: answer carries the first answer's field: %v", p, resp.Header)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(scratches) != 1 {
		t.Errorf("three sequential requests on one connection used %d value scratches, want 1", len(scratches))
	}
}

// TestHeaderBlockSameAnswer: an answer whose fields come as a HeaderBlock reads, byte for byte
// but the order of its field lines, as the answer with the same fields in the header map; a
// header HeaderBlock cannot stand for gives nil; and the next answer on the connection
// carries nothing of the block.
func TestHeaderBlockSameAnswer(t *testing.T) {
	date := []string{"Tue, 01 Dec 2026 10:00:00 GMT"}
	cases := []struct {
		name   string
		h      http.Header
		noneOK bool // HeaderBlock must refuse h
	}{
		{"typical", http.Header{"Date": date, "Content-Type": {"text/plain"}, "Etag": {`"x"`},
			"Cache-Control": {"max-age=60"}, "Server": {"origin"}, "Vary": {"Accept-Encoding"}}, false},
		{"several values, CR and LF in a value", http.Header{"Date": date, "Content-Type": {"text/html"},
			"Set-Cookie": {"a=1", "b=2"}, "X-Odd": {" spaced\r\nInjected: yes "}}, false},
		{"declared no type", http.Header{"Date": date, "Content-Type": nil, "X-A": {"1"}}, false},
		{"stored length and trailer names", http.Header{"Date": date, "Content-Type": {"a/b"},
			"Content-Length": {"999"}, "Trailer:X-T": {"1"}}, false},
		{"no Date", http.Header{"Content-Type": {"text/plain"}}, true},
		{"no Content-Type", http.Header{"Date": date}, true},
		{"Transfer-Encoding", http.Header{"Date": date, "Content-Type": {"a/b"}, "Transfer-Encoding": {"identity"}}, true},
		{"Connection", http.Header{"Date": date, "Content-Type": {"a/b"}, "Connection": {"close"}}, true},
	}
	const body = "<html>seven</html>"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			block := HeaderBlock(tc.h)
			if tc.noneOK {
				if block != nil {
					t.Fatalf("HeaderBlock = %q, want nil", block)
				}
				return
			}
			if block == nil {
				t.Fatal("HeaderBlock = nil")
			}
			_, addr := serveFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := w.Header()
				switch r.URL.Path {
				case "/map":
					for k, v := range tc.h {
						h[k] = v
					}
				case "/block":
					w.(interface {
						SetHeaderBlock(_, _ []byte, _ int64)
					}).SetHeaderBlock(block, EndField([]byte("Age: 3"), len("Age: ")), int64(len(body)))
				}
				if r.URL.Path != "/block" {
					h["Content-Length"] = []string{strconv.Itoa(len(body))}
					h["Age"] = []string{"3"}
				}
				io.WriteString(w, body)
			}), nil)
			for _, method := range []string{"GET", "HEAD"} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				read := func(path string) []string {
					io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
					var lines []string
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							t.Fatalf("%s %s: %v", method, path, err)
						}
						if l == "\r\n" {
							break
						}
						if strings.HasPrefix(l, "Date: ") && path == "/other" {
							l = "Date: now\r\n" // the server's own
						}
						lines = append(lines, l)
					}
					if method == "GET" {
						b := make([]byte, len(body))
						if _, err := io.ReadFull(br, b); err != nil || string(b) != body {
							t.Fatalf("%s %s: body %q, %v", method, path, b, err)
						}
					}
					slices.Sort(lines[1:]) // after the status line
					return lines
				}
				want, got := read("/map"), read("/block")
				if !slices.Equal(got, want) {
					t.Errorf("%s: with the block\n%q\nwant as with the map\n%q", method, got, want)
				}
				if next := read("/other"); len(next) != 5 { // status, Content-Length, Age, Date, Content-Type
					t.Errorf("%s: the next answer on the connection = %q, want none of the block's fields", method, next)
				}
				c.Close()
			}
		})
	}
}

// The idle timeout holds though its deadline is not re-armed for every request
// (setReadDeadline): a connection asked at intervals under the timeout stays open however
// long that goes on, and one left idle is closed between 15/16 of the timeout and the timeout
// (plus scheduling) after its last answer.
//
// The idle time itself is under test, so the client waits in real time; what it asserts holds
// whatever the scheduling. The server arms its deadline (at least 15/16 of the timeout away)
// after it has read a request, so after the client sent it: a request sent within 15/16 of the
// timeout of the one before must be answered, and the connection must not close within 15/16
// of the timeout of the last request's sending. A client that was itself late (a sleep that
// overslept on a loaded machine, which was the test's flakiness: 17 % of runs beside a build)
// may rightly be closed on: that round is tried again on a new connection.
//
// The header timeout, the first deadline the connection gets, is far longer than the rounds:
// a server that kept it (never re-arming, or never shortening a deadline to the idle timeout)
// closes seconds after the last answer, which the bound on the idle close (the timeout plus
// 2 s of scheduling) refuses; with a header timeout under the rounds' length, such a server
// passed.
func TestIdleDeadlineKept(t *testing.T) {
	const idle = 320 * time.Millisecond
	const least = idle - idle/16 // the server's deadline is at least this far past its read
	const late = idle + 2*time.Second
	const header = 8 * time.Second // past the rounds (about 3*idle) and the bound on the idle close
	_, addr := serveFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), func(s *Server) { s.IdleTimeout, s.ReadHeaderTimeout = idle, header })
	// round asks on a new connection at intervals of idle/3 for 3*idle, then three times in
	// quick succession; it returns the connection, when the last request was sent and when
	// its answer was read, or late if the client was late and the server closed.
	round := func() (c net.Conn, br *bufio.Reader, lastSent, lastAnswer time.Time, late bool) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		br = bufio.NewReader(c)
		var sent time.Time
		get := func(i int) bool {
			prev := sent
			sent = time.Now()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				if gap := sent.Sub(prev); !prev.IsZero() && gap >= least {
					t.Logf("request %d sent %v after the one before (more than %v): closed (%v); again", i, gap, least, err)
					return false
				}
				t.Fatalf("request %d, sent %v after the one before: %v", i, sent.Sub(prev), err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return true
		}
		start := time.Now()
		for i := 0; time.Since(start) < 3*idle; i++ {
			if !get(i) {
				c.Close()
				return nil, nil, time.Time{}, time.Time{}, true
			}
			time.Sleep(idle / 3)
		}
		for i := range 3 {
			if !get(100 + i) { // in quick succession: the deadline of the first is kept
				c.Close()
				return nil, nil, time.Time{}, time.Time{}, true
			}
		}
		return c, br, sent, time.Now(), false
	}
	var c net.Conn
	var br *bufio.Reader
	var lastSent, lastAnswer time.Time
	for try := 0; ; try++ {
		if try == 5 {
			t.Fatal("the client was late in 5 rounds")
		}
		var late bool
		if c, br, lastSent, lastAnswer, late = round(); !late {
			break
		}
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(header + late)) // past a header deadline kept
	if n, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: read %v, %v; want the server to close it", n, err)
	}
	if d := time.Since(lastSent); d < least {
		t.Errorf("idle connection closed %v after its last request was sent, want at least %v", d, least)
	}
	if d := time.Since(lastAnswer); d > late {
		t.Errorf("idle connection closed %v after its last answer, want at most %v (the idle timeout %v, not the header timeout %v)", d, late, idle, header)
	}
}

// TestRequestContextPerRequest: the connection reuses its request and context from one
// request to the next, yet each request gets its own: a context a handler waited on is done
// once its request has ended, and the next request's is not; the next request's target and
// fields are its own.
func TestRequestContextPerRequest(t *testing.T) {
	type seen struct {
		path, query, accept string
		ctxDone             bool // the request's own context, while it runs
		lastDone            bool // the context the previous handler waited on
	}
	got := make(chan seen, 4)
	var last <-chan struct{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{path: r.URL.Path, query: r.URL.RawQuery, accept: r.Header.Get("Accept"), ctxDone: r.Context().Err() != nil}
		if last != nil {
			select {
			case <-last:
				s.lastDone = true
			default:
			}
		}
		last = r.Context().Done()
		got <- s
		io.WriteString(w, "ok")
	})
	_, addr := serveFast(t, h, nil)
	c := dialSend(t, addr, "GET /a?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/a\r\n\r\n"+
		"GET /b%2Fc HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /d HTTP/1.1\r\nHost: a\r\nAccept: text/d\r\n\r\n")
	defer c.Close()
	want := []seen{
		{path: "/a", query: "x=1", accept: "text/a"},
		{path: "/b/c", lastDone: true},
		{path: "/d", accept: "text/d", lastDone: true},
	}
	for i, w := range want {
		if s := <-got; s != w {
			t.Errorf("request %d saw %+v; want %+v", i+1, s, w)
		}
	}
}

// TestEndField: a field line ended by EndField cannot end early: CR and LF in its value are
// spaces, as appendField writes a map's values.
func TestEndField(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"Cache-Status: e1; hit", "Cache-Status: e1; hit\r\n"},
		{"Cache-Status: e1; hit\r\nSet-Cookie: a=b", "Cache-Status: e1; hit  Set-Cookie: a=b\r\n"},
		{"Age: \n5", "Age:  5\r\n"},
	} {
		if got := string(EndField([]byte(tc.line), strings.Index(tc.line, ": ")+2)); got != tc.want {
			t.Errorf("EndField(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}
