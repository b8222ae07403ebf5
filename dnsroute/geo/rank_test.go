package geo_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newFakeClock() *fakeClock {
	return &fakeClock{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
}

// TestShedderSteps walks the shedder through its rules one report at a time, with watermarks
// 0.8 and 1.0, answers living 10 s (so falls wait 11 s: a TTL and the settling second), and
// the default band 0.1 (so the rest point is 0.78).
func TestShedderSteps(t *testing.T) {
	type step struct {
		name  string
		after time.Duration // clock advance before the report
		util  float64
		want  float64
	}
	tests := []struct {
		name  string
		lag   time.Duration
		steps []step
	}{
		{"onset is proportional and rises at once", 10 * time.Second, []step{
			{"below low", 0, 0.5, 0},
			{"halfway", time.Second, 0.9, 0.5},
			{"more load, more shed", time.Second, 0.95, 0.75},
			{"a fall within a TTL of the rise is not judged yet", time.Second, 0.3, 0.75},
			{"overload: all it may", time.Second, 1.2, geo.MaxShed},
		}},
		{"a fall waits for the last change to be measured", 10 * time.Second, []step{
			{"overload", 0, 1.9, geo.MaxShed},
			{"relief while answers expire", 5 * time.Second, 0.5, geo.MaxShed},
			// The peak of the last TTL is 0.5: demand 10 needs more than 0.95 - band.
			{"a TTL later, the peak of the last TTL still counts", 6 * time.Second, 0.1, geo.MaxShed},
			// Only 0.1 is left in the window: demand 0.1/0.05 = 2 rests at 0.78 with
			// 1 - 0.78/2 = 0.61 shed.
			{"a TTL of low reports: fall to the rest point", 5 * time.Second, 0.1, 0.61},
			{"the next fall waits a TTL again", 5 * time.Second, 0.02, 0.61},
		}},
		{"after a fall, the watermark band is where it lands", 10 * time.Second, []step{
			{"overload", 0, 1.9, geo.MaxShed},
			{"kept load", 5 * time.Second, 0.12, geo.MaxShed},
			{"fall: demand 2.4", 11 * time.Second, 0.12, 1 - 0.78/2.4},
			// The returning clients load it more than the estimate said (lumpy networks):
			// proportional shedding would now rise to 0.85 and start a swing.
			{"landed high in the band: hold", 11 * time.Second, 0.97, 1 - 0.78/2.4},
			{"still in the band: hold", time.Second, 0.99, 1 - 0.78/2.4},
			{"over high: rise again", time.Second, 1.05, geo.MaxShed},
		}},
		{"falls smaller than the band are not made", 10 * time.Second, []step{
			{"overload", 0, 1.5, geo.MaxShed},
			// demand 0.3/0.05 = 6 rests at 1 - 0.78/6 = 0.87: 0.08 under 0.95.
			{"demand 6: hold", 11 * time.Second, 0.3, geo.MaxShed},
			{"still 6 after another TTL", 11 * time.Second, 0.3, geo.MaxShed},
			// demand 0.25/0.05 = 5 rests at 0.844: 0.106 under.
			{"demand 5: fall", 11 * time.Second, 0.25, 1 - 0.78/5},
		}},
		{"shedding stops once the demand is under the rest point", 10 * time.Second, []step{
			{"halfway", 0, 0.9, 0.5},
			// demand 0.395/0.5 = 0.79: over the rest point, 1 - 0.78/0.79 = 0.013 shed.
			{"demand 0.79: just over the rest point", 11 * time.Second, 0.395, 1 - 0.78/0.79},
			{"demand 0.7: stop", 11 * time.Second, 0.7 * 0.78 / 0.79, 0},
			{"a new onset is proportional again", time.Second, 0.85, 0.25},
		}},
		{"no lag: every report is judged at once", 0, []step{
			{"overload", time.Second, 1.5, geo.MaxShed},
			{"demand 2", time.Second, 0.1, 0.61},
			{"demand gone", time.Second, 0.02, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			s := geo.Shedder{Lag: tt.lag, Now: clock.Now}
			for _, st := range tt.steps {
				clock.Advance(st.after)
				got := s.Update("bom", st.util, 0.8, 1.0)
				if math.Abs(got-st.want) > 1e-3 {
					t.Fatalf("%s: Update(%.3f) = %.3f, want %.3f", st.name, st.util, got, st.want)
				}
				if f := s.Fraction("bom"); f != got {
					t.Fatalf("%s: Fraction = %.3f, Update returned %.3f", st.name, f, got)
				}
			}
		})
	}
}

// TestShedderFlashCrowd closes the loop the way DNS does: each client caches its answer for
// the TTL (so the share of clients under a fraction ramps in over a TTL), the edge reports its
// load a second late, DNS answers in 5 % steps, and which clients move is decided per /24, so
// the load a fraction moves comes in lumps. Against every client population and demand, once a
// TTL + 10 s has passed since the crowd began, the PoP stays under the high watermark until
// the crowd ends, and the share changes direction at most twice from the crowd's start to 20 s
// after its end: the overload_shed invariant of the simulator. The old shedder (a rise to
// MaxShed, then a fall to the share that put the PoP between the watermarks, and proportional
// rises from there) failed two in five of these.
func TestShedderFlashCrowd(t *testing.T) {
	populations := map[string][]float64{
		// The stable hashes of the 16 client /24s of the simulator's Mumbai: in two runs,
		// with none between 0.19 and 0.68.
		"sixteen lumpy networks": {0.019, 0.053, 0.087, 0.121, 0.154, 0.188, 0.681, 0.715,
			0.748, 0.782, 0.816, 0.850, 0.884, 0.918, 0.951, 0.985},
		"many networks": nil, // the kept share is 1 - fraction
	}
	for name, hashes := range populations {
		for _, demand := range []float64{0.9, 1.2, 1.5, 1.9, 2.5, 5} {
			t.Run(fmt.Sprintf("%s/demand %.1f", name, demand), func(t *testing.T) {
				checkFlashCrowd(t, hashes, demand, 0, 0)
			})
			// Reports are noisy: every one off by up to 20 % either way.
			for seed := range uint64(10) {
				t.Run(fmt.Sprintf("%s/demand %.1f/noise seed %d", name, demand, seed), func(t *testing.T) {
					checkFlashCrowd(t, hashes, demand, 0.2, seed)
				})
			}
		}
	}
}

// checkFlashCrowd runs one crowd of the given demand against a population of client networks
// (nil: many), each utilisation report off by up to noise (a share) either way, drawn from
// seed.
func checkFlashCrowd(t *testing.T, hashes []float64, demand, noise float64, seed uint64) {
	const (
		ttl        = 10 * time.Second
		tick       = 250 * time.Millisecond
		reportLag  = 4 // ticks: one second
		base       = 0.3
		crowdStart = 20 * time.Second
		crowdEnd   = 60 * time.Second
		runEnd     = crowdEnd + 20*time.Second
	)
	kept := func(f float64) float64 {
		f = quantise(f)
		if hashes == nil {
			return 1 - f
		}
		n := 0
		for _, h := range hashes {
			if h >= f {
				n++
			}
		}
		return float64(n) / float64(len(hashes))
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	clock := newFakeClock()
	s := geo.Shedder{Lag: ttl, Now: clock.Now}
	ticksPerTTL := int(ttl / tick)
	var fracs, utils []float64 // per tick
	frac, worst := 0.0, 0.0
	var shares []float64 // the share DNS answers with, per tick, for the direction count
	for i := 0; time.Duration(i)*tick < runEnd; i++ {
		at := time.Duration(i) * tick
		clock.Advance(tick)
		d := base
		if at >= crowdStart && at < crowdEnd {
			d = demand
		}
		// Clients resolved uniformly over the last TTL, each under the fraction of its time.
		var k float64
		for j := range ticksPerTTL {
			f := 0.0
			if i-j >= 0 && i-j < len(fracs) {
				f = fracs[i-j]
			}
			k += kept(f)
		}
		utils = append(utils, d*k/float64(ticksPerTTL))
		util := utils[max(0, i-reportLag)] * (1 + noise*(2*rng.Float64()-1))
		frac = s.Update("bom", util, 0.8, 1.0)
		fracs = append(fracs, frac)
		shares = append(shares, quantise(frac))
		if at >= crowdStart+ttl+10*time.Second && at < crowdEnd {
			worst = max(worst, utils[i])
		}
	}
	if worst >= 1.0 {
		t.Errorf("peak utilisation %.2f from TTL + 10 s after the crowd began until it ended, want under 1.0", worst)
	}
	if turns := directionChanges(shares[int(crowdStart/tick):]); turns > 2 {
		t.Errorf("shed share changed direction %d times, want at most 2; per second: %v", turns, perSecond(shares, int(time.Second/tick)))
	}
}

// quantise is the 5 % step DNS answers with (dnsroute's shedQuantum).
func quantise(f float64) float64 {
	if !(f > 0) {
		return 0
	}
	return max(1, math.Round(f/0.05)) * 0.05
}

// directionChanges counts the turns of a series, ignoring steps under 5 %, as the simulator's
// overload_shed invariant does.
func directionChanges(series []float64) int {
	turns, dir, last := 0, 0, series[0]
	for _, v := range series[1:] {
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

func perSecond(series []float64, every int) []float64 {
	var out []float64
	for i := 0; i < len(series); i += every {
		out = append(out, math.Round(series[i]*100)/100)
	}
	return out
}

func TestOrderByRTT(t *testing.T) {
	// Distance order: a (nearest), b, c, d; rtt 0 means no figure.
	pops := func(rtt map[string]float64, unusable ...string) []geo.Ranked {
		var out []geo.Ranked
		for i, id := range []string{"a", "b", "c", "d"} {
			usable := true
			for _, u := range unusable {
				usable = usable && u != id
			}
			out = append(out, geo.Ranked{Candidate: geo.Candidate{ID: id, Usable: usable, RTTMs: rtt[id]}, DistanceKm: float64(i)})
		}
		return out
	}
	tests := []struct {
		name               string
		in                 []geo.Ranked
		hx                 float64 // under 0.1 explores
		want               string
		measured, explored bool
	}{
		{"two figures rank first, lowest first", pops(map[string]float64{"c": 40, "b": 90}), 0.5, "cbad", true, false},
		{"no figures: distance", pops(nil), 0.05, "abcd", false, false},
		{"one figure (a far PoP) cannot outrank distance", pops(map[string]float64{"d": 20}), 0.5, "abcd", false, false},
		{"one figure: explorers go to the next PoP by distance", pops(map[string]float64{"d": 20}), 0.05, "bacd", false, true},
		{"one figure: the next usable PoP", pops(map[string]float64{"d": 20}, "b"), 0.05, "cbad", false, true},
		{"explorers measure the nearest PoP when it has no figure", pops(map[string]float64{"c": 40, "d": 30}), 0.05, "adcb", true, true},
		{"else the second best measured", pops(map[string]float64{"a": 40, "d": 30}), 0.05, "adbc", true, true},
		{"an unusable figure does not count", pops(map[string]float64{"a": 40, "d": 30}, "a"), 0.5, "abcd", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, measured, explored := geo.OrderByRTT(tt.in, 0.1, tt.hx)
			got := ""
			for _, r := range out {
				got += r.ID
			}
			if got != tt.want || measured != tt.measured || explored != tt.explored {
				t.Errorf("OrderByRTT = %s, measured %v, explored %v; want %s, %v, %v", got, measured, explored, tt.want, tt.measured, tt.explored)
			}
		})
	}
}

// TestShedderFallsWhateverTheReportRate: a PoP whose demand doubled sheds MaxShed, then
// reports only the load it kept. The share must fall (to 1 - rest/demand, about 0.59 here)
// and, once the crowd has left, stop, however often reports come: every heartbeat of any
// fleet node rebuilds DNS's state and calls Update, and reports closer than Lag/32 once merged
// a peak's time forward for ever, so it never expired and the PoP shed 95 % for good.
func TestShedderFallsWhateverTheReportRate(t *testing.T) {
	for _, every := range []time.Duration{5 * time.Second, time.Second, 500 * time.Millisecond, 100 * time.Millisecond} {
		t.Run(every.String(), func(t *testing.T) {
			clock := newFakeClock()
			s := geo.Shedder{Lag: 30 * time.Second, Now: clock.Now}
			demand := 1.9
			f := s.Update("lhr", demand, 0.8, 1.0)
			for el := time.Duration(0); el < 3*time.Minute; el += every {
				clock.Advance(every)
				f = s.Update("lhr", demand*(1-f), 0.8, 1.0)
			}
			if f > 0.7 {
				t.Errorf("after 3 minutes of reports every %v the shed share is %.2f, want about %.2f", every, f, 1-0.78/demand)
			}
			demand = 0.3 // the crowd leaves
			for el := time.Duration(0); el < 3*time.Minute; el += every {
				clock.Advance(every)
				f = s.Update("lhr", demand*(1-f), 0.8, 1.0)
			}
			if f != 0 {
				t.Errorf("3 minutes after the crowd left, with reports every %v, the PoP still sheds %.2f", every, f)
			}
		})
	}
}
