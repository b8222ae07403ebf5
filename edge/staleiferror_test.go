package edge

import (
	"fmt"
	"net/http"
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
		})
	}
}
