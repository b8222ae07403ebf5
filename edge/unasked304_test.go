package edge

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestUnaskedNotModified: a 304 from an origin to a request without validators is the origin's
// error (RFC 9110 §15.4.5: a 304 answers a conditional GET or HEAD). A fill, which sent none,
// answers 502 and stores nothing, as Varnish fails such a fetch ("304 response but not
// conditional fetch"); a pass relays it, as Varnish's pass and nginx do: the request is the
// client's own.
func TestUnaskedNotModified(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{}
	o := startScriptOrigin(t, "127.0.0.69", func(c net.Conn, r *http.Request, _ int) bool {
		mu.Lock()
		asked[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nCache-Control: max-age=60\r\n\r\n")
		return false
	})
	n, _ := startEdge(t, listen(t, "127.0.0.70"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	for _, tt := range []struct {
		method, path string
		status, asks int
	}{
		{http.MethodGet, "/fill", http.StatusBadGateway, 2}, // never stored: asked again
		{http.MethodPost, "/pass", http.StatusNotModified, 2},
	} {
		for i := range 2 {
			if r := do(t, c, tt.method, n.Addr(), testHost, tt.path); r.status != tt.status {
				t.Errorf("%s %s #%d = %d, want %d", tt.method, tt.path, i, r.status, tt.status)
			}
		}
		mu.Lock()
		got := asked[tt.method+" "+tt.path]
		mu.Unlock()
		if got != tt.asks {
			t.Errorf("%s %s: the origin was asked %d times, want %d", tt.method, tt.path, got, tt.asks)
		}
	}
}
