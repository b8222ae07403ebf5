package store

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// Segments (issue 15, docs/benchmarks.md "Sixteenth pass" and "Seventeenth pass"). At a full
// store the collector marks every stored object in every cycle, and what it costs is the
// pointers it follows: about 300 ns per object kept as an entry with its own allocations, 5 ns
// for an object kept as bytes in a large allocation and found by offsets. So an entry with one
// variant whose record is small (maxRecord) is kept as a record in a segment: an append-only
// []byte of segSize bytes, which the collector marks once and never scans, and Ristretto holds
// a ref to its handle (handle.go), a struct whose only pointer is nil. Larger objects, and
// URLs with several Vary variants, are few per GiB and stay entries (store.go).
//
// Bytes in a segment are never written again once appended, so readers need no lock: a
// Lookup builds its Object with strings and a body that point into the segment (packed.go),
// which the collector then keeps alive for as long as any reader holds it, even after the
// store let go of the segment. A record leaves the store as an entry does (Ristretto's OnExit:
// replaced, deleted, evicted, expired), which leaves dead bytes in its segment. When the dead
// bytes exceed a quarter of the live ones, the store moves the live records of the segment
// with the fewest live bytes to the head segment and lets go of the emptied one (reclaim), so
// eviction stays Ristretto's. Each record is charged a quarter more than its bytes for that
// slack (recordCost). Under unique-URL churn, Ristretto's eviction is close to random, the
// worst case for this: the model of bench/segsim moved 1.9 records per record stored with a
// quarter, 3.9 with an eighth; with an eighth, an edge at a full store spent 8.5 us per miss
// moving records, about 2 us a move if the model's count holds (docs/benchmarks.md,
// "Seventeenth pass"). A quarter costs memory: a store of 1 KiB objects holds 15 % fewer of
// them than as entries.

// ref is what Ristretto holds per key: a heap entry (e) or a record in a segment, by its
// handle (handle.go), which stays the same when reclaim moves the record. It is compared as a
// whole: a record's ref never repeats, since a handle's generation changes when it is freed.
type ref struct {
	e    *entry // the entry, or nil for a record
	h    uint32 // the record's handle; 0 for an entry
	hgen uint32 // the handle's generation
	slot uint16 // the first of the key's two view slots (Store.slotOf)
}

// A record, at an 8-byte aligned offset of its segment: a header of little-endian fields, the
// entry's Vary list joined by NUL, the packed meta and the body; then padding to 8 bytes.
const (
	rMeta    = 0  // uint32: length of the meta
	rBody    = 4  // uint32: length of the body
	rVary    = 8  // uint32: length of the joined Vary list
	rNVary   = 12 // uint32: how many names it joins
	rExpiry  = 16 // int64: when Ristretto expires it, Unix ns (0: never)
	rHandle  = 24 // uint32: its handle (handle.go)
	rHeadLen = 32
)

// maxRecord is the largest record a segment takes. A record costs a copy of its body and,
// under churn, its moves, which a separate allocation does not (the fill's body is kept as it
// is); the collector's cost, which records save, is per object, and larger objects are few per
// GiB. At a full store a Put of a 4 KiB body cost about what it did as an entry, one of 16 KiB
// twice as much (BenchmarkPut).
const maxRecord = 8 << 10

// maxRecords bounds the records of one segment (its live bits): a record is at least its
// header and the packed fixed fields, so a 1 MiB segment holds fewer than 6,000.
const maxRecords = 96 * 64

// segment is one segSize allocation of records.
type segment struct {
	b    []byte // the records; its capacity is the segment's size
	gen  uint32
	ix   uint32      // index in Store.segs
	n    int         // records appended; written under Store.segMu, read once sealed
	used int         // bytes appended; under Store.segMu
	full atomic.Bool // sealed: no record is appended any more (n and b are final)
	live atomic.Int64
	bits [maxRecords / 64]atomic.Uint64 // a record's bit is set from its append until it exits
}

// isLive reports whether record idx is still in the store.
func (g *segment) isLive(idx uint16) bool {
	return g.bits[idx/64].Load()&(1<<(idx%64)) != 0
}

// recordLen is the length of the record at off, padding included.
func recordLen(b []byte, off int) int {
	le := binary.LittleEndian
	n := rHeadLen + int(le.Uint32(b[off+rMeta:])) + int(le.Uint32(b[off+rBody:])) + int(le.Uint32(b[off+rVary:]))
	return (n + 7) &^ 7
}

// record returns the record at off as the entry it stands for: its Vary list and its packed
// variant, both pointing into the segment.
func (g *segment) record(off uint32) (vary []string, p packed) {
	b := g.b[off:]
	le := binary.LittleEndian
	nm, nb, nv := int(le.Uint32(b[rMeta:])), int(le.Uint32(b[rBody:])), int(le.Uint32(b[rVary:]))
	if n := int(le.Uint32(b[rNVary:])); n > 0 {
		vary = strings.SplitN(unsafe.String(&b[rHeadLen], nv), "\x00", n)
	}
	m := rHeadLen + nv
	p.meta = unsafe.String(&b[m], nm)
	p.body = b[m+nm : m+nm+nb : m+nm+nb]
	return vary, p
}

// recordSize is the length of the record of vary and p, padding included.
func recordSize(vary []string, p packed) int {
	n := rHeadLen + len(p.meta) + len(p.body)
	for i, v := range vary {
		n += len(v)
		if i > 0 {
			n++
		}
	}
	return (n + 7) &^ 7
}

// recordCost is what a record of n bytes is charged: its bytes, the slack for the dead bytes
// the segments may hold before reclaim moves them, and Ristretto's bookkeeping.
func recordCost(n int) int64 { return int64(n) + slack(int64(n)) + entryOverhead }

// slack is the dead bytes the segments may hold for n live ones: a quarter.
func slack(n int64) int64 { return n / 4 }

// segSizeFor is the segment size of a store of maxBytes: 1 MiB, less for a small store, so
// that the two segments it keeps in hand (the head and reclaim's slack) stay a small part of it.
func segSizeFor(maxBytes int64) int {
	return int(min(max(next2(maxBytes/64), 64<<10), 1<<20))
}

// segReserve is what a store of maxBytes sets aside for its segments beyond their records'
// charge: the head segment, the one reclaim fills while it empties another, the segment
// table (Store.segs, gens and freeSegs: 16 bytes a slot) and the handles' chunk table.
func segReserve(maxBytes int64) int64 {
	size := int64(segSizeFor(maxBytes))
	return 2*(size+int64(unsafe.Sizeof(segment{}))) + int64(maxSegments(maxBytes))*16 +
		int64(hchunkCount(maxHandles(maxBytes)))*8
}

// maxSegments is the size of the segment table of a store of maxBytes: the records' charge
// bounds their bytes and slack to maxBytes, and reclaim keeps the dead bytes within the slack,
// plus the two in hand; a few more for reclaim's lag.
func maxSegments(maxBytes int64) int { return int(maxBytes/int64(segSizeFor(maxBytes))) + 4 }

// appendRecord copies the entry of vary and p into the head segment, and returns its ref and
// its variant as the segment holds it, or false if the record does not fit a segment, the
// table has no free slot or no handle is free.
func (s *Store) appendRecord(vary []string, p packed, expiry time.Time, slot uint16) (ref, packed, bool) {
	n := recordSize(vary, p)
	if n > s.recMax {
		return ref{}, packed{}, false
	}
	h, hgen, ok := s.newHandle()
	if !ok {
		return ref{}, packed{}, false
	}
	s.segMu.Lock()
	defer s.segMu.Unlock()
	g, ok := s.headFor(n)
	if !ok {
		s.release(h, hgen)
		return ref{}, packed{}, false
	}
	off := g.used
	b := g.b[off : off+n : off+n]
	le := binary.LittleEndian
	le.PutUint32(b[rMeta:], uint32(len(p.meta)))
	le.PutUint32(b[rBody:], uint32(len(p.body)))
	var exp int64
	if !expiry.IsZero() {
		exp = expiry.UnixNano()
	}
	le.PutUint64(b[rExpiry:], uint64(exp))
	le.PutUint32(b[rHandle:], h)
	w := b[:rHeadLen]
	for i, v := range vary {
		if i > 0 {
			w = append(w, 0)
		}
		w = append(w, v...)
	}
	le.PutUint32(b[rVary:], uint32(len(w)-rHeadLen))
	le.PutUint32(b[rNVary:], uint32(len(vary)))
	m := len(w)
	w = append(w, p.meta...)
	w = append(w, p.body...)
	if len(w) > n || unsafe.SliceData(w) != unsafe.SliceData(b) {
		panic("store: record size miscomputed") // the padding is the new segment's zeros
	}
	s.slot(h).loc.Store(packLoc(g, uint32(off), s.appended(g, off, n)))
	stored := packed{meta: unsafe.String(&w[m], len(p.meta)), body: w[m+len(p.meta) : len(w) : len(w)]}
	return ref{h: h, hgen: hgen, slot: slot}, stored, true
}

// appendRaw copies a record as it is (a move) into the head segment, and returns its place.
func (s *Store) appendRaw(rec []byte) (g *segment, off uint32, idx uint16, ok bool) {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	if g, ok = s.headFor(len(rec)); !ok {
		return nil, 0, 0, false
	}
	o := g.used
	copy(g.b[o:o+len(rec)], rec)
	return g, uint32(o), s.appended(g, o, len(rec)), true
}

// appended accounts the record of n bytes just written at off of the head g, and returns its
// ordinal. Under segMu.
func (s *Store) appended(g *segment, off, n int) uint16 {
	idx := g.n
	g.n++
	g.used += n
	g.bits[idx/64].Or(1 << (idx % 64))
	g.live.Add(int64(n))
	s.live.Add(int64(n))
	return uint16(idx)
}

// headFor returns the head segment with room for n more bytes, sealing the head and starting
// a new one if it has not; false if the segment table is full. Under segMu.
func (s *Store) headFor(n int) (*segment, bool) {
	if g := s.head; g != nil && g.used+n <= len(g.b) && g.n < maxRecords {
		return g, true
	}
	if len(s.freeSegs) == 0 {
		return nil, false
	}
	ix := s.freeSegs[len(s.freeSegs)-1]
	s.freeSegs = s.freeSegs[:len(s.freeSegs)-1]
	s.gens[ix]++
	g := &segment{b: make([]byte, s.segSize), gen: s.gens[ix], ix: ix}
	if h := s.head; h != nil {
		h.full.Store(true)
	}
	s.head = g
	s.segs[ix].Store(g)
	s.nsegs.Add(1)
	return g, true
}

// freeRecord clears r's live bit and takes its bytes off the live count, once: a record may
// be freed both by its exit from Ristretto and by reclaim, which frees the records it drops
// (expired, or no room) and those whose exit is under way.
func (s *Store) freeRecord(g *segment, idx uint16, off uint32) {
	mask := uint64(1) << (idx % 64)
	if g.bits[idx/64].And(^mask)&mask == 0 {
		return
	}
	n := int64(recordLen(g.b, int(off)))
	g.live.Add(-n)
	s.live.Add(-n)
}

// garbage reports whether the segments hold more dead bytes than the records' charge allows
// them: the live bytes' slack, and the two segments in hand.
func (s *Store) garbage() bool {
	live := s.live.Load()
	return s.nsegs.Load()*int64(s.segSize) > live+slack(live)+2*int64(s.segSize)
}

// reclaim empties the sealed segment with the fewest live bytes into the head, until the dead
// bytes are back within what the charge allows. One goroutine reclaims at a time; the others
// go on (the bound is restored by the next Put).
func (s *Store) reclaim() {
	if !s.garbage() || !s.reclaiming.TryLock() {
		return
	}
	defer s.reclaiming.Unlock()
	for s.garbage() {
		var victim *segment
		for i := range s.segs {
			if g := s.segs[i].Load(); g != nil && g.full.Load() && (victim == nil || g.live.Load() < victim.live.Load()) {
				victim = g
			}
		}
		if victim == nil {
			return
		}
		s.evacuate(victim)
		s.segMu.Lock()
		s.segs[victim.ix].Store(nil)
		s.freeSegs = append(s.freeSegs, victim.ix)
		s.nsegs.Add(-1)
		s.segMu.Unlock()
		// A record still live here is one whose exit released its handle before the move
		// could re-point it, and has not freed it yet: it is gone with the segment (its
		// exit finds no segment at the place it took). Its bit decides who frees it, so
		// it is freed once.
		off := 0
		for idx := range victim.n {
			s.freeRecord(victim, uint16(idx), uint32(off))
			off += recordLen(victim.b, off)
		}
		s.dropViews(victim)
	}
}

// dropViews empties the view slots still holding a view of a record of g: a record reclaim
// freed itself (dropped, or its exit under way) may have left its view there, which would
// keep the whole segment alive. Moved records' views left in move (dropView).
func (s *Store) dropViews(g *segment) {
	for i := range s.views {
		if v := s.views[i].Load(); v != nil && v.g == g {
			s.views[i].CompareAndSwap(v, nil)
		}
	}
}

// evacuate moves every live record of the sealed segment g to the head.
func (s *Store) evacuate(g *segment) {
	// One clock reading for the segment, not one per record (a reclaim moves about 1.5
	// records per Put under churn): a record that expires meanwhile is moved, and Ristretto
	// expires it.
	now := time.Now().UnixNano()
	off := 0
	for idx := range g.n {
		n := recordLen(g.b, off)
		if g.isLive(uint16(idx)) {
			s.move(g, uint16(idx), off, n, now)
		}
		off += n
	}
}

// move moves one live record to the head segment and re-points its handle (handle.go);
// Ristretto, which holds the handle, is not told. It runs under the key's lock, as Put and
// Delete do, so no Put of the key runs meanwhile; a record's exit may (handle.go says how the
// two meet). A record freed twice is freed once (its live bit). One expired at now (Unix ns)
// is dropped.
func (s *Store) move(g *segment, idx uint16, off, n int, now int64) {
	rec := g.b[off : off+n]
	_, p := g.record(uint32(off))
	key := p.key()
	kh := s.hash(key)
	mu := s.lockOf(kh)
	mu.Lock()
	s.settle(key) // drop asks Ristretto whether it holds the record
	defer mu.Unlock()
	if !g.isLive(idx) {
		return
	}
	h := binary.LittleEndian.Uint32(rec[rHandle:])
	sl := s.slot(h)
	gen := sl.gen.Load() // for dropView only: the handle may be another record's by now
	if exp := int64(binary.LittleEndian.Uint64(rec[rExpiry:])); exp != 0 && exp <= now {
		s.drop(key, h, g, idx, uint32(off))
		return
	}
	g2, off2, idx2, ok := s.appendRaw(rec)
	if !ok {
		s.drop(key, h, g, idx, uint32(off))
		return
	}
	if !sl.loc.CompareAndSwap(packLoc(g, uint32(off), idx), packLoc(g2, off2, idx2)) {
		s.freeRecord(g2, idx2, off2) // the record has exited: the handle holds no place of it
		return
	}
	s.moved.Add(1)
	s.freeRecord(g, idx, uint32(off))
	s.dropView(ref{h: h, hgen: gen, slot: slotOfHash(kh, len(s.views))}, g)
}

// drop takes out of the store a record move does not keep (expired, or no room for it), at
// off in g, with handle h. If the handle still holds this place, it is this record's: the key
// leaves Ristretto if Ristretto still holds the handle (its exit then releases the handle),
// and the place leaves the handle either way, so that an exit still to come (Ristretto took
// the record out of its map, or its expiry did) finds none to free once the segment is gone.
// A handle that holds another place was released and may be a newer Put's, of this key
// too: that value is left alone. Under the key's lock.
func (s *Store) drop(key string, h uint32, g *segment, idx uint16, off uint32) {
	sl := s.slot(h)
	here := packLoc(g, off, idx)
	if sl.loc.Load() == here {
		gen := sl.gen.Load()
		if r, ok := s.cache.Get(key); ok && r.h == h && r.hgen == gen && sl.loc.Load() == here {
			s.cache.Del(key)
			s.evictions.Add(1) // expired, or no room for it: as Ristretto's own would be (OnEvict)
		}
		sl.loc.CompareAndSwap(here, deadLoc)
	}
	s.freeRecord(g, idx, off)
}

// dropView empties r's slots of a view built from r's record at its old place, in g: the view
// would keep g alive.
func (s *Store) dropView(r ref, g *segment) {
	set := s.viewSet(r.slot)
	for i := range set {
		if v := set[i].Load(); v != nil && v.r == r && v.g == g {
			set[i].CompareAndSwap(v, nil)
		}
	}
}

// clone copies p out of the segment it points into.
func (p packed) clone() packed {
	return packed{meta: strings.Clone(p.meta), body: slices.Clone(p.body)}
}

// key is the Ristretto key of the entry p was stored under: its Primary and its Part.
func (p packed) key() string {
	arena := p.meta[fixedLen:]
	ix := int(u32(p.meta, fIndex))
	start, end := int(u32(arena, ix)), int(u32(arena, ix+4)) // entry 0: "u\x00" Primary
	return arena[start+2:end] + p.str(strPart)
}
