package edge

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/edge/store"
)

// ownFlight marks the flight key of a fill for one client of a key marked uncacheable, which
// nobody joins (it is followed by a number of its own).
const ownFlight = "\x00own="

// uncacheableFor is how long a key whose fill brought an answer no other client may be given
// is filled without collapsing (uncacheable); Varnish's built-in VCL keeps its hit-for-miss
// objects as long.
const uncacheableFor = 2 * time.Minute

// uncacheableCap is how many marks (variants, of every key) a node remembers; past it, one
// key's are forgotten (its next misses collapse again, as before the first).
const uncacheableCap = 4096

// maxMarkVary bounds the bytes of the Vary field names a key's marks keep (the origin's, not
// the clients'); a key whose answer varies by more is marked whole, every variant, as if it
// had no Vary.
const maxMarkVary = 256

// uncacheable remembers the keys whose last fill brought an answer other clients could not be
// given (private, no-store, Set-Cookie, Vary: *, one user's 5xx): clients that waited for it
// each had to fetch their own afterwards, one origin round trip behind the other. Misses of
// such a key are filled each for its own client, at once, as Varnish's hit-for-miss does; such
// a fill still stores what may be stored, and an answer or a failure that may be shared ends
// the mark.
//
// A mark is the variant's whose answer it was, as Varnish's hit-for-miss object carries its
// Vary: one language's private answer leaves the other languages' misses collapsed. A key's
// marks keep the Vary of the answer that set them and, under it, the marked variants'
// (store.VariantKey, as collapse tells a waiter's variant from its leader's); an answer without
// Vary, or with Vary: *, marks every variant.
//
// A mark is kept by its key's hash, not the key: keys are the clients' URLs, and an origin that
// sets a cookie on every answer lets any client mark uncacheableCap of its choosing. Two keys
// with one hash share marks: the other's misses go unshared for a while, no answer is wrong.
// Likewise a variant's mark is its Vary key's hash.
type uncacheable struct {
	n    atomic.Int32 // marks held, of every key: the miss path reads it without the lock
	mu   sync.Mutex   // protects seed and keys
	seed maphash.Seed
	keys map[uint64]*keyMarks // by maphash of the key
}

// keyMarks are one key's marks: the Vary field names of the answer that set them, and the
// variants marked under them, at most store.MaxVariants (as many as the store keeps).
type keyMarks struct {
	vary  []string
	marks []variantMark
}

// variantMark marks the variant whose Vary key has hash h until then.
type variantMark struct {
	h     uint64
	until time.Time
}

// hashLocked is s's hash under u's seed.
func (u *uncacheable) hashLocked(s string) uint64 {
	if u.keys == nil {
		u.seed, u.keys = maphash.MakeSeed(), map[uint64]*keyMarks{}
	}
	return maphash.String(u.seed, s)
}

// variantLocked is the index in m.marks of req's variant's mark, or -1. req's Vary key is
// built under the lock: only while some key is marked, and from a few fields.
func (u *uncacheable) variantLocked(m *keyMarks, req store.VaryHeader) int {
	return m.index(u.hashLocked(store.VariantKey(m.vary, req)))
}

// index is the index in m.marks of the mark of the variant whose Vary key has hash vh, or -1.
func (m *keyMarks) index(vh uint64) int {
	return slices.IndexFunc(m.marks, func(v variantMark) bool { return v.h == vh })
}

// has reports whether req's variant of key is marked at now.
func (u *uncacheable) has(key string, req store.VaryHeader, now time.Time) bool {
	if u.n.Load() == 0 {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	h := u.hashLocked(key)
	m := u.keys[h]
	if m == nil {
		return false
	}
	// Every mark of the key that ended goes, not only req's variant's: one left while only
	// other variants are asked keeps n above 0, and every miss of the node in this lock.
	for i := len(m.marks) - 1; i >= 0; i-- {
		if !now.Before(m.marks[i].until) {
			u.dropLocked(h, m, i)
		}
	}
	if len(m.marks) == 0 {
		return false // the key's entry went with its last mark
	}
	return u.variantLocked(m, req) >= 0
}

// note records what a fill of req's variant of key brought: res marks the variant, or ends
// its mark. A failure the clients of a fill share (any but one user's 5xx) ends every mark of
// the key: during an origin outage its misses collapse again onto one fill and share its
// error, rather than each going to the failing origin at once for as long as the mark lasts.
func (u *uncacheable) note(key string, req store.VaryHeader, res *fillResult, now time.Time) {
	if res.err == nil && res.shareable || res.err != nil && !res.personal {
		if u.n.Load() == 0 {
			return
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		h := u.hashLocked(key)
		switch m := u.keys[h]; {
		case m == nil:
		case res.err != nil: // a shared failure: every mark of the key
			u.forgetLocked(h, m)
		default: // an answer that may be shared: its variant's
			if i := u.variantLocked(m, req); i >= 0 {
				u.dropLocked(h, m, i)
			}
		}
		return
	}
	// An answer that may not be shared, or one user's 5xx: its variant is marked.
	var vary []string
	if uv := res.unshared; uv != nil && !uv.all && varyBytes(uv.vary) <= maxMarkVary {
		vary = uv.vary
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	h, vh := u.hashLocked(key), u.hashLocked(store.VariantKey(vary, req))
	m := u.keys[h]
	if m != nil && !slices.Equal(m.vary, vary) {
		// Marks under another Vary: their variants are not this answer's to compare.
		u.forgetLocked(h, m)
		m = nil
	}
	if m != nil {
		if i := m.index(vh); i >= 0 {
			m.marks[i].until = now.Add(uncacheableFor)
			return
		}
	}
	if u.n.Load() >= uncacheableCap {
		u.evictLocked(now)
		m = u.keys[h]
	}
	if m == nil {
		m = &keyMarks{vary: cloneVary(vary)}
		u.keys[h] = m
	}
	if len(m.marks) >= store.MaxVariants {
		// The mark that ends first makes room.
		first := 0
		for i, v := range m.marks {
			if v.until.Before(m.marks[first].until) {
				first = i
			}
		}
		m.marks = slices.Delete(m.marks, first, first+1)
		u.n.Add(-1)
	}
	m.marks = append(m.marks, variantMark{h: vh, until: now.Add(uncacheableFor)})
	u.n.Add(1)
}

// dropLocked drops the mark m.marks[i] of the key of hash h, and the key's entry with its last.
func (u *uncacheable) dropLocked(h uint64, m *keyMarks, i int) {
	m.marks = slices.Delete(m.marks, i, i+1)
	u.n.Add(-1)
	if len(m.marks) == 0 {
		delete(u.keys, h)
	}
}

// forgetLocked drops every mark of the key of hash h, which are m.
func (u *uncacheable) forgetLocked(h uint64, m *keyMarks) {
	u.n.Add(-int32(len(m.marks)))
	delete(u.keys, h)
}

// evictLocked makes room for one mark: the expired ones go, else any one key's.
func (u *uncacheable) evictLocked(now time.Time) {
	for h, m := range u.keys {
		for i := len(m.marks) - 1; i >= 0; i-- {
			if !now.Before(m.marks[i].until) {
				u.dropLocked(h, m, i)
			}
		}
	}
	if u.n.Load() < uncacheableCap {
		return
	}
	for h, m := range u.keys {
		u.forgetLocked(h, m)
		return
	}
}

// varyBytes is the length of a Vary list's names.
func varyBytes(vary []string) int {
	n := 0
	for _, f := range vary {
		n += len(f)
	}
	return n
}

// cloneVary copies a Vary list and its names: ParseVary's may be parts of the answer's
// header, which a mark must not keep.
func cloneVary(vary []string) []string {
	if len(vary) == 0 {
		return nil
	}
	out := make([]string, len(vary))
	for i, f := range vary {
		out[i] = strings.Clone(f)
	}
	return out
}
