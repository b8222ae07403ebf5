package sim

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
	"github.com/meridian-cdn/meridian/sim/wan"
)

func TestParseCacheStatus(t *testing.T) {
	tests := []struct {
		name     string
		header   string
		wantHit  bool
		wantTier string
		wantPoPs []string
	}{
		{"fresh hit", "iad-n1; hit; ttl=118", true, "edge", []string{"iad"}},
		{"miss from origin", "iad-n1; fwd=miss; fwd-status=200; ttl=60; stored; detail=origin", false, "origin", []string{"iad"}},
		{"hit at the peer", "lhr-n2; hit; ttl=50, lhr-n1; fwd=miss; fwd-status=200; stored; detail=peer", false, "peer", []string{"lhr", "lhr"}},
		{"through the shield to the origin",
			"iad-n1; fwd=miss; fwd-status=200; stored; detail=origin, sin-n2; fwd=miss; fwd-status=200; stored; detail=shield, sin-n1; fwd=miss; fwd-status=200; detail=peer",
			false, "origin", []string{"iad", "sin", "sin"}},
		{"hit at the shield", "iad-n1; hit, lhr-n1; fwd=miss; fwd-status=200; detail=shield", false, "shield", []string{"iad", "lhr"}},
		{"stale-if-error", "lhr-n1; fwd=stale; fwd-status=503; ttl=-30; detail=stale-if-error", false, "edge", []string{"lhr"}},
		{"quoted name and pop with a dash", `"us-east-n1"; hit`, true, "edge", []string{"us-east"}},
		{"empty", "", false, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := parseCacheStatus(tt.header)
			if got := cs.hit(); got != tt.wantHit {
				t.Errorf("hit() = %v, want %v", got, tt.wantHit)
			}
			if got := cs.tier(); got != tt.wantTier {
				t.Errorf("tier() = %q, want %q", got, tt.wantTier)
			}
			var pops []string
			for _, m := range cs {
				pops = append(pops, m.pop())
			}
			if strings.Join(pops, ",") != strings.Join(tt.wantPoPs, ",") {
				t.Errorf("pops = %v, want %v", pops, tt.wantPoPs)
			}
		})
	}
}

// FuzzParseCacheStatus: the header comes from the network; parsing must never panic and
// every member must have a name.
func FuzzParseCacheStatus(f *testing.F) {
	f.Add("iad-n1; hit; ttl=118")
	f.Add(`a; detail="x,y", b;;; ,`)
	f.Fuzz(func(t *testing.T, h string) {
		cs := parseCacheStatus(h)
		for _, m := range cs {
			if m.name == "" {
				t.Fatalf("parseCacheStatus(%q) has a member without a name: %+v", h, cs)
			}
		}
		_, _ = cs.hit(), cs.tier()
	})
}

// TestFloorFollowsTheFillChain checks the floor adds one round trip per fill leg the
// Cache-Status shows, on top of the client's leg.
func TestFloorFollowsTheFillChain(t *testing.T) {
	s := scenario.Small()
	r := &runner{s: s, f: &Fleet{wan: s.WAN.Model()}}
	model := s.WAN.Model()
	tokyo := s.Clients.Cities[5]
	sin, _ := s.PoP("sin")
	iad, _ := s.PoP("iad")
	client := wan.GreatCircleKm(tokyo.Lat, tokyo.Lon, sin.Lat, sin.Lon)
	sinIad := wan.GreatCircleKm(sin.Lat, sin.Lon, iad.Lat, iad.Lon)
	iadOrigin := wan.GreatCircleKm(iad.Lat, iad.Lon, s.Origin.Lat, s.Origin.Lon)
	tests := []struct {
		name    string
		header  string
		newConn bool
		want    time.Duration
	}{
		{"hit on a kept-alive connection", "sin-n1; hit", false, model.RTT(client)},
		{"hit on a new connection", "sin-n1; hit", true, 2 * model.RTT(client)},
		{"peer", "sin-n2; hit, sin-n1; fwd=miss; detail=peer", false, model.RTT(client) + model.RTT(0)},
		{"shield then origin", "iad-n1; fwd=miss; detail=origin, sin-n1; fwd=miss; detail=shield", false,
			model.RTT(client) + model.RTT(sinIad) + model.RTT(iadOrigin)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.floor(tokyo, "sin", tt.newConn, parseCacheStatus(tt.header)); got != tt.want {
				t.Errorf("floor = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAddressPlan(t *testing.T) {
	f := &Fleet{pops: []*popRun{{spec: scenario.PoPSpec{ID: "iad"}}, {spec: scenario.PoPSpec{ID: "lhr"}}}}
	tests := []struct {
		ip       string
		pop, nd  string
		ok       bool
		describe string
	}{
		{nodeIP(0, 0), "iad", "n1", true, "first node of the first PoP"},
		{nodeIP(1, 1), "lhr", "n2", true, "second node of the second PoP"},
		{nodeIP(2, 0), "", "", false, "a PoP the fleet does not have"},
		{linkIP(0), "", "", false, "a NATS link"},
		{controlIP, "", "", false, "the control plane"},
		{"10.0.0.1", "", "", false, "not loopback"},
		{"::1", "", "", false, "IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.describe, func(t *testing.T) {
			pop, nd, ok := f.PoPOf(tt.ip)
			if pop != tt.pop || nd != tt.nd || ok != tt.ok {
				t.Errorf("PoPOf(%q) = %q, %q, %v; want %q, %q, %v", tt.ip, pop, nd, ok, tt.pop, tt.nd, tt.ok)
			}
		})
	}
	if a, b := cityPrefix(0), cityPrefix(300); a.Overlaps(b) || a.Bits() != 24 || !CityAddr(300).IsValid() || !b.Contains(CityAddr(300)) {
		t.Errorf("cityPrefix(0) = %v, cityPrefix(300) = %v, CityAddr(300) = %v; want distinct /24s holding their address", a, b, CityAddr(300))
	}
}

// TestActionsOrder checks that the timeline is the same list in the same order for the same
// scenario, with ends after starts.
func TestActionsOrder(t *testing.T) {
	r := &runner{s: scenario.Small()}
	var names []string
	for _, a := range r.actions() {
		names = append(names, a.at.String()+" "+a.name)
	}
	want := []string{
		"2s drain lhr", "4s origin-fail", "7s origin-fail end", "7.5s purge-storm x20", "9s cut-nats sin",
		"10s undrain lhr", "12s rejoin sin", "12s flash-crowd", "14.5s flash-crowd end",
	}
	if strings.Join(names, "; ") != strings.Join(want, "; ") {
		t.Errorf("actions =\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
}

// TestActionsNameEachFlashCrowd: each flash crowd of a timeline has marks of its own, start
// and end, on the plots and in the report's events: the world scenario's two (one from
// Mumbai, one from every city) were both "flash-crowd", and their ends, 1 s apart, both
// "flash-crowd end". A crowd's mark names its city when it has one.
func TestActionsNameEachFlashCrowd(t *testing.T) {
	tests := []struct {
		name   string
		events []scenario.Event
		want   []string
	}{
		{"world", scenario.Default().Events, []string{
			"26s flash-crowd 1 Mumbai", "47s flash-crowd 2", "56s flash-crowd 1 Mumbai end", "57s flash-crowd 2 end"}},
		{"one crowd from every city", []scenario.Event{{At: time.Second, Duration: time.Second, Kind: scenario.EventFlashCrowd, Share: 0.5}},
			[]string{"1s flash-crowd", "2s flash-crowd end"}},
		{"one crowd from a city", []scenario.Event{{At: time.Second, Duration: time.Second, Kind: scenario.EventFlashCrowd, Share: 0.5, City: "Lagos"}},
			[]string{"1s flash-crowd Lagos", "2s flash-crowd Lagos end"}},
		{"two alike, numbered in time order whatever the file's order", []scenario.Event{
			{At: 5 * time.Second, Duration: time.Second, Kind: scenario.EventFlashCrowd, Share: 0.5},
			{At: time.Second, Duration: time.Second, Kind: scenario.EventFlashCrowd, Share: 0.5}},
			[]string{"1s flash-crowd 1", "2s flash-crowd 1 end", "5s flash-crowd 2", "6s flash-crowd 2 end"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := scenario.Small()
			s.Events = tt.events
			r := &runner{s: s}
			var names []string
			for _, a := range r.actions() {
				if strings.HasPrefix(a.name, scenario.EventFlashCrowd) {
					names = append(names, a.at.String()+" "+a.name)
				}
			}
			if !slices.Equal(names, tt.want) {
				t.Errorf("flash crowd marks =\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestActionsCombineOverlaps: kills of one PoP that overlap, and cuts of one PoP's NATS link
// that overlap, combine like the origin's faults: the PoP is down (or cut off) from the first
// start to the last end. Played one by one, the shorter event's restart would bring the PoP
// back while the longer kill lasts, and the longer one's restart would start a second set of
// nodes beside the running ones.
func TestActionsCombineOverlaps(t *testing.T) {
	ev := func(at, d time.Duration, kind, pop string) scenario.Event {
		return scenario.Event{At: at * time.Second, Duration: d * time.Second, Kind: kind, PoP: pop}
	}
	tests := []struct {
		name   string
		events []scenario.Event
		want   []string
	}{
		{"kill inside a kill",
			[]scenario.Event{ev(1, 5, scenario.EventKill, "lhr"), ev(2, 1, scenario.EventKill, "lhr")},
			[]string{"1s kill lhr", "6s restart lhr"}},
		{"kills that overlap at the end",
			[]scenario.Event{ev(1, 3, scenario.EventKill, "lhr"), ev(3, 4, scenario.EventKill, "lhr")},
			[]string{"1s kill lhr", "7s restart lhr"}},
		{"a kill for good inside a timed one",
			[]scenario.Event{ev(1, 5, scenario.EventKill, "lhr"), ev(2, 0, scenario.EventKill, "lhr")},
			[]string{"1s kill lhr"}},
		{"kills that follow each other stay apart",
			[]scenario.Event{ev(1, 1, scenario.EventKill, "lhr"), ev(4, 1, scenario.EventKill, "lhr")},
			[]string{"1s kill lhr", "2s restart lhr", "4s kill lhr", "5s restart lhr"}},
		{"kills of two PoPs do not combine",
			[]scenario.Event{ev(1, 5, scenario.EventKill, "lhr"), ev(2, 1, scenario.EventKill, "sin")},
			[]string{"1s kill lhr", "2s kill sin", "3s restart sin", "6s restart lhr"}},
		{"cut inside a cut",
			[]scenario.Event{ev(1, 5, scenario.EventCutNATS, "sin"), ev(2, 1, scenario.EventCutNATS, "sin")},
			[]string{"1s cut-nats sin", "6s rejoin sin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := scenario.Small()
			s.Events = tt.events
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, a := range (&runner{s: s}).actions() {
				names = append(names, a.at.String()+" "+a.name)
			}
			if strings.Join(names, "; ") != strings.Join(tt.want, "; ") {
				t.Errorf("actions = %q, want %q", names, tt.want)
			}
		})
	}
}

// TestFleetEvents starts a two-PoP fleet and applies the events that act on it directly:
// drain and undrain through the API, kill and restart, an origin fault.
func TestFleetEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a fleet")
	}
	s := &scenario.Scenario{Name: "events", Duration: time.Second, PoPs: []scenario.PoPSpec{
		{ID: "iad", Lat: 39.04, Lon: -77.49, Nodes: 1, Shield: true},
		{ID: "lhr", Lat: 51.47, Lon: -0.45, Nodes: 1},
	}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f, err := StartFleet(ctx, s, FleetOptions{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	view := f.control.Fleet()
	popState := func(id string) (present, draining bool) {
		for _, p := range view.PoPs() {
			if p.ID == id {
				return true, p.Draining()
			}
		}
		return false, false
	}

	if err := f.Drain(ctx, "lhr", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { _, d := popState("lhr"); return d })
	if err := f.Drain(ctx, "lhr", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { _, d := popState("lhr"); return !d })

	lhr := nodeIP(1, 0)
	// Restarting a PoP that runs would start a second set of nodes beside its own.
	if err := f.Restart(ctx, "lhr"); err == nil {
		t.Errorf("Restart of a running PoP = nil, want an error")
	}
	if err := f.Kill("lhr"); err != nil {
		t.Fatal(err)
	}
	if a, ok := f.HTTPAddr(lhr); ok || !f.Killed("lhr") {
		t.Errorf("after Kill: HTTPAddr(%s) = %q, %v and Killed = %v; want no address and killed", lhr, a, ok, f.Killed("lhr"))
	}
	waitFor(t, 10*time.Second, func() bool { p, _ := popState("lhr"); return !p })
	if err := f.Restart(ctx, "lhr"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.HTTPAddr(lhr); !ok || f.Killed("lhr") {
		t.Errorf("after Restart: HTTPAddr(%s) ok = %v, Killed = %v; want an address and not killed", lhr, ok, f.Killed("lhr"))
	}
	waitFor(t, 10*time.Second, func() bool { p, _ := popState("lhr"); return p })

	f.SetOriginFault(503, 0)
	addr, _ := f.HTTPAddr(lhr)
	get := func() int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/obj/1?size=10", nil)
		req.Host = SimHost
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(); got < 500 {
		t.Errorf("uncached object with the origin failing = %d, want a 5xx", got)
	}
	f.SetOriginFault(0, 0)
	waitFor(t, 20*time.Second, func() bool { return get() == http.StatusOK })
}
