package natstest

import (
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/internal/tcplink"
)

// Cutter forwards TCP to a NATS server and can cut the connections passing through it on
// demand: the partition a real network makes between one client and NATS, which a NATS server
// cannot do to one client. Give the client URL() instead of the server's. It is a
// tcplink.Link without delay, closed when the test ends.
type Cutter struct{ l *tcplink.Link }

// NewCutter listens on ip (port chosen by the kernel) and forwards to the NATS URL natsURL until
// the test ends.
func NewCutter(t testing.TB, ip, natsURL string) *Cutter {
	t.Helper()
	l, err := tcplink.Listen(ip+":0", strings.TrimPrefix(natsURL, "nats://"), 0)
	if err != nil {
		t.Fatalf("cutter: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return &Cutter{l: l}
}

// URL is the NATS URL that goes through the cutter.
func (c *Cutter) URL() string { return "nats://" + c.l.Addr().String() }

// Cut closes every forwarded connection and refuses new ones until Restore.
func (c *Cutter) Cut() { c.l.Cut() }

// Restore lets connections through again.
func (c *Cutter) Restore() { c.l.Restore() }
