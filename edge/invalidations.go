package edge

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// boundedFlight marks the flight key of a fill that carries a fleet node's age bound, joined by
// the requests that carry one when the fill they first joined did not (filler.collapse).
const boundedFlight = "\x00max-age"

// purgedFlight marks the flight key of a fill again for requests that joined a fill whose
// answer a purge matched meanwhile (filler.collapse).
const purgedFlight = "\x00purged"

// maxPurgedFlights bounds how many times a request fills again because the fill it joined was
// purged meanwhile (filler.collapse): each time takes a purge that came during that fill.
const maxPurgedFlights = 4

// invalidationCap is how many invalidated URLs a node remembers (invalidations): about 100
// bytes each. A flood of unsafe requests makes it forget the oldest, which then fill as
// before (the tier above may hand back the copy they replaced until it expires there).
const invalidationCap = 4096

// invalidations remembers the URLs this node invalidated itself (RFC 9111 §4.4: a successful
// unsafe request passed through it) and when. The tiers above it (the key's owner in the PoP,
// the shield) did not see that request and still hold the copy it replaced, so a fill of one
// of these URLs asks them for nothing older than the invalidation (Cache-Control: max-age on
// the signed fill request, fillCacheControl) and they revalidate theirs: a client that
// writes through a node and then reads through it sees its write, as with a single cache.
type invalidations struct {
	n     atomic.Int32 // len(at): the fill path reads it without the lock
	mu    sync.RWMutex
	at    map[string]time.Time
	order []invalidated // oldest first, at most invalidationCap
}

type invalidated struct {
	key string
	at  time.Time
}

// add records that key was invalidated at t.
func (v *invalidations) add(key string, t time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.at == nil {
		v.at = map[string]time.Time{}
	}
	v.at[key] = t
	v.order = append(v.order, invalidated{key, t})
	if len(v.order) > invalidationCap {
		old := v.order[0]
		v.order = v.order[1:]
		if v.at[old.key].Equal(old.at) { // not invalidated again since
			delete(v.at, old.key)
		}
	}
	v.n.Store(int32(len(v.at)))
}

// since returns when key was last invalidated, if it is remembered.
func (v *invalidations) since(key string) (time.Time, bool) {
	if v.n.Load() == 0 {
		return time.Time{}, false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	t, ok := v.at[key]
	return t, ok
}

// fillCacheControl is the Cache-Control of a fill of req from another node: "max-age=N" when
// nothing older than N seconds will do, because this node invalidated the URL N seconds ago
// (rounded down: a copy fetched before then is older than N), or because the fleet node that
// asked this one said so; else "". A node that gets it revalidates an older copy
// (serveCacheable) and passes the bound on to its own tiers.
func (n *Node) fillCacheControl(req *request) string {
	bound, has := req.maxAge, req.hasMaxAge
	if t, ok := n.invalidations.since(req.key); ok {
		if age := max(n.clock().Sub(t), 0).Truncate(time.Second); !has || age < bound {
			bound, has = age, true
		}
	}
	if !has {
		return ""
	}
	return "max-age=" + strconv.FormatInt(int64(bound/time.Second), 10)
}
