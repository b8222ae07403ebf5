package http1

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/rawconn"
	"github.com/meridian-cdn/meridian/internal/tcptest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"golang.org/x/sys/unix"
)

// A client that sends its last request and half-closes while the one before is being answered
// gets both answers and then the connection's end at once, as from net/http, not after the
// idle timeout: the read that takes the last request takes the end of the stream along, and
// nothing announces it again.
func TestHalfClosedClientEndedAfterLastAnswer(t *testing.T) {
	started, sent := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			close(started)
			<-sent // the second request and the end arrive while this one is answered
		}
		io.WriteString(w, r.URL.Path)
	})
	conns := make(chan net.Conn, 1)
	_, addr := serveFast(t, h, func(s *Server) {
		s.IdleTimeout = time.Minute
		s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			conns <- c
			return ctx
		}
	})
	c := dialSend(t, addr, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
	defer c.Close()
	sc := <-conns
	<-started
	io.WriteString(c, "GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	wait.For(t, 5*time.Second, "the client's end to reach the server", func() bool { return tcptest.CloseWaiting(t, sc.(*net.TCPConn)) })
	close(sent)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for _, want := range []string{"/first", "/second"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer for %s: %v", want, err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != want {
			t.Fatalf("answer %q, want %q", b, want)
		}
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the last answer the client read %d bytes, %v; want io.EOF at once", n, err)
	}
}

// Where the server's hangup watch cannot be made (out of file descriptors), long requests are
// still answered, unwatched, and the failure is logged once per server, not once per request.
func TestNoHangupWatchLoggedOnce(t *testing.T) {
	newHangupWatch = func() (*rawconn.HangupWatch, error) { return nil, syscall.EMFILE }
	t.Cleanup(func() { newHangupWatch = rawconn.NewHangupWatch })
	var logged logtest.Buffer
	watched := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // a long request: the watch starts, and ends at once without its reader
		case <-watched:
		case <-time.After(5 * time.Second):
			t.Error("no watch started for a long request")
		}
		io.WriteString(w, "ok")
	})
	_, addr := serveFast(t, h, func(s *Server) {
		s.watchEnded = func() { watched <- struct{}{} }
		s.ErrorLog = log.New(&logged, "", 0)
	})
	for range 2 { // two connections
		c := dialSend(t, addr, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
		br := bufio.NewReader(c)
		for i := range 3 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer %d: %v", i+1, err)
			}
			io.Copy(io.Discard, resp.Body)
		}
		c.Close()
	}
	if n := strings.Count(logged.String(), "no watch"); n != 1 {
		t.Errorf("logged %d times for six long requests on two connections, want once:\n%s", n, logged.String())
	}
}

// A hangup watch that could not be made (out of file descriptors for a moment) is tried again
// at a later long request, so that one failure does not leave every connection of the server
// unwatched for the rest of its life: the second connection's client going cancels its
// request (it waited for its handler's whole bound; found in review).
func TestHangupWatchMadeAfterFailure(t *testing.T) {
	var calls atomic.Int32
	newHangupWatch = func() (*rawconn.HangupWatch, error) {
		if calls.Add(1) == 1 {
			return nil, syscall.EMFILE
		}
		return rawconn.NewHangupWatch()
	}
	hangupWatchRetry = 0
	t.Cleanup(func() { newHangupWatch, hangupWatchRetry = rawconn.NewHangupWatch, time.Second })
	watched := make(chan struct{}, 4)
	started := make(chan struct{}, 1)
	ended := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/unwatched" {
			<-watched // the watch's attempt, which failed
			return
		}
		started <- struct{}{}
		ended <- contextEnded(r)
	})
	s, addr := serveFast(t, h, func(s *Server) {
		s.watchEnded = func() { watched <- struct{}{} }
		s.ErrorLog = log.New(io.Discard, "", 0)
	})
	c := dialSend(t, addr, "GET /unwatched HTTP/1.1\r\nHost: a\r\n\r\n")
	readAnswers(t, c, "")
	c.Close()
	c = dialSend(t, addr, "GET /long HTTP/1.1\r\nHost: a\r\n\r\n")
	defer c.Close()
	<-started
	wait.For(t, 5*time.Second, "the connection in the watch", func() bool { return watching(s) })
	c.Close()
	if got := <-ended; got != "ended" {
		t.Errorf("the client went; its request %s", got)
	}
}

// A hangup watch that stops (its epoll_wait failed: here its epoll instance is closed under
// it) is dropped and logged; a connection that had joined it joins the next one at its next
// long request, whose client's going is then heard (it kept pointing at the dead watch and set
// no timer: its later requests went unwatched for the connection's life; found in the note's
// fact-check).
func TestHangupWatchStoppedIsReplaced(t *testing.T) {
	var logged logtest.Buffer
	started := make(chan string, 2)
	ended := make(chan string, 1)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- r.URL.Path
		if r.URL.Path == "/first" {
			<-release
			return
		}
		ended <- contextEnded(r)
	})
	s, addr := serveFast(t, h, func(s *Server) { s.ErrorLog = log.New(&logged, "", 0) })
	current := func() *hangupWatch {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.hw
	}
	c := dialSend(t, addr, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
	defer c.Close()
	<-started
	wait.For(t, 5*time.Second, "the connection in the watch", func() bool { return watching(s) })
	old := current()
	close(release)
	readAnswers(t, c, "")
	old.hw.Close() // as a failed epoll_wait ends the watch's goroutine
	wait.For(t, 5*time.Second, "the stopped watch dropped", func() bool { return current() == nil })
	io.WriteString(c, "GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	wait.For(t, 5*time.Second, "the connection in a new watch", func() bool {
		w := current()
		return w != nil && w != old && watching(s)
	})
	c.Close()
	if got := <-ended; got != "ended" {
		t.Errorf("the client went; its request %s", got)
	}
	if !strings.Contains(logged.String(), "the watch for clients going away stopped") {
		t.Errorf("nothing logged when the watch stopped:\n%s", logged.String())
	}
}

// contextEnded waits for r's context to end, at most 5 s: "ended", or "not ended".
func contextEnded(r *http.Request) string {
	select {
	case <-r.Context().Done():
		return "ended"
	case <-time.After(5 * time.Second):
		return "not ended"
	}
}

// A client that goes away, closing (FIN) or resetting (RST) its connection, frees it at once,
// as with nginx and net/http, not at the header or idle timeout (a minute here): halfway
// through a request head, between keep-alive requests, and halfway through a request body
// (whose connection net/http serves, handed over). Each case is run with the client gone
// before the server's first read, and with the client going while the server waits for it.
// A reset that the poller has heard of before the read that takes the bytes in front of it is
// announced by nothing the server's loop then waits for, and the kernel counts nothing left
// behind those bytes: it held half a head for the whole header timeout.
func TestClientGoneFreesConnection(t *testing.T) {
	const head, request = "GET / HTTP/1.1\r\nHost: a", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	const body = "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc" // handed over
	for _, tc := range []struct {
		name   string
		send   string
		before bool // gone before the server's first read; else once the server waits for it
	}{
		{"half head, before the first read", head, true},
		{"half head, while waiting for the rest", head, false},
		{"whole request, before the first read", request, true},
		{"between requests", request, false},
		{"half body, before the first read", body, true},
		{"half body, while the handler reads it", body, false},
	} {
		for _, reset := range []bool{false, true} {
			name := tc.name + ", FIN"
			if reset {
				name = tc.name + ", RST"
			}
			t.Run(name, func(t *testing.T) {
				testClientGone(t, tc.send, tc.before, reset)
			})
		}
	}
}

func testClientGone(t *testing.T, send string, before, reset bool) {
	reading := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			reading <- struct{}{}
			io.Copy(io.Discard, r.Body) // fails once the client is gone
		}
		io.WriteString(w, "ok")
	})
	states := newConnStates()
	waiting := make(chan struct{}, 1)
	s, addr := serveFast(t, h, func(s *Server) {
		s.ReadHeaderTimeout, s.IdleTimeout = time.Minute, time.Minute
		s.Fallback.ReadHeaderTimeout, s.Fallback.IdleTimeout = time.Minute, time.Minute
		s.ConnState = states.note
		s.Fallback.ConnState = states.note // StateClosed of a handed-over connection
		if before {
			s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
				awaitPeerGone(c.(*net.TCPConn), waiting)
				return ctx
			}
		}
	})
	c := dialSend(t, addr, send)
	defer c.Close()
	switch {
	case before:
		<-waiting
	case strings.HasPrefix(send, "POST"):
		<-reading
	case strings.HasSuffix(send, "\r\n\r\n"):
		readAnswers(t, c, "ok") // the connection waits for the next request
	default:
		wait.For(t, 5*time.Second, "the server to wait for the rest of the head", func() bool { return inHead(s) })
	}
	if reset {
		c.(*net.TCPConn).SetLinger(0) // Close sends RST
	}
	c.Close()
	select {
	case <-states.closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("the connection was not closed 10 s after its client went (ConnState saw %v)", states.list())
	}
	wait.For(t, 5*time.Second, "the connection's goroutine to end", func() bool { return s.running.Load() == 0 })
}

// awaitPeerGone waits in the poller, before the server reads c, until the client's end (FIN)
// or reset (RST) has reached c's socket, and sends on waiting once it waits. The poller's news
// of it is taken by this wait, so that what the server reads next (the bytes in front of it)
// is all it is told: as when the news comes before the server's loop begins. It reads nothing.
func awaitPeerGone(c *net.TCPConn, waiting chan<- struct{}) {
	rc, err := c.SyscallConn()
	if err != nil {
		panic(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // the server sets its own after
	told := false
	rc.Read(func(fd uintptr) bool {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil || info.State == unix.BPF_TCP_CLOSE_WAIT || info.State == unix.BPF_TCP_CLOSE {
			return true
		}
		if !told {
			told = true
			waiting <- struct{}{} // the client goes now: its end is announced to this wait
		}
		return false
	})
}

// One hangup watch serves every connection of the server whose request ran long: a
// connection stays in it from one request to the next, without a timer of its own; clients
// that go away while their handlers wait, on many connections at once, each cancel their own
// request and no other, and a connection that ends leaves the watch. The watch's goroutine
// ends once the server is closed and its last connection gone.
func TestHangupWatchServesManyAndEndsWithServer(t *testing.T) {
	const n = 16
	started := make(chan string, 2*n)
	ended := make(chan string, 2*n)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- r.URL.Path
		switch r.URL.Path {
		case "/quick":
			return
		case "/released":
			<-release
			return
		}
		select {
		case <-r.Context().Done():
			ended <- r.URL.Path
		case <-time.After(10 * time.Second):
			ended <- "not cancelled: " + r.URL.Path
		}
	})
	var watches atomic.Int32
	s, addr := serveFast(t, h, func(s *Server) { s.watchEnded = func() { watches.Add(1) } })
	inWatch := func() int {
		s.mu.Lock()
		w := s.hw
		s.mu.Unlock()
		if w == nil {
			return 0
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.conns)
	}
	// A long request joins its connection to the watch; after a quick one, a long one is
	// watched with no timer of its own (a timer's watch would be a second watchEnded before
	// the one for the client's going).
	c := dialSend(t, addr, "GET /released HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	wait.For(t, 5*time.Second, "the connection in the watch", func() bool { return inWatch() == 1 })
	close(release)
	io.WriteString(c, "GET /quick HTTP/1.1\r\nHost: a\r\n\r\nGET /long HTTP/1.1\r\nHost: a\r\n\r\n")
	for range 2 {
		<-started
	}
	time.Sleep(4 * watchDelay) // what a timer would wait before it watched /long
	if got := watches.Load(); got != 1 {
		t.Errorf("%d watches began or ended, want 1: the joining", got)
	}
	c.Close()
	if got := <-ended; got != "/long" {
		t.Fatalf("the client went; ended %q", got)
	}
	// hungUp counts the going after the cancel that ended the handler: wait for it.
	wait.For(t, 5*time.Second, "the going counted", func() bool { return watches.Load() >= 2 })
	if got := watches.Load(); got != 2 {
		t.Errorf("%d watches began or ended, want 2: the joining and the going", got)
	}
	wait.For(t, 5*time.Second, "the connection gone to leave the watch", func() bool { return inWatch() == 0 })

	var conns []net.Conn
	for i := range n {
		c := dialSend(t, addr, "GET /long"+strconv.Itoa(i)+" HTTP/1.1\r\nHost: a\r\n\r\n")
		conns = append(conns, c)
		<-started
	}
	wait.For(t, 5*time.Second, "every connection in the watch", func() bool { return inWatch() == n })
	// The odd clients go, one by one; each cancels its own request only.
	for i := 1; i < n; i += 2 {
		conns[i].Close()
		if got := <-ended; got != "/long"+strconv.Itoa(i) {
			t.Fatalf("client %d went; ended %q", i, got)
		}
	}
	wait.For(t, 5*time.Second, "the connections gone to leave the watch", func() bool { return inWatch() == n/2 })
	s.mu.Lock()
	done := s.hwDone
	s.mu.Unlock()
	// Close shuts the rest down: their handlers still hear it through the watch.
	s.Close()
	for range n / 2 {
		if got := <-ended; strings.HasPrefix(got, "not") {
			t.Error(got)
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the hangup watch's goroutine still runs after Close and the last connection's end")
	}
	for _, c := range conns {
		c.Close()
	}
}

// The last connection of a stopped server may be closed by the hangup watch itself: a client
// that goes away while its handler, having asked CloseWhenClientGone, waits after a Shutdown
// that ran out of time. The watch then ends on its own goroutine, whose Close of the epoll
// instance waited for that very goroutine to return (poll.FD.Close waits for the Wait in
// progress), holding the server's lock: the watch, the connection's goroutine (in unwatch)
// and every later Close hung for ever (found in review).
func TestHangupWatchEndsFromItsOwnGoroutine(t *testing.T) {
	started := make(chan struct{})
	returned := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(interface{ CloseWhenClientGone(bool) }).CloseWhenClientGone(true)
		close(started)
		<-r.Context().Done()
		returned <- r.Context().Err()
	})
	ln, err := net.Listen("tcp", "127.0.0.63:0")
	if err != nil {
		t.Fatal(err)
	}
	// Not serveFast: its cleanup's Close would hang on the lock the hung watch holds.
	s := &Server{Handler: h, Fallback: &http.Server{Handler: h}, ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	c := dialSend(t, ln.Addr().String(), "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
	defer c.Close()
	<-started
	wait.For(t, 5*time.Second, "the connection in the watch", func() bool { return watching(s) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil with a request in flight")
	}
	s.mu.Lock()
	done := s.hwDone
	s.mu.Unlock()
	c.Close() // the client goes: the watch closes the connection, the server's last
	select {
	case err := <-returned:
		if err == nil {
			t.Fatal("the handler returned with its context not done")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the client's going did not end the request")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the hangup watch's goroutine still runs after the server's last connection ended (hung in its own Close?)")
	}
	wait.For(t, 5*time.Second, "the connection's goroutine to end", func() bool { return s.running.Load() == 0 })
	s.Close()
	if err := <-served; err != http.ErrServerClosed {
		t.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
}
