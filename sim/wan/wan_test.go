package wan

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"
)

func TestGreatCircleKm(t *testing.T) {
	tests := []struct {
		name                   string
		lat1, lon1, lat2, lon2 float64
		want, tol              float64
	}{
		{"London-New York", 51.5074, -0.1278, 40.7128, -74.0060, 5570, 10},
		{"Sydney-London", -33.8688, 151.2093, 51.5074, -0.1278, 16994, 20},
		{"same point", 48.86, 2.35, 48.86, 2.35, 0, 1e-9},
		{"antipodes on the equator", 0, 0, 0, 180, math.Pi * EarthRadiusKm, 1e-6},
		{"pole to pole", 90, 0, -90, 0, math.Pi * EarthRadiusKm, 1e-6},
		{"across the date line", 0, 179.5, 0, -179.5, 111.19, 0.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := GreatCircleKm(tt.lat1, tt.lon1, tt.lat2, tt.lon2)
			if math.Abs(got-tt.want) > tt.tol {
				t.Errorf("GreatCircleKm(%v, %v, %v, %v) = %.2f, want %.2f ± %v", tt.lat1, tt.lon1, tt.lat2, tt.lon2, got, tt.want, tt.tol)
			}
		})
	}
}

func TestWANArithmetic(t *testing.T) {
	fiber := Model{KmPerMs: 200, HopOverheadMs: 2, Enabled: true}
	tests := []struct {
		name    string
		wan     Model
		km      float64
		oneWay  time.Duration
		roundTr time.Duration
	}{
		{"London-New York", fiber, 5570, 29850 * time.Microsecond, 59700 * time.Microsecond},
		{"London-New York without overhead", Model{KmPerMs: 200, Enabled: true}, 5570, 27850 * time.Microsecond, 55700 * time.Microsecond},
		{"same city pays the hop overhead", fiber, 0, 2 * time.Millisecond, 4 * time.Millisecond},
		{"antipode", fiber, 20015, 102075 * time.Microsecond, 204150 * time.Microsecond},
		{"disabled", Model{KmPerMs: 200, HopOverheadMs: 2}, 5570, 0, 0},
		{"zero value", Model{}, 5570, 0, 0},
		{"no propagation speed: overhead only", Model{HopOverheadMs: 3, Enabled: true}, 5570, 3 * time.Millisecond, 6 * time.Millisecond},
		{"negative distance is clamped", fiber, -100, 2 * time.Millisecond, 4 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.wan.OneWay(tt.km); !near(got, tt.oneWay) {
				t.Errorf("%+v.OneWay(%v) = %v, want %v", tt.wan, tt.km, got, tt.oneWay)
			}
			if got := tt.wan.RTT(tt.km); !near(got, tt.roundTr) {
				t.Errorf("%+v.RTT(%v) = %v, want %v", tt.wan, tt.km, got, tt.roundTr)
			}
		})
	}
}

func TestWANFloor(t *testing.T) {
	w := Model{KmPerMs: 100, HopOverheadMs: 1, Enabled: true} // RTT(km) = 2 + km/50 ms
	tests := []struct {
		name     string
		newConn  bool
		clientKm float64
		fillKms  []float64
		want     time.Duration
	}{
		{"hit on a kept-alive connection", false, 100, nil, 4 * time.Millisecond},
		{"hit on a new connection", true, 100, nil, 8 * time.Millisecond},
		{"miss through the shield to the origin", false, 100, []float64{500, 0}, (4 + 12 + 2) * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := w.Floor(tt.newConn, tt.clientKm, tt.fillKms...); !near(got, tt.want) {
				t.Errorf("Floor(%v, %v, %v) = %v, want %v", tt.newConn, tt.clientKm, tt.fillKms, got, tt.want)
			}
		})
	}
}

// near allows for float rounding in the conversion to nanoseconds.
func near(a, b time.Duration) bool { return (a - b).Abs() <= time.Microsecond }

// startEcho serves line echo on a loopback port until the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestDialerPaysModelledRTT(t *testing.T) {
	addr := startEcho(t)
	w := Model{KmPerMs: 200, HopOverheadMs: 1, Enabled: true}
	const km = 1800 // 9 ms + 1 ms one way: 20 ms RTT
	rtt := w.RTT(km)
	dial := w.Dialer(km, nil)

	start := time.Now()
	c, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if got := time.Since(start); got < rtt {
		t.Errorf("dial took %v, want at least one RTT %v", got, rtt)
	}
	r := bufio.NewReader(c)
	for i, req := range []string{"ping\n", "again\n", "third\n"} {
		start := time.Now()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != req {
			t.Fatalf("exchange %d read %q, %v; want %q", i, got, err, req)
		}
		if d := time.Since(start); d < rtt {
			t.Errorf("exchange %d took %v, want at least one RTT %v", i, d, rtt)
		}
	}
}

func TestDialerOverHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	w := Model{KmPerMs: 200, Enabled: true}
	const km = 2000 // 10 ms one way
	rtt := w.RTT(km)
	tr := &http.Transport{DialContext: w.Dialer(km, nil)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for i, want := range []time.Duration{2 * rtt, rtt} { // first: handshake + request; then keep-alive
		start := time.Now()
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if d := time.Since(start); d < want {
			t.Errorf("GET %d took %v, want at least %v", i, d, want)
		}
	}
}

func TestDialerHonoursContext(t *testing.T) {
	addr := startEcho(t)
	w := Model{KmPerMs: 200, HopOverheadMs: 3600e3, Enabled: true} // an hour each way
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	c, err := w.Dialer(0, nil)(ctx, "tcp", addr)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial with a deadline inside the modelled handshake = %v, %v; want context.DeadlineExceeded", c, err)
	}
}

func TestWanConnWriteEndsOnCloseAndDeadline(t *testing.T) {
	addr := startEcho(t)
	newConn := func() *wanConn {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return &wanConn{Conn: raw, rtt: time.Hour, closed: make(chan struct{}), needWait: true}
	}
	t.Run("close", func(t *testing.T) {
		c := newConn()
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write([]byte("x\n"))
			errc <- err
		}()
		c.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write during the delay after Close = %v, want net.ErrClosed", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c := newConn()
		defer c.Close()
		c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Write([]byte("x\n")); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Write past its deadline = %v, want os.ErrDeadlineExceeded", err)
		}
	})
}
