package edge

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// notModifiedOrigin serves one representation (body, ETag, Last-Modified) and answers every
// conditional request with a 304 carrying its validators, whatever the request's were: an
// origin that does not compare them (or only by a date), or a broken one.
type notModifiedOrigin struct {
	clock *fakeClock
	cc    string

	mu             sync.Mutex // protects the fields below
	body, etag, lm string     // the representation ("": no such field)
	always304      bool       // a 304 to an unconditional request too
	cond, uncond   int        // requests with validators, without
}

func (o *notModifiedOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h := w.Header()
	h.Set("Date", o.clock.Now().Format(http.TimeFormat))
	h.Set("Cache-Control", o.cc)
	conditional := r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != ""
	if conditional {
		o.cond++
	} else {
		o.uncond++
	}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set("ETag", o.etag)
	set("Last-Modified", o.lm)
	if conditional || o.always304 {
		h.Set("X-From-304", "1") // a field only the 304 has: a copy it refreshed carries it
		w.WriteHeader(http.StatusNotModified)
		return
	}
	fmt.Fprint(w, o.body)
}

// counts returns the conditional and unconditional requests since the last call.
func (o *notModifiedOrigin) counts() (cond, uncond int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	cond, uncond = o.cond, o.uncond
	o.cond, o.uncond = 0, 0
	return cond, uncond
}

// TestNotModifiedOtherValidator: a 304 whose validators name another representation than the
// stale copy (another entity tag, compared weakly as NotModifiedSelects does; or, without one,
// another Last-Modified) must not refresh it
// (RFC 9111 §4.3.4: "the cache MUST NOT use the new response to update any stored
// responses"): the edge fetches the object whole, once, and the client gets the new one. An
// origin that answers 304 even to that costs one more request, never a loop, and the copy
// stays stale (served under stale-if-error here). Found by a review helper: the 304 refreshed
// the old body with the new tag and made it fresh.
func TestNotModifiedOtherValidator(t *testing.T) {
	const lm1, lm2 = "Wed, 01 Jan 2020 00:00:00 GMT", "Thu, 02 Jan 2020 00:00:00 GMT"
	for _, tc := range []struct {
		name           string
		etag, lm       string // the first version's validators
		etag2, lm2     string // the second's, which every 304 carries
		always304      bool
		wantBody       string // after the revalidation
		wantETag       string
		wantCS         string // in its Cache-Status
		wantRefreshed  bool   // the 304 updated the copy (its field is served)
		wantUncond     int    // unconditional origin requests for the revalidating GET (after one conditional)
		wantNextUpward bool   // the GET after it goes to the origin again (the copy is still stale)
	}{
		// The origin changed the body but not its tag: the 304 is right by RFC 9110.
		{name: "same strong ETag", etag: `"e1"`, etag2: `"e1"`,
			wantBody: "v1", wantETag: `"e1"`, wantCS: "fwd-status=304", wantRefreshed: true},
		{name: "other strong ETag", etag: `"e1"`, etag2: `"e2"`,
			wantBody: "v2", wantETag: `"e2"`, wantCS: "fwd-status=200", wantUncond: 1},
		{name: "other strong ETag, same Last-Modified", etag: `"e1"`, lm: lm1, etag2: `"e2"`, lm2: lm1,
			wantBody: "v2", wantETag: `"e2"`, wantCS: "fwd-status=200", wantUncond: 1},
		// nginx answers a conditional request for its gzip answer's weak tag with a 304
		// carrying the tag's strong form: the same representation, and the copy keeps its
		// weak tag (found by a review helper: every revalidation was a full fetch).
		{name: "strong form of the stored weak ETag (nginx gzip)", etag: `W/"e1"`, etag2: `"e1"`,
			wantBody: "v1", wantETag: `W/"e1"`, wantCS: "fwd-status=304", wantRefreshed: true},
		{name: "other weak ETag", etag: `W/"e1"`, etag2: `W/"e2"`,
			wantBody: "v2", wantETag: `W/"e2"`, wantCS: "fwd-status=200", wantUncond: 1},
		{name: "same Last-Modified, no ETag", lm: lm1, lm2: lm1,
			wantBody: "v1", wantCS: "fwd-status=304", wantRefreshed: true},
		{name: "other Last-Modified, no ETag", lm: lm1, lm2: lm2,
			wantBody: "v2", wantCS: "fwd-status=200", wantUncond: 1},
		{name: "origin answers 304 to everything", etag: `"e1"`, etag2: `"e2"`, always304: true,
			wantBody: "v1", wantETag: `"e1"`, wantCS: "stale-if-error", wantUncond: 1, wantNextUpward: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			o := &notModifiedOrigin{clock: clock, cc: "max-age=10, stale-if-error=600", body: "v1", etag: tc.etag, lm: tc.lm}
			n, c := echoEdge(t, o.ServeHTTP, nil, func(c *Config) { c.Clock = clock.Now })
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/nm"); r.body != "v1" {
				t.Fatalf("first GET: %d %q", r.status, r.body)
			}
			o.mu.Lock()
			o.body, o.etag, o.lm, o.always304 = "v2", tc.etag2, tc.lm2, tc.always304
			o.mu.Unlock()
			o.counts()
			clock.Advance(11 * time.Second) // stale

			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/nm")
			if r.status != http.StatusOK || r.body != tc.wantBody || r.header.Get("ETag") != tc.wantETag {
				t.Errorf("revalidating GET: %d %q, ETag %q (Cache-Status %q); want 200 %q, ETag %q",
					r.status, r.body, r.header.Get("ETag"), r.header.Get("Cache-Status"), tc.wantBody, tc.wantETag)
			}
			wantCacheStatus(t, r, tc.wantCS)
			if got := r.header.Get("X-From-304") != ""; got != tc.wantRefreshed {
				t.Errorf("revalidating GET: the 304 refreshed the copy = %v, want %v", got, tc.wantRefreshed)
			}
			if cond, uncond := o.counts(); cond != 1 || uncond != tc.wantUncond {
				t.Errorf("revalidating GET: origin got %d conditional, %d unconditional requests; want 1, %d",
					cond, uncond, tc.wantUncond)
			}

			r = do(t, c, http.MethodGet, n.Addr(), testHost, "/nm")
			if r.body != tc.wantBody || r.header.Get("ETag") != tc.wantETag || (r.header.Get("X-From-304") != "") != tc.wantRefreshed {
				t.Errorf("next GET: %q, ETag %q, X-From-304 %q; want %q, ETag %q",
					r.body, r.header.Get("ETag"), r.header.Get("X-From-304"), tc.wantBody, tc.wantETag)
			}
			cond, uncond := o.counts()
			if upward := cond+uncond > 0; upward != tc.wantNextUpward {
				t.Errorf("next GET: went to the origin = %v (Cache-Status %q), want %v", upward, r.header.Get("Cache-Status"), tc.wantNextUpward)
			}
			if !tc.wantNextUpward {
				wantCacheStatus(t, r, "hit")
			}
		})
	}
}

// TestNotModifiedEdgeCodedKeepsWeakTag: a copy the edge compressed keeps its weak tag when the
// origin's 304 carries the tag's strong form (nginx's way), as an uncompressed copy does
// (Refresh): the origin vouches only for equivalent content, so the edge's bytes of it must not
// get a strong tag, which If-Range and If-Match take for byte identity. Before, the 304 gave
// the copy W/"e1-gzip" -> "e1-gzip" (tags as before the encoder mark).
func TestNotModifiedEdgeCodedKeepsWeakTag(t *testing.T) {
	for _, tc := range []struct {
		name, etag, etag2, want string
	}{
		{"strong form of the stored weak tag", `W/"e1"`, `"e1"`, edgeTag(`W/"e1"`, "gzip")},
		{"weak, as stored", `W/"e1"`, `W/"e1"`, edgeTag(`W/"e1"`, "gzip")},
		{"strong, as stored", `"e1"`, `"e1"`, edgeTag(`"e1"`, "gzip")},
		{"strong made weak", `"e1"`, `W/"e1"`, edgeTag(`W/"e1"`, "gzip")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			body := strings.Repeat("compressible text ", 200)
			o := &notModifiedOrigin{clock: clock, cc: "max-age=10", body: body, etag: tc.etag}
			n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				o.ServeHTTP(w, r)
			}, nil, func(c *Config) { c.Clock = clock.Now })
			c.Transport.(*http.Transport).DisableCompression = true
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/nm", "Accept-Encoding", "gzip")
			if r.header.Get("Content-Encoding") != "gzip" || r.header.Get("ETag") != edgeTag(tc.etag, "gzip") {
				t.Fatalf("first GET: Content-Encoding %q, ETag %s; want the edge's gzip", r.header.Get("Content-Encoding"), r.header.Get("ETag"))
			}
			o.mu.Lock()
			o.etag = tc.etag2
			o.mu.Unlock()
			clock.Advance(11 * time.Second) // stale
			for _, what := range []string{"revalidating GET", "next GET"} {
				r := do(t, c, http.MethodGet, n.Addr(), testHost, "/nm", "Accept-Encoding", "gzip")
				if r.header.Get("X-From-304") == "" || r.header.Get("ETag") != tc.want || string(decodeBody(t, "gzip", []byte(r.body))) != body {
					t.Errorf("%s: ETag %s, X-From-304 %q (Cache-Status %q); want %s, refreshed by the 304", what,
						r.header.Get("ETag"), r.header.Get("X-From-304"), r.header.Get("Cache-Status"), tc.want)
				}
			}
		})
	}
}

// TestNotModifiedNoTransformEdgeCoded: a copy the edge compressed is not refreshed by a 304
// that brings Cache-Control: no-transform (or in CDN-Cache-Control): the origin now forbids
// what the edge did to its content (RFC 9110 §7.7, RFC 9111 §5.2.2.6), and the refreshed copy
// went on being served gzipped under the origin's no-transform. The edge fetches the object
// whole instead, once, and stores it as it comes; the other variants follow it.
func TestNotModifiedNoTransformEdgeCoded(t *testing.T) {
	for _, tc := range []struct{ field, cc, cdn string }{
		{"Cache-Control", "max-age=10, no-transform", ""},
		{"CDN-Cache-Control", "max-age=10", "max-age=10, no-transform"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			clock := newFakeClock()
			body := strings.Repeat("compressible text ", 200)
			o := &notModifiedOrigin{clock: clock, cc: "max-age=10", body: body, etag: `"e1"`}
			var cdn atomic.Value // the CDN-Cache-Control the origin sends, "" for none
			cdn.Store("")
			n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				if v := cdn.Load().(string); v != "" {
					w.Header().Set("CDN-Cache-Control", v)
				}
				o.ServeHTTP(w, r)
			}, nil, func(c *Config) { c.Clock = clock.Now })
			c.Transport.(*http.Transport).DisableCompression = true
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/nt", "Accept-Encoding", "gzip")
			if r.header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("first GET: Content-Encoding %q, want the edge's gzip", r.header.Get("Content-Encoding"))
			}
			o.counts()
			o.mu.Lock()
			o.cc = tc.cc
			o.mu.Unlock()
			cdn.Store(tc.cdn)
			clock.Advance(11 * time.Second) // stale
			for _, what := range []string{"revalidating GET", "next GET"} {
				r := do(t, c, http.MethodGet, n.Addr(), testHost, "/nt", "Accept-Encoding", "gzip")
				if !strings.Contains(r.header.Get(tc.field), "no-transform") {
					t.Fatalf("%s: %s = %q, want the origin's no-transform", what, tc.field, r.header.Get(tc.field))
				}
				if ce := r.header.Get("Content-Encoding"); ce != "" || r.body != body || r.header.Get("ETag") != `"e1"` {
					t.Errorf("%s: Content-Encoding %q, ETag %s, %d bytes; want the origin's answer untransformed",
						what, ce, r.header.Get("ETag"), len(r.body))
				}
			}
			if cond, uncond := o.counts(); cond != 1 || uncond != 1 {
				t.Errorf("origin asked %d times conditionally, %d not; want 1 and 1 (the 304, then the whole object)", cond, uncond)
			}
		})
	}
}

// TestNotModifiedDigestsEdgeCoded: a digest a 304 carries (RFC 9530's Content-Digest and
// Repr-Digest, RFC 3230's Digest, Content-MD5) is of the origin's bytes, not of the bytes the
// edge compressed them into: a copy the edge compressed does not take it, as compressing it
// dropped the 200's (compress.Transform). A copy the edge did not code takes it. Before, the
// refreshed gzip copy went out with the digest of the uncoded body.
func TestNotModifiedDigestsEdgeCoded(t *testing.T) {
	digests := []string{"Content-Digest", "Repr-Digest", "Digest", "Content-MD5"}
	clock := newFakeClock()
	body := strings.Repeat("compressible text ", 200)
	o := &notModifiedOrigin{clock: clock, cc: "max-age=10", body: body, etag: `"e1"`}
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if r.Header.Get("If-None-Match") != "" { // on the 304 only
			for _, k := range digests {
				w.Header().Set(k, "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")
			}
		}
		o.ServeHTTP(w, r)
	}, nil, func(c *Config) { c.Clock = clock.Now })
	c.Transport.(*http.Transport).DisableCompression = true
	for _, ae := range []string{"gzip", "identity"} {
		if r := do(t, c, http.MethodGet, n.Addr(), testHost, "/digest", "Accept-Encoding", ae); r.status != http.StatusOK {
			t.Fatalf("first GET for %s: status %d", ae, r.status)
		}
	}
	clock.Advance(11 * time.Second) // both stale
	for _, ae := range []string{"gzip", "identity"} {
		for _, what := range []string{"revalidating GET", "next GET"} {
			r := do(t, c, http.MethodGet, n.Addr(), testHost, "/digest", "Accept-Encoding", ae)
			if r.header.Get("X-From-304") == "" {
				t.Fatalf("%s for %s: not refreshed by the 304 (Cache-Status %q)", what, ae, r.header.Get("Cache-Status"))
			}
			coded := r.header.Get("Content-Encoding") != ""
			if coded != (ae == "gzip") {
				t.Fatalf("%s for %s: Content-Encoding %q", what, ae, r.header.Get("Content-Encoding"))
			}
			for _, k := range digests {
				if got := r.header.Get(k) != ""; got == coded {
					t.Errorf("%s for %s: %s = %q, want it only on the uncoded copy", what, ae, k, r.header.Get(k))
				}
			}
		}
	}
}
