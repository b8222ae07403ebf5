package edge

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestKeyErasPurgeAndBounds: a URL purge names the URL under the host's past key options too
// (control's TestPurgeURLAcrossKeyOptionChanges runs it through the API); past maxKeyEras
// distinct ones the host's copies are purged, since a purge could not name them all; and an
// era is forgotten once no copy keyed under it can be stored any more.
func TestKeyErasPurgeAndBounds(t *testing.T) {
	s := newSingle(t, nil)
	setCache := func(c wire.CacheOptions) {
		t.Helper()
		if err := s.edge.SetHosts([]wire.HostConfig{{Host: testHost, Origin: "http://" + s.originAddr, Cache: c}}); err != nil {
			t.Fatal(err)
		}
	}
	status := func(path string) string {
		t.Helper()
		r := s.get(t, path)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s = %d, want 200", path, r.status)
		}
		return r.header.Get("Cache-Status")
	}
	fill := func(path string) {
		t.Helper()
		status(path)
		if cs := status(path); !strings.Contains(cs, "; hit") {
			t.Fatalf("GET %s after a fill: Cache-Status %q, want a hit", path, cs)
		}
	}
	purgeURL := func(path string) int {
		t.Helper()
		hits, err := s.edge.ApplyPurge(context.Background(), purge.Message{ID: "p", Host: testHost, Kind: purge.KindURL, Values: []string{path}})
		if err != nil {
			t.Fatal(err)
		}
		return hits
	}

	// Changed and changed back: the purge in between reaches the copy, and counts it once.
	const a = "/e/a?b=2&a=1&cc=max-age%3D600"
	fill(a)
	setCache(wire.CacheOptions{SortQuery: true})
	if hits := purgeURL(a); hits != 1 {
		t.Errorf("purge of %s under sort_query = %d hits, want 1 (the copy keyed before)", a, hits)
	}
	setCache(wire.CacheOptions{})
	if cs := status(a); !strings.Contains(cs, "fwd=miss") {
		t.Errorf("GET %s with the options back, after the purge: Cache-Status %q, want a miss", a, cs)
	}

	// More distinct options than can be kept: the oldest's copies are purged.
	const b = "/e/b?b=2&a=1&cc=max-age%3D600"
	fill(b)
	for i := range maxKeyEras + 1 {
		setCache(wire.CacheOptions{KeepParams: []string{"a", "b", "cc", fmt.Sprint("x", i)}})
	}
	setCache(wire.CacheOptions{})
	if cs := status(b); !strings.Contains(cs, "fwd=miss") {
		t.Errorf("GET %s after %d other key options and back: Cache-Status %q, want a miss (host purged)", b, maxKeyEras+1, cs)
	}

	// Eras end: once no copy keyed under one may be stored, a purge names only the current key.
	n := s.edge
	count := func() int {
		n.keyEras.mu.Lock()
		defer n.keyEras.mu.Unlock()
		return len(n.keyOptionsLocked(testHost, nil))
	}
	if got := count(); got != maxKeyEras+1 {
		t.Errorf("key options of %s = %d, want %d (current and every era kept)", testHost, got, maxKeyEras+1)
	}
	s.clock.Advance(2*n.store.RecordLife() + time.Second)
	if got := count(); got != 1 {
		t.Errorf("key options of %s after 2 record lives = %d, want 1 (the current)", testHost, got)
	}
}

// TestKeyErasBoundCountsLiveDistinctPastOptions: only past options a stored copy may still be
// keyed under count towards maxKeyEras. Neither options that ended longer ago than any copy
// lives nor the options a host changes back to (they are its current ones, which every URL
// purge names) may make a change of options purge the whole host.
func TestKeyErasBoundCountsLiveDistinctPastOptions(t *testing.T) {
	keep := func(i int) wire.CacheOptions {
		return wire.CacheOptions{KeepParams: []string{"cc", fmt.Sprint("x", i)}}
	}
	tests := []struct {
		name string
		// before are the options set, in order, before the copy is filled; after, after it.
		before, after []wire.CacheOptions
		// wait is how long the clock moves on after each change before the fill.
		wait bool
	}{
		{
			name: "expired past options",
			before: func() (o []wire.CacheOptions) {
				for i := range maxKeyEras + 1 {
					o = append(o, keep(i))
				}
				return o
			}(),
			after: []wire.CacheOptions{keep(100)},
			wait:  true,
		},
		{
			name: "back to the first of nine",
			after: func() (o []wire.CacheOptions) {
				for i := range maxKeyEras {
					o = append(o, keep(i))
				}
				return append(o, wire.CacheOptions{}) // the options the copy was filled under
			}(),
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, nil)
			setCache := func(c wire.CacheOptions) {
				t.Helper()
				if err := s.edge.SetHosts([]wire.HostConfig{{Host: testHost, Origin: "http://" + s.originAddr, Cache: c}}); err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range tt.before {
				setCache(c)
				if tt.wait {
					s.clock.Advance(2*s.edge.store.RecordLife() + time.Second)
				}
			}
			path := fmt.Sprintf("/e/bound%d?cc=max-age%%3D600", i)
			s.get(t, path)
			if cs := s.get(t, path).header.Get("Cache-Status"); !strings.Contains(cs, "; hit") {
				t.Fatalf("GET %s after a fill: Cache-Status %q, want a hit", path, cs)
			}
			for _, c := range tt.after {
				setCache(c)
			}
			if cs := s.get(t, path).header.Get("Cache-Status"); !strings.Contains(cs, "; hit") {
				t.Errorf("GET %s after the changes: Cache-Status %q, want a hit (no more than %d live past options, the host must not be purged)", path, cs, maxKeyEras)
			}
		})
	}
}

// TestKeyErasForgetDroppedHosts: the past options of hosts a node no longer serves are
// forgotten once no copy keyed under them may be stored, without a URL purge of each such host
// (none may ever come): a fleet whose hosts come and go must not keep them all.
func TestKeyErasForgetDroppedHosts(t *testing.T) {
	s := newSingle(t, nil)
	n := s.edge
	base := wire.HostConfig{Host: testHost, Origin: "http://" + s.originAddr}
	many := []wire.HostConfig{base}
	for i := range 100 {
		many = append(many, wire.HostConfig{Host: fmt.Sprintf("h%d.example", i), Origin: base.Origin})
	}
	past := func() int {
		n.keyEras.mu.Lock()
		defer n.keyEras.mu.Unlock()
		return len(n.keyEras.past)
	}
	if err := n.SetHosts(many); err != nil {
		t.Fatal(err)
	}
	if err := n.SetHosts([]wire.HostConfig{base}); err != nil {
		t.Fatal(err)
	}
	if got := past(); got != 100 {
		t.Fatalf("hosts with past options after dropping 100 = %d, want 100", got)
	}
	s.clock.Advance(2*n.store.RecordLife() + time.Second)
	// Any later change of the hosts, here one more host, is when the node looks.
	if err := n.SetHosts(append([]wire.HostConfig{base}, wire.HostConfig{Host: "other.example", Origin: base.Origin})); err != nil {
		t.Fatal(err)
	}
	if got := past(); got != 0 {
		t.Errorf("hosts with past options 2 record lives after they were dropped = %d, want 0", got)
	}
}

// TestKeyOptionsChangeDuringPurgeAsksPeerForPurge: a URL purge names the URL under the key
// options the host has when the purge reads them. A fill under options the host changes to
// just after (SetHosts) is keyed under none of those, so no record of the purge reaches its
// copy: it must ask its peer for a copy with the purge applied. It asked for the sequence
// before the purge's, raised only after the options were read, and brought the peer's old copy
// back, fresh after the ack.
func TestKeyOptionsChangeDuringPurgeAsksPeerForPurge(t *testing.T) {
	f := newFleet(t, []int{2}, noShield, nil)
	asker, owner := f.nodes[0], f.nodes[1]
	sorted := wire.CacheOptions{SortQuery: true}
	setCache := func(n *Node, c wire.CacheOptions) {
		t.Helper()
		h := n.Hosts()[0]
		h.Cache = c
		if err := n.SetHosts([]wire.HostConfig{h}); err != nil {
			t.Fatal(err)
		}
	}
	// The owner keys the URL sorted already, and holds its copy under that key.
	setCache(owner, sorted)
	var path string
	for i := 0; path == ""; i++ {
		// Its query unsorted: the asker's key for it changes with sort_query.
		if p := fmt.Sprintf("/swap%d?z=1&cc=max-age%%3D600", i); rendezvous(asker.tiers.Load().peers, owner.key(p))[0].ID == owner.cfg.Node {
			path = p
		}
	}
	wantCacheStatus(t, do(t, f.client, http.MethodGet, owner.Addr(), testHost, path), "fwd=miss")
	f.origin.Bump(strings.SplitN(path, "?", 2)[0])
	f.clock.Advance(time.Second)

	held, release := make(chan struct{}), make(chan struct{})
	asker.keyOptsHook = func() {
		close(held)
		<-release
	}
	applied := make(chan error, 1)
	go func() {
		_, err := asker.ApplyPurge(context.Background(), purge.Message{ID: "p1", Seq: 1, Host: testHost, Kind: purge.KindURL, Values: []string{path}})
		applied <- err
	}()
	<-held
	setCache(asker, sorted)
	during := do(t, f.client, http.MethodGet, asker.Addr(), testHost, path) // before the ack: either version will do
	close(release)
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	// Acknowledged from here on.
	if r := do(t, f.client, http.MethodGet, asker.Addr(), testHost, path); !strings.Contains(r.body, "@v2:") {
		t.Errorf("after the purge was applied the asker served %.12q (Cache-Status %q; the fill during the purge got %.12q via %q): the owner's old copy",
			r.body, r.header.Get("Cache-Status"), during.body, during.header.Get("Cache-Status"))
	}
}

// TestUnsafeInvalidationAcrossKeyOptionChanges: an unsafe request's invalidation (RFC 9111
// §4.4) names its URLs (the request's own, its answer's Location and Content-Location) under
// the host's past key options too, as a URL purge does: options changed and changed back
// made the copies keyed under the first ones the URL's again. Before, it named the URL under
// the options it was served under only, and the copy filled before the change was a fresh
// hit once they were back, as if the write had never passed through the node; the fill that
// replaces it asks the tiers above for nothing older than the write (fillCacheControl) too.
func TestUnsafeInvalidationAcrossKeyOptionChanges(t *testing.T) {
	var version atomic.Int64
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			// The resources the write names in its answer, as the test asks.
			for _, f := range []string{"Location", "Content-Location"} {
				if v := r.Header.Get("X-" + f); v != "" {
					w.Header().Set(f, v)
				}
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprintf(w, "%s v%d", r.URL.RequestURI(), version.Add(1))
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	setCache := func(t *testing.T, o wire.CacheOptions) {
		t.Helper()
		if err := n.SetHosts([]wire.HostConfig{{Host: testHost, Origin: "http://" + addr, Cache: o}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, opt := range []struct {
		name string
		o    wire.CacheOptions
	}{
		{"sort_query", wire.CacheOptions{SortQuery: true}},
		{"keep_params", wire.CacheOptions{KeepParams: []string{"a"}}},
		{"ignore_query", wire.CacheOptions{IgnoreQuery: true}},
	} {
		for _, w := range []struct {
			name, method string
			// field, if set, names the URL in the answer; the request goes to /w then.
			field string
		}{
			{"POST", http.MethodPost, ""},
			{"PUT", http.MethodPut, ""},
			{"DELETE", http.MethodDelete, ""},
			{"Location", http.MethodPost, "Location"},
			{"Content-Location", http.MethodPost, "Content-Location"},
		} {
			t.Run(opt.name+"/"+w.name, func(t *testing.T) {
				u := "/r/" + opt.name + "/" + w.name + "?b=2&a=1" // keyed otherwise under each option
				first := do(t, c, http.MethodGet, n.Addr(), testHost, u)
				if r := do(t, c, http.MethodGet, n.Addr(), testHost, u); r.body != first.body || !strings.Contains(r.header.Get("Cache-Status"), "; hit") {
					t.Fatalf("GET %s after a fill: %q (Cache-Status %q), want a hit of %q", u, r.body, r.header.Get("Cache-Status"), first.body)
				}
				setCache(t, opt.o)
				target, hdr := u, []string(nil)
				if w.field != "" {
					target, hdr = "/w/"+opt.name+"/"+w.name, []string{"X-" + w.field, u}
				}
				if r := do(t, c, w.method, n.Addr(), testHost, target, hdr...); r.status != http.StatusNoContent {
					t.Fatalf("%s %s under %s: %d, want 204", w.method, target, opt.name, r.status)
				}
				setCache(t, wire.CacheOptions{})
				if cc := n.fillCacheControl(&request{key: n.key(u)}); cc == "" {
					t.Errorf("fill of %s with the options back asks the tiers above for any copy, want nothing older than the %s", u, w.method)
				}
				if r := do(t, c, http.MethodGet, n.Addr(), testHost, u); r.body == first.body {
					t.Errorf("GET %s after a %s under %s and the options back: %q (Cache-Status %q), want a new fetch", u, w.method, opt.name, r.body, r.header.Get("Cache-Status"))
				}
			})
		}
	}
}
