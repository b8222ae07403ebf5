package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// testServer serves h through Server on a TLS listener on 127.0.0.1, as the edge does.
type testServer struct {
	URL    string
	Addr   string
	Client *http.Client
	HS     *http.Server
	H2     *Server
	done   chan struct{}
	pool   *x509.CertPool
}

// newClient is a new HTTP/2 client of the server, with a connection of its own.
func (ts *testServer) newClient() *http.Client {
	p := new(http.Protocols)
	p.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ts.pool}, Protocols: p}}
}

func newTestServer(t testing.TB, h http.Handler) *testServer {
	t.Helper()
	cert := httptest.NewUnstartedServer(nil) // only for its certificate
	cert.StartTLS()
	tlsCert := cert.TLS.Certificates[0]
	pool := cert.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	cert.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	hs := &http.Server{
		Handler:   h,
		Protocols: p,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{tlsCert}, NextProtos: []string{"h2", "http/1.1"}},
		ErrorLog:  nil,
	}
	s := &Server{}
	s.Configure(hs)
	ts := &testServer{Addr: ln.Addr().String(), HS: hs, H2: s, done: make(chan struct{})}
	ts.URL = "https://" + ts.Addr
	go func() {
		defer close(ts.done)
		hs.ServeTLS(ln, "", "")
	}()
	ts.pool = pool
	ts.Client = ts.newClient()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-ts.done
	})
	return ts
}

func TestGetAndHeaders(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Proto != "HTTP/2.0" || r.ProtoMajor != 2 || r.TLS == nil {
			t.Errorf("request: proto %q major %d tls %v", r.Proto, r.ProtoMajor, r.TLS != nil)
		}
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.Header().Set("X-Cookie", r.Header.Get("Cookie"))
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	}))
	req, _ := http.NewRequest("GET", ts.URL+"/a/b?c=d", nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	resp, err := ts.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello" || resp.ProtoMajor != 2 {
		t.Fatalf("got %d %q proto %d", resp.StatusCode, body, resp.ProtoMajor)
	}
	if got := resp.Header.Get("X-Path"); got != "/a/b?c=d" {
		t.Errorf("path %q", got)
	}
	if got := resp.Header.Get("X-Host"); got != ts.Addr {
		t.Errorf("host %q, want %q", got, ts.Addr)
	}
	if got := resp.Header.Get("Date"); got == "" {
		t.Error("no Date")
	}
	if got := resp.Header.Get("X-Cookie"); got != "a=1; b=2" {
		t.Errorf("cookie %q", got)
	}
}

func TestHeadAndNoBodyStatuses(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/304":
			w.WriteHeader(http.StatusNotModified)
			if _, err := w.Write([]byte("x")); err != http.ErrBodyNotAllowed {
				t.Errorf("body on 304: %v", err)
			}
		default:
			w.Header().Set("Content-Length", "3")
			io.WriteString(w, "abc")
		}
	}))
	for _, c := range []struct {
		method, path string
		status       int
		body         string
		cl           int64
	}{
		{"HEAD", "/", 200, "", 3},
		{"GET", "/", 200, "abc", 3},
		{"GET", "/304", 304, "", 0},
	} {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, nil)
		resp, err := ts.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || string(body) != c.body || (c.cl > 0 && resp.ContentLength != c.cl) {
			t.Errorf("%s %s: %d %q cl %d", c.method, c.path, resp.StatusCode, body, resp.ContentLength)
		}
	}
}

// TestLargeBodiesBothWays sends and receives bodies many times the flow-control windows.
func TestLargeBodiesBothWays(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			t.Errorf("reading body: %v", err)
		}
		w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
		w.Header().Set("X-Len", fmt.Sprint(n))
		// Echo 5 MiB back, unannounced length.
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
		for range 80 {
			if _, err := w.Write(chunk); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
	}))
	payload := bytes.Repeat([]byte("xyz"), 1<<20) // 3 MiB
	want := sha256.Sum256(payload)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			resp, err := ts.Client.Post(ts.URL+"/echo", "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil || n != 80*64<<10 {
				t.Errorf("response body: %d bytes, %v", n, err)
			}
			if got := resp.Header.Get("X-Sum"); got != fmt.Sprintf("%x", want) || resp.Header.Get("X-Len") != fmt.Sprint(len(payload)) {
				t.Errorf("request body arrived as %s (%s bytes)", got, resp.Header.Get("X-Len"))
			}
		})
	}
	wg.Wait()
}

// TestSlowStreamDoesNotBlockOthers holds one handler until the others on the same
// connection have been answered: the reading must have moved on without it.
func TestSlowStreamDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, r.URL.Path)
	}))
	slow := make(chan error, 1)
	go func() {
		resp, err := ts.Client.Get(ts.URL + "/slow")
		if err == nil {
			resp.Body.Close()
		}
		slow <- err
	}()
	for i := range 20 {
		resp, err := ts.Client.Get(fmt.Sprintf("%s/fast%d", ts.URL, i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != fmt.Sprintf("/fast%d", i) {
			t.Fatalf("got %q", b)
		}
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}

// TestClientResetCancelsHandler: a client that gives up resets the stream, and the handler's
// context ends.
func TestClientResetCancelsHandler(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(ended)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := ts.Client.Do(req)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("request succeeded after cancel")
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("handler context not cancelled by the client's reset")
	}
}

// TestShutdownWaitsForStreams: Shutdown sends GOAWAY, lets the stream in flight finish and
// then returns.
func TestShutdownWaitsForStreams(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	}))
	errc := make(chan error, 1)
	var body string
	go func() {
		resp, err := ts.Client.Get(ts.URL + "/slow")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- ts.HS.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a stream in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-errc; err != nil || body != "done" {
		t.Fatalf("in-flight request: %q, %v", body, err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// rawClient speaks HTTP/2 frame by frame, for what a well-behaved client never sends.
type rawClient struct {
	t   testing.TB
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

// dialTLS opens a TLS connection that negotiated h2.
func dialTLS(t testing.TB, ts *testServer) *tls.Conn {
	t.Helper()
	nc, err := tls.Dial("tcp", ts.Addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if p := nc.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	return nc
}

func dialRaw(t testing.TB, ts *testServer) *rawClient {
	t.Helper()
	return newRawClient(t, dialTLS(t, ts))
}

// newRawClient starts HTTP/2 on nc, a connection to the server: the preface and SETTINGS.
func newRawClient(t testing.TB, nc net.Conn) *rawClient {
	t.Helper()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.buf)
	io.WriteString(nc, clientPreface)
	c.fr.WriteSettings()
	return c
}

// headers sends a request's HEADERS on stream id; extra are more fields, name then value.
func (c *rawClient) headers(id uint32, endStream bool, path string, extra ...string) {
	if err := c.tryHeaders(id, endStream, path, extra...); err != nil {
		c.t.Fatal(err)
	}
}

// tryHeaders is headers for a test in which the server may hang up first.
func (c *rawClient) tryHeaders(id uint32, endStream bool, path string, extra ...string) error {
	c.buf.Reset()
	fields := append([]string{":method", "GET", ":scheme", "https", ":authority", "a", ":path", path}, extra...)
	for i := 0; i < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(), EndStream: endStream, EndHeaders: true})
}

// shutdownUntilGoAway starts ts's graceful shutdown (the server's GOAWAY goes out while a
// held stream keeps it from ending) and reads frames until its GOAWAY, which must be NO_ERROR
// naming last.
func (c *rawClient) shutdownUntilGoAway(ts *testServer, last uint32) {
	c.t.Helper()
	go ts.H2.shutdown() // returns once the held stream is released, as the test ends
	c.until("the GOAWAY", func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		if ok && (g.ErrCode != http2.ErrCodeNo || g.LastStreamID != last) {
			c.t.Fatalf("GOAWAY %v naming stream %d, want NO_ERROR naming %d", g.ErrCode, g.LastStreamID, last)
		}
		return ok
	})
}

// until reads frames until match returns true, and fails on a read error.
func (c *rawClient) until(what string, match func(http2.Frame) bool) {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading frames for %s: %v", what, err)
		}
		if match(f) {
			return
		}
	}
}

// wantReset reads frames until stream id's RST_STREAM, which must carry code; if noAnswer,
// a HEADERS frame for the stream before it fails the test.
func (c *rawClient) wantReset(id uint32, code http2.ErrCode, noAnswer bool) {
	c.t.Helper()
	c.until(fmt.Sprintf("RST_STREAM %v on stream %d", code, id), func(f http2.Frame) bool {
		if f.Header().StreamID != id {
			return false
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if noAnswer {
				c.t.Fatalf("stream %d answered %s instead of reset", id, f.PseudoValue("status"))
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode != code {
				c.t.Fatalf("stream %d reset with %v, want %v", id, f.ErrCode, code)
			}
			return true
		}
		return false
	})
}

// TestRequestHeaderTooLarge answers 431, as net/http does.
func TestRequestHeaderTooLarge(t *testing.T) {
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	ts.H2.MaxHeaderBytes = 4096
	c := dialRaw(t, ts)
	var big []string
	for i := range 6 {
		big = append(big, fmt.Sprintf("x-big-%d", i), strings.Repeat("a", 1000))
	}
	c.headers(1, true, "/", big...)
	c.until("the 431", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		if ok && h.PseudoValue("status") != "431" {
			t.Fatalf("status %s", h.PseudoValue("status"))
		}
		return ok
	})
}

// TestTrailers: trailer fields reach the client at the end of the body as with net/http's
// server, whether named in Trailer before the header went out or set with http.TrailerPrefix,
// for a body held until the handler returns and for one sent as it is written; they are not
// sent among the header fields. Fields set with http.TrailerPrefix after a body reached its
// declared Content-Length are dropped: the stream ended with that body (as HTTP/1.1 can send
// no trailer after a Content-Length body).
func TestTrailers(t *testing.T) {
	big := strings.Repeat("b", 3*bufferBeforeHeader)
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := "small"
		if r.URL.Query().Has("big") {
			body = big
		}
		if r.URL.Query().Has("cl") {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		}
		switch r.URL.Path {
		case "/declared":
			w.Header().Set("Trailer", "X-Sum, Content-Length, X-Empty")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, body)
			w.Header().Set("X-Sum", fmt.Sprint(len(body)))
		case "/prefixed":
			io.WriteString(w, body)
			w.Header().Set(http.TrailerPrefix+"X-Sum", fmt.Sprint(len(body)))
		case "/none":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, body)
		}
	}))
	for _, path := range []string{"/declared", "/prefixed", "/none"} {
		for _, q := range []string{"", "?big", "?cl", "?big&cl"} {
			want := "small"
			if strings.Contains(q, "big") {
				want = big
			}
			resp, err := ts.Client.Get(ts.URL + path + q)
			if err != nil {
				t.Fatalf("%s%s: %v", path, q, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != want {
				t.Fatalf("%s%s: body of %d bytes, %v", path, q, len(body), err)
			}
			wantSum := fmt.Sprint(len(want))
			if path == "/none" || path == "/prefixed" && strings.Contains(q, "cl") {
				wantSum = ""
			}
			if got := resp.Trailer.Get("X-Sum"); got != wantSum {
				t.Errorf("%s%s: trailer X-Sum = %q, want %q (trailer %v)", path, q, got, wantSum, resp.Trailer)
			}
			if resp.Trailer.Get("Content-Length") != "" {
				t.Errorf("%s%s: Content-Length sent as a trailer", path, q)
			}
			if resp.Header.Get("X-Sum") != "" || resp.Header.Get(http.TrailerPrefix+"X-Sum") != "" {
				t.Errorf("%s%s: trailer among the header fields: %v", path, q, resp.Header)
			}
		}
	}
}

// TestResponseHeaderRecycled checks that a connection gives a later stream the header map of
// a handler that returned, cleared: nothing one answer set reaches the next, including
// fields that had to grow the map, and the map is reused (no allocation to grow it again);
// and the same of the value scratch (ValueScratch).
func TestResponseHeaderRecycled(t *testing.T) {
	var mu sync.Mutex
	maps, scratches := map[string]int{}, map[*string]int{}
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		vs := w.(interface{ ValueScratch() []string }).ValueScratch()
		mu.Lock()
		maps[fmt.Sprintf("%p", h)]++
		scratches[&vs[0]]++
		mu.Unlock()
		if len(h) != 0 {
			t.Errorf("request %s: header starts with %v", r.URL.Path, h)
		}
		for i, v := range vs {
			if v != "" {
				t.Errorf("request %s: value scratch starts with %q at %d", r.URL.Path, v, i)
			}
		}
		if r.URL.Path == "/first" {
			for i := range 20 { // past a small map's first group
				h.Set(fmt.Sprintf("X-First-%d", i), "1")
			}
		}
		vs[0] = r.URL.Path
		h["X-Path"] = vs[0:1:1] // as the edge's hits use it (store.Object.SetHeader)
		io.WriteString(w, r.URL.Path)
	}))
	for _, p := range []string{"/first", "/second", "/third"} {
		resp, err := ts.Client.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s over %s, want HTTP/2", p, resp.Proto)
		}
		if got := resp.Header.Get("X-Path"); got != p {
			t.Errorf("%s: X-Path %q", p, got)
		}
		if p != "/first" && resp.Header.Get("X-First-0") != "" {
			t.Errorf("%s: answer carries the first answer's fields: %v", p, resp.Header)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(maps) != 1 || len(scratches) != 1 {
		t.Errorf("three sequential requests on one connection used %d header maps and %d value scratches, want 1 each", len(maps), len(scratches))
	}
}

// TestValueScratchNotShared: two streams alive at once never share a value scratch, even
// when the connection has one free to recycle.
func TestValueScratchNotShared(t *testing.T) {
	slowIn, fastDone := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	ptrs := map[string]*string{}
	ts := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vs := w.(interface{ ValueScratch() []string }).ValueScratch()
		vs[0] = r.URL.Path
		w.Header()["X-Path"] = vs[0:1:1]
		mu.Lock()
		ptrs[r.URL.Path] = &vs[0]
		mu.Unlock()
		if r.URL.Path == "/slow" {
			close(slowIn)
			<-fastDone // /fast has answered and returned
		}
	}))
	get := func(p string) (string, error) {
		resp, err := ts.Client.Get(ts.URL + p)
		if err != nil {
			return "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Path"), nil
	}
	if _, err := get("/warm"); err != nil { // leaves one scratch free
		t.Fatal(err)
	}
	type result struct {
		path string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		p, err := get("/slow")
		slow <- result{p, err}
	}()
	<-slowIn
	if got, err := get("/fast"); err != nil || got != "/fast" {
		t.Errorf("/fast: X-Path %q, %v", got, err)
	}
	close(fastDone)
	if r := <-slow; r.err != nil || r.path != "/slow" {
		t.Errorf("/slow: X-Path %q, %v", r.path, r.err)
	}
	mu.Lock()
	defer mu.Unlock()
	if ptrs["/slow"] == ptrs["/fast"] {
		t.Error("two streams alive at once got the same value scratch")
	}
}
