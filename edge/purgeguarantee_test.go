package edge

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// scriptedOrigin is an origin whose answers a test changes as it goes: the body's version,
// the ETag, an error status, extra fields, and a request held until released.
type scriptedOrigin struct {
	clock    *fakeClock
	version  atomic.Int64
	etag     atomic.Value // string; "" for none
	status   atomic.Int64 // 0: 200, or 304 to a matching If-None-Match
	cc       string
	extra    http.Header // set before the first request
	extra304 http.Header // if set (before the first request), a 304's fields in extra's place
	mu       sync.Mutex
	hold     chan struct{} // when set, the next request signals held and waits for it to close
	held     chan struct{}
}

func (o *scriptedOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	hold := o.hold
	o.hold = nil
	o.mu.Unlock()
	if hold != nil {
		o.held <- struct{}{}
		<-hold
	}
	w.Header().Set("Date", o.clock.Now().UTC().Format(http.TimeFormat))
	w.Header().Set("Cache-Control", o.cc)
	etag, _ := o.etag.Load().(string)
	status := int(o.status.Load())
	if status == 0 && etag != "" && r.Header.Get("If-None-Match") == etag {
		status = http.StatusNotModified
	}
	extra := o.extra
	if status == http.StatusNotModified && o.extra304 != nil {
		extra = o.extra304
	}
	for k, vs := range extra {
		w.Header()[k] = vs
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	switch status {
	case 0:
	case http.StatusNotModified:
		w.WriteHeader(status)
		return
	default:
		w.WriteHeader(status)
		fmt.Fprintf(w, "error %d", status)
		return
	}
	fmt.Fprintf(w, "%s v%d", r.URL.RequestURI(), o.version.Load())
}

// holdNext makes the origin hold its next request (signalling o.held) until release is called.
func (o *scriptedOrigin) holdNext() (release func()) {
	ch := make(chan struct{})
	o.mu.Lock()
	o.hold = ch
	o.mu.Unlock()
	return func() { close(ch) }
}

// newScripted starts a scripted origin answering with Cache-Control cc and extra fields, and an
// edge in front of it (prep as for startEdgeWith), both on one fake clock.
func newScripted(t *testing.T, cc string, extra http.Header, prep func(*Node)) (*scriptedOrigin, *Node, *http.Client) {
	t.Helper()
	return newScriptedWith(t, cc, extra, nil, prep)
}

// newScriptedWith is newScripted whose origin's 304s carry the fields extra304 (if not nil)
// in place of extra.
func newScriptedWith(t *testing.T, cc string, extra, extra304 http.Header, prep func(*Node)) (*scriptedOrigin, *Node, *http.Client) {
	t.Helper()
	clock := newFakeClock()
	o := &scriptedOrigin{clock: clock, cc: cc, extra: extra, extra304: extra304, held: make(chan struct{}, 1)}
	o.version.Store(1)
	addr := startHTTP(t, "127.0.0.10", o)
	n, _ := startEdgeWith(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}}, prep)
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	return o, n, c
}

func applyPurge(t *testing.T, n *Node, kind purge.Kind, soft bool, values ...string) {
	t.Helper()
	m := purge.Message{ID: "p", Host: testHost, Kind: kind, Values: values, Soft: soft}
	if _, err := n.ApplyPurge(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// TestStaleIfErrorAfterPurgeDuringFill: a stale copy whose revalidation fails is served under
// stale-if-error only if no hard purge matched it meanwhile. The fill is held at the origin while
// the purge is applied, then fails. Found by a review helper: the copy looked up before the fill
// was served, marked stale-if-error, after the hard purge that made it gone was applied.
func TestStaleIfErrorAfterPurgeDuringFill(t *testing.T) {
	for _, tc := range []struct {
		name      string
		soft      bool
		wantStale bool
	}{
		{"hard", false, false},
		{"soft", true, true}, // a soft purge leaves the copy stale, which stale-if-error may serve
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, n, c := newScripted(t, "max-age=10, stale-if-error=600", nil, nil)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); r.body != "/x v1" {
				t.Fatalf("first GET: %q", r.body)
			}
			o.clock.Advance(20 * time.Second) // stale, within stale-if-error
			o.status.Store(http.StatusServiceUnavailable)
			release := o.holdNext()
			got := make(chan resp, 1)
			go func() {
				r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/x")
				if err != nil {
					t.Error(err)
				}
				got <- r
			}()
			<-o.held // the revalidation is at the origin
			applyPurge(t, n, purge.KindURL, tc.soft, "/x")
			release()
			r := <-got
			if stale := r.body == "/x v1"; stale != tc.wantStale {
				t.Errorf("after a %s purge during the failing fill: %d %q (Cache-Status %q), stale copy served = %v, want %v",
					tc.name, r.status, r.body, r.header.Get("Cache-Status"), stale, tc.wantStale)
			}
			if !tc.wantStale && r.status != http.StatusServiceUnavailable {
				t.Errorf("status %d, want the origin's 503", r.status)
			}
		})
	}
}

// TestNotModifiedAfterHardPurge: a revalidation of a stale copy that a hard purge matched after
// it was looked up (and before the fill began) fetches the object whole: the origin's 304 must
// not bring the purged body back stored as fresh, as if fetched after the purge. Both for a
// client's fill and for the background revalidation of stale-while-revalidate; the origin
// changed the body under the same ETag, which is what a hard purge is for. A run hook holds
// the fill between the lookup and its start. Found by a review helper: the 304 refreshed the
// purged copy, stored with the fill's start (after the purge) and served as a hit.
func TestNotModifiedAfterHardPurge(t *testing.T) {
	for _, tc := range []struct {
		name string
		cc   string
	}{
		{"fill", "max-age=10"},
		{"stale-while-revalidate", "max-age=10, stale-while-revalidate=600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gate atomic.Pointer[chan struct{}]
			entered := make(chan struct{}, 1)
			o, n, c := newScripted(t, tc.cc, nil, func(n *Node) {
				n.fill.runHook = func(string) {
					if g := gate.Swap(nil); g != nil {
						entered <- struct{}{}
						<-*g
					}
				}
			})
			o.etag.Store(`"e1"`)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); r.body != "/x v1" {
				t.Fatalf("first GET: %q", r.body)
			}
			o.clock.Advance(20 * time.Second) // stale
			g := make(chan struct{})
			gate.Store(&g)
			got := make(chan resp, 1)
			go func() {
				r, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/x")
				if err != nil {
					t.Error(err)
				}
				got <- r
			}()
			<-entered // looked up, revalidation about to begin
			o.version.Store(2)
			applyPurge(t, n, purge.KindURL, false, "/x")
			o.clock.Advance(time.Second) // the fill begins after the purge
			close(g)
			<-got // the client's answer: its request came before the purge, either will do
			key := n.key("/x")
			wait.For(t, 5*time.Second, "the revalidation to store its answer", func() bool {
				obj, _, _ := n.store.Lookup(key, nil)
				return obj != nil
			})
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); r.body != "/x v2" {
				t.Errorf("GET after the hard purge: %q (Cache-Status %q), want /x v2", r.body, r.header.Get("Cache-Status"))
			}
		})
	}
}

// TestPurgeByKeyMatchesEveryDeclaredKey: a purge by any key a response declared reaches it,
// however many keys it declared and however long (up to the longest a purge may name). Found by
// a review helper: the edge kept the first 256 keys of at most 256 bytes each and dropped the
// others silently, so a purge by key 257, or by a key of 300 bytes (purges allow 2,048), left
// the object served as a hit. A response with more keys than the edge indexes is not stored.
func TestPurgeByKeyMatchesEveryDeclaredKey(t *testing.T) {
	if httpcache.MaxSurrogateKeyLen < purge.MaxValueBytes {
		t.Errorf("keys of up to %d bytes are kept, purges name keys of up to %d", httpcache.MaxSurrogateKeyLen, purge.MaxValueBytes)
	}
	many := make([]string, httpcache.MaxSurrogateKeys+44)
	for i := range many {
		many[i] = fmt.Sprintf("k%d", i)
	}
	long := strings.Repeat("L", purge.MaxValueBytes)
	dups := strings.TrimSpace(strings.Repeat("d ", 2*httpcache.MaxSurrogateKeys)) + " last"
	for _, tc := range []struct {
		name  string
		field string
		value string
		key   string
	}{
		{"key past the count", "Surrogate-Key", strings.Join(many, " "), many[len(many)-1]},
		{"first key of too many", "Cache-Tag", strings.Join(many, ", "), "k0"},
		{"longest key a purge names", "Surrogate-Key", "a " + long, long},
		{"after many duplicates", "Surrogate-Key", dups, "last"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, n, c := newScripted(t, "max-age=600", http.Header{tc.field: {tc.value}}, nil)
			do(t, c, http.MethodGet, n.Addr(), testHost, "/x")
			o.version.Store(2)
			o.clock.Advance(time.Second)
			applyPurge(t, n, purge.KindKey, false, tc.key)
			o.clock.Advance(time.Second)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); r.body != "/x v2" {
				t.Errorf("GET after a purge of key %.12q: %q (Cache-Status %q), want /x v2", tc.key, r.body, r.header.Get("Cache-Status"))
			}
		})
	}
}

// TestPurgeByKeyWhenFieldNotStored: an origin may say that a shared cache must not store its
// Surrogate-Key or Cache-Tag field (no-cache="..." or private="..." naming it, RFC 9111
// §5.2.2.4, §5.2.2.7), but the keys it declares still name the object for purges: a purge by
// one of them makes the copy gone, also after a 304 revalidated it. The edge took the keys
// from the header after it had dropped those fields, and a purge by key was acked while the
// copy stayed a hit.
func TestPurgeByKeyWhenFieldNotStored(t *testing.T) {
	for _, tc := range []struct {
		name, cc, field string
		revalidate      bool
		// other is a field that declares another key on the 200 and the 304 alike; the 304
		// does not repeat field.
		other string
	}{
		{"no-cache names Surrogate-Key", `max-age=600, no-cache="Surrogate-Key"`, "Surrogate-Key", false, ""},
		{"private names Cache-Tag", `max-age=600, private="cache-tag"`, "Cache-Tag", false, ""},
		{"after a 304", `max-age=10, no-cache="Surrogate-Key"`, "Surrogate-Key", true, ""},
		// Found by a bug-hunt helper: the 304's Cache-Tag made the copy's keys those of the
		// refreshed header, which has no Surrogate-Key field (it was not stored): k1 was lost.
		{"after a 304 declaring other keys", `max-age=10, no-cache="Surrogate-Key"`, "Surrogate-Key", true, "Cache-Tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra := http.Header{tc.field: {"k1"}}
			var extra304 http.Header
			if tc.other != "" {
				extra.Set(tc.other, "t1")
				extra304 = http.Header{tc.other: {"t1"}}
			}
			o, n, c := newScriptedWith(t, tc.cc, extra, extra304, nil)
			o.etag.Store(`"e1"`)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); r.body != "/x v1" {
				t.Fatalf("first GET: %q", r.body)
			}
			if tc.revalidate {
				o.clock.Advance(11 * time.Second) // stale: revalidated, the 304 refreshes it
				if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); r.body != "/x v1" {
					t.Fatalf("GET after the revalidation: %q", r.body)
				}
			}
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); !strings.Contains(r.header.Get("Cache-Status"), "hit") {
				t.Fatalf("GET before the purge: Cache-Status %q, want a hit", r.header.Get("Cache-Status"))
			}
			o.version.Store(2)
			o.etag.Store(`"e2"`)
			o.clock.Advance(time.Second)
			applyPurge(t, n, purge.KindKey, false, "k1")
			o.clock.Advance(time.Second)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); r.body != "/x v2" {
				t.Errorf("GET after a purge of key k1: %q (Cache-Status %q), want /x v2", r.body, r.header.Get("Cache-Status"))
			}
		})
	}
}

// TestRefreshedKeysStayTheDeclared: a copy whose Surrogate-Key field is not stored
// (no-cache="Surrogate-Key") keeps that field's keys across 304s that send only a Cache-Tag, but
// only the keys the origin still declares: a Cache-Tag the origin dropped no longer names the
// copy, and a copy whose keys together exceed MaxSurrogateKeys is not kept (as a 200 declaring
// them all is not). Found by a review helper: every 304 added its tags to all the copy's
// keys, the dropped ones too, so an origin that changes a tag per answer grew the copy's
// index entries by one per revalidation, without bound.
func TestRefreshedKeysStayTheDeclared(t *testing.T) {
	many := func(prefix string, n int) string {
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("%s%d", prefix, i)
		}
		return strings.Join(keys, " ")
	}
	for _, tc := range []struct {
		name string
		sk   string
		tags []string // the origin's Cache-Tag, one per answer after the first (on its 304s too)
		want []string // the copy's keys at the end; nil: no copy kept
	}{
		{"a dropped tag goes", "k1", []string{"t0", "t1", "t2", "t3"}, []string{"k1", "t3"}},
		{"an added tag joins", "k1", []string{"", "t1"}, []string{"k1", "t1"}},
		{"more keys than kept", many("s", 200), []string{"", strings.ReplaceAll(many("c", 100), " ", ", ")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			var mu sync.Mutex
			tag := tc.tags[0]
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				ct := tag
				mu.Unlock()
				w.Header().Set("Date", clock.Now().UTC().Format(http.TimeFormat))
				w.Header().Set("Cache-Control", `max-age=10, no-cache="Surrogate-Key"`)
				w.Header().Set("ETag", `"e1"`)
				if ct != "" {
					w.Header().Set("Cache-Tag", ct)
				}
				if r.Header.Get("If-None-Match") == `"e1"` {
					w.WriteHeader(http.StatusNotModified) // the 304 does not resend Surrogate-Key
					return
				}
				w.Header().Set("Surrogate-Key", tc.sk)
				fmt.Fprint(w, "body")
			}))
			n, _ := startEdgeWith(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}}, nil)
			c := &http.Client{}
			t.Cleanup(c.CloseIdleConnections)
			for i, ct := range tc.tags {
				if i > 0 {
					mu.Lock()
					tag = ct
					mu.Unlock()
					clock.Advance(11 * time.Second) // stale: revalidated
				}
				if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/x"); r.body != "body" {
					t.Fatalf("GET %d: %d %q", i, r.status, r.body)
				}
			}
			obj, _, _ := n.store.Lookup(n.key("/x"), nil)
			switch {
			case tc.want == nil && obj != nil:
				t.Errorf("a copy with %d keys is kept, more than %d", len(obj.SurrogateKeys()), httpcache.MaxSurrogateKeys)
			case tc.want == nil:
			case obj == nil:
				t.Errorf("no copy kept, want one with keys %q", tc.want)
			default:
				got := slices.Sorted(slices.Values(obj.SurrogateKeys()))
				if !slices.Equal(got, tc.want) {
					t.Errorf("the copy's keys are %.80q (%d), want %q", got, len(got), tc.want)
				}
			}
		})
	}
}

// TestPurgeByKeyWhenFieldNotStoredFromPeer: the node that fills from its PoP's owner of the URL
// stores the copy under the same surrogate keys as the owner, though the owner does not store
// the Surrogate-Key field (no-cache="Surrogate-Key"): its answer to a verified fleet node
// carries the keys it holds the object by. Without them the other node stored its copy keyed
// on nothing, and a purge by key left that copy a hit.
func TestPurgeByKeyWhenFieldNotStoredFromPeer(t *testing.T) {
	f := newFleet(t, []int{2}, noShield, nil)
	p := obj("/nk", "cc", `max-age=600, no-cache="Surrogate-Key"`, "sk", "k1 k2")
	get := func(n *Node) resp {
		t.Helper()
		r := do(t, f.client, http.MethodGet, n.Addr(), testHost, p)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s from %s: %d", p, n.Name(), r.status)
		}
		return r
	}
	for _, n := range f.nodes { // one fills from the origin, the other from it
		get(n)
		if r := get(n); !strings.Contains(r.header.Get("Cache-Status"), n.Name()+"; hit") {
			t.Fatalf("%s: second GET not a hit: %q", n.Name(), r.header.Get("Cache-Status"))
		}
	}
	f.origin.Bump("/nk")
	for _, n := range f.nodes {
		if _, err := n.ApplyPurge(context.Background(), purge.Message{ID: "p", Host: testHost, Kind: purge.KindKey, Values: []string{"k2"}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range f.nodes {
		if r := get(n); !strings.HasPrefix(r.body, "/nk@v2:") {
			t.Errorf("%s after a purge of key k2: %.20q (Cache-Status %q), want version 2", n.Name(), r.body, r.header.Get("Cache-Status"))
		}
	}
}
