package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestFloor: through the floor, a foreign origin's answer arrives whole; the second request
// for a target is a hit, written from the map without asking the origin; both ride one
// client connection and the misses one origin connection; a request with a body is refused.
func TestFloor(t *testing.T) {
	var asked, conns atomic.Int64
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "body of %s for %s", r.URL.Path, r.Host)
	}))
	origin.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	origin.Start()
	defer origin.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newProxy(origin.Listener.Addr().String(), 1<<20).serve(ctx, ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(target string) (*http.Response, string) {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: example.test\r\nUser-Agent: test\r\n\r\n", target)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read answer to %s: %v", target, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read body of %s: %v", target, err)
		}
		return resp, string(b)
	}
	for i, tc := range []struct {
		target string
		hit    bool
		asked  int64
	}{
		{"/a", false, 1},
		{"/a", true, 1},
		{"/b?x=1", false, 2},
		{"/b?x=1", true, 2},
	} {
		resp, body := get(tc.target)
		path, _, _ := strings.Cut(tc.target, "?")
		if want := "body of " + path + " for example.test"; resp.StatusCode != 200 || body != want {
			t.Errorf("%d: %s answered %d %q, want 200 %q", i, tc.target, resp.StatusCode, body, want)
		}
		if got := resp.Header.Get("X-Cache-Status") == "HIT"; got != tc.hit {
			t.Errorf("%d: %s hit %v, want %v", i, tc.target, got, tc.hit)
		}
		if asked.Load() != tc.asked {
			t.Errorf("%d: origin asked %d times, want %d", i, asked.Load(), tc.asked)
		}
	}
	if conns.Load() != 1 {
		t.Errorf("origin saw %d connections, want 1 (kept alive)", conns.Load())
	}

	fmt.Fprintf(c, "POST /c HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1\r\n\r\nx")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("a request with a body: read %v, want the connection closed (EOF)", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after shutdown: %v", err)
	}
}
