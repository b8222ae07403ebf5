package http1

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestShutdownAnswersIdleClient: a kept-alive connection that waits for its client's next
// request when Shutdown begins gets headGrace for it, as a head still arriving does, and the
// request is answered, saying the connection ends; one whose client sends nothing is closed
// when the grace ends. Shutdown closed idle connections at once: a busy keep-alive client's
// next request, sent in that instant, read EOF (16 clients on an edge restarted under load:
// half of them lost a request as the old process's lame duck ended).
func TestShutdownAnswersIdleClient(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	s, addr := serveFast(t, h, nil)
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		io.WriteString(c, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("first answer: %v", err)
		}
		io.ReadAll(resp.Body)
		if resp.Close {
			t.Fatal("first answer closes the connection")
		}
		return c, br
	}
	kept, keptBr := dial()
	_, silentBr := dial()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	wait.For(t, 5*time.Second, "the listener closed", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	io.WriteString(kept, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(keptBr, nil)
	if err != nil {
		t.Fatalf("request on a kept-alive connection sent as Shutdown began: %v, want an answer", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "ok" || !resp.Close {
		t.Errorf("answer %d %q (close %v), want 200 ok saying the connection ends", resp.StatusCode, b, resp.Close)
	}
	if _, err := keptBr.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: read %v, want EOF", err)
	}
	start := time.Now()
	if _, err := silentBr.ReadByte(); err != io.EOF {
		t.Errorf("silent idle connection: read %v, want EOF", err)
	}
	if d := time.Since(start); d > headGrace+time.Second {
		t.Errorf("silent idle connection closed after %v, want within headGrace (%v)", d, headGrace)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestShutdownGraceOnce: a kept-alive connection idle at Shutdown whose client then sends part
// of a request head, and nothing more, is closed when the headGrace the Shutdown gave it ends:
// the head that began within it gets no second headGrace for the rest. It did, so such a
// client held the shutdown up to twice the second the docs promise.
func TestShutdownGraceOnce(t *testing.T) {
	graces := make(chan time.Time, 8)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	s, addr := serveFast(t, h, func(s *Server) {
		s.ReadHeaderTimeout = 20 * time.Second
		s.graceSet = func(d time.Time) { graces <- d }
	})
	c := dialSend(t, addr, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("first answer: %v", err)
	}
	io.ReadAll(resp.Body)
	wait.For(t, 5*time.Second, "the connection idle", func() bool {
		return anyConn(s, func(c *conn) bool { return c.idle.Load() })
	})
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	next := func(what string) time.Time {
		t.Helper()
		select {
		case d := <-graces:
			return d
		case <-time.After(10 * time.Second):
			t.Fatalf("no grace given %s", what)
			return time.Time{}
		}
	}
	idleEnd := next("to the idle connection")
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n") // and nothing more
	if headEnd := next("to the head begun in it"); headEnd.After(idleEnd) {
		t.Errorf("the head begun within the idle connection's grace may take until %v, %v after the grace's end",
			headEnd.Format(time.StampMicro), headEnd.Sub(idleEnd))
	}
	if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
		t.Errorf("the client read %q, %v; want the connection's end without an answer", b, err)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
