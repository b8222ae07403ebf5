// Package wan is the simulator's WAN latency model: great-circle distance, the one-way and
// round-trip delay of a leg, the least latency a request can take (Floor), and a dialer that
// makes real loopback connections pay the modelled delay. It imports nothing of Meridian.
package wan

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"time"
)

// EarthRadiusKm is the mean Earth radius used for great-circle distances.
const EarthRadiusKm = 6371.0

// GreatCircleKm is the haversine distance in kilometres between two points given in degrees.
func GreatCircleKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	φ1, φ2 := lat1*rad, lat2*rad
	dφ, dλ := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dφ/2)*math.Sin(dφ/2) + math.Cos(φ1)*math.Cos(φ2)*math.Sin(dλ/2)*math.Sin(dλ/2)
	return 2 * EarthRadiusKm * math.Asin(math.Min(1, math.Sqrt(a)))
}

// Model is the latency model of the simulated wide-area network. A leg is one network path
// between two parties (client->PoP, PoP->PoP or PoP->origin); a one-way trip over a leg of d
// km takes d/KmPerMs milliseconds of propagation plus HopOverheadMs for everything else on
// the way (routers, queues, last mile), and a round trip twice that. The zero value is
// disabled: no delay at all.
type Model struct {
	// KmPerMs is the propagation speed; fiber carries light at about 200 km per ms.
	// Zero or negative means no propagation delay.
	KmPerMs float64 `json:"km_per_ms"`
	// HopOverheadMs is the fixed cost of one one-way trip over a leg, in milliseconds.
	HopOverheadMs float64 `json:"hop_overhead_ms"`
	// Enabled turns the model on; when false every delay is zero.
	Enabled bool `json:"enabled"`
}

// OneWay is the modelled one-way delay over a leg of km kilometres.
func (w Model) OneWay(km float64) time.Duration {
	if !w.Enabled {
		return 0
	}
	ms := w.HopOverheadMs
	if w.KmPerMs > 0 && km > 0 {
		ms += km / w.KmPerMs
	}
	if !(ms > 0) {
		return 0
	}
	return time.Duration(ms * float64(time.Millisecond))
}

// RTT is the modelled round-trip time over a leg of km kilometres: twice OneWay.
func (w Model) RTT(km float64) time.Duration { return 2 * w.OneWay(km) }

// Dialer returns a dial function (the shape of http.Transport.DialContext) whose connections
// pay the modelled latency of a leg of km kilometres on real sockets:
//
//   - connection set-up costs one RTT (the TCP handshake before the first byte can be sent),
//     paid after the real dial succeeds and before the conn is returned;
//   - each request costs one RTT: the first Write on the conn, and the first Write after any
//     Read, waits one RTT before sending. Writes that follow writes (a request sent in pieces)
//     do not wait again, so one request/response exchange costs exactly one RTT.
//
// The whole RTT is charged on the dialling side so the server needs no wrapper. The dial
// honours ctx during the set-up delay; a Write waiting out its delay returns early with an
// error if the conn is closed or its write deadline passes. base nil means a zero net.Dialer.
func (w Model) Dialer(km float64, base *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if base == nil {
		base = &net.Dialer{}
	}
	rtt := w.RTT(km)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := base.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if rtt <= 0 {
			return c, nil
		}
		if err := Sleep(ctx, rtt); err != nil {
			c.Close()
			return nil, fmt.Errorf("dial %s: wait for modelled handshake: %w", addr, err)
		}
		return &wanConn{Conn: c, rtt: rtt, closed: make(chan struct{}), needWait: true}, nil
	}
}

// Sleep waits d (a simulated delay) or until ctx ends, whichever comes first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wanConn delays the first Write of each exchange by one RTT.
type wanConn struct {
	net.Conn
	rtt       time.Duration
	closed    chan struct{} // closed by Close, to end a waiting Write
	closeOnce sync.Once

	mu            sync.Mutex // guards needWait and writeDeadline
	needWait      bool       // the next Write starts an exchange and must wait one RTT
	writeDeadline time.Time
}

// NetConn returns the connection c delays, whose socket an HTTP client's pool may peek at.
func (c *wanConn) NetConn() net.Conn { return c.Conn }

func (c *wanConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		c.needWait = true
		c.mu.Unlock()
	}
	return n, err
}

func (c *wanConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	wait, deadline := c.needWait, c.writeDeadline
	c.needWait = false
	c.mu.Unlock()
	if wait {
		d := c.rtt
		timedOut := false
		if !deadline.IsZero() {
			if left := time.Until(deadline); left < d {
				d, timedOut = max(left, 0), true
			}
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.closed:
			t.Stop()
			return 0, net.ErrClosed
		}
		if timedOut {
			return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}
		}
	}
	return c.Conn.Write(b)
}

func (c *wanConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func (c *wanConn) SetDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *wanConn) SetWriteDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *wanConn) setWriteDeadline(t time.Time) {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
}

// Floor is the least latency the model allows a request: one RTT over the client's leg (two
// if the client had to open a new connection), plus one RTT over each fill leg the request
// took (edge->peer or shield, shield->origin; fill connections are taken to be kept alive).
func (w Model) Floor(newConn bool, clientKm float64, fillKms ...float64) time.Duration {
	d := w.RTT(clientKm)
	if newConn {
		d *= 2
	}
	for _, km := range fillKms {
		d += w.RTT(km)
	}
	return d
}
