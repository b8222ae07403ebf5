package edge

import (
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-cdn/meridian/edge/store"
)

// purgeSeqHeader carries, on fills between fleet nodes, the highest purge stream sequence the
// requesting chain has applied. A node that has applied a purge must not refill the purged
// object from a peer or shield that has not applied it yet: that would bring the old content
// back, fresh, after the purge was acknowledged. So a node asked by a peer that is ahead of it
// waits briefly for its own subscriber to catch up and, if it does not, answers from upstream
// instead of from its cache. The order comes from the PURGE stream's sequence numbers, so it
// does not depend on clocks agreeing between machines.
const purgeSeqHeader = "Meridian-Purge-Seq"

// purgeCatchUp bounds how long a lagging node waits for its subscriber before it bypasses its
// cache; purges usually reach every node within milliseconds.
const purgeCatchUp = 100 * time.Millisecond

// advancePurgeSeq records that every purge up to seq has been applied, and wakes whoever waits
// for it. The wake channel is made by the first waiter (caughtUp) and dropped once closed, so
// that applying a purge nobody waits for allocates nothing.
func (n *Node) advancePurgeSeq(seq uint64) {
	n.purgeMu.Lock()
	defer n.purgeMu.Unlock()
	if seq <= n.purgeSeq.Load() {
		return
	}
	n.askPurgeSeqLocked(seq)
	n.purgeSeq.Store(seq)
	if n.purgeWake != nil {
		close(n.purgeWake)
		n.purgeWake = nil
	}
}

// askPurgeSeq raises the purge sequence fills ask fleet nodes for to seq (fillPurgeSeq). A fill
// stores its copy as fetched when it began: if that was after a purge's first record went into
// the store, the copy must not be an older one that a node without the purge hands over
// (found by a bug-hunt helper: asking for purgeSeq, raised only once every record was in, let
// a fill begun in between bring the purged copy back, fresh, from a lagging owner peer).
func (n *Node) askPurgeSeq(seq uint64) {
	n.purgeMu.Lock()
	n.askPurgeSeqLocked(seq)
	n.purgeMu.Unlock()
}

func (n *Node) askPurgeSeqLocked(seq uint64) {
	if seq > n.purgeSeqAsked.Load() {
		n.purgeSeqAsked.Store(seq)
	}
}

// fillPurgeSeq is the purge sequence a fill for req asks another fleet node for: every purge
// whose records may be in the store (read after the fill's start, so any purge recorded before
// that start is included) and whatever the fill's own asker needs.
func (n *Node) fillPurgeSeq(req *request) uint64 {
	return max(n.purgeSeqAsked.Load(), req.needSeq)
}

// caughtUp reports whether the node has applied every purge up to seq, waiting at most
// purgeCatchUp (or until the request ends) for it to.
func (n *Node) caughtUp(r *http.Request, seq uint64) bool {
	if seq <= n.purgeSeq.Load() {
		return true
	}
	deadline := time.NewTimer(purgeCatchUp)
	defer deadline.Stop()
	for {
		n.purgeMu.Lock()
		if n.purgeWake == nil {
			n.purgeWake = make(chan struct{})
		}
		wake := n.purgeWake
		n.purgeMu.Unlock()
		if seq <= n.purgeSeq.Load() {
			return true
		}
		select {
		case <-wake:
		case <-deadline.C:
			return seq <= n.purgeSeq.Load()
		case <-r.Context().Done():
			return false
		}
	}
}

// requiredPurgeSeq is the purge sequence a fill from a trusted fleet node asks for (0: none).
func requiredPurgeSeq(r *http.Request) uint64 {
	v, err := strconv.ParseUint(r.Header.Get(purgeSeqHeader), 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// purgeLagging reports whether the node, joined to a fleet, has gone longer than purge.max_lag
// without confirming that it applied every purge published (purge rule 5): cut off from NATS,
// or not caught up yet after joining or rejoining, or it has not yet marked stale what it
// stored before its subscription started (joinFleet). Anything in its cache may then have been
// purged meanwhile. So may it once its registration lapsed (registrationLapsed): another process
// of the node may ack for it, and it lags until its subscription confirms after a heartbeat is
// answered again (rejoinedAt); and so it does past a stop's lame duck (pastLameDuck), when a
// restart's new process no longer holds its acks for this one; and once, draining, it left its
// key to another process of the node (yieldedDraining): that one's hold ends lame_duck by its
// own config after, and a restart may have lowered lame_duck. A standalone node never lags.
func (n *Node) purgeLagging() bool {
	sub := n.purgeSub.Load()
	if sub == nil {
		return false
	}
	at := sub.CaughtUpAt()
	if !n.purgeBase.Load() || at.IsZero() || n.pastLameDuck.Load() ||
		n.yieldedDraining.Load() && n.Draining() {
		return true
	}
	if r := n.rejoinedAt.Load(); r != nil {
		if at.Before(*r) {
			return true // registered again after a lapse, not confirmed since (registered)
		}
		n.rejoinedAt.CompareAndSwap(r, nil)
	}
	return n.clock().Sub(at) > n.cfg.Purge.MaxLag || n.registrationLapsed()
}

// revalidateWhileLagging returns obj, or, while purgeLagging, a copy that lookup must revalidate
// before serving: marked no-cache and without its stale-while-revalidate window, since the
// copy may have been hard-purged where the node could not hear of it. Its stale-if-error window
// stays: when the upstream fails, the copy is served marked stale in Cache-Status. The store
// keeps obj unchanged; a 304 refreshes it from its own headers.
func (n *Node) revalidateWhileLagging(obj *store.Object) *store.Object {
	if !n.purgeLagging() {
		return obj
	}
	o := *obj
	o.Policy.NoCache = true
	o.Policy.StaleWhileRevalidate = 0
	return &o
}
