// Over 600 lines on purpose: timeouts, the breaker and the bulkhead interact, and their cases
// share the fake upstreams below; split, they would each need them again.

package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// serve starts a real HTTP server on the loopback address ip with port 0.
func serve(t *testing.T, ip string, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// blackhole returns the address of a TCP listener whose accept queue is full, so that further
// connection attempts get no SYN-ACK and hang until the dialer gives up.
func blackhole(t *testing.T, ip string) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	var a [4]byte
	copy(a[:], net.ParseIP(ip).To4())
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: a}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the accept queue: the first connections complete, then one hangs.
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not fill the accept queue of a listener on this kernel")
	return ""
}

// muteListener returns the address of a TCP listener that accepts connections and never writes,
// so a TLS client waits for a ServerHello that never comes.
func muteListener(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func get(t *testing.T, ctx context.Context, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	return req
}

// doRead sends a GET and reads and closes the body, returning the status and the first error.
func doRead(t *testing.T, u *Upstream, ctx context.Context, url string) (int, error) {
	t.Helper()
	resp, err := u.Do(get(t, ctx, url))
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

func TestTimeouts(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	block := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	header := serve(t, "127.0.0.11", http.HandlerFunc(block))
	stall := serve(t, "127.0.0.12", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "8")
		io.WriteString(w, "half")
		w.(http.Flusher).Flush()
		block(w, r)
	}))
	hole := blackhole(t, "127.0.0.13")
	mute := muteListener(t, "127.0.0.25")

	tests := []struct {
		name string
		url  string
		cfg  Config
		want func(err error) bool
		desc string
	}{
		{"dial", "http://" + hole + "/", Config{DialTimeout: 100 * time.Millisecond},
			func(err error) bool { var ne net.Error; return errors.As(err, &ne) && ne.Timeout() }, "a net.Error with Timeout()"},
		{"tls-handshake", "https://" + mute + "/", Config{TLSHandshakeTimeout: 100 * time.Millisecond},
			func(err error) bool { return strings.Contains(err.Error(), "TLS handshake timeout") }, "a TLS handshake timeout"},
		// A net.Error whose Timeout is true, as net/http's client returns it: the edge answers
		// 504 for one, 502 for other failures.
		{"header", header.URL + "/", Config{ResponseHeaderTimeout: 100 * time.Millisecond},
			func(err error) bool {
				var ne net.Error
				return strings.Contains(err.Error(), "timeout awaiting response headers") && errors.As(err, &ne) && ne.Timeout()
			}, "a response header timeout, a net.Error with Timeout()"},
		{"body", stall.URL + "/", Config{BodyTimeout: 150 * time.Millisecond},
			func(err error) bool { return errors.Is(err, errBodyTimeout) }, "errBodyTimeout"},
		{"body-timer-covers-headers", header.URL + "/", Config{BodyTimeout: 100 * time.Millisecond},
			func(err error) bool { return errors.Is(err, errBodyTimeout) }, "errBodyTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Name = "origin " + tt.name
			u := New(tt.cfg)
			defer u.Close()
			_, err := doRead(t, u, context.Background(), tt.url)
			if err == nil || !tt.want(err) {
				t.Fatalf("Do(%s) error = %v, want %s", tt.name, err, tt.desc)
			}
			if errors.Is(err, errBodyTimeout) && errors.Is(err, os.ErrDeadlineExceeded) {
				// The HTTP/1.1 path ends on a deadline; the error must read as the timer's did
				// (the edge answers 502 for it, 504 for a deadline).
				t.Errorf("Do(%s) error = %v: a body timeout that is also a deadline error", tt.name, err)
			}
			if !strings.Contains(err.Error(), tt.cfg.Name) {
				t.Errorf("error %q does not name the upstream %q", err, tt.cfg.Name)
			}
			st := u.Stats()
			if st.Failures != 1 || st.Requests != 1 || st.InFlight != 0 {
				t.Errorf("Stats() = %+v, want 1 request, 1 failure, 0 in flight", st)
			}
		})
	}
}

// TestRequestWriteBounded: a request whose head the upstream never reads (larger than the
// sockets' buffers) ends at BodyTimeout even when the caller's context has no deadline (a
// pass-through under the client's context), and the breaker counts a failure.
func TestRequestWriteBounded(t *testing.T) {
	addr := muteListener(t, "127.0.0.26")
	u := New(Config{Name: "mute origin", BodyTimeout: 200 * time.Millisecond})
	defer u.Close()
	req := get(t, context.Background(), "http://"+addr+"/")
	req.Header.Set("X-Big", strings.Repeat("a", 32<<20))
	done := make(chan error, 1)
	go func() {
		_, err := u.Do(req)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errBodyTimeout) {
			t.Fatalf("Do error = %v, want errBodyTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("writing a request the upstream never reads did not end at BodyTimeout")
	}
	if st := u.Stats(); st.Failures != 1 {
		t.Errorf("Stats().Failures = %d, want 1", st.Failures)
	}
}

// TestRequestBodyStalls: an upstream that stops taking a request's body (its socket's buffers
// full) ends the exchange once ResponseHeaderTimeout passes without progress, as a timeout
// and a breaker failure, not at BodyTimeout: a pass's is pass_timeout, an hour, for which an
// origin that hung while reading uploads held every slot of the pass bulkhead. One that takes
// the body slowly but steadily gets it whole, however long it takes.
func TestRequestBodyStalls(t *testing.T) {
	body := strings.Repeat("a", 32<<20) // more than the sockets' buffers hold
	steady := serve(t, "127.0.0.27", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 0
		buf := make([]byte, 1<<20)
		for {
			m, err := r.Body.Read(buf)
			n += m
			if err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond) // an upstream that reads slowly, not a synchronisation
		}
		fmt.Fprint(w, n)
	}))
	for _, tt := range []struct {
		name, addr string
		stalls     bool
	}{
		{"mute", muteListener(t, "127.0.0.26"), true},
		{"steady", steady.Listener.Addr().String(), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := New(Config{Name: "origin", BodyTimeout: time.Hour, ResponseHeaderTimeout: 300 * time.Millisecond})
			defer u.Close()
			req, _ := http.NewRequest(http.MethodPost, "http://"+tt.addr+"/up", nil)
			// As a pass sends it: a buffered body, which a retry could not read again.
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
			got, err := doWithin(t, u, req, "a request body the upstream stopped taking")
			if !tt.stalls {
				if err != nil || string(got) != strconv.Itoa(len(body)) {
					t.Errorf("Do = %q, %v; want the whole body taken", got, err)
				}
				return
			}
			wantTimeoutNaming(t, err, "request body")
			if st := u.Stats(); st.Failures != 1 || st.InFlight != 0 {
				t.Errorf("Stats() = %+v, want 1 failure, 0 in flight", st)
			}
		})
	}
}

// TestRequestBodySteadyOverHTTP2: an HTTP/2 upstream that takes a body slowly but steadily
// gets it whole. On a connection whose peer allows large frames (Go's servers allow 1 MiB),
// the HTTP/2 transport reads a request body up to 512 KiB at a time and sends each read as the
// flow-control window opens: watched read by read, an upstream that took less than 512 KiB per
// ResponseHeaderTimeout (52 KB/s at the default 10 s) had its upload cut as stalled.
func TestRequestBodySteadyOverHTTP2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.29:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 0
		buf := make([]byte, 8<<10)
		for {
			m, err := io.ReadFull(r.Body, buf)
			n += m
			if err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond) // an upstream that reads slowly, not a synchronisation
		}
		fmt.Fprint(w, r.Proto, " ", n)
	}))
	srv.Listener = ln
	srv.EnableHTTP2 = true
	// Large frames, as Go's servers allow by default; small windows, so that what the upstream
	// holds unread once the body is sent is read well within ResponseHeaderTimeout.
	srv.Config.HTTP2 = &http.HTTP2Config{MaxReadFrameSize: 1 << 20,
		MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 64 << 10}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tc := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.ServerName = "example.com" // httptest's certificate names 127.0.0.1 and example.com
	u := New(Config{Name: "origin", TLSConfig: tc, BodyTimeout: time.Minute, ResponseHeaderTimeout: 300 * time.Millisecond})
	defer u.Close()
	for _, size := range []int{0, 1 << 20} { // the first opens the connection and learns its settings
		body := strings.Repeat("a", size)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/up", nil)
		req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
		resp, err := u.Do(req)
		if err != nil {
			t.Fatalf("Do(%d bytes) = %v; want the whole body taken by an upstream reading 8 KiB every 10 ms", size, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "HTTP/2.0 " + strconv.Itoa(size); err != nil || string(got) != want {
			t.Errorf("answer = %q, %v; want %q", got, err, want)
		}
	}
}

// headOnly starts an upstream on ip that reads each request's head, byte by byte so that none
// of the body is taken with it, reports its request line on heads, and then reads nothing more.
func headOnly(t *testing.T, ip string) (addr string, heads <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	got := make(chan string, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				var head []byte
				b := make([]byte, 1)
				for !strings.HasSuffix(string(head), "\r\n\r\n") {
					if _, err := c.Read(b); err != nil {
						return
					}
					head = append(head, b[0])
				}
				line, _, _ := strings.Cut(string(head), "\r\n")
				got <- line
			}()
		}
	}()
	return ln.Addr().String(), got
}

// TestRequestBodyUntaken: an HTTP/1 upstream that reads a request's head and none of its body
// has the exchange ended, as a timeout, within about ResponseHeaderTimeout, whatever the body's
// size. A body larger than the sockets' buffers stops going out mid-way, which the watch on its
// reads sees. One that fits in them is written whole (the Transport flushes the head first,
// and then hands each read of a body of known length to the connection: nothing waits in its
// write buffer), and the wait for the answer is ResponseHeaderTimeout's.
func TestRequestBodyUntaken(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, tt := range []struct {
		name, ip  string
		size      int
		wantInErr string
	}{
		{"larger than the buffers", "127.0.0.140", 32 << 20, "request body"},
		{"within the buffers", "127.0.0.141", 1 << 10, "awaiting response headers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, heads := headOnly(t, tt.ip)
			u := New(Config{Name: "origin", BodyTimeout: time.Hour, ResponseHeaderTimeout: timeout})
			defer u.Close()
			body := strings.Repeat("a", tt.size)
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/up", nil)
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
			start := time.Now()
			_, err := doWithin(t, u, req, "a request body the upstream took none of")
			took := time.Since(start)
			select {
			case line := <-heads:
				if line != "POST /up HTTP/1.1" {
					t.Errorf("upstream read request line %q, want POST /up HTTP/1.1", line)
				}
			default:
				t.Error("the upstream never read the request's head")
			}
			wantTimeoutNaming(t, err, tt.wantInErr)
			// About the timeout, far from BodyTimeout, with room for a loaded machine.
			if took > 10*timeout {
				t.Errorf("the exchange ended after %v, want about %v", took, timeout)
			}
			if st := u.Stats(); st.Failures != 1 || st.InFlight != 0 {
				t.Errorf("Stats() = %+v, want 1 failure, 0 in flight", st)
			}
		})
	}
}

// TestRequestBodyTailOverHTTP2: an HTTP/2 upstream whose stream window closes before the last
// read of a body of known length has the exchange ended within about ResponseHeaderTimeout.
// The transport reads a body's last bytes and then its end before sending them, so the wait for
// the window to open for them followed the body's last read: watched by nothing, it held the
// exchange until BodyTimeout. (WriteByteTimeout, HTTP2Config's, would not see it: nothing waits
// to be written to the connection, only for the upstream's WINDOW_UPDATE.)
func TestRequestBodyTailOverHTTP2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.143:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 0 {
			<-r.Context().Done() // takes none of it: the window is never opened again
			return
		}
		fmt.Fprint(w, r.Proto)
	}))
	srv.Listener = ln
	srv.EnableHTTP2 = true
	const window = 64 << 10 // the stream's and the connection's
	srv.Config.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerConnection: window, MaxReceiveBufferPerStream: window}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tc := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.ServerName = "example.com" // httptest's certificate names 127.0.0.1 and example.com
	const timeout = 300 * time.Millisecond
	u := New(Config{Name: "origin", TLSConfig: tc, BodyTimeout: time.Hour, ResponseHeaderTimeout: timeout})
	defer u.Close()
	// The first opens the connection and learns its settings (the window).
	resp, err := u.Do(get(t, context.Background(), srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(got) != "HTTP/2.0" {
		t.Fatalf("first answer = %q, %v; want HTTP/2.0", got, err)
	}
	// The window takes the first two reads of 32 KiB; the third, the last, waits for it.
	body := strings.Repeat("a", window+16<<10)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // before srv.Close, which waits for the handler, which waits for this
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/up", nil)
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	start := time.Now()
	_, err = doWithin(t, u, req, "a request body whose last bytes the upstream's window kept out")
	wantTimeoutNaming(t, err, "request body")
	if took := time.Since(start); took > 10*timeout {
		t.Errorf("the exchange ended after %v, want about %v", took, timeout)
	}
}

// TestSendStallAsAnswerComes: a send watch whose timer fires as the answer's head comes in,
// after the transport has it and before the watch is stopped, ends the exchange as a stall.
// It cancels the exchange's context, under which the answer's body is read: the answer came
// back and its body failed at its first read that had to wait for the upstream, after the
// edge had relayed its head.
func TestSendStallAsAnswerComes(t *testing.T) {
	srv := serve(t, "127.0.0.144", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "2")
		w.Write([]byte("a"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the second byte is for a read that waits for the upstream
	}))
	testHookRoundTripped = func(w *sendWatch) { w.fire() } // the timer, in the microseconds between
	t.Cleanup(func() { testHookRoundTripped = nil })
	u := New(Config{Name: "origin"})
	defer u.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/up", nil)
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader("hello")), 5
	resp, err := u.Do(req)
	if err == nil {
		got, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("Do returned an answer, whose body read %q, %v; want the stall's timeout", got, rerr)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), "request body") {
		t.Fatalf("Do error = %v, want the stall's timeout", err)
	}
	if st := u.Stats(); st.Failures != 1 || st.InFlight != 0 {
		t.Errorf("Stats() = %+v, want 1 failure, 0 in flight", st)
	}
}

// TestBodyTimeoutSlowReader checks that the body timer runs even while the caller holds the body
// without reading, and that closing it afterwards counts a failure.
func TestBodyTimeoutSlowReader(t *testing.T) {
	srv := serve(t, "127.0.0.14", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 64<<10))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the body never ends; only the timer can end the exchange
	}))
	u := New(Config{BodyTimeout: 500 * time.Millisecond})
	defer u.Close()
	resp, err := u.Do(get(t, context.Background(), srv.URL))
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	b := resp.Body.(*body)
	wait.For(t, 5*time.Second, "the body timeout to expire", b.timedOut)
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !errors.Is(err, errBodyTimeout) {
		t.Errorf("reading after the body timeout: error = %v, want errBodyTimeout", err)
	}
	if st := u.Stats(); st.Failures != 1 {
		t.Errorf("Stats().Failures = %d, want 1", st.Failures)
	}
}

// fail5xx is a FailureStatus for callers that want 5xx answers to count against the breaker.
func fail5xx(status int) bool { return status >= 500 }

// TestStatusIsResponse checks that every status comes back as a response, and that by default
// none counts as a breaker failure, while a caller's FailureStatus can make some count.
func TestStatusIsResponse(t *testing.T) {
	tests := []struct {
		name         string
		status       int
		failure      func(int) bool
		wantFailures uint64
	}{
		{"200", 200, nil, 0}, {"304", 304, nil, 0}, {"404", 404, nil, 0}, {"500", 500, nil, 0},
		{"502", 502, nil, 0}, {"503", 503, nil, 0}, {"504", 504, nil, 0},
		{"200-fail5xx", 200, fail5xx, 0}, {"404-fail5xx", 404, fail5xx, 0},
		{"500-fail5xx", 500, fail5xx, 1}, {"503-fail5xx", 503, fail5xx, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, "127.0.0.15", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
			}))
			u := New(Config{FailureStatus: tt.failure})
			defer u.Close()
			got, err := doRead(t, u, context.Background(), srv.URL)
			if err != nil || got != tt.status {
				t.Fatalf("Do() = %d, %v, want %d, nil", got, err, tt.status)
			}
			if st := u.Stats(); st.Failures != tt.wantFailures {
				t.Errorf("Stats().Failures = %d, want %d", st.Failures, tt.wantFailures)
			}
		})
	}
}

// flaky is a server whose answer the test switches, counting hits.
type flaky struct {
	hits   atomic.Int64
	status atomic.Int64
	gate   chan struct{} // when non-nil, handlers wait on it before answering
	mu     sync.Mutex    // guards gate
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	w.WriteHeader(int(f.status.Load()))
}

func TestBreaker(t *testing.T) {
	f := &flaky{}
	f.status.Store(500)
	srv := serve(t, "127.0.0.16", f)
	u := New(Config{Name: "origin flaky", ConsecutiveFailures: 3, OpenTimeout: 2 * time.Second, FailureStatus: fail5xx})
	defer u.Close()
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		if got, err := doRead(t, u, ctx, srv.URL); err != nil || got != 500 {
			t.Fatalf("request %d = %d, %v, want 500, nil", i, got, err)
		}
	}
	if got := u.Stats().State; got != "open" {
		t.Fatalf("state after 3 failures = %q, want open", got)
	}
	_, err := doRead(t, u, ctx, srv.URL)
	if !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("Do while open: error = %v, want ErrBreakerOpen wrapping gobreaker.ErrOpenState", err)
	}
	if got := f.hits.Load(); got != 3 {
		t.Fatalf("server hits while open = %d, want 3", got)
	}

	// Half-open: exactly one probe reaches the server; the rest are refused while it runs.
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	f.status.Store(200)
	probe := make(chan error, 1)
	go func() {
		got, err := doRead(t, u, ctx, srv.URL)
		if err == nil && got != 200 {
			err = fmt.Errorf("probe status %d", got)
		}
		probe <- err
	}()
	wait.For(t, 5*time.Second, "four requests at the upstream", func() bool { return f.hits.Load() == 4 })
	for i := 0; i < 3; i++ {
		if _, err := doRead(t, u, ctx, srv.URL); !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, gobreaker.ErrTooManyRequests) {
			t.Fatalf("Do during probe: error = %v, want ErrBreakerOpen wrapping ErrTooManyRequests", err)
		}
	}
	close(gate)
	if err := <-probe; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if got := f.hits.Load(); got != 4 {
		t.Errorf("server hits after half-open = %d, want 4 (exactly one probe)", got)
	}
	if got := u.Stats().State; got != "closed" {
		t.Errorf("state after a successful probe = %q, want closed", got)
	}
	st := u.Stats()
	if st.BreakerRejections != 4 || st.Failures != 3 || st.Requests != 4 {
		t.Errorf("Stats() = %+v, want 4 breaker rejections, 3 failures, 4 requests", st)
	}
}

func TestBreakerReopensOnFailedProbe(t *testing.T) {
	f := &flaky{}
	f.status.Store(502)
	srv := serve(t, "127.0.0.17", f)
	u := New(Config{ConsecutiveFailures: 1, OpenTimeout: 500 * time.Millisecond, FailureStatus: fail5xx})
	defer u.Close()
	doRead(t, u, context.Background(), srv.URL)
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })
	doRead(t, u, context.Background(), srv.URL)
	if got := u.Stats().State; got != "open" {
		t.Errorf("state after a failed probe = %q, want open", got)
	}
}

func TestBreakerFailureRatio(t *testing.T) {
	f := &flaky{}
	srv := serve(t, "127.0.0.18", f)
	u := New(Config{ConsecutiveFailures: 100, MinRequests: 4, FailureRatio: 0.5, FailureStatus: fail5xx})
	defer u.Close()
	want := []string{"closed", "closed", "closed", "open"}
	for i, status := range []int64{200, 500, 200, 500} {
		f.status.Store(status)
		doRead(t, u, context.Background(), srv.URL)
		if got := u.Stats().State; got != want[i] {
			t.Fatalf("state after request %d = %q, want %q", i, got, want[i])
		}
	}
}

func TestCallerCancelNotAFailure(t *testing.T) {
	f := &flaky{gate: make(chan struct{})}
	srv := serve(t, "127.0.0.19", f)
	u := New(Config{ConsecutiveFailures: 2})
	defer u.Close()
	for i := 0; i < 4; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := doRead(t, u, ctx, srv.URL); errc <- err }()
		wait.For(t, 5*time.Second, "the request at the upstream", func() bool { return f.hits.Load() == int64(i+1) })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Do after cancel: error = %v, want context.Canceled", err)
		}
	}
	st := u.Stats()
	if st.State != "closed" || st.Failures != 0 || st.InFlight != 0 {
		t.Errorf("Stats() after caller cancels = %+v, want closed, 0 failures, 0 in flight", st)
	}
}

func TestBulkhead(t *testing.T) {
	var cur, peak atomic.Int64
	release := make(chan struct{})
	srv := serve(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	const queueWait = 50 * time.Millisecond
	u := New(Config{MaxConcurrent: 3, QueueWait: queueWait})
	defer u.Close()

	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := doRead(t, u, context.Background(), srv.URL)
			errs <- err
		}()
	}
	wait.For(t, 5*time.Second, "three requests at the upstream", func() bool { return cur.Load() == 3 })
	for i := 0; i < 2; i++ {
		start := time.Now()
		_, err := doRead(t, u, context.Background(), srv.URL)
		if !errors.Is(err, ErrBulkheadFull) {
			t.Fatalf("excess request: error = %v, want ErrBulkheadFull", err)
		}
		if waited := time.Since(start); waited < queueWait {
			t.Errorf("excess request failed after %v, want at least QueueWait %v", waited, queueWait)
		}
	}
	if st := u.Stats(); st.InFlight != 3 || st.BulkheadRejections != 2 || st.Requests != 3 {
		t.Errorf("Stats() = %+v, want 3 in flight, 2 bulkhead rejections, 3 requests", st)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("admitted request: %v", err)
		}
	}
	if got := peak.Load(); got != 3 {
		t.Errorf("server saw %d concurrent requests at most, want 3", got)
	}
	if st := u.Stats(); st.InFlight != 0 {
		t.Errorf("Stats().InFlight after all closed = %d, want 0", st.InFlight)
	}
}

// TestBulkheadQueue checks that a queued request gets the slot freed by closing a body.
func TestBulkheadQueue(t *testing.T) {
	srv := serve(t, "127.0.0.21", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	u := New(Config{MaxConcurrent: 1, QueueWait: 10 * time.Second})
	defer u.Close()
	first, err := u.Do(get(t, context.Background(), srv.URL))
	if err != nil {
		t.Fatalf("first Do: %v", err)
	}
	second := make(chan error, 1)
	go func() { _, err := doRead(t, u, context.Background(), srv.URL); second <- err }()
	select {
	case err := <-second:
		t.Fatalf("second request finished (%v) while the only slot was held", err)
	default:
	}
	first.Body.Close()
	if err := <-second; err != nil {
		t.Fatalf("queued request: %v", err)
	}
}

func TestBulkheadWaitCanceled(t *testing.T) {
	u := New(Config{MaxConcurrent: 1, QueueWait: 10 * time.Second})
	srv := serve(t, "127.0.0.22", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	first, err := u.Do(get(t, context.Background(), srv.URL))
	if err != nil {
		t.Fatalf("first Do: %v", err)
	}
	defer first.Body.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := u.Do(get(t, ctx, srv.URL)); !errors.Is(err, context.Canceled) {
		t.Errorf("Do with canceled context while queued: error = %v, want context.Canceled", err)
	}
}

func TestUnlimitedAndDefaults(t *testing.T) {
	got := Config{}.withDefaults()
	if got.MaxConcurrent != 64 || got.QueueWait != 50*time.Millisecond || got.ConsecutiveFailures != 5 ||
		got.MinRequests != 20 || got.FailureRatio != 0.5 || got.OpenTimeout != 5*time.Second ||
		got.BodyTimeout != 30*time.Second || got.MaxIdleConns != 256 || got.HalfOpenRequests != 1 {
		t.Errorf("Config{}.withDefaults() = %+v, want the documented defaults", got)
	}
	u := New(Config{MaxConcurrent: -1})
	if u.slots != nil {
		t.Errorf("MaxConcurrent -1: slots = %v, want nil (unlimited)", u.slots)
	}
}

func TestDialContextInjected(t *testing.T) {
	srv := serve(t, "127.0.0.23", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	var dials atomic.Int64
	u := New(Config{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}})
	defer u.Close()
	for i := 0; i < 3; i++ {
		if _, err := doRead(t, u, context.Background(), srv.URL); err != nil {
			t.Fatalf("Do: %v", err)
		}
	}
	if got := dials.Load(); got != 1 {
		t.Errorf("dials for 3 sequential requests = %d, want 1 (keep-alive)", got)
	}
}

func TestTLSAndHTTP2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.26:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tc := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.ServerName = "example.com" // httptest's certificate names 127.0.0.1 and example.com, not 127.0.0.26
	u := New(Config{TLSConfig: tc})
	defer u.Close()
	resp, err := u.Do(get(t, context.Background(), srv.URL))
	if err != nil {
		t.Fatalf("Do over TLS: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "HTTP/2.0" {
		t.Errorf("Do over TLS: client proto %s, server saw %q, want HTTP/2 on both", resp.Proto, b)
	}
}

func TestRejectionClosesRequestBody(t *testing.T) {
	u := New(Config{ConsecutiveFailures: 1})
	url := "http://" + deadAddr(t, "127.0.0.27")
	doRead(t, u, context.Background(), url)
	body := &closeRecorder{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest(http.MethodPost, url, body)
	if _, err := u.Do(req); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Do with open breaker: error = %v, want ErrBreakerOpen", err)
	}
	if !body.closed {
		t.Errorf("request body not closed after the breaker refused the request")
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func BenchmarkDo(b *testing.B) {
	payload := make([]byte, 1024)
	ln, err := net.Listen("tcp", "127.0.0.24:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(payload)
	}))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	u := New(Config{})
	defer u.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/obj", nil)
			resp, err := u.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// TestFailureStatus checks that a caller can say which statuses are failures: counting 503s, a
// run of them opens the breaker.
func TestFailureStatus(t *testing.T) {
	srv := serve(t, "127.0.0.43", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	u := New(Config{ConsecutiveFailures: 2, FailureStatus: func(s int) bool { return s == http.StatusServiceUnavailable }})
	defer u.Close()
	for i := range 2 {
		if got, err := doRead(t, u, context.Background(), srv.URL); err != nil || got != 503 {
			t.Fatalf("request %d = %d, %v, want 503, nil", i, got, err)
		}
	}
	if _, err := doRead(t, u, context.Background(), srv.URL); !errors.Is(err, ErrBreakerOpen) {
		t.Errorf("Do after 2 counted 503s: error = %v, want ErrBreakerOpen", err)
	}
	if st := u.Stats(); st.State != "open" || st.Failures != 2 {
		t.Errorf("Stats() = %+v, want open with 2 failures", st)
	}
}

// TestBreakerTransportFailuresOnly checks the default: a long run of 5xx answers leaves the
// breaker closed and every request reaches the upstream; connections dropped before the answer
// (a handler that resets them) count toward the failure ratio only, not as failures in a row;
// an upstream that cannot be reached (connections refused, a TLS handshake that fails) opens it.
func TestBreakerTransportFailuresOnly(t *testing.T) {
	var hits atomic.Int64
	var reset atomic.Bool
	srv := serve(t, "127.0.0.44", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if reset.Load() {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.(*net.TCPConn).SetLinger(0) // RST, not FIN
				c.Close()
			}
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	const failures = 3
	u := New(Config{ConsecutiveFailures: failures, MinRequests: 1000})
	defer u.Close()
	for i := range 100 {
		if got, err := doRead(t, u, context.Background(), srv.URL); err != nil || got != 500 {
			t.Fatalf("request %d = %d, %v, want 500, nil", i, got, err)
		}
	}
	if st := u.Stats(); st.State != "closed" || st.Failures != 0 || st.Requests != 100 || hits.Load() != 100 {
		t.Fatalf("after 100 answers of 500: Stats() = %+v, server hits %d, want closed, 0 failures, 100 requests and hits", st, hits.Load())
	}

	// Ten resets in a row: each is one request's failure, and every request reaches the upstream.
	reset.Store(true)
	for i := range 10 {
		if _, err := doRead(t, u, context.Background(), srv.URL); err == nil || errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("reset %d: error = %v, want a transport error", i, err)
		}
	}
	// (A request on a kept-alive connection that is reset is sent once more on a new one.)
	if st := u.Stats(); st.State != "closed" || st.Failures != 10 || hits.Load() < 110 {
		t.Fatalf("after 10 resets: Stats() = %+v, server hits %d, want closed, 10 failures, at least 110 hits", st, hits.Load())
	}
	// The same resets as most of the traffic: the ratio opens the breaker.
	ratio := New(Config{ConsecutiveFailures: failures, MinRequests: 4, FailureRatio: 0.5})
	defer ratio.Close()
	for range 4 {
		doRead(t, ratio, context.Background(), srv.URL)
	}
	before := hits.Load()
	if _, err := doRead(t, ratio, context.Background(), srv.URL); !errors.Is(err, ErrBreakerOpen) {
		t.Errorf("Do after 4 resets in 4 requests: error = %v, want ErrBreakerOpen", err)
	}
	if got := hits.Load(); got != before {
		t.Errorf("server hits while open went %d -> %d, want unchanged", before, got)
	}

	// Unreachable: refused connections, a TLS handshake with a server that speaks plain HTTP,
	// and one with a TLS server that refuses the client's version (its alert comes back as a
	// "remote error", not as a tls.AlertError), each open it after ConsecutiveFailures in a row.
	tls13, _ := tlsServer(t, "127.0.0.47", tls.VersionTLS13)
	for _, tt := range []struct {
		url string
		tls *tls.Config
	}{
		{"http://" + deadAddr(t, "127.0.0.45"), nil},
		{"https://" + srv.Listener.Addr().String(), nil},
		{tls13.URL, &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true}},
	} {
		url := tt.url
		unreachable := New(Config{ConsecutiveFailures: failures, MinRequests: 1000, TLSConfig: tt.tls})
		defer unreachable.Close()
		for i := range failures {
			if _, err := doRead(t, unreachable, context.Background(), url); err == nil || errors.Is(err, ErrBreakerOpen) {
				t.Fatalf("%s, request %d: error = %v, want a failure to reach it", url, i, err)
			}
		}
		if _, err := doRead(t, unreachable, context.Background(), url); !errors.Is(err, ErrBreakerOpen) {
			t.Errorf("Do after %d failures to reach %s: error = %v, want ErrBreakerOpen", failures, url, err)
		}
	}
}

// tlsServer is an https server on ip that accepts TLS minVersion and above and answers 200.
func tlsServer(t *testing.T, ip string, minVersion uint16) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	srv.Listener = ln
	srv.TLS = &tls.Config{MinVersion: minVersion}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestBreakerStreakAcrossStates: failures counted in a row before the breaker last changed
// state do not count after it. Three answers of 503 (counted by FailureStatus) are still being
// read when three more open the breaker; a probe closes it again; then the three old bodies
// are closed, and a reset (not a failure in a row) must not find a streak of three and open it.
func TestBreakerStreakAcrossStates(t *testing.T) {
	var mode atomic.Int64 // 0: answer 200, 1: 503, 2: reset
	srv := serve(t, "127.0.0.48", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("down")) // a body, read (and counted) when it is closed
		case 2:
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		}
	}))
	u := New(Config{ConsecutiveFailures: 3, MinRequests: 1000, OpenTimeout: 200 * time.Millisecond, FailureStatus: fail5xx})
	defer u.Close()
	mode.Store(1)
	var held []*http.Response
	for range 3 {
		resp, err := u.Do(get(t, context.Background(), srv.URL))
		if err != nil {
			t.Fatalf("held request: %v", err)
		}
		held = append(held, resp)
	}
	for range 3 {
		doRead(t, u, context.Background(), srv.URL)
	}
	if st := u.Stats(); st.State != "open" {
		t.Fatalf("after three counted 503s: state %q, want open", st.State)
	}
	wait.For(t, 5*time.Second, "the breaker half-open", func() bool { return u.Stats().State == "half-open" })
	mode.Store(0)
	if got, err := doRead(t, u, context.Background(), srv.URL); err != nil || got != 200 {
		t.Fatalf("probe = %d, %v; want 200", got, err)
	}
	for _, resp := range held {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if st := u.Stats(); st.State != "closed" {
		t.Fatalf("after the probe and the old bodies: state %q, want closed", st.State)
	}
	mode.Store(2)
	doRead(t, u, context.Background(), srv.URL)
	if st := u.Stats(); st.State != "closed" {
		t.Errorf("after one reset: state %q, want closed (the old 503s belong to an earlier state)", st.State)
	}
}

// TestBreakerStreakEndsOnSuccess: a success between failures that count in a row starts the
// count again; a reset between them neither ends it nor adds to it.
func TestBreakerStreakEndsOnSuccess(t *testing.T) {
	var mode atomic.Int64 // 0: answer 200, 1: 503 (counted by FailureStatus), 2: reset
	srv := serve(t, "127.0.0.46", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		}
	}))
	u := New(Config{ConsecutiveFailures: 3, MinRequests: 1000, FailureStatus: fail5xx})
	defer u.Close()
	for i, m := range []int64{1, 1, 0, 1, 2, 1} {
		mode.Store(m)
		doRead(t, u, context.Background(), srv.URL)
		if st := u.Stats(); st.State != "closed" {
			t.Fatalf("after request %d (mode %d): state %q, want closed", i, m, st.State)
		}
	}
	mode.Store(1)
	doRead(t, u, context.Background(), srv.URL)
	if st := u.Stats(); st.State != "open" {
		t.Errorf("after three counted 503s in a row (a reset among them): state %q, want open", st.State)
	}
}

// deadAddr returns an address on ip where nothing listens: connecting to it is refused.
func deadAddr(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// doWithin is u.Do(req) with the answer's body read whole: the body, and Do's or the read's
// error. An exchange that has not ended in 20 s fails the test, what naming its request.
func doWithin(t *testing.T, u *Upstream, req *http.Request, what string) ([]byte, error) {
	t.Helper()
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := u.Do(req)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- result{body, err}
	}()
	select {
	case r := <-done:
		return r.body, r.err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not end the exchange", what)
		return nil, nil
	}
}

// wantTimeoutNaming fails the test unless err is a timeout whose text holds part.
func wantTimeoutNaming(t *testing.T, err error, part string) {
	t.Helper()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), part) {
		t.Fatalf("Do error = %v, want a timeout naming %q", err, part)
	}
}
