package store

import (
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
	s.purges.add(m, r.Soft, now)
	s.purges.expire(now.Add(-max(time.Duration(s.maxHold.Load()), minRecordLife)))
	if r.Kind == URL && !r.Soft {
		s.Delete(r.Value)
	}
	return now
}

// MarkAllStale makes every object stored before now stale, for a node that could not replay
// the purges it missed.
func (s *Store) MarkAllStale() time.Time {
	now := s.clock()
	s.purges.mu.Lock()
	s.purges.all = now
	s.purges.mu.Unlock()
	s.purges.any.Store(true)
	return now
}

// minRecordLife keeps every record at least this long, longer than any fetch may take, so that
// a fill that began before the purge finds the record when it stores (purge rule 2) even if no
// object had been stored yet.
const minRecordLife = 10 * time.Minute

// mark is when a matcher was last purged, hard and soft separately: an object stored before
// hard is gone; one stored before soft (and after hard) is stale.
type mark struct{ hard, soft time.Time }

type purgeSet struct {
	any atomic.Bool // false while there is no record at all: the hit path then skips the lock

	mu      sync.RWMutex // protects records, all and swept
	records map[string]mark
	all     time.Time // MarkAllStale: everything stored before it is stale
	swept   time.Time
}

func newPurgeSet() *purgeSet { return &purgeSet{records: map[string]mark{}} }

func (p *purgeSet) add(m string, soft bool, at time.Time) {
	p.mu.Lock()
	r := p.records[m]
	if soft {
		r.soft = at
	} else {
		r.hard = at
	}
	p.records[m] = r
	p.mu.Unlock()
	p.any.Store(true)
}

func (p *purgeSet) check(o *Object) Verdict {
	if !p.any.Load() {
		return Usable
	}
	v := Usable
	p.mu.RLock()
	defer p.mu.RUnlock()
	// A fetch that began at the very instant of a purge counts as before it: ties purge.
	if covers(p.all, o.StoredAt) {
		v = SoftPurged
	}
	for i := range int(o.nm) {
		r, ok := p.records[o.entryAt(i)]
		if !ok {
			continue
		}
		if covers(r.hard, o.StoredAt) {
			return Purged
		}
		if covers(r.soft, o.StoredAt) {
			v = SoftPurged
		}
	}
	return v
}

// covers reports whether a purge at mark applies to an object whose fetch began at storedAt.
func covers(mark, storedAt time.Time) bool { return !mark.IsZero() && !storedAt.After(mark) }

// expire drops records older than horizon: every object they could match has outlived its
// longest use by then. It sweeps at most once a second so that purge storms stay cheap.
func (p *purgeSet) expire(horizon time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if horizon.Sub(p.swept) < time.Second {
		return
	}
	p.swept = horizon
	for m, r := range p.records {
		if r.hard.Before(horizon) && r.soft.Before(horizon) {
			delete(p.records, m)
		}
	}
	if len(p.records) == 0 && p.all.Before(horizon) {
		p.any.Store(false)
	}
}

func (p *purgeSet) len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.records)
}
