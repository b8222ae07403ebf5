package store

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestExitRacingMove races a record's exit (Store.exit, as Ristretto's goroutine runs it for an
// eviction or expiry: no lock) with its move (under the key's lock). Once both are done, no
// copy of the record may still be live: the handle has been freed, so nothing would free it.
func TestExitRacingMove(t *testing.T) {
	s := newStoreOf(t, 16<<20)
	p := keyed("k", 1, 500).compact()
	slot := s.slotOf("h.test/k")
	for i := range 30_000 { // the race was lost within about 3,000 rounds under -race before the fix
		s.reclaim() // lets go of the segments the last rounds emptied
		r, ok := s.appendRecord(nil, p, time.Time{}, slot)
		if !ok {
			t.Fatal("appendRecord refused")
		}
		g, off, idx, _ := s.place(r)
		n := recordLen(g.b, int(off))
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); <-start; s.exit(r) }()
		go func() { defer wg.Done(); <-start; s.move(g, idx, int(off), n) }()
		close(start)
		wg.Wait()
		if live := s.live.Load(); live != 0 {
			g2, _, _, _ := s.place(ref{h: r.h, hgen: r.hgen + 1})
			t.Fatalf("round %d: %d live bytes after the record's exit and move (handle %d freed: gen %d, was %d; loc in a segment: %v)",
				i, live, r.h, s.slot(r.h).gen.Load(), r.hgen, g2 != nil)
		}
	}
}

// TestExitAcrossMove is the same race with the other order fixed: the exit releases the
// handle (taking its place) before the move, and frees the record there after it. The move
// must find the handle released and free its copy.
func TestExitAcrossMove(t *testing.T) {
	s := newStoreOf(t, 16<<20)
	r, ok := s.appendRecord(nil, keyed("k", 1, 500).compact(), time.Time{}, s.slotOf("h.test/k"))
	if !ok {
		t.Fatal("appendRecord refused")
	}
	g, off, idx, _ := s.place(r)
	loc, ok := s.release(r.h, r.hgen) // the exit's first step
	if !ok {
		t.Fatal("handle not released")
	}
	s.move(g, idx, int(off), recordLen(g.b, int(off)))
	if g2, off2, idx2, ok := s.at(loc); ok { // the exit's second
		s.freeRecord(g2, idx2, off2)
	}
	if live := s.live.Load(); live != 0 {
		t.Errorf("%d live bytes after the record's exit: the move's copy leaked", live)
	}
	if s.Stats().Moved != 0 {
		t.Error("a move of a released record counted")
	}
}

// TestDropLeavesNewerPut: a move that drops its record (expired here) takes the key out of
// Ristretto only if Ristretto still holds that record's handle. The record stands for one in
// its eviction gap (out of Ristretto's map, its exit not yet run) while a newer Put stored
// the key: the newer version must stay.
func TestDropLeavesNewerPut(t *testing.T) {
	s := newStoreOf(t, 16<<20)
	r, ok := s.appendRecord(nil, keyed("k", 1, 500).compact(), time.Now().Add(-time.Second), s.slotOf("h.test/k"))
	if !ok {
		t.Fatal("appendRecord refused")
	}
	if !s.Put(keyed("k", 2, 500)) {
		t.Fatal("Put refused")
	}
	g, off, idx, _ := s.place(r)
	s.move(g, idx, int(off), recordLen(g.b, int(off)))
	s.cache.Wait()
	if g.isLive(idx) {
		t.Error("the expired record is still live after its move")
	}
	o, _, _ := s.Lookup("h.test/k", nil)
	if o == nil {
		t.Fatal("k's version 2 is gone: the move of version 1 took it out")
	}
	if v := checkKeyed(t, o, "k", 500); v != 2 {
		t.Errorf("k reads version %d, want 2", v)
	}
}

// TestMoveLeavesRistretto: evacuating a segment moves its records without a word to
// Ristretto (no Set, no Del, no OnExit), and every key reads back as it was put.
func TestMoveLeavesRistretto(t *testing.T) {
	const size = 1000
	s := newStoreOf(t, 16<<20)
	var keys []string
	for i := 0; s.Stats().Segments < 3; i++ {
		k := "k" + strconv.Itoa(i)
		if !s.Put(keyed(k, 1, size)) {
			t.Fatalf("Put %s refused", k)
		}
		keys = append(keys, k)
	}
	r, _ := s.cache.Get("h.test/" + keys[0])
	g := segOfRef(s, r)
	if g == nil || !g.full.Load() {
		t.Fatal("k0's segment is not sealed")
	}
	var exits atomic.Int64
	s.exitHook = func(ref) { exits.Add(1) }
	m := s.cache.Metrics
	added, updated, evicted := m.KeysAdded(), m.KeysUpdated(), m.KeysEvicted()
	s.evacuate(g)
	s.cache.Wait()
	if s.Stats().Moved == 0 {
		t.Fatal("nothing moved")
	}
	if m.KeysAdded() != added || m.KeysUpdated() != updated || m.KeysEvicted() != evicted || exits.Load() != 0 {
		t.Errorf("the moves told Ristretto: added %d -> %d, updated %d -> %d, evicted %d -> %d, %d exits",
			added, m.KeysAdded(), updated, m.KeysUpdated(), evicted, m.KeysEvicted(), exits.Load())
	}
	for _, k := range keys {
		o, _, _ := s.Lookup("h.test/"+k, nil)
		if o == nil {
			t.Fatalf("%s not found after the moves", k)
		}
		checkKeyed(t, o, k, size)
		if r, _ := s.cache.Get("h.test/" + k); segOfRef(s, r) == g {
			t.Errorf("%s still in the evacuated segment", k)
		}
	}
}

// TestHandleReuse: a handle released by its record's exit and taken by another key's record
// no longer resolves for the old ref, and a second exit of the old ref leaves the new
// record, and its handle, alone.
func TestHandleReuse(t *testing.T) {
	s := newStoreOf(t, 16<<20)
	s.Put(keyed("a", 1, 500))
	old, _ := s.cache.Get("h.test/a")
	s.Delete("h.test/a")
	s.cache.Wait()
	s.Put(keyed("b", 1, 500))
	nb, _ := s.cache.Get("h.test/b")
	if nb.h != old.h || nb.hgen == old.hgen {
		t.Fatalf("b's handle %d gen %d, a's was %d gen %d: want the handle taken again", nb.h, nb.hgen, old.h, old.hgen)
	}
	if _, _, _, ok := s.place(old); ok {
		t.Error("a's old ref still resolves")
	}
	s.exit(old)
	o, _, _ := s.Lookup("h.test/b", nil)
	if o == nil {
		t.Fatal("b not found after a second exit of a's ref")
	}
	checkKeyed(t, o, "b", 500)
	if _, _, _, ok := s.place(nb); !ok {
		t.Error("b's handle released by a's second exit")
	}
}
