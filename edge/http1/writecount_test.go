package http1

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/sendtimeout"
)

// wroteResult is what a handler's Writes returned, for TestWriteCountsWhatWentOut.
type wroteResult struct {
	sum     int64 // the bytes the Writes said they wrote
	n, size int   // the failed Write's count, and its p's length
	err     error // the failed Write's error; nil if every Write succeeded
}

// TestWriteCountsWhatWentOut: a Write that fails once part of p has gone out returns the bytes
// of p that went out, as io.Writer's contract asks, so the access log (which counts Write's
// returns) says what the client received. Write returned 0 for the whole of p: a client that
// took most of a large answer before it reset its connection, or stopped reading until the
// send timeout, was logged as having received none of it. A client that stops reading gets,
// once the connection ends, every byte the server's socket took: it reads them all, and the
// Writes' count must be that, give or take what the server's output held. One that resets
// loses what the socket buffers held: the count must lie between what it read and that plus
// the buffers (small here). On the raw path (writev beneath the send timeout) and over TLS
// (beneath it too), framed with a Content-Length or chunked, in one large Write or in many.
func TestWriteCountsWhatWentOut(t *testing.T) {
	const (
		total = 4 << 20   // the answer's body
		read  = 256 << 10 // what the client reads of it before it resets or stops reading
		// The most a count may exceed what a client that resets read by: the server's send
		// buffer (32 KiB, doubled by the kernel), the client's receive buffer (64 KiB,
		// doubled) and the output's, with room to spare.
		slack = 1 << 20
		// The most a count may exceed what a client received in all: the body bytes the
		// server's output held when the write failed (conn.out, the body held before
		// chunking), which Write counts as written, as bufio.Writer does.
		held = 8 << 10
	)
	writers := []struct {
		name    string
		piece   int  // the length of each Write's p
		declare bool // a Content-Length
	}{
		{"one write with a length", total, true},
		{"one write chunked", total, false},
		{"writes of 64 KiB with a length", 64 << 10, true},
		{"writes of 64 KiB chunked", 64 << 10, false},
		{"writes of 1000 bytes", 1000, true},
	}
	clients := []struct {
		name  string
		tls   bool
		reset bool // the client resets its connection; else it reads nothing more until the end
	}{
		{"resets", false, true},
		{"stops reading", false, false},
		{"over tls resets", true, true},
		{"over tls stops reading", true, false},
	}
	const timeout = 200 * time.Millisecond
	for _, cl := range clients {
		for _, wr := range writers {
			t.Run(cl.name+"/"+wr.name, func(t *testing.T) {
				done := make(chan wroteResult, 1)
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if wr.declare {
						w.Header().Set("Content-Length", strconv.Itoa(total))
					}
					p := make([]byte, wr.piece)
					var res wroteResult
					for left := total; left > 0; left -= len(p) {
						p = p[:min(len(p), left)]
						n, err := w.Write(p)
						res.sum += int64(n)
						if err != nil {
							res.n, res.size, res.err = n, len(p), err
							break
						}
					}
					done <- res
				})
				ln, err := net.Listen("tcp", "127.0.0.63:0")
				if err != nil {
					t.Fatal(err)
				}
				ln = smallSendBuffers{ln}
				var clientTLS *tls.Config
				if cl.tls {
					// The send timeout beneath TLS, as the edge puts it.
					var serverTLS *tls.Config
					serverTLS, clientTLS = tlsConfigs(t)
					ln = tls.NewListener(sendtimeout.Listener{Listener: ln, Timeout: timeout}, serverTLS)
				}
				_, addr := serveFastOn(t, ln, h, func(s *Server) { s.WriteTimeout = timeout })
				nc, _ := dialSmall(t, addr, "")
				var c net.Conn = nc
				if cl.tls {
					c = tls.Client(nc, clientTLS)
				}
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("head: %v", err)
				}
				if _, err := io.ReadFull(resp.Body, make([]byte, read)); err != nil {
					t.Fatalf("read the first %d bytes: %v", read, err)
				}
				if cl.reset {
					nc.(*net.TCPConn).SetLinger(0)
					nc.Close()
				}
				var res wroteResult
				select {
				case res = <-done:
				case <-time.After(20 * time.Second):
					t.Fatal("the handler still writes to a client that is gone")
				}
				if res.err == nil {
					t.Fatalf("the Writes wrote %d bytes without an error; want one once the client was gone", res.sum)
				}
				if res.n < 0 || res.n > res.size {
					t.Errorf("the failed Write = %d, %v; want 0 to %d bytes", res.n, res.err, res.size)
				}
				if res.sum < read || res.sum > read+slack {
					t.Errorf("the Writes wrote %d bytes, then %v; the client read %d: want from %d to %d",
						res.sum, res.err, read, read, read+slack)
				}
				if cl.reset {
					return
				}
				// The connection has ended: the client reads what the server's socket took.
				rest, _ := io.Copy(io.Discard, resp.Body)
				if got := read + rest; res.sum < got || res.sum > got+held {
					t.Errorf("the Writes wrote %d bytes, then %v; the client received %d: want from %d to %d",
						res.sum, res.err, got, got, got+held)
				}
			})
		}
	}
}
