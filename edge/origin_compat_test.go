package edge

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// startScriptOrigin runs a raw TCP origin on ip until the test ends, for origins net/http
// would not be: answer writes the reply to each request read from a connection, as bytes (i
// counts the connection's requests from 0), and says whether to close the connection after.
func startScriptOrigin(t *testing.T, ip string, answer func(c net.Conn, r *http.Request, i int) (close bool)) string {
	t.Helper()
	ln := listen(t, ip)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, r.Body)
					if answer(c, r, i) {
						return
					}
				}
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
	return ln.Addr().String()
}

// rawExchange writes req on a new connection to addr and returns every byte read until the
// edge closes it.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read the answer to %q: %v (after %q)", req, err, out)
	}
	return string(out)
}

// TestNoInterimToHTTP10Client: an origin's 1xx (103 Early Hints) reaches HTTP/1.1 clients
// but never an HTTP/1.0 one, which does not know 1xx and would take it for the final answer
// (RFC 9110 §15.2: a server MUST NOT send a 1xx to an HTTP/1.0 client), on a fill as on a
// pass-through.
func TestNoInterimToHTTP10Client(t *testing.T) {
	o := startScriptOrigin(t, "127.0.0.60", func(c net.Conn, r *http.Request, _ int) bool {
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok")
		return false
	})
	n, _ := startEdge(t, listen(t, "127.0.0.61"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	for _, tt := range []struct {
		name, method, proto string
		want1xx             bool
	}{
		{"fill/1.0", "GET", "HTTP/1.0", false},
		{"pass/1.0", "POST", "HTTP/1.0", false},
		{"fill/1.1", "GET", "HTTP/1.1", true},
		{"pass/1.1", "POST", "HTTP/1.1", true},
	} {
		req := tt.method + " /hints HTTP/" + tt.proto[5:] + "\r\nHost: " + testHost + "\r\nConnection: close\r\n"
		if tt.method == "POST" {
			req += "Content-Length: 1\r\n\r\nx"
		} else {
			req += "\r\n"
		}
		out := rawExchange(t, n.Addr(), req)
		got1xx := strings.Contains(out, " 103 ")
		if got1xx != tt.want1xx || !strings.Contains(out, " 200 OK\r\n") || !strings.HasSuffix(out, "\r\n\r\nok") {
			t.Errorf("%s: got %q; want a 200 with body ok, 103 before it: %v", tt.name, out, tt.want1xx)
		}
	}
}

// TestHostileInformationalAndLargeHeads: an origin that floods 1xx interim answers (103 Early
// Hints) or sends a head larger than the client's 64 KiB gets its client a 502, as any other
// malformed answer, on a fill as on a pass-through; at most 10 of the 103s reach the client.
// The flood went on for as long as the origin sent it, every 103 forwarded, and a head could
// take 10 MiB. A 20 KiB Set-Cookie still passes.
func TestHostileInformationalAndLargeHeads(t *testing.T) {
	hint := "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
	final := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n"
	cookie := "Set-Cookie: s=" + strings.Repeat("c", 20<<10) + "\r\n"
	answers := map[string]string{
		"/flood":  strings.Repeat(hint, 1000) + final + "\r\nok",
		"/big":    "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 100<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		"/cookie": final + cookie + "\r\nok",
	}
	o := startScriptOrigin(t, "127.0.0.68", func(c net.Conn, r *http.Request, _ int) bool {
		_, err := io.WriteString(c, answers[r.URL.Path])
		return err != nil
	})
	n, _ := startEdge(t, listen(t, "127.0.0.69"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	for _, method := range []string{"GET", "POST"} {
		for _, tt := range []struct{ path, status string }{
			{"/flood", " 502 "},
			{"/big", " 502 "},
			{"/cookie", " 200 "},
		} {
			req := method + " " + tt.path + " HTTP/1.1\r\nHost: " + testHost + "\r\nConnection: close\r\n"
			if method == "POST" {
				req += "Content-Length: 1\r\n\r\nx"
			} else {
				req += "\r\n"
			}
			out := rawExchange(t, n.Addr(), req)
			hints := strings.Count(out, " 103 Early Hints\r\n")
			_, last, _ := strings.Cut(out[strings.LastIndex(out, "HTTP/1.1 "):], "HTTP/1.1")
			if !strings.HasPrefix(last, tt.status) || hints > 10 {
				t.Errorf("%s %s: %d 103s, then %.40q; want at most 10, then%s", method, tt.path, hints, last, tt.status)
			}
			if tt.path == "/cookie" && !strings.Contains(out, "\r\n"+cookie) {
				t.Errorf("%s %s: the 20 KiB Set-Cookie did not reach the client", method, tt.path)
			}
		}
	}
}

// TestHostileUpgradeHeads: the answer to a WebSocket upgrade is bounded as every other answer
// of an origin: at most 10 1xx heads, and its heads (1xx and 101) 64 KiB together. Past either
// the client gets the 1xx that fitted, then a 502, and the origin's connection is closed. The
// upgrade's transport had no bound on them once ReverseProxy's hook relayed the 1xx: an origin
// sent 200 Early Hints of 9 KiB (1.8 MiB) before its 101, and the edge relayed them all, then
// the 101. Within the bounds the upgrade works: the 103 and the 101 reach the client, frames go
// both ways, and the client's half-close reaches the origin.
func TestHostileUpgradeHeads(t *testing.T) {
	hints := func(n, size int) string {
		return strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: <"+strings.Repeat("l", size)+">\r\n\r\n", n)
	}
	const switched = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	pad := func(size int) string { return "X-Pad: " + strings.Repeat("p", size) + "\r\n" }
	answers := map[string]string{
		"/flood":     hints(200, 10) + switched + "\r\n",
		"/big-hints": hints(200, 9<<10) + switched + "\r\n", // 1.8 MiB of 1xx heads
		"/big-101":   switched + pad(70<<10) + "\r\n",       // one head of 70 KiB
		"/split":     hints(1, 40<<10) + switched + pad(40<<10) + "\r\n",
		"/ws":        hints(1, 10) + switched + "\r\n",
	}
	// How each path's connection ended for the origin: nil or a reset once the edge closed it
	// or ended its writes, a timeout if it kept it.
	closed := map[string]chan error{}
	for path := range answers {
		closed[path] = make(chan error, 1)
	}
	o := startScriptOrigin(t, "127.0.0.81", func(c net.Conn, r *http.Request, _ int) bool {
		c.SetDeadline(time.Now().Add(10 * time.Second)) // an edge that keeps it does not hold the test
		io.WriteString(c, answers[r.URL.Path])          // fails once an edge that gave up closes
		// Upgraded: an echo (the edge sends nothing before its client has the 101, so the
		// request's reader holds nothing more).
		_, err := io.Copy(c, c)
		closed[r.URL.Path] <- err
		return true
	})
	n, _ := startEdge(t, listen(t, "127.0.0.82"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	for _, tt := range []struct {
		path   string
		status int // what the client gets after the 1xx
		hints  int // at most this many 103s before it
	}{
		{"/flood", http.StatusBadGateway, 10},
		{"/big-hints", http.StatusBadGateway, 64 / 9}, // the heads of 9 KiB that fit in 64 KiB
		{"/big-101", http.StatusBadGateway, 0},
		{"/split", http.StatusBadGateway, 1},
		{"/ws", http.StatusSwitchingProtocols, 1},
	} {
		t.Run(tt.path[1:], func(t *testing.T) {
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", tt.path, testHost)
			br := bufio.NewReader(c)
			hints := 0
			var resp *http.Response
			for {
				if resp, err = http.ReadResponse(br, nil); err != nil {
					t.Fatalf("after %d 103s: %v", hints, err)
				}
				if resp.StatusCode != http.StatusEarlyHints {
					break
				}
				hints++
			}
			if resp.StatusCode != tt.status || hints > tt.hints || tt.status == http.StatusSwitchingProtocols && hints != tt.hints {
				t.Fatalf("%d 103s, then %s; want at most %d, then %d", hints, resp.Status, tt.hints, tt.status)
			}
			if tt.status == http.StatusSwitchingProtocols {
				// A masked text frame "hello" (RFC 6455 §5.2), echoed, then the client's end.
				frame := []byte{0x81, 0x85, 1, 2, 3, 4}
				for i, b := range []byte("hello") {
					frame = append(frame, b^byte(i%4+1))
				}
				c.Write(frame)
				back := make([]byte, len(frame))
				if _, err := io.ReadFull(br, back); err != nil || !bytes.Equal(back, frame) {
					t.Errorf("echo = %x, %v; want %x", back, err, frame)
				}
				c.(*net.TCPConn).CloseWrite()
				if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
					t.Errorf("after the client's half-close: %q, %v; want the origin's end", rest, err)
				}
			}
			if err := <-closed[tt.path]; errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the origin's connection was kept open: %v", err)
			}
		})
	}
}

// TestUnexpectedSwitchRefused: an origin's 101 to another protocol than the client's upgrade
// asked, or to a pass that asked none (a POST), gets the client a 502, and the origin's
// connection is closed and the pass's bulkhead slot freed. ReverseProxy refused both with its
// ErrorHandler but left the answer's body, the connection, open: for as long as the origin
// kept it, and the POST's slot for good.
func TestUnexpectedSwitchRefused(t *testing.T) {
	closed := make(chan error, 2)
	o := startScriptOrigin(t, "127.0.4.10", func(c net.Conn, _ *http.Request, _ int) bool {
		c.SetDeadline(time.Now().Add(10 * time.Second)) // an edge that keeps it does not hold the test
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
		_, err := io.Copy(io.Discard, c) // to the edge's end
		closed <- err
		return true
	})
	n, _ := startEdge(t, listen(t, "127.0.4.11"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	for _, tt := range []struct{ name, request string }{
		{"websocket", "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"},
		{"post", "POST /p HTTP/1.1\r\nHost: %s\r\nContent-Length: 2\r\n\r\nhi"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, tt.request, testHost)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("answered %s, want 502", resp.Status)
			}
			for _, st := range n.fill.upstreamStats() {
				if st.InFlight != 0 {
					t.Errorf("upstream %s: %d bulkhead slots taken once the client had its answer, want 0", st.Name, st.InFlight)
				}
			}
			if err := <-closed; errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the origin's connection was kept open: %v", err)
			}
		})
	}
}

// TestPeerRelaysLargeHead: an origin head near the 64 KiB bound, which the owner of the key
// takes, reaches the other nodes through it: a node's answer is the origin's head with what
// the nodes on the way add (Via, Cache-Status, Age: a few hundred bytes a hop), and a peer's
// client leaves room for that. Found in review: a peer's head had the origin's bound, so such
// an answer failed at the asking node, counted against the healthy owner's breaker, and the
// asking node fetched the origin itself (a fill per node rather than one).
func TestPeerRelaysLargeHead(t *testing.T) {
	pad := strings.Repeat("p", 65300) // the origin's whole head is some 65,380 bytes: within 64 KiB
	o := startScriptOrigin(t, "127.0.0.70", func(c net.Conn, r *http.Request, _ int) bool {
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=600\r\nX-Pad: "+pad+"\r\n\r\nok")
		return err != nil
	})
	lns := []net.Listener{listen(t, "127.0.9.10"), listen(t, "127.0.9.11")}
	peers := []Peer{{ID: "n0", Addr: lns[0].Addr().String()}, {ID: "n1", Addr: lns[1].Addr().String()}}
	var nodes []*Node
	for i, ln := range lns {
		n, _ := startEdge(t, ln, Config{PoP: "p0", Node: fmt.Sprintf("n%d", i), Logger: testLogger(t), Peers: peers,
			PeerKey: testPeerKey, Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
		nodes = append(nodes, n)
	}
	path := "/k0"
	for k := 1; rendezvous(nodes[0].tiers.Load().peers, nodes[0].key(path))[0].ID != "n1"; k++ {
		path = fmt.Sprintf("/k%d", k) // a key n1 owns, which n0 fills through it
	}
	out := rawExchange(t, nodes[0].Addr(), "GET "+path+" HTTP/1.1\r\nHost: "+testHost+"\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.Contains(out, "\r\nX-Pad: "+pad+"\r\n") {
		t.Errorf("GET %s from n0: %.60q; want 200 with the origin's X-Pad", path, out)
	}
	for _, s := range nodes[0].upstreamStats() {
		if s.Failures != 0 {
			t.Errorf("n0's %s: %d failures, want none", s.Name, s.Failures)
		}
	}
	if got := counterValue(t, nodes[0], "meridian_edge_origin_fetches_total"); got != 0 {
		t.Errorf("n0 fetched the origin %v times; want none, the owner n1 filled it", got)
	}
}

// TestRevalidationSetCookieNotShared: a 304 that sets a cookie (an origin that starts a
// session on every answer) refreshes the copy for the client whose request revalidated it,
// but the copy with that cookie is not stored: as for a 200 with Set-Cookie, one user's cookie
// must never be handed to another. It was, on every hit until the copy went stale again.
func TestRevalidationSetCookieNotShared(t *testing.T) {
	var mu sync.Mutex
	sessions := 0
	o := startScriptOrigin(t, "127.0.0.62", func(c net.Conn, r *http.Request, _ int) bool {
		if r.Header.Get("If-None-Match") == "" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nETag: \"a\"\r\nCache-Control: max-age=0\r\nContent-Length: 2\r\n\r\nv1")
			return false
		}
		mu.Lock()
		sessions++
		s := sessions
		mu.Unlock()
		io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nCache-Control: max-age=60\r\n"+
			"Set-Cookie: session="+string(rune('0'+s))+"\r\n\r\n")
		return false
	})
	n, _ := startEdge(t, listen(t, "127.0.0.63"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/s"); r.status != 200 || r.body != "v1" || len(r.header["Set-Cookie"]) != 0 {
		t.Fatalf("miss: %d %q %v", r.status, r.body, r.header)
	}
	// The revalidating client gets its own cookie.
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/s"); r.status != 200 || r.body != "v1" || r.header.Get("Set-Cookie") != "session=1" {
		t.Fatalf("revalidated: %d %q, Set-Cookie %q; want v1 with session=1", r.status, r.body, r.header["Set-Cookie"])
	}
	for i := range 2 {
		r := do(t, c, http.MethodGet, n.Addr(), testHost, "/s")
		if r.status != 200 || r.body != "v1" || r.header.Get("Set-Cookie") == "session=1" {
			t.Errorf("later request %d: %d %q, Set-Cookie %q, Cache-Status %q: another client's cookie",
				i, r.status, r.body, r.header["Set-Cookie"], r.header.Get("Cache-Status"))
		}
	}
}

// TestNoSniffedContentType: an answer the origin sent without Content-Type reaches the client
// without one, whichever way it is delivered, as nginx and Varnish pass it. The edge's own
// server sniffed one (net/http's DetectContentType) for a plain GET, while the same object
// asked for with Range or a conditional went without: an origin that leaves the type out of
// uploads it serves with nosniff had them served as text/html.
func TestNoSniffedContentType(t *testing.T) {
	page := "<html><script>alert(1)</script></html>"
	big := page + strings.Repeat(" ", 100<<10)
	o := startScriptOrigin(t, "127.0.0.64", func(c net.Conn, r *http.Request, _ int) bool {
		body, cc := page, "max-age=60"
		switch r.URL.Path {
		case "/big":
			body = big
		case "/nostore":
			cc = "no-store"
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nCache-Control: "+cc+"\r\nX-Content-Type-Options: nosniff\r\n"+
			"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		return false
	})
	n, _ := startEdge(t, listen(t, "127.0.0.65"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	for _, tt := range []struct{ name, method, path, body string }{
		{"miss", "GET", "/small", page},
		{"hit", "GET", "/small", page},
		{"head", "HEAD", "/small", ""},
		{"streaming miss", "GET", "/big", big},
		{"not stored", "GET", "/nostore", page},
		{"pass", "POST", "/small", page},
	} {
		r := do(t, c, tt.method, n.Addr(), testHost, tt.path)
		if r.status != 200 || r.body != tt.body {
			t.Errorf("%s: %d, %d bytes", tt.name, r.status, len(r.body))
		}
		if ct, ok := r.header["Content-Type"]; ok {
			t.Errorf("%s: Content-Type %q, the origin sent none", tt.name, ct)
		}
	}
}

// TestForeignOriginFraming: answers framed as origins other than net/http frame them are
// stored and served whole, and one cut short is never stored: the second request for it goes
// to the origin again. Nor is one framed faultily: an HTTP/1.0 answer with Transfer-Encoding
// (RFC 9112 §6.1), whose chunk sizes net/http would read as its body, stored as the object. The origin closes or keeps its connection as each answer says, and
// closes after the second request on a kept one (/gone): a kept-alive connection it closed is
// sent on again on a new one, which the next miss must not see as an error.
func TestForeignOriginFraming(t *testing.T) {
	big := strings.Repeat("b", 100<<10)
	answers := map[string]string{
		"/http10":        "HTTP/1.0 200 OK\r\nCache-Control: max-age=60\r\n\r\nhello", // close-delimited
		"/http10-big":    "HTTP/1.0 200 OK\r\nCache-Control: max-age=60\r\n\r\n" + big,
		"/http10-ka":     "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nhello",
		"/trailers":      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nCache-Control: max-age=60\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"/chunk-ext":     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n3;a=b\r\nhel\r\n2;c\r\nlo\r\n0\r\n\r\n",
		"/te-and-cl":     "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"/interim":       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nhello",
		"/short":         "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nCache-Control: max-age=60\r\n\r\nhello",
		"/short-big":     "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\nCache-Control: max-age=60\r\n\r\n" + big,
		"/short-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n19000\r\n" + big + "\r\n",
		"/http10-te":     "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"/http10-te-cl":  "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 15\r\ntransfer-encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	}
	closes := map[string]bool{"/http10": true, "/http10-big": true, "/short": true, "/short-big": true, "/short-chunked": true, "/http10-te": true}
	var mu sync.Mutex
	asked := map[string]int{}
	o := startScriptOrigin(t, "127.0.0.66", func(c net.Conn, r *http.Request, i int) bool {
		if i > 0 && r.URL.Path == "/gone" {
			return true // the keep-alive race: the request is read, then the connection closed
		}
		mu.Lock()
		asked[r.URL.Path]++
		mu.Unlock()
		a, ok := answers[r.URL.Path]
		if !ok {
			a = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: no-store\r\n\r\nhello"
		}
		io.WriteString(c, a)
		return closes[r.URL.Path]
	})
	n, _ := startEdge(t, listen(t, "127.0.0.67"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	for _, tt := range []struct {
		path, body string
		whole      bool // served whole, and stored
	}{
		{"/http10", "hello", true},
		{"/http10-big", big, true},
		{"/http10-ka", "hello", true},
		{"/trailers", "hello", true},
		{"/chunk-ext", "hello", true},
		{"/te-and-cl", "hello", true},
		{"/interim", "hello", true},
		{"/short", "", false},
		{"/short-big", "", false},
		{"/short-chunked", "", false},
		{"/http10-te", "", false},
		{"/http10-te-cl", "", false},
	} {
		for i := range 2 {
			r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, tt.path)
			switch {
			case tt.whole && (err != nil || r.status != 200 || r.body != tt.body):
				t.Errorf("%s #%d: %v, %d, %d bytes; want 200 with %d", tt.path, i, err, r.status, len(r.body), len(tt.body))
			case !tt.whole && err == nil && r.status == 200:
				t.Errorf("%s #%d: a whole 200 of %d bytes from an answer cut short or framed faultily (%s)", tt.path, i, len(r.body), r.header.Get("Cache-Status"))
			}
		}
		mu.Lock()
		got := asked[tt.path]
		mu.Unlock()
		if want := map[bool]int{true: 1, false: 2}[tt.whole]; got != want {
			t.Errorf("%s: the origin was asked %d times, want %d", tt.path, got, want)
		}
	}
	for i := range 3 {
		if r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/gone?"+strconv.Itoa(i)); err != nil || r.status != 200 || r.body != "hello" {
			t.Errorf("/gone #%d: %v, %d %q", i, err, r.status, r.body)
		}
	}
}
