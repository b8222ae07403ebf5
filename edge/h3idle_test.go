package edge

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestIdleConnectionClosedOverHTTP3: an HTTP/3 connection that has had no request for the idle
// timeout is closed, as an HTTP/1.1 or HTTP/2 one is, also when its client keeps it alive with
// QUIC PINGs (quic-go's KeepAlivePeriod; browsers do the same). The HTTP/3 server had no idle
// timeout of its own: QUIC's closes only a connection with no packets at all, so a client
// that pinged held its connection, and the node's memory for it, for ever.
func TestIdleConnectionClosedOverHTTP3(t *testing.T) {
	_, n, _ := tlsEdgeWith(t, TLSConfig{Dev: true}, func(n *Node, _ *Listeners) { n.idleTimeout = 300 * time.Millisecond })
	conn, r := h3Do(t, n, http.MethodGet, "/idle", nil, &quic.Config{KeepAlivePeriod: 50 * time.Millisecond})
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d", r.StatusCode)
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("an HTTP/3 connection idle for 5 s (idle timeout 300 ms) is still open")
	}

	// HTTP/2 on the same node, for comparison: closed too.
	h2 := dialH2Raw(t, n.HTTPSAddr())
	if status, _ := h2.request(1, ":method", "GET", ":scheme", "https", ":authority", testHost, ":path", "/idle"); status != http.StatusOK {
		t.Fatalf("HTTP/2 status %d", status)
	}
	start := time.Now()
	for {
		if _, err := h2.fr.ReadFrame(); err != nil {
			break // closed (the reader's own deadline is 10 s)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("an HTTP/2 connection idle for %v (idle timeout 300 ms) was still open", d)
	}
}
