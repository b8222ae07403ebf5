package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Both servers of plain HTTP/1.1 (http1: fast, the default, and http1: std) serve the same
// pipeline: a miss, then a hit, and a request with a body, which the fast path hands over.
func TestHTTP1Servers(t *testing.T) {
	for _, mode := range []string{"", HTTP1Fast, HTTP1Std} {
		t.Run("http1="+mode, func(t *testing.T) {
			s := newSingle(t, func(c *Config) { c.HTTP1 = mode })
			p := obj("/modes", "cc", "max-age=60")
			if r := do(t, s.client, http.MethodGet, s.edge.Addr(), testHost, p); r.status != 200 || !strings.Contains(r.header.Get("Cache-Status"), "fwd=") {
				t.Fatalf("first GET: %d, Cache-Status %q; want 200 and a miss", r.status, r.header.Get("Cache-Status"))
			}
			r := do(t, s.client, http.MethodGet, s.edge.Addr(), testHost, p)
			if r.status != 200 || !strings.Contains(r.header.Get("Cache-Status"), "; hit") {
				t.Fatalf("second GET: %d, Cache-Status %q; want a hit", r.status, r.header.Get("Cache-Status"))
			}
			if r.header.Get("Content-Length") == "" || r.header.Get("Date") == "" {
				t.Errorf("hit without Content-Length or Date: %v", r.header)
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+s.edge.Addr()+"/echo", strings.NewReader("body"))
			req.Host = testHost
			resp, err := s.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Errorf("POST with a body: %d", resp.StatusCode)
			}
		})
	}
}

// TestHTTP1HitAllocations holds the fast path's hits to the target of at most two
// allocations each, the whole way from the connection to the answer (issue 15): its request
// state, request, context, URL and fields are the connection's, reused request after request.
// A hit allocates only its head's string.
func TestHTTP1HitAllocations(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/allocs", "cc", "max-age=3600", "size", "1024")
	for range 2 { // a miss, then a hit
		if r := s.get(t, p); r.status != 200 {
			t.Fatalf("warm-up GET: %d", r.status)
		}
	}
	c, err := net.Dial("tcp", s.edge.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET " + p + " HTTP/1.1\r\nHost: " + testHost + "\r\nUser-Agent: allocs\r\n\r\n")
	// The first answer tells each answer's length (the same fields, of the same lengths, and
	// the same body every time), to read the others whole with no allocation of the client's.
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	first, err := http.ReadResponse(bufio.NewReader(io.TeeReader(c, &raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, first.Body); err != nil {
		t.Fatal(err)
	}
	if cs := first.Header.Get("Cache-Status"); !strings.Contains(cs, "; hit") {
		t.Fatalf("not a hit: Cache-Status %q", cs)
	}
	if head := bytes.Index(raw.Bytes(), []byte("\r\n\r\n")) + 4; raw.Len() != head+1024 {
		t.Fatalf("first answer: %d bytes read, head %d; want the head and the 1 KiB body only", raw.Len(), head)
	}
	buf := make([]byte, raw.Len())
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	})
	if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 OK\r\n")) || !bytes.HasSuffix(buf, raw.Bytes()[raw.Len()-1024:]) {
		t.Fatalf("the last answer is not the first's again: %q", buf)
	}
	if allocs > 2 {
		t.Errorf("a hit through the fast path: %.1f allocations; want at most 2", allocs)
	}
}

// TestHTTP1ReusedRequestState answers pipelined hits of two sizes, in turn, on one
// connection: each answer's own fields (Content-Length, Age, Cache-Status) are its own,
// although the connection reuses the request state they are written from.
func TestHTTP1ReusedRequestState(t *testing.T) {
	s := newSingle(t, nil)
	paths := []string{obj("/reuse-a", "cc", "max-age=3600", "size", "7"), obj("/reuse-b", "cc", "max-age=3600", "size", "12345")}
	sizes := []int{7, 12345}
	for _, p := range paths {
		if r := s.get(t, p); r.status != 200 {
			t.Fatalf("warm-up GET %s: %d", p, r.status)
		}
	}
	s.clock.Advance(3 * time.Second)
	c, err := net.Dial("tcp", s.edge.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reqs bytes.Buffer
	const rounds = 20
	for i := range rounds {
		fmt.Fprintf(&reqs, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", paths[i%2], testHost)
	}
	if _, err := c.Write(reqs.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range rounds {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		want := sizes[i%2]
		if len(body) != want || r.Header.Get("Content-Length") != strconv.Itoa(want) ||
			r.Header.Get("Age") != "3" || !strings.Contains(r.Header.Get("Cache-Status"), "; hit; ttl=3597;") {
			t.Errorf("answer %d: %d bytes, Content-Length %q, Age %q, Cache-Status %q; want %d, %d, 3, a hit with ttl=3597",
				i, len(body), r.Header.Get("Content-Length"), r.Header.Get("Age"), r.Header.Get("Cache-Status"), want, want)
		}
	}
}
