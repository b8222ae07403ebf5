package fetch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hint is one 103 Early Hints head as origins send them.
const hint = "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"

// doHostile sends a GET (the caller-goroutine client, h1.go) or a POST with a body (net/http's
// Transport) through u, counting the 1xx heads a Got1xxResponse hook sees if hook is set.
func doHostile(t *testing.T, u *Upstream, method, url string, hook bool) (resp *http.Response, body string, n1xx int, err error) {
	t.Helper()
	ctx := context.Background()
	var seen atomic.Int64 // net/http's Transport may call the hook after Do returned (a timeout)
	if hook {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
			seen.Add(1)
			return nil
		}})
	}
	var rb io.Reader
	if method == http.MethodPost {
		rb = strings.NewReader("x")
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rb)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = u.Do(req)
	if err != nil {
		return nil, "", int(seen.Load()), err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), int(seen.Load()), err
}

// TestHostileHeads: an origin's answer may carry at most max1xx interim heads, and heads (1xx
// and final) of at most DefaultMaxHeadBytes together; past either the exchange fails as a
// malformed answer does (a breaker failure; a 502 at the edge). Without the bounds, a 1xx
// flood was read for as long as the origin sent it (each 1xx reset the head limit when a hook
// took it, as the edge's forwarding does), and a head could take 10 MiB. Real heads pass: a
// 20 KiB Set-Cookie, max1xx hints. Both clients: h1.go for a GET, net/http's Transport for a
// POST.
func TestHostileHeads(t *testing.T) {
	cookie := "Set-Cookie: s=" + strings.Repeat("c", 20<<10) + "\r\n"
	answers := map[string]string{
		"/flood":    strings.Repeat(hint, 1000) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/hints":    strings.Repeat(hint, max1xx) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/big":      "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 100<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		"/big-1xx":  "HTTP/1.1 103 Early Hints\r\nLink: <" + strings.Repeat("l", 100<<10) + ">\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/cookie":   "HTTP/1.1 200 OK\r\n" + cookie + "Content-Length: 2\r\n\r\nok",
		"/hint-sum": strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: <"+strings.Repeat("l", 10<<10)+">\r\n\r\n", 3) + "HTTP/1.1 200 OK\r\n" + cookie + "Content-Length: 2\r\n\r\nok",
	}
	srv := answering(t, "127.0.0.111", answers)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		for _, tt := range []struct {
			path string
			hook bool
			want error // nil: a 200 with body "ok"
			n1xx int   // the 1xx heads the hook sees
		}{
			{"/flood", true, errTooMany1xx, max1xx},
			{"/flood", false, errTooMany1xx, 0},
			{"/hints", true, nil, max1xx},
			{"/hints", false, nil, 0},
			{"/big", true, errHeadTooLarge, 0},
			{"/big-1xx", true, errHeadTooLarge, 0},
			{"/big-1xx", false, errHeadTooLarge, 0},
			{"/cookie", true, nil, 0},
			{"/hint-sum", true, nil, 3},  // 50 KiB of heads share the limit...
			{"/hint-sum", false, nil, 0}, // ... whoever takes the 1xx
		} {
			t.Run(fmt.Sprintf("%s%s/hook=%v", method, tt.path, tt.hook), func(t *testing.T) {
				u := New(Config{Name: "hostile", ResponseHeaderTimeout: 5 * time.Second})
				t.Cleanup(u.Close)
				resp, body, n1xx, err := doHostile(t, u, method, "http://"+srv.addr+tt.path, tt.hook)
				switch {
				case tt.want == nil && (err != nil || resp.StatusCode != 200 || body != "ok"):
					t.Fatalf("%s %s: %v, %v %q; want 200 ok", method, tt.path, err, resp, body)
				case tt.want != nil && !errors.Is(err, tt.want):
					t.Fatalf("%s %s: %v; want %v", method, tt.path, err, tt.want)
				}
				if tt.path == "/cookie" && len(resp.Header.Get("Set-Cookie")) != 2+20<<10 {
					t.Errorf("Set-Cookie of %d bytes, want %d", len(resp.Header.Get("Set-Cookie")), 2+20<<10)
				}
				if n1xx != tt.n1xx {
					t.Errorf("the hook saw %d 1xx heads, want %d", n1xx, tt.n1xx)
				}
				// A failure of an upstream that was reached: FailureRatio counts it, not
				// ConsecutiveFailures (inARow), as other malformed answers.
				if st := u.Stats(); tt.want != nil && (st.Failures != 1 || inARow(err)) {
					t.Errorf("Stats() = %+v, in a row %v; want the malformed answer counted as 1 failure, not in a row", st, inARow(err))
				}
			})
		}
	}
}

// TestInformationalWithinHeaderTimeout: interim heads extend no deadline: an origin that sends
// a 103 every half ResponseHeaderTimeout, and never its final answer, is given up on at the
// response header timeout, as one that sends nothing is. The 1xx bound alone would have ended
// it only after max1xx half-timeouts.
func TestInformationalWithinHeaderTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	srv := startRaw(t, "127.0.0.112", func(_ int64, c net.Conn, br *bufio.Reader) {
		req, ok := readRequest(br)
		if !ok {
			return
		}
		io.Copy(io.Discard, req.Body)
		tick := time.NewTicker(timeout / 2) // the origin's pace, not a wait for the client
		defer tick.Stop()
		for {
			if _, err := io.WriteString(c, hint); err != nil {
				return // the client gave up; the test's end closes c too
			}
			<-tick.C
		}
	})
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			u := New(Config{Name: "dripping", ResponseHeaderTimeout: timeout})
			t.Cleanup(u.Close)
			_, _, n1xx, err := doHostile(t, u, method, "http://"+srv.addr+"/", true)
			// Both clients word it so (errHeaderTimeout is net/http's words).
			if err == nil || !strings.Contains(err.Error(), "timeout awaiting response headers") {
				t.Fatalf("%s with a 103 every %v: %v (after %d 1xx); want the response header timeout", method, timeout/2, err, n1xx)
			}
			if n1xx >= max1xx {
				t.Errorf("the hook saw %d 1xx heads before the timeout, want fewer than %d", n1xx, max1xx)
			}
		})
	}
}

// TestCallerTraceKept: the trace that bounds net/http's 1xx heads (traceExchange) takes the
// place of a caller's that has a Got1xxResponse; each of the caller's hooks still runs once
// per event.
func TestCallerTraceKept(t *testing.T) {
	srv := serve(t, "127.0.0.113", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	}))
	u := New(Config{Name: "traced"})
	t.Cleanup(u.Close)
	var hints, conns, firstByte, wrote atomic.Int64
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints && h.Get("Link") != "" {
				hints.Add(1)
			}
			return nil
		},
		GotConn:              func(httptrace.GotConnInfo) { conns.Add(1) },
		GotFirstResponseByte: func() { firstByte.Add(1) },
		WroteRequest:         func(httptrace.WroteRequestInfo) { wrote.Add(1) },
	}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/", strings.NewReader("x"))
	resp, err := u.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" || hints.Load() != 1 || conns.Load() != 1 || firstByte.Load() != 1 || wrote.Load() != 1 {
		t.Errorf("body %q; Got1xxResponse %d, GotConn %d, GotFirstResponseByte %d, WroteRequest %d times; want ok, once each",
			body, hints.Load(), conns.Load(), firstByte.Load(), wrote.Load())
	}
}

// TestHostileHeadsHTTP2: over HTTP/2 (an https origin) too, a 1xx flood fails the exchange at
// max1xx, with or without a caller's hook, and max1xx hints pass.
func TestHostileHeadsHTTP2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.114:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := max1xx
		if r.URL.Path == "/flood" {
			n = 1000
		}
		w.Header().Set("Link", "</app.css>; rel=preload")
		for range n {
			w.WriteHeader(http.StatusEarlyHints)
			if r.Context().Err() != nil {
				return // the client gave up on the flood
			}
		}
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	}))
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tc := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.ServerName = "example.com" // httptest's certificate names 127.0.0.1 and example.com
	for _, hook := range []bool{true, false} {
		u := New(Config{Name: "hostile h2", TLSConfig: tc})
		t.Cleanup(u.Close)
		if _, _, _, err := doHostile(t, u, http.MethodGet, srv.URL+"/flood", hook); !errors.Is(err, errTooMany1xx) {
			t.Errorf("GET /flood over HTTP/2, hook %v: %v; want %v", hook, err, errTooMany1xx)
		}
		resp, body, n1xx, err := doHostile(t, u, http.MethodGet, srv.URL+"/hints", hook)
		if err != nil || resp.ProtoMajor != 2 || body != "ok" || hook && n1xx != max1xx {
			t.Errorf("GET /hints over HTTP/2, hook %v: %v, %v %q after %d 1xx; want HTTP/2 ok after %d", hook, err, resp, body, n1xx, max1xx)
		}
	}
}

// TestMaxHeadBytes: Config.MaxHeadBytes sets the bound on an answer's heads for both clients
// (the edge gives its peers more than its origins: their heads carry an origin's and the
// edge's fields), and the error names the bound that was passed.
func TestMaxHeadBytes(t *testing.T) {
	pad := "X-Pad: " + strings.Repeat("p", 70<<10) + "\r\n" // a head of some 70 KiB
	answers := map[string]string{
		"/final": "HTTP/1.1 200 OK\r\n" + pad + "Content-Length: 2\r\n\r\nok",
		"/1xx":   "HTTP/1.1 103 Early Hints\r\n" + pad[:30<<10] + "\r\n\r\nHTTP/1.1 200 OK\r\n" + pad[:40<<10] + "\r\nContent-Length: 2\r\n\r\nok",
		"/over":  "HTTP/1.1 200 OK\r\n" + pad + pad + "Content-Length: 2\r\n\r\nok",
	}
	srv := answering(t, "127.0.0.115", answers)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		for _, tt := range []struct {
			max  int
			path string
			want string // "" a 200 ok; else in the error
		}{
			{0, "/final", fmt.Sprintf("%d bytes", DefaultMaxHeadBytes)},
			{80 << 10, "/final", ""},
			{0, "/1xx", fmt.Sprintf("%d bytes", DefaultMaxHeadBytes)}, // some 70 KiB together
			{80 << 10, "/1xx", ""},
			{80 << 10, "/over", fmt.Sprintf("%d bytes", 80<<10)},
		} {
			t.Run(fmt.Sprintf("%s%s/max=%d", method, tt.path, tt.max), func(t *testing.T) {
				u := New(Config{Name: "big heads", MaxHeadBytes: tt.max})
				t.Cleanup(u.Close)
				resp, body, _, err := doHostile(t, u, method, "http://"+srv.addr+tt.path, true)
				switch {
				case tt.want == "" && (err != nil || resp.StatusCode != 200 || body != "ok"):
					t.Errorf("%v, %v %q; want 200 ok", err, resp, body)
				case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
					t.Errorf("%v; want an error naming %s", err, tt.want)
				case tt.want != "" && !errors.Is(err, errHeadTooLarge):
					t.Errorf("%v; want errHeadTooLarge", err)
				}
			})
		}
	}
}

// answering is a raw upstream on ip that answers each request, its body read, with the bytes
// answers holds for its path, until a write fails (a client that gave up on a flood).
func answering(t *testing.T, ip string, answers map[string]string) *rawServer {
	return startRaw(t, ip, func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, answers[req.URL.Path]); err != nil {
				return
			}
		}
	})
}

// TestHeadsBoundTogether: MaxHeadBytes bounds an answer's heads together, every 1xx head and
// the final one, on both clients and over TLS, as net/http bounds them when no hook takes the
// 1xx. With the bound per head, an origin could make the edge read max1xx+1 heads of 64 KiB
// each before the body; and net/http's Transport, which gives a head after a 1xx the whole
// bound beyond what its read buffer already holds of it, let a final head of some 90 KiB
// through. Past the bound the answer is malformed: an error that names it, a failure the
// breaker counts, and a connection closed, not reused. Over TLS the bound, counted beneath
// it, has a record's room more (tlsRoom): the record that carries a head's end is read whole,
// the body's first bytes with it, and a head of 60 KiB whose body followed in 16 KiB records
// (as nginx writes them) failed there though it passed without TLS. A single head past the
// bound there meets the Transport's own bound first, and its error is named as the others.
func TestHeadsBoundTogether(t *testing.T) {
	hints := func(n, size int) string {
		return strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: <"+strings.Repeat("l", size)+">\r\n\r\n", n)
	}
	final := func(pad int) string {
		return "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", pad) + "\r\nContent-Length: 2\r\n\r\nok"
	}
	bigBody := strings.Repeat("b", 32<<10)
	answers := map[string]string{
		"/ok":        final(0),
		"/hints":     hints(max1xx, 9<<10) + final(0),       // ten heads of 9 KiB: 90 KiB
		"/after-1xx": hints(1, 10) + final(90<<10),          // a final head of 90 KiB after one 1xx
		"/big":       final(70 << 10),                       // one head of 70 KiB
		"/fits":      hints(max1xx-1, 6<<10) + final(8<<10), // 62 KiB in all
		// A head of 60 KiB, and a body that shares its last TLS record.
		"/big-head": "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 60<<10) + "\r\nContent-Length: " + strconv.Itoa(len(bigBody)) + "\r\n\r\n" + bigBody,
	}
	plain := answering(t, "127.0.0.116", answers)
	tlsURL, tlsConns, tc := answeringTLS(t, "127.0.0.117", answers)
	for _, c := range []struct {
		name, method, url string
		conns             *atomic.Int64
		tls               *tls.Config
	}{
		{"h1", http.MethodGet, "http://" + plain.addr, &plain.accepted, nil},
		{"transport", http.MethodPost, "http://" + plain.addr, &plain.accepted, nil},
		{"transport-tls", http.MethodGet, tlsURL, tlsConns, tc},
	} {
		for _, tt := range []struct {
			path string
			ok   bool
		}{
			{"/hints", false},
			{"/after-1xx", false},
			{"/big", false},
			{"/fits", true},
			{"/big-head", true},
		} {
			t.Run(c.name+tt.path, func(t *testing.T) {
				u := New(Config{Name: "heads", TLSConfig: c.tls})
				t.Cleanup(u.Close)
				if _, body, _, err := doHostile(t, u, c.method, c.url+"/ok", true); err != nil || body != "ok" {
					t.Fatalf("%s /ok: %v, %q; want ok", c.method, err, body)
				}
				before := c.conns.Load()
				resp, body, _, err := doHostile(t, u, c.method, c.url+tt.path, true)
				switch {
				case tt.ok && (err != nil || resp.StatusCode != 200 || !strings.HasSuffix(answers[tt.path], "\r\n\r\n"+body)):
					t.Fatalf("%s %s: %v, %v, a body of %d bytes; want 200 and the body sent", c.method, tt.path, err, resp, len(body))
				case !tt.ok && !errors.Is(err, errHeadTooLarge):
					t.Fatalf("%s %s: %v; want %v", c.method, tt.path, err, errHeadTooLarge)
				case !tt.ok && (u.Stats().Failures != 1 || inARow(err)):
					t.Errorf("Stats() = %+v, in a row %v; want 1 failure, not in a row", u.Stats(), inARow(err))
				}
				// The exchange used the connection /ok left idle; a malformed answer must
				// not leave it to the next request.
				if _, body, _, err := doHostile(t, u, c.method, c.url+"/ok", true); err != nil || body != "ok" {
					t.Fatalf("%s /ok after %s: %v, %q; want ok", c.method, tt.path, err, body)
				}
				if got, want := c.conns.Load()-before, map[bool]int64{true: 0, false: 1}[tt.ok]; got != want {
					t.Errorf("%s /ok after %s opened %d connections, want %d", c.method, tt.path, got, want)
				}
			})
		}
	}
}

// answeringTLS is answering over TLS, HTTP/1.1 only, in records of 16 KiB as nginx writes them
// (Go's servers only past a connection's first 128 KiB): it returns the server's URL, a count
// of the connections it accepted, and a client TLS config that trusts it.
func answeringTLS(t *testing.T, ip string, answers map[string]string) (string, *atomic.Int64, *tls.Config) {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	conns := new(atomic.Int64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // before the hijack, which leaves the body unread
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		for path := r.URL.Path; ; {
			if _, err := io.WriteString(c, answers[path]); err != nil {
				return
			}
			req, ok := readRequest(brw.Reader)
			if !ok {
				return
			}
			io.Copy(io.Discard, req.Body)
			path = req.URL.Path
		}
	}))
	srv.Listener = ln
	srv.TLS = &tls.Config{DynamicRecordSizingDisabled: true}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS() // offers HTTP/1.1 only: EnableHTTP2 is not set
	t.Cleanup(srv.Close)
	tc := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.ServerName = "example.com" // httptest's certificate names 127.0.0.1 and example.com
	return srv.URL, conns, tc
}

// TestHeadsBoundOnHandedConnection: an exchange's bound on its heads is its own, and the end
// of the exchange that had its connection before does not lift it. net/http's Transport puts
// the connection of an answer without a body (a 204, a 304, a HEAD's) back, or hands it to an
// exchange waiting for one, before that answer reaches its own RoundTrip: the next exchange
// may arm the bound (GotConn) before the first disarms it, and the first's disarm lifted the
// second's bound, which then let 90 KiB of heads through a bound of 64. Which goroutine runs
// first is the scheduler's, so the hooks are called here in that order, on a real connection.
func TestHeadsBoundOnHandedConnection(t *testing.T) {
	const heads = 90 << 10
	srv := startRaw(t, "127.0.0.118", func(_ int64, c net.Conn, _ *bufio.Reader) {
		c.Write(bytes.Repeat([]byte("h"), heads))
	})
	nc, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	hc := &headConn{Conn: nc}
	t.Cleanup(func() { hc.Close() })
	hc.SetReadDeadline(time.Now().Add(10 * time.Second)) // the server sends all it will at once
	arm := func() *exchangeTrace {
		x := &exchangeTrace{maxHead: DefaultMaxHeadBytes}
		httptrace.ContextClientTrace(x.trace(context.Background())).GotConn(httptrace.GotConnInfo{Conn: hc, Reused: true})
		return x
	}
	first := arm()  // the exchange whose answer had no body
	second := arm() // the exchange the connection went to
	if first.disarm() {
		t.Errorf("the first exchange's disarm says a read went past its bound; none was made")
	}
	n, err := io.Copy(io.Discard, hc)
	if !errors.Is(err, errHeadTooLarge) || n != DefaultMaxHeadBytes {
		t.Errorf("the second exchange read %d bytes of heads: %v; want %d, then %v", n, err, DefaultMaxHeadBytes, errHeadTooLarge)
	}
	if !second.disarm() {
		t.Errorf("the second exchange's disarm says no read went past its bound")
	}
}

// TestHeadsBoundCountsWaitingRead: a read already waiting when an exchange arms the bound (the
// Transport's on an idle connection, which gets the next answer's first bytes) is not cut to
// it, but its bytes count: the reads after it get only what the bound has left. headConn reads
// a disarmed connection without its mutex, and must still look, after the read, whether it
// was armed meanwhile. enteredConn only tells when that read has begun, on a real connection.
func TestHeadsBoundCountsWaitingRead(t *testing.T) {
	const heads = 90 << 10
	srv := startRaw(t, "127.0.0.126", func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, err := br.ReadByte(); err != nil { // the client's word that the bound is armed
			return
		}
		c.Write(bytes.Repeat([]byte("h"), heads))
	})
	nc, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	hc := &headConn{Conn: &enteredConn{Conn: nc, entered: entered}}
	t.Cleanup(func() { hc.Close() })
	hc.SetReadDeadline(time.Now().Add(10 * time.Second)) // the server sends all it will at once
	type result struct {
		n   int
		err error
	}
	waiting := make(chan result, 1)
	go func() {
		n, err := hc.Read(make([]byte, 32<<10))
		waiting <- result{n, err}
	}()
	<-entered
	gen := hc.arm(DefaultMaxHeadBytes, DefaultMaxHeadBytes)
	if _, err := nc.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	first := <-waiting
	if first.err != nil || first.n == 0 {
		t.Fatalf("the waiting read: %d bytes, %v; want some bytes", first.n, first.err)
	}
	n, err := io.Copy(io.Discard, hc)
	if got := int64(first.n) + n; !errors.Is(err, errHeadTooLarge) || got != DefaultMaxHeadBytes {
		t.Errorf("read %d bytes of heads (%d by the waiting read): %v; want %d, then %v", got, first.n, err, DefaultMaxHeadBytes, errHeadTooLarge)
	}
	if !hc.disarm(gen) {
		t.Errorf("disarm says no read went past the bound")
	}
}

// enteredConn closes entered when its first read begins.
type enteredConn struct {
	net.Conn
	entered chan struct{}
	once    sync.Once
}

func (c *enteredConn) Read(p []byte) (int, error) {
	c.once.Do(func() { close(c.entered) })
	return c.Conn.Read(p)
}

// TestUpgradeHeadsBound: an upgrade's exchange (UpgradeTransport, which the edge hands to
// ReverseProxy) bounds its answer's heads as Do does: at most max1xx 1xx heads, and the 1xx
// heads and the 101 together MaxHeadBytes; past either it fails with the bound's error and the
// connection is closed. ReverseProxy's Got1xxResponse hook, which relays each 1xx to its
// client, switches net/http's bound on their sum off, and nothing armed the connection's
// (headConn) or counted them: an origin sent 200 heads of 9 KiB before its 101, and all were
// read. Within the bounds the upgraded connection carries bytes both ways, unbounded, and a
// half-close goes through.
func TestUpgradeHeadsBound(t *testing.T) {
	hints := func(n, size int) string {
		return strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: <"+strings.Repeat("l", size)+">\r\n\r\n", n)
	}
	switched := func(pad int) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\nX-Pad: " + strings.Repeat("p", pad) + "\r\n\r\n"
	}
	answers := map[string]string{
		"/flood":     hints(200, 10) + switched(0),
		"/big-hints": hints(200, 9<<10) + switched(0),     // 1.8 MiB of 1xx heads
		"/big-101":   switched(70 << 10),                  // one head of 70 KiB
		"/split":     hints(1, 40<<10) + switched(40<<10), // two heads of 40 KiB, each within the bound
		"/ok":        hints(max1xx, 10) + switched(8<<10),
	}
	// How each path's connection ended for the origin: nil or a reset once the client closed
	// it, a timeout if it kept it.
	closed := map[string]chan error{}
	for path := range answers {
		closed[path] = make(chan error, 4)
	}
	srv := startRaw(t, "127.0.0.127", func(_ int64, c net.Conn, br *bufio.Reader) {
		req, ok := readRequest(br)
		if !ok {
			return
		}
		c.SetDeadline(time.Now().Add(10 * time.Second)) // a client that keeps it does not hold the test
		io.WriteString(c, answers[req.URL.Path])        // fails once a client that gave up closes
		_, err := io.Copy(c, br)                        // upgraded: an echo, to the client's end
		closed[req.URL.Path] <- err
	})
	for _, tt := range []struct {
		path string
		hook bool  // a Got1xxResponse hook takes the 1xx, as ReverseProxy's does
		want error // nil: a 101, then an echo
		n1xx int   // at most this many 1xx heads reach the hook
	}{
		{"/flood", true, errTooMany1xx, max1xx},
		{"/flood", false, errTooMany1xx, 0},
		{"/big-hints", true, errHeadTooLarge, DefaultMaxHeadBytes / (9 << 10)},
		{"/big-hints", false, errHeadTooLarge, 0},
		{"/big-101", true, errHeadTooLarge, 0},
		{"/split", true, errHeadTooLarge, 1},
		{"/ok", true, nil, max1xx},
		{"/ok", false, nil, 0},
	} {
		t.Run(fmt.Sprintf("%s/hook=%v", tt.path[1:], tt.hook), func(t *testing.T) {
			ctx := context.Background()
			var seen atomic.Int64
			if tt.hook {
				ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
					seen.Add(1)
					return nil
				}})
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.addr+tt.path, nil)
			req.Header.Set("Upgrade", "test")
			req.Header.Set("Connection", "Upgrade")
			resp, err := Config{Name: "upgrade", ResponseHeaderTimeout: 5 * time.Second}.UpgradeTransport().RoundTrip(req)
			status := "no answer"
			if err == nil {
				status = resp.Status
			}
			if tt.want != nil {
				if err == nil {
					resp.Body.Close()
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("upgrade %s: %s, %v; want %v", tt.path, status, err, tt.want)
				}
			} else {
				if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("upgrade %s: %s, %v; want 101", tt.path, status, err)
				}
				conn := resp.Body.(io.ReadWriteCloser)
				defer conn.Close()
				msg := strings.Repeat("w", 2*DefaultMaxHeadBytes) // past the bound: the heads' bound is off
				go func() {
					io.WriteString(conn, msg)
					conn.(interface{ CloseWrite() error }).CloseWrite()
				}()
				if back, err := io.ReadAll(conn); err != nil || string(back) != msg {
					t.Errorf("echoed %d bytes of %d: %v", len(back), len(msg), err)
				}
			}
			if n := seen.Load(); n > int64(tt.n1xx) || tt.want == nil && n != int64(tt.n1xx) {
				t.Errorf("the hook saw %d 1xx heads, want at most %d", n, tt.n1xx)
			}
			// The client closed the connection (the echo saw its end), or ended its writes.
			if err := <-closed[tt.path]; errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the origin's connection for %s was kept open: %v", tt.path, err)
			}
		})
	}
}

// TestSwitchOnlyAsAsked: a 101 is taken only as the switch its request asked for, or the
// exchange fails and the connection is closed. Do asks for none (an upgrade goes through
// UpgradeTransport): a 101 to a request with a body, which takes the *http.Transport rather
// than the h1 path, fails as the h1 path's does, its bulkhead slot freed. UpgradeTransport
// takes a 101 to the protocol asked only. ReverseProxy refuses either with its ErrorHandler
// but does not close the answer's body, which is the connection: the origin's connection
// stayed open and, through Do, the slot stayed taken for good.
func TestSwitchOnlyAsAsked(t *testing.T) {
	closed := make(chan error, 4)
	srv := startRaw(t, "127.0.0.128", func(_ int64, c net.Conn, br *bufio.Reader) {
		req, ok := readRequest(br)
		if !ok {
			return
		}
		io.Copy(io.Discard, req.Body)
		c.SetDeadline(time.Now().Add(10 * time.Second)) // a client that keeps it does not hold the test
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
		_, err := io.Copy(io.Discard, br) // to the client's end
		closed <- err
	})
	keptOpen := func(t *testing.T) {
		t.Helper()
		if err := <-closed; errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the origin's connection was kept open: %v", err)
		}
	}

	t.Run("Do", func(t *testing.T) {
		u := New(Config{Name: "switch", MaxConcurrent: 1})
		req, _ := http.NewRequest(http.MethodPost, "http://"+srv.addr+"/p", strings.NewReader("hi"))
		resp, err := u.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("POST answered by a 101: %s, want an error", resp.Status)
		}
		if !errors.Is(err, errUnexpectedSwitch) {
			t.Errorf("POST answered by a 101: %v, want %v", err, errUnexpectedSwitch)
		}
		if n := u.Stats().InFlight; n != 0 {
			t.Errorf("%d bulkhead slots taken once Do returned, want 0", n)
		}
		keptOpen(t)
	})
	for _, asked := range []string{"websocket", ""} {
		t.Run("UpgradeTransport asked "+asked, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+srv.addr+"/ws", nil)
			if asked != "" {
				req.Header.Set("Upgrade", asked)
				req.Header.Set("Connection", "Upgrade")
			}
			resp, err := Config{Name: "upgrade"}.UpgradeTransport().RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("upgrade to %q answered by a 101 to h2c: %s, want an error", asked, resp.Status)
			}
			if !errors.Is(err, errUnexpectedSwitch) {
				t.Errorf("upgrade to %q answered by a 101 to h2c: %v, want %v", asked, err, errUnexpectedSwitch)
			}
			keptOpen(t)
		})
	}
}

// BenchmarkUpgradedRead reads an upgraded connection of UpgradeTransport, as ReverseProxy's
// copy does for a WebSocket's whole life, in reads of a frame's size and of the copy's buffer.
// Every read goes through the connection's headConn, whose bound is long disarmed.
func BenchmarkUpgradedRead(b *testing.B) {
	chunk := bytes.Repeat([]byte("w"), 64<<10)
	srv := startRaw(b, "127.0.0.119", func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); !ok {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		for {
			if _, err := c.Write(chunk); err != nil {
				return // the benchmark closed the connection
			}
		}
	})
	for _, size := range []int{512, 32 << 10} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			tr := Config{}.UpgradeTransport()
			req, _ := http.NewRequest(http.MethodGet, "http://"+srv.addr+"/ws", nil)
			req.Header.Set("Upgrade", "test")
			req.Header.Set("Connection", "Upgrade")
			resp, err := tr.RoundTrip(req)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				b.Fatalf("upgrade: %v, %v; want 101", err, resp)
			}
			conn := resp.Body.(io.ReadWriteCloser)
			defer conn.Close()
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.ReadFull(conn, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHeadConnRead is what headConn adds to each read past an exchange's heads, over a
// connection whose reads cost nothing: on a socket, the system call (some 0.5 µs on loopback,
// BenchmarkUpgradedRead) hides it.
func BenchmarkHeadConnRead(b *testing.B) {
	hc := &headConn{Conn: freeConn{}}
	hc.disarm(hc.arm(DefaultMaxHeadBytes, DefaultMaxHeadBytes)) // an exchange's heads, done
	buf := make([]byte, 512)
	for b.Loop() {
		hc.Read(buf)
	}
}

// freeConn is a connection whose reads fill the buffer at once.
type freeConn struct{ net.Conn }

func (freeConn) Read(p []byte) (int, error) { return len(p), nil }
