package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/wire"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Raw is an HTTP/2 connection to the edge's TLS port driven frame by frame, for requests
// Go's client will not send.
type h2Raw struct {
	t   *testing.T
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2Raw(t *testing.T, addr string) *h2Raw {
	t.Helper()
	nc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, ServerName: testHost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if p := nc.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &h2Raw{t: t, fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.buf)
	io.WriteString(nc, http2.ClientPreface)
	c.fr.WriteSettings()
	return c
}

// request sends a request without a body on stream id, fields as name, value pairs, and
// returns its status (0 if the stream was reset, with the reset's code).
func (c *h2Raw) request(id uint32, fields ...string) (int, http2.ErrCode) {
	c.t.Helper()
	c.buf.Reset()
	for i := 0; i < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
	return c.answer(id)
}

// answer reads frames until stream id's answer ends and returns its status (0 if the stream
// was reset before it, with the reset's code).
func (c *h2Raw) answer(id uint32) (int, http2.ErrCode) {
	c.t.Helper()
	status := 0
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("stream %d: %v", id, err)
		}
		if f.Header().StreamID != id {
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" && s[0] != '1' {
				status = atoiOr0(s)
			}
			if f.StreamEnded() {
				return status, http2.ErrCodeNo
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				return status, http2.ErrCodeNo
			}
		case *http2.RSTStreamFrame:
			return status, f.ErrCode
		}
	}
}

func atoiOr0(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// TestInvalidMethodNotPassed: a request whose method is no token (RFC 9110, section 9.1)
// gets 400 over HTTP/2 (from the edge's own server itself where the method ends in white
// space, which makes the request malformed: it reset the stream, TestMalformedAnswered400),
// as net/http answers it over HTTP/1.1 (HTTP/3 resets it), rather
// than be passed on, where the upstream client refuses it: each was a 502 and a failed
// exchange of the origin's, and 20 of them opened its breaker (FailureRatio), so that every
// client's next unsafe request failed (502).
func TestInvalidMethodNotPassed(t *testing.T) {
	for _, h2server := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2server, func(t *testing.T) {
			s, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) { c.HTTP2 = h2server })
			c := dialH2Raw(t, n.HTTPSAddr())
			methods := []string{"G ET", "GET()", "POST\t", "{}", "a/b", "x@y", "M,N"}
			for i := range 24 {
				method := methods[i%len(methods)]
				status, code := c.request(uint32(2*i+1), ":method", method, ":scheme", "https", ":authority", testHost, ":path", "/api")
				if status != http.StatusBadRequest {
					t.Errorf("method %q: status %d (reset %v), want 400", method, status, code)
				}
			}
			if got := s.origin.Requests("/api"); got != 0 {
				t.Errorf("origin saw %d requests with invalid methods", got)
			}
			h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}}
			defer h2.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodPost, "https://"+n.HTTPSAddr()+"/api", strings.NewReader("x"))
			req.Host = testHost
			r, err := h2.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusNoContent {
				t.Fatalf("a valid POST after them: %d %v, want the origin's 204", r.StatusCode, r.Header["Cache-Status"])
			}
		})
	}
}

// TestNoContentLengthOn204: a 204 carries no Content-Length (RFC 9110, section 8.6) over any
// protocol, from the cache as from the origin: HTTP/1.1 left it out, HTTP/2 and HTTP/3 sent
// the stored object's "0".
func TestNoContentLengthOn204(t *testing.T) {
	_, n := tlsEdge(t, TLSConfig{Dev: true})
	for _, c := range everyProtocol(t, n) {
		for _, want := range []string{"miss", "hit"} {
			req, _ := http.NewRequest(http.MethodGet, c.url+"/nc?status=204&cc=max-age%3D600&p="+strings.ReplaceAll(c.name, " ", "-"), nil)
			req.Host = testHost
			r, err := (&http.Client{Transport: c.rt}).Do(req)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			r.Body.Close()
			cs := r.Header.Get("Cache-Status")
			if r.StatusCode != http.StatusNoContent || !strings.Contains(cs, want) {
				t.Fatalf("%s: %d %q, want a 204 %s", c.name, r.StatusCode, cs, want)
			}
			if v, ok := r.Header["Content-Length"]; ok {
				t.Errorf("%s %s: 204 with Content-Length %q", c.name, want, v)
			}
		}
	}
}

// unsizedBody is a request body of n bytes whose length the client does not know, so that
// it goes out chunked over HTTP/1.1 and without Content-Length over HTTP/2 and HTTP/3.
type unsizedBody struct{ n int }

func (b *unsizedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	k := min(len(p), b.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	b.n -= k
	return k, nil
}

// TestNoConnectionFieldsOverHTTP3: an answer over HTTP/3 carries no connection-specific
// field (RFC 9114, section 4.2: a client treats an answer with one as malformed), as HTTP/2's
// leave them out. A body without Content-Length over max_request_body_bytes got its 413 with
// "Connection: close" (for HTTP/1.1's sake), which quic-go sent as it was: the HTTP/3 client
// refused the answer ("invalid header field name"), where HTTP/1.1 and HTTP/2 clients got 413.
func TestNoConnectionFieldsOverHTTP3(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) { c.MaxRequestBodyBytes = 4096 })
	for _, c := range everyProtocol(t, n) {
		req, _ := http.NewRequest(http.MethodPost, c.url+"/api", io.MultiReader(&unsizedBody{10000}))
		req.Host = testHost
		r, err := (&http.Client{Transport: c.rt}).Do(req)
		if err != nil {
			t.Errorf("%s: %v, want 413", c.name, err)
			continue
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(r.Header.Get("Cache-Status"), "detail=request-body-too-large") {
			t.Errorf("%s: %d %q %q, want 413 request-body-too-large", c.name, r.StatusCode, r.Header.Get("Cache-Status"), b)
		}
	}
	if got := s.origin.Requests("/api"); got != 0 {
		t.Errorf("origin saw %d requests with bodies over the limit", got)
	}
}

// TestContinueOverEveryProtocol: a request with "Expect: 100-continue" gets 100 Continue once
// the edge reads its body (RFC 9110, section 10.1.1), over HTTP/3 as over HTTP/1.1 (net/http)
// and HTTP/2 (edge/h2). quic-go's server never sends it: an HTTP/3 client that waited for it
// before sending its body waited out its own timeout (or, waiting longer, the edge's
// request_body_timeout and a 408). The expectation is a case-insensitive token in a list
// (as net/http reads it): over HTTP/3 a list such as "100-continue, 100-continue" got none.
func TestContinueOverEveryProtocol(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
	defer h3t.Close()
	expects := []string{"100-continue", "100-Continue", "100-continue, 100-continue"}
	for _, c := range []struct {
		name, url string
		rt        http.RoundTripper
	}{
		{"http/1.1", "http://" + n.Addr(), &http.Transport{ExpectContinueTimeout: time.Minute}},
		{"http/2", "https://" + n.HTTPSAddr(), &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true, ExpectContinueTimeout: time.Minute}},
		{"http/3", "https://" + n.HTTPSAddr(), h3t}, // sends the body at once: sent here on the 100
	} {
		for _, expect := range expects {
			t.Run(strings.ReplaceAll(c.name, "/", "")+" "+expect, func(t *testing.T) {
				pr, pw := io.Pipe()
				got := make(chan struct{})
				var once sync.Once
				ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
					Got100Continue: func() { once.Do(func() { close(got) }) },
				})
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/api", pr)
				req.Host = testHost
				req.ContentLength = 5
				req.Header.Set("Expect", expect)
				continued := make(chan bool, 1)
				go func() {
					select {
					case <-got:
						continued <- true
					case <-time.After(5 * time.Second):
						continued <- false
					}
					pw.Write([]byte("hello"))
					pw.Close()
				}()
				r, err := (&http.Client{Transport: c.rt}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if !<-continued {
					t.Errorf("no 100 Continue within 5 s of the request")
				}
				if r.StatusCode != http.StatusNoContent {
					t.Errorf("status %d %q, want the origin's 204", r.StatusCode, r.Header.Get("Cache-Status"))
				}
			})
		}
	}
	if got, want := s.origin.Requests("/api"), int64(3*len(expects)); got != want {
		t.Errorf("origin saw %d requests, want %d", got, want)
	}
}

// TestOptionsAsteriskOverEveryProtocol: "OPTIONS *" (a request about the server, not a
// resource: RFC 9110, section 9.3.7) gets net/http's answer over HTTP/3 too, 200 with an
// empty body, as over HTTP/1.1 and HTTP/2 (edge/h2 serves through net/http's handler, which
// answers it). quic-go handed it to the pipeline, which answered 400 "bad request target".
func TestOptionsAsteriskOverEveryProtocol(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	for _, c := range everyProtocol(t, n) {
		req, _ := http.NewRequest(http.MethodOptions, c.url, nil)
		req.URL.Opaque = "*"
		req.Host = testHost
		r, err := (&http.Client{Transport: c.rt}).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK || len(b) != 0 || r.Header.Get("Content-Length") != "0" {
			t.Errorf("%s: %d %q %q, want 200 with an empty body", c.name, r.StatusCode, r.Header.Get("Cache-Status"), b)
		}
	}
	if got := s.origin.Requests("*"); got != 0 {
		t.Errorf("origin saw %d OPTIONS * requests", got)
	}
}

// TestContinueRefusedEarlyOverHTTP3: an upload over HTTP/3 that expects 100-continue, larger
// than the part of a body a pass buffers, refused by its origin from its head alone while the
// rest is still on its way: the client gets the origin's 401 with its fields, never the
// 100's (its first read, which sent the 100, is the handler's own, in bufferBody, so the
// 100 and the answer do not race: go test -race).
func TestContinueRefusedEarlyOverHTTP3(t *testing.T) {
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}
	})
	h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
	defer h3t.Close()
	for i := range 5 {
		req, _ := http.NewRequest(http.MethodPost, "https://"+n.HTTPSAddr()+"/upload", bytes.NewReader(make([]byte, 4<<20)))
		req.Host = testHost
		req.Header.Set("Expect", "100-continue")
		r, err := (&http.Client{Transport: h3t}).Do(req)
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusUnauthorized || r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("upload %d: status %d, WWW-Authenticate %q; want the origin's 401", i, r.StatusCode, r.Header.Get("WWW-Authenticate"))
		}
	}
}

// protoClient is a client of the edge over one protocol: name, the edge's base URL for it and
// a transport that speaks it.
type protoClient struct {
	name, url string
	rt        http.RoundTripper
}

// everyProtocol is a client of n (a tlsEdge) for each way it serves: HTTP/1.1 in plain and
// over TLS, HTTP/2 and HTTP/3.
func everyProtocol(t *testing.T, n *Node) []protoClient {
	t.Helper()
	h1tls := insecure(testHost)
	h1tls.NextProtos = []string{"http/1.1"}
	h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
	t.Cleanup(func() { h3t.Close() })
	return []protoClient{
		{"http/1.1", "http://" + n.Addr(), &http.Transport{}},
		{"https http/1.1", "https://" + n.HTTPSAddr(), &http.Transport{TLSClientConfig: h1tls}},
		{"http/2", "https://" + n.HTTPSAddr(), &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}},
		{"http/3", "https://" + n.HTTPSAddr(), h3t},
	}
}

// do sends one request through c to the edge for testHost, with extra header pairs (a name
// given twice is sent as two field lines). A redirect is the answer, not followed.
func (c protoClient) do(t *testing.T, method, path string, hdr ...string) resp {
	t.Helper()
	req, err := http.NewRequest(method, c.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = testHost
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	client := &http.Client{Transport: c.rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %s %s: %v", c.name, method, path, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatalf("%s: read %s: %v", c.name, path, err)
	}
	return resp{status: r.StatusCode, header: r.Header, body: string(b)}
}
