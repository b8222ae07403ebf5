package sim

import (
	"context"
	"testing"
	"time"
)

// TestStaleBoundedLag covers the part of stale that needs no receipts (purge rule 5): past
// PurgeMaxLag plus the margin, an old version counts as stale whether or not the PoP acked,
// unless it was marked stale-if-error.
func TestStaleBoundedLag(t *testing.T) {
	purged := time.Now()
	r := &runner{book: map[int]purgeMark{7: {id: "p1", at: purged, version: 2}}}
	late := purged.Add(PurgeMaxLag + staleMargin + time.Millisecond)
	tests := []struct {
		name   string
		obj, v int
		marked bool
		want   bool
	}{
		{"never purged", 8, 1, false, false},
		{"new version", 7, 2, false, false},
		{"old version past max_lag", 7, 1, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.stale(tt.obj, tt.v, "sin", late, tt.marked); got != tt.want {
				t.Errorf("stale(%d, v%d, marked=%v) = %v, want %v", tt.obj, tt.v, tt.marked, got, tt.want)
			}
		})
	}
	cs := parseCacheStatus(`sin-n1; fwd=stale; fwd-status=503; detail=stale-if-error`)
	if !cs.servedStale() {
		t.Errorf("servedStale() = false for %v, want true", cs)
	}
	if cs := parseCacheStatus(`sin-n1; hit; ttl=20`); cs.servedStale() {
		t.Errorf("servedStale() = true for a hit")
	}
}

// TestRunCutPurgeBoundedStaleness runs a fleet in which a PoP is cut off from NATS while a
// purge storm runs, and keeps getting clients (a long DNS TTL) well past PurgeMaxLag: it has not
// acknowledged the purges, so only bounded staleness keeps it from serving the purged versions
// fresh, and stale_after_purge counts its answers past the bound.
func TestRunCutPurgeBoundedStaleness(t *testing.T) {
	if testing.Short() {
		t.Skip("the end-to-end run takes about 15 s")
	}
	s := &Scenario{
		Name:     "cut-purge",
		Seed:     11,
		Duration: 10 * time.Second,
		Warmup:   2 * time.Second,
		PoPs: []PoPSpec{
			{ID: "iad", City: "Ashburn", Lat: 39.04, Lon: -77.49, Region: "north-america", Shield: true},
			{ID: "sin", City: "Singapore", Lat: 1.36, Lon: 103.99, Region: "asia"},
		},
		Origin: DefaultOrigin,
		Clients: ClientSpec{
			Cities: []City{
				{"New York", 40.71, -74.01, 5, "north-america"},
				{"Singapore", 1.35, 103.82, 20, "asia"},
			},
			Concurrency: 16,
			DNSTTL:      10 * time.Second,
		},
		Workload: WorkloadSpec{Objects: 200, ZipfAlpha: 0.9, TTL: 60 * time.Second, SWR: 10 * time.Second, SIE: time.Minute},
		Events: []Event{
			{At: time.Second, Kind: EventCutNATS, PoP: "sin", Duration: 8 * time.Second},
			{At: 1500 * time.Millisecond, Kind: EventPurgeStorm, Count: 20},
		},
	}
	s.setDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, s, Options{Out: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := rep.Routing["Singapore"].PoP; got != "sin" {
		t.Fatalf("Singapore was routed to %q, want sin (the cut PoP must keep its clients for the test to mean anything)", got)
	}
	for _, name := range []string{InvStaleAfterPurge, InvPurgeAcked} {
		if inv := rep.Invariants[name]; !inv.Pass {
			t.Errorf("invariant %s failed: value %v, limit %v (%s)", name, inv.Value, inv.Limit, inv.Detail)
		}
	}
}
