package store

import (
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is what a purge record matches.
type Kind int

const (
	// URL matches one URL (its primary key) with all its Vary variants.
	URL Kind = iota
	// Prefix matches every path at or below a path-segment prefix of one host.
	Prefix
	// Key matches every object of one host that declared the surrogate key.
	Key
	// Host matches every object of one host.
	Host
)

// Record is one purge as the store applies it.
type Record struct {
	Kind Kind
	Host string
	// Value is the primary key for URL, the path prefix for Prefix, the surrogate key for Key,
	// and unused for Host.
	Value string
	// Soft purges make matching objects stale instead of gone.
	Soft bool
}

// Purge records r at the store's current time: from now on, objects stored (fetch begun)
// before this moment and matching r are gone (or stale, if soft). A hard URL purge also frees
// the URL's memory. It returns the time the record took effect.
func (s *Store) Purge(r Record) time.Time {
	now := s.clock()
	var m string
	switch r.Kind {
	case URL:
		m = "u\x00" + r.Value
	case Prefix:
		// "/a/" and "/a" both mean everything at or below /a; "/" means the whole host.
		if p := strings.TrimSuffix(r.Value, "/"); p != "" {
			m = "p\x00" + r.Host + p
		} else {
			m = "h\x00" + r.Host
		}
	case Key:
		m = "k\x00" + r.Host + "\x00" + r.Value
	case Host:
		m = "h\x00" + r.Host
	}
	s.purges.add(m, r.Host, r.Soft, now)
	s.expireRecords(now)
	if r.Kind == URL && !r.Soft {
		s.Delete(r.Value)
	}
	return now
}

// MarkAllStale makes every object stored before now Doubtful (stale, and not to be served
// under stale-while-revalidate), for a node that could not replay the purges it missed.
func (s *Store) MarkAllStale() time.Time { return s.markAll(&s.purges.all) }

// DropAll makes every object stored before now (fetch begun) gone, as a hard purge of
// everything would: for a node that says the purges it never applied are in effect (its join
// ack), where a Doubtful copy (MarkAllStale) could still be served under stale-if-error though
// one of them hard-purged it.
func (s *Store) DropAll() time.Time { return s.markAll(&s.purges.gone) }

// markAll sets mark (purges.all or purges.gone, which purges.mu guards) to now and returns now.
func (s *Store) markAll(mark *int64) time.Time {
	now := s.clock()
	s.purges.mu.Lock()
	*mark = stamp(now)
	s.purges.any.Store(true)
	s.purges.setDue()
	s.purges.mu.Unlock()
	return now
}

// expireRecords drops the purge records that no object of use at now can match any more.
func (s *Store) expireRecords(now time.Time) {
	s.purges.expire(now.Add(-s.RecordLife()))
}

// RecordLife is how long a purge record is kept: as long as any object stored before it may
// still be of use (the longest hold seen), and at least longer than any fetch may take.
func (s *Store) RecordLife() time.Duration {
	return max(time.Duration(s.maxHold.Load()), minRecordLife)
}

// minRecordLife keeps every record at least this long, longer than any fetch may take, so that
// a fill that began before the purge finds the record when it stores (purge rule 2) even if no
// object had been stored yet.
const minRecordLife = 10 * time.Minute

// mark is when a matcher was last purged, hard and soft separately (stamp; 0 for never): an
// object stored before hard is gone; one stored before soft (and after hard) is stale.
type mark struct{ hard, soft int64 }

// queued is a record in the queue: its matcher's hash, its host's, and the stamp it was queued
// with.
type queued struct {
	h, host uint64
	at      int64
}

// purgeSet holds the read-time purge records. It is sized and swept for purge storms (issue
// 15): a record is a map entry of 24 bytes keyed by its matcher's 64-bit hash, plus 24 in the
// queue, and nothing the collector follows; expiry takes the records that are due from the
// queue's head instead of walking the map under the lock (31 ms at a million records, during
// which every lookup waited); and at most max records are kept, more only briefly.
//
// Two matchers with the same hash share a record: an object may then be purged by a purge of
// another matcher (a refetch), never served past one of its own.
type purgeSet struct {
	any atomic.Bool // false while there is no record at all: the hit path then skips the lock

	mu      sync.RWMutex // protects everything below
	seed    maphash.Seed
	records map[uint64]mark
	// queue holds each record once, oldest first: a record is queued when it is added, and
	// queued again with its newest stamp when it comes out of the queue purged again.
	queue ring
	all   int64 // MarkAllStale: everything stored before it is stale
	gone  int64 // DropAll: everything stored before it is gone
	// floors are, by host hash, the stamp of the newest record of the host retired because
	// there were more than max: everything of the host stored before it is gone, as if that
	// record and every older one matched it. A host under a purge storm (or a flood of unsafe
	// requests, which invalidate) refetches its older objects rather than grow the node's
	// memory without bound; other hosts keep theirs.
	floors     map[uint64]int64
	floorSwept int64 // the horizon floors were last swept at
	max        int
	retired    uint64 // records retired for max

	// due is the least horizon (stamp) at which expire has anything to do, kept by every
	// change: below it expire returns without the lock, so that Put can call it on every fill
	// and records still go when no purge comes after a storm.
	due atomic.Int64
}

// recordCap is how many purge records a store of maxBytes keeps (purgeSet.floors): 15 per
// 32 KiB, at least 32,768; below a power of two, so that the queue, whose array is one, does
// not double for the records a purge adds past the cap before it retires them (add). Full,
// they take about 4 % of maxBytes beyond it (82 bytes a record on the heap, with the map's and
// the queue's slack).
func recordCap(maxBytes int64) int { return int(max(maxBytes/2048*15/16, 1<<15)) }

func newPurgeSet(max int) *purgeSet {
	p := &purgeSet{records: map[uint64]mark{}, floors: map[uint64]int64{}, seed: maphash.MakeSeed(), max: max}
	p.due.Store(math.MaxInt64)
	return p
}

// setDue recomputes due; the caller holds mu.
func (p *purgeSet) setDue() {
	due := int64(math.MaxInt64)
	if p.queue.n > 0 {
		due = p.queue.front().at + 1
	}
	if len(p.floors) > 0 {
		due = min(due, p.floorSwept+int64(time.Second))
	}
	if p.any.Load() && len(p.records) == 0 && len(p.floors) == 0 {
		due = min(due, max(p.all, p.gone)+1) // any is cleared once all and gone are behind
	}
	p.due.Store(due)
}

// stamp is t as a record keeps it, never 0 (which means never): its distance from monoBase,
// by the monotonic clock where t has a reading (time.Now's, and a packed object's StoredAt,
// see monoBase), so that a record and a StoredAt compare as the two times would.
func stamp(t time.Time) int64 {
	const half = 1 << 62
	return min(max(int64(t.Sub(monoBase)), -half+1), half-1) + half
}

func (r mark) latest() int64 { return max(r.hard, r.soft) }

// capSteps bounds the queue entries one add looks at to keep the cap, and so how long it
// holds the lock. Records purged again are queued again with their newest stamp before they
// can go, so a run of them could otherwise make one purge walk the whole queue; with a bound,
// the records may exceed the cap by about max/(capSteps-1) for a while.
const capSteps = 64

func (p *purgeSet) add(m, host string, soft bool, at time.Time) {
	h, n := maphash.String(p.seed, m), stamp(at)
	p.mu.Lock()
	r, ok := p.records[h]
	if soft {
		r.soft = n
	} else {
		r.hard = n
	}
	p.records[h] = r
	if !ok {
		p.queue.push(queued{h, maphash.String(p.seed, host), n})
	}
	for i := 0; i < capSteps && len(p.records) > p.max; i++ {
		q := p.queue.pop()
		if l := p.records[q.h].latest(); l > q.at {
			q.at = l
			p.queue.push(q) // purged again since it was queued
			continue
		}
		delete(p.records, q.h)
		p.floors[q.host] = max(p.floors[q.host], q.at)
		p.retired++
	}
	p.any.Store(true)
	p.setDue()
	p.mu.Unlock()
}

// ring is a FIFO queue of records in a power-of-two array that wraps around: unlike a slice
// taken from the front, it never moves its records except to grow or shrink.
type ring struct {
	buf     []queued
	head, n int
}

func (r *ring) push(q queued) {
	if r.n == len(r.buf) {
		r.resize(max(64, 2*len(r.buf)))
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = q
	r.n++
}

// front is the oldest record; the queue must not be empty.
func (r *ring) front() queued { return r.buf[r.head] }

func (r *ring) pop() queued {
	q := r.buf[r.head]
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if len(r.buf) > 1024 && r.n < len(r.buf)/4 {
		r.resize(len(r.buf) / 2) // after a storm, give back what it took
	}
	return q
}

func (r *ring) resize(size int) {
	buf := make([]queued, size)
	for i := range r.n {
		buf[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
	}
	r.buf, r.head = buf, 0
}

// Verdict says whether a purge recorded since o's fetch began matches o. The edge asks it of
// a fill's answer that requests joined while the fill ran: one of them may have arrived after
// a purge (filler.collapse). Put computes the keys a purge can match an object by; for one it
// has not seen (a streaming fill's answer, stored only once its body is in, or never if too
// large) they are computed here, on a copy.
func (s *Store) Verdict(o *Object) Verdict {
	if o.arena == "" && s.purges.any.Load() {
		c := *o
		c.memo = nil
		c.compact() // c's strings and header; o's header is read, not changed
		o = &c
	}
	return s.purges.check(o)
}

func (p *purgeSet) check(o *Object) Verdict {
	if !p.any.Load() {
		return Usable
	}
	st := stamp(o.StoredAt)
	v := Usable
	p.mu.RLock()
	defer p.mu.RUnlock()
	// A fetch that began at the very instant of a purge counts as before it: ties purge.
	if len(p.floors) > 0 && covers(p.floors[maphash.String(p.seed, o.Host)], st) {
		return Purged
	}
	if covers(p.gone, st) {
		return Purged
	}
	if covers(p.all, st) {
		v = Doubtful
	}
	for i := range int(o.nm) {
		r, ok := p.records[maphash.String(p.seed, o.entryAt(i))]
		if !ok {
			continue
		}
		if covers(r.hard, st) {
			return Purged
		}
		if covers(r.soft, st) {
			v = max(v, SoftPurged)
		}
	}
	return v
}

// covers reports whether a purge stamped mark (0: none) applies to an object whose fetch began
// at the stamp storedAt.
func covers(mark, storedAt int64) bool { return mark != 0 && storedAt <= mark }

// expireBudget bounds the records one expire looks at, and so how long it holds the lock that
// lookups wait on. Every Purge and every Put calls expire, so records due go at least at the
// rate they came.
const expireBudget = 1024

// expire drops records older than horizon, the oldest first: every object they could match
// has outlived its longest use by then.
func (p *purgeSet) expire(horizon time.Time) {
	hz := stamp(horizon)
	if hz < p.due.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.setDue()
	for range expireBudget {
		if p.queue.n == 0 || p.queue.front().at >= hz {
			break
		}
		q := p.queue.pop()
		if l := p.records[q.h].latest(); l >= hz {
			q.at = l
			p.queue.push(q) // purged again since it was queued
			continue
		}
		delete(p.records, q.h)
	}
	// Floors go once nothing stored before them is of use any more; there is one per host at
	// most, so a sweep a second is cheap.
	if len(p.floors) > 0 && hz-p.floorSwept >= int64(time.Second) {
		p.floorSwept = hz
		for host, f := range p.floors {
			if f < hz {
				delete(p.floors, host)
			}
		}
	}
	if len(p.records) == 0 && p.all < hz && p.gone < hz && len(p.floors) == 0 {
		p.any.Store(false)
	}
}

func (p *purgeSet) len() (records int, retired uint64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.records), p.retired
}
