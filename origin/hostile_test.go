package origin

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBodyCacheBoundCountsKeys: BodyCacheBytes bounds the memory the body cache keeps, keys
// included. A client that asks for many distinct long paths (or Vary variants of long header
// values) with size=0 or 1 made the cache keep every key while counting only the body bytes,
// none for size=0: its memory grew without bound.
func TestBodyCacheBoundCountsKeys(t *testing.T) {
	const budget = 64 << 10
	s, base := start(t, "127.0.0.91", Config{BodyCacheBytes: budget})
	c := client(t)
	long := strings.Repeat("p", 4<<10)
	get := func(url string, h http.Header) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %.40s...: %d, want 200", url, resp.StatusCode)
		}
	}
	for i := range 64 {
		get(fmt.Sprintf("%s/%d/%s?size=0", base, i, long), nil)
		get(fmt.Sprintf("%s/%d/%s?size=1", base, i, long), nil)
		get(base+"/v?size=1&vary=X-Pad", http.Header{"X-Pad": {fmt.Sprint(i, long)}})
	}
	s.bodies.mu.Lock()
	held := 0
	for k, b := range s.bodies.m {
		held += len(k.path) + len(b)
	}
	n := len(s.bodies.m)
	s.bodies.mu.Unlock()
	if held > budget {
		t.Errorf("body cache holds %d bytes of keys and bodies in %d entries, want at most BodyCacheBytes %d", held, n, budget)
	}
}

// TestObjectRequestWithoutPath: a request in absolute form without a path ("POST
// http://host HTTP/1.1") is for "/", as RFC 9110 §4.2.3 reads an empty path; it bumped every
// object instead (the empty path is Bump's "all"), and a GET of it was a distinct object "".
// A request-target that is not a path ("*") is refused.
func TestObjectRequestWithoutPath(t *testing.T) {
	s, base := start(t, "127.0.0.92", Config{})
	host := strings.TrimPrefix(base, "http://")
	raw := func(head string) *http.Response {
		t.Helper()
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := raw("POST http://" + host + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("POST without a path: %d, want 204", resp.StatusCode)
	}
	if v := s.Version("/x"); v != 1 {
		t.Errorf("version of /x after a POST without a path = %d, want 1 (only / bumped)", v)
	}
	if v := s.Version("/"); v != 2 {
		t.Errorf("version of / after a POST without a path = %d, want 2", v)
	}
	resp = raw("GET http://" + host + "?size=8 HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n")
	if want := ETag("/", 2, 8); resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") != want {
		t.Errorf("GET without a path: %d, ETag %s; want 200, the ETag of / (%s)", resp.StatusCode, resp.Header.Get("ETag"), want)
	}
	if n := s.Requests("/"); n != 2 {
		t.Errorf("Requests(/) = %d, want 2", n)
	}
	resp = raw("GET * HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET *: %d, want 400", resp.StatusCode)
	}
	if n := s.Requests("*"); n != 0 {
		t.Errorf("Requests(*) = %d, want 0: not an object", n)
	}
}

// TestIdleConnectionClosed: a keep-alive connection that sends nothing after its answer is
// closed after IdleTimeout; before, the server held it (and its goroutine) for good.
func TestIdleConnectionClosed(t *testing.T) {
	_, base := start(t, "127.0.0.92", Config{IdleTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /a HTTP/1.1\r\nHost: o\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The server closes the idle connection: the next read ends. The deadline only bounds
	// the test.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read on the idle connection: %d bytes, %v; want EOF (closed by the server)", n, err)
	}
}
