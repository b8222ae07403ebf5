package geo

import (
	"fmt"
	"math"
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

// OrderByRTT reorders ranked (as returned by Rank) so that the usable candidates with a
// measured RTT come first, lowest RTT first, followed by the rest in their distance order.
// When hx (a stable hash of the client in [0, 1), independent of the shedding hash) is under
// explore and two usable candidates are measured, the first two swap places: a stable share of
// clients goes to the second best, so that its measurement stays fresh. It reports whether
// any candidate was measured and whether this client explores.
func OrderByRTT(ranked []Ranked, explore, hx float64) (out []Ranked, measured, explored bool) {
	out = make([]Ranked, 0, len(ranked))
	for _, r := range ranked {
		if r.Usable && r.RTTMs > 0 {
			out = append(out, r)
		}
	}
	n := len(out)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].RTTMs != out[j].RTTMs {
			return out[i].RTTMs < out[j].RTTMs
		}
		return out[i].ID < out[j].ID
	})
	for _, r := range ranked {
		if !(r.Usable && r.RTTMs > 0) {
			out = append(out, r)
		}
	}
	if n >= 2 && hx < explore {
		out[0], out[1] = out[1], out[0]
		explored = true
	}
	return out, n > 0, explored
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
// nearest PoP, rising linearly from 0 at the low watermark to 1 at the high one. Rises apply
// at once; falls only once they exceed the hysteresis band, and shedding stops only once the
// utilisation is that band (as a share of the watermark gap) below the low watermark, so that
// the load moved away does not pull the fraction straight back and make it flap. The zero
// value is ready.
type Shedder struct {
	// Hysteresis is the dead band, as a fraction of clients, for falls (default
	// DefaultHysteresis).
	Hysteresis float64
	// Lag is how long a fraction keeps shaping the load after it changed: the TTL of the
	// answers that carried it (resolvers keep them that long). Default 0: at once.
	Lag time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu   sync.Mutex // guards frac, past and peak
	frac map[string]float64
	// past holds, per PoP, earlier fractions and until when they may still shape its load.
	past map[string][]pastFrac
	// peak is, per PoP, the highest utilisation within about Lag: falls are judged on it, so
	// that one low report (a quiet second, a node's late heartbeat) does not end shedding.
	peak map[string]pastFrac
}

type pastFrac struct {
	frac  float64
	until time.Time
}

// MaxShed is the largest fraction a PoP sheds: the clients it keeps (at least 5 %) are how
// the shedder sees the demand behind it, which a PoP with no clients left could not measure.
const MaxShed = 0.95

// Update records a PoP's utilisation under watermarks low and high and returns its new shed
// fraction.
//
// The utilisation a PoP reports is what is left after shedding, so a fall of it alone does not
// mean the demand fell: the shedder estimates the demand the PoP would see without shedding
// (the highest utilisation within Lag over 1 - the highest fraction within Lag) and never
// falls below the fraction that demand needs to settle between the watermarks,
// (d - low) / (d + high - low). Without that floor, shedding
// everything makes the PoP idle, the idle PoP stops shedding, its clients return and overload
// it again: the oscillation a feedback loop through DNS caches invites.
func (s *Shedder) Update(id string, util, low, high float64) float64 {
	band := s.Hysteresis
	if band <= 0 {
		band = DefaultHysteresis
	}
	var target float64
	switch {
	case util >= high:
		target = MaxShed
	case util <= low || high <= low:
		target = 0
	default:
		target = min(MaxShed, (util-low)/(high-low))
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frac == nil {
		s.frac, s.past, s.peak = map[string]float64{}, map[string][]pastFrac{}, map[string]pastFrac{}
	}
	peak := s.peak[id]
	if util >= peak.frac || !peak.until.After(t) {
		peak = pastFrac{util, t.Add(s.Lag)}
	}
	if s.Lag > 0 {
		s.peak[id] = peak
	}
	old := s.frac[id]
	// The demand estimate divides by the largest fraction that may still be in effect: until
	// answers given under a higher one expire, the load is lower than the current one implies.
	eff := old
	past := s.past[id][:0]
	for _, p := range s.past[id] {
		if p.until.After(t) {
			past = append(past, p)
			eff = max(eff, p.frac)
		}
	}
	next := old
	need := 0.0
	d := max(util, peak.frac) / (1 - eff) // eff <= MaxShed < 1
	if d > low && high > low {
		need = min(MaxShed, (d-low)/(d+high-low))
	}
	switch floor := max(target, need); {
	case target >= old:
		next = target
	case floor >= old:
		// The demand behind the PoP still needs what it sheds.
	case floor == 0:
		if d <= low-band*(high-low) {
			next = 0 // demand clearly below the low watermark: stop shedding
		}
	case old-floor >= band:
		next = floor
	}
	if next != old && s.Lag > 0 {
		past = append(past, pastFrac{old, t.Add(s.Lag)})
	}
	if next == 0 && len(past) == 0 {
		delete(s.peak, id)
	}
	if len(past) == 0 {
		delete(s.past, id)
	} else {
		s.past[id] = past
	}
	if next == 0 {
		delete(s.frac, id)
	} else {
		s.frac[id] = next
	}
	return next
}

// Fraction returns the PoP's current shed fraction.
func (s *Shedder) Fraction(id string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frac[id]
}
