package dnsroute

import (
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// sourceLimiter counts the TCP connections open from each client address, so that one
// address cannot take every connection max_tcp_connections allows and leave the other
// clients waiting in the accept queue.
type sourceLimiter struct {
	max int
	mu  sync.Mutex
	n   map[netip.Addr]int // open connections by address; no entry at zero
}

func newSourceLimiter(max int) *sourceLimiter {
	return &sourceLimiter{max: max, n: make(map[netip.Addr]int)}
}

// acquire counts a connection from src, or says false when src has max open already.
func (l *sourceLimiter) acquire(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[src] >= l.max {
		return false
	}
	l.n[src]++
	return true
}

// release uncounts a connection from src.
func (l *sourceLimiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[src]--; l.n[src] <= 0 {
		delete(l.n, src)
	}
}

// open is how many connections from src are counted.
func (l *sourceLimiter) open(src netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[src]
}

// sourceListener refuses, at accept, a connection from an address that has its limit open
// already: it resets it at once, nothing read and nothing answered, and counts it. It sits
// inside the listener that bounds all connections, so that a refused one never takes a slot.
type sourceListener struct {
	net.Listener
	lim     *sourceLimiter
	refused prometheus.Counter
}

func (l sourceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return c, err
		}
		src, ok := sourceAddr(c.RemoteAddr())
		if !ok {
			return c, nil
		}
		if !l.lim.acquire(src) {
			l.refused.Inc()
			resetConn(c)
			continue
		}
		return &sourceConn{Conn: c, lim: l.lim, src: src}, nil
	}
}

// sourceAddr is the client address of a connection, IPv4-mapped addresses unmapped so that
// a dual-stack socket counts a client once.
func sourceAddr(a net.Addr) (netip.Addr, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip := ta.AddrPort().Addr()
		return ip.Unmap(), ip.IsValid()
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap(), err == nil
}

// resetConn closes c at once with a TCP reset where it can: lingering would hold the accept
// loop, and a reset leaves the server no TIME_WAIT to keep for a connection it refused.
func resetConn(c net.Conn) {
	if r, ok := c.(interface{ reset() error }); ok {
		r.reset()
		return
	}
	c.Close()
}

// sourceConn uncounts itself from its address once closed.
type sourceConn struct {
	net.Conn
	lim  *sourceLimiter
	src  netip.Addr
	once sync.Once
}

func (c *sourceConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.release(c.src) })
	return err
}
