package edge

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// peerPair starts a requester (n0) and an owner (n1) of one PoP in front of one origin. The
// requester lists both nodes as its peers; the owner lists only itself, as when the owner's
// registry view does not contain the requester yet (a node joining, a NATS hiccup). ownerKey
// is the owner's peer key (nil: none).
func peerPair(t *testing.T, ownerKey []byte) (s *single, requester, owner *Node) {
	t.Helper()
	s = &single{clock: newFakeClock()}
	s.origin, s.originAddr = startOrigin(t, "127.0.0.10", s.clock.Now)
	lnR, lnO := listen(t, "127.0.5.10"), listen(t, "127.0.5.11")
	hosts := []wire.HostConfig{{Host: testHost, Origin: "http://" + s.originAddr}}
	owner, _ = startEdge(t, lnO, Config{PoP: "p", Node: "n1", Clock: s.clock.Now, Hosts: hosts,
		Peers: []Peer{{ID: "n1", Addr: lnO.Addr().String()}}, PeerKey: ownerKey})
	requester, _ = startEdge(t, lnR, Config{PoP: "p", Node: "n0", Clock: s.clock.Now, Hosts: hosts,
		Peers: []Peer{{ID: "n0", Addr: lnR.Addr().String()}, {ID: "n1", Addr: lnO.Addr().String()}}, PeerKey: testPeerKey})
	s.edge = requester
	s.client = &http.Client{}
	t.Cleanup(s.client.CloseIdleConnections)
	return s, requester, owner
}

// ownedBy returns a path under base, with params, whose owner in n's peer set is id.
func ownedBy(n *Node, id, base string, params ...string) string {
	for i := 0; ; i++ {
		p := obj(fmt.Sprintf("%s%d", base, i), params...)
		if rendezvous(n.tiers.Load().peers, n.key(p))[0].ID == id {
			return p
		}
	}
}

// TestPurgeByKeyReachesCopyFilledThroughPeer is the race of the key-purge issue made
// deterministic: the owner does not know the requester yet, the requester fills through it,
// and purges by surrogate key, Cache-Tag and RFC 9875 group must still remove the
// requester's copy. With trust by source address, the owner stripped the keys from its answer
// and the copy escaped every purge by key.
func TestPurgeByKeyReachesCopyFilledThroughPeer(t *testing.T) {
	s, requester, owner := peerPair(t, testPeerKey)
	cases := []struct {
		name, param, value, purgeValue string
	}{
		{"surrogate-key", "sk", "red blue", "blue"},
		{"cache-tag", "tag", "t1,t2", "t2"},
		{"cache-group", "groups", `"g1", "g2"`, "g1"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := ownedBy(requester, "n1", "/"+tc.name+"/", "cc", "max-age=600", tc.param, tc.value)
			path, _, _ := strings.Cut(p, "?")
			r := do(t, s.client, http.MethodGet, requester.Addr(), testHost, p)
			wantCacheStatus(t, r, "p-n0; fwd=miss", "stored", "detail=peer")
			wantCacheStatus(t, do(t, s.client, http.MethodGet, requester.Addr(), testHost, p), "p-n0; hit")
			if h := r.header.Get("Surrogate-Key") + r.header.Get("Cache-Tag") + r.header.Get("Cache-Groups") + r.header.Get(hopHeader); h != "" {
				t.Errorf("client got fleet-only fields %q", h)
			}
			s.origin.Bump(path)
			s.clock.Advance(time.Second)
			m := purge.Message{ID: fmt.Sprintf("p%d", i), Kind: purge.KindKey, Host: testHost, Values: []string{tc.purgeValue}}
			for _, n := range []*Node{owner, requester} {
				if _, err := n.ApplyPurge(context.Background(), m); err != nil {
					t.Fatal(err)
				}
			}
			s.clock.Advance(time.Second)
			got := do(t, s.client, http.MethodGet, requester.Addr(), testHost, p)
			if !strings.HasPrefix(got.body, path+"@v2:") {
				t.Errorf("purge by %s applied but the requester still serves %q (Cache-Status %q)",
					tc.name, got.body[:min(len(got.body), len(path)+4)], got.header.Get("Cache-Status"))
			}
		})
	}
	if n := counterValue(t, owner, "meridian_edge_fill_auth_refused_total"); n != 0 {
		t.Errorf("owner refused %v signed fill requests, want 0", n)
	}
}

// TestPeerAnswerToUnverifiedFillNotStored: when the owner cannot verify the requester (no
// key, or another key), its answer lacks the purge identity, so the requester serves it
// without storing it, and a purge by key can never miss a copy.
func TestPeerAnswerToUnverifiedFillNotStored(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"no key", nil}, {"other key", []byte("another-fleet-key-0123456789abcdefgh")}} {
		t.Run(tc.name, func(t *testing.T) {
			s, requester, owner := peerPair(t, tc.key)
			p := ownedBy(requester, "n1", "/unverified/", "cc", "max-age=600", "sk", "red")
			for i := range 2 {
				r := do(t, s.client, http.MethodGet, requester.Addr(), testHost, p)
				if r.status != http.StatusOK {
					t.Fatalf("GET %d = %d", i, r.status)
				}
				cs := r.header.Get("Cache-Status")
				if own := cs[strings.LastIndex(cs, "p-n0;"):]; strings.Contains(own, "stored") || strings.Contains(own, "hit") {
					t.Errorf("GET %d: requester's Cache-Status %q: an unverified peer answer was stored", i, own)
				}
			}
			if n := counterValue(t, requester, "meridian_edge_fill_untrusted_total"); n < 1 {
				t.Errorf("fill_untrusted_total = %v, want >= 1", n)
			}
			if n := counterValue(t, owner, "meridian_edge_fill_auth_refused_total"); n < 1 {
				t.Errorf("owner's fill_auth_refused_total = %v, want >= 1", n)
			}
		})
	}
}

// TestHopSignature checks what a signature binds: a changed target, tier, purge sequence,
// key, an old timestamp or a missing signature are all refused; every key of a ring verifies.
func TestHopSignature(t *testing.T) {
	clock := newFakeClock()
	n, err := New(Config{PoP: "p", Node: "n1", Clock: clock.Now, PeerKey: testPeerKey})
	if err != nil {
		t.Fatal(err)
	}
	defer n.store.Close()
	signed := func() *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/a?x=1", nil)
		r.Host = testHost
		r.Header.Set(hopHeader, "peer")
		r.Header.Set(purgeSeqHeader, "7")
		n.signHop(r)
		return r
	}
	cases := []struct {
		name   string
		mod    func(r *http.Request)
		wantOK bool
	}{
		{"as signed", func(*http.Request) {}, true},
		{"host case", func(r *http.Request) { r.Host = strings.ToUpper(testHost) }, true},
		{"other target", func(r *http.Request) { r.URL, _ = url.Parse("http://127.0.0.1/b?x=1") }, false},
		{"other host", func(r *http.Request) { r.Host = "other.example.com" }, false},
		{"other tier", func(r *http.Request) { r.Header.Set(hopHeader, "peer, shield") }, false},
		{"other purge seq", func(r *http.Request) { r.Header.Set(purgeSeqHeader, "1") }, false},
		{"added only-if-cached", func(r *http.Request) { r.Header.Set("Cache-Control", "only-if-cached") }, false},
		{"unsigned", func(r *http.Request) { r.Header.Del(hopAuthHeader) }, false},
		{"garbage", func(r *http.Request) { r.Header.Set(hopAuthHeader, "v1;k=static;t=x;s=!!") }, false},
		{"unknown version", func(r *http.Request) {
			r.Header.Set(hopAuthHeader, strings.Replace(r.Header.Get(hopAuthHeader), "v1;", "v2;", 1))
		}, false},
		{"replayed later", func(*http.Request) { clock.Advance(hopMaxSkew + time.Second) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := signed()
			tc.mod(r)
			if err := n.verifyHop(r); (err == nil) != tc.wantOK {
				t.Errorf("verifyHop = %v, want ok=%v", err, tc.wantOK)
			}
		})
	}

	// A bound signed on one Cache-Control line cannot be tightened by a line added after it.
	bounded, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/a", nil)
	bounded.Host = testHost
	bounded.Header.Set(hopHeader, "peer")
	bounded.Header.Set("Cache-Control", "max-age=5")
	n.signHop(bounded)
	if err := n.verifyHop(bounded); err != nil {
		t.Fatalf("a signed max-age: %v", err)
	}
	bounded.Header.Add("Cache-Control", "max-age=0")
	if n.verifyHop(bounded) == nil {
		t.Error("a second Cache-Control line added to a signed fill was verified")
	}

	// Rotation: a node that signs with the new key is verified by one that holds both.
	old := wire.PeerKey{ID: "old", Secret: []byte(strings.Repeat("o", 32))}
	next := wire.PeerKey{ID: "new", Secret: []byte(strings.Repeat("n", 32)), SignFrom: clock.Now().Add(time.Minute)}
	n.SetPeerKeyring(wire.PeerKeyring{Keys: []wire.PeerKey{old, next}})
	if r := signed(); !strings.Contains(r.Header.Get(hopAuthHeader), "k=old;") || n.verifyHop(r) != nil {
		t.Errorf("before SignFrom: signed %q, verify %v; want the old key, verified", r.Header.Get(hopAuthHeader), n.verifyHop(r))
	}
	clock.Advance(2 * time.Minute)
	r := signed()
	if !strings.Contains(r.Header.Get(hopAuthHeader), "k=new;") || n.verifyHop(r) != nil {
		t.Errorf("after SignFrom: signed %q, verify %v; want the new key, verified", r.Header.Get(hopAuthHeader), n.verifyHop(r))
	}
	n.SetPeerKeyring(wire.PeerKeyring{Keys: []wire.PeerKey{old}})
	if n.verifyHop(r) == nil {
		t.Errorf("a key dropped from the ring still verifies")
	}
}

// TestPeerKeyRotationWhileServing rotates the fleet's peer keyring through NATS while fills
// between two nodes go on: every fill through the owner is verified and stored.
func TestPeerKeyRotationWhileServing(t *testing.T) {
	url, js, _ := startNATS(t)
	s, nodes := fleetEdges(t, []string{url, url}, true)
	for _, n := range nodes {
		<-n.FleetReady()
	}
	wait.For(t, 10*time.Second, "peer sets from the registry", func() bool {
		return len(nodes[0].tiers.Load().peers) == 2 && len(nodes[1].tiers.Load().peers) == 2
	})
	keyID := func(n *Node) string {
		k, _ := n.peerKeys.Load().Signing(time.Now())
		return k.ID
	}
	before := keyID(nodes[0])
	fill := func(i int) {
		t.Helper()
		p := ownedBy(nodes[0], "n1", fmt.Sprintf("/rot%d-", i), "cc", "max-age=600")
		wantCacheStatus(t, do(t, s.client, http.MethodGet, nodes[0].Addr(), testHost, p), "f1-n0; fwd=miss", "stored", "detail=peer")
	}
	fill(0)
	// The grace must outlast the new keyring's way to every node's view, on a busy machine too
	// (3 s did not once, under a race build with the load average at 10).
	const grace = 8 * time.Second
	if _, err := fleet.RotatePeerKey(context.Background(), js, "", grace); err != nil {
		t.Fatal(err)
	}
	i := 1
	wait.For(t, grace+20*time.Second, "both nodes signing with the new key", func() bool {
		fill(i)
		i++
		return keyID(nodes[0]) != before && keyID(nodes[1]) != before
	})
	fill(i)
	for _, n := range nodes {
		if r, u := counterValue(t, n, "meridian_edge_fill_auth_refused_total"), counterValue(t, n, "meridian_edge_fill_untrusted_total"); r+u != 0 {
			t.Errorf("%s: %v fill requests refused, %v answers unstored during rotation; want 0", n.Name(), r, u)
		}
	}
}
