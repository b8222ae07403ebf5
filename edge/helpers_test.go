package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/clocktest"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

const testHost = "www.example.com"

// testPeerKey signs fill requests between the nodes of a test fleet configured by hand.
var testPeerKey = []byte("meridian-test-peer-key-0123456789abcdef")

// fakeClock is shared by an origin and its edges so that Date, Age and freshness agree.
type fakeClock = clocktest.Clock

func newFakeClock() *fakeClock { return clocktest.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)) }

func listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	return ln
}

// freeAddr returns an address on ip with a port free a moment ago, for a server the test
// starts as its own process.
func freeAddr(t testing.TB, ip string) string {
	t.Helper()
	ln := listen(t, ip)
	defer ln.Close()
	return ln.Addr().String()
}

// startOrigin runs a reference origin on ip until the test ends.
func startOrigin(t testing.TB, ip string, clock func() time.Time) (*origin.Server, string) {
	t.Helper()
	o, addr, _ := startStoppableOrigin(t, ip, clock)
	return o, addr
}

// startStoppableOrigin is startOrigin, with a function that stops the origin before the test
// ends (its address then refuses connections).
func startStoppableOrigin(t testing.TB, ip string, clock func() time.Time) (*origin.Server, string, func()) {
	t.Helper()
	o, err := origin.New(origin.Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t, ip)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return o, ln.Addr().String(), stop
}

// startEdge runs an edge node on ln until the test ends (or stop is called).
func startEdge(t testing.TB, ln net.Listener, cfg Config) (n *Node, stop func()) {
	t.Helper()
	return startEdgeWith(t, ln, cfg, nil)
}

// startEdgeWith is startEdge, with prep (if not nil) called on the node before it serves.
func startEdgeWith(t testing.TB, ln net.Listener, cfg Config, prep func(*Node)) (n *Node, stop func()) {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("new edge: %v", err)
	}
	if prep != nil {
		prep(n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, ln, nil) }()
	<-n.Ready()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("edge %s serve: %v", n.Name(), err)
			}
		})
	}
	t.Cleanup(stop)
	return n, stop
}

// single starts one origin and one edge in front of it for testHost.
type single struct {
	origin     *origin.Server
	originAddr string
	edge       *Node
	clock      *fakeClock
	client     *http.Client
}

func newSingle(t *testing.T, mod func(*Config)) *single { return newSingleTB(t, mod) }

func newSingleB(b *testing.B) *single { return newSingleTB(b, nil) }

func newSingleTB(t testing.TB, mod func(*Config)) *single {
	t.Helper()
	s := &single{clock: newFakeClock()}
	s.origin, s.originAddr = startOrigin(t, "127.0.0.10", s.clock.Now)
	cfg := Config{
		PoP: "tst", Node: "e1", Clock: s.clock.Now,
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + s.originAddr}},
	}
	if mod != nil {
		mod(&cfg)
	}
	s.edge, _ = startEdge(t, listen(t, "127.0.0.11"), cfg)
	s.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

// resp is a finished exchange.
type resp struct {
	status int
	header http.Header
	body   string
}

func (s *single) get(t *testing.T, path string, hdr ...string) resp {
	t.Helper()
	return do(t, s.client, http.MethodGet, s.edge.Addr(), testHost, path, hdr...)
}

// do sends one request to addr with Host host and extra header pairs.
func do(t testing.TB, c *http.Client, method, addr, host, path string, hdr ...string) resp {
	if t != nil {
		t.Helper()
	}
	r, err := tryDo(c, method, addr, host, path, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo is do for a goroutine other than the test's: it returns what went wrong.
func tryDo(c *http.Client, method, addr, host, path string, hdr ...string) (resp, error) {
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		return resp{}, err
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	r, err := c.Do(req)
	if err != nil {
		return resp{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return resp{}, fmt.Errorf("read %s: %w", path, err)
	}
	return resp{status: r.StatusCode, header: r.Header, body: string(b)}, nil
}
