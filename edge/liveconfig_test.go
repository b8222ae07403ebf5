package edge

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestKeyRulesChangeNoOtherURLFromPeer: a host's keep_params is dropped through the config
// bucket while the key's owner, cut off from NATS, still keys by the old rule. The asker, on
// the new rule, asks the owner for /kp?cc=...&size=77; the owner's key drops size, so its answer
// is /kp?cc=...'s. The asker must not store (and serve) that under its own key for the URL
// with size=77, then or after the owner catches up.
func TestKeyRulesChangeNoOtherURLFromPeer(t *testing.T) {
	url, js, _ := startNATS(t)
	cut := natsCutter(t, "127.0.0.52", url)
	// A long TTL keeps the cut-off owner in the asker's peer set for the whole test.
	s, nodes := fleetEdgesTTL(t, []string{url, cut.URL()}, false, time.Minute)
	asker, owner := nodes[0], nodes[1]
	old := wire.HostConfig{Host: testHost, Origin: "http://" + s.originAddr, Cache: wire.CacheOptions{KeepParams: []string{"cc"}}}
	if err := fleet.PutHost(t.Context(), js, "", old); err != nil {
		t.Fatal(err)
	}
	keepsCC := func(n *Node) bool {
		hs := (*n.hosts.Load())[testHost]
		return hs != nil && slices.Equal(hs.keyOpts.KeepParams, []string{"cc"})
	}
	wait.For(t, 10*time.Second, "both nodes on the old key rule", func() bool { return keepsCC(asker) && keepsCC(owner) })
	wait.For(t, 10*time.Second, "peer sets", func() bool {
		return len(asker.tiers.Load().peers) == 2 && len(owner.tiers.Load().peers) == 2
	})

	cut.Cut()
	if err := fleet.PutHost(t.Context(), js, "", wire.HostConfig{Host: testHost, Origin: old.Origin}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the asker on the new key rule", func() bool {
		hs := (*asker.hosts.Load())[testHost]
		return hs != nil && len(hs.keyOpts.KeepParams) == 0
	})
	if !keepsCC(owner) {
		t.Fatal("the cut-off owner applied the new rule: nothing to test")
	}
	var path string
	for k := 0; path == ""; k++ {
		p := fmt.Sprintf("/kp%d?cc=max-age%%3D600&size=77", k)
		if rendezvous(asker.tiers.Load().peers, asker.key(p))[0].ID == owner.cfg.Node {
			path = p
		}
	}
	check := func(when string) {
		t.Helper()
		r := do(t, s.client, http.MethodGet, asker.Addr(), testHost, path)
		if r.status != http.StatusOK || len(r.body) != 77 {
			t.Errorf("%s: %s answered %d with %d bytes (Cache-Status %q), want the 77 bytes size=77 asks for",
				when, path, r.status, len(r.body), r.header.Get("Cache-Status"))
		}
	}
	check("while the owner keys by the old rule")
	cut.Restore()
	wait.For(t, 20*time.Second, "the owner on the new key rule", func() bool { return !keepsCC(owner) })
	check("once both nodes key by the new rule")
}

// TestSameKeyRulesFillThroughOwner: nodes that agree on a host's key rules fill through the
// key's owner, however the client spelt and ordered the query (the owner's check that its key
// is the asker's must not refuse it).
func TestSameKeyRulesFillThroughOwner(t *testing.T) {
	url, _, _ := startNATS(t)
	s, nodes := fleetEdgesWith(t, []string{url, url}, true, time.Minute, func(c *Config) {
		c.Hosts[0].Cache = wire.CacheOptions{KeepParams: []string{"cc", "size", "v"}}
	})
	wait.For(t, 10*time.Second, "peer sets", func() bool {
		return len(nodes[0].tiers.Load().peers) == 2 && len(nodes[1].tiers.Load().peers) == 2
	})
	asker := nodes[0]
	asked := 0
	for k := 0; asked < 3; k++ {
		p := fmt.Sprintf("/same%d/%%7Ex?v=%%7E1&drop=1&size=77&cc=max-age%%3D600&v=a%%2fb", k)
		if rendezvous(asker.tiers.Load().peers, asker.key(p))[0].ID != nodes[1].cfg.Node {
			continue
		}
		asked++
		r := do(t, s.client, http.MethodGet, asker.Addr(), testHost, p)
		wantCacheStatus(t, r, "detail=peer")
		if len(r.body) != 77 {
			t.Errorf("%s: %d bytes, want 77", p, len(r.body))
		}
	}
}

// TestOriginChangeKeepsMetrics: a host's origin moves to another address through the config
// bucket. The node then has a client (breaker, bulkhead) for each address; /metrics must
// still answer, with a series for each, not fail on two series of one upstream label.
func TestOriginChangeKeepsMetrics(t *testing.T) {
	url, js, _ := startNATS(t)
	s, nodes := fleetEdges(t, []string{url}, false)
	n := nodes[0]
	_, addr2 := startOrigin(t, "127.0.0.12", nil)
	admin := httptest.NewServer(n.AdminHandler())
	t.Cleanup(admin.Close)
	for i, origin := range []string{s.originAddr, addr2} {
		h := wire.HostConfig{Host: testHost, Origin: "http://" + origin}
		if err := fleet.PutHost(t.Context(), js, "", h); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 10*time.Second, "origin "+origin+" applied", func() bool {
			hs := (*n.hosts.Load())[testHost]
			return hs != nil && hs.origin.Host == origin
		})
		// A shared fill and a direct one (Authorization): the origin's two clients.
		p := fmt.Sprintf("/moved%d", i)
		for _, hdr := range [][]string{nil, {"Authorization", "Bearer x"}} {
			if r := do(t, s.client, http.MethodGet, n.Addr(), testHost, p, hdr...); r.status != http.StatusOK {
				t.Fatalf("GET %s through origin %s = %d", p, origin, r.status)
			}
		}
	}
	r := do(t, s.client, http.MethodGet, strings.TrimPrefix(admin.URL, "http://"), "", "/metrics")
	if r.status != http.StatusOK {
		t.Fatalf("/metrics after the origin moved = %d: %.300s", r.status, r.body)
	}
	for _, origin := range []string{s.originAddr, addr2} {
		if !strings.Contains(r.body, origin) {
			t.Errorf("/metrics has no upstream series naming %s", origin)
		}
	}
}
