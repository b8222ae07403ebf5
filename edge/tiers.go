package edge

import (
	"cmp"
	"slices"
	"strings"
)

// tierSet is the node's view of the fill tiers: the nodes of its own PoP and of each shield
// PoP. It is replaced whole on change. Who may send fill requests is not a matter of this
// view (which may lag the registry) but of the request's signature (hopauth.go).
type tierSet struct {
	peers   []Peer            // this PoP's nodes, self included
	shields map[string][]Peer // shield PoP id -> its nodes
}

// SetPeers replaces this PoP's node set (the node itself is added if missing). The fleet
// registry calls it as nodes come and go; fills in flight keep the set they started with.
func (n *Node) SetPeers(peers []Peer) {
	old := n.tiers.Load()
	next := &tierSet{shields: map[string][]Peer{}}
	if old != nil {
		next.shields = old.shields
	}
	self := false
	for _, p := range peers {
		self = self || p.ID == n.cfg.Node
		next.peers = append(next.peers, p)
	}
	if !self {
		next.peers = append(next.peers, Peer{ID: n.cfg.Node, Addr: n.Addr()})
	}
	n.tiers.Store(next)
}

// SetShields replaces the shield PoPs' node sets.
func (n *Node) SetShields(shields map[string][]Peer) {
	old := n.tiers.Load()
	next := &tierSet{shields: map[string][]Peer{}}
	if old != nil {
		next.peers = old.peers
	}
	for pop, nodes := range shields {
		next.shields[pop] = append([]Peer(nil), nodes...)
	}
	n.tiers.Store(next)
}

// rendezvous orders nodes by their highest-random-weight score for key: every node computes
// the same order from the same set, so all agree on a key's owner, and when a node leaves
// only the keys it owned move.
func rendezvous(nodes []Peer, key string) []Peer {
	if len(nodes) <= 1 {
		// One node (a standalone edge has only itself) is its own order: no hashing, no
		// allocation on every miss (issue 15). Callers only read the slice.
		return nodes
	}
	type scored struct {
		p     Peer
		score uint64
	}
	s := make([]scored, len(nodes))
	for i, p := range nodes {
		s[i] = scored{p, mix(fnv64a(fnv64a(fnv64a(fnvOffset, p.ID), "\x00"), key))}
	}
	slices.SortFunc(s, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return strings.Compare(a.p.ID, b.p.ID)
	})
	out := make([]Peer, len(s))
	for i := range s {
		out[i] = s[i].p
	}
	return out
}

// fnvOffset and fnv64a are FNV-1a (as hash/fnv's New64a computes it) over strings, without
// the hasher's allocation and the string-to-bytes copies.
const fnvOffset uint64 = 14695981039346656037

func fnv64a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is a 64-bit finaliser (SplitMix64) so that FNV's weak low bits don't bias the order.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
