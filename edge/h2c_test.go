package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
	"golang.org/x/net/http2"
	//lint:ignore SA1019 the h2c upgrade is what the test sends; net/http serves no h2c upgrade
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"
)

// h2cSeen is what an h2c origin received: each request's path, protocol and the fields that
// tell whether it came through the edge (Via) and asked for an upgrade.
type h2cSeen struct{ path, proto, via, upgrade, settings, connection string }

// startH2COrigin runs an origin behind golang.org/x/net/http2/h2c.NewHandler, which switches an
// HTTP/1.1 request asking for h2c (Upgrade: h2c, Connection: HTTP2-Settings) to HTTP/2 on its
// connection, as many Go services do.
func startH2COrigin(t *testing.T, ip string) (string, func() []h2cSeen) {
	t.Helper()
	var mu sync.Mutex
	var seen []h2cSeen
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, h2cSeen{r.URL.Path, r.Proto, r.Header.Get("Via"), r.Header.Get("Upgrade"),
			r.Header.Get("Http2-Settings"), r.Header.Get("Connection")})
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "origin "+r.URL.Path)
	})
	//lint:ignore SA1019 as above: the origin many Go services still run
	addr := startServer(t, ip, &http.Server{Handler: h2c.NewHandler(h, &http2.Server{}), ReadHeaderTimeout: 5 * time.Second})
	return addr, func() []h2cSeen {
		mu.Lock()
		defer mu.Unlock()
		s := seen
		seen = nil
		return s
	}
}

// h2cUpgrade is a client's request for the h2c upgrade (RFC 7540 §3.2), its HTTP2-Settings an
// empty SETTINGS payload.
const h2cUpgrade = "GET /h2c HTTP/1.1\r\nHost: " + testHost + "\r\nConnection: Upgrade, HTTP2-Settings\r\n" +
	"Upgrade: h2c\r\nHTTP2-Settings: \r\n\r\n"

// TestH2CUpgradeNotTunnelled: a client's h2c upgrade (h2c smuggling, Bishop Fox 2020) is
// served as the GET it is, without the upgrade, as nginx serves it: the origin, behind x/net's
// h2c handler, is asked without Upgrade and HTTP2-Settings, the answer is the edge's
// (Cache-Status) and cached, over HTTP/1.1 under either http1 mode and over TLS. Before, the
// edge passed it as an upgrade: past the cache (fwd=bypass, every time) and the bulkhead, with
// Upgrade: h2c. x/net's handler did not switch (ReverseProxy's Connection named Upgrade only, and
// the edge had dropped HTTP2-Settings, a Connection option), but an origin switching on Upgrade:
// h2c alone would have (TestOnlyWebSocketUpgradePassed): should one switch, the test speaks
// HTTP/2 on the tunnel and reports what the origin served.
func TestH2CUpgradeNotTunnelled(t *testing.T) {
	for _, mode := range []string{HTTP1Fast, HTTP1Std, "tls"} {
		t.Run(mode, func(t *testing.T) {
			originAddr, seen := startH2COrigin(t, "127.0.0.20")
			hosts := []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}
			var dial func() net.Conn
			if mode == "tls" {
				_, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) { c.Hosts = hosts })
				dial = func() net.Conn {
					cfg := insecure(testHost)
					cfg.NextProtos = []string{"http/1.1"}
					c, err := tls.Dial("tcp", n.HTTPSAddr(), cfg)
					if err != nil {
						t.Fatal(err)
					}
					return c
				}
			} else {
				n, _ := startEdge(t, listen(t, "127.0.0.21"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
					HTTP1: mode, Hosts: hosts})
				dial = func() net.Conn {
					c, err := net.Dial("tcp", n.Addr())
					if err != nil {
						t.Fatal(err)
					}
					return c
				}
			}
			for i, want := range []string{"fwd=miss", "hit"} {
				c := dial()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, h2cUpgrade)
				br := bufio.NewReader(c)
				r, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if r.StatusCode == http.StatusSwitchingProtocols {
					// The tunnel: a request in HTTP/2 reaches the origin, not through the edge.
					smuggled := h2cRequest(t, c, br, "/smuggled")
					t.Fatalf("h2c upgrade switched (101); on the tunnel GET /smuggled was answered %q, the origin saw %+v",
						smuggled, seen())
				}
				body, _ := io.ReadAll(r.Body)
				if r.StatusCode != http.StatusOK || string(body) != "origin /h2c" {
					t.Errorf("request %d: answered %d %q, want 200 %q", i, r.StatusCode, body, "origin /h2c")
				}
				if cs := r.Header.Get("Cache-Status"); !strings.Contains(cs, want) {
					t.Errorf("request %d: Cache-Status %q, want %s", i, cs, want)
				}
			}
			got := seen()
			if len(got) != 1 {
				t.Fatalf("origin saw %+v, want one request", got)
			}
			if s := got[0]; s.path != "/h2c" || s.proto != "HTTP/1.1" || s.via == "" || s.upgrade != "" || s.settings != "" ||
				strings.Contains(strings.ToLower(s.connection), "upgrade") {
				t.Errorf("origin saw %+v, want GET /h2c over HTTP/1.1 through the edge, no upgrade", s)
			}
		})
	}
}

// h2cRequest speaks HTTP/2 on a switched h2c connection (its preface, SETTINGS, then a GET
// for path on stream 3) and returns the body of stream 3's answer.
func h2cRequest(t *testing.T, c net.Conn, br *bufio.Reader, path string) string {
	t.Helper()
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, br)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", testHost}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var body []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return fmt.Sprintf("(read: %v) %s", err, body)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			if f.StreamID == 3 {
				body = append(body, f.Data()...)
				if f.StreamEnded() {
					return string(body)
				}
			}
		}
	}
}

// TestOnlyWebSocketUpgradePassed: of the upgrades a client asks for, the edge passes through
// WebSocket alone. An origin that switches to whatever protocol it is asked for switches only
// to websocket; any other upgrade reaches it as the plain request, without Upgrade. Of a list
// naming websocket among others, the origin is offered websocket only.
func TestOnlyWebSocketUpgradePassed(t *testing.T) {
	for _, mode := range []string{HTTP1Fast, HTTP1Std} {
		t.Run("http1="+mode, func(t *testing.T) {
			upgrades := make(chan string, 1)
			n, _ := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
				up := r.Header.Get("Upgrade")
				upgrades <- up + "|" + r.Header.Get("Connection")
				if up == "" {
					w.Header().Set("Cache-Control", "no-store")
					io.WriteString(w, "plain")
					return
				}
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer conn.Close()
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + up + "\r\nConnection: Upgrade\r\n\r\n")
				brw.Flush()
				io.Copy(conn, brw) // echo
			}, nil, func(c *Config) { c.HTTP1 = mode })
			for _, tt := range []struct {
				upgrade    string
				wantOrigin string // the origin's Upgrade|Connection
			}{
				{"h2c", "|"},
				{"TLS/1.0", "|"},
				{"foo/2", "|"},
				{"websocket", "websocket|Upgrade"},
				{"WebSocket", "WebSocket|Upgrade"},
				{"h2c, websocket", "websocket|Upgrade"},
			} {
				t.Run(tt.upgrade, func(t *testing.T) {
					c, err := net.Dial("tcp", n.Addr())
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					fmt.Fprintf(c, "GET /up HTTP/1.1\r\nHost: %s\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", testHost, tt.upgrade)
					br := bufio.NewReader(c)
					r, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					if got := <-upgrades; got != tt.wantOrigin {
						t.Errorf("origin saw Upgrade|Connection %q, want %q", got, tt.wantOrigin)
					}
					if tt.wantOrigin == "|" {
						body, _ := io.ReadAll(r.Body)
						if r.StatusCode != http.StatusOK || string(body) != "plain" || r.Header.Get("Cache-Status") == "" {
							t.Errorf("answered %d %q (Cache-Status %q), want the edge's 200 %q", r.StatusCode, body, r.Header.Get("Cache-Status"), "plain")
						}
						return
					}
					if r.StatusCode != http.StatusSwitchingProtocols {
						t.Fatalf("upgrade answered %d, want 101", r.StatusCode)
					}
					io.WriteString(c, "ping")
					back := make([]byte, 4)
					if _, err := io.ReadFull(br, back); err != nil || string(back) != "ping" {
						t.Errorf("echo %q (%v), want %q", back, err, "ping")
					}
				})
			}
		})
	}
}

// TestHTTP2SettingsNeverForwarded: HTTP2-Settings is connection-specific in every case (RFC
// 7540 §3.2.1: it governs the HTTP/2 connection an h2c upgrade would make of this hop's, and a
// client MUST name it in Connection so that it is not forwarded; RFC 9113 §3.1 deprecates the
// upgrade and the field with it). Sent without Upgrade, and not named in Connection, it went
// to the origin on a pass and on a miss's fill wherever the host forwards every field (the
// default) or names it: the edge dropped it only beside an Upgrade.
func TestHTTP2SettingsNeverForwarded(t *testing.T) {
	for _, mode := range []string{HTTP1Fast, HTTP1Std} {
		for _, fwd := range []struct {
			name    string
			forward wire.HeaderNames
		}{{"forward all", nil}, {"forward naming it", wire.HeaderNames{"HTTP2-Settings"}}} {
			t.Run(mode+"/"+fwd.name, func(t *testing.T) {
				n, c := echoEdge(t, echoOrigin, func(h *wire.HostConfig) { h.RequestHeaders.Forward = fwd.forward },
					func(c *Config) { c.HTTP1 = mode })
				for _, method := range []string{http.MethodGet, http.MethodPost} { // a miss's fill, a pass
					r, e := echoGet(t, c, n, method, "/settings?cc=max-age=60", "HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")
					if r.status != http.StatusOK || e.Method != method {
						t.Fatalf("%s: answered %d, the origin saw %q", method, r.status, e.Method)
					}
					if v, ok := e.Header["Http2-Settings"]; ok {
						t.Errorf("%s: the origin got HTTP2-Settings %q", method, v)
					}
				}
			})
		}
	}
}

// TestHTTP2SettingsNeverForwardedH2H3: HTTP2-Settings on a request over HTTP/2 (the edge's own
// server and net/http's) and HTTP/3 does not reach the origin either, on a miss's fill or a
// pass. Neither server refuses the field (it is none of the connection-specific fields RFC
// 9113 §8.2.2 names), and before, the edge dropped it only beside an Upgrade, which these
// protocols never carry.
func TestHTTP2SettingsNeverForwardedH2H3(t *testing.T) {
	const settings = "AAMAAABkAAQAoAAAAAIAAAAA"
	for _, proto := range []string{HTTP2Fast, HTTP2Std, "h3"} {
		t.Run(proto, func(t *testing.T) {
			h2server, wantMajor := proto, 2
			if proto == "h3" {
				h2server, wantMajor = HTTP2Fast, 3
			}
			s, n := tlsEdge(t, TLSConfig{Dev: true}, func(c *Config) { c.HTTP2 = h2server })
			h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure(testHost), ForceAttemptHTTP2: true}}
			defer h2.CloseIdleConnections()
			for _, method := range []string{http.MethodGet, http.MethodPost} { // a miss's fill, a pass
				path := "/settings-" + proto + "-" + strings.ToLower(method)
				var status, major int
				if proto == "h3" {
					_, r := h3Do(t, n, method, path, http.Header{"Http2-Settings": {settings}}, nil)
					io.Copy(io.Discard, r.Body)
					status, major = r.StatusCode, r.ProtoMajor
				} else {
					req, _ := http.NewRequest(method, "https://"+n.HTTPSAddr()+path, nil)
					req.Host = testHost
					req.Header.Set("HTTP2-Settings", settings)
					r, err := h2.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
					status, major = r.StatusCode, r.ProtoMajor
				}
				if status >= 300 || major != wantMajor || s.origin.Requests(path) != 1 {
					t.Fatalf("%s %s: answered %d over HTTP/%d (want HTTP/%d), the origin saw %d requests", method, path, status, major, wantMajor, s.origin.Requests(path))
				}
				if v, ok := s.origin.LastHeader(path)["Http2-Settings"]; ok {
					t.Errorf("%s: the origin got HTTP2-Settings %q", method, v)
				}
			}
		})
	}
}

// TestHTTP2SettingsNeverForwardedOddHeads: the fast path hands off every head carrying
// HTTP2-Settings, however it is spelt (serve skips keepWebSocketUpgrade for the requests it
// serves), so the field reaches no origin in any case, many times over or with a folded line
// before it, over either http1 mode.
func TestHTTP2SettingsNeverForwardedOddHeads(t *testing.T) {
	heads := []struct{ name, fields string }{
		{"odd case", "hTtP2-sEtTiNgS: AAMAAABk\r\n"},
		{"upper case", "HTTP2-SETTINGS: AAMAAABk\r\n"},
		{"twice", "Http2-Settings: AAMAAABk\r\nHttp2-Settings: AAQAoAAA\r\n"},
		{"after an obs-fold", "X-Folded: a\r\n b\r\nHTTP2-Settings: AAMAAABk\r\n"},
		{"empty", "HTTP2-Settings:\r\n"},
	}
	for _, mode := range []string{HTTP1Fast, HTTP1Std} {
		t.Run(mode, func(t *testing.T) {
			n, _ := echoEdge(t, echoOrigin, nil, func(c *Config) { c.HTTP1 = mode })
			for i, h := range heads {
				conn, err := net.Dial("tcp", n.Addr())
				if err != nil {
					t.Fatal(err)
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(conn, "GET /odd-%d HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n", i, testHost, h.fields)
				r, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatalf("%s: %v", h.name, err)
				}
				body, _ := io.ReadAll(r.Body)
				conn.Close()
				if r.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"Header"`)) {
					t.Fatalf("%s: answered %d %q", h.name, r.StatusCode, body)
				}
				if bytes.Contains(bytes.ToLower(body), []byte("http2-settings")) {
					t.Errorf("%s: the origin got HTTP2-Settings: %s", h.name, body)
				}
			}
		})
	}
}
