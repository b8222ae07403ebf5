package store

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
	"strings"
	"unsafe"
)

// What a stored object costs, in bytes of Go heap. Ristretto's cost is the only bound on the
// store's memory, so the cost must count what an object really retains, not only its body: for
// small objects the header, the Object struct, the purge matchers and Ristretto's own
// bookkeeping are several times the body (issue 15). Put lays each object out compactly
// (compact) and charges exactly that layout, with allocations rounded up to the Go
// allocator's size classes as the heap holds them. TestCostMatchesHeap checks the charge
// against the heap for headers parsed by net/http; TestMaxBytesBoundsHeap checks the bound.

// entryOverhead is what one Ristretto entry costs besides the entry struct and its objects:
// in Ristretto v2.4, the store map slot (key and conflict hashes, value, expiry), the policy's
// key->cost slot and the expiry bucket slot, at the load of Go's swiss tables, which moves as
// they split. Measured, not derived (Ristretto's internals are not an API): since the store
// stopped asking for Ristretto's metrics (and the admission-time slot they kept per entry),
// TestCostMatchesHeap's bare objects show 144-234 B per entry between 3,000 and 250,000
// entries (288 was 197-284 with them); charge the high end, so that the charge is never below
// the heap.
const entryOverhead = 240

// fixedOverhead is what an empty store holds besides its admission sketches (fixedBytes):
// mostly Ristretto's set buffer (32 Ki pointers) and its 256 store shards. Measured: 290-311
// KiB whatever max_bytes since Ristretto's metrics are off (332 KiB with them;
// TestCostMatchesHeap checks fixedBytes).
const fixedOverhead = 312 << 10

// entryStructBytes is the size of the struct the store allocates per entry.
var entryStructBytes = allocSize(int(unsafe.Sizeof(entry{})))

// counters is how many admission counters Ristretto gets for a store of maxBytes: it wants
// about ten per item it may hold; assume 4 KiB objects on average.
func counters(maxBytes int64) int64 { return max(maxBytes/4096*10, 10_000) }

// fixedBytes is what an empty store of maxBytes holds: Ristretto's count-min sketch (4 rows of
// 4-bit counters, rounded to a power of two), its bloom-filter doorkeeper (1 % false
// positives, rounded to a power of two bits), and fixedOverhead. The store gives Ristretto
// only what is left of maxBytes, so that max_bytes bounds the whole store.
func fixedBytes(maxBytes int64) int64 {
	n := counters(maxBytes)
	sketch := 4 * next2(n) / 2
	bloomBits := next2(max(int64(float64(n)*-math.Log(0.01)/(math.Ln2*math.Ln2)), 512))
	return sketch + bloomBits/8 + fixedOverhead + int64(viewSlots(maxBytes))*8
}

// viewSlots is how many shared views a store of maxBytes keeps (Store.shared): one per
// 128 KiB, a power of two from 64 to 16384 (charged 1.6 % of max_bytes). A CDN's hot set is a
// small part of what it stores; an object whose slots two other hot objects hold costs its
// hits a new Object each (0.5-0.9 us, 416 B) and its header serialised again.
func viewSlots(maxBytes int64) int { return int(min(max(next2(max(maxBytes>>17, 1)), 64), 16384)) }

// viewCharge is what a kept view may hold besides its entry, which the store charges already:
// the Object (416 B) and the memo the edge keeps in it, a hit's serialised header (a few
// hundred bytes; Object.Memo keeps none longer than maxMemo). viewBytes charges it for every
// slot, so that max_bytes bounds the views too.
const viewCharge = 2 << 10

// maxMemo is the longest memo a view keeps: what viewCharge leaves after the view and the
// memo's own struct.
var maxMemo = viewCharge - allocSize(int(unsafe.Sizeof(view{}))) - allocSize(int(unsafe.Sizeof(memo{})))

// viewBytes is the store's charge for its shared views; the slot array itself is in
// fixedBytes (the empty store holds it).
func viewBytes(maxBytes int64) int64 { return int64(viewSlots(maxBytes)) * viewCharge }

// next2 is the smallest power of two at least n (n > 0).
func next2(n int64) int64 { return 1 << bits.Len64(uint64(n-1)) }

// compact lays o out for a long life in the store, and returns it as the store keeps it
// (packed). Strings from a parsed response are many small allocations, and the substrings a
// cache keeps of them (surrogate keys, paths) pin whole buffers; each small allocation left
// behind among freed ones also keeps its heap span in use; and at a full store the collector
// marks every stored object about once a second, at a cost that grows with the pointers and
// heap objects each holds (BenchmarkCollection). So compact copies every string and every
// field of o into one allocation without pointers (packed.go; Put lays a record's out in a
// scratch buffer instead, which the record copies: layOut), and locates the strings with
// offsets, not strings (entryAt):
//   - the purge matchers, with Primary and Path as substrings of them (prefix matchers are
//     prefixes of one another), the surrogate keys inside their matchers (SurrogateKeys),
//     then Variant and Part;
//   - the header's field names and values, in the form header.go describes, not a map (the
//     caller's map is only read; o.Header is then nil);
//   - the policy's strings;
//   - and a body with spare capacity (io.ReadAll, append) into an exact one, kept apart.
//
// o itself then reads as the stored object would: its strings, header and body are the
// packed ones.
//
// The header is o's as HeaderFields gives it: the Header map if set, else the compact form
// of a stored object o was copied from.
func (o *Object) compact() packed {
	p := packed{meta: o.layOut(nil), body: exactBody(o.Body)}
	p.into(o, o.Policy.Vary)
	return p
}

// exactBody is body in an allocation of its size: body itself, or a copy if it has spare
// capacity (io.ReadAll, append), which would be retained, and charged, for the object's
// whole life.
func exactBody(body []byte) []byte {
	if allocSize(cap(body)) > allocSize(len(body))*17/16 {
		return slices.Clone(body)
	}
	return body
}

// layOut returns o's packed meta (compact): in scratch if it fits, else in a new allocation
// of exactly its size. o is only read. Put lays out in scratch what a segment's record then
// copies (issue 15: an allocation per miss that lived only until the copy).
func (o *Object) layOut(scratch []byte) string {
	var pstack [8]string // most paths have fewer segments: no allocation
	prefixes := appendPathPrefixes(pstack[:0], o.Path)
	keys := o.SurrogateKeys()
	type field struct {
		name   string
		values []string
	}
	var stack [24]field // most headers fit: no allocation
	fields := stack[:0]
	strip := strings.Join(o.Policy.StripFields, "\x00")
	n, nv := 2+len(o.Primary)+2+len(o.Host)+2+len(o.Host)+len(o.Path)+len(o.Variant)+len(o.Part), 0
	for _, k := range keys {
		n += 3 + len(o.Host) + len(k)
	}
	coded, urls := false, false
	for k, vs := range o.HeaderFields() {
		switch k {
		case "Content-Encoding":
			coded = codedField(vs)
		case "Location", "Content-Location", "Refresh":
			urls = true
		}
		fields = append(fields, field{k, vs})
		n += fieldHeadLen(len(vs), k)
		for _, v := range vs {
			n += len(v)
		}
		nv += 1 + len(vs)
	}
	n += len(o.Policy.Reason) + len(o.Policy.Target) + len(strip)
	// The arena follows the fixed fields; offsets in it are from its start.
	size := fixedLen + n + 8*(2+len(prefixes)+len(keys)+nv)
	var b []byte
	if cap(scratch) >= size {
		b = scratch[:fixedLen]
		clear(b) // putFixed leaves some bytes as they are (a zero time's, padding)
	} else {
		b = make([]byte, fixedLen, size)
	}
	b = append(b, "u\x00"...)
	b = append(b, o.Primary...)
	b = append(b, "h\x00"...)
	b = append(b, o.Host...)
	b = append(b, "p\x00"...)
	b = append(b, o.Host...)
	b = append(b, o.Path...)
	for _, k := range keys {
		b = append(b, "k\x00"...)
		b = append(b, o.Host...)
		b = append(b, 0)
		b = append(b, k...)
	}
	b = append(b, o.Variant...)
	b = append(b, o.Part...)
	for _, f := range fields {
		b = appendFieldHead(b, len(f.values), f.name)
		for _, v := range f.values {
			b = append(b, v...)
		}
	}
	b = append(b, o.Policy.Reason...)
	b = append(b, o.Policy.Target...)
	b = append(b, strip...)

	// The index locates each matcher and header entry in the arena, as a (start, end) pair
	// of little-endian uint32s at its end (entryAt): in the arena, not a slice of its own, so
	// that the object is one heap object fewer for the collector to mark. Offsets fit: an
	// answer's head is at most 10 MiB (origin/fetch), URLs and keys far less.
	nm := 2 + len(prefixes) + len(keys)
	ix := n
	put := func(off, end int) {
		b = binary.LittleEndian.AppendUint32(b, uint32(off))
		b = binary.LittleEndian.AppendUint32(b, uint32(end))
	}
	lu, lh := 2+len(o.Primary), 2+len(o.Host)
	lp := lh + len(o.Path)
	put(0, lu)
	put(lu, lu+lh)
	for _, pre := range prefixes { // each a prefix of Path
		put(lu+lh, lu+lh+lh+len(pre))
	}
	off := lu + lh + lp
	for _, k := range keys {
		l := 3 + len(o.Host) + len(k)
		put(off, off+l)
		off += l
	}
	variant := off
	off += len(o.Variant) + len(o.Part)
	for _, f := range fields {
		l := fieldHeadLen(len(f.values), f.name)
		put(off, off+l)
		off += l
		for _, v := range f.values {
			put(off, off+len(v))
			off += len(v)
		}
	}
	l := layout{ix: ix, nm: nm, nk: len(keys), coded: coded, urls: urls}
	l.str[strPath] = span{lu + lh + lh, len(o.Path)}
	l.str[strVariant] = span{variant, len(o.Variant)}
	l.str[strPart] = span{variant + len(o.Variant), len(o.Part)}
	l.str[strReason] = span{off, len(o.Policy.Reason)}
	off += len(o.Policy.Reason)
	l.str[strTarget] = span{off, len(o.Policy.Target)}
	off += len(o.Policy.Target)
	l.str[strStrip] = span{off, len(strip)}
	l.nstrip = len(o.Policy.StripFields)
	o.putFixed(b[:fixedLen], &l)

	if cap(b) != len(b) && !inBuf(b, scratch) {
		// The estimate above was short: keep (and charge) an allocation of the exact size.
		b = append(make([]byte, 0, len(b)), b...)
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// inBuf reports whether b starts where buf does (b was laid out in buf).
func inBuf(b, buf []byte) bool { return cap(buf) > 0 && unsafe.SliceData(b) == unsafe.SliceData(buf) }

// entryBytes is what e costs, with its objects.
func entryBytes(e *entry) int64 {
	c := entryOverhead + entryStructBytes + stringsBytes(e.vary)
	if e.variants != nil {
		c += sliceBytes(cap(e.variants), int(unsafe.Sizeof(packed{})))
	}
	for _, p := range e.list() {
		c += p.bytes()
	}
	return c
}

// stringsBytes is a string slice with its strings.
func stringsBytes(ss []string) int64 {
	c := sliceBytes(cap(ss), 16)
	for _, s := range ss {
		c += allocSize(len(s))
	}
	return c
}

func sliceBytes(n, elem int) int64 { return allocSize(n * elem) }

// allocSize is the heap an allocation of n bytes takes: Go's size classes up to 32 KiB, whole
// 8 KiB pages above.
func allocSize(n int) int64 {
	if n <= 0 {
		return 0
	}
	if n > 32768 {
		return int64((n + 8191) &^ 8191)
	}
	i, _ := slices.BinarySearch(sizeClasses[:], uint16(n)) // the first class >= n
	return int64(sizeClasses[i])
}

// sizeClasses are the Go runtime's small object size classes (internal/runtime/gc, Go 1.26).
var sizeClasses = [...]uint16{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208,
	224, 240, 256, 288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152,
	1280, 1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528,
	6784, 6912, 8192, 9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480,
	21760, 24576, 27264, 28672, 32768}
