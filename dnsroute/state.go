package dnsroute

import (
	"fmt"
	"hash/fnv"
	"math"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
	"github.com/meridian-cdn/meridian/wire"
)

// state is one immutable view of the fleet and policy, with the answer cache that is valid
// for it. A fleet change, a policy change, an MMDB reload or a heartbeat going stale builds a
// new state. A state rebuilt after a fleet change keeps its predecessor's cache when its
// outcome (see outcomeKey) is the same: a heartbeat that only moves load inside one quantum
// changes no answer, so it must not cost the cache.
type state struct {
	pops      []popState
	byID      map[string]int
	policy    geo.Policy
	weights   map[string]float64
	defaultID string
	// changed is the fleet's change channel at build time.
	changed <-chan struct{}
	// validUntil is when the freshest-looking heartbeat in the state goes stale.
	validUntil time.Time
	// lat is the latency map, read live: its changes invalidate the cached answers of the
	// networks they concern only (see latencyMap), not the state.
	lat *latencyMap
	// at is when the state was built; latency records are read as of then.
	at time.Time
	// outcome is everything the answers depend on (see outcomeKey).
	outcome string
	cache   *answerCache
	// netCache holds the answers that hold for every client of a database network (not
	// per client), keyed by that network instead of the client prefix: a client prefix
	// not yet in cache finds its answer here after one MMDB lookup, without routing.
	netCache *answerCache
}

type popState struct {
	pop wire.PoP
	// util is the PoP's quantised utilisation; routeUtil is the same figure where the policy
	// compares it (least-loaded, or a PoP that sheds, for the everyone-sheds fallback) and 0
	// elsewhere, so that load that decides nothing is no part of the outcome.
	util, routeUtil float64
	shed            float64
	// usable4/6 are the healthy, fresh, non-draining nodes with an address of the family;
	// all4/6 every node with one (for failing open).
	usable4, usable6, all4, all6 []nodeAddr
}

type nodeAddr struct {
	id    string
	addr  netip.Addr
	spare float64 // unused capacity fraction, for weighted rotation
}

// Quanta of the load figures a state routes on. Answers are computed from the quantised
// values only, so two states with the same quantised figures give the same answers and may
// share a cache; a finer figure would make every heartbeat a new routing outcome.
const (
	// utilQuantum is the step of a PoP's utilisation (least-loaded compares them).
	utilQuantum = 0.05
	// shedQuantum is the step of a PoP's shed share: the share of /24s moved changes in steps
	// of 5 % of the PoP's clients.
	shedQuantum = 0.05
	// spareQuantum is the step of a node's spare capacity; weighted rotation has 16 slots.
	spareQuantum = 1.0 / 16
)

// quantise rounds x to a multiple of q; a positive x stays positive (at least one step), so
// that shedding a little never reads as shedding nothing.
func quantise(x, q float64) float64 {
	if !(x > 0) {
		return 0
	}
	return max(1, math.Round(x/q)) * q
}

// buildState snapshots the fleet at now.
func (s *Server) buildState(now time.Time) *state {
	changed := s.fleet.Changed() // before PoPs, so that no change is missed
	pops := s.fleet.PoPs()
	pol := s.policy.Load()
	st := &state{
		lat:        s.lat,
		at:         now,
		byID:       map[string]int{},
		policy:     rankPolicy(*pol),
		weights:    pol.Weights,
		changed:    changed,
		validUntil: now.Add(time.Hour),
		cache:      newAnswerCache(s.cfg.CacheEntries),
		netCache:   newAnswerCache(s.cfg.CacheEntries),
	}
	ttl := s.cfg.HeartbeatTTL
	// Spare capacity orders only weighted rotations; elsewhere it is left out of the outcome.
	weightedRotation := s.cfg.Rotation == "weighted"
	for _, p := range pops {
		ps := popState{pop: p, util: quantise(p.Utilisation(), utilQuantum)}
		for _, n := range p.Nodes {
			fresh := n.Load.At.IsZero() || now.Sub(n.Load.At) <= ttl
			if fresh && !n.Load.At.IsZero() && n.Load.At.Add(ttl).Before(st.validUntil) {
				st.validUntil = n.Load.At.Add(ttl)
			}
			spare := 1.0
			if weightedRotation {
				spare = math.Round(max(0, 1-n.Utilisation())/spareQuantum) * spareQuantum
			}
			usable := fresh && n.Usable()
			if a, err := netip.ParseAddr(n.IPv4); err == nil && a.Is4() {
				na := nodeAddr{n.ID, a, spare}
				ps.all4 = append(ps.all4, na)
				if usable {
					ps.usable4 = append(ps.usable4, na)
				}
			}
			if a, err := netip.ParseAddr(n.IPv6); err == nil && a.Is6() && !a.Is4In6() {
				na := nodeAddr{n.ID, a, spare}
				ps.all6 = append(ps.all6, na)
				if usable {
					ps.usable6 = append(ps.usable6, na)
				}
			}
		}
		if len(ps.usable4)+len(ps.usable6) > 0 {
			// The shedder sees the exact figure (its hysteresis needs it); answers see steps.
			ps.shed = quantise(s.shed.Update(p.ID, p.Utilisation(), st.policy.Low, st.policy.High), shedQuantum)
		}
		if st.policy.Name == geo.LeastLoaded || ps.shed > 0 {
			ps.routeUtil = ps.util
		}
		st.byID[p.ID] = len(st.pops)
		st.pops = append(st.pops, ps)
	}
	st.defaultID = s.cfg.DefaultPoP
	if _, ok := st.byID[st.defaultID]; !ok && len(st.pops) > 0 {
		ids := make([]string, 0, len(st.pops))
		for _, p := range st.pops {
			ids = append(ids, p.pop.ID)
		}
		sort.Strings(ids)
		st.defaultID = ids[0]
	}
	st.outcome = st.outcomeKey(pol)
	return st
}

// outcomeKey encodes everything an answer of st depends on: the policy, the default PoP and,
// per PoP, its location, quantised utilisation and shed share, and the ids, addresses and
// quantised spare capacity of its usable and all nodes. Load reports, heartbeats and health
// flips that change none of these leave the key, and so the answers, as they were.
func (st *state) outcomeKey(pol *wire.RoutingPolicy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%g|%g|%g|%g|%s|", st.policy.Name, st.policy.RadiusKm, st.policy.Low, st.policy.High, st.policy.Explore, st.defaultID)
	ws := make([]string, 0, len(pol.Weights))
	for id, w := range pol.Weights {
		ws = append(ws, fmt.Sprintf("%s=%g", id, w))
	}
	sort.Strings(ws)
	b.WriteString(strings.Join(ws, ","))
	for _, p := range st.pops {
		fmt.Fprintf(&b, "\n%s %g %g u%g s%g", p.pop.ID, p.pop.Lat, p.pop.Lon, p.routeUtil, p.shed)
		for _, set := range [][]nodeAddr{p.usable4, p.usable6, p.all4, p.all6} {
			b.WriteString(" [")
			for _, n := range set {
				fmt.Fprintf(&b, "%s=%s/%g ", n.id, n.addr, n.spare)
			}
			b.WriteString("]")
		}
	}
	return b.String()
}

// decision is the routing outcome for one client and address family.
type decision struct {
	loc       geo.Location
	located   bool // false: the default PoP's location stood in
	ranked    []geo.Ranked
	choice    geo.Choice
	pop       *popState // nil: nothing to answer (fail closed or no PoPs)
	nodes     []nodeAddr
	failOpen  bool
	perClient bool
	// rtt is what clients of the client's network measured (nil: nothing), from samples
	// reports; explored is true when this client explores (geo.OrderByRTT).
	rtt         map[string]float64
	samples     int
	edgeSamples int // of samples, those the edges measured (TCP_INFO, QUIC)
	explored    bool
	// latencyFloor: the policy consults a followed latency map (see scope).
	latencyFloor bool
}

// route decides where a client at loc (the lookup of the client prefix) goes for family v6.
func (st *state) route(loc geo.Location, client netip.Prefix, v6 bool) decision {
	d := decision{loc: loc, located: loc.Found}
	lat, lon := loc.Lat, loc.Lon
	if !loc.Found {
		if i, ok := st.byID[st.defaultID]; ok {
			lat, lon = st.pops[i].pop.Lat, st.pops[i].pop.Lon
		}
	}
	cands := make([]geo.Candidate, len(st.pops))
	for i, p := range st.pops {
		usable := p.usable4
		if v6 {
			usable = p.usable6
		}
		cands[i] = geo.Candidate{
			ID: p.pop.ID, Lat: p.pop.Lat, Lon: p.pop.Lon, Utilisation: p.routeUtil,
			Usable: len(usable) > 0, Weight: st.weights[p.pop.ID],
		}
	}
	if st.policy.Name == geo.Latency || st.policy.Name == geo.Nearest {
		d.rtt, d.samples, d.edgeSamples = st.lat.Lookup(wire.ClientNetwork(client.Addr()), st.at)
		d.latencyFloor = st.lat.followed.Load()
		for i := range cands {
			cands[i].RTTMs = d.rtt[cands[i].ID]
		}
	}
	d.ranked = geo.Rank(lat, lon, cands)
	pol := st.policy
	measured := false
	if d.rtt != nil {
		// Measurements beat geography: rank by RTT, then choose as nearest does (shedding
		// included). The answer holds for the client's network only.
		d.ranked, measured, d.explored = geo.OrderByRTT(d.ranked, pol.Explore, exploreHash(client))
		if measured {
			pol.Name = geo.Latency
		}
	}
	shed := func(id string) float64 { return st.pops[st.byID[id]].shed }
	d.choice = geo.Choose(pol, d.ranked, shed, clientHash(client))
	if d.explored && d.choice.Index == 0 {
		d.choice.Reason = "exploring, to measure another PoP; " + d.choice.Reason
	}
	// Measurements and exploration are the client's network's own.
	d.perClient = d.choice.PerClient || measured || d.explored
	if d.choice.Index >= 0 {
		d.pop = &st.pops[st.byID[d.ranked[d.choice.Index].ID]]
		d.nodes = d.pop.usable4
		if v6 {
			d.nodes = d.pop.usable6
		}
		return d
	}
	// No usable PoP: fail open to the nearest PoP that has any address of the family.
	d.failOpen = true
	for _, r := range d.ranked {
		p := &st.pops[st.byID[r.ID]]
		nodes := p.all4
		if v6 {
			nodes = p.all6
		}
		if len(nodes) > 0 {
			d.pop, d.nodes = p, nodes
			return d
		}
	}
	return d
}

// scope is the ECS scope prefix length for which d holds: the database network, or the
// client's own cache prefix when the choice hashed the client. With a latency map followed,
// never wider than one client network (/24, /48): a resolver would otherwise reuse a
// geographic answer for a network inside the database's (often /16) that has measurements
// of its own.
func (d decision) scope(client netip.Prefix) int {
	limit := client.Bits()
	if d.perClient {
		return limit
	}
	s := min(d.loc.Network.Bits(), limit)
	if d.latencyFloor {
		s = max(s, min(wire.ClientNetwork(client.Addr()).Bits(), limit))
	}
	return s
}

// clientHash maps a client prefix to a stable number in [0, 1).
func clientHash(p netip.Prefix) float64 { return prefixHash("", p) }

// exploreHash maps a client prefix to a stable number in [0, 1) independent of clientHash,
// so that the clients that explore are not the ones shedding moves.
func exploreHash(p netip.Prefix) float64 { return prefixHash("explore", p) }

// prefixHash maps salt and a client prefix to a stable number in [0, 1).
func prefixHash(salt string, p netip.Prefix) float64 {
	h := fnv.New64a()
	h.Write([]byte(salt))
	b, _ := p.Addr().MarshalBinary()
	h.Write(b)
	h.Write([]byte{byte(p.Bits())})
	// Top 53 bits make an exact float64 in [0, 1).
	return float64(h.Sum64()>>11) / (1 << 53)
}

// rotations returns the address orders an answer cycles through, each with up to count
// addresses: one per rotation start (round robin), or 16 orders whose first address is
// each node in proportion to its spare capacity (weighted).
func rotations(nodes []nodeAddr, count int, weighted bool) [][]netip.Addr {
	if len(nodes) == 0 {
		return [][]netip.Addr{nil}
	}
	count = min(count, len(nodes))
	var starts []int
	if weighted && len(nodes) > 1 {
		const slots = 16
		var total float64
		for _, n := range nodes {
			total += n.spare
		}
		// Largest remainder apportionment of the slots by spare capacity.
		type share struct {
			i    int
			rem  float64
			seat int
		}
		shares := make([]share, len(nodes))
		given := 0
		for i, n := range nodes {
			w := 1 / float64(len(nodes))
			if total > 0 {
				w = n.spare / total
			}
			exact := w * slots
			shares[i] = share{i, exact - math.Floor(exact), int(exact)}
			given += int(exact)
		}
		order := make([]int, len(shares))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return shares[order[a]].rem > shares[order[b]].rem })
		for k := 0; given < slots; k++ {
			shares[order[k%len(order)]].seat++
			given++
		}
		for _, sh := range shares {
			for range sh.seat {
				starts = append(starts, sh.i)
			}
		}
		// Interleave so consecutive queries spread over nodes.
		starts = interleave(starts, len(nodes))
	} else {
		for i := range min(len(nodes), 16) {
			starts = append(starts, i)
		}
	}
	out := make([][]netip.Addr, len(starts))
	for v, st := range starts {
		addrs := make([]netip.Addr, count)
		for k := range count {
			addrs[k] = nodes[(st+k)%len(nodes)].addr
		}
		out[v] = addrs
	}
	return out
}

// interleave reorders grouped node indices (0,0,0,1,1,2) into round robin order (0,1,2,0,1,0).
func interleave(starts []int, n int) []int {
	buckets := make([][]int, n)
	for _, s := range starts {
		buckets[s] = append(buckets[s], s)
	}
	out := make([]int, 0, len(starts))
	for len(out) < len(starts) {
		for i := range buckets {
			if len(buckets[i]) > 0 {
				out = append(out, buckets[i][0])
				buckets[i] = buckets[i][1:]
			}
		}
	}
	return out
}
