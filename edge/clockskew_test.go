package edge

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// TestOriginClockBehind: an origin whose clock runs behind the edge's sends a Date in the
// edge's past. The copy's age is what the Age field and the exchange's own delay say (RFC 9111
// §4.2.3: corrected_age_value MAY be the corrected_initial_age), as Varnish and nginx reckon
// it, not now - Date: an origin an hour behind made every answer with a lifetime under an hour
// stale on arrival (Age: 3600 to every client, and each request went to the origin), an
// Expires - Date lifetime too, which RFC 9111 §4.2.1 computes from the origin's own clock so
// that skew does not matter. Only where a hop may not have added Age (a Via naming an HTTP/1.0
// hop, or an HTTP/1.0 answer) does now - Date still count, as the conservative form of §4.2.3.
func TestOriginClockBehind(t *testing.T) {
	clock := newFakeClock()
	behind := clock.Now().Add(-time.Hour).Format(http.TimeFormat)
	ahead := clock.Now().Add(time.Hour).Format(http.TimeFormat)
	cases := []struct {
		path, proto, fields string
		wantAge             string
		asks                int // origin requests for two client requests
	}{
		{"/max-age", "HTTP/1.1", "Date: " + behind + "\r\nCache-Control: max-age=60\r\n", "0", 1},
		{"/expires", "HTTP/1.1", "Date: " + behind + "\r\nExpires: " + clock.Now().Add(-time.Hour+time.Minute).Format(http.TimeFormat) + "\r\n", "0", 1},
		{"/age", "HTTP/1.1", "Date: " + behind + "\r\nAge: 30\r\nCache-Control: max-age=60\r\n", "30", 1},
		{"/via-http11", "HTTP/1.1", "Date: " + behind + "\r\nVia: 1.1 cache-a, HTTP/1.1 cache-b\r\nCache-Control: max-age=60\r\n", "0", 1},
		{"/ahead", "HTTP/1.1", "Date: " + ahead + "\r\nCache-Control: max-age=60\r\n", "0", 1},
		// A hop that may not have added Age: now - Date stands in for it.
		{"/via-http10", "HTTP/1.1", "Date: " + behind + "\r\nVia: 1.1 cache-a, 1.0 old-cache\r\nCache-Control: max-age=60\r\n", "3600", 2},
		{"/via-http10-named", "HTTP/1.1", "Date: " + behind + "\r\nVia: HTTP/1.0 old-cache (Old/1.0)\r\nCache-Control: max-age=60\r\n", "3600", 2},
		{"/http10", "HTTP/1.0", "Date: " + behind + "\r\nCache-Control: max-age=60\r\n", "3600", 2},
	}
	byPath := map[string]string{}
	for _, c := range cases {
		byPath[c.path] = c.proto + " 200 OK\r\n" + c.fields + "Content-Length: 2\r\nConnection: close\r\n\r\nok"
	}
	var mu sync.Mutex
	asked := map[string]int{}
	o := startScriptOrigin(t, "127.0.0.69", func(c net.Conn, r *http.Request, _ int) bool {
		mu.Lock()
		asked[r.URL.Path]++
		mu.Unlock()
		fmt.Fprint(c, byPath[r.URL.Path])
		return true
	})
	n, _ := startEdge(t, listen(t, "127.0.0.70"), Config{PoP: "tst", Node: "e1", Logger: testLogger(t), Clock: clock.Now,
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + o}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	for _, tt := range cases {
		for i := range 2 {
			r := do(t, c, http.MethodGet, n.Addr(), testHost, tt.path)
			if r.status != http.StatusOK || r.body != "ok" {
				t.Fatalf("%s #%d: %d %q", tt.path, i, r.status, r.body)
			}
			if got := r.header.Get("Age"); got != tt.wantAge {
				t.Errorf("%s #%d: Age %q, want %q (Cache-Status %q)", tt.path, i, got, tt.wantAge, r.header.Get("Cache-Status"))
			}
		}
		mu.Lock()
		got := asked[tt.path]
		mu.Unlock()
		if got != tt.asks {
			t.Errorf("%s: the origin was asked %d times for two requests, want %d", tt.path, got, tt.asks)
		}
	}
}
