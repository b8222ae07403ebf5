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
	// usable4/6: some PoP has a usable node with an address of the family.
	usable4, usable6 bool
	// cache holds the answers by client prefix and, under network keys (see netKey), the
	// answers that hold for every client of a database network (not per client): a client
	// prefix not yet in cache finds its answer there after one MMDB lookup, without
	// routing. One LRU for both, so that cache_entries bounds every answer held.
	cache *answerCache
}

type popState struct {
	pop wire.PoP
	// util is the PoP's quantised utilisation; level the same with the policy's load
	// hysteresis (see buildState); routeUtil is level where the policy compares it
	// (least-loaded, or while every usable PoP of a family sheds, for the everyone-sheds
	// fallback) and 0 elsewhere, so that load that decides nothing is no part of the outcome.
	util, level, routeUtil float64
	// shed is the share of its clients the PoP sheds (quantised); routeShed is what of it
	// answers depend on (see buildState), so that a share that decides nothing is no part of
	// the outcome.
	shed, routeShed float64
	// usable4/6 are the healthy, fresh, non-draining nodes with an address of the family;
	// all4/6 every node with one (for failing open).
	usable4, usable6, all4, all6 []nodeAddr
	// rot4/6 rotate answers over usable4/6, allRot4/6 over all4/6 (nil: no node).
	rot4, rot6, allRot4, allRot6 *rotation
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
	// spareQuantum is the step of a node's spare capacity; weighted rotation gives each node
	// turns in whole quanta of its spare capacity.
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
		cache:      newAnswerCache(s.cfg.CacheEntries, s.cfg.CacheBytes),
	}
	ttl := s.cfg.HeartbeatTTL
	band := loadHysteresis(*pol)
	levels := make(map[string]float64, len(pops))
	// Spare capacity orders only weighted rotations; elsewhere it is left out of the outcome.
	weightedRotation := s.cfg.Rotation == "weighted"
	for _, p := range pops {
		ps := popState{pop: p}
		// The PoP's load is that of the nodes that take its clients: a drained, unhealthy or
		// silent node serves none, its capacity is no room for them and its last report says
		// nothing of the others' load (a stale one stays in a live fleet to fail open to).
		serving := wire.PoP{}
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
			if usable {
				serving.Nodes = append(serving.Nodes, n)
			}
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
		ps.rot4 = newRotation(ps.usable4, s.cfg.AnswerCount, weightedRotation)
		ps.rot6 = newRotation(ps.usable6, s.cfg.AnswerCount, weightedRotation)
		// Usable nodes are a subsequence of all: as many means the same (and every heartbeat
		// rebuilds these).
		ps.allRot4, ps.allRot6 = ps.rot4, ps.rot6
		if len(ps.all4) != len(ps.usable4) {
			ps.allRot4 = newRotation(ps.all4, s.cfg.AnswerCount, weightedRotation)
		}
		if len(ps.all6) != len(ps.usable6) {
			ps.allRot6 = newRotation(ps.all6, s.cfg.AnswerCount, weightedRotation)
		}
		// A PoP nothing serves shows its nodes' last figures (explain); it routes no client.
		util := p.Utilisation()
		if len(serving.Nodes) > 0 {
			util = serving.Utilisation()
		}
		ps.util = quantise(util, utilQuantum)
		// Compared loads follow a PoP's load only once it leaves the figure in use by more
		// than the band: two PoPs of close loads would otherwise swap their clients (and
		// drop the cache) whenever one's load jitters across a step.
		level, ok := s.loadLevel[p.ID]
		if len(serving.Nodes) > 0 && (!ok || !(math.Abs(util-level) <= band)) {
			level, ok = ps.util, true
		}
		if ok {
			ps.level, levels[p.ID] = level, level
		}
		if len(ps.usable4)+len(ps.usable6) > 0 {
			// The shedder sees the exact figure (its hysteresis needs it); answers see steps.
			ps.shed = quantise(s.shed.Update(p.ID, util, st.policy.Low, st.policy.High), shedQuantum)
		}
		st.usable4 = st.usable4 || len(ps.usable4) > 0
		st.usable6 = st.usable6 || len(ps.usable6) > 0
		st.byID[p.ID] = len(st.pops)
		st.pops = append(st.pops, ps)
	}
	// Only nearest (and latency, and nearest following measurements) sheds: least-loaded and
	// weighted choose without the shares. Under nearest a PoP's share decides where the
	// clients it sheds go only when another usable PoP of the family can take them; when it
	// is the only one, every client gets it whatever its share (geo.Choose keeps the least
	// utilised of those that shed a client), and only whether it sheds at all shows, in the
	// answers' ECS scope (per client). A share changing above zero would otherwise drop the
	// cache at every heartbeat of a lone PoP between the watermarks and change no answer.
	sheds := st.policy.Name == geo.Nearest || st.policy.Name == geo.Latency
	if sheds {
		n4, n6 := 0, 0
		for _, p := range st.pops {
			n4 += min(len(p.usable4), 1)
			n6 += min(len(p.usable6), 1)
		}
		for i, p := range st.pops {
			st.pops[i].routeShed = p.shed
			if p.shed > 0 && (len(p.usable4) == 0 || n4 == 1) && (len(p.usable6) == 0 || n6 == 1) {
				st.pops[i].routeShed = shedQuantum // sheds, to nobody
			}
		}
	}
	// Utilisation decides an answer under least-loaded, and under nearest only where every
	// usable PoP of a family sheds, two or more (the least utilised of them keeps whom all
	// shed: geo.Choose). Elsewhere a shedding PoP's load moving a step while its share stays
	// would drop the cache at every heartbeat and change no answer.
	if st.policy.Name == geo.LeastLoaded || sheds && (st.everyUsableSheds(false) || st.everyUsableSheds(true)) {
		for i, p := range st.pops {
			if len(p.usable4)+len(p.usable6) > 0 { // only usable PoPs are compared
				st.pops[i].routeUtil = p.level
			}
		}
	}
	s.loadLevel = levels
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

// everyUsableSheds reports whether two or more PoPs have usable nodes of the family (v6) and
// every such PoP sheds a share of its clients. A lone usable PoP gets every client whatever
// its load.
func (st *state) everyUsableSheds(v6 bool) bool {
	n := 0
	for _, p := range st.pops {
		usable := p.usable4
		if v6 {
			usable = p.usable6
		}
		if len(usable) == 0 {
			continue
		}
		if p.shed == 0 {
			return false
		}
		n++
	}
	return n > 1
}

// outcomeKey encodes everything an answer of st depends on: the policy, the default PoP and,
// per PoP, its location, its utilisation and shed share where answers depend on them, and the ids, addresses and
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
		fmt.Fprintf(&b, "\n%s %g %g u%g s%g", p.pop.ID, p.pop.Lat, p.pop.Lon, p.routeUtil, p.routeShed)
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
	rot       *rotation // the answer's addresses (nil when pop is)
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
		d.rot = d.pop.rot4
		if v6 {
			d.rot = d.pop.rot6
		}
		return d
	}
	// Nodes are healthy or not whatever the family: while some PoP serves the other one, this
	// family's nodes are known to be down, and NODATA sends the client to the family that
	// works (a DNS64 resolver synthesises AAAA from the A records) where failing open would
	// send it to a dead node first. Failing open is for when nothing is usable, which is as
	// likely the fleet's reports being wrong (cut off from NATS) as the fleet being down.
	if st.usable4 || st.usable6 {
		d.choice.Reason = "no usable PoP has an address of this family; some serve the other (NODATA)"
		return d
	}
	// No usable PoP: fail open to the nearest PoP that has any address of the family.
	d.failOpen = true
	for _, r := range d.ranked {
		p := &st.pops[st.byID[r.ID]]
		rot := p.allRot4
		if v6 {
			rot = p.allRot6
		}
		if rot != nil {
			d.pop, d.rot = p, rot
			return d
		}
	}
	return d
}

// scope is the ECS scope prefix length for which d holds: the database network (at most
// /24 or /56, the client cache prefix), or, when the choice hashed the client, the client's
// own prefix, but never shorter than that network. The database network holds when it is
// longer than the source too (RFC 7871 section 7.2.1: a scope longer than the source says
// that the source was not specific enough): a /12 source located in a /16 gets /16, not /12,
// which would tell the resolver that the answer suits every other network in the /12 as well
// (gdnsd answers so too). A hashed choice is no exception: it was made among the PoPs ranked
// from that /16's location, which another /16 in the /12 ranks otherwise. With a latency map
// followed, never wider than one client network (/24, /48): a resolver would otherwise reuse
// a geographic answer for a network inside the database's (often /16) that has measurements
// of its own. That floor holds past a shorter source prefix too: a /20 is routed on the
// measurements of the /24 at its address, which say nothing of the other fifteen.
func (d decision) scope(client netip.Prefix) int {
	limit := v6CacheBits
	if client.Addr().Is4() {
		limit = v4CacheBits
	}
	s := min(d.loc.Network.Bits(), limit)
	if d.perClient {
		s = max(s, client.Bits())
	}
	if d.latencyFloor {
		s = max(s, wire.ClientNetwork(client.Addr()).Bits())
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

// rotation is how an answer's addresses take turns over a PoP's nodes of one family: turn k
// holds count addresses of consecutive nodes from its first node on (wrapping). Round robin
// turn k starts at node k mod n; weighted turns start at each node in proportion to its spare
// capacity. An answer of at most maxVariants turns is cached as one pre-packed reply per
// turn; one of more turns as one reply, into whose copy a hit writes its turn's addresses
// (write).
type rotation struct {
	addrs []byte // the nodes' addresses in node order, size bytes each
	size  int    // 4 (A) or 16 (AAAA)
	n     int    // nodes
	count int    // addresses per answer: answer_count, at most n
	// starts is the first node of each weighted turn; nil for round robin.
	starts []int32
}

// maxVariants is the most turns an answer is cached with as pre-packed replies, one per turn.
// Beyond it (a PoP of more than 16 nodes) the cache holds one reply and a hit writes its turn's
// addresses into its copy: a reply per node of a 200-node PoP would be some 20 KB per cache
// entry, while the write costs a hit several ns (of about 70) that a small PoP need not pay.
const maxVariants = 16

// newRotation returns the rotation of count addresses over nodes, all of one family; nil
// when there are none.
func newRotation(nodes []nodeAddr, count int, weighted bool) *rotation {
	if len(nodes) == 0 {
		return nil
	}
	r := &rotation{n: len(nodes), count: max(1, min(count, len(nodes))), size: nodes[0].addr.BitLen() / 8}
	r.addrs = make([]byte, 0, r.n*r.size)
	for _, n := range nodes {
		r.addrs = append(r.addrs, n.addr.AsSlice()...)
	}
	if weighted && len(nodes) > 1 {
		var seats []int
		if len(nodes) <= maxVariants {
			seats = apportion(nodes, maxVariants)
		} else {
			seats = spareSeats(nodes) // more nodes than slots: exact, and written at each hit
		}
		var starts []int32
		for i, k := range seats {
			for range k {
				starts = append(starts, int32(i))
			}
		}
		// Interleave so consecutive queries spread over nodes.
		r.starts = interleave(starts, len(nodes))
	}
	return r
}

// spareSeats gives each node turns in exact proportion to its spare capacity (a multiple of
// spareQuantum): spare/spareQuantum, divided by the common divisor, so that equal spares
// give one turn each; nobody spare, one each.
func spareSeats(nodes []nodeAddr) []int {
	seats := make([]int, len(nodes))
	g := 0
	for i, n := range nodes {
		seats[i] = int(math.Round(n.spare / spareQuantum))
		g = gcd(g, seats[i])
	}
	for i := range seats {
		if g > 0 {
			seats[i] /= g
		} else {
			seats[i] = 1
		}
	}
	return seats
}

// apportion shares slots turns among nodes by spare capacity (largest remainder), so that an
// answer of a small PoP has at most slots pre-packed replies.
func apportion(nodes []nodeAddr, slots int) []int {
	var total float64
	for _, n := range nodes {
		total += n.spare
	}
	type share struct {
		i   int
		rem float64
	}
	seats := make([]int, len(nodes))
	shares := make([]share, len(nodes))
	given := 0
	for i, n := range nodes {
		w := 1 / float64(len(nodes))
		if total > 0 {
			w = n.spare / total
		}
		exact := w * float64(slots)
		shares[i] = share{i, exact - math.Floor(exact)}
		seats[i] = int(exact)
		given += seats[i]
	}
	sort.SliceStable(shares, func(a, b int) bool { return shares[a].rem > shares[b].rem })
	for k := 0; given < slots; k++ {
		seats[shares[k%len(shares)].i]++
		given++
	}
	return seats
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// turns is how many different answers the rotation cycles through.
func (r *rotation) turns() int {
	if r.starts != nil {
		return len(r.starts)
	}
	return r.n
}

// first is the node that leads turn k.
func (r *rotation) first(k uint32) int {
	if r.starts != nil {
		return int(r.starts[k%uint32(len(r.starts))])
	}
	return int(k % uint32(r.n))
}

// turn returns the addresses of turn k.
func (r *rotation) turn(k uint32) []netip.Addr {
	out := make([]netip.Addr, r.count)
	i := r.first(k)
	for j := range out {
		out[j], _ = netip.AddrFromSlice(r.addrs[i*r.size : (i+1)*r.size])
		if i++; i == r.n {
			i = 0
		}
	}
	return out
}

// write puts turn k's addresses into the packed reply out, whose answer records for them
// have RDATA at byte at and every step bytes on (see addrOffsets). It is on the cache hit
// path: fixed-size moves, no calls.
func (r *rotation) write(out []byte, at, step uint16, k uint32) {
	i, off := r.first(k)*r.size, int(at)
	for range r.count {
		if r.size == 4 {
			*(*[4]byte)(out[off:]) = [4]byte(r.addrs[i:])
		} else {
			*(*[16]byte)(out[off:]) = [16]byte(r.addrs[i:])
		}
		if i += r.size; i == len(r.addrs) {
			i = 0
		}
		off += int(step)
	}
}

// interleave reorders grouped node indices (0,0,0,1,1,2) into round robin order (0,1,2,0,1,0).
func interleave(starts []int32, n int) []int32 {
	buckets := make([][]int32, n)
	for _, s := range starts {
		buckets[s] = append(buckets[s], s)
	}
	out := make([]int32, 0, len(starts))
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
