package dnsroute

import (
	"sync"

	"github.com/meridian-cdn/meridian/wire"
)

// Fleet is where the server learns the PoPs, their nodes, health and load.
type Fleet interface {
	// PoPs returns the current PoPs; the caller must not modify them.
	PoPs() []wire.PoP
	// Changed returns a channel that is closed at the next change after the call.
	Changed() <-chan struct{}
}

// liveFleetHealth is a Fleet followed from NATS, which can be cut off from it.
type liveFleetHealth interface {
	// connected reports whether its NATS connection is up.
	connected() bool
	// degraded says why what it holds may be out of date ("" when nothing does).
	degraded() string
}

// StaticFleet is a Fleet held in memory: built from the config file and changed from Go with
// SetNode and RemoveNode (tests use it to make PoPs unhealthy, draining or loaded).
type StaticFleet struct {
	mu      sync.Mutex // guards nodes, pops and changed
	nodes   map[string]wire.Node
	pops    []wire.PoP
	changed chan struct{}
}

// NewStaticFleet returns a fleet holding nodes.
func NewStaticFleet(nodes []wire.Node) *StaticFleet {
	f := &StaticFleet{nodes: map[string]wire.Node{}, changed: make(chan struct{})}
	for _, n := range nodes {
		f.nodes[wire.FleetKey(n.PoP, n.ID)] = n
	}
	f.regroupLocked()
	return f
}

// PoPs implements Fleet.
func (f *StaticFleet) PoPs() []wire.PoP {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pops
}

// Changed implements Fleet.
func (f *StaticFleet) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Node returns the node with the given PoP and id.
func (f *StaticFleet) Node(pop, id string) (wire.Node, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[wire.FleetKey(pop, id)]
	return n, ok
}

// SetNode adds or replaces a node.
func (f *StaticFleet) SetNode(n wire.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes[wire.FleetKey(n.PoP, n.ID)] = n
	f.regroupLocked()
}

// RemoveNode removes a node; removing an unknown node changes nothing.
func (f *StaticFleet) RemoveNode(pop, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := wire.FleetKey(pop, id)
	if _, ok := f.nodes[k]; !ok {
		return
	}
	delete(f.nodes, k)
	f.regroupLocked()
}

// regroupLocked rebuilds pops and signals the change; f.mu must be held.
func (f *StaticFleet) regroupLocked() {
	nodes := make([]wire.Node, 0, len(f.nodes))
	for _, n := range f.nodes {
		nodes = append(nodes, n)
	}
	f.pops = wire.GroupPoPs(nodes)
	close(f.changed)
	f.changed = make(chan struct{})
}
