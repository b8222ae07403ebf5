package sim

import (
	"net/http"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/report"
	"github.com/meridian-cdn/meridian/sim/scenario"
)

// TestOriginPerObjectCountsBumpedVersions: after a purge storm bumps the hottest objects, a
// broken collapse (every edge fetching the new version from the origin) must still fail
// origin_per_object_per_ttl. Counting every fetch of a bumped version as its own distinct
// object kept the ratio at 1 however often it was fetched.
func TestOriginPerObjectCountsBumpedVersions(t *testing.T) {
	s := scenario.Small()
	r := &runner{s: s, rec: report.NewRecorder(report.ConfigFor(s)), t0: time.Now().Add(-time.Second)}
	r.started.Store(true)
	for range 10 {
		r.onOrigin("/obj/3?v=1", http.StatusOK, 2) // the same new version, ten times in one TTL
	}
	r.onOrigin("/obj/4?v=1", http.StatusOK, 1)
	o := r.rec.Observations()
	if o.OriginFetches != 11 || o.OriginDistinct != 2 {
		t.Errorf("origin fetches %d for %d distinct objects, want 11 for 2", o.OriginFetches, o.OriginDistinct)
	}
	s.PoPs[0].Shield = true
	if inv := report.CheckInvariants(s, o)[report.InvOriginPerObject]; inv.Pass {
		t.Errorf("%s passes with one version fetched ten times in a TTL: %+v", report.InvOriginPerObject, inv)
	}
}
