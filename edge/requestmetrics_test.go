package edge

import (
	"io"
	"net/http"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestRequestMetrics: every answer is counted under its protocol, cache status and code, the
// commonest (a 200) as the others, and its body bytes in meridian_edge_response_bytes_total.
func TestRequestMetrics(t *testing.T) {
	originAddr := startHTTP(t, "127.0.0.29", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/gone" {
			http.Error(w, "gone", http.StatusNotFound)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "object")
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.29"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	bytes := 0
	for _, path := range []string{"/a", "/a", "/a", "/gone"} {
		r := do(t, c, http.MethodGet, n.Addr(), testHost, path)
		bytes += len(r.body)
	}
	for series, want := range map[string]float64{
		`meridian_edge_requests_total{cache="miss",code="200",proto="http/1.1"}`: 1,
		`meridian_edge_requests_total{cache="hit",code="200",proto="http/1.1"}`:  2,
		`meridian_edge_requests_total{cache="miss",code="404",proto="http/1.1"}`: 1,
		`meridian_edge_response_bytes_total`:                                     float64(bytes),
	} {
		if got := counterValue(t, n, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}
