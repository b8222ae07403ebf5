package store

import (
	"iter"
	"net/http"
	"strings"
)

// A stored object's header is not an http.Header. A Go map of a dozen fields is four heap
// objects (the map, its directory, table and groups: TestHeapObjectsPerObject counts 9.05 heap
// objects per stored object with the map), which the GC marks on every cycle for every stored
// object, and a full store holds 100,000s of them. Nor is it an array of strings: each string
// is a pointer the collector follows on every cycle (BenchmarkCollection: 30 strings per object
// were a third of a collection's work). So compact keeps the fields in the object's arena,
// located by the index at its end (entryAt):
//   - for each field, one entry holding the number of its values (a uvarint) followed by its
//     name, then one entry per value;
//   - each entry a substring of the arena, at the offsets the index gives (after the nm
//     matchers).
//
// The Header field is then nil. Objects that were never stored (built by a fill, handed to
// its clients, maybe stored later as a copy) keep their Header map, and a copy of a stored
// object may be given a new one (a 304's refreshed header): a non-nil Header is always the
// object's header, else the arena is. Readers go through the methods below, which apply that
// rule; reading the Header field of an object from Lookup gives nothing.

// entryAt is the i-th string the arena's index locates: a matcher for i < nm, then the
// header's entries. The offsets are decoded by hand: binary.LittleEndian reads a []byte, and
// the arena is a string.
func (o *Object) entryAt(i int) string {
	p := int(o.ix) + 8*i
	a := o.arena
	start := uint32(a[p]) | uint32(a[p+1])<<8 | uint32(a[p+2])<<16 | uint32(a[p+3])<<24
	end := uint32(a[p+4]) | uint32(a[p+5])<<8 | uint32(a[p+6])<<16 | uint32(a[p+7])<<24
	return a[start:end]
}

// entries is the number of strings the arena's index locates (0 for an object not stored).
func (o *Object) entries() int { return (len(o.arena) - int(o.ix)) / 8 }

// headerEntries is the number of entries the header has in the index.
func (o *Object) headerEntries() int { return o.entries() - int(o.nm) }

// appendFieldHead appends the head of a field of n values named name, as the arena holds it.
func appendFieldHead(b []byte, n int, name string) []byte {
	x := uint64(n)
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(append(b, byte(x)), name...)
}

// fieldHeadLen is the length of the head of a field of n values named name.
func fieldHeadLen(n int, name string) int {
	l := 1
	for x := uint64(n); x >= 0x80; x >>= 7 {
		l++
	}
	return l + len(name)
}

// fieldHead splits a field head into its name and number of values.
func fieldHead(s string) (name string, n int) {
	var x uint64
	for i, shift := 0, uint(0); i < len(s); i, shift = i+1, shift+7 {
		c := s[i]
		if c < 0x80 {
			return s[i+1:], int(x | uint64(c)<<shift)
		}
		x |= uint64(c&0x7f) << shift
	}
	panic("store: malformed header field") // compact wrote every head
}

// fields calls yield for each stored header field with its name, the entry index of its first
// value and its number of values, until yield returns false.
func (o *Object) fields(yield func(name string, first, n int) bool) {
	for i, end := int(o.nm), o.entries(); i < end; {
		name, n := fieldHead(o.entryAt(i))
		if !yield(name, i+1, n) {
			return
		}
		i += 1 + n
	}
}

// values returns the n values from entry first in a new slice (nil for none).
func (o *Object) values(first, n int) []string {
	if n == 0 {
		return nil
	}
	vs := make([]string, n)
	for j := range vs {
		vs[j] = o.entryAt(first + j)
	}
	return vs
}

// HeaderFields iterates over the object's header fields and their values, as a range over
// an http.Header would (in no particular order). The value slices must not be modified, but
// may be kept or put in another header (not appended to in place). For a stored object each
// field's values are a new slice: the hit path uses SetHeader instead.
func (o *Object) HeaderFields() iter.Seq2[string, []string] {
	return func(yield func(string, []string) bool) {
		if o.Header != nil {
			for k, vs := range o.Header {
				if !yield(k, vs) {
					return
				}
			}
			return
		}
		o.fields(func(name string, first, n int) bool {
			return yield(name, o.values(first, n))
		})
	}
}

// SetHeader sets the object's header fields in h, as a response's header. A field's value
// slice is cut from scratch (capped), or allocated once scratch is used up, so that a hit
// allocates nothing for its header; with no scratch, one array for all of them is allocated.
// For an object not stored it is the Header map's own. The value slices must not be modified
// (replaced, or appended to, which copies them).
func (o *Object) SetHeader(h map[string][]string, scratch []string) {
	if o.Header != nil {
		for k, vs := range o.Header {
			h[k] = vs
		}
		return
	}
	if scratch == nil {
		scratch = make([]string, o.headerEntries())
	}
	o.fields(func(name string, first, n int) bool {
		switch {
		case n == 0:
			h[name] = nil
		case n > len(scratch):
			h[name] = o.values(first, n)
		default:
			vs := scratch[:n:n]
			scratch = scratch[n:]
			for j := range vs {
				vs[j] = o.entryAt(first + j)
			}
			h[name] = vs
		}
		return true
	})
}

// HeaderValues returns the values of the header field name, as http.Header.Values does:
// name is canonicalized (http.CanonicalHeaderKey). Do not modify the slice. For a stored
// object it is a new slice: HeaderValue allocates nothing.
func (o *Object) HeaderValues(name string) []string {
	if o.Header != nil {
		return o.Header.Values(name)
	}
	first, n := o.field(http.CanonicalHeaderKey(name))
	return o.values(first, n)
}

// field finds the stored header field key: the entry index of its first value and its
// number of values (0 if absent).
func (o *Object) field(key string) (first, n int) {
	o.fields(func(k string, f, c int) bool {
		if k == key {
			first, n = f, c
			return false
		}
		return true
	})
	return first, n
}

// HeaderValue returns the first value of the header field name, or "", as http.Header.Get
// does.
func (o *Object) HeaderValue(name string) string {
	if o.Header != nil {
		return o.Header.Get(name)
	}
	first, n := o.field(http.CanonicalHeaderKey(name))
	if n == 0 {
		return ""
	}
	return o.entryAt(first)
}

// Coded reports whether the object's body is in a content coding: its header has a
// Content-Encoding other than identity. A stored object answers from a flag compact set, without
// a search of its header: every hit of a variant of Accept-Encoding asks (edge/encoding.go).
func (o *Object) Coded() bool {
	if o.Header != nil {
		return codedField(o.Header["Content-Encoding"])
	}
	return o.coded
}

// HasURLFields reports whether the object's header has a field that names a URL a client
// follows or resolves: Location, Content-Location or Refresh. A stored object answers from a
// flag compact set, without a search of its header: every hit asks (the edge rewrites the
// origin's own URLs in them per client).
func (o *Object) HasURLFields() bool {
	if o.Header != nil {
		return o.Header["Location"] != nil || o.Header["Content-Location"] != nil || o.Header["Refresh"] != nil
	}
	return o.urls
}

// codedField reports whether Content-Encoding values vs name a coding other than identity.
func codedField(vs []string) bool {
	for _, v := range vs {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.Trim(c, " \t"); c != "" && !strings.EqualFold(c, "identity") {
				return true
			}
		}
	}
	return false
}

// HeaderLen is the number of the object's header fields.
func (o *Object) HeaderLen() int {
	if o.Header != nil {
		return len(o.Header)
	}
	c := 0
	o.fields(func(string, int, int) bool {
		c++
		return true
	})
	return c
}

// HeaderMap returns a copy of the object's header as a new http.Header, which the caller
// may modify. It allocates a map: for the rare paths (revalidation, tests), not for a hit.
func (o *Object) HeaderMap() http.Header {
	if o.Header != nil {
		return o.Header.Clone()
	}
	h := make(http.Header, o.HeaderLen())
	o.SetHeader(h, nil) // one array for every value, as Clone does
	return h
}
