package http1

import (
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/sendtimeout"
)

// cutConn is a connection whose first write a send deadline cuts short after cut bytes, as
// the kernel does when the deadline passes with the client's window closed after a part of
// the write: it writes cut bytes, waits for the deadline set on it to pass, and answers
// os.ErrDeadlineExceeded. Later writes go through whole.
type cutConn struct {
	net.Conn
	cut int

	mu       sync.Mutex
	deadline time.Time
	cutDone  bool
}

func (c *cutConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *cutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	first, deadline := !c.cutDone, c.deadline
	c.cutDone = true
	c.mu.Unlock()
	if !first || len(p) <= c.cut || deadline.IsZero() {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:c.cut])
	if err != nil {
		return n, err
	}
	<-time.After(time.Until(deadline)) // the deadline this write was under passes
	return n, os.ErrDeadlineExceeded
}

// TestPrefixConnTooLongWriteCutShort: the 414 prefixConn writes in place of net/http's 431
// reaches the client whole when the send timeout's deadline cuts its write short and
// sendtimeout goes on with the bytes not written, as it does on every handed-off plain
// connection. prefixConn answered such a write 0 bytes written, so the write went on with the
// whole 431, which went out after the part of the 414 already sent: one answer spliced into
// another.
func TestPrefixConnTooLongWriteCutShort(t *testing.T) {
	server, client := tcpPair(t, "127.0.0.65:0")
	pc := &prefixConn{Conn: &cutConn{Conn: server, cut: 20}, prefix: []byte("GET /aaaa")}
	if _, err := pc.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	w := sendtimeout.NewConn(pc, 400*time.Millisecond)
	// net/http's answer to a head over its limit, written in one write (server.go).
	const answer431 = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large"
	n, err := io.WriteString(w, answer431)
	if err != nil || n != len(answer431) {
		t.Fatalf("write = %d, %v; want %d, nil", n, err, len(answer431))
	}
	server.Close()
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != uriTooLong {
		t.Errorf("the client got %q, want %q", got, uriTooLong)
	}
}
