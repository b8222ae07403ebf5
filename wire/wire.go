// Package wire defines the records that cross between the control plane and the nodes (edges and
// DNS servers): fleet registrations with their load reports, host configuration and routing
// policy, and the NATS names they travel under. It imports only the standard library so that
// every side can share it without pulling in the others.
package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// NATS names. Every subject and bucket is prefixed by a configurable prefix (default
// DefaultPrefix) so that several fleets can share one NATS cluster.
const (
	DefaultPrefix = "meridian"
	// FleetBucket is the KV bucket holding one key per edge node (see FleetKey).
	FleetBucket = "fleet"
	// ConfigBucket is the KV bucket holding host configs (see HostKey) and the routing policy.
	ConfigBucket = "config"
	// RoutingKey is the key in ConfigBucket that holds the RoutingPolicy.
	RoutingKey = "routing"
	// PurgeStream is the JetStream stream carrying purge commands.
	PurgeStream = "PURGE"
)

// Bucket returns the KV bucket name for prefix p (empty means DefaultPrefix), e.g.
// "meridian_fleet". Bucket names may not contain dots.
func Bucket(p, bucket string) string {
	if p == "" {
		p = DefaultPrefix
	}
	return strings.ReplaceAll(p, ".", "_") + "_" + bucket
}

// FleetKey is the key of one node in the fleet bucket: "<pop>.<node>".
func FleetKey(pop, node string) string { return pop + "." + node }

// HostKey is the key of one hostname's config in the config bucket: "host.<hostname>".
func HostKey(host string) string { return "host." + strings.ToLower(host) }

// Node is one edge node's registration and its latest load report. It is the value stored
// under FleetKey in the fleet bucket and rewritten on every heartbeat.
type Node struct {
	PoP    string  `json:"pop"`
	ID     string  `json:"id"`
	Region string  `json:"region,omitempty"`
	City   string  `json:"city,omitempty"`
	Lat    float64 `json:"lat"`
	Lon    float64 `json:"lon"`
	// IPv4 and IPv6 are the public addresses that DNS hands to clients.
	IPv4 string `json:"ipv4,omitempty"`
	IPv6 string `json:"ipv6,omitempty"`
	// HTTPAddr is host:port of the plain HTTP listener; peers fill from it.
	HTTPAddr  string `json:"http_addr,omitempty"`
	HTTPSAddr string `json:"https_addr,omitempty"`
	AdminAddr string `json:"admin_addr,omitempty"`
	// Capacity is the request rate (requests/s) the node is sized for; 0 means unknown.
	Capacity float64 `json:"capacity,omitempty"`
	Version  string  `json:"version,omitempty"`
	// Draining is true when the node is shutting down or was drained by an operator: it still
	// serves what arrives but must not be handed new clients or used as a peer.
	Draining bool       `json:"draining"`
	Load     LoadReport `json:"load"`
}

// LoadReport is what a node measured over its last heartbeat interval.
type LoadReport struct {
	At                time.Time `json:"at"`
	RequestsPerSec    float64   `json:"requests_per_sec"`
	EgressBytesPerSec float64   `json:"egress_bytes_per_sec"`
	OpenConns         int       `json:"open_conns"`
	// CPU is the process's share of one core over the interval (1.0 = one core busy).
	CPU         float64 `json:"cpu"`
	MemoryBytes uint64  `json:"memory_bytes"`
	HitRatio    float64 `json:"hit_ratio"`
	Healthy     bool    `json:"healthy"`
	// Saturation is how close the node is to its limits by its own measurement: the largest of
	// its CPU use over its cores and its in-flight requests over its limit (docs/dns.md,
	// "Saturation"). 1.0 is full; 0 when the node measures nothing.
	Saturation float64 `json:"saturation,omitempty"`
}

// Utilisation is the node's load as a fraction of what it can take: its request rate over
// Capacity when an operator configured one (the override), else the saturation it measured.
func (n Node) Utilisation() float64 {
	if n.Capacity <= 0 {
		return n.Load.Saturation
	}
	return n.Load.RequestsPerSec / n.Capacity
}

// Usable reports whether the node may be handed new clients or used as a fill peer.
func (n Node) Usable() bool { return n.Load.Healthy && !n.Draining }

// PoP is a point of presence: the nodes that share one location. It is derived from the
// nodes in the fleet bucket (see GroupPoPs), never stored on its own.
type PoP struct {
	ID     string  `json:"id"`
	Region string  `json:"region,omitempty"`
	City   string  `json:"city,omitempty"`
	Lat    float64 `json:"lat"`
	Lon    float64 `json:"lon"`
	Nodes  []Node  `json:"nodes"`
}

// Usable reports whether at least one node of the PoP is usable.
func (p PoP) Usable() bool {
	for _, n := range p.Nodes {
		if n.Usable() {
			return true
		}
	}
	return false
}

// Draining reports whether every node of the PoP is draining.
func (p PoP) Draining() bool {
	for _, n := range p.Nodes {
		if !n.Draining {
			return false
		}
	}
	return len(p.Nodes) > 0
}

// Utilisation is the PoP's load as a fraction of what it can take. When every node has a
// configured capacity it is the summed request rate over the summed capacity; otherwise it is
// the mean of the nodes' Utilisation, so that measured saturation counts where no capacity was
// configured.
func (p PoP) Utilisation() float64 {
	var rps, capacity, sum float64
	all := len(p.Nodes) > 0
	for _, n := range p.Nodes {
		rps += n.Load.RequestsPerSec
		capacity += n.Capacity
		sum += n.Utilisation()
		all = all && n.Capacity > 0
	}
	switch {
	case all:
		return rps / capacity
	case len(p.Nodes) > 0:
		return sum / float64(len(p.Nodes))
	}
	return 0
}

// GroupPoPs groups nodes by PoP, sorted by PoP id and node id. A PoP's location is its
// first node's.
func GroupPoPs(nodes []Node) []PoP {
	byID := map[string]*PoP{}
	for _, n := range nodes {
		p, ok := byID[n.PoP]
		if !ok {
			p = &PoP{ID: n.PoP, Region: n.Region, City: n.City, Lat: n.Lat, Lon: n.Lon}
			byID[n.PoP] = p
		}
		p.Nodes = append(p.Nodes, n)
	}
	out := make([]PoP, 0, len(byID))
	for _, p := range byID {
		sort.Slice(p.Nodes, func(i, j int) bool { return p.Nodes[i].ID < p.Nodes[j].ID })
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// HostConfig is how the fleet serves one hostname. It is the value stored under HostKey in
// the config bucket, and the per-host section of an edge's config file.
type HostConfig struct {
	// Host is the hostname clients send (lower case, no port).
	Host string `json:"host" yaml:"host"`
	// Origin is the origin's base URL, e.g. "http://10.0.0.1:8080".
	Origin string `json:"origin" yaml:"origin"`
	// OriginHost, if set, replaces the Host header sent to the origin.
	OriginHost string `json:"origin_host,omitempty" yaml:"origin_host,omitempty"`
	// Shield is the PoP id that fills from the origin for every other PoP; empty means none.
	Shield string       `json:"shield,omitempty" yaml:"shield,omitempty"`
	Cache  CacheOptions `json:"cache" yaml:"cache"`
	// Cookies says what a GET or HEAD with a Cookie does: "strip" (the default) fills and
	// serves it from cache as if it had none, and the Cookie never reaches a shared fill;
	// "pass" sends it to the origin with its cookies and neither serves nor stores the answer
	// (as Varnish does). Unsafe methods always carry their cookies.
	Cookies string `json:"cookies,omitempty" yaml:"cookies,omitempty"`
	// RequestHeaders shapes what goes to the origin. The zero value forwards every end-to-end
	// request field under the edge's poisoning rules (docs/edge.md).
	RequestHeaders RequestHeaders `json:"request_headers,omitzero" yaml:"request_headers,omitempty"`
	// ResponseHeaders shapes what clients get from the edge.
	ResponseHeaders ResponseHeaders `json:"response_headers,omitzero" yaml:"response_headers,omitempty"`
}

// Cookie modes of HostConfig.Cookies.
const (
	CookiesStrip = "strip"
	CookiesPass  = "pass"
)

// RequestHeaders is a host's origin request policy.
type RequestHeaders struct {
	// Forward lists the request fields sent upstream besides the protocol fields the edge
	// always handles (Accept*, Content-*, validators, tracing, forwarding); "*" or empty means
	// every end-to-end field. Naming a field of the shared-fill deny list here forwards it.
	Forward HeaderNames `json:"forward,omitempty" yaml:"forward,omitempty"`
	// Deny lists fields never sent upstream, on top of the shared-fill deny list.
	Deny []string `json:"deny,omitempty" yaml:"deny,omitempty"`
	// Set sets fields on every upstream request, replacing any the client sent.
	Set map[string]string `json:"set,omitempty" yaml:"set,omitempty"`
}

// ResponseHeaders is a host's client response policy.
type ResponseHeaders struct {
	// Deny lists fields removed from every answer to a client.
	Deny []string `json:"deny,omitempty" yaml:"deny,omitempty"`
	// Set sets fields on every answer to a client.
	Set map[string]string `json:"set,omitempty" yaml:"set,omitempty"`
}

// HeaderNames is a list of field names; in JSON and YAML it is a list or the string "*".
type HeaderNames []string

// All reports whether the list means every field (empty or "*").
func (l HeaderNames) All() bool { return len(l) == 0 || len(l) == 1 && l[0] == "*" }

// UnmarshalJSON accepts a list of names or the string "*".
func (l *HeaderNames) UnmarshalJSON(b []byte) error {
	return l.UnmarshalYAML(func(v any) error { return json.Unmarshal(b, v) })
}

// UnmarshalYAML accepts a list of names or the string "*" (the yaml decoder's unmarshal-func
// interface, which keeps this package free of a YAML import).
func (l *HeaderNames) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err == nil {
		if s != "*" {
			return fmt.Errorf("%q is neither \"*\" nor a list of field names", s)
		}
		*l = HeaderNames{"*"}
		return nil
	}
	var a []string
	if err := unmarshal(&a); err != nil {
		return err
	}
	*l = a
	return nil
}

// fixedRequestFields are request fields a host's policy may not set or deny: the framing and
// routing of the request, and the fleet's own fields.
var fixedRequestFields = []string{"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}

// fixedResponseFields are response fields a host's policy may not set or deny: framing.
var fixedResponseFields = []string{"content-length", "transfer-encoding", "connection", "upgrade", "trailer"}

// validFieldName reports whether s is an HTTP field name (an RFC 9110 token).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// checkFields validates a list of field names for field, refusing the fixed ones.
func checkFields(field string, names []string, fixed []string) error {
	for i, k := range names {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case !validFieldName(k) || k == "*":
			return &FieldError{Field: f, Err: fmt.Errorf("%q is not a field name", k)}
		case slices.Contains(fixed, strings.ToLower(k)) || strings.HasPrefix(strings.ToLower(k), "meridian-"):
			return &FieldError{Field: f, Err: fmt.Errorf("%q is managed by the edge", k)}
		}
	}
	return nil
}

// checkSet validates a set map for field.
func checkSet(field string, set map[string]string, fixed []string) error {
	names := make([]string, 0, len(set))
	for k := range set {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := checkFields(field, []string{k}, fixed); err != nil {
			return &FieldError{Field: field + "." + k, Err: errors.Unwrap(err)}
		}
		if strings.ContainsAny(set[k], "\r\n\x00") {
			return &FieldError{Field: field + "." + k, Err: errors.New("value holds a line break or NUL")}
		}
	}
	return nil
}

func (p RequestHeaders) validate() error {
	if len(p.Forward) > 1 && slices.Contains(p.Forward, "*") {
		return &FieldError{Field: "request_headers.forward", Err: errors.New(`"*" must stand alone`)}
	}
	if !p.Forward.All() {
		if err := checkFields("request_headers.forward", p.Forward, fixedRequestFields); err != nil {
			return err
		}
	}
	if err := checkFields("request_headers.deny", p.Deny, fixedRequestFields); err != nil {
		return err
	}
	return checkSet("request_headers.set", p.Set, fixedRequestFields)
}

func (p ResponseHeaders) validate() error {
	if err := checkFields("response_headers.deny", p.Deny, fixedResponseFields); err != nil {
		return err
	}
	return checkSet("response_headers.set", p.Set, fixedResponseFields)
}

// CacheOptions are a host's caching knobs. The zero value is the default behaviour.
type CacheOptions struct {
	// IgnoreQuery drops the whole query string from the cache key.
	IgnoreQuery bool `json:"ignore_query,omitempty" yaml:"ignore_query,omitempty"`
	// KeepParams, if not empty, keeps only these query parameters in the cache key.
	KeepParams []string `json:"keep_params,omitempty" yaml:"keep_params,omitempty"`
	// SortQuery sorts query parameters in the cache key so that ?a=1&b=2 and ?b=2&a=1 share
	// an entry.
	SortQuery bool `json:"sort_query,omitempty" yaml:"sort_query,omitempty"`
	// KeepSurrogateHeaders passes Surrogate-Key, Cache-Tag and Cache-Groups on to clients;
	// by default the edge strips them.
	KeepSurrogateHeaders bool `json:"keep_surrogate_headers,omitempty" yaml:"keep_surrogate_headers,omitempty"`
	// MaxObjectBytes overrides the node's object size limit for this host; 0 means the node's.
	MaxObjectBytes int64 `json:"max_object_bytes,omitempty" yaml:"max_object_bytes,omitempty"`
	// DisableCompression stops the edge compressing this host's answers; by default it
	// compresses uncompressed answers of CompressTypes (br, zstd or gzip, as the client accepts).
	DisableCompression bool `json:"disable_compression,omitempty" yaml:"disable_compression,omitempty"`
	// CompressTypes are the media types the edge compresses ("type/subtype", "type/*" or
	// "*/*+suffix"); empty means text, JSON, JavaScript, XML, SVG, wasm and fonts
	// (edge/compress.DefaultTypes). Already-compressed types are never compressed.
	CompressTypes []string `json:"compress_types,omitempty" yaml:"compress_types,omitempty"`
	// CompressMinBytes is the smallest body the edge compresses; 0 means 1024.
	CompressMinBytes int64 `json:"compress_min_bytes,omitempty" yaml:"compress_min_bytes,omitempty"`
	// SliceThresholdBytes: an object with a validator (ETag or Last-Modified) larger than this
	// is cached in slices; 0 means the host's object size limit (max_object_bytes).
	SliceThresholdBytes int64 `json:"slice_threshold_bytes,omitempty" yaml:"slice_threshold_bytes,omitempty"`
	// SliceBytes is the size of one slice; 0 means 2 MiB.
	SliceBytes int64 `json:"slice_bytes,omitempty" yaml:"slice_bytes,omitempty"`
	// DisableSlices streams objects over the object size limit through uncached instead.
	DisableSlices bool `json:"disable_slices,omitempty" yaml:"disable_slices,omitempty"`
}

// validate checks the caching knobs.
func (c CacheOptions) validate() error {
	if c.MaxObjectBytes < 0 {
		return &FieldError{Field: "cache.max_object_bytes", Err: errors.New("is negative")}
	}
	if c.SliceThresholdBytes < 0 {
		return &FieldError{Field: "cache.slice_threshold_bytes", Err: errors.New("is negative")}
	}
	if c.SliceBytes < 0 || c.SliceBytes > 0 && c.SliceBytes < 64<<10 {
		return &FieldError{Field: "cache.slice_bytes", Err: errors.New("is below 64 KiB")}
	}
	if c.CompressMinBytes < 0 {
		return &FieldError{Field: "cache.compress_min_bytes", Err: errors.New("is negative")}
	}
	for i, t := range c.CompressTypes {
		typ, sub, ok := strings.Cut(t, "/")
		if !ok || typ == "" || sub == "" || strings.ContainsAny(t, " \t;,") {
			return &FieldError{Field: fmt.Sprintf("cache.compress_types[%d]", i),
				Err: fmt.Errorf("%q is not a media type pattern (type/subtype, type/* or */*+suffix)", t)}
		}
	}
	return nil
}

// Validate reports the first problem with the config, naming the field.
func (h HostConfig) Validate() error {
	if err := ValidateHostname(h.Host); err != nil {
		return &FieldError{Field: "host", Err: err}
	}
	if err := ValidateOrigin(h.Origin); err != nil {
		return &FieldError{Field: "origin", Err: err}
	}
	if err := h.Cache.validate(); err != nil {
		return err
	}
	if h.Shield != "" && !validLabel(h.Shield) {
		return &FieldError{Field: "shield", Err: fmt.Errorf("%q is not a valid PoP id", h.Shield)}
	}
	if h.Cookies != "" && h.Cookies != CookiesStrip && h.Cookies != CookiesPass {
		return &FieldError{Field: "cookies", Err: fmt.Errorf("%q is not strip or pass", h.Cookies)}
	}
	if err := h.RequestHeaders.validate(); err != nil {
		return err
	}
	return h.ResponseHeaders.validate()
}

// ValidateOrigin checks an origin base URL before a host config may point the fleet at it:
// scheme http or https, a host, no userinfo (credentials in a URL leak into logs and
// receipts), and not an address that reaches the machine's own cloud environment instead of an
// origin. Refused, when the host is a literal IP: link-local addresses (169.254.0.0/16,
// fe80::/10, where cloud instance metadata lives), cloud metadata addresses outside those
// (MetadataAddrs), unspecified and multicast addresses, including in IPv4-mapped and NAT64
// (64:ff9b::/96) form. Refused by name: the well-known metadata hostnames (MetadataHosts) and
// numeric hosts that are not canonical IP literals ("2852039166", "0xa9fea9fe"), which some
// resolvers read as IPv4 addresses. Other hostnames are not resolved here: what a name
// resolves to when an edge fills is the operator's network's business (egress rules, IMDSv2).
// Loopback and private addresses are allowed: origins often live next to the edge.
func ValidateOrigin(origin string) error {
	if origin == "" {
		return errors.New("is required")
	}
	u, err := url.Parse(origin)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme %q is not http or https", u.Scheme)
	case u.Opaque != "" || u.Host == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not hold userinfo (user:password@): set origin credentials in headers, not in the URL")
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "" {
		return errors.New("has no host")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if why := forbiddenOriginIP(ip); why != "" {
			return fmt.Errorf("host %s is %s, not an origin", host, why)
		}
		return nil
	}
	if slices.Contains(MetadataHosts, host) {
		return fmt.Errorf("host %s is a cloud metadata service, not an origin", host)
	}
	labels := strings.Split(host, ".")
	if last := labels[len(labels)-1]; isNumeric(last) {
		return fmt.Errorf("host %q is neither a hostname nor a canonical IP address", host)
	}
	return nil
}

// MetadataAddrs are cloud metadata addresses outside the link-local ranges, which
// ValidateOrigin refuses as well: AWS's IPv6 instance metadata (fd00:ec2::254), Alibaba Cloud's
// (100.100.100.200) and Oracle Cloud Classic's (192.0.0.192).
var MetadataAddrs = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("100.100.100.200"),
	netip.MustParseAddr("192.0.0.192"),
}

// MetadataHosts are the well-known hostnames of cloud metadata services, which ValidateOrigin
// refuses.
var MetadataHosts = []string{
	"metadata", "metadata.google.internal", "metadata.goog",
	"instance-data", "instance-data.ec2.internal",
}

// nat64 is the well-known NAT64 prefix (RFC 6052), which embeds an IPv4 address.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// forbiddenOriginIP says why ip may not be an origin, or "" if it may.
func forbiddenOriginIP(ip netip.Addr) string {
	ip = ip.WithZone("").Unmap()
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case slices.Contains(MetadataAddrs, ip):
		return "a cloud metadata address"
	case ip.IsLinkLocalUnicast():
		return "link-local (where cloud metadata services live)"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast():
		return "multicast"
	}
	return ""
}

// isNumeric reports whether a hostname label reads as a number (decimal, or hex with 0x), as
// in the numeric IPv4 forms that inet_aton accepts.
func isNumeric(label string) bool {
	if l, ok := strings.CutPrefix(label, "0x"); ok {
		label = l
		for _, c := range label {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	}
	if label == "" {
		return false
	}
	for _, c := range label {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ValidateHostname checks that h is a lower-case DNS hostname without port.
func ValidateHostname(h string) error {
	if h == "" {
		return errors.New("is required")
	}
	if len(h) > 253 {
		return errors.New("is longer than 253 characters")
	}
	if h != strings.ToLower(h) {
		return fmt.Errorf("%q is not lower case", h)
	}
	for _, label := range strings.Split(h, ".") {
		if !validLabel(label) {
			return fmt.Errorf("%q is not a valid hostname", h)
		}
	}
	return nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, c := range l {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// RoutingPolicy tells DNS how to choose a PoP. It is stored under RoutingKey.
type RoutingPolicy struct {
	// Policy is "nearest" (default), "least-loaded", "weighted" or "latency" (lowest RTT
	// measured by real clients, geography where there are no measurements).
	Policy string `json:"policy" yaml:"policy"`
	// Explore is the share of clients with measurements that "latency" (and "nearest" where it
	// uses measurements) sends to the second-best PoP, so that its figure stays fresh: 0 means
	// 0.05, negative means none; at most 0.5.
	Explore float64 `json:"explore,omitempty" yaml:"explore,omitempty"`
	// RadiusKm bounds least-loaded to PoPs within this distance of the nearest (default 1500).
	RadiusKm float64 `json:"radius_km,omitempty" yaml:"radius_km,omitempty"`
	// LowWatermark and HighWatermark are utilisations between which nearest sheds load to
	// the next PoP in proportion (defaults 0.8 and 1.0).
	LowWatermark  float64 `json:"low_watermark,omitempty" yaml:"low_watermark,omitempty"`
	HighWatermark float64 `json:"high_watermark,omitempty" yaml:"high_watermark,omitempty"`
	// Weights per PoP id for the weighted policy.
	Weights map[string]float64 `json:"weights,omitempty" yaml:"weights,omitempty"`
}

// Validate reports the first problem with the policy, naming the field.
func (r RoutingPolicy) Validate() error {
	switch r.Policy {
	case "", "nearest", "least-loaded", "weighted", "latency":
	default:
		return &FieldError{Field: "policy", Err: fmt.Errorf("%q is not nearest, least-loaded, weighted or latency", r.Policy)}
	}
	if r.Explore > 0.5 {
		return &FieldError{Field: "explore", Err: errors.New("is more than 0.5")}
	}
	if r.RadiusKm < 0 {
		return &FieldError{Field: "radius_km", Err: errors.New("is negative")}
	}
	if r.LowWatermark < 0 || r.HighWatermark < 0 || (r.HighWatermark > 0 && r.LowWatermark > r.HighWatermark) {
		return &FieldError{Field: "low_watermark", Err: errors.New("must be between 0 and high_watermark")}
	}
	for pop, w := range r.Weights {
		if w < 0 {
			return &FieldError{Field: "weights." + pop, Err: errors.New("is negative")}
		}
	}
	return nil
}

// FieldError is a validation error that names the offending field and, when the value was
// read from a file, where it is. It is the one error type every Meridian reader of
// configuration, records and requests reports problems with.
type FieldError struct {
	File string // the file the value was read from; "" when not from a file
	// Line and Column are the 1-based position of the field in File; 0 when unknown.
	Line, Column int
	// Field is the path of the offending field, e.g. "pops[1].nodes[0].ipv4"; "" for the
	// whole document.
	Field string
	Err   error
}

// Error reads "file:line:column: field: problem", leaving out the parts that are unknown.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if e.File == "" {
			b.WriteString("line ")
		} else {
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrors is every problem found in one document, in the order found: readers report
// them all at once so that an operator fixes a file in one round.
type FieldErrors []*FieldError

// Error lists the problems one per line.
func (l FieldErrors) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.As find each *FieldError.
func (l FieldErrors) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Add appends a problem with field, formatted like fmt.Errorf (so %w wraps).
func (l *FieldErrors) Add(field, format string, args ...any) {
	*l = append(*l, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
}

// Err returns the list as an error, or nil when it is empty.
func (l FieldErrors) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// DecodeProblem is a problem a configuration decoder found (internal/yamlconf.Problem is
// one).
type DecodeProblem interface {
	error
	// Where is the problem's 1-based line and column (0 when unknown) and field path.
	Where() (line, column int, field string)
	// Undecoded: the field's value could not be decoded (a wrong type), so it holds nothing.
	Undecoded() bool
	// Whole: nothing of the document decoded (a syntax error).
	Whole() bool
}

// DocumentErrors is every problem of one configuration document read from file: what the
// decoder found, then what validate finds, except on fields whose value did not decode (it
// holds nothing, which validation would report again as missing) and not at all when nothing
// decoded (it would bury the syntax error under "is required"). pos places the validation
// problems in the file. Readers return DocumentErrors(...).Err().
func DocumentErrors[P DecodeProblem](file string, decoded []P, pos func(field string) (line, column int), validate func() FieldErrors) FieldErrors {
	var errs FieldErrors
	var undecoded []string
	whole := false
	for _, p := range decoded {
		line, column, field := p.Where()
		errs = append(errs, &FieldError{Line: line, Column: column, Field: field, Err: errors.New(p.Error())})
		if p.Undecoded() {
			undecoded = append(undecoded, field)
		}
		whole = whole || p.Whole()
	}
	if !whole && validate != nil {
		for _, e := range validate() {
			if !slices.ContainsFunc(undecoded, func(f string) bool { return within(e.Field, f) }) {
				errs = append(errs, e)
			}
		}
	}
	errs.Locate(file, pos)
	return errs
}

// within reports whether field is parent or inside it ("a.b" and "a[0]" are inside "a"; ""
// holds everything).
func within(field, parent string) bool {
	r, ok := strings.CutPrefix(field, parent)
	return ok && (parent == "" || r == "" || r[0] == '.' || r[0] == '[')
}

// Locate sets File on every problem, and Line and Column on those without a position, from
// pos (which returns 0, 0 for a field it cannot find: the problem then keeps no position).
func (l FieldErrors) Locate(file string, pos func(field string) (line, column int)) {
	for _, e := range l {
		e.File = file
		if e.Line == 0 && pos != nil {
			e.Line, e.Column = pos(e.Field)
		}
	}
}

// Version is the running binary's module version ("devel" when built from a work tree).
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" || bi.Main.Version == "(devel)" {
		return "devel"
	}
	return bi.Main.Version
}

// DrainPrefix starts the config-bucket keys that mark a PoP as drained by an operator.
const DrainPrefix = "drain."

// DrainKey is the key in ConfigBucket whose presence marks PoP pop as drained by an operator:
// "drain.<pop>". Its value is a Drain record.
func DrainKey(pop string) string { return DrainPrefix + pop }

// Drain is the value stored under DrainKey: who drained the PoP and when, for operators.
type Drain struct {
	PoP   string    `json:"pop"`
	Since time.Time `json:"since"`
}

// ValidatePoPID checks that id can name a PoP: one lower-case DNS label (it is used in NATS
// keys and in hostnames).
func ValidatePoPID(id string) error {
	if !validLabel(id) {
		return fmt.Errorf("%q is not a valid PoP id (one lower-case DNS label)", id)
	}
	return nil
}

// LoopbackHost reports whether host (a URL or listen address host, without port) names this
// machine only: "localhost" or a loopback address (127.0.0.0/8, ::1, IPv4-mapped forms).
// Processes use it to refuse sending or serving secrets in clear text anywhere else.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
