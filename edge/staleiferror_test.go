package edge

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/origin"
)

// TestStaleIfErrorStatuses: a stale copy is served under stale-if-error when the origin
// answers 500, 502, 503 or 504, the errors RFC 5861 §4 names (and nginx's
// proxy_cache_use_stale http_500..http_504); another 5xx (501 Not Implemented, 505, 507) is the
// origin's answer, passed on. Before, any 5xx was taken for an error and the stale copy served.
func TestStaleIfErrorStatuses(t *testing.T) {
	for _, tt := range []struct {
		status    int
		wantStale bool
	}{
		{500, true}, {502, true}, {503, true}, {504, true},
		{501, false}, {505, false}, {507, false},
		// Past 599 (relayed as nginx relays it, docs/origin.md): no error RFC 9111 §4.2.4
		// and RFC 5861 §4 name, the origin's answer, passed on and not stored.
		{600, false}, {799, false}, {999, false},
	} {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			s := newSingle(t, nil)
			p := obj("/sie", "cc", "max-age=10, stale-if-error=60")
			first := s.get(t, p)
			s.origin.SetFault("", origin.Fault{Status: tt.status})
			s.clock.Advance(20 * time.Second)
			r := s.get(t, p)
			if tt.wantStale {
				if r.status != http.StatusOK || r.body != first.body {
					t.Fatalf("origin %d: got %d, want the stale copy (200)", tt.status, r.status)
				}
				wantCacheStatus(t, r, "detail=stale-if-error", fmt.Sprint("fwd-status=", tt.status))
				return
			}
			if r.status != tt.status {
				t.Errorf("origin %d: got %d (Cache-Status %q), want the origin's %d", tt.status, r.status, r.header.Get("Cache-Status"), tt.status)
			}
			wantCacheStatus(t, r, "fwd=stale", fmt.Sprint("fwd-status=", tt.status))
			if strings.Contains(r.header.Get("Cache-Status"), "stored") {
				t.Errorf("origin %d: Cache-Status %q; want it not stored", tt.status, r.header.Get("Cache-Status"))
			}
			// The answer did not drop the copy (RFC 9111 §4.4: only a non-error status
			// invalidates): once the origin recovers, the copy is revalidated, not refetched.
			s.origin.ClearFaults()
			if r := s.get(t, p); r.status != http.StatusOK || r.body != first.body {
				t.Fatalf("after the origin's %d: got %d, want the stale copy revalidated (200)", tt.status, r.status)
			} else {
				wantCacheStatus(t, r, "fwd=stale", "fwd-status=304")
			}
		})
	}
}
