package store

import (
	"iter"
	"net/http"
)

// A stored object's header is not an http.Header. A Go map of a dozen fields is four heap
// objects (the map, its directory, table and groups: TestHeapObjectsPerObject counts 9.05 heap
// objects per stored object with the map, 5.05 without), which the GC marks on every cycle
// for every stored object, and a full store holds 100,000s of them. So compact keeps the
// fields in the two allocations it makes anyway, and no map:
//   - hdr is a capped sub-slice of the object's string array (all, in compact): for each
//     field, one entry holding the number of its values (a uvarint) followed by its name,
//     then one entry per value;
//   - every one of those strings is a substring of the object's arena.
//
// The Header field is then nil. Objects that were never stored (built by a fill, handed to
// its clients, maybe stored later as a copy) keep their Header map, and a copy of a stored
// object may be given a new one (a 304's refreshed header): a non-nil Header is always the
// object's header, else hdr is. Readers go through the methods below, which apply that rule;
// reading the Header field of an object from Lookup gives nothing.

// appendFieldHead appends the head of a field of n values named name, as hdr holds it.
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

// fieldHead splits a field head from hdr into its name and number of values.
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

// HeaderFields iterates over the object's header fields and their values, as a range over
// an http.Header would (in no particular order). The value slices are the object's: they must
// not be modified, but may be kept or put in another header (not appended to in place).
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
		for hdr := o.hdr; len(hdr) > 0; {
			name, n := fieldHead(hdr[0])
			var vs []string
			if n > 0 {
				vs = hdr[1 : 1+n : 1+n]
			}
			hdr = hdr[1+n:]
			if !yield(name, vs) {
				return
			}
		}
	}
}

// HeaderValues returns the values of the header field name, as http.Header.Values does:
// name is canonicalized (http.CanonicalHeaderKey). The slice is the object's: do not modify it.
func (o *Object) HeaderValues(name string) []string {
	if o.Header != nil {
		return o.Header.Values(name)
	}
	key := http.CanonicalHeaderKey(name)
	for hdr := o.hdr; len(hdr) > 0; {
		k, n := fieldHead(hdr[0])
		if k == key {
			if n == 0 {
				return nil
			}
			return hdr[1 : 1+n : 1+n]
		}
		hdr = hdr[1+n:]
	}
	return nil
}

// HeaderValue returns the first value of the header field name, or "", as http.Header.Get
// does.
func (o *Object) HeaderValue(name string) string {
	if vs := o.HeaderValues(name); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// HeaderLen is the number of the object's header fields.
func (o *Object) HeaderLen() int {
	if o.Header != nil {
		return len(o.Header)
	}
	c := 0
	for hdr := o.hdr; len(hdr) > 0; c++ {
		_, n := fieldHead(hdr[0])
		hdr = hdr[1+n:]
	}
	return c
}

// HeaderMap returns a copy of the object's header as a new http.Header, which the caller
// may modify. It allocates a map: for the rare paths (revalidation, tests), not for a hit.
func (o *Object) HeaderMap() http.Header {
	if o.Header != nil {
		return o.Header.Clone()
	}
	h := make(http.Header, o.HeaderLen())
	vals := make([]string, len(o.hdr)) // enough for every value: one array, as Clone does
	for k, vs := range o.HeaderFields() {
		if vs == nil {
			h[k] = nil
			continue
		}
		n := copy(vals, vs)
		h[k], vals = vals[:n:n], vals[n:]
	}
	return h
}
