// Package tcplink is a network link made of a TCP forwarder: it accepts connections on one
// address, joins each to a connection to one target, delays every byte by a fixed one-way time
// if asked, and can cut every connection through it on demand, refusing new ones until it is
// restored. That is the partition a real network makes between a client and a server (which
// the server itself cannot make to one client), and the latency of a long link. The simulator
// puts one between each PoP and NATS; tests cut NATS clients off with it (natstest.Cutter).
// It imports only the standard library.
package tcplink

import (
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Link forwards connections from its listener to a target. Close it when done.
type Link struct {
	ln     net.Listener
	target string
	delay  time.Duration
	wg     sync.WaitGroup // the accept loop and every pipe

	mu    sync.Mutex // guards conns and down
	conns map[net.Conn]struct{}
	down  bool
}

// dialTimeout bounds the dial to the target for each accepted connection.
const dialTimeout = 2 * time.Second

// Listen starts a link listening on addr (host:port; port 0 lets the kernel choose) and
// forwarding to target (host:port), each byte delivered delay after it was read, in either
// direction (0: at once).
func Listen(addr, target string, delay time.Duration) (*Link, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("link listen on %s: %w", addr, err)
	}
	l := &Link{ln: ln, target: target, delay: delay, conns: map[net.Conn]struct{}{}}
	l.wg.Go(l.accept)
	return l, nil
}

// Addr is the address clients connect to instead of the target's.
func (l *Link) Addr() net.Addr { return l.ln.Addr() }

func (l *Link) accept() {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", l.target, dialTimeout)
		l.mu.Lock()
		if err != nil || l.down {
			l.mu.Unlock()
			conn.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		l.conns[conn], l.conns[up] = struct{}{}, struct{}{}
		l.wg.Go(func() { l.pipe(up, conn) })
		l.wg.Go(func() { l.pipe(conn, up) })
		l.mu.Unlock()
	}
}

// pipe copies src to dst, each chunk delivered delay after it was read, then closes both.
func (l *Link) pipe(dst, src net.Conn) {
	defer func() {
		dst.Close()
		src.Close()
		l.mu.Lock()
		delete(l.conns, dst)
		delete(l.conns, src)
		l.mu.Unlock()
	}()
	if l.delay <= 0 {
		_, _ = io.Copy(dst, src)
		return
	}
	type chunk struct {
		b  []byte
		at time.Time
	}
	// The reader stamps each chunk as it arrives, so that a slow writer does not stretch the
	// delay of the chunks behind it.
	ch := make(chan chunk, 1024)
	var reader sync.WaitGroup
	reader.Go(func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(l.delay)}
			}
			if err != nil {
				return
			}
		}
	})
	defer reader.Wait()
	for c := range ch {
		if d := time.Until(c.at); d > 0 {
			t := time.NewTimer(d)
			<-t.C
		}
		if _, err := dst.Write(c.b); err != nil {
			src.Close() // ends the reader, which closes ch
			for range ch {
			}
			return
		}
	}
}

// Cut closes every connection through the link and refuses new ones until Restore.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for c := range l.conns {
		c.Close()
	}
}

// Restore lets connections through again.
func (l *Link) Restore() {
	l.mu.Lock()
	l.down = false
	l.mu.Unlock()
}

// Close stops the link: it stops listening, closes every connection and returns once every
// goroutine it started has exited.
func (l *Link) Close() error {
	err := l.ln.Close()
	l.Cut()
	l.wg.Wait()
	if err != nil {
		return fmt.Errorf("close link: %w", err)
	}
	return nil
}
