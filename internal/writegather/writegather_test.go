package writegather

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// pair returns a gathered client side and the plain server side of a loopback TCP connection.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	g := New(c)
	t.Cleanup(func() { g.Close(); s.Close() })
	return g, s
}

// TestOrderAndContent: concurrent writers' writes arrive whole, each writer's in its order, and
// nothing is lost or added, with Close sending what was still gathered.
func TestOrderAndContent(t *testing.T) {
	g, s := pair(t)
	const writers, per = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				// Sizes from a few bytes to a TLS record's worth.
				rec := fmt.Appendf(nil, "<%d:%d:%s>", w, i, bytes.Repeat([]byte{'x'}, (i*37)%17000))
				if _, err := g.Write(rec); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(s); got <- b }()
	wg.Wait()
	if err := g.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	b := <-got
	next := make([]int, writers)
	n := 0
	for len(b) > 0 {
		end := bytes.IndexByte(b, '>')
		if b[0] != '<' || end < 0 {
			t.Fatalf("record %d torn: %.40q", n, b)
		}
		var w, i int
		parts := strings.SplitN(string(b[1:end]), ":", 3)
		if len(parts) != 3 {
			t.Fatalf("record %d unreadable: %.40q", n, b)
		}
		w, _ = strconv.Atoi(parts[0])
		i, _ = strconv.Atoi(parts[1])
		rest := parts[2]
		if i != next[w] {
			t.Fatalf("writer %d: record %d arrived when %d was due", w, i, next[w])
		}
		if len(rest) != (i*37)%17000 {
			t.Fatalf("writer %d record %d: %d bytes of payload, want %d", w, i, len(rest), (i*37)%17000)
		}
		next[w]++
		n++
		b = b[end+1:]
	}
	if n != writers*per {
		t.Fatalf("%d records arrived, want %d", n, writers*per)
	}
}

// gathered is how many bytes wait in g's buffer.
func gathered(g *Conn) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.buf == nil {
		return 0
	}
	return len(*g.buf)
}

// fillUntilGathering writes small records to a peer that does not read until the socket is
// full and at least n bytes wait gathered behind the blocked send.
func fillUntilGathering(t *testing.T, g *Conn, n int) {
	t.Helper()
	chunk := make([]byte, 4<<10) // under minDirect: gathered
	for i := 0; gathered(g) < n; i++ {
		if i > 1<<14 { // 64 MiB: far more than any socket buffer
			t.Fatal("writes never started to gather")
		}
		if _, err := g.Write(chunk); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
}

// TestSlowReaderBlocksWriter: a peer that does not read makes Write wait once maxPending bytes
// are gathered, and the write deadline ends the wait with a timeout.
func TestSlowReaderBlocksWriter(t *testing.T) {
	g, _ := pair(t)
	if err := g.SetWriteDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4<<10)
	start := time.Now()
	var err error
	most := 0
	for err == nil && time.Since(start) < 10*time.Second {
		_, err = g.Write(chunk)
		most = max(most, gathered(g))
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if most > maxPending {
		t.Errorf("%d bytes gathered, more than %d", most, maxPending)
	}
	if most < maxPending-len(chunk) {
		t.Errorf("at most %d bytes gathered before the timeout: Write did not wait for room", most)
	}
	if _, err := g.Write([]byte("x")); err == nil {
		t.Fatal("write after the deadline succeeded")
	}
}

// TestDeadlineSetWhileBlocked: a deadline set while a Write waits for room (and its send is
// stuck) ends both, as on a plain connection.
func TestDeadlineSetWhileBlocked(t *testing.T) {
	g, _ := pair(t)
	fillUntilGathering(t, g, 1)
	failed := make(chan error, 1)
	go func() {
		chunk := make([]byte, 4<<10)
		for {
			if _, err := g.Write(chunk); err != nil {
				failed <- err
				return
			}
		}
	}()
	wait.For(t, 10*time.Second, "the writer to wait for room", func() bool { return gathered(g) > maxPending-8<<10 })
	if err := g.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("err = %v, want a timeout", err)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Write still blocked 5 s after a deadline 100 ms away")
	}
}

// TestExpiredDeadline: once the deadline has passed, Write fails at once.
func TestExpiredDeadline(t *testing.T) {
	g, _ := pair(t)
	if err := g.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{10, 64 << 10} {
		if _, err := g.Write(make([]byte, size)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write of %d bytes after the deadline: %v, want a timeout", size, err)
		}
	}
	if err := g.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Write([]byte("x")); err != nil {
		t.Fatalf("write with the deadline cleared: %v", err)
	}
}

// TestPastDeadlineLetsGatheredBytesLeave: crypto/tls sets the write deadline to now right after
// queueing its close_notify; what was gathered before (behind a send the full socket blocks)
// still reaches the peer once it reads.
func TestPastDeadlineLetsGatheredBytesLeave(t *testing.T) {
	g, s := pair(t)
	fillUntilGathering(t, g, 64<<10)
	tail := []byte("close_notify")
	if _, err := g.Write(tail); err != nil {
		t.Fatal(err)
	}
	if err := g.SetWriteDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(s); got <- b }()
	if err := g.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if b := <-got; !bytes.HasSuffix(b, tail) || len(b)%(4<<10) != len(tail) {
		t.Fatalf("peer read %d bytes ending %q, want whole 4 KiB records then %q", len(b), b[max(0, len(b)-12):], tail)
	}
}

// TestWriteAfterClose fails with net.ErrClosed.
func TestWriteAfterClose(t *testing.T) {
	g, _ := pair(t)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// TestCloseWithStuckPeer: Close returns within about closeWait when the peer reads nothing,
// whether the bytes wait gathered or in a write of the caller's, and that write fails.
func TestCloseWithStuckPeer(t *testing.T) {
	for _, size := range []int{1 << 10, 64 << 10} { // gathered; written directly
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			g, _ := pair(t)
			chunk := make([]byte, size)
			var writes atomic.Int64
			failed := make(chan error, 1)
			go func() {
				for {
					if _, err := g.Write(chunk); err != nil {
						failed <- err
						return
					}
					writes.Add(1)
				}
			}()
			// A write that cannot return is not an event: the writer is taken as stuck once
			// no write has returned for 200 ms.
			last, since := int64(-1), time.Now()
			wait.For(t, 20*time.Second, "the writer to be stuck", func() bool {
				if n := writes.Load(); n != last {
					last, since = n, time.Now()
				}
				return time.Since(since) > 200*time.Millisecond
			})
			select {
			case err := <-failed:
				t.Fatalf("write failed before Close: %v", err)
			default:
			}
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- g.Close() }()
			select {
			case <-done:
			case <-time.After(closeWait + 5*time.Second):
				t.Fatal("Close did not return with a peer that does not read")
			}
			if d := time.Since(start); d > closeWait+2*time.Second {
				t.Errorf("Close took %v", d)
			}
			select {
			case err := <-failed:
				if err == nil {
					t.Error("the stuck write returned no error")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the stuck write did not return after Close")
			}
		})
	}
}

// TestHTTP2OverTLS: an HTTP/2 server on gathered connections answers concurrent streams in
// full.
func TestHTTP2OverTLS(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(body)
	}))
	srv.EnableHTTP2 = true
	srv.Listener = Listener{Listener: srv.Listener}
	srv.StartTLS()
	defer srv.Close()
	c := srv.Client()
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			res, err := c.Get(srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			if err != nil || res.ProtoMajor != 2 || !bytes.Equal(b, body) {
				t.Errorf("proto %d, %d bytes, err %v", res.ProtoMajor, len(b), err)
			}
		})
	}
	wg.Wait()
}
