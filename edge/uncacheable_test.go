package edge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/store"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestUncacheableNotCollapsedAgain: clients collapsed on a fill whose answer turns out not
// storable each get an answer of their own (a fetch each, never the first client's); and once
// the edge has seen the key answered so, later requests for it are not queued behind one
// another's fill (Varnish's hit-for-miss): each goes upstream at once, and the first answer
// that may be stored is. Before, every request
// that arrived during a fill of such a key waited for that fill's head and only then asked
// the origin itself, so each wave of clients took two origin round trips, one after the other.
func TestUncacheableNotCollapsedAgain(t *testing.T) {
	const clients = 3
	for _, tc := range []struct {
		name   string
		header [2]string
	}{
		{"private", [2]string{"Cache-Control", "private, max-age=60"}},
		{"no-store", [2]string{"Cache-Control", "no-store, max-age=60"}},
		{"set-cookie", [2]string{"Set-Cookie", "sid=1"}},
		{"vary star", [2]string{"Vary", "*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			var cacheable atomic.Bool // the origin's answers may be stored from now on
			// The origin holds the first request (the others collapse on it meanwhile) and the
			// first of the second wave, until each gate is closed.
			first, second := make(chan struct{}), make(chan struct{})
			gates := map[int32]chan struct{}{1: first, clients + 1: second}
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if g, ok := gates[requests.Add(1)]; ok {
					<-g
				}
				w.Header().Set("Cache-Control", "max-age=60")
				if !cacheable.Load() {
					w.Header()[tc.header[0]] = []string{tc.header[1]}
				}
				fmt.Fprintf(w, "for %s", r.Header.Get("X-Client"))
			}))
			var openSecond sync.Once
			t.Cleanup(func() { openSecond.Do(func() { close(second) }) }) // before the origin stops
			n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
			t.Cleanup(c.CloseIdleConnections)

			for i, r := range collapsedClients(t, c, n, "/u", clients, &requests, first, nil) {
				if want := fmt.Sprint("for ", i); r.status != http.StatusOK || r.body != want {
					t.Errorf("collapsed client %d: %d %q, want 200 %q (its own answer)", i, r.status, r.body, want)
				}
			}
			if got := requests.Load(); got != clients {
				t.Fatalf("origin requests for %d collapsed clients = %d, want %d (one each)", clients, got, clients)
			}

			// The second wave: one client's fill is held at the origin; another's must reach
			// the origin meanwhile, not wait for it.
			errs := make(chan error, 2)
			got := make([]resp, 2)
			for i := range got {
				go func() {
					var err error
					got[i], err = tryDo(c, http.MethodGet, n.Addr(), testHost, "/u", "X-Client", fmt.Sprint("w", i))
					errs <- err
				}()
				if i == 0 {
					wait.For(t, 5*time.Second, "the held request at the origin", func() bool { return requests.Load() == clients+1 })
				}
			}
			wait.For(t, 5*time.Second, "the second request at the origin while the first is held", func() bool {
				return requests.Load() == clients+2
			})
			openSecond.Do(func() { close(second) })
			for range got {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			for i, r := range got {
				if want := fmt.Sprint("for w", i); r.status != http.StatusOK || r.body != want {
					t.Errorf("second wave client %d: %d %q, want 200 %q", i, r.status, r.body, want)
				}
			}

			// Hit-for-miss, not hit-for-pass: once the answer may be stored, it is, and served.
			cacheable.Store(true)
			do(t, c, http.MethodGet, n.Addr(), testHost, "/u", "X-Client", "s")
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/u", "X-Client", "h")
			wantCacheStatus(t, r, "; hit")
			if r.body != "for s" {
				t.Errorf("after the origin's answer became cacheable: body %q, want the stored %q", r.body, "for s")
			}
		})
	}
}

// TestUncacheableMarks: a mark lasts uncacheableFor, ends with an answer that may be shared,
// is not set by a failure the clients of a fill share, and at most uncacheableCap are kept.
func TestUncacheableMarks(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name  string
		res   fillResult
		after time.Duration
		want  bool
	}{
		{"not shareable", fillResult{}, 0, true},
		{"not shareable, expired", fillResult{}, uncacheableFor, false},
		{"one user's 5xx", fillResult{err: &statusError{status: 503}, personal: true}, 0, true},
		{"shared 5xx", fillResult{err: &statusError{status: 503}}, 0, false},
		{"shareable", fillResult{shareable: true}, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var u uncacheable
			u.note("k", none, &tt.res, now)
			if got := u.has("k", none, now.Add(tt.after)); got != tt.want {
				t.Errorf("has after %v = %v, want %v", tt.after, got, tt.want)
			}
		})
	}
	var u uncacheable
	u.note("k", none, &fillResult{}, now)
	u.note("k", none, &fillResult{shareable: true}, now)
	if u.has("k", none, now) {
		t.Error("a shareable answer did not end the mark")
	}
	for _, shared := range []fillResult{
		{err: &statusError{status: 503}},
		{err: errors.New("dial tcp: connection refused")},
	} {
		u.note("k", none, &fillResult{}, now)
		u.note("k", none, &shared, now)
		if u.has("k", none, now) {
			t.Errorf("a failure the clients share (%v) did not end the mark", shared.err)
		}
	}
	for i := range uncacheableCap + 10 {
		u.note(fmt.Sprint(i), none, &fillResult{}, now)
	}
	if got := u.n.Load(); got != uncacheableCap {
		t.Errorf("marks kept = %d, want %d", got, uncacheableCap)
	}
	if !u.has(fmt.Sprint(uncacheableCap+9), none, now) {
		t.Error("the newest mark was not kept")
	}
}

// none is a request without header fields: every Vary selects its one variant.
var none = store.ClientHeader(nil)

// TestUncacheableMarksByVariant: a mark is the variant's whose answer could not be shared,
// under that answer's Vary; an answer without Vary or with Vary: * marks every variant; an
// answer that may be shared ends its own variant's mark only, a failure the clients share
// every mark of the key; a key keeps at most store.MaxVariants marks.
func TestUncacheableMarksByVariant(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	lang := func(l string) store.VaryHeader { return store.ClientHeader{"Accept-Language": {l}} }
	byLang := []string{"accept-language"}
	// unshared is an answer that may not be shared, of Vary vary.
	unshared := func(vary []string) fillResult { return fillResult{unshared: &unsharedVariant{vary: vary}} }
	type noted struct {
		lang string
		res  fillResult
	}
	for _, tt := range []struct {
		name   string
		notes  []noted
		marked []string // of en, de, fr
	}{
		{"private de", []noted{{"de", unshared(byLang)}}, []string{"de"}},
		{"private de, fr", []noted{{"de", unshared(byLang)}, {"fr", unshared(byLang)}}, []string{"de", "fr"}},
		{"without vary", []noted{{"de", fillResult{}}}, []string{"en", "de", "fr"}},
		{"vary star", []noted{{"de", fillResult{unshared: &unsharedVariant{all: true}}}}, []string{"en", "de", "fr"}},
		{"vary too long", []noted{{"de", unshared([]string{strings.Repeat("x", maxMarkVary+1)})}}, []string{"en", "de", "fr"}},
		{"one user's 5xx", []noted{{"de", fillResult{unshared: &unsharedVariant{vary: byLang}, err: &statusError{status: 503}, personal: true}}}, []string{"de"}},
		{"shared en leaves de", []noted{{"de", unshared(byLang)}, {"en", fillResult{shareable: true}}}, []string{"de"}},
		{"shared de ends de", []noted{{"de", unshared(byLang)}, {"fr", unshared(byLang)}, {"de", fillResult{shareable: true}}}, []string{"fr"}},
		{"shared failure ends all", []noted{{"de", unshared(byLang)}, {"fr", unshared(byLang)}, {"en", fillResult{err: &statusError{status: 503}}}}, nil},
		{"another vary replaces", []noted{{"de", unshared(byLang)}, {"fr", unshared([]string{"accept-encoding"})}}, []string{"en", "de", "fr"}},
		{"without vary, then by language", []noted{{"de", fillResult{}}, {"fr", unshared(byLang)}}, []string{"fr"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var u uncacheable
			for _, n := range tt.notes {
				u.note("k", lang(n.lang), &n.res, now)
			}
			for _, l := range []string{"en", "de", "fr"} {
				if got, want := u.has("k", lang(l), now), slices.Contains(tt.marked, l); got != want {
					t.Errorf("has(%s) = %v, want %v", l, got, want)
				}
			}
			want := int32(len(tt.marked))
			if want == 3 {
				want = 1 // the key's, for every variant
			}
			if got := u.n.Load(); got != want {
				t.Errorf("marks counted = %d, want %d", got, want)
			}
		})
	}
	var u uncacheable
	private := unshared(byLang)
	for i := range store.MaxVariants + 5 {
		u.note("k", lang(strconv.Itoa(i)), &private, now.Add(time.Duration(i)*time.Second))
	}
	if got := u.n.Load(); got != store.MaxVariants {
		t.Errorf("marks of one key = %d, want %d", got, store.MaxVariants)
	}
	if u.has("k", lang("0"), now) || !u.has("k", lang(strconv.Itoa(store.MaxVariants+4)), now) {
		t.Error("a key's mark that ends first did not make room for its newest")
	}
}

// TestUncacheableMarksHoldNoKeys: a mark keeps a hash of its key, not the key: the URLs are
// the clients' (up to the request head's bound), and a host whose origin sets a cookie on
// every answer lets any client mark as many as it likes, up to uncacheableCap. Holding the
// keys, 4,096 marks of 16 KiB URLs kept 64 MiB beyond the store's bound.
func TestUncacheableMarksHoldNoKeys(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	var u uncacheable
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	long := strings.Repeat("/x", 8<<10)
	for i := range uncacheableCap {
		u.note(long+strconv.Itoa(i), none, &fillResult{}, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Errorf("%d marks of 16 KiB keys hold %d MiB of heap, want well under 64", uncacheableCap, grew>>20)
	}
	if !u.has(long+"0", none, now) || u.has(long, none, now) {
		t.Error("a mark is not found by its key, or is found by another")
	}
}

// TestUncacheableMarkEndsWithSharedError: an upstream failure that the clients of a fill
// share (a 5xx that is no one user's, a connection failure) ends a key's hit-for-miss mark, so
// that during an origin outage the key's misses collapse again onto one fill and share its
// error, as those of an unmarked key do. Before, a key marked by one answer that could not be
// shared (a Set-Cookie, or one user's 5xx) kept its mark through the outage: for 2 minutes
// every client went upstream in a flight of its own, each to the failing origin at once.
func TestUncacheableMarkEndsWithSharedError(t *testing.T) {
	const clients = 3
	for _, tc := range []struct {
		name   string
		status int // the answer that marks the key, with a cookie
	}{
		{"set-cookie 200", http.StatusOK},
		{"one user's 503", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var outage atomic.Bool   // the origin answers a plain 503 from now on
			var wave atomic.Int32    // requests of the last wave
			var counting atomic.Bool // the last wave has begun
			gate, done := make(chan struct{}), make(chan struct{})
			addr := startHTTP(t, "127.0.0.12", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !outage.Load() {
					w.Header().Set("Set-Cookie", "sid=1")
					w.WriteHeader(tc.status)
					return
				}
				if counting.Load() && wave.Add(1) == 1 {
					select { // held until the others have joined its fill
					case <-gate:
					case <-done:
					}
				}
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			t.Cleanup(func() { close(done) }) // before the origin stops
			n, _ := startEdge(t, listen(t, "127.0.0.13"), Config{PoP: "tst", Node: "e1",
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
			t.Cleanup(c.CloseIdleConnections)

			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/u"); r.status != tc.status {
				t.Fatalf("marking answer: %d, want %d", r.status, tc.status)
			}
			outage.Store(true)
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/u"); r.status != http.StatusServiceUnavailable {
				t.Fatalf("first answer of the outage: %d, want 503", r.status)
			}
			counting.Store(true)
			for i, r := range collapsedClients(t, c, n, "/u", clients, &wave, gate, nil) {
				if r.status != http.StatusServiceUnavailable {
					t.Errorf("client %d: %d, want the shared 503", i, r.status)
				}
			}
			if got := wave.Load(); got != 1 {
				t.Errorf("origin requests for %d clients of a failing key = %d, want 1 (collapsed)", clients, got)
			}
		})
	}
}

// TestUncacheableMarkIsPerVariant: a hit-for-miss mark is the variant's whose answer could not
// be shared, as Varnish's hit-for-miss object carries its Vary: the URL's other variants'
// misses still collapse onto one fill (one language's answer sets a cookie or is private, the
// br variant is private; the others are public). Before, the mark was the URL's: one
// variant's private answer sent every variant's misses to the origin each in a flight of its
// own, until an answer was stored.
func TestUncacheableMarkIsPerVariant(t *testing.T) {
	const clients = 3
	for _, tc := range []struct {
		name            string
		field           string // the Vary
		private, shared string // its values
		status          int    // the private variant's answer, with header
		header          []string
	}{
		{"private", "Accept-Language", "de", "en", http.StatusOK, []string{"Cache-Control", "private, max-age=60"}},
		{"set-cookie", "Accept-Language", "de", "en", http.StatusOK, []string{"Cache-Control", "max-age=60", "Set-Cookie", "sid=1"}},
		{"one user's 503", "Accept-Language", "de", "en", http.StatusServiceUnavailable, []string{"Set-Cookie", "sid=1"}},
		{"br private", "Accept-Encoding", "br", "gzip", http.StatusOK, []string{"Cache-Control", "private, max-age=60", "Content-Encoding", "br"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var shared atomic.Int32 // origin requests for the shared variant
			gate, done := make(chan struct{}), make(chan struct{})
			addr := startHTTP(t, "127.0.0.85", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Vary", tc.field)
				w.Header().Set("Content-Type", "application/octet-stream") // not compressed by the edge
				if r.Header.Get(tc.field) == tc.private {
					for i := 0; i+1 < len(tc.header); i += 2 {
						w.Header().Set(tc.header[i], tc.header[i+1])
					}
					w.WriteHeader(tc.status)
					fmt.Fprint(w, "own")
					return
				}
				if shared.Add(1) == 1 {
					select { // held until the others have joined its fill
					case <-gate:
					case <-done:
					}
				}
				w.Header().Set("Cache-Control", "max-age=60")
				fmt.Fprint(w, "shared")
			}))
			t.Cleanup(func() { close(done) }) // before the origin stops
			n, _ := startEdge(t, listen(t, "127.0.0.86"), Config{PoP: "tst", Node: "e1",
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}}
			t.Cleanup(c.CloseIdleConnections)

			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/u", tc.field, tc.private); r.status != tc.status || r.body != "own" {
				t.Fatalf("the %s variant: %d %q, want %d %q", tc.private, r.status, r.body, tc.status, "own")
			}
			more := func(int) []string { return []string{tc.field, tc.shared} }
			for i, r := range collapsedClients(t, c, n, "/u", clients, &shared, gate, more) {
				if r.status != http.StatusOK || r.body != "shared" {
					t.Errorf("client %d of the %s variant: %d %q, want 200 %q", i, tc.shared, r.status, r.body, "shared")
				}
			}
			if got := shared.Load(); got != 1 {
				t.Errorf("origin requests for %d clients of the %s variant = %d, want 1 (collapsed)", clients, tc.shared, got)
			}
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/u", tc.field, tc.shared)
			wantCacheStatus(t, r, "; hit")
		})
	}
}

// TestUnsharedAnswerOfAnotherVariantRecollapses: the clients that waited for a fill whose
// answer may not be shared, and is of another Vary variant than theirs (one language's private
// answer), fill their own variant collapsed, as they do when the answer may be shared: one
// origin request for all of them. Before, each fetched its own, as if the answer were theirs.
func TestUnsharedAnswerOfAnotherVariantRecollapses(t *testing.T) {
	const clients = 3
	var de, en atomic.Int32 // origin requests per variant
	deGate, enGate, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	hold := func(g chan struct{}) {
		select {
		case <-g:
		case <-done:
		}
	}
	addr := startHTTP(t, "127.0.0.87", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Language")
		if r.Header.Get("Accept-Language") == "de" {
			if de.Add(1) == 1 {
				hold(deGate)
			}
			w.Header().Set("Cache-Control", "private, max-age=60")
			fmt.Fprint(w, "own de")
			return
		}
		if en.Add(1) == 1 {
			hold(enGate)
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "shared en")
	}))
	t.Cleanup(func() { close(done) }) // before the origin stops
	n, _ := startEdge(t, listen(t, "127.0.0.88"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients + 1}}
	t.Cleanup(c.CloseIdleConnections)
	collapsing := func() int {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*filler).collapse(")
	}

	errs := make(chan error, clients+1)
	got := make([]resp, clients+1) // the de client's, then the en clients'
	get := func(i int, lang string) {
		var err error
		got[i], err = tryDo(c, http.MethodGet, n.Addr(), testHost, "/u", "Accept-Language", lang)
		errs <- err
	}
	go get(0, "de")
	wait.For(t, 5*time.Second, "the de fill at the origin", func() bool { return de.Load() == 1 })
	for i := 1; i <= clients; i++ {
		go get(i, "en")
	}
	wait.For(t, 5*time.Second, "the en clients to wait for the de fill", func() bool { return collapsing() >= clients+1 })
	close(deGate)
	// Each en client waits for its variant's fill, in a collapse within the first.
	wait.For(t, 5*time.Second, "one en fill at the origin, every en client waiting for it", func() bool {
		return en.Load() == 1 && collapsing() >= 2*clients
	})
	close(enGate)
	for range got {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got[0].body != "own de" {
		t.Errorf("de client: %d %q, want %q", got[0].status, got[0].body, "own de")
	}
	for i, r := range got[1:] {
		if r.status != http.StatusOK || r.body != "shared en" {
			t.Errorf("en client %d: %d %q, want 200 %q", i, r.status, r.body, "shared en")
		}
	}
	if got := en.Load(); got != 1 {
		t.Errorf("origin requests for %d en clients = %d, want 1", clients, got)
	}
}

// TestMarkedKeyStreamReadAlong: a client that asks for a key marked uncacheable while the
// first answer that may be stored still streams its body (from the fill of one client, in a
// flight of its own) reads along that body, as it would that of any fill of the key: the
// answer ended the mark as its header came. Before, the body was readable only under the
// fill's own flight, which no one joins: the client started one more fetch.
func TestMarkedKeyStreamReadAlong(t *testing.T) {
	o := newReadAlongOrigin()
	var openGates sync.Once
	release := func() { // every fill held at the origin, v1's and any other's
		openGates.Do(func() {
			for _, g := range o.gates {
				close(g)
			}
		})
	}
	defer release()
	var cacheable atomic.Bool // the origin's answers may be stored from now on
	addr := startHTTP(t, "127.0.0.89", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cacheable.Load() {
			w.Header().Set("Cache-Control", "max-age=600")
			w.Header().Set("Set-Cookie", "sid=1")
			fmt.Fprint(w, "own")
			return
		}
		o.ServeHTTP(w, r)
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.90"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)

	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/m"); r.body != "own" {
		t.Fatalf("marking GET: %d %q", r.status, r.body)
	}
	cacheable.Store(true)
	first, head := openStream(t, c, n.Addr(), "/m") // v1 streams, held at the origin
	if head != "v1" {
		t.Fatalf("first GET once the answer may be stored: %q, want v1", head)
	}
	second, secondHead := openStream(t, c, n.Addr(), "/m")
	if secondHead != "v1" {
		t.Errorf("GET while v1 streams: %q (Cache-Status %q), want v1 read along", secondHead, second.Header.Get("Cache-Status"))
	}
	release()
	for i, r := range []struct {
		resp *http.Response
		head string
	}{{first, head}, {second, secondHead}} {
		rest, err := io.ReadAll(r.resp.Body)
		if err != nil {
			t.Fatalf("GET %d: %v", i+1, err)
		}
		if r.head+string(rest) != readAlongBody(1) {
			t.Errorf("GET %d: body of %d bytes is not v1's", i+1, len(rest)+2)
		}
	}
	if got := o.count.Load(); got != 1 {
		t.Errorf("origin requests once the answer may be stored = %d, want 1", got)
	}
}

// TestUncacheableExpiredMarksOfOtherVariantsGo: a key's marks that have run out go when the
// key's misses look at its marks, whichever variant asks, and the count the miss path reads
// without the lock returns to 0. Before, one language's ended mark stayed counted while only
// other languages were asked (the key's mark as a whole went at the first look after its end):
// every miss of every key on the node took the marks' lock until the cap's eviction.
func TestUncacheableExpiredMarksOfOtherVariantsGo(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	lang := func(l string) store.VaryHeader { return store.ClientHeader{"Accept-Language": {l}} }
	private := fillResult{unshared: &unsharedVariant{vary: []string{"accept-language"}}}
	var u uncacheable
	u.note("k", lang("de"), &private, now)
	u.note("k", lang("fr"), &private, now.Add(time.Minute))
	if u.has("k", lang("en"), now.Add(uncacheableFor)) {
		t.Fatal("has(en) = true, want false: en was never marked")
	}
	if got := u.n.Load(); got != 1 {
		t.Errorf("marks counted once de's ended = %d, want 1 (fr's)", got)
	}
	if u.has("k", lang("en"), now.Add(time.Minute+uncacheableFor)); u.n.Load() != 0 {
		t.Errorf("marks counted once every one ended = %d, want 0", u.n.Load())
	}
}

// TestMarkedVariantStreamLeavesAnothersReadAlong: the fill of a marked variant, in a flight
// of its own, whose answer may be stored is read along under the key's flight only if no
// other fill's body is readable there already: a client of another variant that asks while
// its own variant's body still streams reads along that one. Before, the marked variant's
// fill took the key's place from the stream already there, and such a client found the other
// variant's body there and fetched its own again.
func TestMarkedVariantStreamLeavesAnothersReadAlong(t *testing.T) {
	var cacheable atomic.Bool // de's answers may be stored from now on
	var fetches sync.Map      // origin requests per language: *atomic.Int32
	done := make(chan struct{})
	addr := startHTTP(t, "127.0.0.91", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l := r.Header.Get("Accept-Language")
		c, _ := fetches.LoadOrStore(l, new(atomic.Int32))
		c.(*atomic.Int32).Add(1)
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Content-Type", "application/octet-stream") // not compressed by the edge
		if l == "de" && !cacheable.Load() {
			w.Header().Set("Cache-Control", "private, max-age=600")
			fmt.Fprint(w, "own")
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprintf(w, "%s:%s", l, strings.Repeat("a", 1<<10))
		w.(http.Flusher).Flush()
		select { // the rest once the test has seen what it needs
		case <-done:
		case <-r.Context().Done():
			return
		}
		w.Write(bytes.Repeat([]byte("b"), 255<<10))
	}))
	var closeOnce sync.Once
	release := func() { closeOnce.Do(func() { close(done) }) }
	t.Cleanup(release) // before the origin stops
	n, _ := startEdge(t, listen(t, "127.0.0.92"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	open := func(lang string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+n.Addr()+"/v", nil)
		req.Host = testHost
		req.Header.Set("Accept-Language", lang)
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Body.Close() })
		head := make([]byte, 3)
		if _, err := io.ReadFull(r.Body, head); err != nil || string(head) != lang+":" {
			t.Fatalf("GET of %s: first bytes %q, %v; want %q", lang, head, err, lang+":")
		}
		return r
	}
	count := func(lang string) int32 {
		if c, ok := fetches.Load(lang); ok {
			return c.(*atomic.Int32).Load()
		}
		return 0
	}

	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/v", "Accept-Language", "de"); r.body != "own" {
		t.Fatalf("marking GET of de: %d %q", r.status, r.body)
	}
	cacheable.Store(true)
	first := open("en") // en's body streams, held at the origin
	de := open("de")    // de's too, from a fill of its own: de is marked
	second := open("en")
	if got := count("en"); got != 1 {
		t.Errorf("origin requests for en while its body streams = %d, want 1 (read along)", got)
	}
	release()
	for i, r := range []*http.Response{first, de, second} {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			t.Errorf("GET %d: %v", i+1, err)
		}
	}
}
