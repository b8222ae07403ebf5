package fetch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
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

// TestHostileHeads: an origin's answer may carry at most max1xx interim heads, and no head
// (1xx or final) longer than DefaultMaxHeadBytes; past either the exchange fails as a malformed
// answer does (a breaker failure; a 502 at the edge). Without the bounds, a 1xx flood was
// read for as long as the origin sent it (each 1xx reset the head limit when a hook took it,
// as the edge's forwarding does), and a head could take 10 MiB. Real heads pass: a 20 KiB
// Set-Cookie, max1xx hints. Both clients: h1.go for a GET, net/http's Transport for a POST.
func TestHostileHeads(t *testing.T) {
	cookie := "Set-Cookie: s=" + strings.Repeat("c", 20<<10) + "\r\n"
	answers := map[string]string{
		"/flood":    strings.Repeat(hint, 1000) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/hints":    strings.Repeat(hint, max1xx) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/big":      "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 100<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		"/big-1xx":  "HTTP/1.1 103 Early Hints\r\nLink: <" + strings.Repeat("l", 100<<10) + ">\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/cookie":   "HTTP/1.1 200 OK\r\n" + cookie + "Content-Length: 2\r\n\r\nok",
		"/hint-sum": strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: <"+strings.Repeat("l", 30<<10)+">\r\n\r\n", 3) + "HTTP/1.1 200 OK\r\n" + cookie + "Content-Length: 2\r\n\r\nok",
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
			{"/hint-sum", true, nil, 3},  // each head has the whole limit...
			{"/hint-sum", false, nil, 0}, // ... whoever takes the 1xx
		} {
			t.Run(fmt.Sprintf("%s%s/hook=%v", method, tt.path, tt.hook), func(t *testing.T) {
				u := New(Config{Name: "hostile", ResponseHeaderTimeout: 5 * time.Second})
				t.Cleanup(u.Close)
				resp, body, n1xx, err := doHostile(t, u, method, "http://"+srv.addr+tt.path, tt.hook)
				switch {
				case tt.want == nil && (err != nil || resp.StatusCode != 200 || body != "ok"):
					t.Fatalf("%s %s: %v, %v %q; want 200 ok", method, tt.path, err, resp, body)
				case tt.want == errHeadTooLarge && method == http.MethodPost:
					// net/http's Transport says it its own way.
					if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("exceeded %d bytes", DefaultMaxHeadBytes)) {
						t.Fatalf("%s %s: %v; want net/http's response headers exceeded %d bytes", method, tt.path, err, DefaultMaxHeadBytes)
					}
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

// TestMaxHeadBytes: Config.MaxHeadBytes sets the bound on each head for both clients (the edge
// gives its peers more than its origins: their heads carry an origin's and the edge's fields),
// and the error names the bound that was passed.
func TestMaxHeadBytes(t *testing.T) {
	pad := "X-Pad: " + strings.Repeat("p", 70<<10) + "\r\n" // a head of some 70 KiB
	answers := map[string]string{
		"/final": "HTTP/1.1 200 OK\r\n" + pad + "Content-Length: 2\r\n\r\nok",
		"/1xx":   "HTTP/1.1 103 Early Hints\r\n" + pad + "\r\nHTTP/1.1 200 OK\r\n" + pad + "Content-Length: 2\r\n\r\nok",
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
				case tt.want != "" && method == http.MethodGet && !errors.Is(err, errHeadTooLarge):
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
