package edge

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// TestMissesReuseUpstreamConnections: unique-URL misses, 64 at a time as from wrk -c64, go
// over kept-alive origin connections. An idle pool smaller than the concurrency would make
// later misses dial anew (issue 15); a body read short of its end would not give its
// connection back at all.
func TestMissesReuseUpstreamConnections(t *testing.T) {
	const conc, rounds = 64, 3
	var dials atomic.Int64
	originAddr := startHTTPConns(t, "127.0.0.20", &dials, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Length", "1024")
		w.Write(make([]byte, 1024))
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.21"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	t.Cleanup(c.CloseIdleConnections)
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range conc {
			wg.Go(func() {
				r := do(t, c, http.MethodGet, n.Addr(), testHost, fmt.Sprintf("/u/%d/%d", round, i))
				if r.status != 200 || len(r.body) != 1024 {
					t.Errorf("miss %d/%d: %d, %d bytes", round, i, r.status, len(r.body))
				}
				wantCacheStatus(t, r, "fwd=miss", "stored")
			})
		}
		wg.Wait()
	}
	if d := dials.Load(); d > conc {
		t.Errorf("%d misses dialed %d origin connections, want at most %d (one per concurrent miss)", conc*rounds, d, conc)
	}
}

// startHTTPConns serves h on ip until the test ends, counting the connections accepted.
func startHTTPConns(t *testing.T, ip string, conns *atomic.Int64, h http.Handler) string {
	t.Helper()
	return startServer(t, ip, &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}})
}
