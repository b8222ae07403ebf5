package edge

import (
	"net/http"
	"strings"
	"testing"
)

// Both servers of plain HTTP/1.1 (http1: fast, the default, and http1: std) serve the same
// pipeline: a miss, then a hit, and a request with a body, which the fast path hands over.
func TestHTTP1Servers(t *testing.T) {
	for _, mode := range []string{"", HTTP1Fast, HTTP1Std} {
		t.Run("http1="+mode, func(t *testing.T) {
			s := newSingle(t, func(c *Config) { c.HTTP1 = mode })
			p := obj("/modes", "cc", "max-age=60")
			if r := do(t, s.client, http.MethodGet, s.edge.Addr(), testHost, p); r.status != 200 || !strings.Contains(r.header.Get("Cache-Status"), "fwd=") {
				t.Fatalf("first GET: %d, Cache-Status %q; want 200 and a miss", r.status, r.header.Get("Cache-Status"))
			}
			r := do(t, s.client, http.MethodGet, s.edge.Addr(), testHost, p)
			if r.status != 200 || !strings.Contains(r.header.Get("Cache-Status"), "; hit") {
				t.Fatalf("second GET: %d, Cache-Status %q; want a hit", r.status, r.header.Get("Cache-Status"))
			}
			if r.header.Get("Content-Length") == "" || r.header.Get("Date") == "" {
				t.Errorf("hit without Content-Length or Date: %v", r.header)
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+s.edge.Addr()+"/echo", strings.NewReader("body"))
			req.Host = testHost
			resp, err := s.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Errorf("POST with a body: %d", resp.StatusCode)
			}
		})
	}
}
