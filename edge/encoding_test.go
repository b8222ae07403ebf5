package edge

import (
	"bytes"
	"cmp"
	stdgzip "compress/gzip"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/compress"
	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/meridian-cdn/meridian/origin"
)

// decodeBody undoes a content coding.
func decodeBody(t *testing.T, coding string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch coding {
	case "":
		return body
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		d, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatalf("zstd.NewReader: %v", err)
		}
		defer d.Close()
		r = d
	case "gzip":
		g, err := stdgzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip.NewReader: %v", err)
		}
		r = g
	default:
		t.Fatalf("unknown coding %q", coding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decode %s: %v", coding, err)
	}
	return out
}

func TestAcceptEncodingSpellingsShareVariant(t *testing.T) {
	s := newSingle(t, nil)
	const path = "/ae.txt"
	target := path + "?ct=text%2Fplain&size=8192&cc=max-age%3D60"
	spellings := []string{"gzip, br", "br,gzip", "BR;q=1.0, gzip;q=0.5", "gzip;q=1, br", "br , x-gzip"}
	var first []byte
	for i, ae := range spellings {
		r := s.get(t, target, "Accept-Encoding", ae)
		if r.status != http.StatusOK {
			t.Fatalf("GET with Accept-Encoding %q: status %d, want 200", ae, r.status)
		}
		if got := r.header.Get("Content-Encoding"); got != "br" {
			t.Errorf("Accept-Encoding %q: Content-Encoding = %q, want br", ae, got)
		}
		if i == 0 {
			first = []byte(r.body)
		} else if r.body != string(first) {
			t.Errorf("Accept-Encoding %q: body differs from the first answer's", ae)
		}
		if hit := strings.Contains(r.header.Get("Cache-Status"), "hit"); hit != (i > 0) {
			t.Errorf("Accept-Encoding %q: Cache-Status = %q, want hit=%v", ae, r.header.Get("Cache-Status"), i > 0)
		}
	}
	if got := s.origin.Requests(path); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
	if got := s.origin.LastHeader(path).Get("Accept-Encoding"); got != "br" {
		t.Errorf("origin got Accept-Encoding %q, want the normalised br", got)
	}
	// One stored variant: the entry for the key holds exactly the br one.
	obj, _, _ := s.edge.store.Lookup(testHost+target, http.Header{"Accept-Encoding": {"br"}})
	if obj == nil {
		t.Fatalf("no stored br variant")
	}
	if n := storedVariants(s.edge, obj.Primary); n != 1 {
		t.Errorf("stored variants = %d, want 1", n)
	}
}

// TestIdentitySpellingsShareVariant: every request the edge serves identity, with no
// Accept-Encoding or with one that accepts no coding the edge has, reads one stored variant,
// and the fill asks the origin for identity explicitly.
func TestIdentitySpellingsShareVariant(t *testing.T) {
	s := newSingle(t, nil)
	const path = "/identity.txt"
	target := path + "?ct=text%2Fplain&size=8192&cc=max-age%3D60"
	spellings := [][]string{nil, {"Accept-Encoding", "identity"}, {"Accept-Encoding", ""},
		{"Accept-Encoding", "deflate"}, {"Accept-Encoding", "gzip;q=0, br;q=0"}, nil}
	// net/http's client would ask for gzip where the request has no Accept-Encoding.
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	for i, h := range spellings {
		r := do(t, c, http.MethodGet, s.edge.Addr(), testHost, target, h...)
		if r.status != http.StatusOK || r.header.Get("Content-Encoding") != "" || len(r.body) != 8192 {
			t.Fatalf("GET with %q: status %d, Content-Encoding %q, %d bytes; want 200, identity, 8192",
				h, r.status, r.header.Get("Content-Encoding"), len(r.body))
		}
		if hit := strings.Contains(r.header.Get("Cache-Status"), "hit"); hit != (i > 0) {
			t.Errorf("GET with %q: Cache-Status = %q, want hit=%v", h, r.header.Get("Cache-Status"), i > 0)
		}
	}
	if got := s.origin.Requests(path); got != 1 {
		t.Errorf("origin requests = %d, want 1", got)
	}
	if got := s.origin.LastHeader(path).Values("Accept-Encoding"); !slices.Equal(got, []string{"identity"}) {
		t.Errorf("origin got Accept-Encoding %q, want identity said explicitly", got)
	}
	if n := storedVariants(s.edge, testHost+target); n != 1 {
		t.Errorf("stored variants = %d, want 1", n)
	}
}

// storedVariants counts the variants stored under primary, by asking for each coding as a
// normalised request does (identity: no field).
func storedVariants(n *Node, primary string) int {
	count := 0
	for _, ae := range []string{"br", "zstd", "gzip", ""} {
		h := http.Header{"Accept-Encoding": {ae}}
		if ae == "" {
			h = http.Header{}
		}
		if obj, _, _ := n.store.Lookup(primary, h); obj != nil {
			count++
		}
	}
	return count
}

func TestEdgeCompression(t *testing.T) {
	tests := []struct {
		name, query, acceptEncoding string
		wantCoding                  string
		size                        int  // 0 means 20000
		off                         bool // the host sets disable_compression
	}{
		{"br", "ct=text%2Fhtml", "gzip, deflate, br, zstd", "br", 0, false},
		{"zstd", "ct=application%2Fjson", "zstd, gzip", "zstd", 0, false},
		{"gzip", "ct=image%2Fsvg%2Bxml", "gzip", "gzip", 0, false},
		{"identity for a client accepting none", "ct=text%2Fplain", "identity", "", 0, false},
		{"no-transform honoured", "ct=text%2Fplain&cc=max-age%3D60%2C+no-transform", "br", "", 0, false},
		{"compressed type left alone", "ct=image%2Fpng", "br", "", 0, false},
		{"octet-stream left alone", "", "gzip", "", 0, false},
		{"tiny body left alone", "ct=text%2Fplain", "br", "", 600, false},
		{"compression disabled for the host", "ct=text%2Fplain", "br", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSingle(t, func(c *Config) { c.Hosts[0].Cache.DisableCompression = tt.off })
			path := "/c/" + strings.ReplaceAll(tt.name, " ", "-")
			size := tt.size
			if size == 0 {
				size = 20000
			}
			q := "size=" + strconv.Itoa(size)
			if tt.query != "" {
				q += "&" + tt.query
			}
			if !strings.Contains(q, "cc=") {
				q += "&cc=max-age%3D60"
			}
			var hdr []string
			if tt.acceptEncoding != "" {
				hdr = []string{"Accept-Encoding", tt.acceptEncoding}
			}
			want := origin.Body(path, 1, size)
			for round := range 2 { // the fill, then the stored variant
				r := s.get(t, path+"?"+q, hdr...)
				if r.status != http.StatusOK {
					t.Fatalf("round %d: status %d, want 200", round, r.status)
				}
				if got := r.header.Get("Content-Encoding"); got != tt.wantCoding {
					t.Fatalf("round %d: Content-Encoding = %q, want %q", round, got, tt.wantCoding)
				}
				if got := decodeBody(t, tt.wantCoding, []byte(r.body)); !bytes.Equal(got, want) {
					t.Fatalf("round %d: decoded body (%d bytes) differs from the origin's (%d bytes)", round, len(got), len(want))
				}
				if cl := r.header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(r.body)) {
					t.Errorf("round %d: Content-Length = %s, body is %d bytes", round, cl, len(r.body))
				}
				etag := origin.ETag(path, 1, size)
				if tt.wantCoding != "" {
					etag = edgeTag(etag, tt.wantCoding)
					if !strings.Contains(r.header.Get("Vary"), "Accept-Encoding") {
						t.Errorf("round %d: Vary = %q, want Accept-Encoding in it", round, r.header.Get("Vary"))
					}
				}
				if got := r.header.Get("ETag"); got != etag {
					t.Errorf("round %d: ETag = %s, want %s", round, got, etag)
				}
			}
			if got := s.origin.Requests(path); got != 1 {
				t.Errorf("origin requests = %d, want 1", got)
			}
		})
	}
}

func TestCompressedVariantRangeAndRevalidation(t *testing.T) {
	s := newSingle(t, nil)
	const path, size = "/rv.js", 30000
	target := path + "?ct=application%2Fjavascript&size=30000&cc=max-age%3D10"
	full := s.get(t, target, "Accept-Encoding", "gzip")
	if full.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding = %q, want gzip", full.header.Get("Content-Encoding"))
	}
	// Range is served on the compressed bytes.
	r := s.get(t, target, "Accept-Encoding", "gzip", "Range", "bytes=10-29")
	if r.status != http.StatusPartialContent || r.body != full.body[10:30] {
		t.Errorf("Range on the gzip variant: status %d, %d bytes; want 206 with bytes 10-29 of the encoded body", r.status, len(r.body))
	}
	if got, want := r.header.Get("Content-Range"), "bytes 10-29/"+strconv.Itoa(len(full.body)); got != want {
		t.Errorf("Content-Range = %q, want %q", got, want)
	}
	// Once stale, the origin is asked with its own entity tag and the 304 keeps ours.
	s.clock.Advance(11 * time.Second)
	rv := s.get(t, target, "Accept-Encoding", "gzip")
	if got, want := s.origin.LastHeader(path).Get("If-None-Match"), origin.ETag(path, 1, size); got != want {
		t.Errorf("origin got If-None-Match %s, want %s", got, want)
	}
	if rv.header.Get("ETag") != full.header.Get("ETag") || rv.header.Get("Content-Encoding") != "gzip" || rv.body != full.body {
		t.Errorf("revalidated answer: ETag %s, Content-Encoding %q; want %s, gzip and the same body",
			rv.header.Get("ETag"), rv.header.Get("Content-Encoding"), full.header.Get("ETag"))
	}
}

// TestCompressionWithoutLength: an answer without Content-Length (chunked) is compressed by
// its length once read, as one with a length is: not below the minimum size, else in the
// client's coding (the fill decides before the body is read only when the length is known).
func TestCompressionWithoutLength(t *testing.T) {
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "max-age=60")
		w.(http.Flusher).Flush() // the header goes out first: the body is chunked
		io.WriteString(w, strings.Repeat("chunked body ", size/13+1)[:size])
	}, nil, nil)
	for _, tt := range []struct {
		size int
		want string
	}{{600, ""}, {20000, "gzip"}} {
		path := "/chunked?size=" + strconv.Itoa(tt.size)
		for round := range 2 { // the fill, then the stored variant
			r := do(t, c, http.MethodGet, n.Addr(), testHost, path, "Accept-Encoding", "gzip")
			if r.status != http.StatusOK {
				t.Fatalf("%s round %d: status %d", path, round, r.status)
			}
			if got := r.header.Get("Content-Encoding"); got != tt.want {
				t.Fatalf("%s round %d: Content-Encoding %q, want %q", path, round, got, tt.want)
			}
			if got := decodeBody(t, tt.want, []byte(r.body)); len(got) != tt.size {
				t.Fatalf("%s round %d: decoded body %d bytes, want %d", path, round, len(got), tt.size)
			}
		}
	}
}

// TestCompressedVariantConditionalLength: a conditional request that is answered with the
// whole compressed variant (its validator does not match) gets the same Content-Length as a
// plain one, GET and HEAD alike. http.ServeContent leaves Content-Length out when the header
// has a Content-Encoding, so such an answer went without one (chunked, or no length at all
// for a HEAD).
func TestCompressedVariantConditionalLength(t *testing.T) {
	// Hex digits of a pseudo-random sequence: text that compresses to about half, so the
	// encoded body is far over what a server buffers to find a length by itself.
	var text strings.Builder
	for x := uint32(1); text.Len() < 40000; x = x*1664525 + 1013904223 {
		text.WriteString(strconv.FormatUint(uint64(x), 16))
	}
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Last-Modified", "Mon, 01 Jan 2001 00:00:00 GMT")
		io.WriteString(w, text.String())
	}, nil, nil)
	const target = "/cl.css"
	full := do(t, c, http.MethodGet, n.Addr(), testHost, target, "Accept-Encoding", "br")
	if full.header.Get("Content-Encoding") != "br" {
		t.Fatalf("Content-Encoding = %q, want br", full.header.Get("Content-Encoding"))
	}
	want := strconv.Itoa(len(full.body))
	if got := full.header.Get("Content-Length"); got != want || len(full.body) < 8192 {
		t.Fatalf("plain GET: Content-Length = %q, body %d bytes; want %s and at least 8 KiB", got, len(full.body), want)
	}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, cond := range [][]string{
			{"If-None-Match", `"other"`},
			{"If-Modified-Since", "Mon, 01 Jan 1990 00:00:00 GMT"},
			{"If-Range", `"other"`, "Range", "bytes=0-9"},
		} {
			hdr := append([]string{"Accept-Encoding", "br"}, cond...)
			r := do(t, c, method, n.Addr(), testHost, target, hdr...)
			if r.status != http.StatusOK {
				t.Fatalf("%s %s: status %d, want 200", method, cond[0], r.status)
			}
			if got := r.header.Get("Content-Length"); got != want {
				t.Errorf("%s with %s: Content-Length = %q, want %s", method, cond[0], got, want)
			}
			if method == http.MethodGet && r.body != full.body {
				t.Errorf("%s with %s: body differs from the plain answer's", method, cond[0])
			}
		}
	}
	// The other answers of a conditional request keep their own framing.
	r := do(t, c, http.MethodGet, n.Addr(), testHost, target, "Accept-Encoding", "br", "If-None-Match", full.header.Get("ETag"))
	if r.status != http.StatusNotModified || r.header.Get("Content-Length") != "" {
		t.Errorf("matching If-None-Match: status %d, Content-Length %q; want 304 without one", r.status, r.header.Get("Content-Length"))
	}
	r = do(t, c, http.MethodGet, n.Addr(), testHost, target, "Accept-Encoding", "br", "If-Match", `"other"`)
	if r.status != http.StatusPreconditionFailed || r.body != "" {
		t.Errorf("failing If-Match: status %d, %d bytes; want 412 without a body", r.status, len(r.body))
	}
	r = do(t, c, http.MethodGet, n.Addr(), testHost, target, "Accept-Encoding", "br", "Range", "bytes=5-14")
	if r.status != http.StatusPartialContent || r.header.Get("Content-Length") != "10" || r.body != full.body[5:15] {
		t.Errorf("Range: status %d, Content-Length %q; want 206 with 10 bytes", r.status, r.header.Get("Content-Length"))
	}
}

// codingOrigin is an origin for the coding tests: a text body of ?size= bytes (default 5000)
// under ?ct= (default text/plain), with ?etag=, ?vary= and max-age=10; with ?gz=1 it gzips
// the body itself for a request that accepts gzip. It answers 304 to an If-None-Match that
// is exactly its tag, and records each request's If-None-Match.
type codingOrigin struct {
	clock *fakeClock
	mu    sync.Mutex
	inm   []string
}

func (o *codingOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o.mu.Lock()
	o.inm = append(o.inm, r.Header.Get("If-None-Match"))
	o.mu.Unlock()
	h := w.Header()
	h.Set("Date", o.clock.Now().Format(http.TimeFormat))
	h.Set("Cache-Control", "max-age=10")
	h.Set("Content-Type", cmp.Or(q.Get("ct"), "text/plain"))
	if v := q.Get("vary"); v != "" {
		h.Set("Vary", v)
	}
	etag := q.Get("etag")
	if etag != "" {
		h.Set("ETag", etag)
	}
	gz := q.Get("gz") == "1" && httpcache.NormalizeAcceptEncoding(r.Header["Accept-Encoding"]) == "gzip"
	if gz {
		h.Set("Content-Encoding", "gzip")
	}
	if etag != "" && r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := []byte(codingBody(q.Get("size")))
	if gz {
		body = gzipOf(body)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// lastINM is the If-None-Match of the origin's last request.
func (o *codingOrigin) lastINM() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.inm[len(o.inm)-1]
}

func codingBody(size string) string {
	n, _ := strconv.Atoi(size)
	if n == 0 {
		n = 5000
	}
	return strings.Repeat("coding body ", n/12+1)[:n]
}

func codingEdge(t *testing.T) (*Node, *http.Client, *codingOrigin, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	o := &codingOrigin{clock: clock}
	n, _ := echoEdge(t, o.ServeHTTP, nil, func(c *Config) { c.Clock = clock.Now })
	// The client must not ask for gzip by itself, nor decode what it gets.
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	return n, c, o, clock
}

// TestRevalidationETagOfVariants: a stale variant is revalidated with the origin's own entity
// tag, whatever the tag ends with, and keeps a tag of its own after the origin's 304. The edge
// told the tags it suffixed from the origin's by their ending, "-" and the coding: an origin
// that tags its own gzip answers "x-gzip" (Apache's mod_deflate) was sent "x", a tag it never
// gave; and the 304 for a variant the edge gzipped from an answer tagged "x-gzip" left the
// variant that tag, the identity answer's own (RFC 9110 §8.8.3: two representations must not
// share a strong tag), which the next revalidation then cut to "x".
func TestRevalidationETagOfVariants(t *testing.T) {
	for _, tt := range []struct {
		name, query, ae string
		wantINM         string // what the origin must be sent
		wantETag        string // what the client must get, before and after revalidating
	}{
		{"edge gzips", "etag=%22v1%22", "gzip", `"v1"`, edgeTag(`"v1"`, "gzip")},
		{"edge gzips a tag ending in -gzip", "etag=%22v1-gzip%22", "gzip", `"v1-gzip"`, edgeTag(`"v1-gzip"`, "gzip")},
		{"edge brotlis a weak tag ending in -br", "etag=W%2F%22v1-br%22", "br", `W/"v1-br"`, edgeTag(`W/"v1-br"`, "br")},
		{"origin gzips, tagged -gzip", "gz=1&vary=Accept-Encoding&etag=%22v1-gzip%22", "gzip", `"v1-gzip"`, `"v1-gzip"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, c, o, clock := codingEdge(t)
			target := "/reval?" + tt.query
			for round := range 3 { // the fill, then two revalidations
				r := do(t, c, http.MethodGet, n.Addr(), testHost, target, "Accept-Encoding", tt.ae)
				if r.status != http.StatusOK || r.header.Get("Content-Encoding") != tt.ae {
					t.Fatalf("round %d: status %d, Content-Encoding %q; want 200, %s", round, r.status, r.header.Get("Content-Encoding"), tt.ae)
				}
				if got := decodeBody(t, tt.ae, []byte(r.body)); string(got) != codingBody("") {
					t.Fatalf("round %d: decoded body differs from the origin's", round)
				}
				if got := r.header.Get("ETag"); got != tt.wantETag {
					t.Errorf("round %d: ETag = %s, want %s", round, got, tt.wantETag)
				}
				if round > 0 {
					if got := o.lastINM(); got != tt.wantINM {
						t.Errorf("round %d: origin got If-None-Match %s, want its own tag %s", round, got, tt.wantINM)
					}
					if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, "fwd-status=304") {
						t.Errorf("round %d: Cache-Status = %q, want a revalidation answered 304", round, cs)
					}
				}
				clock.Advance(11 * time.Second)
			}
		})
	}
}

// TestOriginCodedAnswerVaries: an answer the origin encoded itself depends on the
// Accept-Encoding the fill sent it (the coding the client's field selects), so it is stored and
// served with Vary: Accept-Encoding even when the origin forgot it: a client that does not ask
// for gzip must not get the gzip answer filled for one that did, from this cache or from a
// shared cache downstream.
func TestOriginCodedAnswerVaries(t *testing.T) {
	for _, tt := range []struct {
		name, query, wantVary string
	}{
		{"text without Vary", "gz=1", "Accept-Encoding"},
		{"binary without Vary", "gz=1&ct=application%2Foctet-stream", "Accept-Encoding"},
		{"with Vary: Origin", "gz=1&vary=Origin", "Origin, Accept-Encoding"},
		{"with Vary: accept-encoding", "gz=1&vary=accept-encoding", "accept-encoding"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, c, _, _ := codingEdge(t)
			target := "/coded?" + tt.query
			for _, ae := range [][]string{{"Accept-Encoding", "gzip"}, nil, {"Accept-Encoding", "identity"},
				{"Accept-Encoding", "gzip;q=0"}} {
				want := ""
				if len(ae) > 0 && ae[1] == "gzip" {
					want = "gzip"
				}
				r := do(t, c, http.MethodGet, n.Addr(), testHost, target, ae...)
				if r.status != http.StatusOK || r.header.Get("Content-Encoding") != want {
					t.Fatalf("Accept-Encoding %q: status %d, Content-Encoding %q; want 200, %q", ae, r.status, r.header.Get("Content-Encoding"), want)
				}
				if got := decodeBody(t, want, []byte(r.body)); string(got) != codingBody("") {
					t.Fatalf("Accept-Encoding %q: decoded body differs from the origin's", ae)
				}
				if want != "" && r.header.Get("Vary") != tt.wantVary {
					t.Errorf("Accept-Encoding %q: Vary = %q, want %q", ae, r.header.Get("Vary"), tt.wantVary)
				}
			}
		})
	}
}

// TestCodedVariantPreconditionFailed: a 412 to a conditional request for a coded variant (the
// edge's gzip, or the origin's) has no content, so no Content-Encoding either, GET and HEAD
// alike, as an answer passed on as it streams (writePrecondition) and a 304 have none: an empty
// body is no gzip stream. http.ServeContent left the variant's field on its 412.
func TestCodedVariantPreconditionFailed(t *testing.T) {
	n, c, _, _ := codingEdge(t)
	for _, tt := range []struct{ name, target string }{
		{"edge-coded", "/pf?etag=%22v1%22"},
		{"origin-coded", "/pf?gz=1&etag=%22v1%22"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r := do(t, c, http.MethodGet, n.Addr(), testHost, tt.target, "Accept-Encoding", "gzip"); r.header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("GET: Content-Encoding %q, want gzip", r.header.Get("Content-Encoding"))
			}
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				r := do(t, c, method, n.Addr(), testHost, tt.target, "Accept-Encoding", "gzip", "If-Match", `"other"`)
				if r.status != http.StatusPreconditionFailed || r.body != "" {
					t.Fatalf("%s with a failing If-Match: status %d, %d bytes; want 412 without a body", method, r.status, len(r.body))
				}
				if ce := r.header.Get("Content-Encoding"); ce != "" {
					t.Errorf("%s with a failing If-Match: Content-Encoding = %q, want none", method, ce)
				}
				if !strings.Contains(r.header.Get("Vary"), "Accept-Encoding") {
					t.Errorf("%s with a failing If-Match: Vary = %q, want Accept-Encoding in it", method, r.header.Get("Vary"))
				}
			}
		})
	}
}

// edgeTag is the tag of a variant this build's encoder made of an answer tagged tag.
func edgeTag(tag, coding string) string {
	t, ok := compress.SuffixETag(tag, coding)
	if !ok {
		panic("edgeTag: not an entity tag: " + tag)
	}
	return t
}

// TestKeepEdgeCodingKeepsStoredMark: an origin's 304 for a variant stored from another node's
// encoder keeps that encoder's mark in the refreshed tag; with this node's mark, a range
// resumed here (If-Range with the refreshed tag) would splice this node's bytes onto another
// encoder's. A copy stored without a tag gets this node's suffix, weak: whose encoder made its
// bytes is unknown.
func TestKeepEdgeCodingKeepsStoredMark(t *testing.T) {
	for _, tt := range []struct {
		name, stored, notModified, want string
	}{
		{"another node's mark", `"v1-gzip.zz9"`, `"v2"`, `"v2-gzip.zz9"`},
		{"a node before the mark", `"v1-gzip"`, `"v2"`, `"v2-gzip"`},
		{"this node's", edgeTag(`"v1"`, "gzip"), `"v2"`, edgeTag(`"v2"`, "gzip")},
		{"strong form of the stored weak tag", `W/"v1-gzip.zz9"`, `"v1"`, `W/"v1-gzip.zz9"`},
		{"no stored tag", "", `"v2"`, "W/" + edgeTag(`"v2"`, "gzip")},
		{"no stored tag, weak", "", `W/"v2"`, edgeTag(`W/"v2"`, "gzip")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stale := &store.Object{Header: http.Header{"Content-Encoding": {"gzip"}}, EdgeCoded: true}
			if tt.stored != "" {
				stale.Header.Set("ETag", tt.stored)
			}
			h := http.Header{"Etag": {tt.notModified}}
			keepEdgeCoding(stale, h, http.Header{"Etag": {tt.notModified}}, true)
			if got := h.Get("ETag"); got != tt.want {
				t.Errorf("refreshed ETag %s, want %s", got, tt.want)
			}
		})
	}
}
