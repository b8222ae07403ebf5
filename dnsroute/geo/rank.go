package geo

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// Policy names.
const (
	Nearest     = "nearest"
	LeastLoaded = "least-loaded"
	Weighted    = "weighted"
	// Latency ranks by the RTT real clients measured (see OrderByRTT), by distance where
	// nothing was measured, then chooses as Nearest does (shedding included).
	Latency = "latency"
)

// DefaultExplore is the share of measured clients sent to the second-best PoP.
const DefaultExplore = 0.05

// Candidate is one PoP as the ranking sees it.
type Candidate struct {
	ID       string
	Lat, Lon float64
	// Utilisation is the PoP's load as a fraction of its capacity (0 when unknown).
	Utilisation float64
	// Usable is true when the PoP has at least one healthy, fresh, non-draining node that can
	// answer the query.
	Usable bool
	// Weight is the PoP's share under the weighted policy.
	Weight float64
	// RTTMs is the RTT clients of the querying network measured to the PoP, in
	// milliseconds; 0 means no measurement.
	RTTMs float64
}

// Ranked is a candidate with its distance from the client.
type Ranked struct {
	Candidate
	DistanceKm float64
}

// Rank sorts cands by great-circle distance from (lat, lon), nearest first; ties by id.
func Rank(lat, lon float64, cands []Candidate) []Ranked {
	out := make([]Ranked, len(cands))
	for i, c := range cands {
		out[i] = Ranked{Candidate: c, DistanceKm: DistanceKm(lat, lon, c.Lat, c.Lon)}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].DistanceKm != out[j].DistanceKm {
			return out[i].DistanceKm < out[j].DistanceKm
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Policy is how Choose picks among ranked candidates.
type Policy struct {
	// Name is Nearest (default), LeastLoaded or Weighted.
	Name string
	// RadiusKm bounds LeastLoaded to candidates within this distance of the nearest.
	RadiusKm float64
	// Low and High are the utilisations between which Nearest sheds load to the next PoP.
	Low, High float64
	// Explore is the share of measured clients OrderByRTT sends to the second-best PoP.
	Explore float64
}

// Choice is the outcome of Choose.
type Choice struct {
	// Index is the chosen entry of the ranked slice, or -1 when no candidate is usable.
	Index int
	// PerClient is true when the choice depended on the client's hash (load shedding or
	// weights), so it holds only for that client's prefix, not for the whole location.
	PerClient bool
	// Scores holds, per ranked entry, the value the policy compared: the shed fraction
	// (nearest), the utilisation (least-loaded, +Inf outside the radius) or the weight.
	// Unusable entries score NaN.
	Scores []float64
	// Reason says in words why Index was chosen.
	Reason string
}

// Choose picks a usable candidate from ranked (as returned by Rank) under policy p. shed gives
// the fraction of clients a PoP sheds (see Shedder); h in [0, 1) is the client's stable hash,
// which decides which clients are shed or where weights send them.
func Choose(p Policy, ranked []Ranked, shed func(id string) float64, h float64) Choice {
	c := Choice{Index: -1, Scores: make([]float64, len(ranked))}
	for i := range c.Scores {
		c.Scores[i] = math.NaN()
	}
	switch p.Name {
	case LeastLoaded:
		chooseLeastLoaded(p, ranked, &c)
	case Weighted:
		chooseWeighted(ranked, h, &c)
	case Latency:
		chooseNearest(ranked, shed, h, &c)
		if c.Index >= 0 && ranked[c.Index].RTTMs > 0 {
			c.Reason = fmt.Sprintf("lowest measured RTT (%.0f ms); %s", ranked[c.Index].RTTMs, c.Reason)
		} else if c.Index >= 0 {
			c.Reason = "no measurement; " + c.Reason
		}
	default:
		chooseNearest(ranked, shed, h, &c)
	}
	return c
}

func chooseNearest(ranked []Ranked, shed func(string) float64, h float64, c *Choice) {
	last := -1
	for i, r := range ranked {
		if !r.Usable {
			continue
		}
		f := 0.0
		if shed != nil {
			f = shed(r.ID)
		}
		c.Scores[i] = f
		if f > 0 {
			c.PerClient = true
		}
		if c.Index >= 0 {
			continue
		}
		if h >= f {
			c.Index = i
			if f > 0 {
				c.Reason = fmt.Sprintf("nearest usable PoP not shedding this client (%s sheds %.0f%%)", r.ID, f*100)
			} else if last >= 0 {
				c.Reason = "nearest PoP with room after shedding"
			} else {
				c.Reason = "nearest usable PoP"
			}
			continue
		}
		// Shed: rescale h so the next PoP sees a uniform hash again.
		h /= f
		if h >= 1 {
			h = math.Nextafter(1, 0)
		}
		last = i
	}
	if c.Index < 0 && last >= 0 {
		// Every usable PoP sheds this client: keep the least utilised rather than none.
		best := -1
		for i, r := range ranked {
			if r.Usable && (best < 0 || r.Utilisation < ranked[best].Utilisation) {
				best = i
			}
		}
		c.Index = best
		c.Reason = "every usable PoP is shedding; least utilised"
	}
}

// OrderByRTT reorders ranked (as returned by Rank) by measured RTT: when at least two usable
// candidates have a figure, those come first, lowest RTT first, followed by the rest in
// their distance order, and it reports measured. One figure alone cannot say that another
// PoP would be worse (an edge measures only the PoP its clients reach), so the distance
// order stands and measured is false: otherwise a network once served far away, say while
// its nearest PoP was down, would keep that PoP for good.
//
// When hx (a stable hash of the client in [0, 1), independent of the shedding hash) is under
// explore, this client explores, so that the map learns and stays fresh: it goes to the
// nearest usable PoP without a figure when that is nearer than every measured one (nothing
// else would ever measure it), else to the second best measured; with one figure, to the next
// usable PoP by distance. It reports whether this client explores.
func OrderByRTT(ranked []Ranked, explore, hx float64) (out []Ranked, measured, explored bool) {
	has := func(r Ranked) bool { return r.Usable && r.RTTMs > 0 }
	n := 0
	for _, r := range ranked {
		if has(r) {
			n++
		}
	}
	out = make([]Ranked, 0, len(ranked))
	if n < 2 {
		out = append(out, ranked...)
		if n == 1 && hx < explore {
			explored = swapUsable(out, 0)
		}
		return out, false, explored
	}
	for _, r := range ranked {
		if has(r) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].RTTMs != out[j].RTTMs {
			return out[i].RTTMs < out[j].RTTMs
		}
		return out[i].ID < out[j].ID
	})
	for _, r := range ranked {
		if !has(r) {
			out = append(out, r)
		}
	}
	if hx < explore {
		// ranked is in distance order: is its first usable candidate unmeasured?
		for _, r := range ranked {
			if !r.Usable {
				continue
			}
			if !has(r) {
				i := slices.IndexFunc(out, func(o Ranked) bool { return o.ID == r.ID })
				copy(out[1:i+1], out[:i])
				out[0] = r
				return out, true, true
			}
			break
		}
		out[0], out[1] = out[1], out[0]
		explored = true
	}
	return out, true, explored
}

// swapUsable swaps the first two usable candidates of out at or after index from, if there
// are two, and reports whether it did.
func swapUsable(out []Ranked, from int) bool {
	first := -1
	for i := from; i < len(out); i++ {
		if !out[i].Usable {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		out[first], out[i] = out[i], out[first]
		return true
	}
	return false
}

func chooseLeastLoaded(p Policy, ranked []Ranked, c *Choice) {
	radius := p.RadiusKm
	near := -1.0
	for i, r := range ranked {
		if !r.Usable {
			continue
		}
		if near < 0 {
			near = r.DistanceKm
		}
		if r.DistanceKm > near+radius {
			c.Scores[i] = math.Inf(1)
			continue
		}
		c.Scores[i] = r.Utilisation
		if c.Index < 0 || r.Utilisation < ranked[c.Index].Utilisation {
			c.Index = i
		}
	}
	if c.Index >= 0 {
		c.Reason = fmt.Sprintf("least utilised usable PoP within %.0f km of the nearest", radius)
	}
}

func chooseWeighted(ranked []Ranked, h float64, c *Choice) {
	var total float64
	for i, r := range ranked {
		if r.Usable && r.Weight > 0 {
			c.Scores[i] = r.Weight
			total += r.Weight
		}
	}
	if total == 0 {
		chooseNearest(ranked, nil, h, c)
		c.Reason = "no weights; " + c.Reason
		return
	}
	c.PerClient = true
	x := h * total
	for i, r := range ranked {
		if !r.Usable || r.Weight <= 0 {
			continue
		}
		c.Index = i
		if x < r.Weight {
			break
		}
		x -= r.Weight
	}
	c.Reason = "weighted choice by client hash"
}

// DefaultHysteresis is the dead band Shedder uses when its Hysteresis is zero.
const DefaultHysteresis = 0.1

// Shedder turns each PoP's utilisation into the fraction of its clients it hands to the next
// nearest PoP. The zero value is ready.
//
// The loop it closes runs through resolvers' caches: a new fraction shapes the load only as
// the answers given under the old one expire (Lag), and which clients move is decided per
// network, so the share of the load a fraction moves is only roughly the fraction (a city of
// a few /24s moves in lumps). So a rise must be enough without being measured, and a fall is
// made only once the last change has been measured in full:
//
//   - Onset: between the low and high watermarks the fraction rises linearly from 0 to 1
//     with the utilisation, at once.
//   - Overload: at or over the high watermark it rises to MaxShed at once, whatever came
//     before: a smaller rise that proves too small is seen to be so only a Lag later.
//   - Falls: at most one per Lag (plus a settling time for the reports that measure it,
//     Lag/10 up to a second), judged on the highest utilisation within the last Lag, and only
//     by at least the hysteresis band. The demand behind the PoP is estimated as that peak
//     over 1 - fraction, and the fraction falls to what makes that demand load the PoP to the
//     rest point, low - band × (high - low), not to the watermarks: what a fall brings back is
//     not known until it lands, and the rest point leaves the gap up to high for that and for
//     noise. Shedding stops once the demand is under the rest point.
//   - Once the fraction has fallen, it rises again only on overload: a utilisation between
//     the watermarks is where a fall is meant to land, not a reason to shed more. Rising
//     there is what made the share swing back and forth.
type Shedder struct {
	// Hysteresis is the dead band, as a fraction of clients, for falls; it also sets the rest
	// point (default DefaultHysteresis).
	Hysteresis float64
	// Lag is how long a fraction takes to shape the load after it changed: the TTL of the
	// answers that carried the old one (resolvers keep them that long). Default 0: at once.
	Lag time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu  sync.Mutex // guards pop
	pop map[string]*shedState
}

// shedState is one shedding PoP's state; a PoP that sheds nothing has none.
type shedState struct {
	frac    float64
	changed time.Time // when frac last changed
	fell    bool      // frac has fallen since shedding began
	// peaks is the running maximum of the utilisation over the last Lag: samples in time
	// order with falling values, each the highest since the one before it.
	peaks []utilSample
}

type utilSample struct {
	at   time.Time // the last sample it stands for: it expires a lag after
	from time.Time // the first: samples join it only within lag/32 of this
	util float64
}

// MaxShed is the largest fraction a PoP sheds: the clients it keeps (at least 5 %) are how
// the shedder sees the demand behind it, which a PoP with no clients left could not measure.
const MaxShed = 0.95

// Update records a PoP's utilisation under watermarks low and high and returns its new shed
// fraction (see Shedder for the rules).
func (s *Shedder) Update(id string, util, low, high float64) float64 {
	band := s.Hysteresis
	if band <= 0 {
		band = DefaultHysteresis
	}
	gap := max(high-low, 0)
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pop == nil {
		s.pop = map[string]*shedState{}
	}
	st := s.pop[id]
	if st == nil {
		if util <= low && util < high {
			return 0 // the common case: nothing to shed, nothing to remember
		}
		st = &shedState{}
	}
	st.observe(t, util, s.Lag)
	next := st.frac
	switch {
	case util >= high:
		next = MaxShed
	case !st.fell && util > low && gap > 0:
		next = max(next, min(MaxShed, (util-low)/gap))
	}
	// Reports trail the load they measure by about a heartbeat (1 s by default).
	settle := min(s.Lag/10, time.Second)
	if next == st.frac && st.frac > 0 && !t.Before(st.changed.Add(s.Lag+settle)) {
		demand := st.peak() / (1 - st.frac) // frac <= MaxShed < 1
		rest := low - band*gap
		switch target := 1 - rest/demand; {
		case demand <= rest:
			next = 0
		case st.frac-target >= band:
			next = target
			st.fell = true
		}
	}
	if next != st.frac {
		st.frac, st.changed = next, t
	}
	if next == 0 {
		delete(s.pop, id)
	} else {
		s.pop[id] = st
	}
	return next
}

// observe adds a utilisation sample at t and forgets what is older than lag.
func (st *shedState) observe(t time.Time, util float64, lag time.Duration) {
	from := t.Add(-lag)
	i := 0
	for i < len(st.peaks) && st.peaks[i].at.Before(from) {
		i++
	}
	p := st.peaks[i:]
	// A sample hides every earlier one it is not lower than: they expire before it does.
	for len(p) > 0 && p[len(p)-1].util <= util {
		p = p[:len(p)-1]
	}
	// Samples within lag/32 of an entry's first share it, at the later time, so that a falling
	// series keeps at most about 32 entries. Measured from its first sample, not its last:
	// reports more often than lag/32 (every heartbeat of any node rebuilds the state) would
	// otherwise move a peak's time on for ever, and it would never expire.
	if n := len(p); n > 0 && t.Sub(p[n-1].from) < lag/32 {
		p[n-1].at = t
		st.peaks = p
		return
	}
	st.peaks = append(p, utilSample{at: t, from: t, util: util})
}

// peak is the highest utilisation within the last Lag.
func (st *shedState) peak() float64 { return st.peaks[0].util }

// Fraction returns the PoP's current shed fraction.
func (s *Shedder) Fraction(id string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.pop[id]; st != nil {
		return st.frac
	}
	return 0
}
