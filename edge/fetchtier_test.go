package edge

import (
	"fmt"
	"net/http"
	"testing"
)

// TestFetchDurationByTier: meridian_edge_fetch_duration_seconds{tier} times every fetch from
// an upstream, as its HELP says, peers and shield PoPs included: it had only tier="origin",
// and fills from peers and shields, most of a shielded PoP's, went unmeasured. PoP p1's two
// nodes fill from each other (the key's owner) and from the shield PoP p0, whose node alone
// asks the origin; each node's count per tier equals its fills from that tier.
func TestFetchDurationByTier(t *testing.T) {
	f := newFleet(t, []int{1, 2}, func(string) string { return "p0" }, nil)
	shield, edge := f.nodes[0], f.nodes[1]
	const keys = 20
	for k := range keys {
		r := do(t, f.client, http.MethodGet, edge.Addr(), testHost, obj(fmt.Sprintf("/t%d", k), "cc", "max-age=60"))
		if r.status != http.StatusOK {
			t.Fatalf("GET /t%d = %d", k, r.status)
		}
	}
	fills := func(n *Node, tier string) float64 {
		return counterValue(t, n, fmt.Sprintf(`meridian_edge_fills_total{tier=%q}`, tier))
	}
	timed := func(n *Node, tier string) float64 {
		return counterValue(t, n, fmt.Sprintf(`meridian_edge_fetch_duration_seconds_count{tier=%q}`, tier))
	}
	if p, s := fills(edge, "peer"), fills(edge, "shield"); p == 0 || s == 0 || p+s != keys || fills(edge, "origin") != 0 {
		t.Fatalf("%s's fills: peer %v, shield %v, origin %v; want peer and shield > 0 summing to %d, origin 0",
			edge.Name(), p, s, fills(edge, "origin"), keys)
	}
	for _, n := range []*Node{shield, edge, f.nodes[2]} {
		for _, tier := range fillTiers {
			if got, want := timed(n, tier), fills(n, tier); got != want {
				t.Errorf("%s: meridian_edge_fetch_duration_seconds_count{tier=%q} = %v, want %v (its fills from that tier)",
					n.Name(), tier, got, want)
			}
		}
	}
	if got := timed(shield, "origin"); got != keys {
		t.Errorf("the shield's origin fetches timed: %v, want %d", got, keys)
	}
}
