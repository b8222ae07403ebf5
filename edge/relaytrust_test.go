package edge

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// relayFleet starts PoP p0 of two nodes, an asker (n0) and the owner of the test's keys (n1),
// whose hosts have p1, one node, for their shield, in front of the reference origin. The
// shield signs and verifies fills with shieldKey; the owner keeps nothing over ownerMax
// bytes (0: the default).
func relayFleet(t *testing.T, shieldKey []byte, ownerMax int64) (f *testFleet, asker, owner, shield *Node) {
	t.Helper()
	f = newFleet(t, []int{2, 1}, func(string) string { return "p1" }, func(c *Config) {
		switch {
		case c.PoP == "p1":
			c.PeerKey = shieldKey
		case c.Node == "n1":
			c.Cache.MaxObjectBytes = ownerMax
		}
	})
	return f, f.nodes[0], f.nodes[1], f.nodes[2]
}

// TestRelayedAnswerTrust: a node that relays an answer it does not store itself (not storable
// here, or over its max_object_bytes) marks it trusted to the fleet node that asked only when a
// verified chain gave it: when its own upstream, the shield, did not verify its request (a
// keyring the shield does not hold yet), that answer lacks the object's surrogate keys and
// Surrogate-Control, and the asker must not store it; stored, the copy escaped every purge
// by key, and one the origin told the CDN not to store was kept. Through a verified chain
// the asker stores the relayed answer with its keys, and a purge by key reaches it.
func TestRelayedAnswerTrust(t *testing.T) {
	otherKey := []byte("another-fleet-key-0123456789abcdefgh")
	cases := []struct {
		name      string
		shieldKey []byte
		ownerMax  int64
		params    []string
		wantStore bool
	}{
		{"shield unverified", otherKey, 0, nil, false},
		{"shield unverified, too large for the owner", otherKey, 512, []string{"size", "4096"}, false},
		{"shield unverified, Surrogate-Control no-store", otherKey, 0, []string{"sc", "no-store"}, false},
		{"verified, too large for the owner", testPeerKey, 512, []string{"size", "4096"}, true},
		// The shield keeps the keys though not the field (no-cache="Surrogate-Key"), and its
		// hit tells them in Meridian-Surrogate-Keys, which the owner must pass on as it relays.
		{"verified, too large for the owner, keys field not stored", testPeerKey, 512,
			[]string{"size", "4096", "cc", `max-age=600, no-cache="Surrogate-Key"`, "warm", "shield"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, asker, owner, shield := relayFleet(t, tc.shieldKey, tc.ownerMax)
			params := append([]string{"sk", "red blue"}, tc.params...)
			if !slices.Contains(params, "cc") {
				params = append(params, "cc", "max-age=600")
			}
			p := ownedBy(asker, owner.cfg.Node, "/relay/", params...)
			path, _, _ := strings.Cut(p, "?")
			if slices.Contains(params, "warm") {
				// The shield answers from its copy, not from the fill of this very request.
				wantCacheStatus(t, do(t, f.client, http.MethodGet, shield.Addr(), testHost, p), "p1-n0; fwd=miss", "stored")
			}
			r := do(t, f.client, http.MethodGet, asker.Addr(), testHost, p)
			if r.status != http.StatusOK || !strings.HasPrefix(r.body, path+"@v1:") {
				t.Fatalf("GET = %d %.40q", r.status, r.body)
			}
			// The owner did not store it: it relayed the shield's answer.
			shieldCS := "p1-n0; fwd=miss"
			if slices.Contains(params, "warm") {
				shieldCS = "p1-n0; hit"
			}
			wantCacheStatus(t, r, shieldCS, "p0-n1; fwd=miss", "p0-n0; fwd=miss", "detail=peer")
			if cs := r.header.Get("Cache-Status"); strings.Contains(cs[strings.Index(cs, "p0-n1;"):strings.Index(cs, "p0-n0;")], "stored") {
				t.Fatalf("the owner stored the answer (Cache-Status %q): nothing relayed to test", cs)
			}
			if v := r.header.Get(fleetKeysHeader); v != "" {
				t.Errorf("a client got the fleet-only field %s: %q", fleetKeysHeader, v)
			}
			cs := r.header.Get("Cache-Status")
			if stored := strings.Contains(cs[strings.Index(cs, "p0-n0;"):], "stored"); stored != tc.wantStore {
				t.Errorf("the asker stored the relayed answer: %v, want %v (Cache-Status %q)", stored, tc.wantStore, cs)
			}

			// Whatever the asker holds, a purge by one of its keys reaches it.
			f.origin.Bump(path)
			f.clock.Advance(time.Second)
			m := purge.Message{ID: "relay", Kind: purge.KindKey, Host: testHost, Values: []string{"blue"}}
			for _, n := range []*Node{shield, owner, asker} {
				if _, err := n.ApplyPurge(context.Background(), m); err != nil {
					t.Fatal(err)
				}
			}
			f.clock.Advance(time.Second)
			got := do(t, f.client, http.MethodGet, asker.Addr(), testHost, p)
			if !strings.HasPrefix(got.body, path+"@v2:") {
				t.Errorf("purge by key applied on every node, but the asker still serves %.20q (Cache-Status %q)",
					got.body, got.header.Get("Cache-Status"))
			}
			if n := counterValue(t, asker, "meridian_edge_fill_untrusted_total"); (n != 0) == tc.wantStore {
				t.Errorf("asker's fill_untrusted_total = %v with wantStore %v", n, tc.wantStore)
			}
		})
	}
}

// TestRelayedStreamEdgeCoded: a node that relays a shield's verified answer too large for it to
// keep (its max_object_bytes under the 64 KiB read whole) passes on that the shield gzipped it
// (Meridian-Edge-Coded), as it does for an object it answers from: the asker, which stores the
// copy, revalidates it with the origin itself, once the owner and the shield are gone, with
// the origin's own tag, not the variant's, which the origin never gave.
func TestRelayedStreamEdgeCoded(t *testing.T) {
	f, asker, owner, _ := relayFleet(t, testPeerKey, 16)
	o := &revalCodingOrigin{inm: map[string]string{}}
	originAddr := startHTTP(t, "127.0.0.11", o)
	for _, n := range f.nodes {
		hosts := n.Hosts()
		hosts[0].Origin = "http://" + originAddr
		if err := n.SetHosts(hosts); err != nil {
			t.Fatal(err)
		}
	}
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	p := ownedBy(asker, owner.cfg.Node, "/relaycoded/", "etag", `"v1"`)
	r := do(t, c, http.MethodGet, asker.Addr(), testHost, p, "Accept-Encoding", "gzip")
	wantCacheStatus(t, r, "p1-n0; fwd=miss", "p0-n1; fwd=miss", "detail=too-large", "p0-n0; fwd=miss", "stored", "detail=peer")
	if r.header.Get("Content-Encoding") != "gzip" || r.header.Get("ETag") != edgeTag(`"v1"`, "gzip") {
		t.Fatalf("Content-Encoding %q, ETag %s; want the shield's gzip variant of \"v1\"",
			r.header.Get("Content-Encoding"), r.header.Get("ETag"))
	}
	if v := r.header.Get(edgeCodedHeader); v != "" {
		t.Errorf("a client got the fleet-only field %s: %q", edgeCodedHeader, v)
	}
	for _, stop := range f.stops[1:] {
		stop() // the asker revalidates with the origin itself from now on
	}
	r = do(t, c, http.MethodGet, asker.Addr(), testHost, p, "Accept-Encoding", "gzip")
	path, _, _ := strings.Cut(p, "?")
	if got := o.lastINM(path); got != `"v1"` {
		t.Errorf("the origin got If-None-Match %s, want its own tag \"v1\"", got)
	}
	wantCacheStatus(t, r, "p0-n0; fwd=stale; fwd-status=304", "detail=origin")
	if got := decodeBody(t, "gzip", []byte(r.body)); string(got) != codingBody("") {
		t.Errorf("decoded body differs from the origin's: %s", fmt.Sprintf("%.40q", got))
	}
}

// TestRelayedRevalidationTrust: an owner whose stale copy an unverified shield refreshes with a
// 304 does not store the refreshed copy (the 304's surrogate fields were withheld from it), and
// does not mark it trusted to the asker it answers, which does not store it either. The owner
// filled its copy while the shield still held the fleet's key; the shield then lost it.
func TestRelayedRevalidationTrust(t *testing.T) {
	f, asker, owner, shield := relayFleet(t, testPeerKey, 0)
	p := ownedBy(asker, owner.cfg.Node, "/relay304/", "cc", "max-age=60", "sk", "red")
	wantCacheStatus(t, do(t, f.client, http.MethodGet, owner.Addr(), testHost, p), "p0-n1; fwd=miss", "stored", "detail=shield")
	shield.SetPeerKeyring(wire.PeerKeyring{Keys: []wire.PeerKey{{ID: "other", Secret: []byte("another-fleet-key-0123456789abcdefgh")}}})
	f.clock.Advance(2 * time.Minute)
	for i := range 2 {
		r := do(t, f.client, http.MethodGet, asker.Addr(), testHost, p)
		if r.status != http.StatusOK {
			t.Fatalf("GET %d = %d", i, r.status)
		}
		wantCacheStatus(t, r, "p0-n1; fwd=stale; fwd-status=304", "p0-n0; fwd=miss")
		if cs := r.header.Get("Cache-Status"); strings.Contains(cs[strings.Index(cs, "p0-n0;"):], "stored") {
			t.Errorf("GET %d: the asker stored a copy no verified chain gave (Cache-Status %q)", i, cs)
		}
	}
}
