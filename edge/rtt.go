package edge

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meridian-cdn/meridian/wire"
)

// Edge-measured RTT: besides the beacon reports of clients (beacon.go), the node measures the
// RTT of its own client connections and feeds it, for its own PoP, into the same per-network
// records of the latency map. The transport already keeps the figure: the kernel's smoothed
// RTT of a TCP connection (TCP_INFO, Linux only) and quic-go's for HTTP/3. A connection gives
// one sample, taken once the client has acknowledged response data, so that the figure holds
// more than the handshake's single round trip: when its second response is done (the client
// read the first one before asking again), else when it closes, and only if it carried a
// response. Connections from addresses that locate nothing (loopback, private, link-local),
// from trusted proxies (the RTT would be the proxy's) and from fleet nodes (fills) give none.

// RTTConfig controls the node's own RTT measurements for the latency map.
type RTTConfig struct {
	// Disable stops the node measuring its client connections' RTT; the latency map then
	// learns only from beacon reports. Default false (measure). The simulator disables it:
	// its WAN delay lives in a userspace dialer, which the kernel's and QUIC's RTT of
	// loopback connections never see.
	Disable bool `yaml:"disable"`

	// allowLoopback lets tests measure connections from 127.0.0.0/8, which production never
	// does.
	allowLoopback bool
}

// rttConnKey is the connection context key of a connection's *rttConn.
type rttConnKey struct{}

// rttConn is one client connection's sampling state.
type rttConn struct {
	n         *Node
	network   netip.Prefix
	transport string                       // "tcp" or "quic", for the metric
	probe     func() (time.Duration, bool) // the transport's smoothed RTT; false: none yet or gone
	served    atomic.Int32                 // responses finished
	done      atomic.Bool                  // sampled, or never to be
}

// rttEligible returns the network a connection from remote is sampled for, or false.
func (n *Node) rttEligible(remote net.Addr) (netip.Prefix, bool) {
	if n.cfg.RTT.Disable {
		return netip.Prefix{}, false
	}
	var ap netip.AddrPort
	switch a := remote.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsMulticast() || ip.IsLoopback() && !n.cfg.RTT.allowLoopback {
		return netip.Prefix{}, false
	}
	if n.cfg.trustedProxy(ip.String()) {
		return netip.Prefix{}, false
	}
	return wire.ClientNetwork(ip), true
}

// finished counts a response done on the connection; the second one takes the sample. A
// request from a fleet node marks the connection as never to be sampled.
func (c *rttConn) finished(fromPeer bool) {
	if c.done.Load() {
		return
	}
	if fromPeer {
		c.done.Store(true)
		return
	}
	if c.served.Add(1) >= 2 {
		c.sample()
	}
}

// closing takes the sample of a connection that served a response and closes before its
// second one was done.
func (c *rttConn) closing() {
	if !c.done.Load() && c.served.Load() > 0 {
		c.sample()
	}
	c.done.Store(true)
}

func (c *rttConn) sample() {
	rtt, ok := c.probe()
	if !ok || !c.done.CompareAndSwap(false, true) {
		return
	}
	c.n.recordRTT(c.network, c.transport, rtt)
}

// recordRTT folds one connection's RTT into its network's record and publishes it.
func (n *Node) recordRTT(network netip.Prefix, transport string, rtt time.Duration) {
	ms := float64(rtt) / float64(time.Millisecond)
	if !(ms > 0 && ms <= wire.MaxBeaconRTTMs) {
		return // the bounds a beacon report is held to
	}
	n.metrics.clientRTT.WithLabelValues(transport).Observe(rtt.Seconds())
	rec, ok := n.rum.addEdge(network, n.cfg.PoP, ms, n.clock())
	if !ok {
		n.metrics.latencySamples.WithLabelValues("edge", "limited").Inc()
		return
	}
	n.metrics.latencySamples.WithLabelValues("edge", "taken").Inc()
	n.publishLatency(rec)
}

// rttFinished is finish's hook: it counts the response on the request's connection.
func (n *Node) rttFinished(req *request) {
	if n.cfg.RTT.Disable {
		return // no connection carries a state: skip the context walk
	}
	if c, ok := req.r.Context().Value(rttConnKey{}).(*rttConn); ok {
		c.finished(req.fromPeer)
	}
}

// rttListener wraps accepted TCP connections from sampled networks, so that closing one can
// read its RTT before the socket goes.
type rttListener struct {
	net.Listener
	n *Node
}

func (l rttListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	network, ok := l.n.rttEligible(tc.RemoteAddr())
	if !ok {
		return c, nil
	}
	rc := &rttTCPConn{TCPConn: tc}
	rc.rtt = rttConn{n: l.n, network: network, transport: "tcp", probe: func() (time.Duration, bool) { return tcpRTT(tc) }}
	return rc, nil
}

// rttTCPConn is an accepted TCP connection being sampled. Embedding *net.TCPConn keeps every
// method net/http looks for (ReadFrom for sendfile, CloseWrite).
type rttTCPConn struct {
	*net.TCPConn
	rtt rttConn
}

// TCP lets raw I/O use the socket itself (internal/rawconn): the sampling changes only Close.
func (c *rttTCPConn) TCP() *net.TCPConn { return c.TCPConn }

func (c *rttTCPConn) Close() error {
	c.rtt.closing()
	return c.TCPConn.Close()
}

// rttListen wraps ln when the node measures RTT.
func (n *Node) rttListen(ln net.Listener) net.Listener {
	if ln == nil || n.cfg.RTT.Disable {
		return ln
	}
	return rttListener{Listener: ln, n: n}
}

// rttConnContext is the HTTP servers' ConnContext: it makes a sampled connection's state
// reachable from its requests (a TLS connection wraps the TCP one).
func (n *Node) rttConnContext(ctx context.Context, c net.Conn) context.Context {
	// A TLS connection, or one the HTTP/1.1 fast path handed over, wraps the TCP one.
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	if rc, ok := c.(*rttTCPConn); ok {
		return context.WithValue(ctx, rttConnKey{}, &rc.rtt)
	}
	return ctx
}

// quicRTT samples HTTP/3 connections; at close it waits for nothing but its own callbacks.
type quicRTT struct {
	n       *Node
	pending sync.WaitGroup // close callbacks registered and not yet run or stopped
}

// connContext is the HTTP/3 server's ConnContext. A QUIC connection has no Close of ours to
// hook, so the close sample runs when the connection's context ends.
func (q *quicRTT) connContext(ctx context.Context, qc *quic.Conn) context.Context {
	network, ok := q.n.rttEligible(qc.RemoteAddr())
	if !ok {
		return ctx
	}
	c := &rttConn{n: q.n, network: network, transport: "quic", probe: func() (time.Duration, bool) {
		st := qc.ConnectionStats()
		return st.SmoothedRTT, st.LatestRTT > 0 // LatestRTT is zero until the first RTT sample
	}}
	q.pending.Add(1)
	context.AfterFunc(qc.Context(), func() {
		defer q.pending.Done()
		c.closing()
	})
	return context.WithValue(ctx, rttConnKey{}, c)
}

// wait waits, at most until ctx ends, for the close samples of the connections the HTTP/3
// server has closed.
func (q *quicRTT) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		q.pending.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
