package edge

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHTTP10TransferEncodingRefusedEveryPath: an HTTP/1.0 request with Transfer-Encoding is
// answered 400 and its connection closed however it reaches the edge's plain HTTP port, under
// the fast path (http1: fast) and without it (http1: std): net/http, which serves every
// connection the fast path hands over, drops Transfer-Encoding from an HTTP/1.0 request and
// frames its body by Content-Length (golang issue 12785), so the bytes past that body (here a
// request) would be read as the next request, or the request served framed by them. Each case
// is one the fast path's own check on the head it hands over does not see: a head past its
// 4 KiB buffer, a request behind one net/http already serves, a bare-LF head handed over
// before its Transfer-Encoding line came, and OPTIONS *, which net/http answered itself,
// keeping the connection.
func TestHTTP10TransferEncodingRefusedEveryPath(t *testing.T) {
	for _, mode := range []string{HTTP1Fast, HTTP1Std} {
		t.Run("http1="+mode, func(t *testing.T) { testHTTP10TransferEncodingRefused(t, mode) })
	}
}

func testHTTP10TransferEncodingRefused(t *testing.T, mode string) {
	ln := readCountingListener{Listener: listen(t, "127.0.0.21"), accepted: make(chan *readCountingConn, 1)}
	n, seen := recordingEdgeMod(t, ln, func(c *Config) { c.HTTP1 = mode })
	// Framed by its Content-Length, the body "0\r\n\r\n" is the chunked body's end and what
	// follows, inside the body for a reader of the chunked framing, the next request.
	smuggled := "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n"
	te := "POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled
	post := "POST /first HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 2\r\n\r\nab"
	for _, tc := range []struct {
		name       string
		pieces     []string
		wantCodes  []int
		wantOrigin []string
	}{
		{"head past 4 KiB", []string{"POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nX-Pad: " + strings.Repeat("a", 5000) +
			"\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled}, []int{400}, nil},
		{"behind a POST", []string{post + te}, []int{200, 400}, []string{"POST /first"}},
		{"GET behind a POST, lower case", []string{post + "GET /page HTTP/1.0\r\nHost: " + testHost +
			"\r\nConnection: keep-alive\r\nContent-Length: 5\r\ntransfer-encoding: chunked\r\n\r\n" + smuggled}, []int{200, 400}, []string{"POST /first"}},
		// Content-Length values net/http takes, which the guard took for refused and stopped at.
		{"behind a zero-led Content-Length", []string{"POST /first HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 00000000000000000002\r\n\r\nab" + te},
			[]int{200, 400}, []string{"POST /first"}},
		{"behind a folded Content-Length", []string{"POST /first HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length:\r\n 2\r\n\r\nab" + te},
			[]int{200, 400}, []string{"POST /first"}},
		// The guard stops following at a CONNECT (a tunnel's bytes may follow): the edge's 405
		// ends the connection, so nothing behind it is read.
		{"behind a CONNECT", []string{"CONNECT " + testHost + ":443 HTTP/1.1\r\nHost: " + testHost + ":443\r\n\r\n" + te},
			[]int{405}, nil},
		{"behind a POST and its CRLF", []string{post + "\r\n" + te}, []int{200, 400}, []string{"POST /first"}},
		{"bare LF, in two pieces", []string{"POST /form HTTP/1.0\nHost: " + testHost + "\n",
			"Connection: keep-alive\nContent-Length: 5\nTransfer-Encoding: chunked\n\n" + smuggled}, []int{400}, nil},
		{"bare LF, the field name in two pieces", []string{"POST /form HTTP/1.0\nHost: " + testHost + "\nConnection: keep-alive\nContent-Length: 5\nTransfer-",
			"Encoding: chunked\n\n" + smuggled}, []int{400}, nil},
		{"OPTIONS *", []string{"OPTIONS * HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled},
			[]int{400}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen() // forget the cases before
			c, ec := ln.dial(t, n.Addr())
			sendPieces(t, c, ec, tc.pieces)
			codes, _, closed := readAnswers(t, c)
			if !slices.Equal(codes, tc.wantCodes) || !closed {
				t.Errorf("answers %v (closed %v), want %v and the end", codes, closed, tc.wantCodes)
			}
			if got := seen(); !slices.Equal(got, tc.wantOrigin) {
				t.Errorf("origin saw %q, want %q", got, tc.wantOrigin)
			}
		})
	}
}

// TestHTTP10TransferEncodingOverTLS: over TLS, as on the plain port, an HTTP/1.0 request
// with Transfer-Encoding is answered 400 and its connection closed, and the origin sees
// nothing of it (RFC 9112 §6.1; nginx answers 400 too): net/http, which serves HTTP/1.1 over
// TLS, would frame it by its Content-Length. The edge's TLS listener hands net/http such a
// connection read through the guard (tlsListener). Each case is one the guard must follow:
// the first request, one behind a request net/http served, a head in two TLS records, and
// OPTIONS *.
func TestHTTP10TransferEncodingOverTLS(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	smuggled := "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n"
	te := func(target string) string {
		return "POST " + target + " HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled
	}
	post := "POST /first HTTP/1.1\r\nHost: " + testHost + "\r\nContent-Length: 2\r\n\r\nab"
	for _, tc := range []struct {
		name      string
		pieces    []string
		wantCodes []int
		wantPaths map[string]int64 // origin requests per path
	}{
		{"first request", []string{te("/form")}, []int{400}, map[string]int64{"/form": 0, "/smuggled": 0}},
		{"behind a POST", []string{post + te("/form2")}, []int{204, 400}, map[string]int64{"/first": 1, "/form2": 0, "/smuggled": 0}},
		{"head in two records", []string{"POST /form3 HTTP/1.0\r\nHost: " + testHost + "\r\nTransfer-", "Encoding: chunked\r\nContent-Length: 5\r\n\r\n" + smuggled},
			[]int{400}, map[string]int64{"/form3": 0, "/smuggled": 0}},
		{"OPTIONS *", []string{strings.Replace(te("*"), "POST", "OPTIONS", 1)}, []int{400}, map[string]int64{"/smuggled": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.origin.ResetStats()
			cfg := insecure(testHost)
			cfg.NextProtos = []string{"http/1.1"}
			c, err := tls.Dial("tcp", n.HTTPSAddr(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, p := range tc.pieces {
				if _, err := io.WriteString(c, p); err != nil { // a TLS record each
					t.Fatal(err)
				}
			}
			codes, _, closed := readAnswers(t, c)
			if !slices.Equal(codes, tc.wantCodes) || !closed {
				t.Errorf("answers %v (closed %v), want %v and the end", codes, closed, tc.wantCodes)
			}
			for path, want := range tc.wantPaths {
				if got := s.origin.Requests(path); got != want {
					t.Errorf("origin requests for %s = %d, want %d", path, got, want)
				}
			}
		})
	}
}

// TestHTTP10TransferEncodingRefusedAfterUnswitchedUpgrade: a request with an Upgrade field
// that is not switched (the origin answers 200, or no Connection: upgrade names it) leaves the
// connection HTTP/1 and kept, as nginx keeps it; an HTTP/1.0 request with Transfer-Encoding
// behind it is answered 400 and the connection closed, as everywhere else, whether it came
// with the upgrade's head (read ahead by net/http) or after its answer. The connection stays
// kept for a request that is not refused ("then a GET"): curl --http2 on an http URL asks
// for h2c on every request of its connection.
func TestHTTP10TransferEncodingRefusedAfterUnswitchedUpgrade(t *testing.T) {
	for _, mode := range []string{HTTP1Fast, HTTP1Std} {
		t.Run("http1="+mode, func(t *testing.T) {
			ln := readCountingListener{Listener: listen(t, "127.0.0.21"), accepted: make(chan *readCountingConn, 1)}
			n, seen := recordingEdgeMod(t, ln, func(c *Config) { c.HTTP1 = mode })
			smuggled := "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n"
			te := "POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled
			ws := "GET /ws HTTP/1.1\r\nHost: " + testHost + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
			h2c := "GET /h2c HTTP/1.1\r\nHost: " + testHost + "\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
			bare := "GET /bare HTTP/1.1\r\nHost: " + testHost + "\r\nUpgrade: websocket\r\n\r\n"
			for _, tc := range []struct {
				name       string
				pieces     []string
				wantCodes  []int
				wantOrigin []string
			}{
				{"websocket, together", []string{ws + te}, []int{200, 400}, []string{"GET /ws"}},
				{"websocket, after its answer", []string{ws, te}, []int{200, 400}, []string{"GET /ws"}},
				{"h2c, together", []string{h2c + te}, []int{200, 400}, []string{"GET /h2c"}},
				{"h2c, after its answer", []string{h2c, te}, []int{200, 400}, []string{"GET /h2c"}},
				{"no Connection: upgrade", []string{bare + te}, []int{200, 400}, []string{"GET /bare"}},
				{"then a GET", []string{h2c, h2c, "GET /last HTTP/1.1\r\nHost: " + testHost + "\r\nConnection: close\r\n\r\n"},
					[]int{200, 200, 200}, []string{"GET /h2c", "GET /h2c", "GET /last"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					seen()
					c, ec := ln.dial(t, n.Addr())
					// A piece goes once the answer before it is read: the edge has answered the
					// upgrade (not switched) before the next request comes.
					br := bufio.NewReader(c)
					c.SetReadDeadline(time.Now().Add(10 * time.Second))
					var codes []int
					sent := 0
					for i, p := range tc.pieces {
						ec.waitRead(t, sent)
						io.WriteString(c, p)
						sent += len(p)
						if i == len(tc.pieces)-1 {
							break
						}
						r, err := http.ReadResponse(br, nil)
						if err != nil {
							t.Fatalf("answer %d: %v", i, err)
						}
						io.Copy(io.Discard, r.Body)
						codes = append(codes, r.StatusCode)
					}
					rest, _, closed := readAnswers(t, readerConn{c, br})
					codes = append(codes, rest...)
					if !slices.Equal(codes, tc.wantCodes) || !closed {
						t.Errorf("answers %v (closed %v), want %v and the end", codes, closed, tc.wantCodes)
					}
					if got := seen(); !slices.Equal(got, tc.wantOrigin) {
						t.Errorf("origin saw %q, want %q", got, tc.wantOrigin)
					}
				})
			}
		})
	}
}

// readerConn is c read through br, which holds what was read of it already.
type readerConn struct {
	net.Conn
	br *bufio.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// TestSwitchedUpgradeBytesUntouched: once an upgrade is switched (101), the bytes are the
// tunnel's: an HTTP/1.0 head with Transfer-Encoding sent in it reaches the origin unchanged,
// with the fast path and without.
func TestSwitchedUpgradeBytesUntouched(t *testing.T) {
	for _, mode := range []string{HTTP1Fast, HTTP1Std} {
		t.Run("http1="+mode, func(t *testing.T) {
			n, _ := echoEdge(t, webSocketOrigin(func(conn net.Conn, brw *bufio.ReadWriter) {
				io.Copy(conn, brw) // echo
			}), nil, func(c *Config) { c.HTTP1 = mode })
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /up HTTP/1.1\r\nHost: "+testHost+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			br := bufio.NewReader(c)
			r, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade answered %d, want 101", r.StatusCode)
			}
			tunnel := "POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
			io.WriteString(c, tunnel)
			back := make([]byte, len(tunnel))
			if _, err := io.ReadFull(br, back); err != nil {
				t.Fatalf("read the echo: %v", err)
			}
			if string(back) != tunnel {
				t.Errorf("echo %q, want %q", back, tunnel)
			}
		})
	}
}
