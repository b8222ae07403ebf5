package control

import (
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/purge"
)

// expectedNodes answers, for each purge, which nodes must ack it: every live node of the fleet
// view. View.Nodes copies and sorts every node record on each call, which every purge paid
// although membership changes rarely; this keeps the answer until the view reports a change of
// membership (heartbeats that change only loads do not count) or its oldest node could have
// gone stale.
type expectedNodes struct {
	view *fleet.View
	ttl  time.Duration
	snap atomic.Pointer[expectedSnap]
}

// expectedSnap is one answer and what invalidates it.
type expectedSnap struct {
	refs    []purge.NodeRef // shared by every caller: read only
	changed <-chan struct{} // closed at the view's next membership change after refs was read
	// staleAt is when the least recently heard node outlives the TTL: View.Nodes would then
	// leave it out, so the answer must be read again.
	staleAt time.Time
}

func newExpectedNodes(view *fleet.View, ttl time.Duration) *expectedNodes {
	return &expectedNodes{view: view, ttl: ttl}
}

// refs returns the live nodes as View.Nodes would now, as PoP and node names. The slice is
// shared: callers must not modify it.
func (x *expectedNodes) refs() []purge.NodeRef {
	now := time.Now()
	if s := x.snap.Load(); s != nil && now.Before(s.staleAt) {
		select {
		case <-s.changed:
		default:
			return s.refs
		}
	}
	// Ask for the change channel before reading: a change during the read closes it, so the
	// next call reads again rather than keep a stale answer.
	s := &expectedSnap{changed: x.view.MembersChanged()}
	nodes := x.view.Nodes()
	s.refs = make([]purge.NodeRef, len(nodes))
	s.staleAt = now.Add(x.ttl)
	for i, n := range nodes {
		s.refs[i] = purge.NodeRef{PoP: n.PoP, Node: n.ID}
		if at := n.Load.At.Add(x.ttl); at.Before(s.staleAt) {
			s.staleAt = at
		}
	}
	x.snap.Store(s)
	return s.refs
}
