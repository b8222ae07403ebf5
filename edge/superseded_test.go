package edge

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRevalidationAnswerNotStorableDropsCopy: a revalidation that the upstream answers in full
// with an answer that may not be stored (private, no-store, Set-Cookie, a 404 without
// freshness) says the stored copy is not the upstream's representation any more (RFC 9111
// §4.3.3): the copy is dropped, so neither stale-while-revalidate nor stale-if-error serves it
// again. Before, it stayed, and every request within its stale-while-revalidate window got the
// old shared copy (and started another background fetch), however long the window.
func TestRevalidationAnswerNotStorableDropsCopy(t *testing.T) {
	for _, tt := range []revalidationAnswer{
		{"private", 200, []string{"Cache-Control", "private, max-age=60"}},
		{"no-store", 200, []string{"Cache-Control", "no-store"}},
		{"set-cookie", 200, []string{"Cache-Control", "max-age=60", "Set-Cookie", "sid=1"}},
		{"404 without freshness", 404, nil},
		// A 304 updates the copy's header (RFC 9111 §4.3.4), to one that may not be stored.
		{"304 private", http.StatusNotModified, []string{"Cache-Control", "private, max-age=60"}},
		{"304 no-store", http.StatusNotModified, []string{"Cache-Control", "no-store"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			var replaced atomic.Bool
			var requests atomic.Int32
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				k := requests.Add(1)
				w.Header().Set("Date", clock.Now().Format(http.TimeFormat))
				if !replaced.Load() {
					w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=600, stale-if-error=600")
					w.Header().Set("ETag", `"v1"`)
					fmt.Fprint(w, "old")
					return
				}
				for i := 0; i+1 < len(tt.header); i += 2 {
					w.Header().Set(tt.header[i], tt.header[i+1])
				}
				if tt.status == http.StatusNotModified && r.Header.Get("If-None-Match") == `"v1"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				w.WriteHeader(tt.want())
				fmt.Fprintf(w, "new %d", k)
			}))
			n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{}
			t.Cleanup(c.CloseIdleConnections)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p"); r.body != "old" {
				t.Fatalf("first GET: %d %q", r.status, r.body)
			}
			replaced.Store(true)
			clock.Advance(20 * time.Second)
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p")
			wantCacheStatus(t, r, "detail=stale-while-revalidate")
			hs := (*n.hosts.Load())[testHost]
			key := httpcache.Key(testHost, "/p", "", hs.keyOpts)
			wait.For(t, 5*time.Second, "the background revalidation to drop the copy", func() bool {
				o, _, _ := n.store.Lookup(key, http.Header{})
				return o == nil
			})
			for i := range 2 {
				r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p")
				if r.status != tt.want() || !strings.HasPrefix(r.body, "new ") {
					t.Errorf("GET %d after the revalidation: %d %q (Cache-Status %q), want the origin's new %d",
						i, r.status, r.body, r.header.Get("Cache-Status"), tt.want())
				}
			}
		})
	}
}

// revalidationAnswer is how the origin answers a revalidation once the copy is replaced.
type revalidationAnswer struct {
	name   string
	status int // a 304 to a conditional request; an unconditional one gets a 200
	header []string
}

// want is the status of the origin's answer to an unconditional request.
func (a revalidationAnswer) want() int {
	if a.status == http.StatusNotModified {
		return http.StatusOK
	}
	return a.status
}

// TestRevalidationRequestErrorKeepsCopy: a revalidation the upstream refuses with a client
// error that answers the request, not the resource (400, 403, 431: one client's malformed or
// oversized header, a firewall's verdict on its address or User-Agent), leaves the shared copy,
// as a 429 and a 5xx do; only a 404 or 410 says the resource is gone (RFC 9111 §4.4 likewise
// lets only a non-error status invalidate). Before, the one client's refusal dropped the copy
// for every other, and marked the key so that their next misses each went upstream.
func TestRevalidationRequestErrorKeepsCopy(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusForbidden, http.StatusRequestHeaderFieldsTooLarge} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			clock := newFakeClock()
			addr := startHTTP(t, "127.0.0.14", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Date", clock.Now().Format(http.TimeFormat))
				if r.Header.Get("X-Client") == "refused" {
					w.WriteHeader(status)
					return
				}
				w.Header().Set("Cache-Control", "max-age=10")
				w.Header().Set("ETag", `"v1"`)
				if r.Header.Get("If-None-Match") == `"v1"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				fmt.Fprint(w, "shared")
			}))
			n, _ := startEdge(t, listen(t, "127.0.0.15"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{}
			t.Cleanup(c.CloseIdleConnections)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p"); r.body != "shared" {
				t.Fatalf("first GET: %d %q", r.status, r.body)
			}
			clock.Advance(20 * time.Second)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p", "X-Client", "refused"); r.status != status {
				t.Fatalf("refused client's GET: %d, want the origin's %d", r.status, status)
			}
			hs := (*n.hosts.Load())[testHost]
			if o, _, _ := n.store.Lookup(httpcache.Key(testHost, "/p", "", hs.keyOpts), http.Header{}); o == nil {
				t.Fatalf("one client's %d to a revalidation dropped the shared copy", status)
			}
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p")
			wantCacheStatus(t, r, "fwd=stale", "fwd-status=304")
			if r.body != "shared" {
				t.Errorf("next client: %d %q, want the copy revalidated", r.status, r.body)
			}
		})
	}
}

// TestRevalidationAnswerNotStorableDropsOnlyItsVariant: the copy that a revalidation's answer
// that may not be stored drops is the revalidated variant; the URL's other variants are other
// answers, which that one says nothing of (Vary: Accept-Language, one language's answer turned
// private). Before, the drop took every variant of the URL: the others' next requests were
// misses, each a fetch from the origin.
func TestRevalidationAnswerNotStorableDropsOnlyItsVariant(t *testing.T) {
	for _, tt := range []revalidationAnswer{
		{"200 private", 200, []string{"Cache-Control", "private, max-age=60"}},
		{"304 private", http.StatusNotModified, []string{"Cache-Control", "private, max-age=60"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			var replaced atomic.Bool // the de variant is answered with tt from now on
			var requests atomic.Int32
			addr := startHTTP(t, "127.0.0.83", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				lang := r.Header.Get("Accept-Language")
				w.Header().Set("Date", clock.Now().Format(http.TimeFormat))
				w.Header().Set("Vary", "Accept-Language")
				w.Header().Set("ETag", `"`+lang+`"`)
				if lang == "de" && replaced.Load() {
					for i := 0; i+1 < len(tt.header); i += 2 {
						w.Header().Set(tt.header[i], tt.header[i+1])
					}
					if tt.status == http.StatusNotModified && r.Header.Get("If-None-Match") == `"de"` {
						w.WriteHeader(http.StatusNotModified)
						return
					}
					fmt.Fprint(w, "new de")
					return
				}
				if lang == "de" { // stale before en is
					w.Header().Set("Cache-Control", "max-age=10")
				} else {
					w.Header().Set("Cache-Control", "max-age=600")
				}
				fmt.Fprint(w, "old ", lang)
			}))
			n, _ := startEdge(t, listen(t, "127.0.0.84"), Config{PoP: "tst", Node: "e1", Clock: clock.Now,
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{}
			t.Cleanup(c.CloseIdleConnections)
			for _, lang := range []string{"en", "de"} {
				if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p", "Accept-Language", lang); r.body != "old "+lang {
					t.Fatalf("first GET of %s: %d %q", lang, r.status, r.body)
				}
			}
			replaced.Store(true)
			clock.Advance(20 * time.Second)
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/p", "Accept-Language", "de")
			wantCacheStatus(t, r, "fwd=stale")
			hs := (*n.hosts.Load())[testHost]
			key := httpcache.Key(testHost, "/p", "", hs.keyOpts)
			if o, _, _ := n.store.Lookup(key, http.Header{"Accept-Language": {"de"}}); o != nil {
				t.Errorf("the revalidated de variant is still stored: %q", o.Body)
			}
			before := requests.Load()
			r = do(t, c, http.MethodGet, n.Addr(), testHost, "/p", "Accept-Language", "en")
			wantCacheStatus(t, r, "; hit")
			if r.body != "old en" || requests.Load() != before {
				t.Errorf("en after de's revalidation: %q, %d origin requests; want the stored en copy, none",
					r.body, requests.Load()-before)
			}
		})
	}
}
