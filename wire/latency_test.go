package wire

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestLatencyRecordSources: a record says how many of its samples the edge measured itself;
// a record of beacon reports only keeps the shape older readers know.
func TestLatencyRecordSources(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	mixed := LatencyRecord{Network: netip.MustParsePrefix("100.64.3.0/24"), RTTMs: map[string]float64{"lhr": 23}, Samples: 57, EdgeSamples: 52, At: at}
	b, err := json.Marshal(mixed)
	if err != nil {
		t.Fatal(err)
	}
	var back LatencyRecord
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.EdgeSamples != 52 || back.BeaconSamples() != 5 || !strings.Contains(string(b), `"edge_samples":52`) {
		t.Errorf("round trip of %s = %+v, want 52 edge samples and 5 beacon reports", b, back)
	}
	beacons := LatencyRecord{Network: mixed.Network, RTTMs: mixed.RTTMs, Samples: 3, At: at}
	if b, _ := json.Marshal(beacons); strings.Contains(string(b), "edge_samples") || beacons.BeaconSamples() != 3 {
		t.Errorf("beacon-only record = %s (beacon samples %d), want no edge_samples field and 3", b, beacons.BeaconSamples())
	}
}
