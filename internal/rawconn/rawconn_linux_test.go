package rawconn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/tcptest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"golang.org/x/sys/unix"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.64:0")
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

// wrapped may do anything in Read and Write, as far as New can tell.
type wrapped struct{ net.Conn }

// sampled wraps a connection as the edge's RTT sampling does: Read and Write untouched.
type sampled struct{ *net.TCPConn }

func (s sampled) TCP() *net.TCPConn { return s.TCPConn }

// Only a TCP connection, or one that says its I/O is its TCP connection's, gets raw I/O.
func TestNewOnlyForTCP(t *testing.T) {
	s, _ := tcpPair(t)
	for _, tc := range []struct {
		name string
		c    net.Conn
		raw  bool
	}{
		{"tcp", s, true},
		{"TCPer", sampled{s}, true},
		{"other wrapper", wrapped{s}, false},
	} {
		if got := New(tc.c) != nil; got != tc.raw {
			t.Errorf("%s: raw I/O %v, want %v", tc.name, got, tc.raw)
		}
		if _, isRaw := Wrap(tc.c).(*Conn); isRaw != tc.raw {
			t.Errorf("%s: Wrap gave raw I/O %v, want %v", tc.name, isRaw, tc.raw)
		}
	}
	if got := New(sampled{s}).NetConn(); got != (sampled{s}) {
		t.Errorf("NetConn is %v, want the wrapped connection", got)
	}
}

// A write larger than the socket's buffers waits in the poller for the reader and sends
// every byte in order, both buffers of a Writev; reads see the peer's bytes, then io.EOF.
func TestPartialWritesAndEOF(t *testing.T) {
	s, client := tcpPair(t)
	c := New(s)
	head := []byte("head:")
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB, beyond any send buffer
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(client, int64(len(head)+len(body))))
		got <- b
	}()
	n, err := c.Writev(head, body)
	if err != nil || n != len(head)+len(body) {
		t.Fatalf("Writev: %d, %v; want %d, nil", n, err, len(head)+len(body))
	}
	if b := <-got; !bytes.Equal(b, append(head, body...)) {
		t.Fatalf("peer read %d bytes, not what was written", len(b))
	}

	client.Write([]byte("ping"))
	client.(*net.TCPConn).CloseWrite()
	var all []byte
	buf := make([]byte, 3)
	for {
		n, err := c.Read(buf)
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

// Deadlines and Close end raw reads and writes with the errors net.Conn gives.
func TestErrorsAsNetConn(t *testing.T) {
	s, _ := tcpPair(t)
	c := New(s)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout net.Error", err)
	}
	c.SetReadDeadline(time.Time{})

	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		done <- err
	}()
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed connection: %v, want net.ErrClosed", err)
	}
}

// Reads and writes from several goroutines at once keep each write whole (net.Conn allows
// concurrent use; the race detector checks the state each direction keeps).
func TestConcurrentUse(t *testing.T) {
	s, client := tcpPair(t)
	c := New(s)
	const writers, each = 4, 200
	msg := func(w int) []byte { return bytes.Repeat([]byte{byte('a' + w)}, 1000) }
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range each {
				if _, err := c.Write(msg(w)); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	echo := make(chan error, 1)
	go func() {
		_, err := client.Write(bytes.Repeat([]byte("z"), 1<<16))
		echo <- err
	}()
	readBack := make(chan int, 1)
	go func() {
		n := 0
		buf := make([]byte, 4096)
		for n < 1<<16 {
			k, err := c.Read(buf)
			if err != nil {
				break
			}
			n += k
		}
		readBack <- n
	}()
	got, err := io.ReadAll(io.LimitReader(client, writers*each*1000))
	wg.Wait()
	if err != nil || len(got) != writers*each*1000 {
		t.Fatalf("peer read %d bytes (%v), want %d", len(got), err, writers*each*1000)
	}
	for i := 0; i < len(got); i += 1000 {
		if !bytes.Equal(got[i:i+1000], bytes.Repeat(got[i:i+1], 1000)) {
			t.Fatalf("write at %d interleaved with another", i)
		}
	}
	if err := <-echo; err != nil {
		t.Fatal(err)
	}
	if n := <-readBack; n != 1<<16 {
		t.Fatalf("read %d bytes, want %d", n, 1<<16)
	}
}

// TestQuiet: a connection is quiet while nothing can be read from it; a byte from the peer
// or its close ends that, and the peek consumes nothing. It peeks whatever the read deadline
// (a pooled connection keeps its last one) and through a wrapper that says what it wraps.
func TestQuiet(t *testing.T) {
	for _, tc := range []struct {
		name, how string
		wrap      func(net.Conn) net.Conn
		deadline  time.Time
	}{
		{"a byte", "byte", func(c net.Conn) net.Conn { return c }, time.Time{}},
		{"a close", "close", func(c net.Conn) net.Conn { return c }, time.Time{}},
		{"a byte past the read deadline", "byte", func(c net.Conn) net.Conn { return c }, time.Unix(1, 0)},
		{"a byte through a Conn", "byte", func(c net.Conn) net.Conn { return New(c) }, time.Time{}},
		{"a byte through NetConn", "byte", func(c net.Conn) net.Conn { return netConner{wrapped{c}} }, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			p := NewProber(tc.wrap(client))
			if p == nil {
				t.Fatal("NewProber found no socket")
			}
			client.SetReadDeadline(tc.deadline)
			if !p.Quiet() {
				t.Fatal("Quiet() = false on a connection nobody wrote to")
			}
			if tc.how == "byte" {
				server.Write([]byte("x"))
			} else {
				server.Close()
			}
			deadline := time.Now().Add(5 * time.Second)
			for p.Quiet() {
				if time.Now().After(deadline) {
					t.Fatalf("still quiet 5 s after the peer's %s", tc.how)
				}
				time.Sleep(time.Millisecond) // polling a socket: no event to await
			}
			client.SetReadDeadline(time.Time{})
			var b [2]byte
			n, err := client.Read(b[:])
			if tc.how == "byte" && (n != 1 || b[0] != 'x' || err != nil) || tc.how == "close" && err != io.EOF {
				t.Errorf("Read after the peek: %d %q, %v; the peek must leave what it saw", n, b[:n], err)
			}
			if tc.how == "byte" && !p.Quiet() {
				t.Error("Quiet() = false once the byte was read")
			}
		})
	}
	if NewProber(wrapped{nil}) != nil {
		t.Error("NewProber of a connection that hides its socket: want nil")
	}
}

// netConner says what it wraps, as crypto/tls's connections do.
type netConner struct{ wrapped }

func (c netConner) NetConn() net.Conn { return c.Conn }

// WriteRead sends the request and reads the answer without a read of the empty socket first:
// the answer, which the peer sends only once it has the whole request, wakes the wait. Two
// exchanges in a row on one connection: its state does not carry over.
func TestWriteReadOneRead(t *testing.T) {
	s, client := tcpPair(t)
	c := New(client)
	go func() {
		br := bufio.NewReader(s)
		for _, want := range []string{"first\n", "second\n"} {
			line, err := br.ReadString('\n')
			if err != nil || line != want {
				return
			}
			// A late answer, as an origin's: a read right after the write would find nothing.
			time.Sleep(20 * time.Millisecond)
			s.Write([]byte("answer to " + line))
		}
	}()
	for _, req := range []string{"first\n", "second\n"} {
		c.r.empty = 0
		buf := make([]byte, 64)
		n, err := c.WriteRead([]byte(req), buf)
		if want := "answer to " + req; err != nil || string(buf[:n]) != want {
			t.Fatalf("WriteRead(%q) = %q, %v; want %q", req, buf[:n], err, want)
		}
		if c.r.empty != 0 {
			t.Errorf("WriteRead(%q) read the empty socket %d times, want 0", req, c.r.empty)
		}
	}
}

// WriteRead edge cases, each with a peer that answers every line it gets.
func TestWriteRead(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB, beyond any send buffer
	for _, tc := range []struct {
		name string
		out  []byte
		p    int    // the read buffer's size
		want string // what the reads return, WriteRead's first
	}{
		{"a request the socket takes at once", []byte("hello\n"), 64, "got 6\n"},
		{"a request larger than the socket takes at once", append(big, '\n'), 64, "got " + strconv.Itoa(len(big)+1) + "\n"},
		{"no request: a plain read", nil, 64, ""},
		{"no buffer: a plain write", []byte("hello\n"), 0, "got 6\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, client := tcpPair(t)
			c := New(client)
			go func() {
				br := bufio.NewReaderSize(s, 64<<10)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					s.Write([]byte("got " + strconv.Itoa(len(line)) + "\n"))
				}
			}()
			client.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.out == nil {
				s.Write([]byte("unasked\n"))
				tc.want = "unasked\n"
			}
			buf := make([]byte, tc.p)
			n, err := c.WriteRead(tc.out, buf)
			got := string(buf[:n])
			buf = make([]byte, 64)
			for err == nil && len(got) < len(tc.want) {
				n, err = c.Read(buf)
				got += string(buf[:n])
			}
			if err != nil || got != tc.want {
				t.Errorf("read %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// A connection with something to read before the exchange (bytes, the peer's end of the
// stream, a reset: a kept-alive connection the upstream wrote to or closed while idle) fails
// with ErrNotQuiet, sends nothing and reads nothing, whatever came when.
func TestWriteReadNotQuiet(t *testing.T) {
	for _, how := range []string{"bytes", "close", "reset"} {
		t.Run(how, func(t *testing.T) {
			s, client := tcpPair(t)
			c := New(client)
			switch how {
			case "bytes":
				s.Write([]byte("stray"))
			case "close":
				s.CloseWrite() // the peer still reads: anything sent would reach it
			case "reset":
				s.SetLinger(0)
				s.Close()
			}
			p := NewProber(client)
			wait.For(t, 5*time.Second, "something to read", func() bool { return !p.Quiet() })
			client.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.WriteRead([]byte("hello\n"), make([]byte, 8)); err != ErrNotQuiet {
				t.Fatalf("WriteRead = %v, want ErrNotQuiet", err)
			}
			switch how {
			case "bytes":
				b := make([]byte, 8)
				if n, err := c.Read(b); string(b[:n]) != "stray" || err != nil {
					t.Errorf("Read after WriteRead = %q, %v; want the stray bytes, unread", b[:n], err)
				}
			case "close":
				s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if n, err := s.Read(make([]byte, 8)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("the peer read %d bytes, %v; want nothing sent", n, err)
				}
			}
		})
	}
}

// Errors: each returns at once (not at the deadline, 10 s off), as a *net.OpError that says
// which side failed, or the end of the stream.
func TestWriteReadErrors(t *testing.T) {
	big := make([]byte, 8<<20)
	for _, tc := range []struct {
		name string
		out  []byte
		peer func(s *net.TCPConn, client net.Conn) // what happens, started before WriteRead
		op   string                                // the error's Op; "" for io.EOF
	}{
		{"our side shut for writing", []byte("hello\n"), func(s *net.TCPConn, client net.Conn) {
			client.(*net.TCPConn).CloseWrite()
		}, "write"},
		{"the peer closes once it has the request", []byte("hello\n"), func(s *net.TCPConn, _ net.Conn) {
			go func() { io.ReadFull(s, make([]byte, 6)); s.Close() }()
		}, ""},
		{"the peer resets once it has the request", []byte("hello\n"), func(s *net.TCPConn, _ net.Conn) {
			go func() { io.ReadFull(s, make([]byte, 6)); s.SetLinger(0); s.Close() }()
		}, "read"},
		{"the peer resets once it has a request sent in parts", big, func(s *net.TCPConn, client net.Conn) {
			smallBuffers(s, client)
			go func() { io.ReadFull(s, make([]byte, len(big))); s.SetLinger(0); s.Close() }()
		}, "read"},
		{"the peer resets amid a request sent in parts", big, func(s *net.TCPConn, client net.Conn) {
			smallBuffers(s, client)
			go func() { io.ReadFull(s, make([]byte, 1<<20)); s.SetLinger(0); s.Close() }()
		}, "write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, client := tcpPair(t)
			c := New(client)
			tc.peer(s, client)
			client.SetDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			_, err := c.WriteRead(tc.out, make([]byte, 8))
			var op *net.OpError
			switch {
			case tc.op == "" && err != io.EOF:
				t.Errorf("WriteRead = %v, want io.EOF", err)
			case tc.op != "" && (!errors.As(err, &op) || op.Op != tc.op || errors.Is(err, os.ErrDeadlineExceeded)):
				t.Errorf("WriteRead = %v, want a *net.OpError of the %s", err, tc.op)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("WriteRead returned after %v", d)
			}
		})
	}
}

// smallBuffers makes the socket buffers between s and client small, so that a large write
// goes in parts.
func smallBuffers(s *net.TCPConn, client net.Conn) {
	s.SetReadBuffer(64 << 10)
	client.(*net.TCPConn).SetWriteBuffer(64 << 10)
}

// A WriteRead whose answer never comes ends at the read deadline, as a Read does: one already
// past sends nothing; one put in the past while it waits (the fetch's abort) ends it at once.
func TestWriteReadDeadline(t *testing.T) {
	t.Run("past", func(t *testing.T) {
		s, client := tcpPair(t)
		c := New(client)
		client.SetReadDeadline(time.Now().Add(-time.Second))
		_, err := c.WriteRead([]byte("hello\n"), make([]byte, 8))
		var op *net.OpError
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &op) {
			t.Fatalf("WriteRead past its deadline: %v, want a *net.OpError past the deadline", err)
		}
		s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _ := s.Read(make([]byte, 8)); n != 0 {
			t.Errorf("the peer got %d bytes of a request sent past the deadline", n)
		}
	})
	t.Run("reached", func(t *testing.T) {
		_, client := tcpPair(t)
		c := New(client)
		client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.WriteRead([]byte("hello\n"), make([]byte, 8))
		var op *net.OpError
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &op) || op.Op != "raw-read" {
			t.Fatalf("WriteRead with no answer: %v, want a *net.OpError of the read past the deadline", err)
		}
	})
	t.Run("aborted", func(t *testing.T) {
		s, client := tcpPair(t)
		c := New(client)
		go func() {
			io.ReadFull(s, make([]byte, 6)) // the request arrived; it is never answered
			client.SetDeadline(time.Unix(1, 0))
		}()
		start := time.Now()
		if _, err := c.WriteRead([]byte("hello\n"), make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("aborted WriteRead: %v, want os.ErrDeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("aborted WriteRead returned after %v", d)
		}
	})
}

// loopEcho serves lines on c inside one Loop: each whole line is answered "echo: LINE" at
// once. It returns the Loop's error; onLine, if set, runs after each answer, inside the step.
func loopEcho(c *Conn, onLine func(line string)) error {
	var buf []byte
	p := make([]byte, 256)
	return c.Loop(func() bool {
		for {
			for {
				i := bytes.IndexByte(buf, '\n')
				if i < 0 {
					break
				}
				line := string(buf[:i])
				buf = buf[i+1:]
				if _, err := c.Write([]byte("echo: " + line + "\n")); err != nil {
					return false
				}
				if onLine != nil {
					onLine(line)
				}
			}
			n, err := c.LoopRead(p)
			if err == ErrWouldBlock {
				return true
			}
			if err != nil {
				return false
			}
			buf = append(buf, p[:n]...)
		}
	})
}

// A client that sends its next line only once it has the answer to the last: the Loop reads
// each line once and waits without the read that would find the socket empty (Read makes
// one per line). A spurious wake-up may still cost one, rarely.
func TestLoopReadsOnceAnswerToAnswer(t *testing.T) {
	s, client := tcpPair(t)
	c := New(s)
	done := make(chan error, 1)
	go func() { done <- loopEcho(c, nil) }()
	const lines = 200
	br := bufio.NewReader(client)
	for i := range lines {
		line := "line " + strconv.Itoa(i)
		if _, err := client.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		if got, err := br.ReadString('\n'); err != nil || got != "echo: "+line+"\n" {
			t.Fatalf("answer %d = %q, %v", i, got, err)
		}
	}
	client.Close()
	if err := <-done; err != nil {
		t.Fatalf("Loop after the client's end: %v, want nil (the step saw io.EOF)", err)
	}
	if c.l.empty > lines/4 {
		t.Errorf("the Loop read the empty socket %d times for %d lines, want few", c.l.empty, lines)
	}
}

// Bytes that arrive while a step still runs, after its read emptied the socket, wake the
// wait that follows: the line sent while the step holds on (a handler taking its time) gets
// its answer, where a fresh RawConn.Read that skipped its first read would wait for ever.
func TestLoopWakesForBytesDuringStep(t *testing.T) {
	s, client := tcpPair(t)
	c := New(s)
	pr := NewProber(s)
	sent := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- loopEcho(c, func(line string) {
			if line != "first" {
				return
			}
			<-sent
			for end := time.Now().Add(5 * time.Second); pr.Quiet() && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond) // the handler's time, in which the poller hears of it
		})
	}()
	br := bufio.NewReader(client)
	client.Write([]byte("first\n"))
	if got, err := br.ReadString('\n'); err != nil || got != "echo: first\n" {
		t.Fatalf("first answer = %q, %v", got, err)
	}
	client.Write([]byte("second\n"))
	close(sent)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := br.ReadString('\n'); err != nil || got != "echo: second\n" {
		t.Fatalf("second answer = %q, %v; want it without waiting for more bytes", got, err)
	}
	client.Close()
	<-done
}

// ShutdownBoth ends a Loop waiting to read (the step reads the end) without Close, which would
// wait for the Loop; the peer reads the end of the stream. A deadline ends a Loop's wait too.
func TestLoopShutdownAndDeadline(t *testing.T) {
	s, client := tcpPair(t)
	c := New(s)
	done := make(chan error, 1)
	go func() { done <- loopEcho(c, nil) }()
	if err := c.ShutdownBoth(); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the peer read %d bytes, %v; want io.EOF", n, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Loop after ShutdownBoth: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Loop still waits after ShutdownBoth")
	}

	s2, _ := tcpPair(t)
	c2 := New(s2)
	c2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := loopEcho(c2, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Loop past its deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	if n, err := c2.LoopRead(make([]byte, 1)); err != ErrWouldBlock {
		t.Errorf("LoopRead outside a Loop = %d, %v; want ErrWouldBlock", n, err)
	}
}

// A HangupWatch reports, while a Loop holds each connection's read side, the connections
// whose peers end them (their end of the stream, a reset), each once, and nothing for bytes
// arriving or for a connection removed; Peek tells an end from bytes in front of it without
// taking anything, so the Loop still reads the bytes. Close ends Wait.
func TestHangupWatchDuringLoop(t *testing.T) {
	w, err := NewHangupWatch()
	if err != nil {
		t.Fatal(err)
	}
	reported := make(chan uint64, 16)
	waited := make(chan error, 1)
	go func() { waited <- w.Wait(func(id uint64) { reported <- id }) }()
	next := func(what string) uint64 {
		t.Helper()
		select {
		case id := <-reported:
			return id
		case <-time.After(5 * time.Second):
			t.Fatalf("no report for %s", what)
			return 0
		}
	}
	none := func(what string) {
		t.Helper()
		select {
		case id := <-reported:
			t.Fatalf("%s: reported %#x", what, id)
		case <-time.After(20 * time.Millisecond):
		}
	}

	type pair struct {
		c      *Conn
		client net.Conn
		loop   chan error
		held   chan struct{}
	}
	var ps []*pair
	for range 5 {
		s, client := tcpPair(t)
		p := &pair{c: New(s), client: client, loop: make(chan error, 1), held: make(chan struct{})}
		go func() {
			// The step holds the read side, as a handler running in the HTTP server's Loop.
			p.loop <- p.c.Loop(func() bool { <-p.held; return false })
		}()
		ps = append(ps, p)
	}
	// High bits too: the id is the kernel's whole 64-bit data.
	ids := []uint64{1, 1 << 40, 3, 0xfedcba9876543210, 5}
	ps[4].client.(*net.TCPConn).CloseWrite() // ended before it is added
	wait.For(t, 5*time.Second, "the end to arrive", func() bool { return ps[4].c.Peek() == PeekGone })
	for i, p := range ps {
		if err := w.Add(p.c, ids[i]); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	if id := next("a connection ended before it was added"); id != ids[4] {
		t.Fatalf("reported %#x for a connection ended before it was added, want %#x", id, ids[4])
	}
	for i := range 4 {
		if got := ps[i].c.Peek(); got != PeekQuiet {
			t.Fatalf("Peek of a quiet connection = %v", got)
		}
	}
	none("quiet connections")

	ps[0].client.Write([]byte("GET /"))
	wait.For(t, 5*time.Second, "the bytes to arrive", func() bool { return ps[0].c.Peek() == PeekData })
	none("bytes")
	ps[0].client.(*net.TCPConn).CloseWrite()
	if id := next("an end behind bytes"); id != ids[0] {
		t.Fatalf("reported %#x for an end on %#x", id, ids[0])
	}
	if got := ps[0].c.Peek(); got != PeekData {
		t.Errorf("Peek at an end behind bytes = %v, want PeekData", got)
	}
	none("the same end again")

	ps[1].client.(*net.TCPConn).CloseWrite()
	if id := next("the end"); id != ids[1] {
		t.Fatalf("reported %#x for the end on %#x", id, ids[1])
	}
	if got := ps[1].c.Peek(); got != PeekGone {
		t.Errorf("Peek at the end = %v, want PeekGone", got)
	}

	ps[2].client.(*net.TCPConn).SetLinger(0)
	ps[2].client.Close() // a reset
	if id := next("a reset"); id != ids[2] {
		t.Fatalf("reported %#x for a reset on %#x", id, ids[2])
	}
	if got := ps[2].c.Peek(); got != PeekGone {
		t.Errorf("Peek after a reset = %v, want PeekGone", got)
	}

	if err := w.Remove(ps[3].c); err != nil {
		t.Fatal(err)
	}
	ps[3].client.(*net.TCPConn).CloseWrite()
	none("a removed connection")
	if err := w.Add(ps[3].c, 9); err != nil { // removed, it may be added again
		t.Fatalf("Add after Remove: %v", err)
	}
	if id := next("an end on a connection added again"); id != 9 {
		t.Fatalf("reported %#x, want 9", id)
	}

	// The Loop still reads what Peek and the watch left in place.
	close(ps[0].held)
	if err := <-ps[0].loop; err != nil {
		t.Fatal(err)
	}
	ps[0].c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(ps[0].c)
	if err != nil || string(b) != "GET /" {
		t.Errorf("read %q, %v after the watch; want GET / and the end", b, err)
	}
	for _, p := range ps[1:] {
		close(p.held)
		<-p.loop
	}

	w.Close()
	select {
	case err := <-waited:
		if err == nil {
			t.Error("Wait returned nil after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait still runs after Close")
	}
}

// The client's end of the stream, arrived behind its last bytes before the wake-up that reads
// them, is read at once: a read that returns fewer bytes than asked for has taken the end
// (FIN) along without a further announcement, so it must not count as emptying the socket.
func TestLoopSeesEndBehindLastBytes(t *testing.T) {
	s, client := tcpPair(t)
	c := New(s)
	sent := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- loopEcho(c, func(line string) {
			if line == "first" {
				<-sent // the second line and the end arrive while this step runs
			}
		})
	}()
	br := bufio.NewReader(client)
	client.Write([]byte("first\n"))
	if got, err := br.ReadString('\n'); err != nil || got != "echo: first\n" {
		t.Fatalf("first answer = %q, %v", got, err)
	}
	client.Write([]byte("second\n"))
	client.(*net.TCPConn).CloseWrite()
	wait.For(t, 5*time.Second, "the client's end to reach the server", func() bool { return tcptest.CloseWaiting(t, s) })
	close(sent)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := br.ReadString('\n'); err != nil || got != "echo: second\n" {
		t.Fatalf("second answer = %q, %v", got, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Loop after the client's end: %v, want nil (the step saw io.EOF)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Loop still waits after reading the client's last bytes and end")
	}
}

// A reset that arrived behind the client's last bytes before the wake-up that reads them is
// announced by nothing, and the kernel counts nothing left after them: LoopRead then says
// ErrWouldBlock, and a step that waited for the rest of what it read would wait until the
// deadline. LoopReadMore reads once more and finds the reset; on a socket that is only empty
// it says ErrWouldBlock after that one read, and without a read from then on, as LoopRead does.
func TestLoopReadMoreSeesResetBehindLastBytes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reset     bool
		wantMore  string // what LoopReadMore returns
		wantEmpty int    // reads that found the socket empty
	}{
		{"reset", true, "connection reset", 0},
		{"empty", false, ErrWouldBlock.Error(), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, client := tcpPair(t)
			c := New(s)
			client.Write([]byte("half a"))
			if tc.reset {
				client.(*net.TCPConn).SetLinger(0) // Close sends RST
				client.Close()
				wait.For(t, 5*time.Second, "the reset to reach the server", func() bool { return tcptest.State(t, s) == unix.BPF_TCP_CLOSE })
			} else {
				wait.For(t, 5*time.Second, "the bytes to reach the server", func() bool { return !NewProber(s).Quiet() })
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a step that waits fails the test
			p := make([]byte, 64)
			var got []string
			read := func(name string, r func([]byte) (int, error)) {
				n, err := r(p)
				switch {
				case errors.Is(err, syscall.ECONNRESET):
					got = append(got, fmt.Sprintf("%s %q connection reset", name, p[:n]))
				default:
					got = append(got, fmt.Sprintf("%s %q %v", name, p[:n], err))
				}
			}
			err := c.Loop(func() bool {
				read("LoopRead", c.LoopRead)
				read("LoopRead", c.LoopRead)
				read("LoopReadMore", c.LoopReadMore)
				if !tc.reset {
					read("LoopReadMore", c.LoopReadMore) // without a read
				}
				return false
			})
			if err != nil {
				t.Fatalf("Loop: %v", err)
			}
			want := []string{
				`LoopRead "half a" <nil>`,
				`LoopRead "" ` + ErrWouldBlock.Error(),
				`LoopReadMore "" ` + tc.wantMore,
			}
			if !tc.reset {
				want = append(want, want[2])
			}
			if !slices.Equal(got, want) {
				t.Errorf("reads:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if c.l.empty != tc.wantEmpty {
				t.Errorf("reads that found the socket empty: %d, want %d", c.l.empty, tc.wantEmpty)
			}
		})
	}
}
