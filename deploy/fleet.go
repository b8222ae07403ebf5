// Package deploy turns one fleet file into everything each VM needs: cloud-init, systemd units,
// meridian and NATS configs.
package deploy

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"time"

	"github.com/meridian-cdn/meridian/internal/yamlconf"
	"github.com/meridian-cdn/meridian/wire"
)

// Fleet is the whole deployment: the NATS cluster on the control VMs, the PoPs and their edge
// nodes, the DNS zone, the hostnames and their origins. docs/deploy.md documents every field.
// Secrets are never inline: the fleet names files on the VMs (tokens, TLS keys) that the
// operator provisions out of band.
type Fleet struct {
	// Name names the fleet; it is the NATS cluster name and tags every VM (required, one DNS label).
	Name string `yaml:"name"`
	// Prefix prefixes every NATS subject and bucket. Default "meridian".
	Prefix  string  `yaml:"prefix"`
	Release Release `yaml:"release"`
	NATS    NATS    `yaml:"nats"`
	Control Control `yaml:"control"`
	DNS     DNS     `yaml:"dns"`
	Edge    Edge    `yaml:"edge"`
	// PoPs are the points of presence (at least one).
	PoPs []PoP `yaml:"pops"`
	// Hosts are the hostnames served, their origins and shields; rendered into every edge's
	// config (the control API can change them later without a re-render).
	Hosts []wire.HostConfig `yaml:"hosts"`

	// hostsWritten are Hosts' names as the file wrote them, before setDefaults converted them,
	// for validate to name a problem found in the ASCII form as the operator wrote it.
	hostsWritten []string
}

// Release says where each VM gets its binaries.
type Release struct {
	// BinaryURL is an https URL of the linux meridian binary that cloud-init downloads to
	// /usr/local/bin/meridian. One of BinaryURL or BinaryPath is required.
	BinaryURL string `yaml:"binary_url"`
	// BinarySHA256 is the binary's hex SHA-256 (required with BinaryURL); cloud-init refuses a
	// mismatch.
	BinarySHA256 string `yaml:"binary_sha256"`
	// BinaryPath is where the binary already is on the VM image (baked or copied by Terraform);
	// cloud-init links it to /usr/local/bin/meridian.
	BinaryPath string `yaml:"binary_path"`
	// NATSServerURL is an https URL of a nats-server release .tar.gz (as published on GitHub)
	// that cloud-init unpacks to /usr/local/bin/nats-server. Default: the distribution's
	// package nats-server. Either must be MinNATSServerVersion or later (Debian 13's is; Debian
	// 12's 2.9.10 is not).
	NATSServerURL string `yaml:"nats_server_url"`
	// NATSServerSHA256 is the archive's hex SHA-256 (required with NATSServerURL); cloud-init
	// refuses a mismatch.
	NATSServerSHA256 string `yaml:"nats_server_sha256"`
}

// NATS configures the NATS servers: a cluster on the control VMs and a leaf node on every PoP VM.
type NATS struct {
	// ClientPort is where local clients (meridian on the same VM) connect, on 127.0.0.1.
	// Default 4222.
	ClientPort int `yaml:"client_port"`
	// ClusterPort carries routes between the control VMs. Default 6222.
	ClusterPort int `yaml:"cluster_port"`
	// LeafPort is where PoP leaf nodes connect to the control VMs. Default 7422.
	LeafPort int `yaml:"leaf_port"`
	// MonitorPort serves nats-server's monitoring endpoints on 127.0.0.1. Default 8222.
	MonitorPort int `yaml:"monitor_port"`
	// TLS secures routes and leaf connections with mutual TLS. Required unless every VM is on
	// a loopback address (validate refuses plain TCP across the network).
	TLS TLSFiles `yaml:"tls"`
}

// TLSFiles names certificate files on the VM, provisioned out of band. All three or none.
type TLSFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile verifies the peer's certificate; both sides must present one (mutual TLS).
	CAFile string `yaml:"ca_file"`
}

func (t TLSFiles) enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" }

// Control configures the control VMs: each runs nats-server (cluster + JetStream),
// `meridian control` and `meridian dns`.
type Control struct {
	// APIPort is the control API's port on every control VM. Default 7070.
	APIPort int `yaml:"api_port"`
	// TokensFile is the API tokens file on the VM (see docs/control.md), provisioned out of band.
	// Default /etc/meridian/tokens.yaml.
	TokensFile string `yaml:"tokens_file"`
	// TLSCert and TLSKey are the API's certificate and key on the VM, provisioned out of band
	// and reloaded when they change. Required unless every VM is on loopback or InsecureHTTP
	// says a TLS-terminating proxy sits in front: control refuses plain HTTP elsewhere.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// InsecureHTTP serves the API in plain HTTP on the public address (a TLS proxy in front).
	InsecureHTTP bool `yaml:"insecure_http"`
	// TrustedProxies are the addresses (IPs or CIDRs) of the proxies in front of the API, whose
	// X-Forwarded-For names the client (control's --trusted-proxies): without them every client
	// behind a proxy has its address, and one that keeps failing authentication is throttled
	// for all. List the proxies, not their network: a trusted address can name any client.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Replicas is the JetStream replica count of buckets and streams. Default 3; at most the
	// number of control VMs.
	Replicas int `yaml:"replicas"`
	// HeartbeatTTL is how long a silent edge stays in the fleet. Default 3s.
	HeartbeatTTL time.Duration `yaml:"heartbeat_ttl"`
	// Nodes are the control VMs: an odd number, at least three (JetStream needs a quorum).
	Nodes []ControlNode `yaml:"nodes"`
}

// ControlNode is one control VM.
type ControlNode struct {
	// Name is the VM's name (one DNS label, unique in the fleet).
	Name string `yaml:"name"`
	// Region is the cloud region the VM runs in (required).
	Region string `yaml:"region"`
	// IPv4 is the public IPv4 address: NATS routes, leaf remotes and NS glue use it (required).
	IPv4 string `yaml:"ipv4"`
	// IPv6 is the public IPv6 address, published as NS glue when set: the VM must have it (the
	// Terraform example creates the instance with it).
	IPv6 string `yaml:"ipv6"`
	// PrivateIPv4 is the address the DNS server's admin listener (metrics, health) binds to,
	// for Prometheus. Empty means loopback only: admin ports are never public.
	PrivateIPv4 string `yaml:"private_ipv4"`
	// NS is the name server name this VM answers as, relative to the zone or absolute.
	// Default "ns<N>" (N = position in the list, from 1).
	NS string `yaml:"ns"`
}

// DNS configures `meridian dns` on the control VMs (see docs/dns.md).
type DNS struct {
	// Zone is the CDN zone, e.g. "cdn.example.com." (required).
	Zone string `yaml:"zone"`
	// Port is the UDP and TCP port. Default 53.
	Port int `yaml:"port"`
	// AdminPort serves /metrics. Default 9153.
	AdminPort int `yaml:"admin_port"`
	// TTL of routed answers. Default 30s. The edge lame duck default follows it.
	TTL time.Duration `yaml:"ttl"`
	// MMDB is the GeoLite2-City database on the VM, provisioned out of band (its licence
	// forbids redistribution). Default /var/lib/meridian/GeoLite2-City.mmdb.
	MMDB string `yaml:"mmdb"`
	// Hostnames are the routed names ("*" routes every name under the zone). Default ["*"].
	Hostnames []string `yaml:"hostnames"`
	// CNAMEs maps names in the zone to targets.
	CNAMEs map[string]string `yaml:"cnames"`
	// DefaultPoP receives clients of unknown location. Default: the first PoP by id.
	DefaultPoP string `yaml:"default_pop"`
	// Policy is the routing policy. Default nearest.
	Policy wire.RoutingPolicy `yaml:"policy"`
}

// Edge holds the settings every edge node shares.
type Edge struct {
	// HTTPPort is the edge's HTTP port. Default 80.
	HTTPPort int `yaml:"http_port"`
	// AdminPort serves /healthz and /metrics. Default 9080.
	AdminPort int `yaml:"admin_port"`
	// CacheBytes bounds the memory of cached objects. Default 0: the edge's default (256 MiB).
	CacheBytes int64 `yaml:"cache_bytes"`
	// LameDuck is how long a stopping edge keeps serving while reporting draining. Default the
	// DNS TTL plus 5s, so resolvers have dropped its address before it stops.
	LameDuck time.Duration `yaml:"lame_duck"`
	// ShutdownTimeout bounds requests in flight at stop. Default 20s. LameDuck plus
	// ShutdownTimeout must stay under the unit's TimeoutStopSec (90s).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// PoP is one point of presence.
type PoP struct {
	// ID is the PoP id (one lower-case DNS label, e.g. "fra"; required).
	ID string `yaml:"id"`
	// Region is the cloud region its VMs run in (required).
	Region string `yaml:"region"`
	// City is for people and dashboards.
	City string `yaml:"city"`
	// Lat and Lon locate the PoP for DNS routing (degrees; required).
	Lat *float64 `yaml:"lat"`
	Lon *float64 `yaml:"lon"`
	// Nodes are the PoP's edge VMs (at least one).
	Nodes []EdgeNode `yaml:"nodes"`
}

// EdgeNode is one edge VM.
type EdgeNode struct {
	// ID is the node id within the PoP (one DNS label; required). The VM is named "<pop>-<id>".
	ID string `yaml:"id"`
	// IPv4 is the public IPv4 address DNS answers with (required).
	IPv4 string `yaml:"ipv4"`
	// IPv6 is the public IPv6 address DNS answers with (AAAA), if any: the VM must have it (the
	// Terraform example creates the instance with it).
	IPv6 string `yaml:"ipv6"`
	// PrivateIPv4 is the address peers in the PoP and Prometheus use. Default IPv4.
	PrivateIPv4 string `yaml:"private_ipv4"`
	// Capacity is the request rate (requests/s) the node is sized for; 0 means unknown.
	Capacity float64 `yaml:"capacity"`
}

// fleetFile is a file the fleet file names on its VMs, provisioned by the operator.
type fleetFile struct {
	field  string // the fleet file's field that names it
	path   string
	reader string // the service user that reads it
	role   string // the VMs that have it: RoleControl, or "" for every VM
	// secret says the file is its reader's alone: the tmpfiles.d config (TmpfilesConf) makes it
	// so, mode 0600, however it was copied in.
	secret bool
}

// files lists the files the fleet names, in file order. Certificates, the CA and the MMDB are
// no secret: the operator sets their owner and mode.
func (f *Fleet) files() []fleetFile {
	var fs []fleetFile
	if t := f.NATS.TLS; t.enabled() {
		fs = append(fs,
			fleetFile{"nats.tls.cert_file", t.CertFile, userNATS, "", false},
			fleetFile{"nats.tls.key_file", t.KeyFile, userNATS, "", true},
			fleetFile{"nats.tls.ca_file", t.CAFile, userNATS, "", false})
	}
	fs = append(fs, fleetFile{"control.tokens_file", f.Control.TokensFile, userControl, RoleControl, true})
	if f.Control.TLSCert != "" {
		fs = append(fs,
			fleetFile{"control.tls_cert", f.Control.TLSCert, userControl, RoleControl, false},
			fleetFile{"control.tls_key", f.Control.TLSKey, userControl, RoleControl, true})
	}
	return append(fs, fleetFile{"dns.mmdb", f.DNS.MMDB, userDNS, RoleControl, false})
}

// VMName is the name of the edge VM (and its directory in the rendered output).
func (p PoP) VMName(n EdgeNode) string { return p.ID + "-" + n.ID }

// Load reads and validates a fleet file (see Parse). Every problem carries path as its file.
func Load(path string) (*Fleet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read fleet file: %w", err)
	}
	return ParseFile(path, b)
}

// Parse decodes a fleet file, fills in defaults and validates it (ParseFile without a file
// name: positions read "line L:C").
func Parse(data []byte) (*Fleet, error) { return ParseFile("", data) }

// ParseFile decodes the fleet file data read from file, fills in defaults and validates it.
// Unknown fields, wrong types and bad values are reported together: the error is a
// wire.FieldErrors (errors.As reaches each *wire.FieldError), each problem naming its field
// and its file:line:column, so that an operator fixes the file in one round.
func ParseFile(file string, data []byte) (*Fleet, error) {
	var f Fleet
	doc, probs := yamlconf.Decode(data, &f)
	errs := wire.DocumentErrors(file, probs, doc.Position, func() wire.FieldErrors {
		switch {
		case reflect.ValueOf(f).IsZero() && len(probs) > 0:
			// Nothing decoded (a document that is not a mapping): validating an empty fleet
			// would only bury the real problem under "is required".
			return nil
		case reflect.ValueOf(f).IsZero():
			return wire.FieldErrors{{Err: errors.New("the fleet file is empty")}}
		}
		f.setDefaults()
		return f.validate()
	})
	// In file order, as an operator reads the file; problems with no place in it (a section
	// missing altogether) last.
	unplaced := func(e *wire.FieldError) int {
		if e.Line == 0 {
			return 1
		}
		return 0
	}
	slices.SortStableFunc(errs, func(a, b *wire.FieldError) int {
		return cmp.Or(cmp.Compare(unplaced(a), unplaced(b)), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return &f, nil
}
