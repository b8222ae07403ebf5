package sim

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/sim/report"
	"github.com/meridian-cdn/meridian/sim/scenario"
)

// TestStaleBoundedLag covers stale's rules on receipts made by hand: a response with an old
// version is stale once the answering PoP and the shield had acknowledged the purge before
// the request was sent, marked stale-if-error or not; and (purge rule 5) past PurgeMaxLag plus
// the margin whether or not they acknowledged, unless it was marked stale-if-error.
func TestStaleBoundedLag(t *testing.T) {
	purged := time.Now()
	late := purged.Add(PurgeMaxLag + staleMargin + time.Millisecond)
	early := purged.Add(500 * time.Millisecond)
	acked := purged.Add(100 * time.Millisecond)
	cutOff := purge.Receipt{ID: "p1", PoPs: []purge.PoPReceipt{{PoP: "iad", Complete: true, AckedAt: &acked}, {PoP: "sin"}}}
	all := purge.Receipt{ID: "p1", Complete: true, PoPs: []purge.PoPReceipt{
		{PoP: "iad", Complete: true, AckedAt: &acked}, {PoP: "sin", Complete: true, AckedAt: &acked}}}
	tests := []struct {
		name    string
		receipt purge.Receipt
		obj, v  int
		sent    time.Time
		marked  bool
		want    bool
	}{
		{"never purged", all, 8, 1, late, false, false},
		{"new version", all, 7, 2, late, false, false},
		{"old version past max_lag, not acked", cutOff, 7, 1, late, false, true},
		{"old version past max_lag marked stale-if-error, not acked", cutOff, 7, 1, late, true, false},
		{"old version within max_lag, not acked", cutOff, 7, 1, early, false, false},
		{"old version after every ack", all, 7, 1, early, false, true},
		{"old version after every ack, marked stale-if-error", all, 7, 1, early, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &runner{
				s:       &scenario.Scenario{PoPs: []scenario.PoPSpec{{ID: "iad", Shield: true}, {ID: "sin"}}},
				book:    map[int]purgeMark{7: {id: "p1", at: purged, version: 2}},
				receipt: func(id string) (purge.Receipt, bool) { return tt.receipt, id == tt.receipt.ID },
			}
			if got := r.stale(tt.obj, tt.v, "sin", tt.sent, tt.marked); got != tt.want {
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
	s := &scenario.Scenario{
		Name:     "cut-purge",
		Seed:     11,
		Duration: 10 * time.Second,
		Warmup:   2 * time.Second,
		PoPs: []scenario.PoPSpec{
			{ID: "iad", City: "Ashburn", Lat: 39.04, Lon: -77.49, Region: "north-america", Shield: true},
			{ID: "sin", City: "Singapore", Lat: 1.36, Lon: 103.99, Region: "asia"},
		},
		Origin: scenario.DefaultOrigin,
		Clients: scenario.ClientSpec{
			Cities: []scenario.City{
				{Name: "New York", Lat: 40.71, Lon: -74.01, Population: 5, Region: "north-america"},
				{Name: "Singapore", Lat: 1.35, Lon: 103.82, Population: 20, Region: "asia"},
			},
			Concurrency: 16,
			DNSTTL:      10 * time.Second,
		},
		Workload: scenario.WorkloadSpec{Objects: 200, ZipfAlpha: 0.9, TTL: 60 * time.Second, SWR: 10 * time.Second, SIE: time.Minute},
		Events: []scenario.Event{
			{At: time.Second, Kind: scenario.EventCutNATS, PoP: "sin", Duration: 8 * time.Second},
			{At: 1500 * time.Millisecond, Kind: scenario.EventPurgeStorm, Count: 20},
		},
	}
	if err := s.Validate(); err != nil { // applies the defaults too
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, s, Options{Out: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := rep.Routing["Singapore"].PoP; got != "sin" {
		t.Fatalf("Singapore was routed to %q, want sin (the cut PoP must keep its clients for the test to mean anything)", got)
	}
	for _, name := range []string{report.InvStaleAfterPurge, report.InvPurgeAcked} {
		if inv := rep.Invariants[name]; !inv.Pass {
			t.Errorf("invariant %s failed: value %v, limit %v (%s)", name, inv.Value, inv.Limit, inv.Detail)
		}
	}
}
