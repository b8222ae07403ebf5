package store

import (
	"sync"
	"sync/atomic"
)

// Pending keys (issue 15). Ristretto applies the Set of a new key on its own goroutine, and
// only then can Get find it. Put used to call Ristretto's Wait after every Set, so that a
// request arriving after a fill finished found the object: a round trip to that goroutine
// that cost a miss about 1 us of CPU and two allocations (docs/benchmarks.md, "Fortieth
// pass"). Put now records a new key's value here instead, under the key's lock, and one
// goroutine of the store's own (confirm) calls Wait once for every Put made before it and
// then forgets them: by then Ristretto has stored or refused each. Lookup, Delete and a move
// look here when Ristretto does not hold the key.
//
// A replacement needs no entry: Ristretto updates a key it holds in place, at once. Put still
// records one, since it cannot tell a replacement from a new key without a look in Ristretto
// (the probe a miss saves): get never reads it (Ristretto holds the value), and it costs its
// share of pendMax and, within its round, a settle's Wait. Put settles a key still pending
// before it sets it again (Ristretto would refuse the second Set of a key it had not stored
// yet), as Delete and a move (for drop) do before they look at Ristretto.

// pendSet is the pending keys. One map for the store, not one per lock: they are few at any
// time (confirm forgets them within a round trip to Ristretto's goroutine), and a map never
// gives back its room, so 256 of them would hold more than the keys ever need.
type pendSet struct {
	mu   sync.Mutex
	m    map[string]pendEntry
	peak int
	n    atomic.Int32 // len(m), read without the lock
}

type pendEntry struct {
	r    ref
	seq  uint64 // Store.pendSeq after its Set: confirmed by a Wait begun after that
	cost int64
}

// maxPendBytes bounds the bytes that may wait for their confirmation at once (beyond it, a
// Put waits for Ristretto as before), so that a Ristretto goroutine that falls behind cannot
// let the store hold more than it admitted by much: a sixty-fourth of it (at least 64 KiB).
func maxPendBytes(maxBytes int64) int64 { return max(maxBytes/64, 64<<10) }

// pend records key's new value r, set in Ristretto, under key's lock.
func (s *Store) pend(key string, r ref, cost int64) {
	ps := &s.pending
	ps.mu.Lock()
	if ps.m == nil {
		ps.m = make(map[string]pendEntry)
	}
	ps.m[key] = pendEntry{r: r, seq: s.pendSeq.Add(1), cost: cost}
	ps.n.Store(int32(len(ps.m)))
	ps.peak = max(ps.peak, len(ps.m))
	ps.mu.Unlock()
	s.pendBytes.Add(cost)
}

// pendingRef returns the value a Put set for key that Ristretto may not show yet.
func (s *Store) pendingRef(key string) (ref, bool) {
	ps := &s.pending
	if ps.n.Load() == 0 {
		return ref{}, false
	}
	ps.mu.Lock()
	p, ok := ps.m[key]
	ps.mu.Unlock()
	if !ok || (p.r.e != nil && p.r.e.gone.Load()) {
		return ref{}, false // refused or dropped meanwhile
	}
	return p.r, true
}

// settle makes sure Ristretto has applied key's pending Set, if any, under key's lock: those
// who are about to look at or change what Ristretto holds for key call it first.
func (s *Store) settle(key string) {
	ps := &s.pending
	if ps.n.Load() == 0 {
		return
	}
	ps.mu.Lock()
	p, ok := ps.m[key]
	ps.mu.Unlock()
	if !ok {
		return
	}
	s.cache.Wait()
	ps.mu.Lock()
	if q, ok := ps.m[key]; ok && q.seq == p.seq { // else confirm forgot it meanwhile
		// Counted as confirm counts its rounds: a Lookup that missed key in Ristretto
		// before the Wait, and misses it here now, must look in Ristretto again (get).
		s.confirmed.Add(1)
		ps.forget(key, p.cost, &s.pendBytes)
	}
	ps.mu.Unlock()
}

// forget drops key, under ps.mu. An emptied map that had grown gives its room back.
func (ps *pendSet) forget(key string, cost int64, bytes *atomic.Int64) {
	delete(ps.m, key)
	bytes.Add(-cost)
	ps.n.Store(int32(len(ps.m)))
	if len(ps.m) == 0 && ps.peak > 64 {
		ps.m, ps.peak = nil, 0
	}
}

// get is Ristretto's Get of key, or its pending value. A key confirmed (and forgotten here)
// between the two looks is looked up in Ristretto again: confirm counts a round before it
// forgets anything, and settle counts one before it forgets its key.
func (s *Store) get(key string) (ref, bool) {
	for try := 0; ; try++ {
		round := s.confirmed.Load()
		if r, ok := s.cache.Get(key); ok {
			return r, true
		}
		if s.missHook != nil {
			s.missHook(key)
		}
		if r, ok := s.pendingRef(key); ok {
			return r, true
		}
		if try == 2 || s.confirmed.Load() == round {
			return ref{}, false
		}
	}
}

// confirm is the store's goroutine that confirms pending Sets: after each Put that left one,
// a Wait for Ristretto's goroutine, then the Puts it covered are forgotten. Those that came
// while it waited are confirmed by the next round, so a busy store waits once for many.
func (s *Store) confirm() {
	defer close(s.confirmDone)
	for {
		select {
		case <-s.stopConfirm:
			return
		case <-s.kick:
		}
		upTo := s.pendSeq.Load()
		s.cache.Wait()
		s.confirmed.Add(1) // before anything is forgotten: get
		ps := &s.pending
		ps.mu.Lock()
		for k, p := range ps.m {
			if p.seq <= upTo {
				ps.forget(k, p.cost, &s.pendBytes)
			}
		}
		ps.mu.Unlock()
	}
}

// kickConfirm asks confirm for a round, unless one is asked for already.
func (s *Store) kickConfirm() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
