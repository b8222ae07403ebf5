package store

import (
	"encoding/binary"
	"sync/atomic"
)

// Handles (issue 15, docs/benchmarks.md "Thirtieth pass"). Ristretto holds a record's handle,
// a number, rather than its place: reclaim moves records between segments (about two moves
// per record stored under churn, segment.go), and a move that had to give Ristretto the new
// place cost a Set, a look and the OnExit of the old value, and an item for Ristretto's
// goroutine: at a full store with mixed object sizes the Set and the look alone were 4 % of a
// 1 KiB miss's CPU. A move now re-points the handle's slot.
//
// A slot is {loc, gen}: loc packs where the record is (its segment's index and the low bits
// of that segment's generation, its offset and its ordinal); gen changes when the handle is
// released, at its record's exit, so that a ref holding an older gen no longer resolves. The
// record's header holds its handle, so a move knows which slot to re-point.
//
// A move and an exit may run at once (an exit takes no lock: Ristretto's goroutine runs it for
// an eviction or an expiry). The exit claims the handle (gen), then takes its place out of the
// slot in one swap and frees the record there; the move re-points the slot only from the
// place it copied (a compare-and-swap). So whichever is first, the other sees it: a move
// after the swap fails its compare-and-swap and frees its copy, an exit after the move takes
// the new place and frees the copy, and the move frees the old one.
//
// Slots come in chunks allocated as they are first needed and never freed; they hold no
// pointers, so the collector does not scan them. A chunk is charged when it is allocated, by
// taking its bytes (and its share of the free list) out of Ristretto's MaxCost.
type hslot struct {
	loc atomic.Uint64
	gen atomic.Uint32
	_   uint32
}

const hchunkBits = 12

type hchunk [1 << hchunkBits]hslot

// hchunkCharge is what a chunk is charged: its slots, and room for their numbers in the free
// list (which append may leave at twice its length).
const hchunkCharge = 1 << hchunkBits * (16 + 8)

// deadLoc is the place of a released handle.
const deadLoc = ^uint64(0)

// maxHandles bounds the records a store of maxBytes can hold: each is charged at least what
// a record of the fixed fields alone is.
func maxHandles(maxBytes int64) int { return int(maxBytes/recordCost(rHeadLen+fixedLen)) + 1 }

// hchunkCount is the length of the chunk table for n handles.
func hchunkCount(n int) int { return (n + 1<<hchunkBits - 1) >> hchunkBits }

// The bits of a packed place. A segment holds at most maxRecords records (13 bits) in at
// most 1 MiB at 8-byte aligned offsets (17 bits); 22 bits of index allow 4 Mi segments.
const (
	locIdxBits = 13
	locOffBits = 17
	locGenBits = 12
	locGenMask = 1<<locGenBits - 1
)

func packLoc(g *segment, off uint32, idx uint16) uint64 {
	return uint64(g.ix)<<(locIdxBits+locOffBits+locGenBits) | uint64(g.gen&locGenMask)<<(locIdxBits+locOffBits) |
		uint64(off>>3)<<locIdxBits | uint64(idx)
}

func unpackLoc(l uint64) (ix, gen, off uint32, idx uint16) {
	return uint32(l >> (locIdxBits + locOffBits + locGenBits)), uint32(l>>(locIdxBits+locOffBits)) & locGenMask,
		uint32(l>>locIdxBits&(1<<locOffBits-1)) << 3, uint16(l & (1<<locIdxBits - 1))
}

// slot returns handle h's slot (h counts from 1).
func (s *Store) slot(h uint32) *hslot {
	i := h - 1
	return &s.hchunks[i>>hchunkBits].Load()[i&(1<<hchunkBits-1)]
}

// newHandle takes a free handle and returns it with its generation; false if every handle is
// taken. Its slot's place is set by the caller before the handle is published.
func (s *Store) newHandle() (h, gen uint32, ok bool) {
	s.hMu.Lock()
	defer s.hMu.Unlock()
	var i uint32
	if n := len(s.hfree); n > 0 {
		i = s.hfree[n-1]
		s.hfree = s.hfree[:n-1]
	} else {
		if int(s.hnext) >= s.hmax {
			return 0, 0, false
		}
		i = s.hnext
		if c := &s.hchunks[i>>hchunkBits]; c.Load() == nil {
			c.Store(new(hchunk))
			s.hbytes.Add(hchunkCharge)
			// As New does for the fixed structures, a store too small for them keeps a
			// quarter of MaxBytes for objects (and holds more than MaxBytes).
			s.cache.UpdateMaxCost(max(s.cache.MaxCost()-hchunkCharge, s.minCost))
		}
		s.hnext++
	}
	return i + 1, s.slot(i + 1).gen.Load(), true
}

// release claims handle h of generation gen for its record's exit, once: it takes the
// handle's place out of its slot, frees the handle and returns the place; false if the
// handle was released already (a second exit of one ref, or a record never published).
func (s *Store) release(h, gen uint32) (loc uint64, ok bool) {
	sl := s.slot(h)
	if !sl.gen.CompareAndSwap(gen, gen+1) {
		return 0, false
	}
	loc = sl.loc.Swap(deadLoc)
	s.hMu.Lock()
	s.hfree = append(s.hfree, h-1)
	s.hMu.Unlock()
	return loc, true
}

// at returns the segment, offset and ordinal of a packed place; false if its segment was let
// go (or the place is deadLoc).
func (s *Store) at(loc uint64) (g *segment, off uint32, idx uint16, ok bool) {
	if loc == deadLoc {
		return nil, 0, 0, false
	}
	ix, gen, off, idx := unpackLoc(loc)
	if int(ix) >= len(s.segs) {
		return nil, 0, 0, false
	}
	if g = s.segs[ix].Load(); g == nil || g.gen&locGenMask != gen {
		return nil, 0, 0, false
	}
	return g, off, idx, true
}

// atRecord is at for a place that may be stale (an exit's, which may come seconds after
// its record was dropped): the record there must name handle h in its header, since a
// segment index taken again at a generation equal in the bits a place keeps is not h's. A
// current handle's place (Lookup's) needs no such check: reclaim re-points a handle before
// it lets go of the segment its record was in.
func (s *Store) atRecord(loc uint64, h uint32) (g *segment, off uint32, idx uint16, ok bool) {
	if g, off, idx, ok = s.at(loc); !ok || int(off)+rHeadLen > len(g.b) || binary.LittleEndian.Uint32(g.b[off+rHandle:]) != h {
		return nil, 0, 0, false
	}
	return g, off, idx, true
}

// place returns where r's record is; false if r is an entry's, if its handle was released
// (the record has exited), or if its segment was let go meanwhile.
func (s *Store) place(r ref) (g *segment, off uint32, idx uint16, ok bool) {
	if r.h == 0 {
		return nil, 0, 0, false
	}
	sl := s.slot(r.h)
	loc := sl.loc.Load()
	if sl.gen.Load() != r.hgen {
		return nil, 0, 0, false // released: loc may be another record's
	}
	return s.at(loc)
}
