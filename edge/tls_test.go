package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// writeCert writes a self-signed certificate for names into dir and returns its files.
func writeCert(t *testing.T, dir, base string, names ...string) CertFiles {
	t.Helper()
	c, err := selfSigned(names)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	f := CertFiles{Cert: filepath.Join(dir, base+".pem"), Key: filepath.Join(dir, base+".key")}
	// Write the key first: a reload that sees the new certificate must find its key.
	if err := os.WriteFile(f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert+".tmp", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.Cert+".tmp", f.Cert); err != nil {
		t.Fatal(err)
	}
	return f
}

// tlsEdge starts an origin and an edge serving HTTP, HTTPS and HTTP/3.
func tlsEdge(t *testing.T, tc TLSConfig, opts ...func(*Config)) (*single, *Node) {
	t.Helper()
	s, n, _ := tlsEdgeWith(t, tc, nil, opts...)
	return s, n
}

// tlsEdgeWith is tlsEdge, with prep (if not nil) called on the node and its listeners before
// it serves, and a function that stops the node and returns what serving returned (else the
// test's end stops it).
func tlsEdgeWith(t *testing.T, tc TLSConfig, prep func(*Node, *Listeners), opts ...func(*Config)) (*single, *Node, func() error) {
	t.Helper()
	s := &single{clock: newFakeClock()}
	s.origin, s.originAddr = startOrigin(t, "127.0.0.10", s.clock.Now)
	cfg := Config{PoP: "tls", Node: "e1", Clock: s.clock.Now, TLS: tc, HTTPSListen: "127.0.0.12:0",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + s.originAddr}, {Host: "other.example", Origin: "http://" + s.originAddr}}}
	for _, o := range opts {
		o(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	https, quicConn, err := listenHTTPS(ctx, "127.0.0.12:0", true)
	if err != nil {
		t.Fatal(err)
	}
	ls := Listeners{HTTP: listen(t, "127.0.0.12"), HTTPS: https, QUIC: quicConn}
	if prep != nil {
		prep(n, &ls)
	}
	done := make(chan error, 1)
	go func() { done <- n.ServeListeners(ctx, ls) }()
	<-n.Ready()
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			serveErr = <-done
		})
		return serveErr
	}
	var stopped atomic.Bool // the test stops the node and looks at the error itself
	t.Cleanup(func() {
		if err := stop(); err != nil && !stopped.Load() {
			t.Errorf("serve: %v", err)
		}
	})
	s.edge = n
	return s, n, func() error {
		stopped.Store(true)
		return stop()
	}
}

func insecure(serverName string) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: serverName}
}

func getWith(t *testing.T, c *http.Client, url string) resp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = testHost
	r, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.ProtoMajor == 0 {
		t.Fatalf("no protocol")
	}
	return resp{status: r.StatusCode, header: r.Header, body: string(b) + "|" + r.Proto}
}

// TestThreeProtocols: one object over HTTP/1.1, HTTP/2 and HTTP/3 from one cache, with
// either HTTP/2 server.
func TestThreeProtocols(t *testing.T) {
	for _, h2 := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2, func(t *testing.T) { testThreeProtocols(t, h2) })
	}
}

func testThreeProtocols(t *testing.T, h2server string) {
	s, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) { c.HTTP2 = h2server })
	path := "/p?cc=max-age%3D600"
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}}
	h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
	defer h3t.Close()
	h3 := &http.Client{Transport: h3t}
	plain := getWith(t, http.DefaultClient, "http://"+n.Addr()+path)
	wantCacheStatus(t, plain, "fwd=miss", "proto=http/1.1")
	body := strings.Split(plain.body, "|")[0]
	tests := []struct {
		name, proto string
		c           *http.Client
		url         string
	}{
		{"https http/1.1", "HTTP/1.1", &http.Client{Transport: &http.Transport{TLSClientConfig: func() *tls.Config {
			c := insecure(testHost)
			c.NextProtos = []string{"http/1.1"}
			return c
		}()}}, "https://" + n.HTTPSAddr() + path},
		{"http/2", "HTTP/2.0", h2, "https://" + n.HTTPSAddr() + path},
		{"http/3", "HTTP/3.0", h3, "https://" + n.HTTPSAddr() + path},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := getWith(t, tt.c, tt.url)
			parts := strings.Split(r.body, "|")
			if parts[0] != body || parts[1] != tt.proto {
				t.Errorf("got %d bytes over %s, want the cached body over %s", len(parts[0]), parts[1], tt.proto)
			}
			wantCacheStatus(t, r, "; hit")
			proto := map[string]string{"HTTP/1.1": "http/1.1", "HTTP/2.0": "h2", "HTTP/3.0": "h3"}[tt.proto]
			wantCacheStatus(t, r, "proto="+proto)
			if tt.proto != "HTTP/3.0" {
				if alt := r.header.Get("Alt-Svc"); !strings.HasPrefix(alt, `h3=":`) || !strings.HasSuffix(alt, "; ma=86400") {
					t.Errorf("Alt-Svc = %q", alt)
				}
			}
		})
	}
	if got := s.origin.Requests("/p"); got != 1 {
		t.Errorf("origin requests = %d, want 1: all protocols share one cache", got)
	}
	if got := counterValue(t, n, `meridian_edge_requests_total{cache="hit",code="200",proto="h3"}`); got != 1 {
		t.Errorf("h3 hits in metrics = %v, want 1", got)
	}
}

// scratchFixture is an edge with HTTPS, two reference-origin paths whose answers differ in
// Content-Type and Location ("/from-a", "/from-b"), mapped to their Content-Type, and an
// HTTP/1.1 client on one connection and an HTTP/2 one.
func scratchFixture(t *testing.T) (n *Node, paths map[string]string, h1, h2 *http.Client) {
	t.Helper()
	_, n = tlsEdge(t, TLSConfig{Dev: true})
	paths = map[string]string{
		"/a?cc=max-age%3D600&ct=text%2Fa&location=%2Ffrom-a": "text/a",
		"/b?cc=max-age%3D600&ct=text%2Fb&location=%2Ffrom-b": "text/b",
	}
	h1 = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	h2 = &http.Client{Transport: &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}}
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2.CloseIdleConnections)
	return n, paths, h1, h2
}

// TestHitHeaderScratchReuse: the HTTP/1.1 and HTTP/2 servers lend each response a scratch for
// its header's value slices and reuse it for later responses (a connection's next request, a
// later stream). Hits on two objects with different fields, alternating on one connection
// and, over HTTP/2, eight at a time, must each get their own object's fields.
func TestHitHeaderScratchReuse(t *testing.T) {
	n, paths, h1, h2 := scratchFixture(t)
	check := func(t *testing.T, c *http.Client, base, path, ct string) {
		r := getWith(t, c, base+path)
		loc := "/from-" + ct[len(ct)-1:]
		if got := r.header.Get("Content-Type"); got != ct || r.header.Get("Location") != loc {
			t.Errorf("%s: Content-Type %q, Location %q; want %q, %q", path, got, r.header.Get("Location"), ct, loc)
		}
	}
	for path, ct := range paths { // fill both
		check(t, h1, "http://"+n.Addr(), path, ct)
	}
	for range 4 {
		for path, ct := range paths {
			check(t, h1, "http://"+n.Addr(), path, ct)
			check(t, h2, "https://"+n.HTTPSAddr(), path, ct)
		}
	}
	keys := slices.Sorted(maps.Keys(paths))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				path := keys[(i+j)%len(keys)]
				req, _ := http.NewRequest(http.MethodGet, "https://"+n.HTTPSAddr()+path, nil)
				req.Host = testHost
				r, err := h2.Do(req)
				if err != nil {
					t.Errorf("GET %s: %v", path, err)
					return
				}
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
				if got, want := r.Header.Get("Content-Type"), paths[path]; got != want || r.ProtoMajor != 2 {
					t.Errorf("%s over HTTP/%d, concurrently: Content-Type %q, want %q", path, r.ProtoMajor, got, want)
				}
			}
		})
	}
	wg.Wait()
}

// TestHitHeaderScratchAtFinish is TestHitHeaderScratchReuse for answers whose header goes out
// only when the handler returns (HEAD, 304), not in a Write: the scratch must outlive that.
func TestHitHeaderScratchAtFinish(t *testing.T) {
	n, paths, h1, h2 := scratchFixture(t)
	etags := map[string]string{}
	for path := range paths {
		if etags[path] = getWith(t, h1, "http://"+n.Addr()+path).header.Get("ETag"); etags[path] == "" {
			t.Fatalf("%s: no ETag from the reference origin", path)
		}
	}
	send := func(c *http.Client, base, method, path, inm string) *http.Response {
		req, _ := http.NewRequest(method, base+path, nil)
		req.Host = testHost
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		return r
	}
	for range 3 {
		for path, ct := range paths {
			for _, c := range []struct {
				cl   *http.Client
				base string
			}{{h1, "http://" + n.Addr()}, {h2, "https://" + n.HTTPSAddr()}} {
				r := send(c.cl, c.base, http.MethodHead, path, "")
				if got := r.Header.Get("Content-Type"); got != ct {
					t.Errorf("HEAD %s over %s: Content-Type %q, want %q", path, r.Proto, got, ct)
				}
				r = send(c.cl, c.base, http.MethodGet, path, etags[path])
				if r.StatusCode != http.StatusNotModified || r.Header.Get("ETag") != etags[path] {
					t.Errorf("conditional GET %s over %s: %d, ETag %q; want 304, %q", path, r.Proto, r.StatusCode, r.Header.Get("ETag"), etags[path])
				}
			}
		}
	}
}

func peerCert(t *testing.T, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func TestSNISelectionAndReload(t *testing.T) {
	dir := t.TempDir()
	a := writeCert(t, dir, "a", "www.example.com")
	b := writeCert(t, dir, "b", "*.other.example", "other.example")
	_, n := tlsEdge(t, TLSConfig{Certs: []CertFiles{a, b}, ReloadInterval: 20 * time.Millisecond})
	tests := []struct{ sni, want string }{
		{"www.example.com", "www.example.com"},
		{"other.example", "*.other.example"},
		{"img.other.example", "*.other.example"},
		{"unknown.test", "www.example.com"}, // the default: the first certificate
		{"", "www.example.com"},             // no SNI at all
	}
	for _, tt := range tests {
		c, err := peerCert(t, n.HTTPSAddr(), &tls.Config{InsecureSkipVerify: true, ServerName: tt.sni})
		if err != nil {
			t.Fatalf("SNI %q: %v", tt.sni, err)
		}
		if c.DNSNames[1] != tt.want {
			t.Errorf("SNI %q got certificate for %v, want %s", tt.sni, c.DNSNames, tt.want)
		}
	}
	old, _ := peerCert(t, n.HTTPSAddr(), insecure("www.example.com"))
	writeCert(t, dir, "a", "www.example.com")
	wait.For(t, 5*time.Second, "certificate reload", func() bool {
		c, err := peerCert(t, n.HTTPSAddr(), insecure("www.example.com"))
		return err == nil && c.SerialNumber.Cmp(old.SerialNumber) != 0
	})
	// Old protocol versions are refused.
	if _, err := peerCert(t, n.HTTPSAddr(), &tls.Config{InsecureSkipVerify: true, ServerName: testHost, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Errorf("a TLS 1.1 handshake succeeded")
	}
}

func TestUnknownSNIRejected(t *testing.T) {
	dir := t.TempDir()
	_, n := tlsEdge(t, TLSConfig{Certs: []CertFiles{writeCert(t, dir, "a", "www.example.com")}, UnknownSNI: "reject"})
	if _, err := peerCert(t, n.HTTPSAddr(), insecure("unknown.test")); err == nil {
		t.Errorf("unknown SNI was served, want a handshake failure")
	}
	if _, err := peerCert(t, n.HTTPSAddr(), insecure("")); err == nil {
		t.Errorf("no SNI was served, want a handshake failure")
	}
	if _, err := peerCert(t, n.HTTPSAddr(), insecure("www.example.com")); err != nil {
		t.Errorf("known SNI: %v", err)
	}
}

// TestMalformedQUIC: garbage datagrams do not hurt the HTTP/3 server.
func TestMalformedQUIC(t *testing.T) {
	_, n := tlsEdge(t, TLSConfig{Dev: true})
	c, err := net.Dial("udp", n.HTTPSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payloads := [][]byte{{}, {0x00}, {0xc0, 0, 0, 0, 1}, make([]byte, 1500), []byte(strings.Repeat("\xff", 1200))}
	for i := range 200 {
		c.Write(payloads[i%len(payloads)])
	}
	h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
	defer h3t.Close()
	r := getWith(t, &http.Client{Transport: h3t}, "https://"+n.HTTPSAddr()+"/q?cc=max-age%3D60")
	if r.status != 200 {
		t.Errorf("HTTP/3 after garbage = %d", r.status)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"https without certificates", Config{HTTPSListen: "127.0.0.1:0"}, "tls"},
		{"bad unknown_sni", Config{TLS: TLSConfig{UnknownSNI: "maybe"}}, "tls.unknown_sni"},
		{"cert without key", Config{TLS: TLSConfig{Certs: []CertFiles{{Cert: "a.pem"}}}}, "tls.certs[0]"},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New error = %v, want one naming %s", tt.name, err, tt.want)
		}
	}
}

// TestPassThroughTrailers: an origin's trailer fields reach the client through a pass-through
// (a POST) over every protocol the edge serves: chunked HTTP/1.1, HTTP/2 with either server,
// HTTP/3.
func TestPassThroughTrailers(t *testing.T) {
	origin := startHTTP(t, "127.0.0.13", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusOK)
		w.Write(b)
		w.(http.Flusher).Flush() // the body goes out chunked, the trailer after it
		w.Header().Set("X-Checksum", "sum-"+string(b))
	}))
	for _, h2server := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2server, func(t *testing.T) {
			_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
				c.HTTP2 = h2server
				c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + origin}}
			})
			h1tls := insecure(testHost)
			h1tls.NextProtos = []string{"http/1.1"}
			h3t := &http3.Transport{TLSClientConfig: insecure(testHost)}
			defer h3t.Close()
			for _, c := range []struct {
				name, url, proto string
				rt               http.RoundTripper
			}{
				{"http/1.1", "http://" + n.Addr(), "HTTP/1.1", &http.Transport{}},
				{"https http/1.1", "https://" + n.HTTPSAddr(), "HTTP/1.1", &http.Transport{TLSClientConfig: h1tls}},
				{"http/2", "https://" + n.HTTPSAddr(), "HTTP/2.0", &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}},
				{"http/3", "https://" + n.HTTPSAddr(), "HTTP/3.0", h3t},
			} {
				req, _ := http.NewRequest(http.MethodPost, c.url+"/api", strings.NewReader("abc"))
				req.Host = testHost
				resp, err := (&http.Client{Transport: c.rt}).Do(req)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || string(body) != "abc" || resp.Proto != c.proto {
					t.Fatalf("%s: %s %d %q, %v", c.name, resp.Proto, resp.StatusCode, body, err)
				}
				if got := resp.Trailer.Get("X-Checksum"); got != "sum-abc" {
					t.Errorf("%s: trailer X-Checksum = %q, want sum-abc (trailer %v, header %v)", c.name, got, resp.Trailer, resp.Header)
				}
			}
		})
	}
}
