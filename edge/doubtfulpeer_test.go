package edge

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/purge"
)

// TestStaleIfErrorNotStoredByPeer: the key's owner holds a copy fresh by its age but stale by
// a purge (Doubtful after a stream gap: it may have been hard-purged; or soft-purged). When
// the origin fails, a fleet node filling from the owner must not get that copy as the fill's
// answer: it would store it fresh by its headers and serve it as a hit for max-age. It gets
// the copy as fleet-stale-if-error instead, served and not stored.
func TestStaleIfErrorNotStoredByPeer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stale func(n *Node, path string)
	}{
		{"doubtful", func(n *Node, _ string) { n.MarkAllStale() }},
		{"soft-purged", func(n *Node, path string) {
			if _, err := n.ApplyPurge(context.Background(), purge.Message{ID: "p", Host: testHost, Kind: purge.KindURL, Values: []string{path}, Soft: true}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, []int{2}, noShield, func(c *Config) { c.FleetStaleTimeout = 5 * time.Second })
			owner, other := f.nodes[0], f.nodes[1]
			p := ""
			for i := 0; p == ""; i++ {
				c := obj(fmt.Sprintf("/doubt%d", i), "cc", "max-age=600, stale-if-error=3600")
				if rendezvous(owner.tiers.Load().peers, owner.key(c))[0].ID == owner.cfg.Node {
					p = c
				}
			}
			if r := do(t, f.client, http.MethodGet, owner.Addr(), testHost, p); r.status != http.StatusOK {
				t.Fatalf("warming the owner = %d", r.status)
			}
			tc.stale(owner, p)
			f.clock.Advance(time.Second)
			f.origin.SetFault("", origin.Fault{Drop: true})
			if r := do(t, f.client, http.MethodGet, other.Addr(), testHost, p); r.status != http.StatusOK {
				t.Fatalf("during the outage = %d (Cache-Status %q), want the owner's copy", r.status, r.header.Get("Cache-Status"))
			}
			f.origin.ClearFaults()
			r := do(t, f.client, http.MethodGet, other.Addr(), testHost, p)
			if cs := r.header.Get("Cache-Status"); strings.HasPrefix(cs, other.name+"; hit") {
				t.Errorf("after the outage the other node serves the owner's stale copy as a hit: Cache-Status %q", cs)
			}
		})
	}
}
