package fetch

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestFramingThroughTransport: the answers h1Transport refuses or does not reuse the
// connection of (TestH1HTTP10TransferEncoding, TestH1TransferEncodingWithLengthNotReused,
// TestH1LongHeadFraming) are refused and not reused through net/http's Transport too: an
// https origin's (HTTP/1.1 over TLS), and a plain one's answer to a request with a body. There
// net/http read an HTTP/1.0 answer's chunk sizes as its body, and a Transfer-Encoding with a
// space before its colon framed the body by the connection's end, both stored by the edge as
// the object; and it reused the connection of an answer framed two ways.
func TestFramingThroughTransport(t *testing.T) {
	const chunked = "5\r\nhello\r\n0\r\n\r\n"
	pad := "X-Pad: " + strings.Repeat("p", 40<<10) + "\r\n"
	answers := map[string]string{
		"/http10-te":       "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
		"/http10-te-cl":    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 15\r\ntransfer-encoding: chunked\r\n\r\n" + chunked,
		"/http10-te-1xx":   "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
		"/http10-te-long":  "HTTP/1.0 200 OK\r\n" + pad + "Transfer-Encoding: chunked\r\n\r\n" + chunked,
		"/spaced":          "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n" + chunked,
		"/te-and-cl":       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
		"/te-and-cl-long":  "HTTP/1.1 200 OK\r\n" + pad + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
		"/spaced-and-cl":   "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nContent-Length: 15\r\n\r\n" + chunked,
		"/chunked":         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
		"/chunked-long":    "HTTP/1.1 200 OK\r\n" + pad + "Transfer-Encoding: chunked\r\n\r\n" + chunked,
		"/http10-keep":     "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
		"/http10-x-te":     "HTTP/1.0 200 OK\r\nX-Transfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
		"/interim-chunked": "HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
	}
	// Each origin answers on one connection for as long as the client keeps it, and closes it
	// after an answer framed by its end.
	closes := map[string]bool{"/http10-te": true, "/http10-te-1xx": true, "/http10-te-long": true, "/spaced": true}
	answer := func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, answers[req.URL.Path]); err != nil || closes[req.URL.Path] {
				return
			}
		}
	}
	plain := startRaw(t, "127.0.0.163", answer)
	secure, tc := startRawTLS(t, "127.0.0.164", answer)
	for _, c := range []struct {
		name, method, url string
		conns             func() int64
		cfg               Config
	}{
		{"https GET", http.MethodGet, "https://" + secure.addr, secure.accepted.Load, Config{TLSConfig: tc}},
		{"http POST", http.MethodPost, "http://" + plain.addr, plain.accepted.Load, Config{}},
	} {
		for _, tt := range []struct {
			path string
			body string // "" for an error
			kept bool   // the connection is used again
		}{
			{"/http10-te", "", false},
			{"/http10-te-cl", "", false},
			{"/http10-te-1xx", "", false},
			{"/http10-te-long", "", false},
			{"/spaced", "", false},
			{"/te-and-cl", "hello", false},
			{"/te-and-cl-long", "hello", false},
			{"/spaced-and-cl", chunked, false},
			{"/chunked", "hello", true},
			{"/chunked-long", "hello", true},
			{"/http10-keep", "hello", true},
			{"/http10-x-te", "hello", true},
			{"/interim-chunked", "hello", true},
		} {
			t.Run(c.name+tt.path, func(t *testing.T) {
				u := New(c.cfg)
				t.Cleanup(u.Close)
				before := c.conns()
				for i := range 2 {
					_, body, _, err := doHostile(t, u, c.method, c.url+tt.path, false)
					switch {
					case tt.body == "" && err == nil:
						t.Fatalf("#%d: body %q, no error; want an error (faulty framing)", i, body)
					case tt.body != "" && (err != nil || body != tt.body):
						t.Fatalf("#%d: %q, %v; want %q", i, body, err, tt.body)
					}
				}
				if tt.body == "" {
					return
				}
				want := map[bool]int64{true: 1, false: 2}[tt.kept]
				if got := c.conns() - before; got != want {
					t.Errorf("2 requests used %d connections, want %d", got, want)
				}
			})
		}
	}
}

// startRawTLS is startRaw over TLS (HTTP/1.1 only, httptest's certificate), with a client TLS
// config that trusts it.
func startRawTLS(t *testing.T, ip string, handle func(n int64, c net.Conn, br *bufio.Reader)) (*rawServer, *tls.Config) {
	t.Helper()
	certs := httptest.NewUnstartedServer(nil)
	certs.StartTLS()
	cert := certs.TLS.Certificates
	tc := certs.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	certs.Close()
	tc.ServerName = "example.com" // httptest's certificate names 127.0.0.1 and example.com
	srv := startRaw(t, ip, func(n int64, c net.Conn, _ *bufio.Reader) {
		sc := tls.Server(c, &tls.Config{Certificates: cert, NextProtos: []string{"http/1.1"}})
		defer sc.Close()
		handle(n, sc, bufio.NewReader(sc))
	})
	return srv, tc
}

// TestUpgradeOverTLSOffersHTTP11Only: an upgrade to an https upstream that also speaks
// HTTP/2 is made over HTTP/1.1, the only version with a 101: UpgradeTransport's handshake
// offers http/1.1 alone, as the Transport's own did.
func TestUpgradeOverTLSOffersHTTP11Only(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.165:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, r.Proto+" cannot switch", http.StatusHTTPVersionNotSupported)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
	}))
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tc := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.ServerName = "example.com"
	rt := Config{TLSConfig: tc}.UpgradeTransport()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("upgrade = %d %s, want 101", resp.StatusCode, resp.Proto)
	}
}

// TestFaultyFramingAskedOnce: an answer framingConn refuses, on a connection an earlier answer
// kept, is not asked for again. The Transport retries a GET on a fresh connection when the
// first read of a reused one fails, and the verdict was that first read: every such request
// reached the origin twice, where the own client (a plain GET) sends it once.
func TestFaultyFramingAskedOnce(t *testing.T) {
	faulty := map[string]struct {
		answer string
		err    error
	}{
		"/http10-te": {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", errCodedHTTP10},
		"/spaced":    {"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", errHiddenCoding},
	}
	var mu sync.Mutex
	asked := map[string]int{}
	srv, tc := startRawTLS(t, "127.0.0.166", func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			mu.Lock()
			asked[req.URL.Path]++
			mu.Unlock()
			if a, ok := faulty[req.URL.Path]; ok {
				io.WriteString(c, a.answer)
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"); err != nil {
				return
			}
		}
	})
	for path, f := range faulty {
		t.Run(path, func(t *testing.T) {
			u := New(Config{TLSConfig: tc})
			t.Cleanup(u.Close)
			if _, body, _, err := doHostile(t, u, http.MethodGet, "https://"+srv.addr+"/ok", false); err != nil || body != "hello" {
				t.Fatalf("GET /ok = %q, %v; want %q", body, err, "hello")
			}
			if _, body, _, err := doHostile(t, u, http.MethodGet, "https://"+srv.addr+path, false); !errors.Is(err, f.err) {
				t.Fatalf("GET %s = %q, %v; want %v", path, body, err, f.err)
			}
			mu.Lock()
			n := asked[path]
			mu.Unlock()
			if n != 1 {
				t.Errorf("the origin was asked for %s %d times, want 1", path, n)
			}
		})
	}
}
