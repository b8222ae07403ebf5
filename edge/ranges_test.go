package edge

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

// TestRangesIgnoredOrServed checks the answer to each kind of Range (RFC 9110 §14) from a
// stored object, a sliced object and a streaming miss. A range unit other than bytes must be
// ignored (§14.2), and an invalid ranges-specifier, overlapping ranges or very many ranges are
// ignored (§14.2 allows it): all used to get a 416 or a multipart answer of every part asked
// for (bytes=0-0 sixty-five times: sixty-five part headers for a few bytes of request).
func TestRangesIgnoredOrServed(t *testing.T) {
	many := "bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", maxRanges+1), ",")
	var ascending []string
	for i := range maxRanges + 1 {
		ascending = append(ascending, fmt.Sprintf("%d-%d", 2*i, 2*i))
	}
	tests := []struct {
		rng   string
		parts [][2]int // nil and want 200: ignored; one part: 206 with Content-Range
		unsat bool     // 416
	}{
		{"items=0-5", nil, false},
		{"Bytes=0-5", nil, false},
		{"bytes=5-2", nil, false},
		{"bytes=abc", nil, false},
		{"bytes=", nil, false},
		{"bytes=0-0,0-0", nil, false},
		{"bytes=10-20,0-5", nil, false},
		{many, nil, false},
		{"bytes=" + strings.Join(ascending, ","), nil, false},
		{"bytes=0-0,-1", [][2]int{{0, 0}, {-1, -1}}, false},
		{"bytes=0-4, ,10-14", [][2]int{{0, 4}, {10, 14}}, false},
		{"bytes=-999999999", [][2]int{{0, -1}}, false},
		{"bytes=3-", [][2]int{{3, -1}}, false},
		{"bytes=999999999-", nil, true},
	}
	s := slicedEdge(t)
	for _, kind := range []struct {
		name string
		size int
	}{{"stored", 100 << 10}, {"sliced", 9<<20 + 5}, {"streaming", 100 << 10}} {
		t.Run(kind.name, func(t *testing.T) {
			size := kind.size
			path := "/rng-" + kind.name
			body := originBytes(t, path, 1, size)
			target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
			if kind.name != "streaming" {
				s.get(t, target)
			}
			for i, tt := range tests {
				tgt := target
				if kind.name == "streaming" {
					tgt += "&n=" + strconv.Itoa(i) // a miss each time, answered as it streams
				}
				r := s.get(t, tgt, "Range", tt.rng)
				switch {
				case tt.unsat:
					if r.status != http.StatusRequestedRangeNotSatisfiable || r.header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
						t.Errorf("Range %.40q: status %d, Content-Range %q; want 416, bytes */%d", tt.rng, r.status, r.header.Get("Content-Range"), size)
					}
				case tt.parts == nil:
					if r.status != http.StatusOK || r.header.Get("Content-Length") != strconv.Itoa(size) || r.body != string(body) || r.header.Get("Content-Range") != "" {
						t.Errorf("Range %.40q: status %d, Content-Length %q, Content-Range %q, right bytes %v; want 200 with the whole object",
							tt.rng, r.status, r.header.Get("Content-Length"), r.header.Get("Content-Range"), r.body == string(body))
					}
				default:
					parts := make([][2]int, len(tt.parts))
					for j, p := range tt.parts {
						parts[j] = p
						if p[0] == -1 {
							parts[j] = [2]int{size - 1, size - 1}
						}
						if p[1] == -1 {
							parts[j][1] = size - 1
						}
					}
					if len(parts) > 1 {
						wantParts(t, r, body, parts)
						continue
					}
					p := parts[0]
					if cr := fmt.Sprintf("bytes %d-%d/%d", p[0], p[1], size); r.status != http.StatusPartialContent || r.header.Get("Content-Range") != cr ||
						r.header.Get("Content-Length") != strconv.Itoa(p[1]-p[0]+1) || r.body != string(body[p[0]:p[1]+1]) {
						t.Errorf("Range %.40q: status %d, Content-Range %q, Content-Length %q; want 206, %s", tt.rng, r.status, r.header.Get("Content-Range"), r.header.Get("Content-Length"), cr)
					}
				}
			}
		})
	}
}

// TestStreamedAnswerPreconditions: an answer passed on as it streams (too large to keep, or
// not storable) comes from a fill that did not carry the client's conditionals, so the edge
// must evaluate them (RFC 9110 §13.2.2). It used to send the whole 200 to an If-Match that
// does not match (RFC 9110 §13.1.1: 412) and to an If-None-Match that does (304).
func TestStreamedAnswerPreconditions(t *testing.T) {
	const size = 2 << 20
	s := newSingle(t, func(c *Config) {
		c.Hosts[0].Cache.DisableSlices = true
		c.Hosts[0].Cache.MaxObjectBytes = 1 << 20
	})
	for _, o := range []struct{ path, cc string }{{"/pre-large", "max-age=600"}, {"/pre-nostore", "no-store"}} {
		target := obj(o.path, "size", strconv.Itoa(size), "cc", o.cc, "lm", "3600")
		etag := origin.ETag(o.path, 1, size)
		whole := s.get(t, target)
		lm := whole.header.Get("Last-Modified")
		if whole.status != http.StatusOK || len(whole.body) != size || lm == "" || whole.header.Get("Etag") != etag {
			t.Fatalf("%s: status %d, %d bytes, Last-Modified %q, ETag %q", o.path, whole.status, len(whole.body), lm, whole.header.Get("Etag"))
		}
		lmTime, _ := http.ParseTime(lm)
		earlier := lmTime.Add(-time.Hour).Format(http.TimeFormat)
		tests := []struct {
			method string
			hdr    []string
			want   int
		}{
			{"GET", []string{"If-Match", `"nope"`}, http.StatusPreconditionFailed},
			{"GET", []string{"If-Match", "W/" + etag}, http.StatusPreconditionFailed},
			{"GET", []string{"If-Match", `"nope", ` + etag}, http.StatusOK},
			{"GET", []string{"If-Match", "*"}, http.StatusOK},
			{"GET", []string{"If-None-Match", etag}, http.StatusNotModified},
			{"GET", []string{"If-None-Match", "W/" + etag}, http.StatusNotModified},
			{"GET", []string{"If-None-Match", "*"}, http.StatusNotModified},
			{"HEAD", []string{"If-None-Match", etag}, http.StatusNotModified},
			{"GET", []string{"If-None-Match", `"other"`}, http.StatusOK},
			{"GET", []string{"If-Modified-Since", lm}, http.StatusNotModified},
			{"GET", []string{"If-Modified-Since", earlier}, http.StatusOK},
			{"GET", []string{"If-Unmodified-Since", earlier}, http.StatusPreconditionFailed},
			{"GET", []string{"If-Unmodified-Since", lm}, http.StatusOK},
			{"GET", []string{"If-None-Match", `"other"`, "If-Modified-Since", lm}, http.StatusOK},
			// The conditionals come before a Range (TestStreamedRange has the Range alone).
			{"GET", []string{"Range", "bytes=0-9", "If-None-Match", etag}, http.StatusNotModified},
			{"GET", []string{"Range", "bytes=0-9", "If-Match", `"nope"`}, http.StatusPreconditionFailed},
		}
		for _, tt := range tests {
			r := do(t, s.client, tt.method, s.edge.Addr(), testHost, target, tt.hdr...)
			if r.status != tt.want {
				t.Errorf("%s %s %q: status %d, want %d", tt.method, o.path, tt.hdr, r.status, tt.want)
				continue
			}
			switch {
			case tt.want != http.StatusOK && r.body != "":
				t.Errorf("%s %s %q: %d with %d body bytes", tt.method, o.path, tt.hdr, r.status, len(r.body))
			case tt.want == http.StatusOK && tt.method == "GET" && r.body != whole.body:
				t.Errorf("%s %s %q: 200 with %d bytes, not the whole object", tt.method, o.path, tt.hdr, len(r.body))
			case tt.want == http.StatusNotModified && r.header.Get("Etag") != etag:
				t.Errorf("%s %s %q: 304 without the ETag (%q)", tt.method, o.path, tt.hdr, r.header.Get("Etag"))
			}
		}
	}
}

// TestIfRangeDateNeedsStrongLastModified: an If-Range date is honoured only where the
// object's Last-Modified is a strong validator, at least 60 seconds before its Date (RFC 9110
// §8.8.2.2, §13.1.5): an object changed twice in its Last-Modified second has one date for two
// versions. The edge used to answer such an If-Range with a 206 (http.ServeContent compares
// the date alone), which a client joins to the bytes of the other version it holds.
func TestIfRangeDateNeedsStrongLastModified(t *testing.T) {
	s := slicedEdge(t)
	for _, size := range []int{1000, 9<<20 + 5} { // stored whole, sliced
		for _, lmAgo := range []string{"0", "30", "3600"} {
			path := fmt.Sprintf("/ifr-%d-%s", size, lmAgo)
			target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600", "lm", lmAgo)
			body := originBytes(t, path, 1, size)
			whole := s.get(t, target)
			lm := whole.header.Get("Last-Modified")
			if whole.status != http.StatusOK || lm == "" {
				t.Fatalf("%s: status %d, Last-Modified %q", path, whole.status, lm)
			}
			strong := lmAgo == "3600" // under 60 s before Date is weak (RFC 9110 §8.8.2.2)
			r := s.get(t, target, "Range", "bytes=10-19", "If-Range", lm)
			switch {
			case strong && (r.status != http.StatusPartialContent || r.body != string(body[10:20])):
				t.Errorf("%s: If-Range %q with a Last-Modified an hour before Date: status %d, want 206", path, lm, r.status)
			case !strong && (r.status != http.StatusOK || r.body != string(body) || r.header.Get("Content-Range") != ""):
				t.Errorf("%s: If-Range %q with Last-Modified = Date (weak): status %d, Content-Range %q; want 200 with the whole object",
					path, lm, r.status, r.header.Get("Content-Range"))
			}
			if r := s.get(t, target, "Range", "bytes=10-19", "If-Range", "Sun, 01 Nov 2026 09:00:00 GMT"); r.status != http.StatusOK {
				t.Errorf("%s: If-Range with another date: status %d, want 200", path, r.status)
			}
		}
	}
}

// TestZeroLengthSuffixRange: a suffix range that selects no byte, bytes=-0 (unsatisfiable, RFC
// 9110 §14.1.1) or any suffix of an empty object, got a 206 of no bytes from
// http.ServeContent, with a Content-Range whose last byte precedes its first (bytes 10-9/10:
// invalid, RFC 9110 §14.4). bytes=-0 now gets a 416 and is skipped beside other ranges; a
// suffix of an empty object, satisfiable but without a byte to send, gets the empty 200.
func TestZeroLengthSuffixRange(t *testing.T) {
	s := slicedEdge(t)
	for _, kind := range []struct {
		name string
		size int
	}{{"stored", 100 << 10}, {"sliced", 9<<20 + 5}} {
		t.Run(kind.name, func(t *testing.T) {
			size := kind.size
			path := "/suffix0-" + kind.name
			target := obj(path, "size", strconv.Itoa(size), "cc", "max-age=600")
			body := originBytes(t, path, 1, size)
			s.get(t, target)
			if r := s.get(t, target, "Range", "bytes=-0"); r.status != http.StatusRequestedRangeNotSatisfiable ||
				r.header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
				t.Errorf("bytes=-0: status %d, Content-Range %q; want 416, bytes */%d", r.status, r.header.Get("Content-Range"), size)
			}
			r := s.get(t, target, "Range", "bytes=0-1,-0")
			if cr := fmt.Sprintf("bytes 0-1/%d", size); r.status != http.StatusPartialContent || r.header.Get("Content-Range") != cr || r.body != string(body[:2]) {
				t.Errorf("bytes=0-1,-0: status %d, Content-Range %q, Content-Type %q; want 206, %s", r.status, r.header.Get("Content-Range"), r.header.Get("Content-Type"), cr)
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		target := obj("/suffix0-empty", "size", "0", "cc", "max-age=600")
		s.get(t, target)
		if r := s.get(t, target, "Range", "bytes=-5"); r.status != http.StatusOK || r.header.Get("Content-Range") != "" || r.header.Get("Content-Length") != "0" {
			t.Errorf("bytes=-5 of an empty object: status %d, Content-Range %q, Content-Length %q; want 200, none, 0",
				r.status, r.header.Get("Content-Range"), r.header.Get("Content-Length"))
		}
	})
}

// TestRangeOnHeadIgnored: GET is the only method range handling is defined for, and a server
// must ignore a Range on any other (RFC 9110 §14.2): a HEAD with a Range gets the header of
// the whole 200, as from Varnish and Apache httpd, over every protocol and on every way an
// answer takes. It got the 206's header (http.ServeContent's), and a Range past the end a
// 416.
func TestRangeOnHeadIgnored(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	for pi, c := range everyProtocol(t, n) {
		for _, kind := range answerKinds() {
			for i, rng := range []string{"bytes=0-9", "bytes=5-", "bytes=-3", "bytes=0-1,5-6", fmt.Sprintf("bytes=%d-", kind.size)} {
				path := fmt.Sprintf("/head-range-%d-%s-%d", pi, kind.name, i)
				target := obj(path, "size", strconv.Itoa(kind.size), "cc", kind.cc)
				kind.prepare(t, s, c, target)
				r := c.do(t, http.MethodHead, target, "Range", rng)
				if r.status != http.StatusOK || r.header.Get("Content-Length") != strconv.Itoa(kind.size) || r.header.Get("Content-Range") != "" {
					t.Errorf("%s %s: HEAD with Range %q: status %d, Content-Length %q, Content-Range %q; want 200, %d, none",
						c.name, kind.name, rng, r.status, r.header.Get("Content-Length"), r.header.Get("Content-Range"), kind.size)
				}
			}
		}
	}
}

// TestAcceptRangesOnStoredAnswers: a stored 200 is served in ranges whatever its origin does
// (rangeChecked), and every 200 of it says so with Accept-Ranges: bytes (RFC 9110 §14.3), as
// nginx's and Varnish's cached answers do, over every protocol, on a hit, a miss and a stale
// copy alike. From an origin that sends none (norange=1), a plain GET's 200 said nothing,
// while a conditional one's, answered by http.ServeContent, said bytes.
func TestAcceptRangesOnStoredAnswers(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	for pi, c := range everyProtocol(t, n) {
		for _, kind := range answerKinds() {
			if kind.name == "sliced" || kind.name == "streamed" {
				continue // sliced: TestFirstSliceKeepsAcceptRanges; streamed: the origin's answer
			}
			path := fmt.Sprintf("/accept-ranges-%d-%s", pi, kind.name)
			target := obj(path, "size", strconv.Itoa(kind.size), "cc", kind.cc, "norange", "1")
			kind.prepare(t, s, c, target)
			for _, hdr := range [][]string{nil, {"If-None-Match", `"other"`}} {
				r := c.do(t, http.MethodGet, target, hdr...)
				if r.status != http.StatusOK || r.header.Get("Accept-Ranges") != "bytes" {
					t.Errorf("%s %s %q: status %d, Accept-Ranges %q; want 200, bytes", c.name, kind.name, hdr, r.status, r.header.Get("Accept-Ranges"))
				}
			}
			if r := c.do(t, http.MethodGet, target, "Range", "bytes=0-9"); r.status != http.StatusPartialContent || len(r.body) != 10 {
				t.Errorf("%s %s: Range bytes=0-9: status %d, %d bytes; want 206, 10", c.name, kind.name, r.status, len(r.body))
			}
		}
	}
}

// TestAcceptRangesAfterNotModified: a 304 that refreshes a stored 200 leaves it saying
// Accept-Ranges: bytes, as it is served (rangeChecked), even when the 304 says none, as its
// origin's 200 did: the field is the edge's, not the origin's, for a kept copy. Refreshed
// with the 304's, the copy said none while every Range got a 206.
func TestAcceptRangesAfterNotModified(t *testing.T) {
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Accept-Ranges", "none")
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("0123456789abcdef"))
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
	get := func(hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+n.Addr()+"/ar", nil)
		req.Host = testHost
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i, want := range []string{"miss", "revalidated", "revalidated again"} {
		r := get()
		if r.StatusCode != http.StatusOK || r.Header.Get("Accept-Ranges") != "bytes" {
			t.Errorf("GET %d (%s): status %d, Accept-Ranges %q, Cache-Status %q; want 200, bytes",
				i, want, r.StatusCode, r.Header.Get("Accept-Ranges"), r.Header.Get("Cache-Status"))
		}
	}
	if r := get("Range", "bytes=0-3"); r.StatusCode != http.StatusPartialContent {
		t.Errorf("GET with Range bytes=0-3: status %d, want 206", r.StatusCode)
	}
}
