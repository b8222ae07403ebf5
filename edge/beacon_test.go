package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestBeacon: the edge answers the beacon itself for configured hosts only, and takes reports
// that are well formed, bounded and within the network's rate.
func TestBeacon(t *testing.T) {
	s := newSingle(t, nil)
	post := func(body string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.edge.Addr()+wire.BeaconPath, strings.NewReader(body))
		req.Host = testHost
		r, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if r := s.get(t, wire.BeaconPath); r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-store" || r.body != "\n" {
		t.Errorf("GET beacon = %d %q (Cache-Control %q), want 200 with one byte, no-store", r.status, r.body, r.header.Get("Cache-Control"))
	}
	if n := s.origin.Requests(wire.BeaconPath); n != 0 {
		t.Errorf("origin saw %d requests for beacons, want 0", n)
	}
	if r := do(t, s.client, http.MethodGet, s.edge.Addr(), "unknown.example", wire.BeaconPath); r.status != http.StatusMisdirectedRequest {
		t.Errorf("beacon for an unknown host = %d, want 421", r.status)
	}
	tests := []struct {
		name string
		body string
		want int
	}{
		{"valid", `{"rtt_ms":{"lhr":12.5,"fra":20}}`, http.StatusNoContent},
		{"not json", `rtt=1`, http.StatusBadRequest},
		{"empty", `{"rtt_ms":{}}`, http.StatusBadRequest},
		{"zero rtt", `{"rtt_ms":{"lhr":0}}`, http.StatusBadRequest},
		{"rtt too large", `{"rtt_ms":{"lhr":5001}}`, http.StatusBadRequest},
		{"bad pop id", `{"rtt_ms":{"LHR!":10}}`, http.StatusBadRequest},
		{"too many pops", `{"rtt_ms":{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1}}`, http.StatusBadRequest},
		{"too large", `{"rtt_ms":{"lhr":1},"pad":"` + strings.Repeat("x", 2000) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := post(tt.body); got != tt.want {
				t.Errorf("POST %.40s = %d, want %d", tt.body, got, tt.want)
			}
		})
	}
	// The clock is frozen: after the burst (5, one spent above) the network is limited.
	codes := []int{}
	for range 5 {
		codes = append(codes, post(`{"rtt_ms":{"lhr":10}}`))
	}
	want := []int{204, 204, 204, 204, 429}
	for i := range want {
		if codes[i] != want[i] {
			t.Errorf("reports after the burst: codes = %v, want %v", codes, want)
			break
		}
	}
	s.clock.Advance(2 * time.Second)
	if got := post(`{"rtt_ms":{"lhr":10}}`); got != http.StatusNoContent {
		t.Errorf("report after the limiter refilled = %d, want 204", got)
	}
}

// TestBeaconAverages: reports fold into a moving average per network; networks are the
// connection's /24 or /48.
func TestBeaconAverages(t *testing.T) {
	var m rum
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	net24 := wire.ClientNetwork(netip.MustParseAddr("100.64.3.77"))
	if net24.String() != "100.64.3.0/24" {
		t.Fatalf("ClientNetwork = %v, want 100.64.3.0/24", net24)
	}
	if got := wire.ClientNetwork(netip.MustParseAddr("2001:db8:1:2::5")).String(); got != "2001:db8:1::/48" {
		t.Fatalf("ClientNetwork(v6) = %v, want 2001:db8:1::/48", got)
	}
	rec, _ := m.add(net24, wire.BeaconReport{RTTMs: map[string]float64{"lhr": 100}}, now)
	rec, _ = m.add(net24, wire.BeaconReport{RTTMs: map[string]float64{"lhr": 200, "fra": 50}}, now)
	if got, want := rec.RTTMs["lhr"], 100+beaconAlpha*100; got != want || rec.RTTMs["fra"] != 50 || rec.Samples != 2 {
		t.Errorf("record = %+v, want lhr %v, fra 50, 2 samples", rec, want)
	}
}

// TestBeaconReportReachesLatencyBucket: a fleet edge checks reports against the fleet's PoPs and
// publishes accepted ones, under its own key and the connection's network, to the latency
// bucket over NATS (with its edge credentials).
func TestBeaconReportReachesLatencyBucket(t *testing.T) {
	url, js, _ := startNATS(t)
	fleetKV, err := js.KeyValue(t.Context(), wire.Bucket("", wire.FleetBucket))
	if err != nil {
		t.Fatal(err)
	}
	// Another PoP's node, outside the edge's own view (its PoP and shields only).
	other := func() { beatOther(t, fleetKV, "f2") }
	other()
	s, nodes := fleetEdges(t, []string{url}, true)
	wait.For(t, 25*time.Second, "the node knows the other PoP", func() bool {
		other() // the bucket's keys expire; the node reads the PoPs every 10 s
		sink := nodes[0].rum.sink.Load()
		return sink != nil && sink.pops.Known("f2")
	})
	post := func(body string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+nodes[0].Addr()+wire.BeaconPath, strings.NewReader(body))
		req.Host = testHost
		r, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if got := post(`{"rtt_ms":{"zzz":10}}`); got != http.StatusBadRequest {
		t.Errorf("report naming a PoP outside the fleet = %d, want 400", got)
	}
	if got := post(`{"rtt_ms":{"f1":12,"f2":30}}`); got != http.StatusNoContent {
		t.Fatalf("valid report = %d, want 204", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, wire.Bucket("", wire.LatencyBucket))
	if err != nil {
		t.Fatal(err)
	}
	// The client connected from 127.0.0.1 (the default source address).
	key := wire.LatencyKey("f1", "n0", netip.MustParsePrefix("127.0.0.0/24"))
	var rec wire.LatencyRecord
	wait.For(t, 10*time.Second, "the record in the latency bucket", func() bool {
		e, err := kv.Get(ctx, key)
		return err == nil && json.Unmarshal(e.Value(), &rec) == nil
	})
	if rec.RTTMs["f1"] != 12 || rec.RTTMs["f2"] != 30 || rec.Samples != 1 || rec.Network.String() != "127.0.0.0/24" {
		t.Errorf("record = %+v, want f1 12 ms and f2 30 ms from 127.0.0.0/24, 1 sample", rec)
	}
	if peers := nodes[0].tiers.Load().shields; len(peers["f2"]) != 0 {
		t.Errorf("the other PoP's node reached the edge's view (shields %v): it names no shield", peers)
	}
}

// TestEdgeSamplesFold: the node's own RTT samples fold into the same per-network record as
// beacon reports, for its own PoP only, counted apart, and rate limited on their own so that
// a busy network's connections never take its clients' beacon tokens.
func TestEdgeSamplesFold(t *testing.T) {
	var m rum
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	network := netip.MustParsePrefix("100.64.3.0/24")
	m.add(network, wire.BeaconReport{RTTMs: map[string]float64{"lhr": 100, "fra": 50}}, now)
	rec, ok := m.addEdge(network, "lhr", 20, now)
	if !ok || rec.RTTMs["lhr"] != 100+beaconAlpha*(20-100) || rec.RTTMs["fra"] != 50 || rec.Samples != 2 || rec.EdgeSamples != 1 || rec.BeaconSamples() != 1 {
		t.Errorf("record = %+v, want lhr moved towards 20, fra kept, 2 samples of which 1 edge", rec)
	}
	taken := 1
	for range 10 {
		if _, ok := m.addEdge(network, "lhr", 20, now); ok {
			taken++
		}
	}
	if taken != beaconBurst {
		t.Errorf("edge samples taken in one instant = %d, want the burst %d", taken, beaconBurst)
	}
	if _, ok := m.add(network, wire.BeaconReport{RTTMs: map[string]float64{"lhr": 30}}, now); !ok {
		t.Error("a beacon report was refused after the edge samples used up their own tokens")
	}
	// Edge samples alone make a record too (a network that sends no beacons).
	other := netip.MustParsePrefix("2001:db8:1::/48")
	if rec, ok := m.addEdge(other, "lhr", 7.5, now); !ok || rec.RTTMs["lhr"] != 7.5 || rec.Samples != 1 || rec.EdgeSamples != 1 || rec.Network != other {
		t.Errorf("edge-only record = %+v, want lhr 7.5 from %v, 1 edge sample", rec, other)
	}
}

// TestLatencyRecordKeepsFastestPoPs: clients of one network that measure different PoPs of a
// large fleet (120 here, 8 per report) do not grow the node's record past what the latency
// bucket takes (fleet.MaxLatencyRecordBytes): it keeps the network's beaconRecordPoPs fastest
// PoPs, and every new record reaches the bucket, published as the edge publishes (its own
// credential, fire and forget).
func TestLatencyRecordKeepsFastestPoPs(t *testing.T) {
	url, js, _ := startNATS(t)
	srv, _ := natsServers.Load(url)
	nc, _ := srv.(*natstest.Server).ConnectAs(t, natsauth.Edge("p000", "n1"))
	n := &Node{}
	n.rum.sink.Store(&rumSink{nc: nc, bucket: wire.Bucket("", wire.LatencyBucket), pop: "p000", node: "n1"})

	const pops = 120
	network := netip.MustParsePrefix("100.64.3.0/24")
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var last wire.LatencyRecord
	// Twice round the fleet, so that the figures are moving averages (17 digits, as a
	// browser's timings are too); PoP i's RTT grows with i.
	for round := range 2 {
		for first := 0; first < pops; first += wire.MaxBeaconPoPs {
			rep := wire.BeaconReport{RTTMs: map[string]float64{}}
			for i := first; i < min(first+wire.MaxBeaconPoPs, pops); i++ {
				rep.RTTMs[fmt.Sprintf("p%03d", i)] = 10 + 1.37*float64(i) + 0.71*float64(round)
			}
			now = now.Add(time.Second) // within the network's rate
			rec, ok := n.rum.add(network, rep, now)
			if !ok {
				t.Fatalf("report %v refused by the rate limiter", rep.RTTMs)
			}
			n.publishLatency(rec)
			last = rec
		}
	}
	// A record of another network, published after the others on the same connection: once
	// the bucket holds it, the stream has taken or refused every earlier one.
	marker := netip.MustParsePrefix("100.64.4.0/24")
	rec, _ := n.rum.add(marker, wire.BeaconReport{RTTMs: map[string]float64{"p000": 10}}, now)
	n.publishLatency(rec)
	kv, err := js.KeyValue(t.Context(), wire.Bucket("", wire.LatencyBucket))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the marker record in the latency bucket", func() bool {
		_, err := kv.Get(t.Context(), wire.LatencyKey("p000", "n1", marker))
		return err == nil
	})

	var got wire.LatencyRecord
	if e, err := kv.Get(t.Context(), wire.LatencyKey("p000", "n1", network)); err != nil {
		t.Fatalf("the network's record: %v", err)
	} else if err := json.Unmarshal(e.Value(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Samples != last.Samples {
		b, _ := json.Marshal(last)
		t.Fatalf("the bucket holds the record of sample %d, want the last one (%d, %d bytes)", got.Samples, last.Samples, len(b))
	}
	var kept []string
	for pop := range got.RTTMs {
		kept = append(kept, pop)
	}
	slices.Sort(kept)
	var want []string
	for i := range beaconRecordPoPs {
		want = append(want, fmt.Sprintf("p%03d", i))
	}
	if !slices.Equal(kept, want) {
		t.Errorf("the record keeps %v, want the %d fastest %v", kept, beaconRecordPoPs, want)
	}
}

// TestLatencyRecordBound: a record of beaconRecordPoPs PoPs fits the latency bucket's bound
// with everything at its longest: 63-character PoP ids, the longest figures JSON writes, the
// longest /48, counts and time.
func TestLatencyRecordBound(t *testing.T) {
	rec := wire.LatencyRecord{
		Network: netip.MustParsePrefix("ffff:ffff:ffff::/48"), RTTMs: map[string]float64{},
		Samples: math.MaxInt, EdgeSamples: math.MaxInt,
		At: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(23*3600+59*60))),
	}
	for i := range beaconRecordPoPs {
		rec.RTTMs[fmt.Sprintf("%02d", i)+strings.Repeat("a", 61)] = 0.0000012345678901234567 // 24 bytes in JSON
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > fleet.MaxLatencyRecordBytes {
		t.Errorf("the longest record of %d PoPs takes %d bytes, more than the bucket's %d", beaconRecordPoPs, len(b), fleet.MaxLatencyRecordBytes)
	}
}
