package deploy

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/meridian-cdn/meridian/internal/natsauth"
)

// credentials creates (or takes from the secrets) the credential of every process on every VM:
// on a control VM, control and dns.<vm>; on an edge VM, edge.<pop>.<node> and its PoP's leaf
// link leaf.<pop> (one key per VM).
func (r *renderer) credentials() error {
	r.creds = map[string]map[natsauth.Identity]natsauth.Credential{}
	add := func(vm string, id natsauth.Identity, cluster bool) error {
		c, err := r.sec.credential(vm, id)
		if err != nil {
			return err
		}
		if r.creds[vm] == nil {
			r.creds[vm] = map[natsauth.Identity]natsauth.Credential{}
		}
		r.creds[vm][id] = c
		if cluster {
			u, err := c.User()
			if err != nil {
				return err
			}
			r.clusterUsers = append(r.clusterUsers, u)
		}
		return nil
	}
	for _, c := range r.f.Control.Nodes {
		if err := add(c.Name, natsauth.Control(), true); err != nil {
			return err
		}
		if err := add(c.Name, natsauth.DNS(c.Name), true); err != nil {
			return err
		}
	}
	for _, p := range r.f.PoPs {
		for _, n := range p.Nodes {
			vm := p.VMName(n)
			if err := add(vm, natsauth.Edge(p.ID, n.ID), false); err != nil {
				return err
			}
			if err := add(vm, natsauth.Leaf(p.ID), true); err != nil {
				return err
			}
		}
	}
	return nil
}

// natsCluster is a control VM's nats.conf: a cluster member with JetStream and a leaf listener.
func (r *renderer) natsCluster(vm string) []byte {
	f := r.f
	var b strings.Builder
	b.WriteString(r.header(vm, "NATS cluster member"))
	fmt.Fprintf(&b, "server_name: %q\n", vm)
	fmt.Fprintf(&b, "# Clients (meridian control and dns) run on this VM.\nlisten: %q\n", r.local(vm, f.NATS.ClientPort))
	fmt.Fprintf(&b, "http: %q\n\n", r.local(vm, f.NATS.MonitorPort))
	b.WriteString("# Nobody is anonymous: control, DNS and every PoP's leaf link, each with its own nkey and\n" +
		"# permissions (docs/security.md). Only public keys are here.\n")
	b.WriteString(natsauth.ConfUsers(f.Prefix, r.clusterUsers, ""))
	b.WriteString("\n")
	// The domain lets leaf nodes reach this JetStream: JetStream API traffic crosses a leaf
	// connection only under a domain prefix ($JS.<domain>.API), to which each leaf maps its
	// clients' plain $JS.API requests (default_js_domain).
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  domain: %q\n}\n\n", StateDir+"/nats", f.Name)
	fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: %q\n", f.Name, r.natsPublic(vm, f.NATS.ClusterPort))
	// One route connection per pair of servers keeps a client's subscription and the
	// JetStream request it then forwards to the meta leader in order; with pooled routes the
	// reply can outrun the subscription and be dropped (a lost first request, a 30 s timeout).
	b.WriteString("  pool_size: -1\n")
	r.natsTLS(&b, "  ")
	b.WriteString("  # The routes' own user and password, and the routes that carry them: a secret file.\n")
	fmt.Fprintf(&b, "  include %q\n}\n\n", "creds/nats-cluster.conf")
	fmt.Fprintf(&b, "# Every PoP's leaf node connects here; purges fan out from the cluster to them.\n")
	fmt.Fprintf(&b, "leafnodes {\n  listen: %q\n", r.natsPublic(vm, f.NATS.LeafPort))
	// The leaf nodes put the addresses the listener advertises first in their reconnect list;
	// bound to every address it would advertise the interfaces', which on a cloud VM are
	// private (another region's cannot be reached, and no certificate names them).
	b.WriteString("  # Leaf nodes fail over to what is advertised: this VM's public address, as they dial it.\n")
	fmt.Fprintf(&b, "  advertise: %q\n", net.JoinHostPort(r.controlIPv4(vm), strconv.Itoa(f.NATS.LeafPort)))
	r.natsTLS(&b, "  ")
	b.WriteString("}\n")
	return []byte(b.String())
}

// natsRouteSecrets is a control VM's creds/nats-cluster.conf, included in its cluster block:
// the route user and password, and the route URLs that carry them.
func (r *renderer) natsRouteSecrets(vm string) []byte {
	var b strings.Builder
	b.WriteString(r.header(vm, "NATS route credentials (secret)"))
	fmt.Fprintf(&b, "authorization {\n  user: \"route\"\n  password: %q\n}\nroutes: [\n", r.sec.RoutePassword)
	for _, c := range r.f.Control.Nodes {
		u := url.URL{Scheme: "nats-route", User: url.UserPassword("route", r.sec.RoutePassword),
			Host: net.JoinHostPort(c.IPv4, strconv.Itoa(r.f.NATS.ClusterPort))}
		fmt.Fprintf(&b, "  %q\n", u.String())
	}
	b.WriteString("]\n")
	return []byte(b.String())
}

// natsLeaf is an edge VM's nats.conf: a leaf node of the cluster, without JetStream of its own,
// so the edge's JetStream calls are answered by the cluster.
func (r *renderer) natsLeaf(vm string, p PoP, n EdgeNode) []byte {
	f := r.f
	var b strings.Builder
	b.WriteString(r.header(vm, "NATS leaf node"))
	fmt.Fprintf(&b, "server_name: %q\n", vm)
	fmt.Fprintf(&b, "# The only client is meridian edge on this VM.\nlisten: %q\n", r.local(vm, f.NATS.ClientPort))
	fmt.Fprintf(&b, "http: %q\n\n", r.local(vm, f.NATS.MonitorPort))
	u, err := r.creds[vm][natsauth.Edge(p.ID, n.ID)].User()
	if err == nil {
		b.WriteString("# The edge on this VM, with its own nkey and permissions (docs/security.md).\n")
		b.WriteString(natsauth.ConfUsers(r.f.Prefix, []natsauth.User{u}, ""))
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "# No JetStream here: the edge's JetStream requests go to the cluster's domain.\n")
	fmt.Fprintf(&b, "default_js_domain: {\"$G\": %q}\n\n", f.Name)
	b.WriteString("leafnodes {\n  remotes: [\n    {\n      # One connection, to whichever control VM answers first; fails over to the others.\n      urls: [\n")
	for _, c := range f.Control.Nodes {
		fmt.Fprintf(&b, "        %q\n", "nats-leaf://"+net.JoinHostPort(c.IPv4, strconv.Itoa(f.NATS.LeafPort)))
	}
	b.WriteString("      ]\n")
	r.natsTLS(&b, "      ")
	b.WriteString("      # This VM's key of the PoP's leaf link: a secret file.\n")
	fmt.Fprintf(&b, "      include %q\n", "creds/nats-leaf.conf")
	b.WriteString("    }\n  ]\n}\n")
	return []byte(b.String())
}

// controlIPv4 is control VM vm's public IPv4 address, the one routes and leaf remotes dial.
func (r *renderer) controlIPv4(vm string) string {
	for _, c := range r.f.Control.Nodes {
		if c.Name == vm {
			return c.IPv4
		}
	}
	return ""
}

func (r *renderer) natsTLS(b *strings.Builder, indent string) {
	t := r.f.NATS.TLS
	if !t.enabled() {
		return
	}
	fmt.Fprintf(b, "%stls {\n%s  cert_file: %q\n%s  key_file: %q\n%s  ca_file: %q\n%s  verify: true\n%s}\n",
		indent, indent, t.CertFile, indent, t.KeyFile, indent, t.CAFile, indent, indent)
}
