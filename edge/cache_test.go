package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

func obj(path string, params ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		v.Set(params[i], params[i+1])
	}
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}

func wantCacheStatus(t *testing.T, r resp, parts ...string) {
	t.Helper()
	cs := r.header.Get("Cache-Status")
	for _, p := range parts {
		if !strings.Contains(cs, p) {
			t.Errorf("Cache-Status = %q, want it to contain %q", cs, p)
		}
	}
}

func TestHitAfterMiss(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/a", "cc", "max-age=60", "size", "100")
	r1 := s.get(t, p)
	if r1.status != 200 || len(r1.body) != 100 || !strings.HasPrefix(r1.body, "/a@v") {
		t.Fatalf("first GET = %d %q", r1.status, r1.body)
	}
	wantCacheStatus(t, r1, "tst-e1; fwd=miss", "fwd-status=200", "stored", "detail=origin")
	r2 := s.get(t, p)
	wantCacheStatus(t, r2, "tst-e1; hit", "ttl=60")
	if r2.body != r1.body {
		t.Errorf("hit body differs from miss body")
	}
	if got := s.origin.Requests("/a"); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
	s.clock.Advance(10 * time.Second)
	r3 := s.get(t, p)
	if got := r3.header.Get("Age"); got != "10" {
		t.Errorf("Age after 10s = %q, want 10", got)
	}
	wantCacheStatus(t, r3, "hit", "ttl=50")
	if via := r3.header.Get("Via"); !strings.Contains(via, "tst-e1") {
		t.Errorf("Via = %q, want it to name the node", via)
	}
}

// TestFreshnessEndToEnd checks each caching decision through a real origin: how many origin
// requests three GETs cause, and what the third one's Cache-Status says.
func TestFreshnessEndToEnd(t *testing.T) {
	tests := []struct {
		name      string
		params    []string
		hdr       []string
		advance   time.Duration // between the second and third request
		wantHits  int64         // origin requests after three GETs
		wantThird string
	}{
		{"max-age fresh", []string{"cc", "max-age=60"}, nil, 30 * time.Second, 1, "hit"},
		{"max-age expired revalidates with 304", []string{"cc", "max-age=60"}, nil, 61 * time.Second, 2, "fwd=stale; fwd-status=304"},
		{"s-maxage wins over max-age", []string{"cc", "max-age=1, s-maxage=100"}, nil, 50 * time.Second, 1, "hit"},
		{"CDN-Cache-Control wins", []string{"cc", "max-age=600", "cdncc", "max-age=10"}, nil, 11 * time.Second, 2, "fwd=stale"},
		{"Surrogate-Control wins over Cache-Control", []string{"cc", "no-store", "sc", "max-age=100"}, nil, 50 * time.Second, 1, "hit"},
		{"Expires", []string{"expires", "100"}, nil, 50 * time.Second, 1, "hit"},
		{"no-store never stored", []string{"cc", "no-store"}, nil, 0, 3, "fwd=miss"},
		{"private never stored", []string{"cc", "private, max-age=60"}, nil, 0, 3, "fwd=miss"},
		{"no-cache revalidates every time", []string{"cc", "no-cache, max-age=60"}, nil, 0, 3, "fwd-status=304"},
		{"heuristic from Last-Modified", []string{"lm", "1000"}, nil, 50 * time.Second, 1, "hit"},
		{"heuristic expires at 10 percent", []string{"lm", "1000"}, nil, 101 * time.Second, 2, "fwd=stale"},
		{"zero heuristic lifetime revalidates", []string{"lm", "0"}, nil, 0, 3, "fwd-status=304"},
		// Invalid freshness is stale (RFC 9111 §4.2.1), not absent: no heuristic lifetime either.
		{"negative max-age not heuristic", []string{"cc", "max-age=-1", "lm", "1000"}, nil, 0, 3, "fwd=miss"},
		{"invalid s-maxage not heuristic", []string{"cc", "s-maxage=10m", "lm", "1000"}, nil, 0, 3, "fwd=miss"},
		{"404 with max-age cached", []string{"cc", "max-age=60", "status", "404"}, nil, 0, 1, "hit"},
		{"unknown status with max-age cached", []string{"cc", "max-age=60", "status", "299"}, nil, 0, 1, "hit"},
		{"unknown status with must-understand not stored", []string{"cc", "max-age=60, must-understand", "status", "299"}, nil, 0, 3, "fwd=miss"},
		{"no-store with must-understand cached", []string{"cc", "max-age=60, no-store, must-understand"}, nil, 0, 1, "hit"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, nil)
			path := fmt.Sprintf("/f%d", i)
			p := obj(path, tt.params...)
			s.get(t, p, tt.hdr...)
			s.get(t, p, tt.hdr...)
			s.clock.Advance(tt.advance)
			r := s.get(t, p, tt.hdr...)
			if r.status >= 500 {
				t.Fatalf("third GET status %d", r.status)
			}
			if got := s.origin.Requests(path); got != tt.wantHits {
				t.Errorf("origin requests = %d, want %d", got, tt.wantHits)
			}
			wantCacheStatus(t, r, tt.wantThird)
		})
	}
}

func TestVaryVariants(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/v", "cc", "max-age=60", "vary", "Accept-Language")
	en := s.get(t, p, "Accept-Language", "en")
	fr := s.get(t, p, "Accept-Language", "fr")
	if en.body == fr.body {
		t.Fatalf("en and fr variants have the same body %q", en.body[:20])
	}
	en2 := s.get(t, p, "Accept-Language", "en")
	fr2 := s.get(t, p, "Accept-Language", "fr")
	wantCacheStatus(t, en2, "hit")
	wantCacheStatus(t, fr2, "hit")
	if en2.body != en.body || fr2.body != fr.body {
		t.Errorf("variant bodies got mixed up")
	}
	if got := s.origin.Requests("/v"); got != 2 {
		t.Errorf("origin requests = %d, want 2 (one per variant)", got)
	}
	de := s.get(t, p, "Accept-Language", "de")
	wantCacheStatus(t, de, "fwd=vary-miss")
}

func TestRangeHeadAndConditionalsFromCache(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/r", "cc", "max-age=60", "size", "1000")
	head := do(t, s.client, http.MethodHead, s.edge.Addr(), testHost, p)
	if head.status != 200 || head.body != "" || head.header.Get("Content-Length") != "1000" {
		t.Fatalf("HEAD = %d, body %d bytes, Content-Length %q", head.status, len(head.body), head.header.Get("Content-Length"))
	}
	full := s.get(t, p)
	wantCacheStatus(t, full, "hit")
	rg := s.get(t, p, "Range", "bytes=10-19")
	if rg.status != http.StatusPartialContent || rg.body != full.body[10:20] {
		t.Errorf("Range = %d %q, want 206 %q", rg.status, rg.body, full.body[10:20])
	}
	if cr := rg.header.Get("Content-Range"); cr != "bytes 10-19/1000" {
		t.Errorf("Content-Range = %q", cr)
	}
	etag := full.header.Get("ETag")
	inm := s.get(t, p, "If-None-Match", etag)
	if inm.status != http.StatusNotModified {
		t.Errorf("If-None-Match %s = %d, want 304", etag, inm.status)
	}
	// A date in the future is ignored (TestConditionalDates); the object's own is not.
	ims := s.get(t, p, "If-Modified-Since", full.header.Get("Last-Modified"))
	if ims.status != http.StatusNotModified {
		t.Errorf("If-Modified-Since %q = %d, want 304", full.header.Get("Last-Modified"), ims.status)
	}
	if got := s.origin.Requests("/r"); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/swr", "cc", "max-age=10, stale-while-revalidate=60")
	s.get(t, p)
	s.clock.Advance(20 * time.Second)
	r := s.get(t, p)
	wantCacheStatus(t, r, "; hit; ttl=-10;", "detail=stale-while-revalidate")
	if cs := r.header.Get("Cache-Status"); strings.Contains(cs, "fwd=") {
		t.Errorf("Cache-Status %q: a stale hit was not forwarded, so it carries no fwd (RFC 9211)", cs)
	}
	wait.For(t, 5*time.Second, "background revalidation", func() bool { return s.origin.Requests("/swr") == 2 })
	wait.For(t, 5*time.Second, "refreshed object", func() bool {
		return strings.Contains(s.get(t, p).header.Get("Cache-Status"), "; hit; ttl=")
	})
}

func TestStaleIfError(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/sie", "cc", "max-age=10, stale-if-error=60")
	first := s.get(t, p)
	s.origin.SetFault("", origin.Fault{Status: 503})
	s.clock.Advance(20 * time.Second)
	r := s.get(t, p)
	if r.status != 200 || r.body != first.body {
		t.Fatalf("stale-if-error = %d, want 200 with the stored body", r.status)
	}
	wantCacheStatus(t, r, "fwd=stale", "fwd-status=503", "detail=stale-if-error")
	s.clock.Advance(60 * time.Second)
	r = s.get(t, p)
	if r.status != 503 {
		t.Errorf("past the stale-if-error window = %d, want the origin's 503", r.status)
	}
}

func TestMustRevalidateNeverServesStale(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/mr", "cc", "max-age=10, must-revalidate, stale-if-error=60")
	s.get(t, p)
	s.origin.SetFault("", origin.Fault{Drop: true})
	s.clock.Advance(20 * time.Second)
	r := s.get(t, p)
	if r.status != http.StatusBadGateway {
		t.Errorf("must-revalidate with origin down = %d, want 502", r.status)
	}
}

func TestCollapsing(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/hot", "cc", "max-age=60", "delay", "300ms", "size", "2048")
	const n = 500
	var wg sync.WaitGroup
	bodies := make([]string, n)
	statuses := make([]int, n)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}}
	defer client.CloseIdleConnections()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, "http://"+s.edge.Addr()+p, nil)
			req.Host = testHost
			r, err := client.Do(req)
			if err != nil {
				return
			}
			defer r.Body.Close()
			var b strings.Builder
			if _, err := fmt.Fprint(&b, readAll(r)); err == nil {
				bodies[i], statuses[i] = b.String(), r.StatusCode
			}
		}()
	}
	wg.Wait()
	want := string(origin.Body("/hot", 1, 2048))
	for i := range n {
		if statuses[i] != 200 || bodies[i] != want {
			t.Fatalf("request %d: status %d, body ok %v", i, statuses[i], bodies[i] == want)
		}
	}
	if got := s.origin.Requests("/hot"); got != 1 {
		t.Errorf("origin requests for %d concurrent cold requests = %d, want 1", n, got)
	}
}

func readAll(r *http.Response) string {
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// TestFailedRevalidationOutlivesHandler: stale hits on one keep-alive connection start
// background revalidations that fail (the origin drops them) after their handlers have
// returned, while the connection's next requests go on. edge/http1 reuses the client's
// request for those: under the race detector this fails if a revalidation still reads it.
func TestFailedRevalidationOutlivesHandler(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/swr-fail", "cc", "max-age=10, stale-while-revalidate=600")
	other := obj("/swr-other", "cc", "max-age=600")
	s.get(t, p)
	s.get(t, other)
	s.clock.Advance(20 * time.Second)
	s.origin.SetFault("", origin.Fault{Drop: true})
	c, err := net.Dial("tcp", s.edge.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 40 {
		path := p
		if i%2 == 1 {
			path = other
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, testHost)
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("request %d for %s = %d; want a (stale) hit", i, path, r.StatusCode)
		}
	}
	wait.For(t, 5*time.Second, "a failed revalidation", func() bool { return s.origin.Requests("/swr-fail") >= 2 })
}

// TestStoredFreshAfterLookup: a fill's second look (storedFresh) is skipped only while no Put
// of its key has completed since the request's own lookup missed; an object stored in
// between is found and served, not fetched again.
func TestStoredFreshAfterLookup(t *testing.T) {
	s := newSingle(t, nil)
	p := obj("/between", "cc", "max-age=60")
	r, _ := http.NewRequest(http.MethodGet, "http://"+testHost+p, nil)
	hs := (*s.edge.hosts.Load())[testHost]
	req := &request{r: r, host: hs, key: httpcache.Key(testHost, r.URL.EscapedPath(), r.URL.RawQuery, hs.keyOpts)}
	req.puts, req.looked = s.edge.store.Puts(req.key), true // as serveCacheable, before its lookup
	if o, _, _ := s.edge.store.Lookup(req.key, r.Header); o != nil {
		t.Fatal("stored before any request")
	}
	if o := s.edge.storedFresh(req); o != nil {
		t.Fatal("storedFresh found an object nothing stored")
	}
	if got := s.get(t, p); got.status != http.StatusOK {
		t.Fatalf("fill: status %d", got.status)
	}
	// Stored after the lookup: the count moved, so the fill looks and finds it.
	if o := s.edge.storedFresh(req); o == nil || o.Primary != req.key {
		t.Fatalf("storedFresh after a Put of the key = %v, want the stored object", o)
	}
	// With the count read after that Put (which serveCacheable never does), the look is
	// skipped: what the skip costs when the count is read too late.
	req.puts = s.edge.store.Puts(req.key)
	if o := s.edge.storedFresh(req); o != nil {
		t.Fatal("storedFresh looked although no Put completed since the count was read")
	}
	req.looked = false // a request that did not look (a fleet fill, a stale copy's) always looks
	if o := s.edge.storedFresh(req); o == nil {
		t.Fatal("storedFresh without a lookup of its own did not look")
	}
}

// TestRevalidationChangesVary: a 304 that brings another Vary than the stale copy's stores
// the refreshed copy as the request's variant under the new list, where the next request
// with the same fields finds it (it was kept under the old variant, which no lookup selects).
func TestRevalidationChangesVary(t *testing.T) {
	clock := newFakeClock()
	var mu sync.Mutex
	requests := map[string]int{} // by If-None-Match
	count := func(inm string) int {
		mu.Lock()
		defer mu.Unlock()
		return requests[inm]
	}
	originAddr := startHTTP(t, "127.0.0.26", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inm := r.Header.Get("If-None-Match")
		mu.Lock()
		requests[inm]++
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"v1"`)
		if inm == `"v1"` {
			w.Header().Set("Vary", "Accept-Language, X-Device")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Vary", "Accept-Language")
		io.WriteString(w, "object")
	}))
	cfg := Config{PoP: "tst", Node: "e1", Clock: clock.Now, Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}}
	n, _ := startEdge(t, listen(t, "127.0.0.27"), cfg)
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	get := func() resp {
		return do(t, c, http.MethodGet, n.Addr(), testHost, "/vary304", "Accept-Language", "de", "X-Device", "phone")
	}
	if r := get(); r.status != http.StatusOK || r.body != "object" {
		t.Fatalf("fill: %d %q", r.status, r.body)
	}
	clock.Advance(20 * time.Second)
	if r := get(); r.status != http.StatusOK || r.body != "object" || count(`"v1"`) != 1 {
		t.Fatalf("revalidation: %d %q after %d conditional requests, want 200 object after 1", r.status, r.body, count(`"v1"`))
	}
	r := get()
	if r.status != http.StatusOK || r.body != "object" {
		t.Fatalf("after the 304: %d %q", r.status, r.body)
	}
	wantCacheStatus(t, r, "; hit;")
	if got := count(""); got != 1 {
		t.Errorf("unconditional origin requests = %d, want 1 (the refreshed copy was not found)", got)
	}
}

// TestRevalidationKeepsFieldsOut: a Last-Modified that the origin keeps out of the stored copy
// (private="Last-Modified", RFC 9111 §5.2.2.7) stays out after a 304 refreshed the copy: no
// answer from the copy carries it (only the request that filled it gets it), and a client's
// If-Modified-Since is not compared with it.
func TestRevalidationKeepsFieldsOut(t *testing.T) {
	clock := newFakeClock()
	var conditional atomic.Int32
	originAddr := startHTTP(t, "127.0.0.28", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", `max-age=10, private="Last-Modified"`)
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT")
		if r.Header.Get("If-None-Match") == `"v1"` {
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "object")
	}))
	cfg := Config{PoP: "tst", Node: "e1", Clock: clock.Now, Logger: testLogger(t),
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}}
	n, _ := startEdge(t, listen(t, "127.0.0.29"), cfg)
	c := &http.Client{}
	t.Cleanup(c.CloseIdleConnections)
	check := func(when string) {
		t.Helper()
		for _, tt := range []struct {
			name string
			hdr  []string
			code int
		}{
			{"plain", nil, http.StatusOK},
			{"Range", []string{"Range", "bytes=0-1"}, http.StatusPartialContent},
			{"If-Modified-Since", []string{"If-Modified-Since", "Thu, 02 Jan 2020 00:00:00 GMT"}, http.StatusOK},
		} {
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/private-lm", tt.hdr...)
			if r.status != tt.code || r.header.Get("Last-Modified") != "" {
				t.Errorf("%s, %s: %d with Last-Modified %q; want %d without", when, tt.name, r.status, r.header.Get("Last-Modified"), tt.code)
			}
		}
	}
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/private-lm"); r.status != http.StatusOK || r.header.Get("Last-Modified") == "" {
		t.Fatalf("the request that filled the copy: %d with Last-Modified %q; want 200 with its own", r.status, r.header.Get("Last-Modified"))
	}
	check("stored")
	clock.Advance(20 * time.Second)
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/private-lm"); r.status != http.StatusOK || conditional.Load() != 1 {
		t.Fatalf("revalidation: %d after %d conditional requests, want 200 after 1", r.status, conditional.Load())
	}
	check("refreshed")
}

// TestQualifiedFieldsOnlyForTheirRequest: the fields a qualified private="..." or
// no-cache="..." names (RFC 9111 §5.2.2.7, §5.2.2.4) reach the client whose request fetched
// the answer, and no one else: not the clients that joined its fill (collapsed, or reading a
// streaming miss along), nor a hit of the stored copy. A body found too large to store only
// once read (compressible, no declared length) reaches each client by a fetch of its own, with
// its own fields. Found by a review helper: the first client lost them too.
func TestQualifiedFieldsOnlyForTheirRequest(t *testing.T) {
	const clients = 5
	for _, tc := range []struct {
		name     string
		size     int
		tooLarge bool
		own      bool // each client's answer comes from a fetch of its own
	}{
		{"small", 100, false, false},
		{"streaming miss", 200 << 10, false, false},
		{"streaming miss too large to store", 200 << 10, true, false},
		{"too large to store, read first", 200 << 10, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			release := make(chan struct{})
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if requests.Add(1) == 1 {
					<-release // the others join this fill meanwhile
				}
				w.Header().Set("Cache-Control", `max-age=600, private="X-Foo", no-cache="X-Bar"`)
				if tc.own {
					w.Header().Set("Content-Type", "text/plain") // compressible: read whole first
				} else {
					w.Header().Set("Content-Type", "application/octet-stream")
					w.Header().Set("Content-Length", fmt.Sprint(tc.size))
				}
				w.Header().Set("X-Foo", "foo-for-"+r.Header.Get("X-Client"))
				w.Header().Set("X-Bar", "bar-for-"+r.Header.Get("X-Client"))
				w.Header().Set("X-Shared", "kept")
				w.Write([]byte(strings.Repeat("x", tc.size)))
			}))
			cfg := Config{PoP: "tst", Node: "e1", Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}}
			if tc.tooLarge {
				cfg.Cache.MaxObjectBytes = 100 << 10
			}
			n, _ := startEdge(t, listen(t, "127.0.0.11"), cfg)
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
			t.Cleanup(c.CloseIdleConnections)
			got := collapsedClients(t, c, n, "/q", clients, &requests, release, nil)
			withFields := 0
			for i, r := range got {
				foo, bar := r.header.Get("X-Foo"), r.header.Get("X-Bar")
				if r.status != http.StatusOK || len(r.body) != tc.size || r.header.Get("X-Shared") != "kept" {
					t.Errorf("client %d: %d, %d bytes, X-Shared %q", i, r.status, len(r.body), r.header.Get("X-Shared"))
				}
				if foo == "" && bar == "" {
					continue
				}
				withFields++
				if foo != fmt.Sprint("foo-for-", i) || bar != fmt.Sprint("bar-for-", i) {
					t.Errorf("client %d got X-Foo %q, X-Bar %q: another request's (Cache-Status %q)", i, foo, bar, r.header.Get("Cache-Status"))
				}
				if strings.Contains(r.header.Get("Cache-Status"), "collapsed") {
					t.Errorf("client %d, collapsed on another's fill, got X-Foo %q, X-Bar %q", i, foo, bar)
				}
			}
			want := 1 // the client whose request fetched the answer
			if tc.own {
				want = clients
			}
			if withFields != want || int(requests.Load()) != want {
				t.Errorf("%d clients got the qualified fields, %d origin requests; want %d and %d", withFields, requests.Load(), want, want)
			}
			if tc.tooLarge {
				return
			}
			wait.For(t, 5*time.Second, "the object stored", func() bool {
				obj, _, _ := n.store.Lookup(n.key("/q"), http.Header{})
				return obj != nil
			})
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/q", "X-Client", "hit")
			wantCacheStatus(t, r, "hit")
			if r.header.Get("X-Foo") != "" || r.header.Get("X-Bar") != "" || r.header.Get("X-Shared") != "kept" {
				t.Errorf("hit: X-Foo %q, X-Bar %q, X-Shared %q; want only X-Shared", r.header.Get("X-Foo"), r.header.Get("X-Bar"), r.header.Get("X-Shared"))
			}
		})
	}
}

// TestCollapsedPersonal5xx: clients that joined a fill whose origin answered 5xx get that
// answer too (a failing origin is not asked again by each), unless it is one user's: with
// Set-Cookie or Cache-Control: private, each fetches its own and never gets another's cookie.
// Before, every follower got the first client's Set-Cookie.
func TestCollapsedPersonal5xx(t *testing.T) {
	const clients = 4
	for _, tc := range []struct {
		name     string
		header   [2]string
		personal bool
	}{
		{"set-cookie", [2]string{"Set-Cookie", "sid=for-"}, true},
		{"private", [2]string{"Cache-Control", "private, x="}, true},
		{"plain", [2]string{"X-Error", "for-"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			release := make(chan struct{})
			addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if requests.Add(1) == 1 {
					<-release // the others join this fill meanwhile
				}
				w.Header().Set(tc.header[0], tc.header[1]+r.Header.Get("X-Client"))
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte("down"))
			}))
			n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
				Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
			t.Cleanup(c.CloseIdleConnections)
			got := collapsedClients(t, c, n, "/down", clients, &requests, release, nil)
			for i, r := range got {
				v := r.header.Get(tc.header[0])
				if r.status != http.StatusServiceUnavailable {
					t.Errorf("client %d: status %d, want 503", i, r.status)
				}
				if tc.personal && v != fmt.Sprint(tc.header[1], i) {
					t.Errorf("client %d got %s %q: another client's", i, tc.header[0], v)
				}
			}
			want := int32(1)
			if tc.personal {
				want = clients
			}
			if got := requests.Load(); got != want {
				t.Errorf("origin requests = %d, want %d", got, want)
			}
		})
	}
}

// collapsedClients sends clients GETs of path to n at once, each with its own X-Client (its
// index) and the header pairs more(index) if more is not nil, waits until the origin holds the
// first (requests is 1) and every client waits in a collapse, then closes release and returns
// the answers in client order.
func collapsedClients(t *testing.T, c *http.Client, n *Node, path string, clients int, requests *atomic.Int32, release chan struct{}, more func(i int) []string) []resp {
	t.Helper()
	got := make([]resp, clients)
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			hdr := []string{"X-Client", fmt.Sprint(i)}
			if more != nil {
				hdr = append(hdr, more(i)...)
			}
			var err error
			got[i], err = tryDo(c, http.MethodGet, n.Addr(), testHost, path, hdr...)
			errs <- err
		}()
	}
	wait.For(t, 5*time.Second, "every client to wait for the first fill", func() bool {
		buf := make([]byte, 1<<20)
		return requests.Load() == 1 && strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*filler).collapse(") >= clients
	})
	close(release)
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return got
}
