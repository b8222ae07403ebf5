package store

import (
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// manyValues is a field with more values than one varint byte counts (127).
func manyValues() []string {
	vs := make([]string, 300)
	for i := range vs {
		vs[i] = fmt.Sprintf("v%d", i)
	}
	return vs
}

// TestStoredHeader checks that a stored object's header, held without a map, reads back as
// the map it was stored from, through every accessor.
func TestStoredHeader(t *testing.T) {
	cases := []struct {
		name string
		h    http.Header
	}{
		{"none", nil},
		{"empty", http.Header{}},
		{"typical", twelveFields(7)},
		{"empty value", http.Header{"X-Empty": {""}, "Content-Type": {"text/plain"}}},
		{"no values", http.Header{"X-None": nil, "X-Zero": {}, "Etag": {`"a"`}}},
		{"300 values", http.Header{"Link": manyValues(), "Etag": {`"b"`}}},
		{"long name", http.Header{"X-" + string(make([]byte, 200)): {"1"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.h.Clone()
			s, _ := newStore(t)
			o := &Object{Primary: "h/p", Host: "h", Path: "/p", Status: 200, Header: c.h,
				StoredAt: time.Now(), Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}}
			if !s.Put(o) {
				t.Fatal("Put refused")
			}
			if o.Header != nil {
				t.Fatalf("Header after Put = %v, want nil", o.Header)
			}
			got := http.Header{}
			for k, vs := range o.HeaderFields() {
				if _, dup := got[k]; dup {
					t.Errorf("field %q twice", k)
				}
				got[k] = vs
			}
			if !sameHeader(got, want) {
				t.Errorf("HeaderFields = %v, want %v", got, want)
			}
			if !sameHeader(o.HeaderMap(), want) {
				t.Errorf("HeaderMap = %v, want %v", o.HeaderMap(), want)
			}
			if o.HeaderLen() != len(want) {
				t.Errorf("HeaderLen = %d, want %d", o.HeaderLen(), len(want))
			}
			for k, vs := range want {
				if g := o.HeaderValues(k); !slices.Equal(g, vs) {
					t.Errorf("HeaderValues(%q) = %q, want %q", k, g, vs)
				}
				if g, w := o.HeaderValue(k), want.Get(k); g != w {
					t.Errorf("HeaderValue(%q) = %q, want %q", k, g, w)
				}
			}
			if g := o.HeaderValue("X-Absent"); g != "" || o.HeaderValues("X-Absent") != nil {
				t.Errorf("absent field = %q", g)
			}
		})
	}
}

// sameHeader compares headers treating a nil and an empty value list alike, as a range over
// the compact form cannot tell them apart (neither can http.Header.Values).
func sameHeader(a, b http.Header) bool {
	norm := func(h http.Header) map[string][]string {
		m := map[string][]string{}
		for k, vs := range h {
			m[k] = append([]string{}, vs...)
		}
		return m
	}
	return maps.EqualFunc(norm(a), norm(b), func(x, y []string) bool { return reflect.DeepEqual(x, y) })
}

// TestStoredHeaderAccessors checks the readers' contract: names canonicalized as
// http.Header.Get does, value slices capped so an append cannot reach the next field, an
// early break of the range, and a copy of a stored object stored again (a slice of a
// manifest) or given a header of its own (a 304's refresh).
func TestStoredHeaderAccessors(t *testing.T) {
	s, _ := newStore(t)
	o := &Object{Primary: "h/p", Host: "h", Path: "/p", Status: 200,
		Header:   http.Header{"Content-Type": {"text/html"}, "Set-Cookie": {"a=1", "b=2"}, "Etag": {`"x"`}},
		StoredAt: time.Now(), Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}}
	s.Put(o)

	if g := o.HeaderValue("content-type"); g != "text/html" {
		t.Errorf(`HeaderValue("content-type") = %q`, g)
	}
	if g := o.HeaderValue("ETag"); g != `"x"` {
		t.Errorf(`HeaderValue("ETag") = %q`, g)
	}
	sc := o.HeaderValues("Set-Cookie")
	_ = append(sc, "c=3")
	if cap(sc) != 2 || !sameHeader(o.HeaderMap(), http.Header{"Content-Type": {"text/html"}, "Set-Cookie": {"a=1", "b=2"}, "Etag": {`"x"`}}) {
		t.Errorf("an append to a value slice (cap %d) changed the object: %v", cap(sc), o.HeaderMap())
	}
	seen := 0
	for range o.HeaderFields() {
		seen++
		break
	}
	if seen != 1 {
		t.Errorf("break after one field saw %d", seen)
	}

	// A copy stored again keeps the header (putSlice).
	c := *o
	c.Part = "\x00slice=1"
	s.Put(&c)
	if !sameHeader(c.HeaderMap(), o.HeaderMap()) {
		t.Errorf("copy stored again: %v, want %v", c.HeaderMap(), o.HeaderMap())
	}
	// A copy given a header of its own reads that header, before and after Put (a 304).
	r := *o
	r.Header = http.Header{"Content-Type": {"text/plain"}}
	if g := r.HeaderValue("Content-Type"); g != "text/plain" || r.HeaderLen() != 1 {
		t.Errorf("refreshed copy before Put: Content-Type %q, %d fields", g, r.HeaderLen())
	}
	s.Put(&r)
	if g := r.HeaderValue("Content-Type"); g != "text/plain" || r.HeaderLen() != 1 || r.HeaderValue("Etag") != "" {
		t.Errorf("refreshed copy after Put: %v", r.HeaderMap())
	}
	if g := o.HeaderValue("Content-Type"); g != "text/html" {
		t.Errorf("the original changed with its copy: Content-Type %q", g)
	}
}

// TestSetHeaderScratch checks the hit path's copy of a stored header (SetHeader) whatever room
// its scratch has: every value read back, the fields that do not fit in the scratch given
// slices of their own, and no value slice able to write into another's or into the store.
func TestSetHeaderScratch(t *testing.T) {
	s, _ := newStore(t)
	links := make([]string, 20)
	for i := range links {
		links[i] = fmt.Sprintf("</%d.css>; rel=preload", i)
	}
	h := http.Header{"Link": links, "Content-Type": {"text/css"}, "X-Multi": {"1", "2", "3"}, "X-Empty": nil}
	want := h.Clone()
	o := &Object{Primary: "h/p", Host: "h", Path: "/p", Status: 200, Header: h,
		StoredAt: time.Now(), Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}}
	if !s.Put(o) {
		t.Fatal("Put refused")
	}
	for _, n := range []int{-1, 0, 1, 3, 16, 40} { // -1: nil
		t.Run(fmt.Sprintf("scratch=%d", n), func(t *testing.T) {
			var scratch []string
			if n >= 0 {
				scratch = make([]string, n)
			}
			got := http.Header{}
			o.SetHeader(got, scratch)
			if !sameHeader(got, want) {
				t.Fatalf("SetHeader = %q, want %q", got, want)
			}
			for k := range got {
				got[k] = append(got[k], "appended")
			}
			again := http.Header{}
			o.SetHeader(again, make([]string, max(n, 0)))
			if !sameHeader(again, want) {
				t.Fatalf("after appending to the values SetHeader gave, the stored header reads %q", again)
			}
			for k, vs := range want {
				if g := got[k]; len(g) != len(vs)+1 || !slices.Equal(g[:len(vs)], vs) {
					t.Errorf("%s after an append to every field = %q: another field's append overwrote it", k, g)
				}
			}
		})
	}
}

// TestLargeHeaderOffsets stores header values and keys that lie past 64 KiB and 16 MiB into the
// arena, where an index entry needs all four bytes of its offsets.
func TestLargeHeaderOffsets(t *testing.T) {
	s, c := newStore(t)
	big, huge := strings.Repeat("b", 70<<10), strings.Repeat("h", 17<<20)
	h := http.Header{"X-Big": {big}, "X-Huge": {huge}, "X-After": {"after"}, "Surrogate-Key": {"k1 k2"}}
	o := object("h", "/large", c.t, "k1", "k2")
	o.Header = h
	if !s.Put(o) {
		t.Fatal("Put refused")
	}
	if o.HeaderValue("X-Big") != big || o.HeaderValue("X-Huge") != huge || o.HeaderValue("X-After") != "after" {
		t.Errorf("values past 64 KiB / 16 MiB read back with lengths %d, %d and %q",
			len(o.HeaderValue("X-Big")), len(o.HeaderValue("X-Huge")), o.HeaderValue("X-After"))
	}
	if fmt.Sprint(o.SurrogateKeys()) != "[k1 k2]" {
		t.Errorf("SurrogateKeys = %q, want [k1 k2]", o.SurrogateKeys())
	}
	c.t = c.t.Add(time.Millisecond)
	s.Purge(Record{Kind: Key, Host: "h", Value: "k2"})
	if got, _, _ := s.Lookup("h/large", nil); got != nil {
		t.Error("purge by key k2 left the object")
	}
}

// BenchmarkSetHeader is the hit path's copy of a stored header into a response's, with the
// request's scratch for the value slices (edge/serve.go).
func BenchmarkSetHeader(b *testing.B) {
	s, _ := newStore(b)
	o := &Object{Primary: "h/p", Host: "h", Path: "/p", Status: 200, Header: twelveFields(1),
		StoredAt: time.Now(), Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}}
	s.Put(o)
	h := make(http.Header, 16)
	var scratch [16]string
	b.ReportAllocs()
	for b.Loop() {
		o.SetHeader(h, scratch[:])
		clear(h)
	}
}

// FuzzStoredHeader stores a header built from arbitrary bytes (fields split at '\n', name and
// values at ':' and ','; a field's value count may pass 127, a varint's first byte) and reads
// it back through every accessor (seeds in testdata/fuzz/FuzzStoredHeader).
func FuzzStoredHeader(f *testing.F) {
	s, _ := newStore(f)
	f.Fuzz(func(t *testing.T, spec string) {
		h := http.Header{}
		for _, line := range strings.Split(spec, "\n") {
			name, vals, ok := strings.Cut(line, ":")
			if !ok {
				h[name] = nil
				continue
			}
			h[name] = append(h[name], strings.Split(vals, ",")...)
		}
		want := h.Clone()
		o := &Object{Primary: "h/p", Host: "h", Path: "/p", Status: 200, Header: h,
			StoredAt: time.Now(), Policy: httpcache.Policy{Storable: true, Lifetime: time.Hour}}
		s.Put(o)
		if !sameHeader(o.HeaderMap(), want) || o.HeaderLen() != len(want) {
			t.Fatalf("stored %q, read back %q (%d fields)", want, o.HeaderMap(), o.HeaderLen())
		}
		got := http.Header{}
		o.SetHeader(got, make([]string, 3))
		if !sameHeader(got, want) {
			t.Fatalf("stored %q, SetHeader with a scratch of 3 gives %q", want, got)
		}
		for k, vs := range want {
			if got := o.HeaderValues(k); http.CanonicalHeaderKey(k) == k && !slices.Equal(got, vs) && len(vs) > 0 {
				t.Fatalf("HeaderValues(%q) = %q, want %q", k, got, vs)
			}
		}
	})
}
