package edge

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/origin"
	"github.com/meridian-cdn/meridian/wire"
)

// answerKinds are the ways an answer to a GET reaches its client, each a target for one
// request: "stored" (a fresh hit), "miss" (the request that fills the cache, answered from
// the body as it is kept), "stale" (a copy served stale while it is revalidated), "sliced"
// (an object over max_object_bytes, kept in slices) and "streamed" (an answer not stored,
// passed on as it arrives). prepare makes the next request for the target one of that
// kind; size is the object's.
type answerKind struct {
	name    string
	size    int
	cc      string
	prepare func(t *testing.T, s *single, c protoClient, target string)
}

func answerKinds() []answerKind {
	warm := func(t *testing.T, s *single, c protoClient, target string) {
		t.Helper()
		if r := c.do(t, http.MethodGet, target); r.status != http.StatusOK {
			t.Fatalf("%s: warming %s: status %d", c.name, target, r.status)
		}
	}
	return []answerKind{
		{"stored", 1000, "max-age=600", warm},
		{"miss", 1000, "max-age=600", func(*testing.T, *single, protoClient, string) {}},
		{"stale", 1000, "max-age=1, stale-while-revalidate=600", func(t *testing.T, s *single, c protoClient, target string) {
			warm(t, s, c, target)
			s.clock.Advance(10 * time.Second)
		}},
		{"sliced", 9<<20 + 5, "max-age=600", warm},
		{"streamed", 1000, "no-store", func(*testing.T, *single, protoClient, string) {}},
	}
}

// TestConditionalFieldLines: an If-Match or If-None-Match sent as several field lines is one
// list (RFC 9110 §5.3, §13.1.1, §13.1.2), over every protocol and on every way an answer
// takes. From a kept object (http.ServeContent, which reads the first line alone) a list whose
// second line named the object got a 412 to If-Match and the whole 200 to If-None-Match; an
// answer passed on as it streams read both lines.
func TestConditionalFieldLines(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	tests := []struct {
		name   string
		method string
		hdr    []string // ETAG stands for the object's entity-tag
		want   int
	}{
		{"if-none-match second line", http.MethodGet, []string{"If-None-Match", `"x"`, "If-None-Match", "ETAG"}, http.StatusNotModified},
		{"if-none-match second line head", http.MethodHead, []string{"If-None-Match", `"x"`, "If-None-Match", "ETAG"}, http.StatusNotModified},
		{"if-none-match no line", http.MethodGet, []string{"If-None-Match", `"x"`, "If-None-Match", `"y"`}, http.StatusOK},
		{"if-match second line", http.MethodGet, []string{"If-Match", `"x"`, "If-Match", "ETAG"}, http.StatusOK},
		{"if-match no line", http.MethodGet, []string{"If-Match", `"x"`, "If-Match", `"y"`}, http.StatusPreconditionFailed},
	}
	for pi, c := range everyProtocol(t, n) {
		for _, kind := range answerKinds() {
			for i, tt := range tests {
				path := fmt.Sprintf("/lines-%d-%s-%d", pi, kind.name, i)
				target := obj(path, "size", strconv.Itoa(kind.size), "cc", kind.cc)
				kind.prepare(t, s, c, target)
				etag := origin.ETag(path, 1, kind.size)
				hdr := append([]string(nil), tt.hdr...)
				for j := range hdr {
					hdr[j] = strings.ReplaceAll(hdr[j], "ETAG", etag)
				}
				r := c.do(t, tt.method, target, hdr...)
				if kind.name == "stale" && !strings.Contains(r.header.Get("Cache-Status"), "detail=stale-while-revalidate") {
					t.Errorf("%s %s %s: Cache-Status %q, want a stale copy", c.name, kind.name, tt.name, r.header.Get("Cache-Status"))
				}
				if r.status != tt.want {
					t.Errorf("%s %s %s: status %d, want %d", c.name, kind.name, tt.name, r.status, tt.want)
				} else if tt.want == http.StatusOK && tt.method == http.MethodGet && len(r.body) != kind.size {
					t.Errorf("%s %s %s: 200 with %d bytes, want %d", c.name, kind.name, tt.name, len(r.body), kind.size)
				}
			}
		}
	}
}

// TestConditionalDates: If-Modified-Since and If-Unmodified-Since are read as RFC 9110
// §13.1.3 and §13.1.4 have them read, over every protocol and on every way an answer takes.
// A field sent as several lines is a list of dates and is ignored (http.ServeContent read
// the first line: a 304 or 412), and an If-Modified-Since later than the edge's clock is
// ignored, as by Varnish (RFC 2616's "a date later than the server's current time is
// invalid"): no Last-Modified the edge holds is later, so a client whose clock runs ahead got
// a 304 for whatever version it held, also one older than the object.
func TestConditionalDates(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	tests := []struct {
		name string
		hdr  []string // LM is the object's Last-Modified, EARLIER an hour before, FUTURE an hour after the clock
		want int
	}{
		{"if-modified-since last-modified", []string{"If-Modified-Since", "LM"}, http.StatusNotModified},
		{"if-modified-since earlier", []string{"If-Modified-Since", "EARLIER"}, http.StatusOK},
		{"if-modified-since future", []string{"If-Modified-Since", "FUTURE"}, http.StatusOK},
		{"if-modified-since two lines", []string{"If-Modified-Since", "LM", "If-Modified-Since", "LM"}, http.StatusOK},
		{"if-modified-since invalid", []string{"If-Modified-Since", "yesterday"}, http.StatusOK},
		{"if-unmodified-since earlier", []string{"If-Unmodified-Since", "EARLIER"}, http.StatusPreconditionFailed},
		{"if-unmodified-since two lines", []string{"If-Unmodified-Since", "EARLIER", "If-Unmodified-Since", "EARLIER"}, http.StatusOK},
	}
	for pi, c := range everyProtocol(t, n) {
		for _, kind := range answerKinds() {
			for i, tt := range tests {
				path := fmt.Sprintf("/dates-%d-%s-%d", pi, kind.name, i)
				target := obj(path, "size", strconv.Itoa(kind.size), "cc", kind.cc, "lm", "3600")
				kind.prepare(t, s, c, target)
				now := s.clock.Now()
				lm := now.Add(-time.Hour)
				if kind.name == "stale" {
					lm = lm.Add(-10 * time.Second) // the clock moved on after the fill
				}
				hdr := append([]string(nil), tt.hdr...)
				for j, v := range hdr {
					switch v {
					case "LM":
						hdr[j] = lm.Format(http.TimeFormat)
					case "EARLIER":
						hdr[j] = lm.Add(-time.Hour).Format(http.TimeFormat)
					case "FUTURE":
						hdr[j] = now.Add(time.Hour).Format(http.TimeFormat)
					}
				}
				r := c.do(t, http.MethodGet, target, hdr...)
				if r.status != tt.want {
					t.Errorf("%s %s %s: status %d, want %d", c.name, kind.name, tt.name, r.status, tt.want)
				} else if tt.want == http.StatusOK && len(r.body) != kind.size {
					t.Errorf("%s %s %s: 200 with %d bytes, want %d", c.name, kind.name, tt.name, len(r.body), kind.size)
				}
			}
		}
	}
}

// TestModifiedSinceTheObjectsDate: an If-Modified-Since later than the edge's clock is ignored
// only when it is later than the object's Last-Modified too. An origin whose clock runs ahead
// of the edge's gives a Last-Modified in the edge's future (RFC 9110 §8.8.2.1 bounds it by the
// origin's own Date only), and a client, or a fleet node revalidating its copy, that sends it
// back holds exactly that version: ignored, it got the whole object again instead of a 304.
func TestModifiedSinceTheObjectsDate(t *testing.T) {
	lm := time.Now().Add(time.Hour).Truncate(time.Second) // the origin's clock is an hour ahead
	addr := startHTTP(t, "127.0.0.10", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", lm.Format(http.TimeFormat))
		w.Header().Set("Cache-Control", r.URL.Query().Get("cc"))
		w.Write([]byte("0123456789"))
	}))
	n, _ := startEdge(t, listen(t, "127.0.0.11"), Config{PoP: "tst", Node: "e1",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + addr}}})
	do := func(method, target string, hdr ...string) int {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+n.Addr()+target, nil)
		req.Host = testHost
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, kind := range []struct{ name, cc string }{{"stored", "max-age=600"}, {"streamed", "no-store"}} {
		target := "/future-lm?cc=" + kind.cc
		do(http.MethodGet, target) // stored, if it is to be
		for _, tt := range []struct {
			name string
			ims  time.Time
			want int
		}{
			{"its own Last-Modified", lm, http.StatusNotModified},
			{"later than it and than the clock", lm.Add(time.Second), http.StatusOK},
		} {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				if got := do(method, target, "If-Modified-Since", tt.ims.Format(http.TimeFormat)); got != tt.want {
					t.Errorf("%s %s, If-Modified-Since %s: status %d, want %d", kind.name, method, tt.name, got, tt.want)
				}
			}
		}
	}
}

// TestOwnErrorsNotStorable: a 412 or a 416 the edge makes itself about an object (a
// precondition that fails against it, a range past its end) is no representation of it, and
// must not carry its freshness (Cache-Control, Expires, CDN-Cache-Control), with which RFC 9111
// §3 lets any cache store a 412 or 416 and serve it to the URL's other clients, nor the fields
// of content it does not have (a 412's Content-Type, Content-Encoding). It says Cache-Control:
// no-store, as the edge's other own errors. A 412 keeps the validators it failed against
// (ETag, Last-Modified), and a 304 all the object's fields (RFC 9110 §15.4.5). Over every
// protocol and on every way an answer takes, with "too large" an answer kept neither whole nor
// in slices (no ETag). The 412 carried the object's freshness and (kept) its Content-Type, the
// 416 its Expires and CDN-Cache-Control.
func TestOwnErrorsNotStorable(t *testing.T) {
	s, n := tlsEdge(t, TLSConfig{Dev: true})
	tests := []struct {
		name   string
		method string
		hdr    []string // EARLIER stands for an hour before the object's Last-Modified, END for its size
		want   int
	}{
		{"if-match", http.MethodGet, []string{"If-Match", `"nope"`}, http.StatusPreconditionFailed},
		{"if-match head", http.MethodHead, []string{"If-Match", `"nope"`}, http.StatusPreconditionFailed},
		{"if-unmodified-since", http.MethodGet, []string{"If-Unmodified-Since", "EARLIER"}, http.StatusPreconditionFailed},
		{"if-match with range", http.MethodGet, []string{"If-Match", `"nope"`, "Range", "bytes=0-9"}, http.StatusPreconditionFailed},
		{"range past the end", http.MethodGet, []string{"Range", "bytes=END-"}, http.StatusRequestedRangeNotSatisfiable},
		{"not modified", http.MethodGet, []string{"If-None-Match", "*"}, http.StatusNotModified},
	}
	kinds := append(answerKinds(), answerKind{"too large", 9<<20 + 5, "max-age=600", func(*testing.T, *single, protoClient, string) {}})
	for pi, c := range everyProtocol(t, n) {
		for _, kind := range kinds {
			for i, tt := range tests {
				path := fmt.Sprintf("/own-%d-%s-%d", pi, strings.ReplaceAll(kind.name, " ", "-"), i)
				params := []string{"size", strconv.Itoa(kind.size), "cc", kind.cc, "cdncc", kind.cc, "lm", "3600", "expires", "600"}
				if kind.name == "too large" {
					params = append(params, "etag", "0")
				}
				target := obj(path, params...)
				kind.prepare(t, s, c, target)
				lm := s.clock.Now().Add(-time.Hour)
				if kind.name == "stale" {
					lm = lm.Add(-10 * time.Second) // the clock moved on after the fill
				}
				hdr := append([]string(nil), tt.hdr...)
				for j, v := range hdr {
					v = strings.ReplaceAll(v, "EARLIER", lm.Add(-time.Hour).Format(http.TimeFormat))
					hdr[j] = strings.ReplaceAll(v, "END", strconv.Itoa(kind.size))
				}
				r := c.do(t, tt.method, target, hdr...)
				at := fmt.Sprintf("%s %s %s", c.name, kind.name, tt.name)
				if r.status != tt.want {
					t.Errorf("%s: status %d, want %d", at, r.status, tt.want)
					continue
				}
				if tt.want == http.StatusNotModified {
					if got := r.header.Values("Cache-Control"); len(got) != 1 || got[0] != kind.cc || r.header.Get("Expires") == "" || r.header.Get("Cdn-Cache-Control") != kind.cc {
						t.Errorf("%s: 304 with Cache-Control %q, Expires %q, CDN-Cache-Control %q; want the object's", at, got, r.header.Get("Expires"), r.header.Get("Cdn-Cache-Control"))
					}
					continue
				}
				if got := r.header.Values("Cache-Control"); len(got) != 1 || got[0] != "no-store" {
					t.Errorf("%s: Cache-Control %q, want no-store", at, got)
				}
				for _, k := range []string{"Expires", "Cdn-Cache-Control", "Content-Encoding"} {
					if v, ok := r.header[k]; ok {
						t.Errorf("%s: %s %q, want none", at, k, v)
					}
				}
				switch tt.want {
				case http.StatusPreconditionFailed:
					if v, ok := r.header["Content-Type"]; ok || r.body != "" {
						t.Errorf("%s: Content-Type %q and %d body bytes, want none", at, v, len(r.body))
					}
					etag := origin.ETag(path, 1, kind.size)
					if kind.name == "too large" {
						etag = ""
					}
					if r.header.Get("Etag") != etag || r.header.Get("Last-Modified") == "" {
						t.Errorf("%s: ETag %q, Last-Modified %q; want the object's %q and its date", at, r.header.Get("Etag"), r.header.Get("Last-Modified"), etag)
					}
				case http.StatusRequestedRangeNotSatisfiable:
					if got, want := r.header.Get("Content-Range"), fmt.Sprintf("bytes */%d", kind.size); got != want {
						t.Errorf("%s: Content-Range %q, want %q", at, got, want)
					}
				}
			}
		}
	}
}
