package edge

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/store"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestInvalidationsBounded: the newest invalidationCap keys are remembered, a key invalidated
// again keeps its newest time when its older entry leaves, and the oldest go first.
func TestInvalidationsBounded(t *testing.T) {
	var v invalidations
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	if _, ok := v.since("k0"); ok {
		t.Fatal("an empty set remembers k0")
	}
	v.add("again", t0)
	for i := range invalidationCap {
		v.add(fmt.Sprintf("k%d", i), t0.Add(time.Duration(i)*time.Millisecond))
		if i == 10 {
			v.add("again", t0.Add(time.Hour))
		}
	}
	if _, ok := v.since("k0"); ok {
		t.Error("k0, among the oldest past the cap, is still remembered")
	}
	if at, ok := v.since("again"); !ok || !at.Equal(t0.Add(time.Hour)) {
		t.Errorf("again = %v, %v; want its newest time", at, ok)
	}
	last := fmt.Sprintf("k%d", invalidationCap-1)
	if _, ok := v.since(last); !ok {
		t.Errorf("%s, the newest, is forgotten", last)
	}
	if n := int(v.n.Load()); n > invalidationCap || n != len(v.at) {
		t.Errorf("n = %d for %d keys, want at most %d", n, len(v.at), invalidationCap)
	}
}

// TestFillCacheControl: a fill asks for nothing older than the node's own invalidation of the
// URL (whole seconds, rounded down) or the bound the fleet node asking it gave, whichever is
// less; otherwise it says nothing.
func TestFillCacheControl(t *testing.T) {
	clock := newFakeClock()
	n := &Node{clock: clock.Now}
	req := &request{key: "h/x"}
	if got := n.fillCacheControl(req); got != "" {
		t.Errorf("nothing invalidated: %q, want none", got)
	}
	n.invalidations.add("h/x", clock.Now())
	clock.Advance(2500 * time.Millisecond)
	if got := n.fillCacheControl(req); got != "max-age=2" {
		t.Errorf("invalidated 2.5 s ago: %q, want max-age=2", got)
	}
	req.maxAge, req.hasMaxAge = time.Second, true
	if got := n.fillCacheControl(req); got != "max-age=1" {
		t.Errorf("asked for 1 s: %q, want max-age=1", got)
	}
	other := &request{key: "h/y", maxAge: 7 * time.Second, hasMaxAge: true}
	if got := n.fillCacheControl(other); got != "max-age=7" {
		t.Errorf("another URL, asked for 7 s: %q, want max-age=7", got)
	}
}

// TestJoinAfterPurgeRefills: a request that joins a fill which began before a purge (or an
// unsafe request's invalidation) gets the answer after the purge, not the fill's: the store
// keeps that answer out (purge rule 2), and so must the requests that joined its flight.
// Found by a review helper: the joiner got v1 with "stored; collapsed".
func TestJoinAfterPurgeRefills(t *testing.T) {
	for _, hard := range []bool{false, true} {
		t.Run(map[bool]string{false: "POST", true: "hard purge"}[hard], func(t *testing.T) {
			var version atomic.Int64
			version.Store(1)
			release := make(chan struct{})
			held := make(chan struct{}, 1)
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost {
					version.Add(1)
					w.WriteHeader(http.StatusNoContent)
					return
				}
				v := version.Load()
				if v == 1 {
					held <- struct{}{}
					<-release
				}
				w.Header().Set("Cache-Control", "max-age=600")
				fmt.Fprintf(w, "v%d", v)
			}))
			n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{}
			t.Cleanup(c.CloseIdleConnections)
			first := make(chan error, 1)
			go func() { _, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/x"); first <- err }()
			<-held // the fill of v1 is at the origin
			if hard {
				version.Add(1)
				n.store.Purge(store.Record{Kind: store.URL, Host: testHost, Value: n.key("/x")})
			} else if r := do(t, c, http.MethodPost, n.Addr(), testHost, "/x"); r.status != http.StatusNoContent {
				t.Fatalf("POST: %d", r.status)
			}
			var second resp
			done := make(chan error, 1)
			go func() {
				var err error
				second, err = tryDo(c, http.MethodGet, n.Addr(), testHost, "/x")
				done <- err
			}()
			wait.For(t, 5*time.Second, "the second GET to join the fill", func() bool {
				buf := make([]byte, 1<<20)
				// The first GET's collapse runs its fill; the second's waits for it.
				return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*filler).collapse(") >= 2
			})
			close(release)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if second.body != "v2" {
				t.Errorf("the GET after the purge got %q (Cache-Status %q), want v2", second.body, second.header.Get("Cache-Status"))
			}
		})
	}
}

// TestGroupInvalidationUnsafeOnly: Cache-Group-Invalidation acts on the answer to an unsafe
// request that succeeded (2xx or 3xx), as the URLs of RFC 9111 §4.4 do, and is ignored on
// the answer to a safe method that was passed (a GET or HEAD with a cookie under cookies:
// pass, an OPTIONS), as RFC 9875 §3 requires. Such an answer emptied the groups it named:
// any URL whose answer carried the field, fetched with a cookie, purged them.
func TestGroupInvalidationUnsafeOnly(t *testing.T) {
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path == "/item" {
			w.Header().Set("Cache-Control", "max-age=600")
			w.Header().Set("Cache-Groups", fmt.Sprintf("%q", q.Get("g")))
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Cache-Group-Invalidation", fmt.Sprintf("%q", q.Get("g")))
		if q.Get("s") == "403" {
			w.WriteHeader(http.StatusForbidden)
		}
	}, func(h *wire.HostConfig) { h.Cookies = wire.CookiesPass }, nil)
	for i, tt := range []struct {
		method, status string
		cookie         bool
		invalidates    bool
	}{
		{http.MethodGet, "200", true, false},
		{http.MethodHead, "200", true, false},
		{http.MethodOptions, "200", false, false},
		{http.MethodPost, "403", false, false},
		{http.MethodPost, "200", false, true},
		{http.MethodDelete, "200", false, true},
		{"LINK", "200", false, true}, // a method whose safety the edge does not know
	} {
		t.Run(fmt.Sprintf("%s %s", tt.method, tt.status), func(t *testing.T) {
			item := fmt.Sprintf("/item?g=g%d", i)
			do(t, c, http.MethodGet, n.Addr(), testHost, item)
			wantCacheStatus(t, do(t, c, http.MethodGet, n.Addr(), testHost, item), "hit")
			var hdr []string
			if tt.cookie {
				hdr = []string{"Cookie", "session=1"}
			}
			r := do(t, c, tt.method, n.Addr(), testHost, fmt.Sprintf("/api?g=g%d&s=%s", i, tt.status), hdr...)
			if fmt.Sprint(r.status) != tt.status {
				t.Fatalf("%s = %d, want %s", tt.method, r.status, tt.status)
			}
			want := "hit"
			if tt.invalidates {
				want = "fwd=miss"
			}
			wantCacheStatus(t, do(t, c, http.MethodGet, n.Addr(), testHost, item), want)
		})
	}
}
