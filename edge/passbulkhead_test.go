package edge

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestPassEventStreamsHoldNoSlot: open event streams do not fill the pass bulkhead. Each
// stream's exchange held its slot for as long as the stream lasted (up to pass_timeout, an
// hour), so with the default config (max_concurrent 64, queue_wait 50 ms) a site whose
// live-updates endpoint had 64 viewers on one node gave the 65th viewer a 503 after 50 ms,
// and every other pass to that origin (a login POST, a page under cookies: pass) a 503 too,
// for as long as the 64 stayed. nginx's proxy_pass and Varnish's pass set no such bound.
// The test shows the same arithmetic with max_concurrent 4 and 4 viewers: the slot is the
// origin's until its answer's head is in, then freed.
func TestPassEventStreamsHoldNoSlot(t *testing.T) {
	const slots = 4
	release := make(chan struct{})
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/live" {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: hello\n\n")
			http.NewResponseController(w).Flush()
			select { // the stream stays open, quiet, until its client or the test ends
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	}, func(hc *wire.HostConfig) { hc.Cookies = wire.CookiesPass }, func(c *Config) { c.Upstream.MaxConcurrent = slots })
	t.Cleanup(func() { close(release) }) // before the origin's server closes

	// open sends a request through the edge and returns its answer once the head is in.
	open := func(t *testing.T, method, path string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+n.Addr()+path, nil)
		req.Host = testHost
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Body.Close() })
		return r
	}
	// viewer opens an event stream and reads its first event.
	viewer := func(t *testing.T) {
		t.Helper()
		r := open(t, http.MethodGet, "/live", "Accept", "text/event-stream")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("event stream: %d, want 200", r.StatusCode)
		}
		if line, err := bufio.NewReader(r.Body).ReadString('\n'); err != nil || line != "data: hello\n" {
			t.Fatalf("event stream's first line = %q, %v; want %q", line, err, "data: hello\n")
		}
	}
	for range slots {
		viewer(t)
	}
	// The metrics say what holds the pass bulkhead (nothing: no exchange waits for its head)
	// and what streams past it.
	metrics := scrape(t, n)
	for _, want := range []string{
		fmt.Sprintf(`meridian_edge_upstream_in_flight{upstream="pass origin %s %s"} 0`, testHost, originOf(n)),
		fmt.Sprintf(`meridian_edge_upstream_streaming{upstream="pass origin %s %s"} %d`, testHost, originOf(n), slots),
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}

	for _, tt := range []struct {
		name   string
		method string
		path   string
		hdr    []string
	}{
		{"form POST", http.MethodPost, "/login", nil},
		{"page under cookies: pass", http.MethodGet, "/account", []string{"Cookie", "session=1"}},
		{"DELETE", http.MethodDelete, "/item/1", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := open(t, tt.method, tt.path, tt.hdr...)
			body, err := io.ReadAll(r.Body)
			if r.StatusCode != http.StatusOK || err != nil || string(body) != "ok" {
				t.Errorf("%s %s with %d event streams open: %d %q, %v; want 200 ok", tt.method, tt.path, slots, r.StatusCode, body, err)
			}
		})
	}
	t.Run("one viewer more", viewer)
}

// originOf is the address of the origin of n's one host.
func originOf(n *Node) string { return (*n.hosts.Load())[testHost].origin.Host }
