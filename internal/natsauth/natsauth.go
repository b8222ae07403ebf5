// Package natsauth says who may do what on Meridian's NATS bus: the identities (control, an edge
// node, a DNS server, a PoP's leaf link), their nkey credentials, and the permissions the NATS
// server enforces for each. Control's embedded server, the rendered cluster configs and the test
// harness all take their permissions from here, so tests exercise the production rules.
//
// It names buckets and subjects itself (it is a leaf and imports no Meridian package); a test in
// package control checks that the names agree with wire and purge.
package natsauth

import (
	"fmt"
	"regexp"
	"strings"
)

// Role is what a NATS identity does in the fleet.
type Role string

// The roles.
const (
	// RoleControl is the control plane: it may do everything (create streams and buckets, write
	// config, publish purge commands, read acks).
	RoleControl Role = "control"
	// RoleEdge is one edge node: it writes its own registry key and its own purge acks, reads
	// the fleet, config and peer key buckets and consumes the purge stream.
	RoleEdge Role = "edge"
	// RoleDNS is a DNS server: it watches the fleet and latency buckets and the routing policy
	// and drains of the config bucket, nothing else.
	RoleDNS Role = "dns"
	// RoleLeaf is the leaf link of one PoP's NATS server to the cluster: at most what the PoP's
	// edges may do together.
	RoleLeaf Role = "leaf"
)

// Identity is one NATS identity: a role and, for edges, DNS servers and leaf links, whose.
type Identity struct {
	Role Role
	// PoP is the edge's or leaf link's PoP.
	PoP string
	// Node is the edge's node id within its PoP.
	Node string
	// Name names a DNS server (several DNS servers may share one name).
	Name string
}

// Control is the control plane's identity.
func Control() Identity { return Identity{Role: RoleControl} }

// Edge is the identity of node node in PoP pop.
func Edge(pop, node string) Identity { return Identity{Role: RoleEdge, PoP: pop, Node: node} }

// DNS is the identity of the DNS server called name.
func DNS(name string) Identity { return Identity{Role: RoleDNS, Name: name} }

// Leaf is the identity of PoP pop's leaf link to the cluster.
func Leaf(pop string) Identity { return Identity{Role: RoleLeaf, PoP: pop} }

// token is one NATS subject token that is safe to build subjects from: no dots, no wildcards,
// no spaces.
var token = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)

// Validate checks that the identity's role is known and its names are subject tokens.
func (id Identity) Validate() error {
	check := func(what, v string) error {
		if !token.MatchString(v) {
			return fmt.Errorf("%s %s %q: want letters, digits, '-' or '_' (at most 63)", id.Role, what, v)
		}
		return nil
	}
	switch id.Role {
	case RoleControl:
		return nil
	case RoleEdge:
		if err := check("pop", id.PoP); err != nil {
			return err
		}
		return check("node", id.Node)
	case RoleDNS:
		return check("name", id.Name)
	case RoleLeaf:
		return check("pop", id.PoP)
	}
	return fmt.Errorf("unknown role %q", id.Role)
}

// String is the identity's name: "control", "edge.lon.n1", "dns.ns1", "leaf.lon".
func (id Identity) String() string {
	switch id.Role {
	case RoleEdge:
		return "edge." + id.PoP + "." + id.Node
	case RoleDNS:
		return "dns." + id.Name
	case RoleLeaf:
		return "leaf." + id.PoP
	}
	return string(id.Role)
}

// ParseIdentity is the inverse of String.
func ParseIdentity(s string) (Identity, error) {
	f := strings.Split(s, ".")
	var id Identity
	switch {
	case len(f) == 1 && f[0] == string(RoleControl):
		id = Control()
	case len(f) == 3 && f[0] == string(RoleEdge):
		id = Edge(f[1], f[2])
	case len(f) == 2 && f[0] == string(RoleDNS):
		id = DNS(f[1])
	case len(f) == 2 && f[0] == string(RoleLeaf):
		id = Leaf(f[1])
	default:
		return Identity{}, fmt.Errorf("identity %q: want control, edge.<pop>.<node>, dns.<name> or leaf.<pop>", s)
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("identity %q: %w", s, err)
	}
	return id, nil
}

// InboxPrefix is the prefix of the identity's reply subjects (nats.CustomInboxPrefix). Each
// identity may subscribe only under its own, so no one reads the replies meant for another
// (JetStream API answers, KV values, consumer deliveries). Control uses the default "_INBOX".
func (id Identity) InboxPrefix() string {
	if id.Role == RoleControl {
		return "_INBOX"
	}
	return "_INBOX." + id.String()
}
