package fleet

import (
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/wire"
)

// ViewConfig configures a View.
type ViewConfig struct {
	// JS is the JetStream context the buckets are watched through. Required.
	JS jetstream.JetStream
	// Prefix is the NATS name prefix; empty means wire.DefaultPrefix.
	Prefix string
	// TTL is how old a node's last load report may be before the view drops it, even if its
	// key has not expired yet; zero means DefaultTTL. Use the fleet bucket's TTL.
	TTL time.Duration
	// Clock tells the time; nil means time.Now.
	Clock func() time.Time
	// Logger receives watch failures and undecodable values; nil discards.
	Logger *slog.Logger
	// Scoped views watch only the nodes of the PoPs given to SetPoPs, and no node until the
	// first call. Every node rewrites its key once a second, so a view of the whole fleet on
	// every node costs the fleet N² deliveries a second; an edge needs only its own PoP and
	// its hosts' shield PoPs.
	Scoped bool
}

// View is a live, read-only picture of the fleet: the nodes in the fleet bucket, with the
// operator drains from the config bucket merged in (a drained PoP's nodes read as draining).
// Run keeps it current; its methods are safe for concurrent use.
type View struct {
	cfg     ViewConfig
	log     *slog.Logger
	changed notifier
	members notifier // changes other than load figures: see MembersChanged
	ready   chan struct{}

	// Every node writes its own key as often as it likes: what it writes there is logged
	// through these, rate limited.
	undecodable, misnamed *RateLog

	mu         sync.Mutex           // guards the fields below
	nodes      map[string]wire.Node // by fleet key
	drains     map[string]bool      // by PoP id
	stale      map[string]bool      // fleet keys already reported as gone by the staleness check
	nodesReady bool
	drainReady bool
	pops       []string      // a scoped view's PoPs, sorted; nil until SetPoPs
	popsSet    chan struct{} // closed and replaced when pops changes
	popsLoaded chan struct{} // closed once a snapshot of the current pops is applied
}

// NewView returns a View; it watches nothing until Run.
func NewView(cfg ViewConfig) *View {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &View{
		cfg:         cfg,
		log:         log,
		undecodable: NewRateLog(log, "skipping undecodable fleet entry", 0),
		misnamed:    NewRateLog(log, "skipping fleet entry whose key does not match its pop and id", 0),
		ready:       make(chan struct{}),
		nodes:       map[string]wire.Node{},
		drains:      map[string]bool{},
		stale:       map[string]bool{},
		popsSet:     make(chan struct{}),
	}
}

// SetPoPs sets the PoPs whose nodes a scoped view watches. A change starts a new watch, whose
// snapshot replaces the nodes; until then the view keeps the nodes it has. The channel it
// returns is closed once the view holds the nodes of these PoPs (at once if they are the PoPs
// it has loaded already; never if another SetPoPs changes them first).
func (v *View) SetPoPs(pops []string) <-chan struct{} {
	pops = append([]string{}, pops...) // never nil: nil means no scope yet
	slices.Sort(pops)
	pops = slices.Compact(pops)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pops != nil && slices.Equal(v.pops, pops) {
		return v.popsLoaded
	}
	v.pops = pops
	v.popsLoaded = make(chan struct{})
	close(v.popsSet)
	v.popsSet = make(chan struct{})
	return v.popsLoaded
}

// scope returns the key filters of the nodes watch (nil: none yet), a channel closed when they
// change, and the channel to close once their snapshot is applied (nil for an unscoped view).
func (v *View) scope() ([]string, <-chan struct{}, chan struct{}) {
	if !v.cfg.Scoped {
		return []string{">"}, nil, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pops == nil {
		return nil, v.popsSet, nil
	}
	filters := make([]string, 0, len(v.pops))
	for _, p := range v.pops {
		filters = append(filters, p+".>")
	}
	if len(filters) == 0 {
		filters = append(filters, "-") // no PoP: match no key (keys are "pop.node")
	}
	return filters, v.popsSet, v.popsLoaded
}

// watchNodes watches the fleet bucket's nodes, within the view's scope, until ctx ends.
func (v *View) watchNodes(ctx context.Context) {
	bucket := wire.Bucket(v.cfg.Prefix, wire.FleetBucket)
	for ctx.Err() == nil {
		filters, changed, loaded := v.scope()
		if filters == nil {
			select {
			case <-ctx.Done():
			case <-changed:
			}
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			WatchKeys(wctx, v.cfg.JS, bucket, filters, v.log, nodeHandler{v: v, loaded: loaded})
		}()
		select {
		case <-ctx.Done():
		case <-changed:
		}
		cancel()
		<-done
	}
}

// Run watches the buckets until ctx ends and returns nil once its goroutines have exited and
// the warnings it held back are written (see RateLog). It re-watches after errors and NATS
// reconnects, keeping the last picture meanwhile (stale nodes still drop out as their reports
// age).
func (v *View) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { v.watchNodes(ctx) })
	wg.Go(func() {
		Watch(ctx, v.cfg.JS, wire.Bucket(v.cfg.Prefix, wire.ConfigBucket), wire.DrainPrefix+">", v.log, drainHandler{v})
	})
	wg.Go(func() { v.expireLoop(ctx) })
	wg.Wait()
	// The watches that warn have stopped: what is held back is written now, and no timer of
	// theirs outlives Run.
	v.undecodable.Stop()
	v.misnamed.Stop()
	return nil
}

// Ready is closed once the initial contents of both buckets are loaded.
func (v *View) Ready() <-chan struct{} { return v.ready }

// Changed returns a channel closed at the next change to the view (including a node dropping
// out for a stale report). Call it again after each change.
func (v *View) Changed() <-chan struct{} { return v.changed.wait() }

// MembersChanged returns a channel closed at the next change to the view other than a load
// figure: a node joining, leaving or dropping out for a stale report, coming back with a fresh
// one after a stale one (also when the view had not yet announced it stale: a follower may
// have read the members in between and left it out), its registration, its health or
// draining, a PoP drain. Every node rewrites its key once a second, so a follower that needs
// only membership (an edge's peers and shields) waits on this instead of Changed and does not
// rebuild its peer sets for every heartbeat in the fleet. A heartbeat whose report is stale
// when it arrives, after a stale one (a node whose clock lags by more than the TTL), is no
// change: Nodes leaves the node out before and after.
func (v *View) MembersChanged() <-chan struct{} { return v.members.wait() }

// sameMember reports whether a and b differ in load figures and the process that wrote them
// (Instance) at most. Two processes of a node (a restart's overlap) may write its key in turn,
// every heartbeat: which wrote last changes no peer set nor any purge's expected nodes. A
// node's file hosts (Hosts) are membership: control's purge check reads them.
func sameMember(a, b wire.Node) bool {
	if !slices.Equal(a.Hosts, b.Hosts) {
		return false
	}
	a.Load = wire.LoadReport{Healthy: a.Load.Healthy}
	b.Load = wire.LoadReport{Healthy: b.Load.Healthy}
	a.Hosts, b.Hosts = nil, nil
	a.Instance, b.Instance = "", ""
	return reflect.DeepEqual(a, b)
}

// notify announces a change; members says whether it is one of membership too.
func (v *View) notify(members bool) {
	if members {
		v.members.notify()
	}
	v.changed.notify()
}

// Nodes returns the live nodes, sorted by PoP then node id.
func (v *View) Nodes() []wire.Node { return v.nodesWhere(true) }

// AllNodes is Nodes with the nodes whose reports went stale included: every node the view
// holds (until its key is deleted or expires in the bucket, or the view re-snapshots it, or
// forgets it: expireLoop). For a reader that judges freshness itself and may still fall back
// to a stale node, as DNS fails open to the nearest PoP while its view of the fleet is cut
// off from NATS.
func (v *View) AllNodes() []wire.Node { return v.nodesWhere(false) }

// nodesWhere returns the nodes, only the fresh ones if fresh, sorted by PoP then node id.
func (v *View) nodesWhere(fresh bool) []wire.Node {
	now := v.cfg.Clock()
	v.mu.Lock()
	out := make([]wire.Node, 0, len(v.nodes))
	for _, n := range v.nodes {
		if !fresh || v.freshLocked(n, now) {
			n.Draining = n.Draining || v.drains[n.PoP]
			out = append(out, n)
		}
	}
	v.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].PoP != out[j].PoP {
			return out[i].PoP < out[j].PoP
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// PoPs returns the live nodes grouped by PoP, sorted by PoP id.
func (v *View) PoPs() []wire.PoP { return wire.GroupPoPs(v.Nodes()) }

// Drained reports whether an operator drained pop.
func (v *View) Drained(pop string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.drains[pop]
}

// PeerSet returns the nodes of pop that may be used as fill peers (healthy, not draining),
// sorted by node id: the membership of the PoP's hash ring.
func (v *View) PeerSet(pop string) []wire.Node {
	var out []wire.Node
	for _, n := range v.Nodes() {
		if n.PoP == pop && n.Usable() {
			out = append(out, n)
		}
	}
	return out
}

func (v *View) freshLocked(n wire.Node, now time.Time) bool {
	return now.Sub(n.Load.At) <= v.cfg.TTL
}

// forgetAfter is how many TTLs a node's report may be stale, while other nodes report, before
// the view lets go of it.
const forgetAfter = 10

// expireLoop announces nodes whose last report is older than the TTL. The fleet bucket's keys
// expire without a delete marker (EnsureBuckets), so this is how a view learns that a node
// stopped heartbeating. A stale node is kept, for readers that fail open to it (AllNodes),
// until it has been stale for forgetAfter TTLs while other nodes report: then it is gone for
// good. While none reports (the view is cut off from NATS, or the whole fleet is silent),
// every stale node is kept.
func (v *View) expireLoop(ctx context.Context) {
	t := time.NewTicker(max(v.cfg.TTL/8, 20*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := v.cfg.Clock()
		changed := false
		anyFresh := false
		v.mu.Lock()
		for k, n := range v.nodes {
			if v.freshLocked(n, now) {
				anyFresh = true
			} else if !v.stale[k] {
				v.stale[k] = true
				changed = true
			}
		}
		if anyFresh {
			for k := range v.stale {
				if now.Sub(v.nodes[k].Load.At) > forgetAfter*v.cfg.TTL {
					delete(v.nodes, k)
					delete(v.stale, k)
				}
			}
		}
		v.mu.Unlock()
		if changed {
			v.notify(true)
		}
	}
}

// setReady records that one bucket's snapshot is loaded and announced, and closes Ready once
// both are. It runs after the snapshot's notify, so a reader woken by Ready never sees a
// wake-up that was meant for the initial load.
func (v *View) setReady(flag *bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	*flag = true
	if v.nodesReady && v.drainReady {
		select {
		case <-v.ready:
		default:
			close(v.ready)
		}
	}
}

// decodeNode reads a node's report, replayed by a snapshot or else arriving now; false
// (logged) for one that does not decode or whose key is not its own.
func (v *View) decodeNode(e jetstream.KeyValueEntry, replay bool) (wire.Node, bool) {
	var n wire.Node
	if err := json.Unmarshal(e.Value(), &n); err != nil {
		v.undecodable.Warn("key", e.Key(), "err", err)
		return n, false
	}
	if wire.FleetKey(n.PoP, n.ID) != e.Key() {
		v.misnamed.Warn("key", e.Key())
		return n, false
	}
	// A report is judged fresh by its At, the node's clock. One from our future (the node's
	// clock runs ahead) counts as made when it arrives: else a node that stopped reporting
	// would stay fresh, and be routed to, for as long as its clock is ahead. A snapshot's
	// reports arrived before this view read them (a restarted view, a re-watch after a
	// reconnect or a scope change): when the NATS server stored them, else each re-watch
	// would make a crashed node's last report fresh again.
	if now := v.cfg.Clock(); n.Load.At.After(now) {
		n.Load.At = now
		if c := e.Created(); replay && !c.IsZero() && c.Before(now) {
			n.Load.At = c
		}
	}
	return n, true
}

// nodeHandler applies one watch's nodes; loaded, if not nil, is closed at its first snapshot.
// A watch calls its handler from one goroutine, and each watch has its own channel.
type nodeHandler struct {
	v      *View
	loaded chan struct{}
}

func (h nodeHandler) Snapshot(entries []jetstream.KeyValueEntry) {
	nodes := make(map[string]wire.Node, len(entries))
	for _, e := range entries {
		if n, ok := h.v.decodeNode(e, true); ok {
			nodes[e.Key()] = n
		}
	}
	h.v.mu.Lock()
	h.v.nodes = nodes
	h.v.stale = map[string]bool{}
	h.v.mu.Unlock()
	h.v.notify(true)
	h.v.setReady(&h.v.nodesReady)
	if h.loaded != nil {
		select {
		case <-h.loaded: // a re-watch of the same scope
		default:
			close(h.loaded)
		}
	}
}

func (h nodeHandler) Update(e jetstream.KeyValueEntry) {
	members := true
	h.v.mu.Lock()
	if e.Operation() == jetstream.KeyValuePut {
		n, ok := h.v.decodeNode(e, false)
		if !ok {
			h.v.mu.Unlock()
			return
		}
		// A heartbeat of a node already in the view, fresh before and after, changes loads
		// only; so does one stale before and after (a node whose clock lags by more than the
		// TTL), which Nodes leaves out either way. A node whose report was stale before this
		// one and is fresh now comes back into Nodes: a change of membership, also when the
		// check for stale reports (expireLoop, every TTL/8) has not marked it yet, for a reader
		// may have read the members in between (another node joined) and left it out, and it
		// keeps that answer until MembersChanged (an edge's peer ring, control's expected
		// purge acks).
		now := h.v.cfg.Clock()
		old, had := h.v.nodes[e.Key()]
		wasFresh := had && !h.v.stale[e.Key()] && h.v.freshLocked(old, now)
		fresh := h.v.freshLocked(n, now)
		members = !had || wasFresh != fresh || !sameMember(old, n)
		h.v.nodes[e.Key()] = n
		if fresh {
			delete(h.v.stale, e.Key())
		} else if members {
			// Announced here with a stale report (readers that read again leave it out):
			// expireLoop need not announce it again.
			h.v.stale[e.Key()] = true
		}
	} else {
		delete(h.v.nodes, e.Key())
		delete(h.v.stale, e.Key())
	}
	h.v.mu.Unlock()
	h.v.notify(members)
}

type drainHandler struct{ v *View }

func (h drainHandler) Snapshot(entries []jetstream.KeyValueEntry) {
	drains := map[string]bool{}
	for _, e := range entries {
		drains[strings.TrimPrefix(e.Key(), wire.DrainPrefix)] = true
	}
	h.v.mu.Lock()
	h.v.drains = drains
	h.v.mu.Unlock()
	h.v.notify(true)
	h.v.setReady(&h.v.drainReady)
}

func (h drainHandler) Update(e jetstream.KeyValueEntry) {
	pop := strings.TrimPrefix(e.Key(), wire.DrainPrefix)
	h.v.mu.Lock()
	if e.Operation() == jetstream.KeyValuePut {
		h.v.drains[pop] = true
	} else {
		delete(h.v.drains, pop)
	}
	h.v.mu.Unlock()
	h.v.notify(true)
}
