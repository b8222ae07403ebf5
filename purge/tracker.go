package purge

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/fleet"
)

// NodeRef names one node of one PoP.
type NodeRef struct {
	PoP  string `json:"pop"`
	Node string `json:"node"`
}

// Node states in a receipt (NodeAck.Status).
const (
	// NodeAcked: the node acked; the purge took effect there.
	NodeAcked = "acked"
	// NodePending: the node is registered and has not acked yet.
	NodePending = "pending"
	// NodeUnreachable: the node was registered when the purge was issued, has not acked, and is
	// no longer in the fleet registry. The purge stays incomplete: the node replays the purge
	// stream when it comes back, and acks then (a new process under the same id with its join
	// ack, Ack.Through), unless an operator declares it gone.
	NodeUnreachable = "unreachable"
	// NodeGone: an operator declared the unreachable node gone (Tracker.DeclareGone); the
	// purge no longer waits for it. If it comes back and acks after all, it reads acked.
	NodeGone = "gone"
)

// Errors of Tracker.DeclareGone.
var (
	ErrUnknownPurge = errors.New("unknown purge")
	ErrUnknownNode  = errors.New("node was not registered when the purge was issued")
	ErrNodeLive     = errors.New("node is registered and may still ack: only an unreachable node can be declared gone")
)

// Receipt is what is known about one purge's propagation: every node that was registered when
// it was issued (and, for a receipt held for registrations, every node that registered while
// it was held), with its state: acked (and when), pending, unreachable (left the registry
// without acking) or declared gone.
type Receipt struct {
	ID       string    `json:"id"`
	Seq      uint64    `json:"seq,omitempty"`
	Host     string    `json:"host"`
	Kind     Kind      `json:"kind"`
	Soft     bool      `json:"soft,omitempty"`
	IssuedAt time.Time `json:"issued_at"`
	// Complete is true once every expected node acked or was declared gone, and the receipt
	// is no longer held for registrations.
	Complete    bool       `json:"complete"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// AwaitingRegistrationsUntil is set while the receipt is held for registrations
	// (Tracker.HoldNew): its issuer did not know yet every node that must ack (control's fleet
	// view, right after a restart, lacks the nodes that have not registered again). Until then,
	// on the issuer's clock, it is not complete, and nodes that register are added to it.
	AwaitingRegistrationsUntil *time.Time `json:"awaiting_registrations_until,omitempty"`
	// DurationMs is from IssuedAt to the last ack received (so far, if not complete).
	DurationMs float64      `json:"duration_ms"`
	PoPs       []PoPReceipt `json:"pops"`
	// Pending lists the expected nodes that have not acked and were not declared gone: the
	// ones Complete waits for.
	Pending []NodeRef `json:"pending"`
	// Unreachable lists the pending nodes that are no longer in the fleet registry.
	Unreachable []NodeRef `json:"unreachable"`
	// Gone lists the nodes an operator declared gone before they acked.
	Gone []NodeRef `json:"gone,omitempty"`
}

// PoPReceipt is one PoP's part of a Receipt.
type PoPReceipt struct {
	PoP      string `json:"pop"`
	Complete bool   `json:"complete"`
	// AckedAt is when the PoP's last node acked, once all have acked or are gone (and at least
	// one acked); LatencyMs is that minus IssuedAt.
	AckedAt   *time.Time `json:"acked_at,omitempty"`
	LatencyMs float64    `json:"latency_ms,omitempty"`
	Nodes     []NodeAck  `json:"nodes"`
}

// NodeAck is one node's part of a Receipt.
type NodeAck struct {
	Node  string `json:"node"`
	Acked bool   `json:"acked"`
	// Status is NodeAcked, NodePending, NodeUnreachable or NodeGone.
	Status string `json:"status"`
	// AckedAt is when the tracker received the ack (the control plane's clock, like IssuedAt);
	// AppliedAt is the node's own clock.
	AckedAt   *time.Time `json:"acked_at,omitempty"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	Hits      int        `json:"hits"`
	LatencyMs float64    `json:"latency_ms,omitempty"`
	// Unexpected marks a node that acked without being in the expected list (it joined late).
	Unexpected bool `json:"unexpected,omitempty"`
	// Joined marks an ack of a process that joined the stream after the purge (the node was
	// restarted): it holds nothing older than its join, so the purge is in effect there
	// without its having applied it (Ack.Through).
	Joined bool `json:"joined,omitempty"`
}

// Tracker defaults.
const (
	DefaultMaxPurges = 10000
	// DefaultAskEvery is how often Run asks nodes pending for no visible reason where they are.
	DefaultAskEvery = 5 * time.Second
)

// TrackerOption changes a Tracker default.
type TrackerOption func(*Tracker)

// WithMaxPurges keeps receipts for the last n purges (default DefaultMaxPurges).
func WithMaxPurges(n int) TrackerOption { return func(t *Tracker) { t.maxPurges = n } }

// WithRetention forgets receipts older than d (default DefaultRetention).
func WithRetention(d time.Duration) TrackerOption { return func(t *Tracker) { t.retention = d } }

// WithLogger sets where dropped acks are reported (default: discarded).
func WithLogger(l *slog.Logger) TrackerOption { return func(t *Tracker) { t.log = l } }

// WithAskEvery sets how often the tracker asks the nodes still pending in a receipt older
// than that for their position (Run; default DefaultAskEvery). It also asks at once after its
// connection reconnects.
func WithAskEvery(d time.Duration) TrackerOption { return func(t *Tracker) { t.askEvery = d } }

// WithClock sets the clock that stamps received acks (default time.Now).
func WithClock(now func() time.Time) TrackerOption { return func(t *Tracker) { t.now = now } }

// WithRegistry sets how the tracker learns which nodes are in the fleet registry now, to report
// a pending node that left it as unreachable. It is called without the tracker's lock held,
// once per receipt. Default: every node counts as registered (none is ever unreachable).
func WithRegistry(registered func() []NodeRef) TrackerOption {
	return func(t *Tracker) { t.registered = registered }
}

// Tracker is the control side of purges: it listens for acks and keeps a receipt per purge.
type Tracker struct {
	nc        *nats.Conn
	live      string // the live subject, where Run asks pending nodes for their position
	sub       *nats.Subscription
	log       *slog.Logger
	now       func() time.Time
	maxPurges int
	retention time.Duration
	askEvery  time.Duration
	// registered lists the nodes in the registry now; nil means every node is.
	registered func() []NodeRef
	// dropped counts the acks dropped (Dropped); undecodable and misnamed log them, rate
	// limited: anyone who may make a JetStream request can have its answer sent to an ack
	// subject, and a node may send anything on its own.
	dropped               atomic.Uint64
	undecodable, misnamed *fleet.RateLog

	// mu guards entries and order, not what is in an entry: each purge has its own lock, so
	// that the acks of one purge, the waits on another and new registrations do not queue
	// behind each other (on a busy machine one lock for all formed a convoy).
	mu      sync.RWMutex
	entries map[string]*entry // by purge id
	order   []string          // ids of entries in registration order, oldest first, for eviction
	serial  uint64            // the last registration's entry.serial
	// pending is the index askPending built last (nil: none yet), by which a join ack or an
	// answer finds the receipts it can affect without scanning every receipt; spare is the one
	// before, whose memory the next build reuses (askPending's only: no reader holds it, as
	// readers copy what they need under mu).
	pending, spare *pendingIndex
	// seqChanges counts the known sequences SetSeq changed (a purge registered and published
	// again): an index built before sorts such a receipt by its old one and is not used. Nodes
	// added to held receipts (Expect, Release) count too: the index does not list them.
	seqChanges atomic.Uint64
	// joins are the join acks (Ack.Through) of the last joinMemory, for the purges whose
	// sequence the tracker learns after one came (SetSeq, or a node's ack): replaced, never
	// changed in place, under mu; nil when there are none, so an ack costs one load.
	joins atomic.Pointer[[]joinAck]
	// hold, while not nil, holds every receipt registered for registrations (HoldNew until
	// Release); held are those receipts, in registration order. Under mu.
	hold *regHold
	held []*entry
	// heldNodes are the nodes the last Expect was given, sorted, and heldThrough how many of
	// held (the first) list them all: the next Expect adds to those only its nodes not in
	// heldNodes, and all its nodes to the receipts registered since, without visiting a
	// receipt that lacks none (control calls it at every read of receipts in the grace, over
	// every receipt held).
	// Under mu; changed by Expect and Release only, which expectMu serialises (a call waits for
	// the one before to finish its additions, so that what it reads then is so).
	heldNodes   []NodeRef
	heldThrough int
	expectMu    sync.Mutex
}

// regHold is one hold of new receipts for registrations (HoldNew), shared by the receipts it
// holds.
type regHold struct {
	until atomic.Pointer[time.Time] // when the caller means to release them (HoldNew)
}

// joinAck is a node process's join: every purge up to through is in effect there.
type joinAck struct {
	ref       NodeRef
	through   uint64
	asked     bool      // an answer to the tracker's question, not a join: the node applied them
	after     uint64    // an answer covers only the purges above this (Ack.After: its last gap)
	at        time.Time // received
	appliedAt time.Time // the node's clock
}

// joinMemory is how long a join ack is kept for purges whose sequence is not known yet: a
// publish learns it from the PubAck, or from the first node's ack, within seconds.
const joinMemory = time.Minute

// entry is one tracked purge; its fields are guarded by its mu except done, which is closed
// once (under mu) when the purge is complete.
type entry struct {
	mu         sync.Mutex
	msg        Message // without Values, which receipts do not show
	registered time.Time
	// serial orders registrations (a registration again takes a new one): order is sorted by
	// it. Guarded by Tracker.mu, not mu.
	serial uint64
	// nodes are the expected nodes, sorted by PoP then node (one allocation per purge: a map
	// per purge for its acks cost more than the rest of the tracker); extra are the nodes
	// that acked without being expected (they joined late), in arrival order.
	nodes   []nodeState
	extra   []nodeState
	pending int // expected nodes neither acked nor gone, and one more while held
	// hold is the hold for registrations the receipt is under (HoldNew), nil when none: it
	// counts one in pending until Release.
	hold        *regHold
	gone        int // expected nodes gone (a join ack may still ack them, also once complete)
	completedAt time.Time
	done        chan struct{}
}

// nodeState is one node's part of a purge.
type nodeState struct {
	ref   NodeRef
	acked bool
	gone  bool      // declared gone by an operator and not acked since
	at    time.Time // ack received
	// from the ack
	appliedAt time.Time
	hits      int
	joined    bool // acked by a join ack: in effect without having been applied (a restart)
}

func cmpRefs(a, b NodeRef) int {
	if c := strings.Compare(a.PoP, b.PoP); c != 0 {
		return c
	}
	return strings.Compare(a.Node, b.Node)
}

// node returns the expected node ref, or nil.
func (e *entry) node(ref NodeRef) *nodeState {
	i, ok := slices.BinarySearchFunc(e.nodes, ref, func(n nodeState, r NodeRef) int { return cmpRefs(n.ref, r) })
	if !ok {
		return nil
	}
	return &e.nodes[i]
}

// NewTracker subscribes to the acks of prefix on nc (flushing so that the server knows the
// subscription before it returns). Stop it with Close, or run it with Run.
func NewTracker(nc *nats.Conn, prefix string, opts ...TrackerOption) (*Tracker, error) {
	t := &Tracker{
		now:       time.Now,
		nc:        nc,
		live:      LiveSubject(prefix),
		maxPurges: DefaultMaxPurges,
		retention: DefaultRetention,
		askEvery:  DefaultAskEvery,
		entries:   map[string]*entry{},
	}
	for _, o := range opts {
		o(t)
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.undecodable = fleet.NewRateLog(t.log, "drop undecodable purge ack", 0)
	t.misnamed = fleet.NewRateLog(t.log, "drop purge ack whose node differs from its subject", 0)
	if t.maxPurges <= 0 {
		t.maxPurges = DefaultMaxPurges
	}
	if t.retention <= 0 {
		t.retention = DefaultRetention
	}
	if t.askEvery <= 0 {
		t.askEvery = DefaultAskEvery
	}
	if nc == nil {
		return nil, errors.New("new purge tracker: nil connection")
	}
	sub, err := nc.Subscribe(AckSubjects(prefix), t.onAck)
	if err != nil {
		return nil, fmt.Errorf("subscribe to purge acks: %w", err)
	}
	// Acks can be heavy in bursts (nodes x purges): do not let the slow-consumer limit drop them.
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to purge acks: %w", err)
	}
	t.sub = sub
	return t, nil
}

// Dropped is how many acks the tracker dropped: undecodable ones, or ones naming another node
// than their subject does (forged, or a JetStream answer aimed at an ack subject).
func (t *Tracker) Dropped() uint64 { return t.dropped.Load() }

// Run keeps the tracker subscribed until ctx ends, then closes it. Meanwhile, every AskEvery
// and at once after its connection reconnects, it asks the registered nodes still pending in
// a receipt where they are (askPending): an ack lost where neither side sees a cut (control's
// own connection, a leaf link cut shorter than a node's confirmation round) is then answered.
func (t *Tracker) Run(ctx context.Context) error {
	reconnected := t.nc.StatusChanged(nats.CONNECTED)
	defer t.nc.RemoveStatusListener(reconnected)
	tick := time.NewTicker(t.askEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return t.Close()
		case <-tick.C:
			t.askPending(t.askEvery)
		case <-reconnected:
			// Acks sent while the connection was down had no one to go to.
			t.askPending(0)
		}
	}
}

// maxAsk bounds the question's size (NATS's max_payload is 1 MiB by default); nodes left out
// are asked the next time.
const maxAsk = 256 << 10

// askPending asks, on the live subject, the registered nodes pending in a receipt registered
// at least minAge ago (with a known sequence) to answer with an ack through the last purge
// they applied (Ack.Asked). A node that left the registry is not asked: it answers when it
// comes back (a replay, or its join ack). The scan that finds them also builds the index of
// who is pending where (pendingIndex), which their answers use.
func (t *Tracker) askPending(minAge time.Duration) {
	live := t.registeredSet()
	now := t.now()
	idx := t.spare
	if idx == nil {
		idx = &pendingIndex{nodes: map[NodeRef]*pendingAt{}}
	}
	idx.seqChanges = t.seqChanges.Load()
	t.mu.RLock()
	idx.serial = t.serial
	entries := make([]*entry, 0, len(t.order))
	for _, id := range t.order {
		entries = append(entries, t.entries[id])
	}
	t.mu.RUnlock()
	// The receipts with a node not acked, by sequence: incomplete ones, and complete ones
	// with a node declared gone, which a join ack may still ack. Then who has not acked in
	// each.
	clear(idx.entries)
	idx.entries = idx.entries[:0]
	for _, e := range entries {
		e.mu.Lock()
		if e.pending > 0 || e.gone > 0 {
			idx.entries = append(idx.entries, indexed{seq: e.msg.Seq, e: e})
		}
		e.mu.Unlock()
	}
	slices.SortStableFunc(idx.entries, func(a, b indexed) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range idx.nodes {
		p.at, p.ask = p.at[:0], false
	}
	// Receipts mostly expect the same nodes: the k-th node of the last receipt is looked up
	// first, and the map only when it is another.
	var hint []*pendingAt
	for i, x := range idx.entries {
		e := x.e
		e.mu.Lock()
		asked := e.pending > 0 && e.msg.Seq != 0 && now.Sub(e.registered) >= minAge
		for k := range e.nodes {
			n := &e.nodes[k]
			if n.acked {
				continue
			}
			var p *pendingAt
			if k < len(hint) && hint[k] != nil && hint[k].ref == n.ref {
				p = hint[k]
			} else {
				if p = idx.nodes[n.ref]; p == nil {
					p = &pendingAt{ref: n.ref}
					idx.nodes[n.ref] = p
				}
				for len(hint) <= k {
					hint = append(hint, nil)
				}
				hint[k] = p
			}
			p.at = append(p.at, int32(i))
			if asked && !p.ask && !n.gone && (live == nil || live[n.ref]) {
				p.ask = true
			}
		}
		e.mu.Unlock()
	}
	maps.DeleteFunc(idx.nodes, func(_ NodeRef, p *pendingAt) bool { return len(p.at) == 0 })
	var nodes []NodeRef
	for ref, p := range idx.nodes {
		if p.ask {
			nodes = append(nodes, ref)
		}
	}
	t.mu.Lock()
	t.pending, t.spare = idx, t.pending
	t.mu.Unlock()
	if len(nodes) == 0 {
		return
	}
	slices.SortFunc(nodes, cmpRefs)
	var b []byte
	for len(nodes) > 0 {
		n := 1
		for size := len(nodes[0].PoP) + len(nodes[0].Node); n < len(nodes) && size < maxAsk; n++ {
			size += len(nodes[n].PoP) + len(nodes[n].Node) + 2
		}
		b = appendAsk(b[:0], nodes[:n])
		if err := t.nc.Publish(t.live, b); err != nil {
			t.log.Debug("ask pending nodes for their purge position", "nodes", n, "err", err)
			return
		}
		nodes = nodes[n:]
	}
}

// Close stops listening for acks, and writes the dropped acks' warnings held back; receipts
// stay readable. It may be called more than once.
func (t *Tracker) Close() error {
	err := t.sub.Unsubscribe()
	// Whatever the unsubscribe did: no timer of theirs may outlive the tracker.
	t.undecodable.Stop()
	t.misnamed.Stop()
	if err != nil && !errors.Is(err, nats.ErrBadSubscription) && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("unsubscribe from purge acks: %w", err)
	}
	return nil
}

// Register starts a receipt for m expecting an ack from each of expected. Call it before
// publishing m, so that no ack arrives unexpected. Registering an id again (a retried publish)
// keeps its receipt and the acks in it: the stream stores the retry once and nodes that
// applied the purge skip it, so they would never ack again.
func (t *Tracker) Register(m Message, expected []NodeRef) { t.register(m, expected) }

// register is Register; it reports whether it started a new receipt.
func (t *Tracker) register(m Message, expected []NodeRef) (fresh bool) {
	now := t.now()
	m.Values = nil
	e := &entry{
		msg:        m,
		registered: now,
		nodes:      make([]nodeState, len(expected)),
		done:       make(chan struct{}),
	}
	for i, n := range expected {
		e.nodes[i].ref = n
	}
	slices.SortFunc(e.nodes, func(a, b nodeState) int { return cmpRefs(a.ref, b.ref) })
	e.nodes = slices.CompactFunc(e.nodes, func(a, b nodeState) bool { return a.ref == b.ref })
	e.pending = len(e.nodes)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.serial++
	if old, ok := t.entries[m.ID]; ok {
		t.unorderLocked(m.ID) // registered again: it is as new as its receipt
		t.order = append(t.order, m.ID)
		old.serial = t.serial
		return false
	}
	if t.hold != nil {
		e.hold = t.hold
		e.pending++
		t.held = append(t.held, e)
	}
	if e.pending == 0 {
		e.completedAt = now
		close(e.done)
	}
	e.serial = t.serial
	t.order = append(t.order, m.ID)
	t.entries[m.ID] = e
	t.evictLocked(now)
	if len(t.held) > 2*len(t.order) {
		t.compactHeldLocked()
	}
	return true
}

// compactHeldLocked drops from held the receipts evicted (or forgotten) since they were held:
// a hold lasts the grace, in which a sustained rate of purges evicts many, and each keeps its
// expected nodes. Called when held is twice the receipts tracked, so its cost per registration
// is constant. A new slice: Expect reads the old one without the lock.
func (t *Tracker) compactHeldLocked() {
	kept := make([]*entry, 0, len(t.order))
	through := 0
	for i, e := range t.held {
		if t.entries[e.msg.ID] != e { // the id is set before the entry is shared, never after
			continue
		}
		kept = append(kept, e)
		if i < t.heldThrough {
			through++
		}
	}
	t.held, t.heldThrough = kept, through
}

// unorderLocked removes id from order. Only a purge registered again or forgotten (a failed
// publish) needs it, and those are rare: a scan of order is cheaper than an index kept for it.
func (t *Tracker) unorderLocked(id string) {
	if i := slices.Index(t.order, id); i >= 0 {
		t.order = slices.Delete(t.order, i, i+1)
	}
}

// lookup returns the entry of purge id, or nil.
func (t *Tracker) lookup(id string) *entry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.entries[id]
}

// evictLocked drops the oldest receipts beyond maxPurges or older than retention.
func (t *Tracker) evictLocked(now time.Time) {
	for len(t.order) > 0 {
		id := t.order[0]
		e, ok := t.entries[id]
		if ok && len(t.order) <= t.maxPurges && now.Sub(e.registered) <= t.retention {
			return
		}
		t.order = t.order[1:]
		delete(t.entries, id)
	}
}

// SetSeq records the stream sequence of a registered purge once it is published.
func (t *Tracker) SetSeq(id string, seq uint64) {
	if e := t.lookup(id); e != nil {
		joins := t.joins.Load()
		e.mu.Lock()
		if e.msg.Seq != 0 && e.msg.Seq != seq {
			t.seqChanges.Add(1)
		}
		e.msg.Seq = seq
		if joins != nil {
			e.coverLocked(joins, t.now())
		}
		e.mu.Unlock()
	}
}

// HoldNew holds every receipt registered from now on for registrations, until Release: the
// caller does not know yet every node that must ack (control right after a restart, before
// the nodes whose registrations expired registered again). A held receipt is not complete,
// whatever its nodes did; Expect adds nodes to it as they register. until is when the caller
// means to release them, shown in their receipts (AwaitingRegistrationsUntil); called again
// before Release, HoldNew moves it for every receipt held. Receipts registered before are
// not held, and the cost of a registration outside a hold is a nil check.
func (t *Tracker) HoldNew(until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hold == nil {
		t.hold = &regHold{}
	}
	t.hold.until.Store(&until)
}

// Expect adds nodes to the expected nodes of every held receipt (HoldNew): a node that acked
// one without being expected (it applied the purge before it registered) moves in with its
// ack, any other is pending, unless a join ack of the last minute covers it. Nodes a receipt
// expects already are left as they are. It visits only the receipts registered since the last
// call and, if it has nodes that call did not, the others: called again with the same nodes
// and no new receipt, it does nothing.
func (t *Tracker) Expect(nodes []NodeRef) { t.expect(nodes, false) }

// Release adds nodes to every held receipt as Expect does, then lifts the hold: each completes
// once its expected nodes acked (or were declared gone), at once if they all have. Receipts
// registered from now on are not held.
func (t *Tracker) Release(nodes []NodeRef) { t.expect(nodes, true) }

// expect adds nodes to the receipts held, and lifts the hold if release.
func (t *Tracker) expect(nodes []NodeRef, release bool) {
	t.expectMu.Lock()
	defer t.expectMu.Unlock()
	t.mu.Lock()
	if t.hold == nil {
		// Nothing held: what it was given would be added to the receipts of a hold to come.
		t.mu.Unlock()
		return
	}
	held, through, last := t.held, t.heldThrough, t.heldNodes // held is appended to, never changed in place
	all := slices.SortedFunc(slices.Values(nodes), cmpRefs)
	all = slices.Compact(all)
	var add []NodeRef // the nodes the first through receipts may lack: not in the last call
	for _, ref := range all {
		if _, found := slices.BinarySearchFunc(last, ref, cmpRefs); !found {
			add = append(add, ref)
		}
	}
	if release {
		t.hold, t.held, t.heldNodes, t.heldThrough = nil, nil, nil, 0
	} else {
		t.heldNodes, t.heldThrough = all, len(held)
	}
	t.mu.Unlock()
	now := t.now()
	for i, e := range held {
		nodes := all
		if i < through {
			if len(add) == 0 && !release {
				continue
			}
			nodes = add
		}
		e.mu.Lock()
		if e.hold != nil {
			if t.expectLocked(e, nodes) {
				e.coverLocked(t.joins.Load(), now)
			}
			if release {
				e.hold = nil
				e.settleLocked(now)
			}
		}
		e.mu.Unlock()
	}
}

// expectLocked adds nodes to e's expected nodes: one that acked unexpected moves in with its
// ack; any other is pending. It reports whether it added any. Before its first addition it
// counts a change in seqChanges: an index askPending built before does not list the node
// in e, and one built after it saw that count sees the node (e's lock is held from before
// the count until after the addition), so a join ack's look-up through it finds e; a join
// ack kept before the caller's coverLocked reads the joins is applied by it.
func (t *Tracker) expectLocked(e *entry, nodes []NodeRef) bool {
	added := false
	for _, ref := range nodes {
		i, found := slices.BinarySearchFunc(e.nodes, ref, func(n nodeState, r NodeRef) int { return cmpRefs(n.ref, r) })
		if found {
			continue
		}
		if !added {
			t.seqChanges.Add(1)
			added = true
		}
		n := nodeState{ref: ref}
		if j := slices.IndexFunc(e.extra, func(x nodeState) bool { return x.ref == ref }); j >= 0 {
			n = e.extra[j]
			e.extra = slices.Delete(e.extra, j, j+1)
		} else {
			e.pending++
		}
		e.nodes = slices.Insert(e.nodes, i, n)
	}
	return added
}

// Forget drops a receipt, e.g. when publishing the purge failed.
func (t *Tracker) Forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.entries[id]; !ok {
		return
	}
	// Its place in order goes too: a forgotten id left there would count towards maxPurges and
	// evict live receipts early, and a retry registering the id again would be in order twice,
	// its first place evicting the new receipt.
	delete(t.entries, id)
	t.unorderLocked(id)
}

// onAck records the acks of one message: one ack, or under load several, one per line.
func (t *Tracker) onAck(msg *nats.Msg) {
	for data := msg.Data; len(data) > 0; {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		a, err := decodeOwnedAck(line) // msg.Data is this message's own
		if err != nil {
			t.dropped.Add(1)
			t.undecodable.Warn("subject", msg.Subject, "err", err)
			continue
		}
		// Only the node's own credential may publish on its ack subject: an ack whose body
		// names another node is forged.
		if msg.Sub != nil && !ackSubjectNames(msg.Subject, strings.TrimSuffix(msg.Sub.Subject, ">"), a) {
			t.dropped.Add(1)
			t.misnamed.Warn("subject", msg.Subject, "pop", a.PoP, "node", a.Node)
			continue
		}
		if a.Through != 0 {
			t.recordJoin(a)
			continue
		}
		t.record(a)
	}
}

// ackSubjectNames reports whether subject is base + a.PoP + "." + a.Node, without building it.
func ackSubjectNames(subject, base string, a Ack) bool {
	rest, ok := strings.CutPrefix(subject, base)
	return ok && len(rest) == len(a.PoP)+1+len(a.Node) && strings.HasPrefix(rest, a.PoP) &&
		rest[len(a.PoP)] == '.' && rest[len(a.PoP)+1:] == a.Node
}

// record adds one ack to its receipt; acks of unknown purges are dropped (another control
// instance, or evicted).
func (t *Tracker) record(a Ack) {
	e := t.lookup(a.ID)
	if e == nil {
		return
	}
	now := t.now()
	ref := NodeRef{PoP: a.PoP, Node: a.Node}
	joins := t.joins.Load()
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.node(ref)
	expected := n != nil
	if !expected {
		for i := range e.extra {
			if e.extra[i].ref == ref {
				return // a duplicate
			}
		}
		// Its own copy of the names: the ack's share the whole message it came in.
		e.extra = append(e.extra, nodeState{ref: NodeRef{PoP: strings.Clone(ref.PoP), Node: strings.Clone(ref.Node)}})
		n = &e.extra[len(e.extra)-1]
	} else if n.acked {
		return // a duplicate
	}
	n.acked, n.at, n.appliedAt, n.hits = true, now, a.AppliedAt, a.Hits
	switch {
	case n.gone:
		n.gone = false // back after all: no longer awaited, now acked
		e.gone--
	case expected:
		e.settleLocked(now)
	}
	if e.msg.Seq == 0 && a.Seq != 0 {
		e.msg.Seq = a.Seq
		e.coverLocked(joins, now)
	}
}

// recordJoin records a node process's join ack: every expected node of that id that has not
// acked a purge stored at or before the join's sequence reads acked (joined). Only expected
// nodes: a process that joined after a purge it was not expected for owes it nothing.
func (t *Tracker) recordJoin(a Ack) {
	now := t.now()
	j := joinAck{ref: NodeRef{PoP: strings.Clone(a.PoP), Node: strings.Clone(a.Node)}, through: a.Through,
		asked: a.Asked, after: a.After, at: now, appliedAt: a.AppliedAt}
	t.mu.Lock()
	// A join is kept for the purges whose sequence is learnt later; a new slice each time, as
	// SetSeq and record read the old one without the lock. An answer is not: only purges with
	// a sequence are asked about, and one learnt later is asked about then. Kept, the answers
	// of every node pending for good, each round, made every answer copy all of the last
	// minute's (500 such nodes over 10,000 receipts: 15 s of CPU and 7 GB allocated a minute).
	if !j.asked {
		var kept []joinAck
		if old := t.joins.Load(); old != nil {
			for _, o := range *old {
				if now.Sub(o.at) < joinMemory {
					kept = append(kept, o)
				}
			}
		}
		kept = append(kept, j)
		t.joins.Store(&kept)
	}
	entries := t.affectedLocked(j)
	t.mu.Unlock()
	one := []joinAck{j}
	for _, e := range entries {
		e.mu.Lock()
		e.coverLocked(&one, now)
		e.mu.Unlock()
	}
}

// pendingIndex is, as askPending last saw them, the receipts with a node not acked (pending
// or gone) sorted by sequence and, per node, where it had not acked. A node acked in a receipt
// stays acked, and a receipt registered since is after serial in order: so the receipts a join ack or answer of a node
// can affect now are among its own of these, and those registered since (affectedLocked).
type pendingIndex struct {
	serial     uint64 // the last registration it saw
	seqChanges uint64 // Tracker.seqChanges when it was built
	entries    []indexed
	nodes      map[NodeRef]*pendingAt
}

// pendingAt is where one node was pending in a pendingIndex.
type pendingAt struct {
	ref NodeRef
	at  []int32 // positions in entries, ascending
	ask bool    // askPending asks it
}

// indexed is one receipt of a pendingIndex, with its sequence when indexed (0: unknown then).
type indexed struct {
	seq uint64
	e   *entry
}

// affectedLocked returns the receipts that join ack or answer j may affect: every receipt
// without an index; with one, the receipts where j's node was pending with a sequence in j's
// range, or no sequence yet, and those registered since. Before, every join ack and answer
// scanned every receipt: 500 nodes pending for good over 10,000 receipts, answering every
// round, cost about 0.4 s a round (BenchmarkAskRound).
func (t *Tracker) affectedLocked(j joinAck) []*entry {
	idx := t.pending
	if idx == nil || idx.seqChanges != t.seqChanges.Load() {
		entries := make([]*entry, 0, len(t.entries))
		for _, e := range t.entries {
			entries = append(entries, e)
		}
		return entries
	}
	var out []*entry
	var at []int32
	if p := idx.nodes[j.ref]; p != nil {
		at = p.at
	}
	for len(at) > 0 && idx.entries[at[0]].seq == 0 {
		out = append(out, idx.entries[at[0]].e) // its sequence may be known now
		at = at[1:]
	}
	i, _ := slices.BinarySearchFunc(at, j.after+1, func(p int32, seq uint64) int { return cmp.Compare(idx.entries[p].seq, seq) })
	for ; i < len(at) && idx.entries[at[i]].seq <= j.through; i++ {
		out = append(out, idx.entries[at[i]].e)
	}
	since, _ := slices.BinarySearchFunc(t.order, idx.serial+1, func(id string, serial uint64) int {
		return cmp.Compare(t.entries[id].serial, serial)
	})
	for _, id := range t.order[since:] {
		out = append(out, t.entries[id])
	}
	return out
}

// coverLocked acks, for e, the expected nodes not acked yet whose process joined the stream
// at or after e's sequence (a join ack of joins, if any). A purge whose sequence is not known
// yet is left: it may be stored after the join.
func (e *entry) coverLocked(joins *[]joinAck, now time.Time) {
	if joins == nil || e.msg.Seq == 0 {
		return
	}
	for _, j := range *joins {
		if e.msg.Seq > j.through || e.msg.Seq <= j.after || now.Sub(j.at) >= joinMemory {
			continue
		}
		n := e.node(j.ref)
		if n == nil || n.acked {
			continue
		}
		n.acked, n.joined, n.at, n.appliedAt, n.hits = true, !j.asked, now, j.appliedAt, 0
		if n.gone {
			n.gone = false // back after all: no longer awaited, now acked
			e.gone--
			continue
		}
		e.settleLocked(now)
	}
}

// settleLocked counts one expected node as settled (acked or gone), completing the purge with
// the last one.
func (e *entry) settleLocked(now time.Time) {
	e.pending--
	if e.pending == 0 {
		e.completedAt = now
		close(e.done)
	}
}

// DeclareGone stops waiting for nodes of purge id that are unreachable: expected, not acked,
// and no longer in the registry (see WithRegistry). With no nodes named it declares every
// unreachable node gone; named nodes must each be expected (else ErrUnknownNode) and not
// registered unless already acked (else ErrNodeLive); named nodes that acked or were declared
// gone already are left as they are. Either every named node is declared or none is. It
// returns the nodes it declared gone, sorted, and ErrUnknownPurge for an unknown id.
func (t *Tracker) DeclareGone(id string, nodes ...NodeRef) ([]NodeRef, error) {
	live := t.registeredSet()
	now := t.now()
	e := t.lookup(id)
	if e == nil {
		return nil, fmt.Errorf("declare nodes gone: %w: %q", ErrUnknownPurge, id)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	unreachable := func(n *nodeState) bool {
		return !n.acked && !n.gone && (live != nil && !live[n.ref])
	}
	var out []NodeRef
	if len(nodes) == 0 {
		for i := range e.nodes {
			if unreachable(&e.nodes[i]) {
				out = append(out, e.nodes[i].ref)
			}
		}
	}
	for _, ref := range nodes {
		n := e.node(ref)
		switch {
		case n == nil:
			return nil, fmt.Errorf("declare %s/%s gone: %w", ref.PoP, ref.Node, ErrUnknownNode)
		case n.acked || n.gone || slices.Contains(out, ref):
		case !unreachable(n):
			return nil, fmt.Errorf("declare %s/%s gone: %w", ref.PoP, ref.Node, ErrNodeLive)
		default:
			out = append(out, ref)
		}
	}
	for _, ref := range out {
		e.node(ref).gone = true
		e.gone++
		e.settleLocked(now)
	}
	sortRefs(out)
	return out, nil
}

// registeredSet is the set of registered nodes, or nil when the tracker has no registry.
func (t *Tracker) registeredSet() map[NodeRef]bool {
	if t.registered == nil {
		return nil
	}
	refs := t.registered()
	set := make(map[NodeRef]bool, len(refs))
	for _, r := range refs {
		set[r] = true
	}
	return set
}

func sortRefs(refs []NodeRef) { slices.SortFunc(refs, cmpRefs) }

// Wait returns the receipt of id once every expected node acked, or when ctx ends (with the
// nodes still pending listed). An unknown id returns at once with an empty receipt.
func (t *Tracker) Wait(ctx context.Context, id string) Receipt {
	e := t.lookup(id)
	if e == nil {
		return Receipt{ID: id}
	}
	select {
	case <-e.done:
	case <-ctx.Done():
	}
	return t.receipt(e)
}

// Done returns a channel closed once every expected node of purge id acked (or was declared
// gone), and false for an unknown id. Completion reads when and how long, without the cost of
// a whole receipt.
func (t *Tracker) Done(id string) (<-chan struct{}, bool) {
	e := t.lookup(id)
	if e == nil {
		return nil, false
	}
	return e.done, true
}

// Completion returns when purge id completed and how long after it was issued, once it has.
func (t *Tracker) Completion(id string) (at time.Time, took time.Duration, ok bool) {
	e := t.lookup(id)
	if e == nil {
		return time.Time{}, 0, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pending > 0 {
		return time.Time{}, 0, false
	}
	return e.completedAt, e.completedAt.Sub(e.msg.IssuedAt), true
}

// Receipt returns what is known about purge id so far.
func (t *Tracker) Receipt(id string) (Receipt, bool) {
	e := t.lookup(id)
	if e == nil {
		return Receipt{}, false
	}
	return t.receipt(e), true
}

// receipt builds e's receipt.
func (t *Tracker) receipt(e *entry) Receipt {
	e.mu.Lock()
	if e.pending == 0 {
		// Who is registered matters only for nodes still pending: a complete receipt (the
		// usual answer to ?wait) does without asking the registry.
		defer e.mu.Unlock()
		return e.receiptLocked(nil)
	}
	e.mu.Unlock()
	live := t.registeredSet() // without a lock held: it asks the fleet registry
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.receiptLocked(live)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// receiptLocked builds the receipt; live is the set of registered nodes (nil: all are).
func (e *entry) receiptLocked(live map[NodeRef]bool) Receipt {
	m := e.msg
	r := Receipt{ID: m.ID, Seq: m.Seq, Host: m.Host, Kind: m.Kind, Soft: m.Soft, IssuedAt: m.IssuedAt,
		Pending: []NodeRef{}, Unreachable: []NodeRef{}}
	if e.hold != nil {
		until := *e.hold.until.Load()
		r.AwaitingRegistrationsUntil = &until
	}
	// Every node's line, sorted by PoP and node, then cut into PoPs: a handful of allocations per
	// receipt rather than a few per node (the API builds one per purge it answers). pops[i] is
	// the PoP of nodes[i].
	total := len(e.nodes) + len(e.extra)
	nodes := make([]NodeAck, 0, total)
	pops := make([]string, 0, total)
	acked := len(e.extra)
	for i := range e.nodes {
		if e.nodes[i].acked {
			acked++
		}
	}
	// times backs the nodes' AckedAt and AppliedAt; its capacity is never exceeded, so the
	// pointers into it stay valid.
	times := make([]time.Time, 0, 2*acked)
	var last time.Time
	add := func(n *nodeState, expected bool) {
		ref := n.ref
		pops = append(pops, ref.PoP)
		switch {
		case n.acked:
			times = append(times, n.at, n.appliedAt)
			nodes = append(nodes, NodeAck{
				Node: ref.Node, Acked: true, Status: NodeAcked, AckedAt: &times[len(times)-2],
				AppliedAt: &times[len(times)-1], Hits: n.hits,
				LatencyMs: ms(n.at.Sub(m.IssuedAt)), Unexpected: !expected, Joined: n.joined,
			})
			if n.at.After(last) {
				last = n.at
			}
		case n.gone:
			nodes = append(nodes, NodeAck{Node: ref.Node, Status: NodeGone})
			r.Gone = append(r.Gone, ref)
		case live != nil && !live[ref]:
			nodes = append(nodes, NodeAck{Node: ref.Node, Status: NodeUnreachable})
			r.Pending = append(r.Pending, ref)
			r.Unreachable = append(r.Unreachable, ref)
		default:
			nodes = append(nodes, NodeAck{Node: ref.Node, Status: NodePending})
			r.Pending = append(r.Pending, ref)
		}
	}
	for i := range e.nodes {
		add(&e.nodes[i], true)
	}
	if len(e.extra) > 0 {
		for i := range e.extra {
			add(&e.extra[i], false)
		}
		// The expected nodes are in order already; the late ones go in among them.
		order := make([]int, len(nodes))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			return cmpRefs(NodeRef{pops[a], nodes[a].Node}, NodeRef{pops[b], nodes[b].Node})
		})
		sortedNodes, sortedPoPs := make([]NodeAck, len(nodes)), make([]string, len(pops))
		for i, j := range order {
			sortedNodes[i], sortedPoPs[i] = nodes[j], pops[j]
		}
		nodes, pops = sortedNodes, sortedPoPs
	}
	npops := 0
	for i := range pops {
		if i == 0 || pops[i] != pops[i-1] {
			npops++
		}
	}
	r.PoPs = make([]PoPReceipt, 0, npops)
	popTimes := make([]time.Time, 0, npops) // backs the PoPs' AckedAt, like times
	for i := 0; i < len(nodes); {
		j := i + 1
		for j < len(nodes) && pops[j] == pops[i] {
			j++
		}
		// Held, a PoP may have nodes that have not registered yet: not complete either.
		p := PoPReceipt{PoP: pops[i], Complete: e.hold == nil, Nodes: nodes[i:j:j]}
		var popLast time.Time
		for _, n := range p.Nodes {
			if n.Status == NodePending || n.Status == NodeUnreachable {
				p.Complete = false
			}
			if n.AckedAt != nil && n.AckedAt.After(popLast) {
				popLast = *n.AckedAt
			}
		}
		if p.Complete && !popLast.IsZero() {
			popTimes = append(popTimes, popLast)
			p.AckedAt = &popTimes[len(popTimes)-1]
			p.LatencyMs = ms(popLast.Sub(m.IssuedAt))
		}
		r.PoPs = append(r.PoPs, p)
		i = j
	}
	// Pending, Unreachable and Gone list expected nodes only, in order already.
	r.Complete = e.pending == 0
	if r.Complete {
		at := e.completedAt
		r.CompletedAt = &at
		if at.After(last) {
			last = at
		}
	}
	if !last.IsZero() {
		r.DurationMs = ms(last.Sub(m.IssuedAt))
	}
	if r.PoPs == nil {
		r.PoPs = []PoPReceipt{}
	}
	return r
}
