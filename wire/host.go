package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

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
	// OriginURLs says what becomes of a Location, Content-Location or Refresh URL that names
	// the origin: "rewrite" (the default, as nginx's proxy_redirect default) gives it to the
	// client as the host's own; "keep" passes it on as the origin wrote it (proxy_redirect
	// off; Varnish's behaviour), for an origin that sends clients to itself on purpose.
	OriginURLs string `json:"origin_urls,omitempty" yaml:"origin_urls,omitempty"`
}

// Modes of ResponseHeaders.OriginURLs.
const (
	OriginURLsRewrite = "rewrite"
	OriginURLsKeep    = "keep"
)

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

// checkSetNew is what ValidateNew asks of a set map beyond checkSet: no hop-by-hop field, and
// no field twice in another case (the edge sets them in map order, so which value won would
// change from one request to the next).
func checkSetNew(field string, set map[string]string) error {
	names := make([]string, 0, len(set))
	for k := range set {
		names = append(names, k)
	}
	sort.Strings(names)
	seen := make(map[string]string, len(names))
	for _, k := range names {
		lk := strings.ToLower(k)
		if slices.Contains(hopByHopFields, lk) {
			return &FieldError{Field: field + "." + k, Err: fmt.Errorf("%q is a hop-by-hop field", k)}
		}
		if other, dup := seen[lk]; dup {
			return &FieldError{Field: field + "." + k, Err: fmt.Errorf("names the same field as %q (field names are case-insensitive)", other)}
		}
		seen[lk] = k
	}
	return nil
}

// hopByHopFields are the RFC 9110 §7.6.1 hop-by-hop fields besides the fixed ones, which the
// edge strips from what it forwards (httpcache.RemoveHopByHop): a host's policy may deny them,
// but not set them on every request or answer.
var hopByHopFields = []string{"keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization"}

// checkSet validates a set map for field: field names, and values without control characters.
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
		// RFC 9110 §5.5: no control character but HTAB. net/http refuses a request or answer
		// with one, so a host whose set value held one failed every fill.
		if i := strings.IndexFunc(set[k], func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }); i >= 0 {
			return &FieldError{Field: field + "." + k, Err: fmt.Errorf("value holds control character %q at byte %d", set[k][i], i)}
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
	switch p.OriginURLs {
	case "", OriginURLsRewrite, OriginURLsKeep:
	default:
		return &FieldError{Field: "response_headers.origin_urls", Err: fmt.Errorf("%q is not rewrite or keep", p.OriginURLs)}
	}
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
	// SliceThresholdBytes: an object with a strong ETag larger than this and than the host's
	// object size limit (max_object_bytes) is cached in slices; 0 means max_object_bytes. An
	// object within max_object_bytes is kept whole: a lower threshold changes nothing.
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

// ValidateNew is Validate and the rules added after host configs were first stored: a config
// must meet them to be written (control's API, fleet.PutHost), but one already stored, read
// back by an upgraded node (fleet.DecodeHostConfig) or from an edge's file, is held to
// Validate only, since refusing it there would take a site that served off the fleet.
func (h HostConfig) ValidateNew() error {
	if err := h.Validate(); err != nil {
		return err
	}
	if err := validateOriginNew(h.Origin); err != nil {
		return &FieldError{Field: "origin", Err: err}
	}
	for i, name := range h.Cache.KeepParams {
		// A query parameter's name as a client sends it: one that is empty or holds a
		// separator or white space can match none, and the key would silently keep nothing.
		if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune("&=#?", r) }) {
			return &FieldError{Field: fmt.Sprintf("cache.keep_params[%d]", i), Err: fmt.Errorf("%q is not a query parameter name (no white space, &, =, # or ?)", name)}
		}
	}
	if h.OriginHost != "" {
		if err := validateOriginHost(h.OriginHost); err != nil {
			return &FieldError{Field: "origin_host", Err: err}
		}
	}
	if err := checkSetNew("request_headers.set", h.RequestHeaders.Set); err != nil {
		return err
	}
	return checkSetNew("response_headers.set", h.ResponseHeaders.Set)
}

// validateOriginNew is what ValidateNew asks of an origin beyond ValidateOrigin. Its host must
// be ASCII: net/http dials a Unicode host by its IDNA form, which maps fullwidth digits and
// dots (and many other look-alikes) to ASCII, so "１６９．２５４．１６９．２５４" reaches
// 169.254.169.254 past every check of ValidateOrigin, which cannot map names as IDNA does.
// An internationalised name is given in its xn-- form. Its port, if any, must be one a fill
// can dial.
func validateOriginNew(origin string) error {
	u, err := url.Parse(origin)
	if err != nil {
		return err // ValidateOrigin reported it already
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		// Ignored by every fill (the client's query is sent): refuse it rather than drop it.
		return errors.New("must not have a query or fragment: fills send the client's query after the origin's path")
	}
	if h := u.Hostname(); strings.ContainsFunc(h, func(r rune) bool { return r >= 0x80 }) {
		return fmt.Errorf("host %q is not ASCII: give an internationalised name in its ASCII (xn--) form", h)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %s is not from 1 to 65535", p)
		}
	}
	return nil
}

// validateOriginHost checks a Host header value for the origin: a hostname (letters of either
// case, digits, '-', '_', dots) or an IP literal ("[2001:db8::1]" for IPv6), with an optional
// port. net/http sends an empty Host instead of one that is not a valid header value, so an
// origin_host with a space or a control character would have taken the host's name from every
// request to its origin.
func validateOriginHost(h string) error {
	bad := fmt.Errorf("%q is not a host or host:port", h)
	u, err := url.Parse("http://" + h)
	if err != nil || u.Host != h || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" ||
		strings.HasSuffix(h, ":") {
		return bad
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad
		}
	}
	name := u.Hostname()
	if strings.HasPrefix(h, "[") {
		if ip, err := netip.ParseAddr(name); err != nil || !ip.Is6() {
			return bad
		}
		return nil
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return nil
	}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if l == "" || len(l) > 63 || strings.IndexFunc(l, func(r rune) bool {
			// A name in Unicode ("bücher.example") is sent in its ASCII form (net/http).
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' ||
				r >= 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)))
		}) >= 0 {
			return bad
		}
	}
	return nil
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
	for label := range strings.SplitSeq(h, ".") { // every edge checks every purge's: no slice
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
