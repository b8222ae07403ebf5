package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.63:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { s.Close(); client.Close() })
	return s.(*net.TCPConn), client
}

// wrapped may do anything in Read and Write, as far as http1 can tell.
type wrapped struct{ net.Conn }

// sampled is as the edge's RTT sampling wraps a connection: Read and Write untouched.
type sampled struct{ *net.TCPConn }

func (s sampled) RawTCP() *net.TCPConn { return s.TCPConn }

// Only a plain TCP connection, or one that says it is one for I/O, gets raw I/O.
func TestRawIOOnlyForTCP(t *testing.T) {
	s, _ := tcpPair(t)
	for _, tc := range []struct {
		name string
		c    net.Conn
		raw  bool
	}{
		{"tcp", s, true},
		{"RawTCP wrapper", sampled{s}, true},
		{"other wrapper", wrapped{s}, false},
	} {
		if got := newRawIO(tc.c) != nil; got != tc.raw {
			t.Errorf("%s: raw I/O %v, want %v", tc.name, got, tc.raw)
		}
	}
}

// A write larger than the socket's buffers waits in the poller for the reader and sends
// every byte, in order, header and body alike; reads see the peer's bytes, then EOF.
func TestRawIOPartialWritesAndEOF(t *testing.T) {
	s, client := tcpPair(t)
	r := newRawIO(s)
	head := []byte("head:")
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB, beyond any send buffer
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(client, int64(len(head)+len(body))))
		got <- b
	}()
	n, err := r.write(head, body)
	if err != nil || n != len(head)+len(body) {
		t.Fatalf("write: %d, %v; want %d, nil", n, err, len(head)+len(body))
	}
	if b := <-got; !bytes.Equal(b, append(head, body...)) {
		t.Fatalf("client read %d bytes, not what was written", len(b))
	}

	client.Write([]byte("ping"))
	client.(*net.TCPConn).CloseWrite()
	var all []byte
	buf := make([]byte, 3)
	for {
		n, err := r.read(buf)
		all = append(all, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	if string(all) != "ping" {
		t.Fatalf("read %q, want %q", all, "ping")
	}
}

// A read deadline ends a raw read waiting in the poller, as it ends net.Conn's.
func TestRawIOReadDeadline(t *testing.T) {
	s, _ := tcpPair(t)
	r := newRawIO(s)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
}

// Through the server: an answer larger than the socket buffers arrives whole.
func TestLargeAnswer(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 16<<20)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	_, addr := serveFast(t, h, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(body))
	}
}
