package httpcache

import (
	"net/http"
	"net/url"
	"reflect"
	"testing"
)

func TestRemoveHopByHop(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{"standard fields", hdr("Connection", "keep-alive", "Keep-Alive", "timeout=5", "Proxy-Connection", "x",
			"Proxy-Authenticate", "Basic", "Proxy-Authorization", "Basic x", "TE", "trailers", "Trailer", "X-Sum",
			"Transfer-Encoding", "chunked", "Upgrade", "h2c", "Content-Type", "text/plain"),
			hdr("Content-Type", "text/plain")},
		{"fields named in Connection", hdr("Connection", "X-Trace, x-hop", "Connection", " X-Other ", "X-Trace", "1", "X-Hop", "2", "X-Other", "3", "X-Keep", "4"),
			hdr("X-Keep", "4")},
		{"nothing to remove", hdr("Cache-Control", "max-age=1"), hdr("Cache-Control", "max-age=1")},
		{"empty Connection members", hdr("Connection", ",,", "ETag", `"a"`), hdr("ETag", `"a"`)},
		{"close and keep-alive in any case", hdr("Connection", "Keep-Alive, CLOSE", "Close", "x", "Keep-Alive", "timeout=5", "X-Keep", "4"),
			hdr("X-Keep", "4")},
		// Not field names: Del deleted nothing for them, and no Unicode folding makes them
		// close or keep-alive.
		{"non-ASCII options", hdr("Connection", "clo\u017fe, \u212aeep-alive", "Close", "x", "X-Keep", "4"),
			hdr("Close", "x", "X-Keep", "4")},
	}
	// The options every answer names cost no allocation (issue 15).
	h := hdr("Connection", "keep-alive", "Keep-Alive", "timeout=5", "Content-Type", "text/plain")
	if n := testing.AllocsPerRun(100, func() {
		h["Connection"] = []string{"keep-alive"}
		RemoveHopByHop(h)
	}); n > 1 { // the one-value slice put back each run
		t.Errorf("RemoveHopByHop of Connection: keep-alive: %v allocations, want 1", n)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.in.Clone()
			RemoveHopByHop(h)
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("RemoveHopByHop(%v) = %v, want %v", tt.in, h, tt.want)
			}
			// RemoveConnectionOptions, then IsHopByHop field by field, keep what
			// RemoveHopByHop leaves.
			h = tt.in.Clone()
			RemoveConnectionOptions(h)
			kept := http.Header{}
			for k, v := range h {
				if !IsHopByHop(k) {
					kept[k] = v
				}
			}
			if !reflect.DeepEqual(kept, tt.want) {
				t.Errorf("the fields IsHopByHop keeps of %v without its Connection options: %v, want %v", tt.in, kept, tt.want)
			}
		})
	}
}

// TestRemoveConnectionOptions: the fields Connection names go, the hop-by-hop fields (named or
// not) stay for the recipient: an upgrade needs its Connection and Upgrade.
func TestRemoveConnectionOptions(t *testing.T) {
	for _, tt := range []struct {
		name     string
		in, want http.Header
	}{
		{"named fields", hdr("Connection", "X-Trace, accept-language", "Connection", " X-Other ", "X-Trace", "1",
			"Accept-Language", "de", "X-Other", "3", "Accept", "text/plain"),
			hdr("Connection", "X-Trace, accept-language", "Connection", " X-Other ", "Accept", "text/plain")},
		{"an upgrade", hdr("Connection", "Upgrade, X-Trace", "Upgrade", "websocket", "X-Trace", "1", "Te", "trailers"),
			hdr("Connection", "Upgrade, X-Trace", "Upgrade", "websocket", "Te", "trailers")},
		{"close and keep-alive", hdr("Connection", "CLOSE, Keep-Alive", "Close", "x", "Keep-Alive", "timeout=5"),
			hdr("Connection", "CLOSE, Keep-Alive", "Keep-Alive", "timeout=5")},
		{"non-ASCII options", hdr("Connection", "clo\u017fe", "Close", "x"), hdr("Connection", "clo\u017fe", "Close", "x")},
		{"no Connection", hdr("X-Trace", "1"), hdr("X-Trace", "1")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.in.Clone()
			RemoveConnectionOptions(h)
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("RemoveConnectionOptions(%v) = %v, want %v", tt.in, h, tt.want)
			}
		})
	}
	// Every request through the edge pays for it (issue 15).
	h := hdr("Connection", "keep-alive", "Accept", "*/*")
	if n := testing.AllocsPerRun(100, func() { RemoveConnectionOptions(h) }); n != 0 {
		t.Errorf("RemoveConnectionOptions of Connection: keep-alive: %v allocations, want 0", n)
	}
}

func TestRefresh(t *testing.T) {
	tests := []struct {
		name       string
		stored, nm http.Header
		want       http.Header
	}{
		{"fields replaced and added",
			hdr("Date", "old", "Cache-Control", "max-age=60", "ETag", `"v1"`, "Content-Type", "text/html", "X-Old", "kept"),
			hdr("Date", "new", "Cache-Control", "max-age=120", "X-New", "1", "X-New", "2"),
			hdr("Date", "new", "Cache-Control", "max-age=120", "ETag", `"v1"`, "Content-Type", "text/html", "X-Old", "kept", "X-New", "1", "X-New", "2")},
		{"content fields the 304 may not change",
			hdr("Content-Length", "100", "Content-Encoding", "gzip", "Content-Type", "text/html"),
			hdr("Content-Length", "0", "Content-Encoding", "br", "Content-Range", "bytes 0-1/2", "Content-Type", "text/plain"),
			hdr("Content-Length", "100", "Content-Encoding", "gzip", "Content-Type", "text/plain")},
		{"hop-by-hop of both dropped",
			hdr("Connection", "X-A", "X-A", "1", "Keep-Alive", "timeout=5", "ETag", `"v1"`),
			hdr("Connection", "X-B", "X-B", "2", "Transfer-Encoding", "chunked", "Age", "3"),
			hdr("ETag", `"v1"`, "Age", "3")},
		{"empty 304", hdr("ETag", `"v1"`), http.Header{}, hdr("ETag", `"v1"`)},
		{"a weak tag stays weak", hdr("ETag", `W/"v1"`), hdr("ETag", `"v1"`, "Age", "1"), hdr("ETag", `W/"v1"`, "Age", "1")},
		{"a strong tag may become weak", hdr("ETag", `"v1"`), hdr("ETag", `W/"v1"`), hdr("ETag", `W/"v1"`)},
		{"nil stored", nil, hdr("Age", "1"), hdr("Age", "1")},
		{"non-canonical 304 key", hdr("Cache-Control", "max-age=1"), http.Header{"cache-control": {"max-age=2"}}, hdr("Cache-Control", "max-age=2")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stored, nm := tt.stored.Clone(), tt.nm.Clone()
			got := Refresh(stored, nm)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Refresh(%v, %v) = %v, want %v", tt.stored, tt.nm, got, tt.want)
			}
			if !reflect.DeepEqual(stored, tt.stored) || !reflect.DeepEqual(nm, tt.nm) {
				t.Errorf("Refresh modified its arguments: %v, %v", stored, nm)
			}
		})
	}
}

// TestNotModifiedSelects: a 304 updates the stored response only when its validators name
// that response (RFC 9111 §4.3.4); a bare 304 is taken as the answer to what was sent.
func TestNotModifiedSelects(t *testing.T) {
	const lm1, lm2 = "Wed, 01 Jan 2020 00:00:00 GMT", "Thu, 02 Jan 2020 00:00:00 GMT"
	tests := []struct {
		name     string
		etag, lm string // stored
		nm       http.Header
		want     bool
	}{
		{"same strong tag", `"v1"`, "", hdr("ETag", `"v1"`), true},
		{"other strong tag", `"v1"`, "", hdr("ETag", `"v2"`), false},
		{"other strong tag, same date", `"v1"`, lm1, hdr("ETag", `"v2"`, "Last-Modified", lm1), false},
		{"same strong tag, new date", `"v1"`, lm1, hdr("ETag", `"v1"`, "Last-Modified", lm2), true},
		{"strong tag, stored weak", `W/"v1"`, "", hdr("ETag", `"v1"`), true},
		{"other strong tag, stored weak", `W/"v1"`, "", hdr("ETag", `"v2"`), false},
		{"weak tag, stored strong", `"v1"`, "", hdr("ETag", `W/"v1"`), true},
		{"weak tag, stored weak", `W/"v1"`, "", hdr("ETag", `W/"v1"`), true},
		{"other weak tag", `W/"v1"`, "", hdr("ETag", `W/"v2"`), false},
		{"tag, stored has none", "", lm1, hdr("ETag", `"v1"`, "Last-Modified", lm1), false},
		{"tag with spaces", `"v1"`, "", hdr("ETag", ` "v1" `), true},
		{"malformed tag is none", `"v1"`, lm1, hdr("ETag", `v2`, "Last-Modified", lm1), true},
		{"same date", "", lm1, hdr("Last-Modified", lm1), true},
		{"same date, another form", "", lm1, hdr("Last-Modified", "Wednesday, 01-Jan-20 00:00:00 GMT"), true},
		{"other date", "", lm1, hdr("Last-Modified", lm2), false},
		{"date, stored has none", `"v1"`, "", hdr("Last-Modified", lm1), false},
		{"invalid date is none", "", lm1, hdr("Last-Modified", "yesterday"), true},
		{"bare 304", `"v1"`, lm1, hdr("Cache-Control", "max-age=60"), true},
		{"bare 304, no validators stored", "", "", http.Header{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NotModifiedSelects(tt.etag, tt.lm, tt.nm); got != tt.want {
				t.Errorf("NotModifiedSelects(%q, %q, %v) = %v, want %v", tt.etag, tt.lm, tt.nm, got, tt.want)
			}
		})
	}
}

func TestStripSurrogateHeaders(t *testing.T) {
	h := hdr("Surrogate-Key", "a b", "Cache-Tag", "c", "Cache-Groups", `"g"`, "Cache-Group-Invalidation", `"g"`,
		"Surrogate-Control", "max-age=1", "CDN-Cache-Control", "max-age=1", "Cache-Control", "max-age=5", "ETag", `"x"`)
	StripSurrogateHeaders(h)
	if want := hdr("CDN-Cache-Control", "max-age=1", "Cache-Control", "max-age=5", "ETag", `"x"`); !reflect.DeepEqual(h, want) {
		t.Errorf("StripSurrogateHeaders = %v, want %v", h, want)
	}
}

func TestInvalidationTargets(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name   string
		method string
		req    *url.URL
		status int
		resp   http.Header
		want   []string
	}{
		{"POST invalidates its target", "POST", u("/cart?id=1"), 200, nil, []string{"/cart?id=1"}},
		{"DELETE with Location and Content-Location", "DELETE", u("/items/7"), 204,
			hdr("Location", "/items", "Content-Location", "https://Example.com:443/items/7/gone"),
			[]string{"/items/7", "/items", "/items/7/gone"}},
		{"relative Location resolves against the request", "PUT", u("/a/b/c"), 201, hdr("Location", "d?x=1"), []string{"/a/b/c", "/a/b/d?x=1"}},
		{"cross-host Location ignored", "POST", u("/form"), 303, hdr("Location", "https://evil.example/steal", "Content-Location", "//other.example/x"),
			[]string{"/form"}},
		{"non-http scheme ignored", "POST", u("/form"), 302, hdr("Location", "mailto:a@example.com"), []string{"/form"}},
		{"duplicates removed", "PATCH", u("/x"), 200, hdr("Content-Location", "/x"), []string{"/x"}},
		{"custom unsafe method", "PURGEALL", u("/x"), 200, nil, []string{"/x"}},
		{"empty path is slash", "POST", &url.URL{}, 200, nil, []string{"/"}},
		{"4xx ignored", "POST", u("/x"), 404, hdr("Location", "/y"), nil},
		{"5xx ignored", "DELETE", u("/x"), 500, nil, nil},
		{"1xx ignored", "POST", u("/x"), 100, nil, nil},
		{"GET is safe", "GET", u("/x"), 200, hdr("Location", "/y"), nil},
		{"HEAD is safe", "HEAD", u("/x"), 200, nil, nil},
		{"OPTIONS is safe", "OPTIONS", u("/x"), 200, nil, nil},
		{"TRACE is safe", "TRACE", u("/x"), 200, nil, nil},
		{"nil request URL", "POST", nil, 201, hdr("Location", "/new"), []string{"/new"}},
		{"unparsable Location ignored", "POST", u("/x"), 201, hdr("Location", "http://[::1"), []string{"/x"}},
		// RFC 3986 §5.2.2: a reference with no path and no query keeps the base's query, an
		// empty one included ("/x?" is another resource than "/x": httpcache.KeyForced).
		{"fragment-only Location keeps an empty query", "POST", u("/x?"), 201, hdr("Location", "#f"), []string{"/x?"}},
		{"empty Content-Location keeps an empty query", "POST", u("/x?"), 201, hdr("Content-Location", ""), []string{"/x?"}},
		{"fragment-only Location keeps the query", "POST", u("/x?a=1"), 201, hdr("Location", "#f"), []string{"/x?a=1"}},
		{"query-only Location replaces the query", "POST", u("/x?"), 201, hdr("Location", "?b=2"), []string{"/x?", "/x?b=2"}},
		{"path Location drops the base's empty query", "POST", u("/x?"), 201, hdr("Location", "y"), []string{"/x?", "/y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := InvalidationTargets(tt.method, tt.req, "example.com", tt.status, tt.resp, (*url.URL).EscapedPath)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("InvalidationTargets(%s %v, %d, %v) = %q, want %q", tt.method, tt.req, tt.status, tt.resp, got, tt.want)
			}
		})
	}
}
