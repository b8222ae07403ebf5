package http1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/rawconn"
	"github.com/meridian-cdn/meridian/internal/tcptest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// A client that sends its last request and half-closes while the one before is being answered
// gets both answers and then the connection's end at once, as from net/http, not after the
// idle timeout: the read that takes the last request takes the end of the stream along, and
// nothing announces it again.
func TestHalfClosedClientEndedAfterLastAnswer(t *testing.T) {
	started, sent := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			close(started)
			<-sent // the second request and the end arrive while this one is answered
		}
		io.WriteString(w, r.URL.Path)
	})
	conns := make(chan net.Conn, 1)
	_, addr := serveFast(t, h, func(s *Server) {
		s.IdleTimeout = time.Minute
		s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			conns <- c
			return ctx
		}
	})
	c := dialSend(t, addr, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
	defer c.Close()
	sc := <-conns
	<-started
	io.WriteString(c, "GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	wait.For(t, 5*time.Second, "the client's end to reach the server", func() bool { return tcptest.CloseWaiting(t, sc.(*net.TCPConn)) })
	close(sent)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for _, want := range []string{"/first", "/second"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer for %s: %v", want, err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != want {
			t.Fatalf("answer %q, want %q", b, want)
		}
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the last answer the client read %d bytes, %v; want io.EOF at once", n, err)
	}
}

// Where the watch's duplicate of the socket cannot be made (out of file descriptors), long
// requests are still answered, unwatched, and the failure is logged once per connection, not
// once per request.
func TestNoWatchFileLoggedOnce(t *testing.T) {
	dupSocket = func(*rawconn.Conn) (*os.File, error) { return nil, syscall.EMFILE }
	t.Cleanup(func() { dupSocket = (*rawconn.Conn).DupFile })
	var logged bytes.Buffer
	var mu sync.Mutex
	watched := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // a long request: the watch starts, and ends at once without its reader
		case <-watched:
		case <-time.After(5 * time.Second):
			t.Error("no watch started for a long request")
		}
		io.WriteString(w, "ok")
	})
	_, addr := serveFast(t, h, func(s *Server) {
		s.watchEnded = func() { watched <- struct{}{} }
		s.ErrorLog = log.New(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logged.Write(p)
		}), "", 0)
	})
	c := dialSend(t, addr, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	for i := range 3 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logged.String(), "no watch"); n != 1 {
		t.Errorf("logged %d times for three long requests, want once:\n%s", n, logged.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
