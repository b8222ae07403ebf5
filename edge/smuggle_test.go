package edge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// readAnswers reads every answer on c until the edge closes it (or 10 s pass, which fails the
// test): the interim ones are returned too, in order.
func readAnswers(t *testing.T, c net.Conn) (codes []int, final []*http.Response, closed bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("the edge kept the connection open: %v", err)
				return codes, final, false
			}
			return codes, final, true
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		codes = append(codes, r.StatusCode)
		if r.StatusCode >= 200 {
			final = append(final, r)
		}
	}
}

// TestChunkedPassWithEarlyHintsCloses: a request with Transfer-Encoding (here beside a
// Content-Length, which a front end may have framed it by) is answered with Connection: close
// and nothing pipelined behind its body is read (RFC 9112 §6.1, docs/edge.md), also when the
// origin sends a 103 Early Hints first. ReverseProxy clears the client's header map after
// each 1xx it forwards, which took the edge's Connection: close with it.
func TestChunkedPassWithEarlyHintsCloses(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	n, _ := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.Method == http.MethodPost {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
		}
		io.WriteString(w, "done")
	}, nil, nil)
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /form HTTP/1.1\r\nHost: "+testHost+"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5\r\nhello\r\n0\r\n\r\n"+
		"GET /smuggled HTTP/1.1\r\nHost: "+testHost+"\r\n\r\n")
	codes, final, closed := readAnswers(t, c)
	if len(final) != 1 || final[0].StatusCode != 200 || !final[0].Close || !closed {
		t.Errorf("answers %v (closed %v, first closes %v); want 103 then one 200 with Connection: close, then the end",
			codes, closed, len(final) > 0 && final[0].Close)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if strings.Contains(s, "/smuggled") {
			t.Errorf("origin saw the request pipelined behind a chunked body: %q", seen)
		}
	}
}

// startRawOrigin answers every request on every connection with answer, as written.
func startRawOrigin(t *testing.T, ip, answer string) string {
	t.Helper()
	return startScriptOrigin(t, ip, func(c net.Conn, _ *http.Request, _ int) bool {
		io.WriteString(c, answer)
		return false
	})
}

// TestOriginFieldNameWithSpaceNotForwarded: an origin's "Transfer-Encoding : chunked" (a space
// before the colon, which http.ReadResponse keeps under the name "Transfer-Encoding ") never
// reaches a client, on the miss or from cache: beside the edge's Content-Length, a client or
// proxy that trims the space would read the answer as chunked and the rest of the connection
// out of step (RFC 9112 §5.1: a proxy must remove such whitespace). net/http's server leaves
// such a field out; the edge's own server wrote it.
func TestOriginFieldNameWithSpaceNotForwarded(t *testing.T) {
	o := startRawOrigin(t, "127.0.0.52", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding : chunked\r\nX A: b\r\n"+
		"Cache-Control: max-age=60\r\nContent-Type: text/plain\r\n\r\nok")
	n, _ := startEdge(t, listen(t, "127.0.0.53"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	for _, want := range []string{"miss", "hit"} {
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /te HTTP/1.1\r\nHost: "+testHost+"\r\nConnection: close\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		head, body, _ := strings.Cut(string(b), "\r\n\r\n")
		if !strings.Contains(head, "fwd="+want) && !strings.Contains(head, "; "+want) || body != "ok" {
			t.Fatalf("%s: got %q", want, b)
		}
		for _, bad := range []string{"\r\nTransfer-Encoding ", "\r\nX A"} {
			if strings.Contains(head, bad) {
				t.Errorf("%s: the answer has the origin's invalid field %q: %q", want, bad[2:], head)
			}
		}
	}
}

// TestUpgradeRequestBodyBounded: a request that asks for a protocol upgrade is held to
// max_request_body_bytes like any other (413, the origin never asked); its body, if it has one,
// was streamed to the origin unbounded.
func TestUpgradeRequestBodyBounded(t *testing.T) {
	var mu sync.Mutex
	var seen []int
	n, _ := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, len(b))
		mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
	}, nil, func(c *Config) { c.MaxRequestBodyBytes = 100 })
	body := strings.Repeat("x", 5000)
	for name, framing := range map[string]string{
		"content-length": "Content-Length: 5000\r\n\r\n" + body,
		"chunked":        "Transfer-Encoding: chunked\r\n\r\n1388\r\n" + body + "\r\n0\r\n\r\n",
	} {
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "POST /up HTTP/1.1\r\nHost: "+testHost+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+framing)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: status %d, want 413", name, r.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 0 {
		t.Errorf("origin got bodies of %v bytes past a limit of 100", seen)
	}
}

// recordingEdge is an edge in front of an origin that answers every request uncacheably; seen
// returns the requests the origin has had ("METHOD /path") since the last call, and forgets them.
func recordingEdge(t *testing.T) (*Node, func() []string) {
	t.Helper()
	return recordingEdgeOn(t, listen(t, "127.0.0.21"))
}

// recordingEdgeOn is recordingEdge, serving HTTP on ln.
func recordingEdgeOn(t *testing.T, ln net.Listener) (*Node, func() []string) {
	t.Helper()
	return recordingEdgeMod(t, ln, nil)
}

// recordingEdgeMod is recordingEdgeOn with the edge's config changed by mod (if not nil).
func recordingEdgeMod(t *testing.T, ln net.Listener, mod func(*Config)) (*Node, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "done")
	}))
	cfg := Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}}
	if mod != nil {
		mod(&cfg)
	}
	n, _ := startEdge(t, ln, cfg)
	return n, func() []string {
		mu.Lock()
		defer mu.Unlock()
		s := seen
		seen = nil
		return s
	}
}

// readCountingListener hands the test each connection it accepts, as a readCountingConn.
type readCountingListener struct {
	net.Listener
	accepted chan *readCountingConn
}

func (l readCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &readCountingConn{Conn: c, more: make(chan struct{}, 1)}
	select {
	case l.accepted <- rc:
	default: // never block the edge: a test that misses the connection fails waiting for it
	}
	return rc, nil
}

// dial connects to the edge at addr and returns the client's end and the edge's, whose reads
// count; the client's end is closed when the test ends.
func (l readCountingListener) dial(t *testing.T, addr string) (net.Conn, *readCountingConn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case ec := <-l.accepted:
		return c, ec
	case <-time.After(10 * time.Second):
		t.Fatal("the edge has not accepted the connection")
		return nil, nil
	}
}

// sendPieces writes each piece once the edge has read every byte before it: the edge has
// judged what came before without the piece there to be seen.
func sendPieces(t *testing.T, c net.Conn, ec *readCountingConn, pieces []string) {
	t.Helper()
	sent := 0
	for _, p := range pieces {
		ec.waitRead(t, sent)
		io.WriteString(c, p)
		sent += len(p)
	}
}

// readCountingConn is a connection to the edge that counts what the edge has read of it, so
// that a test sending a request in pieces sends the next once the edge has read (and so
// judged) the ones before. Not a *net.TCPConn: the fast path reads it through Read, without
// raw I/O (internal/rawconn), and judges the same bytes the same way.
type readCountingConn struct {
	net.Conn
	read atomic.Int64
	more chan struct{} // a token after a read that returned bytes
}

func (c *readCountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Add(int64(n))
		select {
		case c.more <- struct{}{}:
		default:
		}
	}
	return n, err
}

// waitRead waits until the edge has read n bytes of c.
func (c *readCountingConn) waitRead(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for c.read.Load() < int64(n) {
		select {
		case <-c.more:
		case <-timeout:
			t.Fatalf("the edge read %d bytes of the request in 10 s, want %d", c.read.Load(), n)
		}
	}
}

// TestHTTP10TransferEncodingRefused: net/http drops Transfer-Encoding from an HTTP/1.0 request
// before the handler sees it and keeps a keep-alive connection, so a chunked body would be
// read as the next request. RFC 9112 §6.1 calls that framing faulty: where the fast path sees
// the head, the edge answers 400 and closes (as nginx does), and the origin sees neither
// request.
func TestHTTP10TransferEncodingRefused(t *testing.T) {
	n, seen := recordingEdge(t)
	for _, tc := range []struct {
		name, req  string
		wantCodes  []int
		wantOrigin int
	}{
		{"chunked", "POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"2d\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n\r\n0\r\n\r\n", []int{400}, 0},
		{"lower case, beside Content-Length", "POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\nContent-Length: 5\r\ntransfer-encoding: chunked\r\n\r\n" +
			"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", []int{400}, 0},
		{"GET, bare LF lines", "GET /page HTTP/1.0\nHost: " + testHost + "\nConnection: keep-alive\nTransfer-Encoding: chunked\n\n" +
			"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n", []int{400}, 0},
		// Without it, an HTTP/1.0 keep-alive request is answered, with Connection: close: no
		// HTTP/1.0 connection is kept (TestHTTP10TransferEncodingRefusedAnyHead).
		{"keep-alive without it", "GET /a HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\n\r\n" +
			"GET /b HTTP/1.0\r\nHost: " + testHost + "\r\n\r\n", []int{200}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen() // forget the cases before
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.req)
			codes, _, closed := readAnswers(t, c)
			if !slices.Equal(codes, tc.wantCodes) || !closed {
				t.Errorf("answers %v (closed %v), want %v and the end", codes, closed, tc.wantCodes)
			}
			if got := seen(); len(got) != tc.wantOrigin {
				t.Errorf("origin saw %q, want %d requests", got, tc.wantOrigin)
			}
		})
	}
}

// TestHTTP10TransferEncodingRefusedAnyHead: the refusal of an HTTP/1.0 request with
// Transfer-Encoding must not depend on how its head arrives: in pieces with bare-LF lines
// (handed over at the first LF), larger than the fast path's 4 KiB buffer, or behind a first
// request that net/http already serves on the connection.
//
// The fast path checks only the first request it hands over, and only when its head is in the
// 4 KiB buffer at that moment; every case below gets past that check. net/http refuses them
// (http1.GuardConn; TestHTTP10TransferEncodingRefusedEveryPath holds the 400), and no HTTP/1.0
// connection is kept (serve) besides: nothing after an HTTP/1.0 request is ever read.
func TestHTTP10TransferEncodingRefusedAnyHead(t *testing.T) {
	ln := readCountingListener{Listener: listen(t, "127.0.0.21"), accepted: make(chan *readCountingConn, 1)}
	n, seen := recordingEdgeOn(t, ln)
	// Framed by its Content-Length, the body "0\r\n\r\n" is the chunked body's end and what
	// follows, inside the body for a reader of the chunked framing, the next request.
	smuggled := "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + testHost + "\r\n\r\n"
	te := "POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled
	for _, tc := range []struct {
		name   string
		pieces []string
	}{
		{"bare LF, in two pieces", []string{"POST /form HTTP/1.0\nHost: " + testHost + "\n",
			"Connection: keep-alive\nContent-Length: 5\nTransfer-Encoding: chunked\n\n" + smuggled}},
		{"head past 4 KiB", []string{"POST /form HTTP/1.0\r\nHost: " + testHost + "\r\nX-Pad: " + strings.Repeat("a", 5000) +
			"\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled}},
		{"behind a handed-off request", []string{"GET /first HTTP/1.0\r\nHost: " + testHost + "\r\nConnection: keep-alive\r\n\r\n" + te}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen() // forget the cases before
			c, ec := ln.dial(t, n.Addr())
			sendPieces(t, c, ec, tc.pieces)
			codes, _, closed := readAnswers(t, c)
			if got := seen(); slices.Contains(got, "GET /smuggled") {
				t.Errorf("origin saw %q (answers %v, closed %v): the chunked body was read as a request", got, codes, closed)
			}
		})
	}
}

// TestHTTP10NotKeptOnHit: the close that keeps an HTTP/1.0 connection from reading a chunked
// body as a request holds on every path, a hit from cache and a collapsed miss included.
func TestHTTP10NotKeptOnHit(t *testing.T) {
	n, client := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "body")
	}, nil, nil)
	for _, path := range []string{"/miss", "/hit"} {
		if path == "/hit" {
			req, err := http.NewRequest(http.MethodGet, "http://"+n.Addr()+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = testHost
			res, err := client.Do(req) // stores it
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET "+path+" HTTP/1.0\r\nHost: "+testHost+"\r\nConnection: keep-alive\r\n\r\n"+
			"GET "+path+" HTTP/1.0\r\nHost: "+testHost+"\r\nConnection: keep-alive\r\n\r\n")
		codes, final, closed := readAnswers(t, c)
		c.Close()
		if len(final) != 1 || !final[0].Close || !closed {
			t.Errorf("%s: answers %v (closed %v), want one, with Connection: close, then the end", path, codes, closed)
			continue
		}
		if cs := final[0].Header.Get("Cache-Status"); path == "/hit" && !strings.Contains(cs, "hit") {
			t.Errorf("%s: Cache-Status %q, want a hit", path, cs)
		}
	}
}
