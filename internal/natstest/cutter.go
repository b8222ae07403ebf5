package natstest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Cutter forwards TCP to a NATS server and can cut the connections passing through it on
// demand: the partition a real network makes between one client and NATS, which a NATS server
// cannot do to one client. Give the client URL() instead of the server's.
type Cutter struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex // guards conns and down
	conns  []net.Conn
	down   bool
}

// NewCutter listens on ip (port chosen by the kernel) and forwards to the NATS URL natsURL until
// the test ends.
func NewCutter(t testing.TB, ip, natsURL string) *Cutter {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("cutter listen on %s: %v", ip, err)
	}
	c := &Cutter{ln: ln, target: strings.TrimPrefix(natsURL, "nats://")}
	c.wg.Go(c.accept)
	t.Cleanup(func() {
		c.ln.Close()
		c.Cut()
		c.wg.Wait()
	})
	return c
}

func (c *Cutter) accept() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		up, err := net.Dial("tcp", c.target)
		if c.down || err != nil {
			c.mu.Unlock()
			conn.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		c.conns = append(c.conns, conn, up)
		c.mu.Unlock()
		c.wg.Go(func() { _, _ = io.Copy(up, conn); up.Close() })
		c.wg.Go(func() { _, _ = io.Copy(conn, up); conn.Close() })
	}
}

// URL is the NATS URL that goes through the cutter.
func (c *Cutter) URL() string { return "nats://" + c.ln.Addr().String() }

// Cut closes every forwarded connection and refuses new ones until Restore.
func (c *Cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = true
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// Restore lets connections through again.
func (c *Cutter) Restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = false
}
