package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestTLSHandshakeTimeout: a client that connects to the HTTPS port and sends nothing, or
// part of a handshake, is closed once the handshake timeout has passed, not before, and
// meanwhile other clients are served (each handshake has a goroutine of its own).
func TestTLSHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	_, n, _ := tlsEdgeWith(t, TLSConfig{Dev: true}, func(n *Node, _ *Listeners) { n.handshakeTimeout = timeout })
	silent, err := net.Dial("tcp", n.HTTPSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	// Half a handshake too: a client that sent a record header and stops.
	half, err := net.Dial("tcp", n.HTTPSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := half.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure(testHost)}}
	defer c.CloseIdleConnections()
	if r := getWith(t, c, "https://"+n.HTTPSAddr()+"/p"); r.status != http.StatusOK {
		t.Errorf("another client got %d, want 200", r.status)
	}
	// Both are read in turn, each up to 5 s from the start (not from its own read: the one read
	// second would otherwise have up to 10 s, net/http's own timeout, and pass without the fix).
	for name, conn := range map[string]net.Conn{"silent": silent, "half a record": half} {
		conn.SetReadDeadline(start.Add(5 * time.Second))
		_, err := conn.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s client: still open after 5 s, want closed after %v", name, timeout)
			continue
		}
		if elapsed := time.Since(start); elapsed < timeout {
			t.Errorf("%s client: closed after %v (%v), before the timeout %v", name, elapsed, err, timeout)
		}
	}
	// Each connection counted open from its accept is counted closed: those timed out too.
	c.CloseIdleConnections()
	wait.For(t, 10*time.Second, "no connection counted open", func() bool { return n.openConns.Load() == 0 })
}

// TestTLSHandshakeTimeoutNetHTTPs: the handshake timeout is net/http's for the server's
// timeouts (tlsHandshakeTimeout in net/http's server.go): the least positive one of
// ReadHeaderTimeout, ReadTimeout and WriteTimeout, none if none is set.
func TestTLSHandshakeTimeoutNetHTTPs(t *testing.T) {
	for _, tt := range []struct {
		srv  *http.Server
		want time.Duration
	}{
		{&http.Server{}, 0},
		{&http.Server{ReadHeaderTimeout: 10 * time.Second}, 10 * time.Second},
		{&http.Server{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 5 * time.Second}, 3 * time.Second},
		{&http.Server{ReadHeaderTimeout: -1, WriteTimeout: 5 * time.Second}, 5 * time.Second},
	} {
		if got := netHTTPHandshakeTimeout(tt.srv); got != tt.want {
			t.Errorf("timeouts %v, %v, %v: %v, want %v", tt.srv.ReadHeaderTimeout, tt.srv.ReadTimeout, tt.srv.WriteTimeout, got, tt.want)
		}
	}
}

// TestPlainHTTPOnTLSPort: a plain HTTP request on the HTTPS port gets net/http's answer, the
// same bytes, and the connection closed; anything else that is not TLS only the close.
func TestPlainHTTPOnTLSPort(t *testing.T) {
	_, n := tlsEdge(t, TLSConfig{Dev: true})
	for _, tt := range []struct{ sent, want string }{
		{"GET / HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"},
		{"OPTIONS * HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"},
		{"SSH-2.0-OpenSSH_9.2\r\n", ""},
	} {
		c, err := net.Dial("tcp", n.HTTPSAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, tt.sent)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%q: connection kept open", tt.sent)
		}
		if string(got) != tt.want {
			t.Errorf("%q: answered %q, want %q", tt.sent, got, tt.want)
		}
	}
}

// TestTLSClientsSeeTLS: over TLS, with HTTP/1.1 (guarded, not a *tls.Conn for net/http) and
// HTTP/2 (either server), from Go's client and curl's, everything that reads the request's
// TLS state says https: the origin's X-Forwarded-Proto, an origin Location rewritten for the
// client, and Alt-Svc offering HTTP/3.
func TestTLSClientsSeeTLS(t *testing.T) {
	curl, curlErr := exec.LookPath("curl")
	for _, h2server := range []string{HTTP2Fast, HTTP2Std} {
		t.Run("http2="+h2server, func(t *testing.T) {
			s, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) { c.HTTP2 = h2server })
			_, port, _ := net.SplitHostPort(n.HTTPSAddr())
			location := url.QueryEscape("http://" + s.originAddr + "/to")
			for _, tt := range []struct {
				client, wantProto string
			}{
				{"go http/1.1", "HTTP/1.1"},
				{"go h2", "HTTP/2.0"},
				{"curl --http1.1", "HTTP/1.1"},
				{"curl --http2", "HTTP/2.0"},
			} {
				t.Run(tt.client, func(t *testing.T) {
					path := "/tls-" + strings.NewReplacer(" ", "-", "/", "").Replace(tt.client)
					u := "https://" + testHost + ":" + port + path + "?cc=no-store&location=" + location
					var proto string
					var header http.Header
					switch tt.client {
					case "go http/1.1", "go h2":
						cfg := insecure(testHost)
						if tt.client == "go http/1.1" {
							cfg.NextProtos = []string{"http/1.1"}
						}
						tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: tt.client == "go h2",
							DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
								return (&net.Dialer{}).DialContext(ctx, network, n.HTTPSAddr())
							}}
						defer tr.CloseIdleConnections()
						r := getWith(t, &http.Client{Transport: tr}, u)
						if r.status != http.StatusOK {
							t.Fatalf("status %d", r.status)
						}
						proto, header = r.body[strings.LastIndexByte(r.body, '|')+1:], r.header
					default:
						if curlErr != nil {
							t.Skipf("no curl: %v", curlErr)
						}
						flag := strings.Fields(tt.client)[1]
						out, err := exec.Command(curl, "-sSk", flag, "--resolve", testHost+":"+port+":127.0.0.12",
							"-D", "-", "-o", os.DevNull, u).Output()
						if err != nil {
							t.Fatalf("curl: %v", err)
						}
						r, err := http.ReadResponse(bufio.NewReader(strings.NewReader(
							strings.Replace(string(out), "HTTP/2 ", "HTTP/2.0 ", 1))), nil)
						if err != nil {
							t.Fatalf("curl's output %q: %v", out, err)
						}
						if r.StatusCode != http.StatusOK {
							t.Fatalf("status %d", r.StatusCode)
						}
						proto, header = r.Proto, r.Header
					}
					if proto != tt.wantProto {
						t.Errorf("protocol %s, want %s", proto, tt.wantProto)
					}
					if got := s.origin.LastHeader(path).Get("X-Forwarded-Proto"); got != "https" {
						t.Errorf("origin's X-Forwarded-Proto = %q, want https", got)
					}
					if got, want := header.Get("Location"), "https://"+testHost+"/to"; got != want {
						t.Errorf("Location = %q, want %q", got, want)
					}
					if alt := header.Get("Alt-Svc"); !strings.HasPrefix(alt, `h3=":`) {
						t.Errorf("Alt-Svc = %q, want HTTP/3 offered", alt)
					}
				})
			}
		})
	}
}

// TestTLSSessionResumed: a client resumes its TLS session on a later connection, over
// HTTP/1.1 and HTTP/2, with one ticket key for every connection the listener handshakes.
func TestTLSSessionResumed(t *testing.T) {
	_, n := tlsEdge(t, TLSConfig{Dev: true})
	for _, alpn := range []string{"http/1.1", "h2"} {
		t.Run(alpn, func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(4)
			for i, want := range []bool{false, true} {
				cfg := insecure(testHost)
				cfg.NextProtos = []string{alpn}
				cfg.ClientSessionCache = cache
				c, err := tls.Dial("tcp", n.HTTPSAddr(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				if alpn == "h2" {
					io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
				} else {
					io.WriteString(c, "GET /p HTTP/1.1\r\nHost: "+testHost+"\r\nConnection: close\r\n\r\n")
				}
				// Reading takes in the session ticket TLS 1.3 sends after the handshake.
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				c.Read(make([]byte, 1))
				st := c.ConnectionState()
				c.Close()
				if st.NegotiatedProtocol != alpn || st.DidResume != want {
					t.Errorf("connection %d: protocol %q, resumed %v; want %q, %v", i, st.NegotiatedProtocol, st.DidResume, alpn, want)
				}
			}
		})
	}
}

// TestShutdownClosesHandshaking: a connection still handshaking when the node stops is
// closed then, without waiting for it, and the node's serving returns (no handshake outlives
// it: goleak, TestMain).
func TestShutdownClosesHandshaking(t *testing.T) {
	_, n, stop := tlsEdgeWith(t, TLSConfig{Dev: true}, nil)
	silent, err := net.Dial("tcp", n.HTTPSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Once the node counts the connection open, the listener has accepted it.
	wait.For(t, 10*time.Second, "the node counting the connection", func() bool { return n.openConns.Load() == 1 })
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	// net/http's Shutdown left a connection it had not read a byte of for 5 s (StateNew)
	// before it closed it; the handshake timeout here is 10 s.
	if elapsed := time.Since(start); elapsed > 4*time.Second {
		t.Errorf("stopping took %v, waiting for the handshake", elapsed)
	}
	silent.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("handshaking connection: read %v after the node stopped, want it closed", err)
	}
}

// TestWebSocketOverTLSBytesUntouched: a WebSocket switched over TLS is the tunnel's: an
// HTTP/1.0 head with Transfer-Encoding that the client sent right behind the upgrade's head
// (so read through the guard before the switch) and one sent after the 101 reach the origin
// unchanged. One sent only after the 101 is the case the guard's stop at the hijack
// (http1.StopOnHijack, from the TLS server's ConnState) decides: a head the guard marks early
// turns it off by itself. The tunnel is counted open over TLS as on the plain port.
func TestWebSocketOverTLSBytesUntouched(t *testing.T) {
	origin := startHTTP(t, "127.0.0.20", webSocketOrigin(func(conn net.Conn, brw *bufio.ReadWriter) {
		io.Copy(conn, brw) // echo
	}))
	_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) {
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + origin}}
	})
	tunnel := "POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	for _, tc := range []struct {
		name, early string
	}{
		{"early and after the 101", tunnel},
		{"after the 101 only", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := insecure(testHost)
			cfg.NextProtos = []string{"http/1.1"}
			c, err := tls.Dial("tcp", n.HTTPSAddr(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /up HTTP/1.1\r\nHost: "+testHost+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"+tc.early)
			br := bufio.NewReader(c)
			r, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade answered %d, want 101", r.StatusCode)
			}
			io.WriteString(c, tunnel)
			back := make([]byte, len(tc.early)+len(tunnel))
			if _, err := io.ReadFull(br, back); err != nil {
				t.Fatalf("read the echo: %v", err)
			}
			if want := tc.early + tunnel; string(back) != want {
				t.Errorf("echo %q, want %q", back, want)
			}
			if got, open := n.tunnels.count(), n.openConns.Load(); got != 1 || open != 1 {
				t.Errorf("with a tunnel open over TLS: %d tunnels, %d open connections counted, want 1 and 1", got, open)
			}
			c.Close()
			wait.For(t, 10*time.Second, "the tunnel to end", func() bool {
				return n.tunnels.count() == 0 && n.openConns.Load() == 0
			})
		})
	}
}
