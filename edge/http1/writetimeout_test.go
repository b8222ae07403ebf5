package http1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/sendtimeout"
	"github.com/meridian-cdn/meridian/internal/tcptest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// smallSendBuffers gives every connection it accepts a small socket send buffer, so that an
// answer of a few MiB waits for its client to read rather than fit in the kernel's buffers.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(32 << 10)
	}
	return c, err
}

// dialSmall connects to addr with a small receive buffer and sends raw.
func dialSmall(t *testing.T, addr, raw string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	io.WriteString(c, raw)
	return c, bufio.NewReader(c)
}

// The requests of the write-timeout tests: one the fast path answers, one it hands to net/http.
var writeTimeoutRequests = []struct{ name, raw string }{
	{"fast path", "GET /big HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"handed off", "GET /big HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"},
}

// bigAnswer answers with size bytes in one Write, as the edge writes a cached object, and sends
// the Write's error on done.
func bigAnswer(size int, done chan<- error) http.Handler {
	body := make([]byte, size)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, err := w.Write(body)
		done <- err
	})
}

// TestClientThatStopsReading: a client that reads nothing of a large answer is cut off after
// WriteTimeout (nginx's send_timeout): the handler's write fails, so the handler returns, and
// the connection ends, on the fast path and on a connection handed to net/http. It held the
// handler for ever.
func TestClientThatStopsReading(t *testing.T) {
	const size = 16 << 20
	for _, rq := range writeTimeoutRequests {
		t.Run(rq.name, func(t *testing.T) {
			done := make(chan error, 1)
			_, addr := serveFast(t, bigAnswer(size, done), func(s *Server) { s.WriteTimeout = 200 * time.Millisecond })
			c, br := dialSmall(t, addr, rq.raw)
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("the handler's Write: %v, want a timeout", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the handler is still writing to a client that reads nothing")
			}
			// The connection has ended: the client reads what was sent, then its end.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("head: %v", err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || n >= size {
				t.Errorf("read %d of %d bytes, then %v; want the connection's end before the whole answer", n, size, err)
			}
		})
	}
}

// TestSlowSteadyReader: a client that reads slowly but all the time gets the whole answer,
// though its one Write lasts several times WriteTimeout: the timeout bounds a wait for
// progress, not the download.
func TestSlowSteadyReader(t *testing.T) {
	const size = 2 << 20
	// A second: a reader held off the CPU for 300 ms by a loaded machine's parallel race
	// tests once looked like a client that stopped reading. 128 reads of 16 KiB at 16 ms
	// make the download 2 s.
	const timeout = time.Second
	for _, rq := range writeTimeoutRequests {
		t.Run(rq.name, func(t *testing.T) {
			done := make(chan error, 1)
			ln, err := net.Listen("tcp", "127.0.0.63:0")
			if err != nil {
				t.Fatal(err)
			}
			_, addr := serveFastOn(t, smallSendBuffers{ln}, bigAnswer(size, done), func(s *Server) { s.WriteTimeout = timeout })
			start := time.Now()
			_, br := dialSmall(t, addr, rq.raw)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("head: %v", err)
			}
			if got, err := tcptest.ReadSlowly(resp.Body, 16*time.Millisecond); err != nil || got != size {
				t.Fatalf("read %d of %d bytes, then %v", got, size, err)
			}
			if err := <-done; err != nil {
				t.Errorf("the handler's Write: %v", err)
			}
			if took := time.Since(start); took < 2*timeout {
				t.Errorf("the download took %v: the test wants one longer than the %v timeout", took, timeout)
			}
		})
	}
}

// inHead reports whether a connection of s waits for the rest of a request head. It may run
// before Serve's goroutine has readied s (a test that dials and polls at once): anyConn readies
// s itself.
func inHead(s *Server) bool {
	return anyConn(s, func(c *conn) bool { return c.inHead.Load() })
}

// TestShutdownCutsHalfHead: a connection that sent half a request head and then nothing does
// not hold Shutdown for the whole ReadHeaderTimeout: it gets headGrace to send the rest, then
// ends without an answer (found in review: it held the edge's shutdown 10 s).
func TestShutdownCutsHalfHead(t *testing.T) {
	s, addr := serveFast(t, http.NotFoundHandler(), func(s *Server) { s.ReadHeaderTimeout = 20 * time.Second })
	c := dialSend(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Half: ")
	defer c.Close()
	wait.For(t, 5*time.Second, "the server to wait for the rest of the head", func() bool { return inHead(s) })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > headGrace+4*time.Second {
		t.Errorf("Shutdown took %v with half a head pending, want about headGrace (%v)", took, headGrace)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) > 0 {
		t.Errorf("the client read %q, %v; want the connection's end without an answer", b, err)
	}
}

// TestShutdownAnswersHeadInGrace: a head whose rest arrives within headGrace of the shutdown
// is answered (the answer ends the connection), and Shutdown waits for it.
func TestShutdownAnswersHeadInGrace(t *testing.T) {
	cut := make(chan struct{}, 1)
	s, addr := serveFast(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), func(s *Server) {
		s.ReadHeaderTimeout = 20 * time.Second
		s.headCut = func() { cut <- struct{}{} }
	})
	c := dialSend(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n")
	defer c.Close()
	wait.For(t, 5*time.Second, "the server to wait for the rest of the head", func() bool { return inHead(s) })
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	select {
	case <-cut:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not cut the wait for the head")
	}
	io.WriteString(c, "X-Rest: here\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the head completed within headGrace got no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "ok" || !resp.Close {
		t.Errorf("answer %d %q (close %v), want 200 ok ending the connection", resp.StatusCode, b, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestSendTimeoutOverTLS: over TLS the send timeout lies beneath crypto/tls (sendtimeout under
// tls.NewListener), which makes a write's deadline error permanent: a client that reads slowly
// but all the time gets the whole answer, and one that stops reading is cut off, on the fast
// path and on a connection handed to net/http. The fast path put its own above TLS, whose
// first check (a quarter of the timeout) ended the write of a client that was reading.
func TestSendTimeoutOverTLS(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, rq := range writeTimeoutRequests {
		for _, reads := range []bool{true, false} {
			name := rq.name + "/stops reading"
			size := 16 << 20
			if reads {
				name, size = rq.name+"/reads slowly", 2<<20
			}
			t.Run(name, func(t *testing.T) {
				done := make(chan error, 1)
				ln, err := net.Listen("tcp", "127.0.0.63:0")
				if err != nil {
					t.Fatal(err)
				}
				serverTLS, clientTLS := tlsConfigs(t)
				ln = tls.NewListener(sendtimeout.Listener{Listener: smallSendBuffers{ln}, Timeout: timeout}, serverTLS)
				_, addr := serveFastOn(t, ln, bigAnswer(size, done), func(s *Server) { s.WriteTimeout = timeout })
				nc, _ := dialSmall(t, addr, "")
				c := tls.Client(nc, clientTLS)
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.WriteString(c, rq.raw); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				if !reads {
					if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
						t.Errorf("the handler's Write to a client that reads nothing: %v, want a timeout", err)
					}
					return
				}
				start := time.Now()
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("head: %v", err)
				}
				if got, err := tcptest.ReadSlowly(resp.Body, 10*time.Millisecond); err != nil || got != size {
					t.Fatalf("read %d of %d bytes in %v, then %v", got, size, time.Since(start), err)
				}
				if err := <-done; err != nil {
					t.Errorf("the handler's Write: %v", err)
				}
				if took := time.Since(start); took < 2*timeout {
					t.Errorf("the download took %v: the test wants one longer than the %v timeout", took, timeout)
				}
			})
		}
	}
}

// TestHandlerWriteDeadlineEndsWithItsAnswer: a write deadline a handler sets
// (http.ResponseController) bounds its own answer only, as with net/http, which clears it once
// the answer is written. The fast path kept it, so once it had passed it cut the next answer
// on the kept-alive connection: the client got the end of the connection instead.
func TestHandlerWriteDeadlineEndsWithItsAnswer(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/bounded" {
			io.WriteString(w, "next")
			return
		}
		w.Header().Set("Content-Length", "7")
		io.WriteString(w, "bounded")
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		// The answer is out; the deadline, passed by the time the next answer is written, is
		// left set when the handler returns.
		if err := rc.SetWriteDeadline(time.Now()); err != nil {
			t.Errorf("SetWriteDeadline: %v", err)
		}
	})
	for _, rq := range []struct{ name, extra string }{
		{"fast path", ""},
		{"handed off", "Content-Length: 0\r\n"},
	} {
		t.Run(rq.name, func(t *testing.T) {
			_, addr := serveFast(t, h, nil)
			c := dialSend(t, addr, "GET /bounded HTTP/1.1\r\nHost: a\r\n"+rq.extra+"\r\nGET /next HTTP/1.1\r\nHost: a\r\n"+rq.extra+"\r\n")
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			for _, want := range []string{"bounded", "next"} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("the answer %q: %v", want, err)
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || string(b) != want {
					t.Fatalf("the answer's body: %q, %v; want %q", b, err, want)
				}
			}
		})
	}
}
