package store

import (
	"encoding/binary"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// A stored object is not kept as an Object. An Object has a dozen pointers (its strings, its
// body, its policy's slices, its times' locations), and at a full store the collector follows
// every one of them, for every stored object, about once a second: finding the span of each
// pointer is a cache miss (BenchmarkCollection). The store keeps instead, per variant, two
// allocations without pointers, which the collector marks and never scans: the body, and meta,
// the object's fixed fields followed by its arena (compact). Lookup builds an Object from them
// (into), which the readers of a URL with one variant share while it keeps its slot (Store.shared):
// its strings and body point into the stored allocations, so they live as long as any reader
// holds them, and nothing is copied. Its times read back as the same
// instants: those from time.Now with their monotonic reading (monoBase), the others in UTC.

// packed is one stored variant.
type packed struct {
	meta string // the fixed fields (fixedLen bytes, layout), then the arena
	body []byte // its capacity is what the allocation holds (charged); nothing appends to it
}

// bytes is the heap p retains.
func (p packed) bytes() int64 { return allocSize(len(p.meta)) + allocSize(cap(p.body)) }

// The strings of an object that are not purge matchers or header entries, located in its
// arena by a span each.
const (
	strPath = iota
	strVariant
	strPart
	strReason
	strTarget
	strStrip // Policy.StripFields joined by NUL
	nstr
)

type span struct{ off, len int }

// layout is where compact put an object's strings in its arena.
type layout struct {
	ix, nm, nk int // Object.ix, nm, nk
	str        [nstr]span
	nstrip     int  // how many fields strStrip joins
	coded      bool // Object.coded
	urls       bool // Object.urls
}

// The fixed fields, little-endian, at these offsets of meta.
const (
	fStatus  = 0                 // uint32
	fFlags   = fStatus + 4       // uint32, the flag bits below
	fIndex   = fFlags + 4        // ix, nm, nk, nstrip: uint32 each
	fStrings = fIndex + 16       // nstr (offset, length) pairs of uint32s
	fTimes   = fStrings + 8*nstr // StoredAt, ResponseTime, LastModified: int64 s and uint32 ns, or int64 ns from monoBase
	fInts    = fTimes + 3*12 + 4 // (aligned) InitialAge, Size, Lifetime, StaleWhileRevalidate, StaleIfError: int64 each
	fixedLen = fInts + 5*8
)

const (
	flagStorable = 1 << iota
	flagHeuristic
	flagMustRevalidate
	flagNoCache
	flagImmutable
	flagTimeZero                       // << i for time i (StoredAt, ResponseTime, LastModified): the zero Time
	flagTimeMono  = flagTimeZero << 3  // << i for time i: kept as its monotonic offset from monoBase
	flagEdgeCoded = flagTimeMono << 3  // Object.EdgeCoded
	flagCoded     = flagEdgeCoded << 1 // Object.coded
	flagURLs      = flagCoded << 1     // Object.urls
)

// monoBase is the origin of the stored times that have a monotonic reading (time.Now's: a
// fill's StoredAt and ResponseTime). They are kept as their distance from it and read back as
// monoBase plus that distance, monotonic reading included, so that purge checks (covers) and
// ages compare them by the monotonic clock, as Go compares two times from time.Now, and a
// step of the wall clock cannot make an object fetched after a purge look older than it.
var monoBase = time.Now()

// putFixed writes o's fixed fields, and where its strings are (l), into b (fixedLen bytes).
func (o *Object) putFixed(b []byte, l *layout) {
	le := binary.LittleEndian
	flags := uint32(0)
	for bit, set := range [...]bool{o.Policy.Storable, o.Policy.Heuristic, o.Policy.MustRevalidate, o.Policy.NoCache, o.Policy.Immutable} {
		if set {
			flags |= 1 << bit
		}
	}
	for i, t := range [...]time.Time{o.StoredAt, o.ResponseTime, o.LastModified} {
		p := fTimes + 12*i
		switch {
		case t.IsZero():
			flags |= flagTimeZero << i
		case t != t.Round(0): // it has a monotonic reading
			flags |= flagTimeMono << i
			le.PutUint64(b[p:], uint64(t.Sub(monoBase)))
		default:
			le.PutUint64(b[p:], uint64(t.Unix()))
			le.PutUint32(b[p+8:], uint32(t.Nanosecond()))
		}
	}
	if o.EdgeCoded {
		flags |= flagEdgeCoded
	}
	if l.coded {
		flags |= flagCoded
	}
	if l.urls {
		flags |= flagURLs
	}
	le.PutUint32(b[fStatus:], uint32(o.Status))
	le.PutUint32(b[fFlags:], flags)
	for i, v := range [...]int{l.ix, l.nm, l.nk, l.nstrip} {
		le.PutUint32(b[fIndex+4*i:], uint32(v))
	}
	for i, s := range l.str {
		le.PutUint32(b[fStrings+8*i:], uint32(s.off))
		le.PutUint32(b[fStrings+8*i+4:], uint32(s.len))
	}
	for i, d := range [...]int64{int64(o.InitialAge), o.Size, int64(o.Policy.Lifetime), int64(o.Policy.StaleWhileRevalidate), int64(o.Policy.StaleIfError)} {
		le.PutUint64(b[fInts+8*i:], uint64(d))
	}
}

// u32 and u64 read meta's little-endian integers: binary.LittleEndian reads a []byte, and
// meta is a string.
func u32(s string, p int) uint32 {
	_ = s[p+3]
	return uint32(s[p]) | uint32(s[p+1])<<8 | uint32(s[p+2])<<16 | uint32(s[p+3])<<24
}

func u64(s string, p int) uint64 { return uint64(u32(s, p)) | uint64(u32(s, p+4))<<32 }

// str is the i-th of p's strings (strPath...).
func (p packed) str(i int) string {
	off, n := int(u32(p.meta, fStrings+8*i)), int(u32(p.meta, fStrings+8*i+4))
	off += fixedLen
	return p.meta[off : off+n]
}

// variant is p's Vary key (Object.Variant), read without building the Object.
func (p packed) variant() string { return p.str(strVariant) }

// object builds the Object p holds. vary is its entry's Vary list (the policy's).
func (p packed) object(vary []string) *Object {
	o := new(Object)
	p.into(o, vary)
	return o
}

// into sets every field of o to what p holds.
func (p packed) into(o *Object, vary []string) {
	m := p.meta
	flags := u32(m, fFlags)
	var times [3]time.Time
	for i := range times {
		switch q := fTimes + 12*i; {
		case flags&(flagTimeZero<<i) != 0:
		case flags&(flagTimeMono<<i) != 0:
			times[i] = monoBase.Add(time.Duration(u64(m, q)))
		default:
			times[i] = time.Unix(int64(u64(m, q)), int64(u32(m, q+8))).UTC()
		}
	}
	arena := m[fixedLen:]
	*o = Object{
		Status:       int(int32(u32(m, fStatus))),
		Body:         p.body[:len(p.body):len(p.body)], // a reader's append cannot write into it
		StoredAt:     times[0],
		ResponseTime: times[1],
		LastModified: times[2],
		InitialAge:   time.Duration(u64(m, fInts)),
		Size:         int64(u64(m, fInts+8)),
		EdgeCoded:    flags&flagEdgeCoded != 0,
		coded:        flags&flagCoded != 0,
		urls:         flags&flagURLs != 0,
		Policy: httpcache.Policy{
			Storable:             flags&flagStorable != 0,
			Heuristic:            flags&flagHeuristic != 0,
			MustRevalidate:       flags&flagMustRevalidate != 0,
			NoCache:              flags&flagNoCache != 0,
			Immutable:            flags&flagImmutable != 0,
			Lifetime:             time.Duration(u64(m, fInts+16)),
			StaleWhileRevalidate: time.Duration(u64(m, fInts+24)),
			StaleIfError:         time.Duration(u64(m, fInts+32)),
			Reason:               p.str(strReason),
			Target:               p.str(strTarget),
			Vary:                 vary,
		},
		Path:    p.str(strPath),
		Variant: p.str(strVariant),
		Part:    p.str(strPart),
		arena:   arena,
		ix:      int32(u32(m, fIndex)),
		nm:      int32(u32(m, fIndex+4)),
		nk:      int32(u32(m, fIndex+8)),
	}
	o.Primary = o.entryAt(0)[2:]
	o.Host = o.entryAt(1)[2:]
	if n := int(u32(m, fIndex+12)); n > 0 {
		o.Policy.StripFields = strings.SplitN(p.str(strStrip), "\x00", n)
	}
}
