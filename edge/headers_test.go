package edge

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestFieldValuesIndependent: the slices fieldValues hands out share one array, yet appending
// to one (as Header.Add does) never changes another, also once the array has grown.
func TestFieldValuesIndependent(t *testing.T) {
	vals := fieldValues{a: make([]string, 0, 2)}
	var got [][]string
	for _, v := range []string{"a", "b", "c", "d"} {
		got = append(got, vals.one(v))
	}
	got[0] = append(got[0], "a2")
	got[2] = append(got[2], "c2")
	want := [][]string{{"a", "a2"}, {"b"}, {"c", "c2"}, {"d"}}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("field %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// TestKeptValuesIndependent: the field values a request keeps in its own bytes (spare, keep)
// each stay as written while later ones are appended, also once one has outgrown those bytes,
// and the small ones cost no allocation.
func TestKeptValuesIndependent(t *testing.T) {
	req := &request{}
	long := strings.Repeat("x", len(req.text)+10)
	var got []string
	for _, v := range []string{"12", "tst-e1; hit; ttl=59", long, "", "4096"} {
		got = append(got, req.keep(append(req.spare(), v...)))
	}
	for i, want := range []string{"12", "tst-e1; hit; ttl=59", long, "", "4096"} {
		if got[i] != want {
			t.Errorf("value %d = %q, want %q", i, got[i], want)
		}
	}
	if req.used != len("12tst-e1; hit; ttl=594096") {
		t.Errorf("%d bytes of the request's used, want %d", req.used, len("12tst-e1; hit; ttl=594096"))
	}
	fresh := &request{}
	if a := testing.AllocsPerRun(100, func() {
		fresh.used = 0
		fresh.keep(strconv.AppendInt(fresh.spare(), 1024, 10))
	}); a != 0 {
		t.Errorf("keeping a short value: %v allocations, want 0", a)
	}
}

// TestUpstreamHeaderSized: a fill of a request without fields gets the ownFields fields
// upstreamHeader sets, so its map is sized to hold them (and the caller's extra ones) without
// growing, and such a map takes fewer allocations than one sized for more.
func TestUpstreamHeaderSized(t *testing.T) {
	s := newSingle(t, nil)
	hs := (*s.edge.hosts.Load())[testHost]
	build := func(h http.Header, extra int) (http.Header, float64) {
		r := httptest.NewRequest(http.MethodGet, "http://"+testHost+"/a", nil)
		r.Header = h
		req := &request{r: r, host: hs, target: "/a", path: "/a"}
		var out http.Header
		allocs := testing.AllocsPerRun(50, func() { out = s.edge.upstreamHeader(req, sharedFill, extra) })
		return out, allocs
	}
	bare, bareAllocs := build(http.Header{}, 0)
	if len(bare) != ownFields {
		t.Errorf("a fill without client fields has %d fields, want ownFields = %d: %v", len(bare), ownFields, bare)
	}
	_, roomy := build(http.Header{}, 1)
	if bareAllocs >= roomy {
		t.Errorf("upstreamHeader allocations: %v sized for its own fields, %v for one more; want fewer", bareAllocs, roomy)
	}
	t.Logf("allocations: %v for %d fields, %v with room for one more", bareAllocs, len(bare), roomy)
}

// TestUpstreamHeaderSkipsConnectionOptions: serve removed the fields a client's Connection
// names as the request arrived, and upstreamHeader does not read that list again. It tested
// every field against every option, a cost of fields times options that a client chooses: 64
// ms of CPU for a miss whose head is within the default 64 KiB bound (BenchmarkUpstreamHeader/
// options). Reading the list takes allocations (its options canonicalised, the list grown),
// which are counted here; the request's own fields go as before.
func TestUpstreamHeaderSkipsConnectionOptions(t *testing.T) {
	s := newSingle(t, nil)
	hs := (*s.edge.hosts.Load())[testHost]
	var opts []string
	for i := range 64 {
		opts = append(opts, "x-option-"+strconv.Itoa(i))
	}
	allocs := func(conn string) (float64, http.Header) {
		r := httptest.NewRequest(http.MethodGet, "http://"+testHost+"/a", nil)
		r.Header = http.Header{"Connection": {conn}, "Accept": {"text/plain"}, "X-Custom": {"1"}}
		req := &request{r: r, host: hs, target: "/a", path: "/a"}
		var out http.Header
		return testing.AllocsPerRun(50, func() { out = s.edge.upstreamHeader(req, sharedFill, 0) }), out
	}
	base, _ := allocs("keep-alive")
	named, out := allocs(strings.Join(opts, ", "))
	if named != base {
		t.Errorf("upstreamHeader allocations: %v for a Connection naming %d options, %v for keep-alive; want the same", named, len(opts), base)
	}
	if out.Get("Accept") != "text/plain" || out.Get("X-Custom") != "1" || out["Connection"] != nil {
		t.Errorf("upstream header %v: want the client's Accept and X-Custom, and no Connection", out)
	}
}

// BenchmarkUpstreamHeader: the header of a shared fill, for a request without fields (as a
// load generator sends), for a browser's, and for a hostile one whose Connection names
// thousands of options (connectionOptionsHeader).
func BenchmarkUpstreamHeader(b *testing.B) {
	s := newSingleB(b)
	hs := (*s.edge.hosts.Load())[testHost]
	browser := http.Header{
		"User-Agent":                {"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"},
		"Accept":                    {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		"Accept-Language":           {"en-US,en;q=0.5"},
		"Accept-Encoding":           {"gzip"},
		"Connection":                {"keep-alive"},
		"Upgrade-Insecure-Requests": {"1"},
		"Sec-Fetch-Dest":            {"document"},
		"Sec-Fetch-Mode":            {"navigate"},
		"Referer":                   {"https://example.com/"},
		"Cookie":                    {"session=abc"},
	}
	for _, c := range []struct {
		name string
		h    http.Header
	}{{"bare", http.Header{}}, {"browser", browser}, {"options", connectionOptionsHeader()}} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "http://"+testHost+"/a", nil)
			r.Header = c.h
			req := &request{r: r, host: hs, target: "/a", path: "/a"}
			b.ReportAllocs()
			for b.Loop() {
				s.edge.upstreamHeader(req, sharedFill, 0)
			}
		})
	}
}

// connectionOptionsHeader is a request's header as serve leaves it for upstreamHeader, from a
// head within the default 64 KiB bound: 3,844 fields, and a Connection naming 7,688 other
// fields (those named are gone, RemoveConnectionOptions).
func connectionOptionsHeader() http.Header {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	h := http.Header{}
	var opts []string
	for _, a := range alnum {
		for _, b := range alnum {
			h["F"+string(a)+string(b)] = []string{""}
			opts = append(opts, "G"+string(a)+string(b), "H"+string(a)+string(b))
		}
	}
	h["Connection"] = []string{strings.Join(opts, ",")}
	return h
}
