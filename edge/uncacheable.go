package edge

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// ownFlight marks the flight key of a fill for one client of a key marked uncacheable, which
// nobody joins (it is followed by a number of its own).
const ownFlight = "\x00own="

// uncacheableFor is how long a key whose fill brought an answer no other client may be given
// is filled without collapsing (uncacheable); Varnish's built-in VCL keeps its hit-for-miss
// objects as long.
const uncacheableFor = 2 * time.Minute

// uncacheableCap is how many such keys a node remembers; past it, one is forgotten (its next
// misses collapse again, as before the first).
const uncacheableCap = 4096

// uncacheable remembers the keys whose last fill brought an answer other clients could not be
// given (private, no-store, Set-Cookie, Vary: *, one user's 5xx): clients that waited for it
// each had to fetch their own afterwards, one origin round trip behind the other. Misses of
// such a key are filled each for its own client, at once, as Varnish's hit-for-miss does; such
// a fill still stores what may be stored, and an answer or a failure that may be shared ends
// the mark.
//
// A mark is kept by its key's hash, not the key: keys are the clients' URLs, and an origin that
// sets a cookie on every answer lets any client mark uncacheableCap of its choosing. Two keys
// with one hash share a mark: the other's misses go unshared for a while, no answer is wrong.
type uncacheable struct {
	n     atomic.Int32 // len(until): the miss path reads it without the lock
	mu    sync.Mutex   // protects until and seed
	seed  maphash.Seed
	until map[uint64]time.Time // by maphash of the key
}

// hashLocked is key's hash under u's seed.
func (u *uncacheable) hashLocked(key string) uint64 {
	if u.until == nil {
		u.seed, u.until = maphash.MakeSeed(), map[uint64]time.Time{}
	}
	return maphash.String(u.seed, key)
}

// has reports whether key is marked at now.
func (u *uncacheable) has(key string, now time.Time) bool {
	if u.n.Load() == 0 {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	h := u.hashLocked(key)
	t, ok := u.until[h]
	if ok && !now.Before(t) {
		delete(u.until, h)
		u.n.Store(int32(len(u.until)))
		return false
	}
	return ok
}

// note records what a fill of key brought: res marks key, or ends its mark. A failure the
// clients of a fill share (any but one user's 5xx) ends it too: during an origin outage the
// key's misses collapse again onto one fill and share its error, rather than each going to the
// failing origin at once for as long as the mark lasts.
func (u *uncacheable) note(key string, res *fillResult, now time.Time) {
	switch {
	case res.err == nil && res.shareable, res.err != nil && !res.personal:
		if u.n.Load() == 0 {
			return
		}
		u.mu.Lock()
		delete(u.until, u.hashLocked(key))
		u.n.Store(int32(len(u.until)))
		u.mu.Unlock()
	default: // an answer that may not be shared, or one user's 5xx
		u.mu.Lock()
		defer u.mu.Unlock()
		h := u.hashLocked(key)
		if _, ok := u.until[h]; !ok && len(u.until) >= uncacheableCap {
			u.evictLocked(now)
		}
		u.until[h] = now.Add(uncacheableFor)
		u.n.Store(int32(len(u.until)))
	}
}

// evictLocked makes room for one key: the expired ones go, else any one.
func (u *uncacheable) evictLocked(now time.Time) {
	for k, t := range u.until {
		if !now.Before(t) {
			delete(u.until, k)
		}
	}
	if len(u.until) < uncacheableCap {
		return
	}
	for k := range u.until {
		delete(u.until, k)
		return
	}
}
