package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/wire"
)

// What the simulator measures about routing from live measurements: per-PoP capacity (a
// simulated CPU budget each node meters itself against), non-geographic WAN paths, client
// networks that report beacons (the "rum" group) beside ones that never do (the "geo" group),
// and the two invariants that judge them, overload_shed and latency_routing.

// CityNetworks is how many /24s each client city has in the run's MMDB. Client i lives in
// network i mod CityNetworks of every city it asks from; shedding moves /24s, so a city of one
// network could only move whole.
const CityNetworks = 16

// maxCities bounds the client cities: their /20s fill 127.64.0.0/10.
const maxCities = 1024

// cityBlock is client city i's range in the run's MMDB: a /20 of 127.64.0.0/10, on loopback so
// that a client can send from its own network (the edge takes a beacon report's network from
// the connection, never from the body).
func cityBlock(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, byte(64 + i>>4), byte(i&15) << 4, 0}), 20)
}

// cityNetwork is the k-th /24 of client city i.
func cityNetwork(i, k int) netip.Prefix {
	b := cityBlock(i).Addr().As4()
	b[2] += byte(k % CityNetworks)
	return netip.PrefixFrom(netip.AddrFrom4(b), 24)
}

// Client groups: networks that report beacons and networks routed by geography alone.
const (
	GroupRUM = "rum"
	GroupGeo = "geo"
)

// group is the client group of network k ("" when the scenario has no RUM).
func (s *Scenario) group(k int) string {
	if !s.Clients.RUM.Enabled {
		return ""
	}
	if k%2 == 0 {
		return GroupRUM
	}
	return GroupGeo
}

// via returns the hub of the WAN path between city and pop, if one is configured.
func (s *Scenario) via(city City, pop PoPSpec) (Place, bool) {
	for _, p := range s.WAN.Paths {
		if (p.From == city.Name || p.From == city.Region && city.Region != "") && (p.To == pop.ID || p.To == pop.Region && pop.Region != "") {
			return p.Via, true
		}
	}
	return Place{}, false
}

// clientKm is the length of the leg from city to pop: the great circle, or through the hub of
// a configured path.
func (s *Scenario) clientKm(city City, pop PoPSpec) float64 {
	if v, ok := s.via(city, pop); ok {
		return GreatCircleKm(city.Lat, city.Lon, v.Lat, v.Lon) + GreatCircleKm(v.Lat, v.Lon, pop.Lat, pop.Lon)
	}
	return GreatCircleKm(city.Lat, city.Lon, pop.Lat, pop.Lon)
}

// trombones reports whether some configured path applies to city.
func (s *Scenario) trombones(city City) bool {
	for _, pop := range s.PoPs {
		if _, ok := s.via(city, pop); ok {
			return true
		}
	}
	return false
}

// nearestPoPs returns the ids of the n PoPs nearest city by great circle.
func (s *Scenario) nearestPoPs(city City, n int) []string {
	ids := make([]string, len(s.PoPs))
	km := map[string]float64{}
	for i, p := range s.PoPs {
		ids[i] = p.ID
		km[p.ID] = GreatCircleKm(city.Lat, city.Lon, p.Lat, p.Lon)
	}
	sort.SliceStable(ids, func(a, b int) bool { return km[ids[a]] < km[ids[b]] })
	return ids[:min(n, len(ids))]
}

// crowd is the scenario's first flash crowd that comes from one city, if any.
func (s *Scenario) crowd() (Event, bool) {
	for _, e := range s.SortedEvents() {
		if e.Kind == EventFlashCrowd && e.City != "" {
			return e, true
		}
	}
	return Event{}, false
}

// overloadedPoP is the PoP a crowd from city loads: the nearest one, where geography sends it.
func (s *Scenario) overloadedPoP(city string) string {
	for _, c := range s.Clients.Cities {
		if c.Name == city {
			return s.nearestPoPs(c, 1)[0]
		}
	}
	return ""
}

func (p *parser) validateMeasured(s *Scenario, pops map[string]int, cities map[string]int) {
	if len(s.Clients.Cities) > maxCities {
		p.fieldf("clients.cities", "at most %d cities, got %d", maxCities, len(s.Clients.Cities))
	}
	regions := map[string]bool{}
	for _, c := range s.Clients.Cities {
		regions[c.Region] = true
	}
	popRegions := map[string]bool{}
	for i, pop := range s.PoPs {
		popRegions[pop.Region] = true
		if !(pop.CPUBudget >= 0) || math.IsInf(pop.CPUBudget, 0) {
			p.fieldf(fmt.Sprintf("pops[%d].cpu_budget", i), "must be a finite number, not negative, got %v", pop.CPUBudget)
		}
	}
	for i, w := range s.WAN.Paths {
		f := fmt.Sprintf("wan.paths[%d]", i)
		if _, ok := cities[w.From]; !ok && (w.From == "" || !regions[w.From]) {
			p.fieldf(f+".from", "%q is neither a client city nor a client region", w.From)
		}
		if _, ok := pops[w.To]; !ok && (w.To == "" || !popRegions[w.To]) {
			p.fieldf(f+".to", "%q is neither a PoP id nor a PoP region", w.To)
		}
		p.checkLatLon(f+".via", w.Via.Lat, w.Via.Lon)
	}
	if s.Workload.CPUPerRequest < 0 {
		p.fieldf("workload.cpu_per_request", "must not be negative, got %v", s.Workload.CPUPerRequest)
	}
	if r := s.Clients.RUM; r.Candidates < 0 || r.Candidates > 8 {
		p.fieldf("clients.rum.candidates", "must be between 1 and 8, got %d", r.Candidates)
	}
	if s.Clients.RUM.Every < 0 {
		p.fieldf("clients.rum.every", "must not be negative, got %v", s.Clients.RUM.Every)
	}
	if s.Check.MaxMovedP99 < 0 {
		p.fieldf("check.max_moved_p99", "must not be negative, got %v", s.Check.MaxMovedP99)
	}
	if !(s.Check.MinLatencyGain >= 0 && s.Check.MinLatencyGain < 1) {
		p.fieldf("check.min_latency_gain", "must be at least 0 and below 1, got %v", s.Check.MinLatencyGain)
	}
}

// cpuMeters are the simulated nodes' CPU meters, by node address: each request a node answers
// adds workload.cpu_per_request, and the node reads its meter for its saturation.
type cpuMeters struct {
	mu sync.Mutex // guards m
	m  map[string]*atomic.Int64
}

// meter returns the meter of the node at ip, creating it.
func (c *cpuMeters) meter(ip string) *atomic.Int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*atomic.Int64{}
	}
	m, ok := c.m[ip]
	if !ok {
		m = &atomic.Int64{}
		c.m[ip] = m
	}
	return m
}

// Measured is what the report holds about load, shedding and latency-aware routing.
type Measured struct {
	// Saturation is, per PoP and per second, the PoP's utilisation as DNS saw it (the nodes'
	// own saturation figures, unless a capacity was configured).
	Saturation map[string][]float64 `json:"saturation"`
	// Shed is, per PoP and per second, the share of its client networks DNS sent elsewhere.
	Shed map[string][]float64 `json:"shed"`
	// Groups is, per client region and group ("rum", "geo"), the latency of the requests.
	Groups map[string]map[string]LatencyStats `json:"groups,omitempty"`
	// Trombone is, per group, the latency of the cities that some WAN path routes through a hub.
	Trombone map[string]LatencyStats `json:"trombone,omitempty"`
	// Crowd is, per answering PoP, the latency of the flash crowd's requests from its city.
	Crowd map[string]LatencyStats `json:"crowd,omitempty"`
	// Beacons counts beacon reports by outcome ("accepted", "limited", "refused", "failed").
	Beacons map[string]int64 `json:"beacons,omitempty"`
}

// measureRec is the Recorder's part for Measured.
type measureRec struct {
	mu       sync.Mutex // guards everything below
	sat      map[string][]float64
	shed     map[string][]float64
	groups   map[[2]string]*histogram // region, group
	trombone map[string]*histogram    // group
	crowd    map[string]*histogram    // answering PoP
	beacons  map[string]int64
}

// record adds a request sample: to its region and group, and, for a crowd request from the
// crowd's city while it lasts, to the crowd's latency by answering PoP.
func (m *measureRec) record(smp Sample) {
	if smp.Err != "" || smp.Group == "" && !smp.Crowd {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groups == nil {
		m.groups, m.trombone, m.crowd = map[[2]string]*histogram{}, map[string]*histogram{}, map[string]*histogram{}
	}
	if smp.Group != "" && !smp.Flash {
		// Flash crowd requests are a workload of their own (one hot object, one city): they
		// would weigh the groups differently, since rum clients spend time on beacons.
		addSample(m.groups, [2]string{smp.Region, smp.Group}, smp.Latency)
		if smp.Tromboning {
			addSample(m.trombone, smp.Group, smp.Latency)
		}
	}
	if smp.Crowd {
		addSample(m.crowd, smp.PoP, smp.Latency)
	}
}

// addSample adds latency d to the histogram under k in hs, creating it.
func addSample[K comparable](hs map[K]*histogram, k K, d time.Duration) {
	h := hs[k]
	if h == nil {
		h = &histogram{}
		hs[k] = h
	}
	h.add(d)
}

// RecordPoPLoad records PoP pop's utilisation and shed share at second at.
func (r *Recorder) RecordPoPLoad(at time.Duration, pop string, sat, shed float64) {
	if at < 0 {
		return
	}
	i := min(int(at/time.Second), r.cfg.MaxSeconds-1)
	m := &r.ms
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sat == nil {
		m.sat, m.shed = map[string][]float64{}, map[string][]float64{}
	}
	put := func(series map[string][]float64, v float64) {
		s := series[pop]
		for len(s) <= i {
			s = append(s, math.NaN())
		}
		s[i] = v
		series[pop] = s
	}
	put(m.sat, sat)
	put(m.shed, shed)
}

// RecordBeacon counts one beacon report by outcome.
func (r *Recorder) RecordBeacon(outcome string) {
	m := &r.ms
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.beacons == nil {
		m.beacons = map[string]int64{}
	}
	m.beacons[outcome]++
}

// measured copies out the report's Measured part.
func (m *measureRec) measured() *Measured {
	m.mu.Lock()
	defer m.mu.Unlock()
	stats := func(h *histogram) LatencyStats {
		return LatencyStats{Count: h.n, P50: h.quantile(0.5), P90: h.quantile(0.9), P99: h.quantile(0.99)}
	}
	out := &Measured{Saturation: map[string][]float64{}, Shed: map[string][]float64{}, Beacons: map[string]int64{}}
	for pop, s := range m.sat {
		out.Saturation[pop] = nanToZero(s)
	}
	for pop, s := range m.shed {
		out.Shed[pop] = nanToZero(s)
	}
	maps.Copy(out.Beacons, m.beacons)
	if len(m.groups) > 0 {
		out.Groups = map[string]map[string]LatencyStats{}
		for k, h := range m.groups {
			if out.Groups[k[0]] == nil {
				out.Groups[k[0]] = map[string]LatencyStats{}
			}
			out.Groups[k[0]][k[1]] = stats(h)
		}
	}
	if len(m.trombone) > 0 {
		out.Trombone = map[string]LatencyStats{}
		for g, h := range m.trombone {
			out.Trombone[g] = stats(h)
		}
	}
	if len(m.crowd) > 0 {
		out.Crowd = map[string]LatencyStats{}
		for pop, h := range m.crowd {
			out.Crowd[pop] = stats(h)
		}
	}
	return out
}

// nanToZero copies s with the seconds that got no figure (NaN) as the previous figure (0 at the
// start): JSON has no NaN.
func nanToZero(s []float64) []float64 {
	out := make([]float64, len(s))
	prev := 0.0
	for i, v := range s {
		if math.IsNaN(v) {
			v = prev
		}
		out[i], prev = v, v
	}
	return out
}

// Invariant names of routing from live measurements.
const (
	InvOverloadShed   = "overload_shed"
	InvLatencyRouting = "latency_routing"
)

// shedHigh is the high watermark the simulated DNS sheds up to (the policy's default).
const shedHigh = 1.0

// checkMeasured adds overload_shed (when a flash crowd comes from one city) and latency_routing
// (when RUM is on and WAN paths exist):
//
//   - overload_shed: from DNS TTL + 10 s after the crowd starts until it ends, the overloaded
//     PoP's utilisation stays under the high watermark (1.0); the p99 latency of the crowd's
//     requests that went to other PoPs is at most check.max_moved_p99; the PoP's shed share
//     changes direction at most twice (steps under 0.05, the DNS quantum, do not count).
//     Value is the largest utilisation in the window.
//   - latency_routing: in the cities some WAN path routes through a hub, the median latency of
//     the rum group is at least check.min_latency_gain below the geo group's; in every other
//     region the rum median is at most 10 % (plus 5 ms of timing noise) above the geo median.
//     Flash crowd requests count in neither group. Value is the gain.
func checkMeasured(s *Scenario, m *Measured, inv map[string]Invariant) {
	if m == nil {
		return
	}
	if e, ok := s.crowd(); ok {
		pop := s.overloadedPoP(e.City)
		sat := m.Saturation[pop]
		from, to := e.At+s.Clients.DNSTTL+10*time.Second, min(e.End(), s.Duration)
		worst := 0.0
		for i := int(from / time.Second); i < len(sat) && time.Duration(i)*time.Second < to; i++ {
			worst = max(worst, sat[i])
		}
		var movedP99 float64
		for p, st := range m.Crowd {
			if p != pop && p != "" {
				movedP99 = max(movedP99, st.P99)
			}
		}
		turns := directionChanges(m.Shed[pop], int(e.At/time.Second))
		limitMs := float64(s.Check.MaxMovedP99.Microseconds()) / 1000
		pass := worst < shedHigh && movedP99 <= limitMs && turns <= 2
		inv[InvOverloadShed] = Invariant{Pass: pass, Value: worst, Limit: shedHigh, Detail: fmt.Sprintf(
			"%s under the %s crowd: peak utilisation %.2f from %v to %v (limit %.1f); moved requests p99 %.0f ms (limit %.0f ms); shed share changed direction %d times (limit 2)",
			pop, e.City, worst, from, to, shedHigh, movedP99, limitMs, turns)}
	}
	if s.Clients.RUM.Enabled && len(s.WAN.Paths) > 0 {
		rum, geo := m.Trombone[GroupRUM], m.Trombone[GroupGeo]
		gain := 0.0
		if geo.P50 > 0 {
			gain = 1 - rum.P50/geo.P50
		}
		var worse []string
		for _, region := range sortedKeys(m.Groups) {
			g := m.Groups[region]
			if tromboneRegion(s, region) || g[GroupRUM].Count == 0 || g[GroupGeo].Count == 0 {
				continue
			}
			if g[GroupRUM].P50 > 1.1*g[GroupGeo].P50+5 {
				worse = append(worse, fmt.Sprintf("%s %.0f vs %.0f ms", region, g[GroupRUM].P50, g[GroupGeo].P50))
			}
		}
		detail := fmt.Sprintf("median latency where paths trombone: rum %.0f ms (%d requests), geo %.0f ms (%d): %.0f %% lower (limit %.0f %%)",
			rum.P50, rum.Count, geo.P50, geo.Count, gain*100, s.Check.MinLatencyGain*100)
		if len(worse) > 0 {
			detail += fmt.Sprintf("; worse elsewhere: %v", worse)
		} else {
			detail += "; no other region worse by over 10 % + 5 ms"
		}
		inv[InvLatencyRouting] = Invariant{Pass: gain >= s.Check.MinLatencyGain && len(worse) == 0 && rum.Count > 0 && geo.Count > 0,
			Value: gain, Limit: s.Check.MinLatencyGain, Detail: detail}
	}
}

// tromboneRegion reports whether some city of region has a WAN path through a hub.
func tromboneRegion(s *Scenario, region string) bool {
	for _, c := range s.Clients.Cities {
		if c.Region == region && s.trombones(c) {
			return true
		}
	}
	return false
}

// directionChanges counts how often series (from index from on) turns from rising to falling
// or back, ignoring steps under the DNS state's 5 % quantum.
func directionChanges(series []float64, from int) int {
	turns, dir := 0, 0
	last := math.NaN()
	for i := max(from, 0); i < len(series); i++ {
		v := series[i]
		if math.IsNaN(last) {
			last = v
			continue
		}
		d := 0
		switch {
		case v > last+0.049:
			d = 1
		case v < last-0.049:
			d = -1
		}
		if d == 0 {
			continue
		}
		if dir != 0 && d != dir {
			turns++
		}
		dir, last = d, v
	}
	return turns
}

// saturation is the saturation config of the node at ip in PoP p: its metered simulated CPU
// against the PoP's budget, or in-flight requests only without a budget.
func (f *Fleet) saturation(p PoPSpec, ip string) edge.SaturationConfig {
	if p.CPUBudget <= 0 {
		return edge.SaturationConfig{CPUs: -1}
	}
	m := f.cpu.meter(ip)
	return edge.SaturationConfig{CPUs: p.CPUBudget, CPUTime: func() time.Duration { return time.Duration(m.Load()) }}
}

// chargeCPU charges one request's simulated CPU to the node at ip.
func (f *Fleet) chargeCPU(ip string) {
	f.cpu.meter(ip).Add(int64(f.s.Workload.CPUPerRequest))
}

// followLatency feeds the latency bucket into the DNS server's map, as a live `meridian dns`
// does, over its own NATS connection with a DNS credential.
func (f *Fleet) followLatency(d *dnsroute.Server) error {
	cred, err := f.control.IssueCredential(natsauth.DNS("sim"))
	if err != nil {
		return fmt.Errorf("dns credential: %w", err)
	}
	opts, err := cred.Options()
	if err != nil {
		return fmt.Errorf("dns credential: %w", err)
	}
	nc, err := nats.Connect(f.control.NATSURL(), append(opts, nats.Name("meridian-sim-dns"), nats.MaxReconnects(-1))...)
	if err != nil {
		return fmt.Errorf("connect dns to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	f.goServe("dns-latency", func() error {
		defer nc.Close()
		d.FollowLatency(f.ctx, js, "")
		return nil
	})
	return nil
}

// crowdCity is the index of the city the flash crowd active at at comes from, or -1 (no
// crowd, or one from everywhere). Like Generator.Object, the first active crowd counts.
func (w *Workload) crowdCity(at time.Duration) int {
	for _, f := range w.flashes {
		if at >= f.At && at < f.End() {
			for i, c := range w.cities {
				if f.City != "" && c.Name == f.City {
					return i
				}
			}
			return -1
		}
	}
	return -1
}

// PoPLoad returns, per PoP, its utilisation as the fleet registry shows it and the share DNS
// sheds.
func (f *Fleet) PoPLoad() map[string][2]float64 {
	out := map[string][2]float64{}
	if v := f.control.Fleet(); v != nil {
		for _, p := range v.PoPs() {
			out[p.ID] = [2]float64{p.Utilisation(), f.dns.ShedShare(p.ID)}
		}
	}
	return out
}

// beaconAddr is the HTTP address of a live node of pop, for its beacon.
func (f *Fleet) beaconAddr(pop string) (string, bool) {
	for _, pr := range f.pops {
		if pr.spec.ID != pop {
			continue
		}
		for n := range pr.spec.Nodes {
			if a, ok := f.HTTPAddr(nodeIP(pr.idx, n)); ok {
				return a, true
			}
		}
	}
	return "", false
}

// clientKmTo is the length of city's leg to the party at addr: through a path's hub when one
// applies to the PoP there, else the great circle.
func (r *runner) clientKmTo(city City, addr string) float64 {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if pop, _, ok := r.f.PoPOf(host); ok {
		if p, ok := r.s.PoP(pop); ok {
			return r.s.clientKm(city, p)
		}
	}
	return r.f.kmTo(city.Lat, city.Lon, addr)
}

// recordLoad records every PoP's utilisation and shed share once a second until ctx ends.
func (r *runner) recordLoad(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			at := r.since(now)
			for pop, l := range r.f.PoPLoad() {
				r.rec.RecordPoPLoad(at, pop, l[0], l[1])
			}
		}
	}
}

// beaconTransport is the transport of city's network k for beacons: it sends from the
// network's own address (the edge attributes a report to the connection's /24) and pays the
// WAN model's delay like every client connection.
func (r *runner) beaconTransport(city, k int) *http.Transport {
	r.btMu.Lock()
	defer r.btMu.Unlock()
	if r.beaconHTTP == nil {
		r.beaconHTTP = map[[2]int]*http.Transport{}
	}
	key := [2]int{city, k}
	if t, ok := r.beaconHTTP[key]; ok {
		return t
	}
	c := r.s.Clients.Cities[city]
	wan := r.s.WAN.Model()
	src := &net.TCPAddr{IP: cityNetwork(city, k).Addr().Next().AsSlice()}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return wan.Dialer(r.clientKmTo(c, addr), &net.Dialer{Timeout: 2 * time.Second, LocalAddr: src})(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	r.beaconHTTP[key] = t
	return t
}

func (r *runner) closeBeaconTransports() {
	r.btMu.Lock()
	defer r.btMu.Unlock()
	for _, t := range r.beaconHTTP {
		t.CloseIdleConnections()
	}
}

// measure, when it is due for city, times the beacon of the nearest PoPs and of pop (the one
// DNS gave) through the WAN model, and reports the RTTs to pop, as a page's beacon script
// would. It returns how long that took.
func (c *client) measure(ctx context.Context, city int, pop string) time.Duration {
	r := c.r
	now := time.Now()
	if !r.beaconDue(city, c.net, now) {
		return 0
	}
	t := r.beaconTransport(city, c.net)
	cands := r.s.nearestPoPs(r.s.Clients.Cities[city], r.s.Clients.RUM.Candidates)
	if !slices.Contains(cands, pop) && pop != "" {
		cands = append(cands, pop)
	}
	rtt := map[string]float64{}
	for _, p := range cands {
		addr, ok := r.f.beaconAddr(p)
		if !ok {
			continue
		}
		// The first fetch may open the connection (a handshake more); the second is one
		// round trip, what the routing should compare.
		var took time.Duration
		for range 2 {
			took = beaconFetch(ctx, t, addr)
		}
		if took > 0 {
			rtt[p] = float64(took.Microseconds()) / 1000
		}
	}
	addr, ok := r.f.beaconAddr(pop)
	if len(rtt) == 0 || !ok {
		return time.Since(now)
	}
	body, _ := json.Marshal(wire.BeaconReport{RTTMs: rtt})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+wire.BeaconPath, bytes.NewReader(body))
	if err == nil {
		req.Host = SimHost
		var resp *http.Response
		if resp, err = t.RoundTrip(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusNoContent:
				r.rec.RecordBeacon("accepted")
			case http.StatusTooManyRequests:
				r.rec.RecordBeacon("limited")
			default:
				r.rec.RecordBeacon("refused")
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		r.rec.RecordBeacon("failed")
	}
	return time.Since(now)
}

// beaconFetch GETs a beacon and returns how long it took (0 on failure).
func beaconFetch(ctx context.Context, t *http.Transport, addr string) time.Duration {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+wire.BeaconPath, nil)
	if err != nil {
		return 0
	}
	req.Host = SimHost
	resp, err := t.RoundTrip(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0
	}
	return time.Since(start)
}

// beaconDue reports whether city's network k is due a measurement at now, and if so books it:
// the clients sharing a network measure in turn, once per clients.rum.every, as one page's
// beacon script per network would.
func (r *runner) beaconDue(city, k int, now time.Time) bool {
	r.btMu.Lock()
	defer r.btMu.Unlock()
	if r.beaconNext == nil {
		r.beaconNext = map[[2]int]time.Time{}
	}
	key := [2]int{city, k}
	if next, ok := r.beaconNext[key]; ok && now.Before(next) {
		return false
	}
	r.beaconNext[key] = now.Add(r.s.Clients.RUM.Every)
	return true
}
