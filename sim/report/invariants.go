package report

import (
	"fmt"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

// Invariant is one --check result.
type Invariant struct {
	Pass  bool    `json:"pass"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	// Detail says in words what was measured, for the summary.
	Detail string `json:"detail,omitempty"`
	// NotJudged marks an invariant the run was too short to judge (Pass is false, and
	// Detail says how long a run it needs): neither a pass nor a failure, which Passed
	// leaves out.
	NotJudged bool `json:"not_judged,omitempty"`
}

// Invariant names, the keys of Report.Invariants.
const (
	InvStaleAfterPurge = "stale_after_purge"
	InvRoutedToDown    = "no_routing_to_down_pop"
	InvOriginPerObject = "origin_per_object_per_ttl"
	InvOutageErrors    = "no_errors_for_cached_during_outage"
	InvPurgeAcked      = "purge_acked_by_every_live_pop"
)

// CheckInvariants evaluates the --check invariants of scenario s against what was observed:
//
//   - stale_after_purge: responses with purged content after the purge was acknowledged by
//     the answering PoP (and the shield), or, acknowledged or not (a PoP cut off from NATS),
//     sent later than PurgeMaxLag plus a one-second margin after the purge and not marked
//     stale-if-error (purge rule 5), at most check.max_stale_after_purge (0);
//   - no_routing_to_down_pop: requests answered by a PoP in whole seconds from DNS TTL +
//     check.grace after it was drained or killed until it was undrained or restarted (0);
//   - origin_per_object_per_ttl (only with a shield PoP): origin fetches per distinct object per
//     freshness lifetime, at most check.max_origin_per_object (1.05);
//   - no_errors_for_cached_during_outage: failed requests during origin-fail for objects that
//     had been served successfully before the outage began, at most check.max_outage_errors (0);
//   - purge_acked_by_every_live_pop: purges not acknowledged by every PoP that was not killed
//     when the purge was issued, plus purges the storms should have issued but did not (0);
//   - overload_shed and latency_routing: see checkMeasured (measured.go).
func CheckInvariants(s *scenario.Scenario, o *Observations) map[string]Invariant {
	inv := map[string]Invariant{}
	limit := func(name string, value, lim float64, detail string) {
		inv[name] = Invariant{Pass: value <= lim, Value: value, Limit: lim, Detail: detail}
	}
	limit(InvStaleAfterPurge, float64(o.StaleAfterPurge), float64(s.Check.MaxStaleAfterPurge),
		"responses with purged content after the purge was acknowledged, or past max_lag from a PoP that had not acknowledged it")
	checkMeasured(s, o.Measured, inv) // overload_shed and latency_routing (measured.go)

	var routed int64
	for _, d := range downWindows(s) {
		from := d.from + s.Clients.DNSTTL + s.Check.Grace
		secs := o.PoPSeconds[d.pop]
		first := int((from + time.Second - 1) / time.Second) // first whole second inside
		for i := first; i < len(secs) && time.Duration(i+1)*time.Second <= d.to; i++ {
			routed += secs[i]
		}
	}
	limit(InvRoutedToDown, float64(routed), 0, "requests answered by a drained or killed PoP after DNS TTL + grace")

	if s.Shield() != "" {
		ratio := 0.0
		if o.OriginDistinct > 0 {
			ratio = float64(o.OriginFetches) / float64(o.OriginDistinct)
		}
		limit(InvOriginPerObject, ratio, s.Check.MaxOriginPerObject,
			fmt.Sprintf("%d origin fetches for %d distinct objects per freshness lifetime", o.OriginFetches, o.OriginDistinct))
	}

	var outage int64
	for _, e := range s.SortedEvents() {
		if e.Kind != scenario.EventOriginFail {
			continue
		}
		for _, er := range o.Errors {
			if er.At < e.At || er.At >= e.End() || er.Object < 0 || er.Object >= len(o.FirstOK) {
				continue
			}
			if ok := o.FirstOK[er.Object]; ok >= 0 && ok < e.At {
				outage++
			}
		}
	}
	limit(InvOutageErrors, float64(outage), float64(s.Check.MaxOutageErrors), "client errors for already-served objects during origin outages")

	var unacked, expected int
	for _, e := range s.Events {
		if e.Kind == scenario.EventPurgeStorm {
			expected += e.Count
		}
	}
	for _, p := range o.Purges {
		missing := !p.Complete
		for _, pop := range s.PoPs {
			if _, ok := p.AckMs[pop.ID]; !ok && !killedAt(s, pop.ID, p.IssuedAt) {
				missing = true
			}
		}
		if missing {
			unacked++
		}
	}
	unacked += max(expected-len(o.Purges), 0)
	limit(InvPurgeAcked, float64(unacked), 0,
		fmt.Sprintf("purges of %d (%d recorded) not acknowledged by every live PoP", max(expected, len(o.Purges)), len(o.Purges)))
	return inv
}

// downWindow is a time a PoP should get no clients: drained or killed.
type downWindow struct {
	pop      string
	from, to time.Duration
}

// downWindows derives from the timeline when each PoP was drained (until undrained) or killed
// (until restarted); windows that never end run to the end of the run.
func downWindows(s *scenario.Scenario) []downWindow {
	var out []downWindow
	drainedAt := map[string]time.Duration{}
	for _, e := range s.SortedEvents() {
		switch e.Kind {
		case scenario.EventDrain:
			if _, ok := drainedAt[e.PoP]; !ok {
				drainedAt[e.PoP] = e.At
			}
		case scenario.EventUndrain:
			if from, ok := drainedAt[e.PoP]; ok {
				out = append(out, downWindow{pop: e.PoP, from: from, to: e.At})
				delete(drainedAt, e.PoP)
			}
		case scenario.EventKill:
			to := s.Duration
			if e.Duration > 0 {
				to = min(e.End(), s.Duration)
			}
			out = append(out, downWindow{pop: e.PoP, from: e.At, to: to})
		}
	}
	for pop, from := range drainedAt {
		out = append(out, downWindow{pop: pop, from: from, to: s.Duration})
	}
	return out
}

// killedAt reports whether pop is down from a kill event at time at.
func killedAt(s *scenario.Scenario, pop string, at time.Duration) bool {
	for _, e := range s.Events {
		if e.Kind == scenario.EventKill && e.PoP == pop && at >= e.At && (e.Duration == 0 || at < e.End()) {
			return true
		}
	}
	return false
}

// Passed reports whether every invariant passed, leaving out those not judged.
func Passed(inv map[string]Invariant) bool {
	for _, i := range inv {
		if !i.Pass && !i.NotJudged {
			return false
		}
	}
	return true
}
