// Over 600 lines on purpose: each case of the connection's life (reuse, the retry, close,
// 1xx, timeouts, cancels, early close, the pool's bounds) needs a server scripted byte by byte,
// and they share the raw server and helpers below.

package fetch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/rawconn"
	"github.com/meridian-cdn/meridian/internal/wait"
	"golang.org/x/net/http/httpguts"
)

// rawServer is a TCP server whose connections a test scripts byte by byte: what net/http's
// server would never do (close a kept-alive connection, cut a body, stall mid-head) is what
// the client must survive.
type rawServer struct {
	addr     string
	accepted atomic.Int64
}

// startRaw serves on ip until the test ends, running handle for each connection (n counts
// from 1). The connection is closed when handle returns.
func startRaw(t testing.TB, ip string, handle func(n int64, c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	s := &rawServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(n, c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// readRequest reads one request head (the client sends no bodies here); false at the end of
// the connection.
func readRequest(br *bufio.Reader) (*http.Request, bool) {
	req, err := http.ReadRequest(br)
	return req, err == nil
}

// countConns serves h on ip, counting the connections accepted.
func countConns(t *testing.T, ip string, h http.Handler) (url string, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, conns
}

// newH1 is the transport New builds for cfg.
func newH1(t *testing.T, cfg Config) *h1Transport {
	cfg = cfg.withDefaults()
	tr := cfg.newH1(cfg.newTransport())
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// roundTrip sends a request with no body and reads the whole answer.
func roundTrip(t *testing.T, rt http.RoundTripper, ctx context.Context, method, url string, h http.Header) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body, err
}

// mustGet is roundTrip for a GET that must succeed.
func mustGet(t *testing.T, rt http.RoundTripper, url string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := roundTrip(t, rt, context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, body
}

// TestH1KeepAlive: one connection serves GET after GET, whether readHead reads the answer
// (odd paths) or leaves it to http.ReadResponse (even paths: a Pragma field).
func TestH1KeepAlive(t *testing.T) {
	url, conns := countConns(t, "127.0.0.60", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if last := r.URL.Path[len(r.URL.Path)-1]; (last-'0')%2 == 0 {
			w.Header().Set("Pragma", "x")
		}
		io.WriteString(w, r.URL.Path)
	}))
	tr := newH1(t, Config{})
	for i := range 20 {
		path := "/k/" + strconv.Itoa(i)
		resp, body := mustGet(t, tr, url+path)
		if resp.StatusCode != 200 || string(body) != path {
			t.Fatalf("GET %s = %d %q", path, resp.StatusCode, body)
		}
		if b, ok := resp.Body.(*h1Body); !ok || (b.rc == &b.lb) != (i%2 == 1) {
			t.Errorf("GET %s: body %T, read by readHead: %v; want it for odd paths only", path, resp.Body, ok && b.rc == &b.lb)
		}
		if resp.Request == nil || resp.TLS != nil || resp.Proto != "HTTP/1.1" || resp.Uncompressed || resp.ContentLength != int64(len(path)) {
			t.Errorf("GET %s: Request %v, TLS %v, Proto %q, Uncompressed %v, ContentLength %d", path,
				resp.Request != nil, resp.TLS, resp.Proto, resp.Uncompressed, resp.ContentLength)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 sequential GETs used %d connections, want 1", n)
	}
}

// TestH1RetriesClosedIdle: an upstream that closes a kept-alive connection (as servers do
// after their idle timeout) costs no error. A TCP connection's exchange looks at its socket
// before it sends (WriteRead), so the close is found before the request is sent; a connection
// the transport cannot look at (a dialer's own) finds it by sending, and the request goes
// again on a new connection. Either way the kept-alive connection was taken (reused).
func TestH1RetriesClosedIdle(t *testing.T) {
	for i, tc := range []struct {
		reset, peek bool
		reused      int // requests tried on a kept-alive connection
	}{
		{false, true, 2}, {true, true, 2}, {false, false, 2}, {true, false, 2},
	} {
		t.Run(fmt.Sprintf("reset=%v,peek=%v", tc.reset, tc.peek), func(t *testing.T) {
			var requests atomic.Int64
			srv := startRaw(t, fmt.Sprintf("127.0.0.%d", 61+i), func(n int64, c net.Conn, br *bufio.Reader) {
				if _, ok := readRequest(br); !ok {
					return
				}
				requests.Add(1)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if tc.reset {
					c.(*net.TCPConn).SetLinger(0) // close with RST rather than FIN
				}
				// Closed without saying so, as an idle timeout would close it.
			})
			cfg := Config{}
			if !tc.peek {
				cfg.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					return struct{ net.Conn }{c}, err // not a *net.TCPConn: no peek
				}
			}
			tr := newH1(t, cfg)
			var reused int
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
				if i.Reused {
					reused++
				}
			}})
			for i := range 3 {
				if tc.peek && i > 0 {
					// Sent before the close arrives, the request would be retried instead.
					awaitUnquiet(t, tr.pool(srv.addr), "the upstream's close")
				}
				resp, body, err := roundTrip(t, tr, ctx, http.MethodGet, "http://"+srv.addr+"/", nil)
				if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
					t.Fatalf("GET %d: %v, %q", i, err, body)
				}
			}
			if n, r := srv.accepted.Load(), requests.Load(); n != 3 || r != 3 || reused != tc.reused {
				t.Errorf("3 GETs: %d connections, %d requests answered, %d tried on a kept-alive connection; want 3, 3 and %d", n, r, reused, tc.reused)
			}
		})
	}
}

// TestH1NoRetryOnceAnswered: once any byte of the answer arrived the request is not sent again.
func TestH1NoRetryOnceAnswered(t *testing.T) {
	var requests atomic.Int64
	srv := startRaw(t, "127.0.0.63", func(n int64, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, ok := readRequest(br); !ok {
				return
			}
			requests.Add(1)
			if i == 0 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-") // then the connection drops
			return
		}
	})
	tr := newH1(t, Config{})
	mustGet(t, tr, "http://"+srv.addr+"/")
	_, _, err := roundTrip(t, tr, context.Background(), http.MethodGet, "http://"+srv.addr+"/", nil)
	if err == nil {
		t.Fatal("GET answered by half a head succeeded, want an error")
	}
	var stale *staleConnError
	if errors.As(err, &stale) {
		t.Errorf("error %v is marked retryable", err)
	}
	if n, r := srv.accepted.Load(), requests.Load(); n != 1 || r != 2 {
		t.Errorf("%d connections, %d requests; want 1 and 2 (no retry)", n, r)
	}
}

// TestH1NonIdempotent: a request that may not be sent twice (a POST, even without a body)
// never goes on a kept-alive connection, which the upstream may have closed meanwhile, and is
// not sent again when its connection fails; with Idempotency-Key it is retried like a GET.
func TestH1NonIdempotent(t *testing.T) {
	var posts atomic.Int64
	srv := startRaw(t, "127.0.0.64", func(n int64, c net.Conn, br *bufio.Reader) {
		req, ok := readRequest(br)
		if !ok {
			return
		}
		if req.Method == http.MethodPost {
			posts.Add(1)
			if req.URL.Path == "/drop" {
				return // closed without an answer
			}
		}
		// One answer, then the connection is closed unannounced, as an idle timeout closes it.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr := newH1(t, Config{})
	base := "http://" + srv.addr
	mustGet(t, tr, base+"/") // leaves a connection in the pool that the server closes
	if _, body, err := roundTrip(t, tr, context.Background(), http.MethodPost, base+"/", nil); err != nil || string(body) != "ok" {
		t.Fatalf("POST while the pool holds a closed connection: %v, %q; want it sent on a new one", err, body)
	}
	if _, _, err := roundTrip(t, tr, context.Background(), http.MethodPost, base+"/drop", nil); err == nil {
		t.Error("POST whose connection closed without an answer succeeded")
	}
	if n, p := srv.accepted.Load(), posts.Load(); n != 3 || p != 2 {
		t.Errorf("GET, POST, POST dropped: %d connections, %d POSTs received; want 3 and 2 (none sent twice)", n, p)
	}
	if _, body, err := roundTrip(t, tr, context.Background(), http.MethodPost, base+"/",
		http.Header{"Idempotency-Key": {"k1"}}); err != nil || string(body) != "ok" {
		t.Errorf("POST with Idempotency-Key: %v, %q; want it retried on a new connection", err, body)
	}
}

// TestH1BodyCutShort: a body shorter than its Content-Length is an error from Read, and a
// breaker failure.
func TestH1BodyCutShort(t *testing.T) {
	srv := startRaw(t, "127.0.0.65", func(n int64, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); ok {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
		}
	})
	tr := newH1(t, Config{})
	resp, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, "http://"+srv.addr+"/", nil)
	if resp == nil || !errors.Is(err, io.ErrUnexpectedEOF) || string(body) != "only ten b" {
		t.Errorf("GET of a cut body: %q, %v; want the 10 bytes and io.ErrUnexpectedEOF", body, err)
	}
	u := New(Config{Name: "cut"})
	defer u.Close()
	if _, err := doRead(t, u, context.Background(), "http://"+srv.addr+"/"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Do and read a cut body: %v, want io.ErrUnexpectedEOF", err)
	}
	if st := u.Stats(); st.Failures != 1 {
		t.Errorf("Stats().Failures = %d after a cut body, want 1", st.Failures)
	}
	if n := srv.accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (none retried)", n)
	}
}

func TestH1Chunked(t *testing.T) {
	url, conns := countConns(t, "127.0.0.66", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		for i := range 5 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Sum", "5")
	}))
	tr := newH1(t, Config{})
	for range 2 {
		resp, body := mustGet(t, tr, url)
		if string(body) != "part0;part1;part2;part3;part4;" || resp.ContentLength != -1 ||
			len(resp.TransferEncoding) != 1 || resp.Trailer.Get("X-Sum") != "5" {
			t.Errorf("chunked GET: body %q, ContentLength %d, TransferEncoding %v, Trailer %v",
				body, resp.ContentLength, resp.TransferEncoding, resp.Trailer)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("2 chunked GETs used %d connections, want 1", n)
	}
}

// TestH1NotReused: an answer delimited by the connection's end, or either side saying
// Connection: close, leaves the connection unused.
func TestH1NotReused(t *testing.T) {
	srv := startRaw(t, "127.0.0.67", func(n int64, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			switch req.URL.Path {
			case "/eof":
				io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
				return
			case "/close":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nclose")
				return
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if req.Close {
					return
				}
			}
		}
	})
	tr := newH1(t, Config{})
	base := "http://" + srv.addr
	for _, tt := range []struct {
		path, body string
		h          http.Header
		close      bool // resp.Close: the answer says the connection ends
	}{
		{"/eof", "until the end", nil, true},
		{"/close", "close", nil, true},
		{"/client-close", "ok", http.Header{"Connection": {"close"}}, false},
	} {
		resp, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, base+tt.path, tt.h)
		if err != nil || string(body) != tt.body || resp.Close != tt.close {
			t.Errorf("GET %s: %v, body %q, Close %v; want %q and Close %v", tt.path, err, body, resp != nil && resp.Close, tt.body, tt.close)
		}
		before := srv.accepted.Load()
		mustGet(t, tr, base+"/next")
		if n := srv.accepted.Load() - before; n != 1 {
			t.Errorf("GET %s then another: the other dialed %d connections, want 1", tt.path, n)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/req-close", nil)
	req.Close = true
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET with req.Close: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	before := srv.accepted.Load()
	mustGet(t, tr, base+"/next")
	if n := srv.accepted.Load() - before; n != 1 {
		t.Errorf("GET with req.Close then another: the other dialed %d connections, want 1", n)
	}
}

// TestH1EarlyHints: 1xx answers reach the trace's Got1xxResponse (the edge forwards 103 so)
// and the final answer follows.
func TestH1EarlyHints(t *testing.T) {
	url, _ := countConns(t, "127.0.0.68", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	}))
	tr := newH1(t, Config{})
	var codes []int
	var links []string
	var firstByte, wrote, gotConn int
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			codes = append(codes, code)
			links = append(links, h.Get("Link"))
			return nil
		},
		GotFirstResponseByte: func() { firstByte++ },
		WroteRequest:         func(httptrace.WroteRequestInfo) { wrote++ },
		GotConn:              func(httptrace.GotConnInfo) { gotConn++ },
	}
	resp, body, err := roundTrip(t, tr, httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	if err != nil || resp.StatusCode != 200 || string(body) != "final" || resp.Header.Get("Link") != "" {
		t.Fatalf("GET with hints: %v, %v %q, Link %q", err, resp, body, resp.Header.Get("Link"))
	}
	if fmt.Sprint(codes) != "[103 103]" || links[0] != "</app.css>; rel=preload" {
		t.Errorf("Got1xxResponse saw %v with Link %q, want [103 103] with the preload", codes, links)
	}
	if firstByte != 1 || wrote != 1 || gotConn != 1 {
		t.Errorf("trace: GotFirstResponseByte %d, WroteRequest %d, GotConn %d times; want once each", firstByte, wrote, gotConn)
	}
	// A hook that refuses ends the exchange with its error.
	refuse := errors.New("no hints")
	trace = &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error { return refuse }}
	if _, _, err := roundTrip(t, tr, httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil); !errors.Is(err, refuse) {
		t.Errorf("GET with a refusing Got1xxResponse: %v, want its error", err)
	}
}

// TestH1NoBody: HEAD, 204 and 304 answers have no body whatever their header says, and leave
// the connection reusable.
func TestH1NoBody(t *testing.T) {
	url, conns := countConns(t, "127.0.0.69", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "1234")
			if r.Method != http.MethodHead {
				w.Write(make([]byte, 1234))
			}
		}
	}))
	tr := newH1(t, Config{})
	for _, tt := range []struct {
		method, path string
		status       int
		length       int64
	}{
		{http.MethodHead, "/", 200, 1234},
		{http.MethodGet, "/204", 204, 0},
		{http.MethodGet, "/304", 304, 0},
		{http.MethodGet, "/", 200, 1234},
	} {
		resp, body, err := roundTrip(t, tr, context.Background(), tt.method, url+tt.path, nil)
		if err != nil || resp.StatusCode != tt.status || resp.ContentLength != tt.length || int64(len(body)) != map[bool]int64{true: 0, false: tt.length}[tt.method == http.MethodHead] {
			t.Errorf("%s %s: %v, status %d, ContentLength %d, %d bytes", tt.method, tt.path, err, resp.StatusCode, resp.ContentLength, len(body))
		}
		if resp != nil && resp.Body == nil {
			t.Errorf("%s %s: nil Body", tt.method, tt.path)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("4 exchanges used %d connections, want 1", n)
	}
}

func TestH1ResponseHeaderTimeout(t *testing.T) {
	srv := startRaw(t, "127.0.0.70", func(n int64, c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.Copy(io.Discard, br) // never answers; returns when the client closes
	})
	tr := newH1(t, Config{ResponseHeaderTimeout: 100 * time.Millisecond})
	start := time.Now()
	_, _, err := roundTrip(t, tr, context.Background(), http.MethodGet, "http://"+srv.addr+"/", nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), "timeout awaiting response headers") {
		t.Fatalf("GET from a mute upstream: %v, want a header timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("header timeout of 100ms returned after %v", d)
	}
}

// TestH1CancelPrompt: the caller's context ending stops the exchange at once, before the
// header or in the body, and Upstream counts it as no failure.
func TestH1CancelPrompt(t *testing.T) {
	arrived := make(chan string, 4)
	srv := startRaw(t, "127.0.0.71", func(n int64, c net.Conn, br *bufio.Reader) {
		req, ok := readRequest(br)
		if !ok {
			return
		}
		if req.URL.Path == "/body" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
		}
		arrived <- req.URL.Path
		io.Copy(io.Discard, br) // stalls until the client closes
	})
	u := New(Config{Name: "cancel", ConsecutiveFailures: 1})
	defer u.Close()
	for _, path := range []string{"/head", "/body"} {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := doRead(t, u, ctx, "http://"+srv.addr+path)
			errc <- err
		}()
		<-arrived
		start := time.Now()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("%s canceled: %v, want context.Canceled", path, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: returned %v after cancel", path, d)
		}
	}
	if st := u.Stats(); st.Failures != 0 || st.State != "closed" || st.InFlight != 0 {
		t.Errorf("Stats() after two caller cancels = %+v, want no failure, closed, none in flight", st)
	}
}

// TestH1EarlyClose: a body closed before its end keeps its connection only if the rest had
// already arrived and is short.
func TestH1EarlyClose(t *testing.T) {
	url, conns := countConns(t, "127.0.0.72", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write(make([]byte, n))
	}))
	tr := newH1(t, Config{})
	mustGet(t, tr, url+"?n=1") // a connection in the pool
	for _, tt := range []struct {
		n     int
		conns int64
	}{{2000, 0}, {200 << 10, 1}} {
		before := conns.Load()
		resp, _, err := func() (*http.Response, []byte, error) {
			req, _ := http.NewRequest(http.MethodGet, url+"?n="+strconv.Itoa(tt.n), nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				return nil, nil, err
			}
			var one [1]byte
			_, err = io.ReadFull(resp.Body, one[:])
			resp.Body.Close()
			return resp, nil, err
		}()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET n=%d: %v", tt.n, err)
		}
		if _, err := resp.Body.Read(make([]byte, 1)); !errors.Is(err, errBodyClosed) {
			t.Errorf("Read after Close: %v, want errBodyClosed", err)
		}
		mustGet(t, tr, url+"?n=1")
		if got := conns.Load() - before; got != tt.conns {
			t.Errorf("body of %d closed after 1 byte, then a GET: %d new connections, want %d", tt.n, got, tt.conns)
		}
	}
}

// TestH1PoolBound: at most MaxIdleConns connections are kept idle.
func TestH1PoolBound(t *testing.T) {
	const conc = 5
	var hits atomic.Int64
	release := make(chan struct{})
	url, conns := countConns(t, "127.0.0.73", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		<-release
		io.WriteString(w, "ok")
	}))
	tr := newH1(t, Config{MaxIdleConns: 2})
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			if resp, body := mustGet(t, tr, url); resp.StatusCode != 200 || string(body) != "ok" {
				t.Errorf("GET = %d %q", resp.StatusCode, body)
			}
		})
	}
	wait.For(t, 5*time.Second, "5 requests at the server at once", func() bool { return hits.Load() == conc })
	close(release)
	wg.Wait()
	p := tr.pool(hostPort(strings.TrimPrefix(url, "http://")))
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != 2 || conns.Load() != conc {
		t.Errorf("after %d concurrent GETs: %d connections, %d idle; want %d and 2", conc, conns.Load(), idle, conc)
	}
}

// TestH1IdleTimeout: a connection idle for IdleConnTimeout is closed, with no request needed
// to notice, and the next request dials anew.
func TestH1IdleTimeout(t *testing.T) {
	closed := make(chan struct{}, 4)
	srv := startRaw(t, "127.0.0.74", func(n int64, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := readRequest(br); !ok {
				closed <- struct{}{}
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := newH1(t, Config{IdleConnTimeout: 50 * time.Millisecond})
	mustGet(t, tr, "http://"+srv.addr+"/")
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection was not closed 5s after its 50ms idle timeout")
	}
	mustGet(t, tr, "http://"+srv.addr+"/")
	if n := srv.accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	tr.CloseIdleConnections()
	<-closed // CloseIdleConnections closes the second one
}

// TestH1Concurrent runs many exchanges at once (with -race): whole bodies, early closes and
// cancels mixed on shared connections.
func TestH1Concurrent(t *testing.T) {
	url, _ := countConns(t, "127.0.0.75", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write(bytes.Repeat([]byte{'c'}, n))
	}))
	tr := newH1(t, Config{MaxIdleConns: 4})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				n := (g*50 + i) * 97 % 70000
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"?n="+strconv.Itoa(n), nil)
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Errorf("GET n=%d: %v", n, err)
					cancel()
					return
				}
				switch i % 3 {
				case 0:
					body, err := io.ReadAll(resp.Body)
					if err != nil || len(body) != n {
						t.Errorf("GET n=%d: %d bytes, %v", n, len(body), err)
					}
				case 1:
					io.CopyN(io.Discard, resp.Body, int64(n/2))
				case 2:
					cancel()
					io.Copy(io.Discard, resp.Body)
				}
				resp.Body.Close()
				cancel()
			}
		})
	}
	wg.Wait()
}

// TestH1CloseDuringRead: Close while a Read is blocked ends the Read.
func TestH1CloseDuringRead(t *testing.T) {
	srv := startRaw(t, "127.0.0.76", func(n int64, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); ok {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
			io.Copy(io.Discard, br)
		}
	})
	tr := newH1(t, Config{})
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.addr+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b := resp.Body.(*h1Body)
	errc := make(chan error, 1)
	go func() { _, err := resp.Body.Read(make([]byte, 10)); errc <- err }()
	wait.For(t, 5*time.Second, "the Read to block", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.reading
	})
	resp.Body.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Read ended by Close returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5s after Close")
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"example.com": "example.com:80", "example.com:8080": "example.com:8080", "example.com:": "example.com:80",
		"10.0.0.1": "10.0.0.1:80", "[::1]": "[::1]:80", "[::1]:81": "[::1]:81",
	} {
		if got := hostPort(in); got != want {
			t.Errorf("hostPort(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestH1Fallback: what h1Transport does not send itself goes to the Transport: a request
// body, an upgrade.
func TestH1Fallback(t *testing.T) {
	url, _ := countConns(t, "127.0.0.77", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, b)
	}))
	tr := newH1(t, Config{})
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("payload"))
	if tr.handles(req) {
		t.Error("h1Transport handles a request with a body")
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("POST with a body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "POST payload" {
		t.Errorf("POST answered %q", body)
	}
	if _, ok := resp.Body.(*h1Body); ok {
		t.Error("POST with a body was sent by h1Transport")
	}
	up, _ := http.NewRequest(http.MethodGet, url, nil)
	up.Header.Set("Connection", "Upgrade")
	up.Header.Set("Upgrade", "websocket")
	tls, _ := http.NewRequest(http.MethodGet, "https://example.com/", nil)
	get, _ := http.NewRequest(http.MethodGet, url, nil)
	if tr.handles(up) || tr.handles(tls) || !tr.handles(get) {
		t.Errorf("handles: upgrade %v, https %v, plain GET %v; want false, false, true", tr.handles(up), tr.handles(tls), tr.handles(get))
	}
}

// TestH1StrayBytes: bytes an upstream sends past its answer are never read as the answer to
// the next request on that connection (which would store one URL's content under another's),
// whether they came with the answer or after the connection went back to the pool; the
// connection is dropped and the next request gets its own answer on a new one.
func TestH1StrayBytes(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Stray: 1\r\n\r\nstray!"
	for _, tc := range []struct {
		name  string
		later bool // the stray answer comes after the client took the first one
		big   bool // the second request's head is larger than the connection's write buffer
		ip    string
	}{
		{"with the answer", false, false, "127.0.0.68"},
		{"after the answer", true, false, "127.0.0.69"},
		{"after the answer, then a large head", true, true, "127.0.0.98"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sendStray := make(chan struct{})
			srv := startRaw(t, tc.ip, func(n int64, c net.Conn, br *bufio.Reader) {
				for {
					req, ok := readRequest(br)
					if !ok {
						return
					}
					body := strings.TrimPrefix(req.URL.Path, "/")
					answer := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					switch {
					case n == 1 && !tc.later:
						answer += stray
					case n == 1:
						io.WriteString(c, answer)
						<-sendStray
						answer = stray
					}
					io.WriteString(c, answer)
				}
			})
			tr := newH1(t, Config{})
			url := "http://" + srv.addr
			if _, body := mustGet(t, tr, url+"/one"); string(body) != "one" {
				t.Fatalf("GET /one = %q", body)
			}
			if tc.later {
				close(sendStray)
				awaitUnquiet(t, tr.pool(srv.addr), "the stray answer")
			}
			var h http.Header
			if tc.big {
				h = http.Header{"X-Big": {strings.Repeat("b", 16<<10)}}
			}
			resp, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, url+"/two", h)
			if err != nil {
				t.Fatalf("GET /two: %v", err)
			}
			if string(body) != "two" || resp.Header.Get("X-Stray") != "" {
				t.Errorf("GET /two = %q with X-Stray %q: the stray answer was read as its own", body, resp.Header.Get("X-Stray"))
			}
			if n := srv.accepted.Load(); n != 2 {
				t.Errorf("%d connections, want 2: the one with stray bytes dropped", n)
			}
		})
	}
}

// awaitUnquiet waits until p's one idle connection has something to read (what), as take's
// peek or WriteRead's check sees it; on a system where the transport cannot look, the test is
// not for it.
func awaitUnquiet(t *testing.T, p *h1Pool, what string) {
	t.Helper()
	p.mu.Lock()
	probe := p.idle[0].probe
	if raw := p.idle[0].cr.raw; raw != nil {
		probe = rawconn.NewProber(raw) // one of the test's own: the socket is the same
	}
	p.mu.Unlock()
	if probe == nil {
		t.Skip("no peek at a socket on this system")
	}
	wait.For(t, 5*time.Second, what+" at the idle connection", func() bool { return !probe.Quiet() })
}

// TestH1ReusedPastBodyTimeout: a connection idle for longer than its last exchange's
// BodyTimeout (its read deadline, still set) is still reused: take's peek ignores deadlines.
func TestH1ReusedPastBodyTimeout(t *testing.T) {
	url, conns := countConns(t, "127.0.0.70", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	u := New(Config{Name: "idle", BodyTimeout: 50 * time.Millisecond})
	defer u.Close()
	var reused int
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			reused++
		}
	}})
	for i := range 2 {
		if i > 0 {
			time.Sleep(100 * time.Millisecond) // the time that must pass: twice the BodyTimeout
		}
		if code, err := doRead(t, u, ctx, url); err != nil || code != http.StatusOK {
			t.Fatalf("GET %d: %d, %v", i, code, err)
		}
	}
	if n := conns.Load(); n != 1 || reused != 1 {
		t.Errorf("2 GETs 100 ms apart with a 50 ms BodyTimeout: %d connections, %d reused; want 1 and 1", n, reused)
	}
}

// ownAfterFunc is a context with an AfterFunc method of its own (as the edge's fill context).
type ownAfterFunc struct {
	context.Context
	calls int
}

func (c *ownAfterFunc) AfterFunc(f func()) func() bool {
	c.calls++
	return func() bool { return true }
}

// TestAfterFuncUsesContextsOwn: afterFunc calls a context's own AfterFunc method directly
// (context.AfterFunc would add a context and a done channel around it), and keeps
// context.AfterFunc's behaviour for any other context.
func TestAfterFuncUsesContextsOwn(t *testing.T) {
	own := &ownAfterFunc{Context: context.Background()}
	if stop := afterFunc(own, func() {}); !stop() || own.calls != 1 {
		t.Errorf("the context's own AfterFunc called %d times (stop from it: want true)", own.calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	afterFunc(ctx, func() { close(ran) })
	cancel()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("afterFunc on a plain context did not run when it ended")
	}
}

// TestH1LargeRequestHead: a request head larger than the connection's write buffer goes out
// in pieces, the last held back for the read of the answer (limitReader), in order and whole,
// on one kept-alive connection request after request.
func TestH1LargeRequestHead(t *testing.T) {
	url, conns := countConns(t, "127.0.0.60", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %d %d %d", r.URL.Path, len(r.Header.Get("X-A")), len(r.Header.Get("X-B")), len(r.Header.Get("X-C")))
	}))
	tr := newH1(t, Config{})
	for i, size := range []int{10, 3 << 10, 5 << 10, 10} {
		h := http.Header{"X-A": {strings.Repeat("a", size)}, "X-B": {strings.Repeat("b", 2*size)}, "X-C": {strings.Repeat("c", 3)}}
		path := "/big/" + strconv.Itoa(i)
		resp, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, url+path, h)
		if want := fmt.Sprintf("%s %d %d 3", path, size, 2*size); err != nil || resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("GET %s with %d bytes of fields: %v, %q; want %q", path, 3*size+3, err, body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("4 sequential GETs used %d connections, want 1", n)
	}
}

// TestH1HalfClosedIdle: an upstream that ends its side of a kept-alive connection but keeps
// reading (a lingering close: no reset comes back for what is sent to it) costs no error and
// no wait: the exchange sees the end before it sends, and the request goes on a new connection.
func TestH1HalfClosedIdle(t *testing.T) {
	srv := startRaw(t, "127.0.0.94", func(n int64, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); !ok {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if n == 1 {
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, br) // reads on, never answers
		}
	})
	tr := newH1(t, Config{ResponseHeaderTimeout: 5 * time.Second})
	mustGet(t, tr, "http://"+srv.addr+"/")
	awaitUnquiet(t, tr.pool(srv.addr), "the upstream's end of stream")
	start := time.Now()
	resp, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, "http://"+srv.addr+"/", nil)
	if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET after the upstream half-closed: %v, %q; want ok from a new connection", err, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("GET after the upstream half-closed took %v", d)
	}
	if n := srv.accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestH1CancelAwaitingHead: a fill's context (one with a deadline), canceled while the
// exchange waits for the answer's head, ends it at once with the context's error.
func TestH1CancelAwaitingHead(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv := startRaw(t, "127.0.0.91", func(n int64, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); ok {
			arrived <- struct{}{}
		}
		io.Copy(io.Discard, br) // never answers
	})
	tr := newH1(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := tr.send(ctx, time.Now().Add(time.Minute), req)
		errc <- err
	}()
	<-arrived
	start := time.Now()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled while awaiting the head: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned %v after the cancel", d)
	}
}

// TestH1EarlyAnswerLargeHead: an upstream that answers a head before it has all of it (a 431
// for a head too large) has its answer passed on, not taken for a connection gone bad.
func TestH1EarlyAnswerLargeHead(t *testing.T) {
	srv := startRaw(t, "127.0.0.96", func(n int64, c net.Conn, br *bufio.Reader) {
		io.ReadFull(br, make([]byte, 4<<10))
		io.WriteString(c, "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br) // a lingering close: no reset loses the answer
	})
	tr := newH1(t, Config{ResponseHeaderTimeout: 5 * time.Second})
	var conn net.Conn
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { conn = i.Conn },
		WroteHeaderField: func(k string, _ []string) {
			if k == "X-Last" { // X-A went out: let the early answer arrive
				p := rawconn.NewProber(conn)
				if p == nil {
					t.Skip("no peek at a socket on this system")
				}
				wait.For(t, 5*time.Second, "the early answer", func() bool { return !p.Quiet() })
			}
		},
	})
	h := http.Header{"X-A": {strings.Repeat("a", 16<<10)}, "X-Last": {"1"}}
	resp, _, err := roundTrip(t, tr, ctx, http.MethodGet, "http://"+srv.addr+"/", h)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("GET with a 16 KiB head: %v, %v; want the upstream's 431", resp, err)
	}
}

// TestH1NotQuietTakesNextIdle: a kept-alive connection found closed by the exchange's check
// is dropped for the next idle one, not for a new dial.
func TestH1NotQuietTakesNextIdle(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]*net.TCPConn{}
	both := make(chan struct{})
	var arrived sync.WaitGroup
	arrived.Add(2)
	srv := startRaw(t, "127.0.0.97", func(n int64, c net.Conn, br *bufio.Reader) {
		mu.Lock()
		conns[c.RemoteAddr().String()] = c.(*net.TCPConn)
		mu.Unlock()
		for i := 0; ; i++ {
			if _, ok := readRequest(br); !ok {
				return
			}
			if i == 0 && n <= 2 { // hold both first requests: two connections
				arrived.Done()
				<-both
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := newH1(t, Config{ResponseHeaderTimeout: 5 * time.Second})
	url := "http://" + srv.addr + "/"
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { mustGet(t, tr, url) })
	}
	arrived.Wait()
	close(both)
	wg.Wait()
	p := tr.pool(srv.addr)
	p.mu.Lock()
	if len(p.idle) != 2 {
		p.mu.Unlock()
		t.Fatalf("%d idle connections, want 2", len(p.idle))
	}
	newest := p.idle[1].nc
	p.mu.Unlock()
	mu.Lock()
	conns[newest.LocalAddr().String()].CloseWrite()
	mu.Unlock()
	pr := rawconn.NewProber(newest)
	if pr == nil {
		t.Skip("no peek at a socket on this system")
	}
	wait.For(t, 5*time.Second, "the close at the newest idle connection", func() bool { return !pr.Quiet() })
	var reused bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		reused = i.Reused
	}})
	resp, body, err := roundTrip(t, tr, ctx, http.MethodGet, url, nil)
	if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET: %v, %q", err, body)
	}
	if n := srv.accepted.Load(); n != 2 || !reused {
		t.Errorf("%d connections (want 2), last on a kept-alive one: %v (want true)", n, reused)
	}
}

// TestH1WriteDeadlineCleared: a connection that an exchange with a write deadline of its own
// (BodyTimeout, a context without one) gave back serves, past that deadline, an exchange that
// sets none, with a head sent in several writes.
func TestH1WriteDeadlineCleared(t *testing.T) {
	url, conns := countConns(t, "127.0.0.99", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	u := New(Config{Name: "wd", BodyTimeout: 50 * time.Millisecond})
	defer u.Close()
	if code, err := doRead(t, u, context.Background(), url); err != nil || code != 200 {
		t.Fatalf("GET 1: %d, %v", code, err)
	}
	time.Sleep(100 * time.Millisecond) // past the first exchange's write deadline, if it stayed
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := get(t, ctx, url)
	req.Header.Set("X-Big", strings.Repeat("b", 16<<10))
	resp, err := u.Do(req)
	if err != nil {
		t.Fatalf("GET 2 with a 16 KiB head: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// awaitAnswerAt returns a context whose trace waits until the connection has something to
// read: at GotConn when field is "", else once the header field named field was written.
func awaitAnswerAt(t *testing.T, field string) context.Context {
	var conn net.Conn
	await := func() {
		p := rawconn.NewProber(conn)
		if p == nil {
			t.Skip("no peek at a socket on this system")
		}
		wait.For(t, 5*time.Second, "the early answer", func() bool { return !p.Quiet() })
	}
	tr := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		conn = i.Conn
		if field == "" {
			await()
		}
	}}
	if field != "" {
		tr.WroteHeaderField = func(k string, _ []string) {
			if k == field {
				await()
			}
		}
	}
	return httptrace.WithClientTrace(context.Background(), tr)
}

// TestH1EarlyAnswerLargeHeadKeptAlive: on a kept-alive connection, an answer that comes after
// the first part of a large head went out is the upstream's: not a connection gone bad, and
// the request is not sent again on a new one.
func TestH1EarlyAnswerLargeHeadKeptAlive(t *testing.T) {
	srv := startRaw(t, "127.0.0.101", func(n int64, c net.Conn, br *bufio.Reader) {
		if n == 1 {
			if _, ok := readRequest(br); !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		io.ReadFull(br, make([]byte, 4<<10))
		io.WriteString(c, "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	})
	tr := newH1(t, Config{ResponseHeaderTimeout: 5 * time.Second})
	mustGet(t, tr, "http://"+srv.addr+"/")
	h := http.Header{"X-A": {strings.Repeat("a", 16<<10)}, "X-Last": {"1"}}
	resp, _, err := roundTrip(t, tr, awaitAnswerAt(t, "X-Last"), http.MethodGet, "http://"+srv.addr+"/", h)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("GET with a 16 KiB head on a kept-alive connection: %v, %v; want the upstream's 431", resp, err)
	}
	if n := srv.accepted.Load(); n != 1 {
		t.Errorf("%d connections, want 1: the request was sent again", n)
	}
}

// TestH1AnswerBeforeRequest: an upstream that answers a new connection before it has the
// request (an overloaded server's 503 on accept) has its answer passed on.
func TestH1AnswerBeforeRequest(t *testing.T) {
	srv := startRaw(t, "127.0.0.102", func(n int64, c net.Conn, br *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	})
	tr := newH1(t, Config{ResponseHeaderTimeout: 5 * time.Second})
	resp, _, err := roundTrip(t, tr, awaitAnswerAt(t, ""), http.MethodGet, "http://"+srv.addr+"/", nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET: %v, %v; want the upstream's 503", resp, err)
	}
}

// TestH1EarlyHintsLargeHead: a 1xx that comes before the last part of a large head is
// read, and the rest of the request still goes out, so the final answer comes.
func TestH1EarlyHintsLargeHead(t *testing.T) {
	srv := startRaw(t, "127.0.0.103", func(n int64, c net.Conn, br *bufio.Reader) {
		io.ReadFull(br, make([]byte, 4<<10))
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br)
	})
	tr := newH1(t, Config{ResponseHeaderTimeout: 2 * time.Second})
	h := http.Header{"X-A": {strings.Repeat("a", 16<<10)}, "X-Last": {"1"}}
	resp, body, err := roundTrip(t, tr, awaitAnswerAt(t, "X-Last"), http.MethodGet, "http://"+srv.addr+"/", h)
	if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET with a 16 KiB head and a 103 before its end: %v, %q; want 200 ok", err, body)
	}
}

// TestH1StrayBytesHeadSizes: stray bytes on a kept-alive connection are never read as the
// answer, for heads of exactly one, two write buffers, and one byte more.
func TestH1StrayBytesHeadSizes(t *testing.T) {
	for i, size := range []int{4 << 10, 4<<10 + 1, 8 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			sendStray := make(chan struct{})
			srv := startRaw(t, fmt.Sprintf("127.0.0.%d", 104+i), func(n int64, c net.Conn, br *bufio.Reader) {
				for {
					req, ok := readRequest(br)
					if !ok {
						return
					}
					body := strings.TrimPrefix(req.URL.Path, "/")
					io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
					if n == 1 {
						<-sendStray
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Stray: 1\r\n\r\nstray!")
					}
				}
			})
			tr := newH1(t, Config{})
			mustGet(t, tr, "http://"+srv.addr+"/one")
			close(sendStray)
			awaitUnquiet(t, tr.pool(srv.addr), "the stray answer")
			head := "GET /two HTTP/1.1\r\nHost: " + srv.addr + "\r\nUser-Agent: Go-http-client/1.1\r\nX-Pad: \r\n\r\n"
			h := http.Header{"X-Pad": {strings.Repeat("p", size-len(head))}}
			resp, body, err := roundTrip(t, tr, context.Background(), http.MethodGet, "http://"+srv.addr+"/two", h)
			if err != nil || string(body) != "two" || resp.Header.Get("X-Stray") != "" {
				t.Fatalf("GET /two with a %d-byte head: %v, %q", size, err, body)
			}
		})
	}
}

// TestInvalidFieldNamesDropped: a field whose name is not a token, such as one with a space
// before its colon, never comes out of the client: http.ReadResponse keeps "Transfer-Encoding :
// chunked" under the name "Transfer-Encoding ", and the edge would store it and write it to
// its clients beside its own Content-Length, which a client that trims the space reads as
// chunked (RFC 9112 §5.1: a proxy must remove such whitespace). The 1xx heads get the same.
func TestInvalidFieldNamesDropped(t *testing.T) {
	srv := startRaw(t, "127.0.0.104", func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := readRequest(br); !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nX Hint: 1\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding : chunked\r\nX A: b\r\nX-Ok: 1\r\n\r\nok")
		}
	})
	u := New(Config{Name: "hostile"})
	t.Cleanup(u.Close)
	var hints []textproto.MIMEHeader
	trace := &httptrace.ClientTrace{Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
		hints = append(hints, h)
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "http://"+srv.addr+"/x", nil)
	resp, err := u.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "ok" {
		t.Fatalf("body %q, %v", body, err)
	}
	for k := range resp.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			t.Errorf("answer has a field named %q", k)
		}
	}
	if resp.Header.Get("X-Ok") != "1" {
		t.Errorf("answer lost its valid fields: %q", resp.Header)
	}
	if len(hints) != 1 {
		t.Fatalf("%d interim answers, want 1", len(hints))
	}
	for k := range hints[0] {
		if !httpguts.ValidHeaderFieldName(k) {
			t.Errorf("103 has a field named %q", k)
		}
	}
}

// TestCloseDuringReadIsNoFailure: a body closed by its caller while a Read of it is blocked
// (the edge drops a trickling 5xx once another copy stands in for it) tells the breaker the
// answer's outcome, not a failure: the Read's error is the caller's own doing. Before, the
// Read ended by the Close could record its error first, and Close reported it as a failure,
// some of the time.
func TestCloseDuringReadIsNoFailure(t *testing.T) {
	srv := startRaw(t, "127.0.0.167", func(n int64, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := readRequest(br); !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000\r\n\r\nten bytes.")
		}
	})
	u := New(Config{})
	defer u.Close()
	const rounds = 200
	for i := range rounds {
		resp, err := u.Do(get(t, context.Background(), "http://"+srv.addr+"/"))
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
			t.Fatalf("round %d: read the body's start: %v", i, err)
		}
		read := make(chan struct{})
		go func() {
			defer close(read)
			resp.Body.Read(make([]byte, 10)) // blocks: the rest never comes
		}()
		h := resp.Body.(*body).rc.(*h1Body)
		wait.For(t, 5*time.Second, "the Read to block", func() bool {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.reading
		})
		resp.Body.Close()
		<-read
	}
	if st := u.Stats(); st.Failures != 0 || st.Requests != rounds {
		t.Errorf("after %d bodies closed during a Read: %d failures of %d requests, want none of %d", rounds, st.Failures, st.Requests, rounds)
	}
}
