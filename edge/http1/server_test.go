package http1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testHandler answers by path, covering each way a handler can shape an answer.
func testHandler() http.Handler {
	mux := http.NewServeMux()
	body := func(n int) []byte { return bytes.Repeat([]byte("a"), n) }
	mux.HandleFunc("/cl", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "5")
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Accept", strings.Join(r.Header.Values("Accept"), "|"))
		w.Header().Set("X-Close", fmt.Sprint(r.Close))
		w.Header().Set("X-Target", r.RequestURI+" "+r.URL.Path+" "+r.URL.RawQuery)
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) { w.Write(body(100)) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body(10 << 10))
		w.Write(body(100 << 10))
	})
	mux.HandleFunc("/bigcl", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "65536")
		w.Write(body(65536))
	})
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, "data: 2\n\n")
	})
	mux.HandleFunc("/sniff", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html><body>hi</body></html>") })
	mux.HandleFunc("/304", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Etag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
	})
	mux.HandleFunc("/204", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "12345")
	})
	mux.HandleFunc("/interim", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "done")
	})
	mux.HandleFunc("/newline", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Evil"] = []string{"a\r\nSet-Cookie: x=1", "  padded  "}
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) })
	mux.HandleFunc("/abort", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/abort-early", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "partial")
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %q", r.Method, r.ContentLength, b)
	})
	return mux
}

// pair runs h behind the fast path and behind net/http alone, on their own loopback addresses.
type pair struct {
	fast, std string
	handoffs  atomic.Int64
}

func startPair(t testing.TB, h http.Handler) *pair {
	t.Helper()
	p := &pair{}
	lf, err := net.Listen("tcp", "127.0.0.61:0")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := net.Listen("tcp", "127.0.0.62:0")
	if err != nil {
		t.Fatal(err)
	}
	p.fast, p.std = lf.Addr().String(), ls.Addr().String()
	std := &http.Server{Handler: h, ReadHeaderTimeout: 2 * time.Second}
	fast := &Server{
		Handler:           h,
		Fallback:          &http.Server{Handler: h, ReadHeaderTimeout: 2 * time.Second},
		ReadHeaderTimeout: 2 * time.Second,
		IdleTimeout:       5 * time.Second,
		MaxHeaderBytes:    1 << 20,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateHijacked {
				p.handoffs.Add(1)
			}
		},
	}
	go std.Serve(ls)
	go fast.Serve(lf)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := fast.Shutdown(ctx); err != nil {
			t.Errorf("fast shutdown: %v", err)
		}
		std.Shutdown(ctx)
	})
	return p
}

// answer is what a client can observe of one response.
type answer struct {
	Status  int
	Header  http.Header
	Body    string
	BodyErr bool
	TE      []string
	CL      int64
}

// sendAll sends raw on a new connection to addr and half-closes it; the caller closes it.
func sendAll(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		c.Close()
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	return c
}

// exchange sends raw on a new connection, half-closes it, and reads every response.
func exchange(t *testing.T, addr, raw string, methods []string) []answer {
	t.Helper()
	c := sendAll(t, addr, raw)
	defer c.Close()
	br := bufio.NewReader(c)
	var out []answer
	for i := 0; ; i++ {
		m := http.MethodGet
		if i < len(methods) {
			m = methods[i]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			return out
		}
		b, berr := io.ReadAll(resp.Body)
		resp.Header.Del("Date")
		body := string(b)
		if len(b) > 64 {
			body = fmt.Sprintf("%d bytes, sha256 %x", len(b), sha256.Sum256(b))
		}
		out = append(out, answer{resp.StatusCode, resp.Header, body, berr != nil, resp.TransferEncoding, resp.ContentLength})
	}
}

func TestSameAnswersAsNetHTTP(t *testing.T) {
	p := startPair(t, testHandler())
	get := func(path string, extra ...string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: example.com\r\n" + strings.Join(extra, "") + "\r\n"
	}
	cases := []struct {
		name    string
		raw     string
		methods []string
		handoff bool // the fast path must hand this connection to net/http
		silent  bool // net/http answers nothing at all
	}{
		{name: "plain", raw: get("/cl", "Accept: a\r\n", "accept: b\r\n")},
		{name: "query and escapes", raw: get("/cl?x=1&y=%20", "")},
		{name: "escaped path", raw: get("/c%6c", "")},
		{name: "head", raw: "HEAD /cl HTTP/1.1\r\nHost: example.com\r\n\r\n", methods: []string{http.MethodHead}},
		{name: "head without length", raw: "HEAD /small HTTP/1.1\r\nHost: example.com\r\n\r\n", methods: []string{http.MethodHead}},
		{name: "pipelined", raw: get("/cl", "") + get("/small", "") + get("/big", "") + get("/sniff", "")},
		{name: "auto length", raw: get("/small", "")},
		{name: "chunked", raw: get("/big", "")},
		{name: "large with length", raw: get("/bigcl", "")},
		{name: "flush", raw: get("/flush", "")},
		{name: "sniff", raw: get("/sniff", "")},
		{name: "304", raw: get("/304", "")},
		{name: "204", raw: get("/204", "")},
		{name: "handler closes", raw: get("/close", "") + get("/cl", "")},
		{name: "client closes", raw: get("/cl", "Connection: close\r\n") + get("/small", "")},
		{name: "keep-alive token", raw: get("/cl", "Connection: keep-alive\r\n")},
		{name: "short body", raw: get("/short", "") + get("/cl", "")},
		{name: "interim", raw: get("/interim", "")},
		{name: "newline in value", raw: get("/newline", "")},
		{name: "empty", raw: get("/empty", "")},
		{name: "unknown status", raw: get("/status", "")},
		{name: "abort", raw: get("/abort", "") + get("/cl", "")},
		{name: "abort before flush", raw: get("/abort-early", "") + get("/cl", ""), silent: true},
		{name: "not found", raw: get("/nowhere", "")},
		// Handed to net/http: anything with a body, or that the fast path does not read.
		{name: "body", raw: "POST /echo HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc", handoff: true},
		{name: "get with body", raw: "GET /echo HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc", handoff: true},
		{name: "smuggle CL.TE", raw: "GET /echo HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /cl HTTP/1.1\r\nHost: example.com\r\n\r\n", handoff: true},
		{name: "smuggle TE obfuscated", raw: "GET /echo HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: xchunked\r\n\r\n", handoff: true},
		{name: "fast then body", raw: get("/cl", "") + "POST /echo HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi" + get("/small", ""), handoff: true},
		{name: "http/1.0", raw: "GET /cl HTTP/1.0\r\n\r\n", handoff: true},
		{name: "absolute form", raw: "GET http://example.com/cl HTTP/1.1\r\nHost: example.com\r\n\r\n", handoff: true},
		{name: "no host", raw: "GET /cl HTTP/1.1\r\n\r\n", handoff: true},
		{name: "two hosts", raw: "GET /cl HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", handoff: true},
		{name: "bad host", raw: "GET /cl HTTP/1.1\r\nHost: a b\r\n\r\n", handoff: true},
		{name: "bare LF", raw: "GET /cl HTTP/1.1\nHost: example.com\n\n", handoff: true},
		{name: "bare CR", raw: "GET /cl HTTP/1.1\r\nHost: example.com\rX: y\r\n\r\n", handoff: true},
		{name: "obs-fold", raw: "GET /cl HTTP/1.1\r\nHost: example.com\r\nAccept: a\r\n b\r\n\r\n", handoff: true},
		{name: "space before colon", raw: "GET /cl HTTP/1.1\r\nHost: example.com\r\nAccept : a\r\n\r\n", handoff: true},
		{name: "bad name", raw: "GET /cl HTTP/1.1\r\nHost: example.com\r\nAc(cept: a\r\n\r\n", handoff: true},
		{name: "control in value", raw: "GET /cl HTTP/1.1\r\nHost: example.com\r\nAccept: a\x00b\r\n\r\n", handoff: true},
		{name: "expect", raw: "GET /cl HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n\r\n", handoff: true},
		{name: "upgrade", raw: "GET /cl HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", handoff: true},
		{name: "bad escape", raw: get("/%zz", ""), handoff: true},
		{name: "fragment", raw: get("/cl#x", ""), handoff: true},
		// The edge's handler leaves its request-target check (space, fragment) to net/http's
		// requests on these (edge.request.plainTarget).
		{name: "space in target", raw: get("/c l", ""), handoff: true},
		{name: "space in query", raw: get("/cl?a b", ""), handoff: true},
		{name: "lower-case method", raw: "get /cl HTTP/1.1\r\nHost: example.com\r\n\r\n", handoff: true},
		{name: "double space", raw: "GET  /cl HTTP/1.1\r\nHost: example.com\r\n\r\n", handoff: true},
		{name: "huge head", raw: get("/cl", "X-Big: "+strings.Repeat("b", 6000)+"\r\n"), handoff: true},
		{name: "h2 preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", handoff: true},
		{name: "garbage", raw: "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", handoff: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := p.handoffs.Load()
			want := exchange(t, p.std, tc.raw, tc.methods)
			got := exchange(t, p.fast, tc.raw, tc.methods)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("fast path answered\n%+v\nnet/http answered\n%+v", got, want)
			}
			if handed := p.handoffs.Load() > before; handed != tc.handoff {
				t.Errorf("handed off = %v, want %v", handed, tc.handoff)
			}
			if (len(want) == 0) != tc.silent {
				t.Errorf("net/http gave %d answers; the case expects silent=%v", len(want), tc.silent)
			}
		})
	}
}
