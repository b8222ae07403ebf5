package natsauth

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultPrefix is the subject and bucket prefix when none is given (wire.DefaultPrefix).
const DefaultPrefix = "meridian"

// Names are the buckets, stream and subjects of one fleet prefix, as wire and purge
// name them.
type Names struct {
	// Prefix is the fleet's prefix; empty means DefaultPrefix.
	Prefix string
}

func (n Names) prefix() string {
	if n.Prefix == "" {
		return DefaultPrefix
	}
	return n.Prefix
}

// Bucket is the KV bucket name for bucket ("fleet", "config", "peerkeys").
func (n Names) Bucket(bucket string) string {
	return strings.ReplaceAll(n.prefix(), ".", "_") + "_" + bucket
}

// PurgeStream is the JetStream stream of purge commands.
func (n Names) PurgeStream() string {
	if n.prefix() == DefaultPrefix {
		return "PURGE"
	}
	return strings.ToUpper(strings.ReplaceAll(n.prefix(), ".", "_")) + "_PURGE"
}

// PurgeCommands is the wildcard of purge command subjects.
func (n Names) PurgeCommands() string { return n.prefix() + ".purge.cmd.>" }

// PurgeLive is the core NATS subject on which control announces each stored purge.
func (n Names) PurgeLive() string { return n.prefix() + ".purge.live" }

// AckSubject is the subject on which node node of PoP pop acknowledges purges; "*" tokens make
// it a wildcard.
func (n Names) AckSubject(pop, node string) string {
	return n.prefix() + ".purge.ack." + pop + "." + node
}

// The buckets each role reads.
const (
	fleetBucket    = "fleet"
	configBucket   = "config"
	peerKeysBucket = "peerkeys"
	latencyBucket  = "latency"
)

// Keys of the config bucket that DNS watches, as wire names them (wire.RoutingKey, and
// wire.DrainPrefix followed by a PoP id).
const (
	RoutingKey = "routing"
	DrainKeys  = "drain.>"
)

// kvWatch lets a client bind to bucket and watch it. KV buckets live in the stream
// "KV_<bucket>"; nats.go binds with STREAM.INFO and watches through an ordered consumer that it
// creates, deletes on reset, and answers flow control for.
func kvWatch(bucket string) []string {
	s := "KV_" + bucket
	return []string{
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.CONSUMER.CREATE." + s + ".>",
		"$JS.API.CONSUMER.INFO." + s + ".>",
		"$JS.API.CONSUMER.DELETE." + s + ".>",
		"$JS.FC." + s + ".>",
	}
}

// kvRead is kvWatch and getting keys: nats.go gets with DIRECT.GET (or STREAM.MSG.GET when
// direct gets are off).
//
// Only for buckets that control alone writes. A get is answered on whatever reply subject the
// request names (NATS checks the request's subject, not its reply), and a direct get answers
// with the stored value as it is, headers off on request ("no_hdr"): a reader who may get a
// value an edge wrote could have the server publish it on the live purge subject or on
// another node's ack subject, where only control, or that node, may publish. A watch's
// deliveries keep the subject they have in the bucket's stream, which the purge subscriber
// and the ack tracker check.
func kvRead(bucket string) []string {
	s := "KV_" + bucket
	return append(kvWatch(bucket),
		"$JS.API.STREAM.MSG.GET."+s,
		"$JS.API.DIRECT.GET."+s,
		"$JS.API.DIRECT.GET."+s+".>",
	)
}

// kvWatchKeys lets a client bind to bucket and watch the keys matching each of keys, one
// consumer per key pattern: a consumer with one filter is created on a subject that ends with
// it ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>), and the server refuses one whose
// config names another filter. No gets: a get names its key in the request's body.
func kvWatchKeys(bucket string, keys ...string) []string {
	s := "KV_" + bucket
	out := []string{"$JS.API.STREAM.INFO." + s}
	for _, k := range keys {
		out = append(out, "$JS.API.CONSUMER.CREATE."+s+".*.$KV."+bucket+"."+k)
	}
	return append(out,
		"$JS.API.CONSUMER.INFO."+s+".>",
		"$JS.API.CONSUMER.DELETE."+s+".>",
		"$JS.FC."+s+".>",
	)
}

// streamConsume lets a client read a stream through an ordered (pull) consumer it creates.
func streamConsume(stream string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".>",
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".>",
		"$JS.FC." + stream + ".>",
	}
}

// Permissions returns what id may publish and subscribe to in the fleet with prefix prefix:
//
//   - control: everything;
//   - edge (pop P, node N): publish its own registry key ($KV.<fleet>.P.N), its own purge
//     acks (<prefix>.purge.ack.P.N) and its own latency records ($KV.<latency>.P.N.<network>, the
//     beacons its clients reported); watch the fleet bucket; read and watch the config and
//     peer key buckets; consume the purge stream and receive the live purge announcements
//     (never publish them); receive only on its own inbox prefix;
//   - dns: watch the fleet and latency buckets, and the routing policy and drains of the config
//     bucket (not its host configs); receive only on its own inbox prefix;
//   - leaf (pop P): what P's edges may do together, from the PoP's leaf server to the cluster.
//
// Nobody but control may create or change streams and buckets, publish purge commands or live
// purge announcements, write config or read acks, or get keys from the buckets that edges
// write (kvRead). The edge's and DNS's reads are JetStream API requests whose answers
// come back on their inboxes, hence the inbox prefixes (see Identity.InboxPrefix).
func Permissions(prefix string, id Identity) *server.Permissions {
	n := Names{Prefix: prefix}
	var pub, sub []string
	switch id.Role {
	case RoleControl:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{">"}},
		}
	case RoleEdge, RoleLeaf:
		node := id.Node
		if id.Role == RoleLeaf {
			node = "*"
		}
		pub = append(pub,
			"$KV."+n.Bucket(fleetBucket)+"."+id.PoP+"."+node,
			n.AckSubject(id.PoP, node),
			// One token after the node: the client network (wire.LatencyKey).
			"$KV."+n.Bucket(latencyBucket)+"."+id.PoP+"."+node+".*",
		)
		pub = append(pub, kvWatch(n.Bucket(fleetBucket))...)
		pub = append(pub, kvRead(n.Bucket(configBucket))...)
		pub = append(pub, kvRead(n.Bucket(peerKeysBucket))...)
		pub = append(pub, streamConsume(n.PurgeStream())...)
		// An edge's leaf server, without JetStream of its own, maps the edge's $JS.API and
		// $KV publishes into the cluster's JetStream domain ($JS.<domain>.API.STREAM...,
		// $JS.<domain>.API.$KV...) before it checks them, and sends them over the leaf link so.
		for _, p := range pub {
			if rest, ok := strings.CutPrefix(p, "$JS.API."); ok {
				pub = append(pub, "$JS.*.API."+rest)
			} else if strings.HasPrefix(p, "$KV.") {
				pub = append(pub, "$JS.*.API."+p)
			}
		}
		if id.Role == RoleLeaf {
			sub = []string{"_INBOX." + string(RoleEdge) + "." + id.PoP + ".>"}
		} else {
			sub = []string{id.InboxPrefix() + ".>"}
		}
		sub = append(sub, n.PurgeLive())
	case RoleDNS:
		pub = append(pub, kvWatch(n.Bucket(fleetBucket))...)
		// Of the config bucket, the routing policy and the drains: host configs hold origins
		// and the fields set on origin requests, which the DNS server has no use for.
		pub = append(pub, kvWatchKeys(n.Bucket(configBucket), RoutingKey, DrainKeys)...)
		pub = append(pub, kvWatch(n.Bucket(latencyBucket))...)
		sub = []string{id.InboxPrefix() + ".>"}
	default:
		// An unknown role may do nothing.
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{">"}},
			Subscribe: &server.SubjectPermission{Deny: []string{">"}},
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// User is one credential the server accepts: whose it is and its nkey public key.
type User struct {
	ID   Identity `json:"-"`
	NKey string   `json:"nkey"`
}

// connection types (jwt.ConnectionTypeStandard, jwt.ConnectionTypeLeafnode).
const (
	connStandard = "STANDARD"
	connLeaf     = "LEAFNODE"
)

// NkeyUsers turns users into the server's nkey users with their permissions for prefix. Leaf
// link credentials are accepted only from leaf node connections, the others only from clients,
// so an edge's credential cannot open a leaf link.
func NkeyUsers(prefix string, users []User) []*server.NkeyUser {
	out := make([]*server.NkeyUser, 0, len(users))
	for _, u := range users {
		ct := connStandard
		if u.ID.Role == RoleLeaf {
			ct = connLeaf
		}
		out = append(out, &server.NkeyUser{
			Nkey:                   u.NKey,
			Permissions:            Permissions(prefix, u.ID),
			AllowedConnectionTypes: map[string]struct{}{ct: {}},
		})
	}
	return out
}

// ConfUsers renders users as a nats-server.conf authorization block: the same nkey users,
// permissions and connection types as NkeyUsers, for servers run from a config file.
func ConfUsers(prefix string, users []User, indent string) string {
	var b strings.Builder
	q := func(ss []string) string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	fmt.Fprintf(&b, "%sauthorization {\n%s  users = [\n", indent, indent)
	for _, u := range NkeyUsers(prefix, users) {
		var types []string
		for t := range u.AllowedConnectionTypes {
			types = append(types, t)
		}
		sort.Strings(types)
		p := u.Permissions
		fmt.Fprintf(&b, "%s    # %s\n", indent, identityOf(users, u.Nkey))
		fmt.Fprintf(&b, "%s    {nkey: %q, allowed_connection_types: %s, permissions: {\n", indent, u.Nkey, q(types))
		perm := func(sp *server.SubjectPermission) string {
			var parts []string
			if len(sp.Allow) > 0 {
				parts = append(parts, "allow: "+q(sp.Allow))
			}
			if len(sp.Deny) > 0 {
				parts = append(parts, "deny: "+q(sp.Deny))
			}
			return "{" + strings.Join(parts, ", ") + "}"
		}
		fmt.Fprintf(&b, "%s      publish: %s\n", indent, perm(p.Publish))
		fmt.Fprintf(&b, "%s      subscribe: %s\n", indent, perm(p.Subscribe))
		fmt.Fprintf(&b, "%s    }}\n", indent)
	}
	fmt.Fprintf(&b, "%s  ]\n%s}\n", indent, indent)
	return b.String()
}

func identityOf(users []User, nkey string) string {
	for _, u := range users {
		if u.NKey == nkey {
			return u.ID.String()
		}
	}
	return "?"
}
