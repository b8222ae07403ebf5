package dnsroute

import (
	"fmt"
	"io"
	"math"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/wire"
)

// Explanation says where a client was located, how every PoP scored and what the answer is.
type Explanation struct {
	Name       string
	Type       string
	Client     netip.Prefix
	Located    bool
	City       string
	Country    string
	Lat, Lon   float64
	Network    netip.Prefix
	Policy     string
	Candidates []CandidateExplanation
	PoP        string   // chosen PoP ("" when none)
	Answer     []string // the addresses the answer would hold (first rotation)
	Reason     string
	FailOpen   bool
	Scope      int
	// MeasuredNetwork and Samples say which client network's real-user measurements the
	// ranking used and how many reports they come from (0: none, geography only);
	// EdgeSamples of them are the edges' own RTT measurements, the rest clients' beacons.
	MeasuredNetwork netip.Prefix
	Samples         int
	EdgeSamples     int
	// Explored is true when the client is one of the share sent to the second-best PoP.
	Explored bool
	// History states what the explanation assumes of a running server's history that it
	// cannot know ("": nothing; see ExplainLive).
	History string
}

// CandidateExplanation is one PoP as the ranking saw it.
type CandidateExplanation struct {
	PoP         string
	DistanceKm  float64
	Utilisation float64
	Usable      bool
	Draining    bool
	ShedPercent float64
	Score       float64 // the policy's score (see geo.Choice.Scores); NaN when unusable
	Chosen      bool
	RTTMs       float64 // RTT measured by the client's network; 0 when none
}

// Explain routes a client at addr asking for name (relative or absolute, "@" for the apex;
// "" means the first routed hostname) with qtype A or AAAA, without sending anything.
func (s *Server) Explain(addr netip.Addr, name string, qtype uint16) (Explanation, error) {
	if qtype != dns.TypeA && qtype != dns.TypeAAAA {
		return Explanation{}, fmt.Errorf("explain: type %s is not A or AAAA", dns.TypeToString[qtype])
	}
	if name == "" {
		name = "www." + s.cfg.Zone
		for _, h := range s.cfg.Hostnames {
			if h != "*" {
				name = h
				break
			}
		}
	}
	// The name as the zone holds it: Unicode labels as their A-labels, as the config's are.
	name, err := toASCII(name)
	if err != nil {
		return Explanation{}, fmt.Errorf("explain: %w", err)
	}
	if name == "@" { // the apex, as hostnames and cnames spell it
		name = s.cfg.Zone
	}
	if !dns.IsFqdn(name) {
		name = dns.Fqdn(name)
		if !dns.IsSubDomain(s.cfg.Zone, name) {
			name = strings.TrimSuffix(name, ".") + "." + s.cfg.Zone
		}
	}
	// As a resolver does: an answer's chain cut at maxCNAMEChain is asked for again from where
	// it was cut. Loops are refused at load; the bound keeps this finite whatever the zone holds.
	for range len(s.zone.cnames) + 1 {
		targets, follow := s.zone.chain(name)
		if len(targets) > 0 {
			name = targets[len(targets)-1]
		}
		if follow {
			break
		}
	}
	if !s.zone.routes(name) {
		return Explanation{}, fmt.Errorf("explain: %s is not a routed name of zone %s", name, s.cfg.Zone)
	}
	st := s.current(s.cfg.Clock())
	client := clientPrefix(addr, netip.Prefix{})
	loc, err := s.geo.Lookup(client.Addr())
	if err != nil {
		return Explanation{}, fmt.Errorf("explain: %w", err)
	}
	d := st.route(loc, client, qtype == dns.TypeAAAA)
	ex := Explanation{
		Name: name, Type: dns.TypeToString[qtype], Client: client, Located: loc.Found,
		City: loc.City, Country: loc.Country, Lat: loc.Lat, Lon: loc.Lon, Network: loc.Network,
		Policy: st.policy.Name, Reason: d.choice.Reason, FailOpen: d.failOpen, Scope: d.scope(client),
		Samples: d.samples, EdgeSamples: d.edgeSamples, Explored: d.explored,
	}
	if d.samples > 0 {
		ex.MeasuredNetwork = wire.ClientNetwork(client.Addr())
	}
	for i, r := range d.ranked {
		p := st.pops[st.byID[r.ID]]
		ex.Candidates = append(ex.Candidates, CandidateExplanation{
			PoP: r.ID, DistanceKm: r.DistanceKm, Utilisation: p.util, Usable: r.Usable,
			Draining: p.pop.Draining(), ShedPercent: p.shed * 100, Score: d.choice.Scores[i],
			Chosen: d.pop != nil && d.pop.pop.ID == r.ID, RTTMs: d.rtt[r.ID],
		})
	}
	if d.pop != nil {
		ex.PoP = d.pop.pop.ID
		for _, a := range d.rot.turn(0) {
			ex.Answer = append(ex.Answer, a.String())
		}
		if d.failOpen {
			ex.Reason = "no usable PoP; failing open to the nearest"
			if s.cfg.FailClosed {
				ex.Reason, ex.PoP, ex.Answer = "no usable PoP; failing closed (SERVFAIL)", "", nil
			}
		}
	}
	if !loc.Found {
		ex.Reason = "location unknown, ranked from the default PoP " + st.defaultID + "; " + ex.Reason
	}
	return ex, nil
}

// Write prints the explanation as text.
func (ex Explanation) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "query:    %s %s from %s\n", ex.Name, ex.Type, ex.Client)
	if ex.Located {
		fmt.Fprintf(&b, "located:  %s, %s (%.4f, %.4f) via network %s\n", ex.City, ex.Country, ex.Lat, ex.Lon, ex.Network)
	} else {
		fmt.Fprintf(&b, "located:  unknown (network %s)\n", ex.Network)
	}
	fmt.Fprintf(&b, "policy:   %s\n", ex.Policy)
	if ex.Samples > 0 {
		fmt.Fprintf(&b, "measured: %d beacon reports and %d edge RTT samples from %s (RTT_MS below)", ex.Samples-ex.EdgeSamples, ex.EdgeSamples, ex.MeasuredNetwork)
		if ex.Explored {
			b.WriteString("; this client explores the second best")
		}
		b.WriteString("\n")
	} else {
		b.WriteString("measured: nothing for this network; ranked by distance\n")
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tPOP\tDISTANCE_KM\tRTT_MS\tLOAD\tHEALTHY\tDRAINING\tSHED\tSCORE")
	for _, c := range ex.Candidates {
		mark := ""
		if c.Chosen {
			mark = "*"
		}
		score := "-"
		if !math.IsNaN(c.Score) {
			score = fmt.Sprintf("%.3g", c.Score)
		}
		rtt := "-"
		if c.RTTMs > 0 {
			rtt = fmt.Sprintf("%.1f", c.RTTMs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%.0f%%\t%v\t%v\t%.0f%%\t%s\n", mark, c.PoP, c.DistanceKm, rtt,
			c.Utilisation*100, c.Usable, c.Draining, c.ShedPercent, score)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nanswer:   %s -> %s (ECS scope /%d)\n", ex.PoP, strings.Join(ex.Answer, ", "), ex.Scope)
	fmt.Fprintf(&b, "why:      %s\n", ex.Reason)
	if ex.History != "" {
		fmt.Fprintf(&b, "history:  %s\n", ex.History)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
