package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/meridian-cdn/meridian/internal/yamlconf"
	"github.com/meridian-cdn/meridian/wire"
)

// Config configures one edge node. The zero value of every field is its documented default;
// fields tagged yaml:"-" are for programs that embed the edge (tests, the simulator).
type Config struct {
	// PoP is the id of the point of presence the node belongs to. Default "local".
	PoP string `yaml:"pop"`
	// Node is the node's id, unique within its PoP. Default "edge-1".
	Node string `yaml:"node"`
	// Listen is the HTTP listen address. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// HTTPSListen serves HTTPS (HTTP/1.1 and HTTP/2) on TCP and HTTP/3 on UDP at the same
	// port; empty disables TLS. Certificates come from TLS.
	HTTPSListen string    `yaml:"https_listen"`
	TLS         TLSConfig `yaml:"tls"`
	// H2C serves cleartext HTTP/2 (prior knowledge) on Listen. Default off.
	H2C bool `yaml:"h2c"`
	// HTTP1 picks the server of plain HTTP/1.1 on Listen: "fast" (default) answers GET and
	// HEAD without a body on the edge's own fast path (edge/http1) and hands every other
	// connection to Go's net/http; "std" serves everything with net/http.
	HTTP1 string `yaml:"http1"`
	// HTTP2 picks the server of HTTP/2 on HTTPSListen: "fast" (default) is the edge's own
	// (edge/h2: one goroutine per connection, hits answered as they are read); "std" is Go's
	// net/http.
	HTTP2 string `yaml:"http2"`
	// AdminListen serves /healthz and /metrics. Default "127.0.0.1:9080"; "off" disables it.
	AdminListen string `yaml:"admin_listen"`
	// Hosts are the hostnames the node serves; any other Host gets 421.
	Hosts []wire.HostConfig `yaml:"hosts"`
	Cache CacheConfig       `yaml:"cache"`
	// Peers are the other nodes of this PoP (the node itself may be listed too). A miss goes to
	// the key's owner among them (rendezvous hashing) before going upstream.
	Peers []Peer `yaml:"peers"`
	// Shields maps a shield PoP id to its nodes, for hosts that name a shield.
	Shields map[string][]Peer `yaml:"shields"`
	// PeerKeyFile holds the secret (at least 32 bytes, surrounding white space ignored) that
	// signs fill requests between nodes configured by hand with Peers and Shields. A node
	// joined to a fleet uses the fleet's peer keyring from control instead. Without either,
	// fill requests from other nodes are answered as clients' and their answers are never
	// stored by the requester (docs/purge.md). Empty means none.
	PeerKeyFile string `yaml:"peer_key_file"`
	// PeerKey is PeerKeyFile's secret given directly (programs that embed the edge).
	PeerKey []byte `yaml:"-"`
	// Upstream tunes the client used for every origin and peer.
	Upstream UpstreamConfig `yaml:"upstream"`
	// PeerTimeout bounds a fill from one peer or shield node before the next is tried. It
	// includes the peer's own upstream fill, so it must exceed the time that fill may wait for
	// the origin's answer: shorter, an origin slower than it (a page that takes 6 s) is asked
	// by every shield node in turn and then by the edge itself, and the client waits for all
	// of them. It bounds the wait for the node's answer header too (upstream's
	// response_header_timeout is the origin's). Default upstream.response_header_timeout + 5s
	// (15s), at most half of fill_timeout.
	PeerTimeout time.Duration `yaml:"peer_timeout"`
	// FleetStaleTimeout bounds the only-if-cached fan-out to peers and shield when the origin
	// fails. Default 300ms.
	FleetStaleTimeout time.Duration `yaml:"fleet_stale_timeout"`
	// MaxRequestBodyBytes bounds request bodies passed to the origin. Default 10 MiB.
	MaxRequestBodyBytes int64 `yaml:"max_request_body_bytes"`
	// RequestBufferBytes is how much of a request body is buffered in memory; the rest of it,
	// up to MaxRequestBodyBytes, goes to a temporary file. A body is read whole before its
	// request takes an origin slot, so a slow client never holds one. Default 64 KiB.
	RequestBufferBytes int64 `yaml:"request_buffer_bytes"`
	// RequestBufferDir holds the temporary files of large request bodies. Default os.TempDir().
	RequestBufferDir string `yaml:"request_buffer_dir"`
	// RequestBodyTimeout bounds reading a whole request body from the client; a client that
	// is slower gets 408. Default 60s.
	RequestBodyTimeout time.Duration `yaml:"request_body_timeout"`
	// FillTimeout bounds one fill (every tier it tries) from the node's side: a fill runs
	// under the node's context, not its first client's, so it needs its own bound. Default 60s.
	FillTimeout time.Duration `yaml:"fill_timeout"`
	// PassTimeout bounds one exchange passed through to the origin (unsafe methods,
	// Authorization, cookies passed, event streams), streaming included. Default 1h.
	PassTimeout time.Duration `yaml:"pass_timeout"`
	// WebSocketIdleTimeout closes a WebSocket tunnel through which no byte passed either way
	// for this long, as nginx's proxy_read_timeout and Varnish's pipe_timeout do. Default 60s.
	WebSocketIdleTimeout time.Duration `yaml:"websocket_idle_timeout"`
	// TrustedProxies are the addresses (CIDRs, or single IPs) of proxies in front of the edge.
	// The Forwarded and X-Forwarded-* fields of a request from them are kept and appended to;
	// from anyone else they are replaced with the edge's own view. Default none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	trusted        []netip.Prefix
	// MaxHeaderBytes bounds request headers. Default 64 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// LameDuck is how long the node keeps serving after shutdown began, reporting itself
	// draining, so DNS and peers stop sending it traffic. Default 0.
	LameDuck time.Duration `yaml:"lame_duck"`
	// ShutdownTimeout bounds waiting for requests in flight at shutdown. Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// AccessLog writes one JSON line per request to the logger. Default off.
	AccessLog bool `yaml:"access_log"`
	// Pprof serves Go's profiles at /debug/pprof/ on the admin listener. Default off: profiles
	// expose internals and cost CPU, so an operator turns them on while investigating.
	Pprof bool `yaml:"pprof"`
	// Fleet joins a fleet through NATS; empty runs the node standalone.
	Fleet FleetConfig `yaml:"fleet"`
	// Purge bounds how far behind the fleet's purge stream the node may fall.
	Purge PurgeConfig `yaml:"purge"`
	// RTT controls the node's own RTT measurements of client connections for the latency
	// map (rtt.go). Default: measured.
	RTT RTTConfig `yaml:"rtt"`

	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger `yaml:"-"`
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time `yaml:"-"`
	// DialContext dials upstreams (origins, peers, shields). Default net.Dialer. The simulator
	// uses it to add WAN delay.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error) `yaml:"-"`
}

// CacheConfig bounds the store.
type CacheConfig struct {
	// MaxBytes bounds the memory held by cached objects. Default 256 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxObjectBytes is the largest object stored whole; larger ones are kept in slices (when
	// they have a validator) or stream through uncached. Default 8 MiB. A host's
	// cache.max_object_bytes overrides it.
	MaxObjectBytes int64 `yaml:"max_object_bytes"`
	// InFlightBytes bounds the memory that fills streaming bodies too large to keep hold
	// beyond 4 MiB each: within it a body is held from its start, so a client arriving late
	// still reads along; past it only 4 MiB ahead of the slowest reader is held. Default 64 MiB.
	InFlightBytes int64 `yaml:"in_flight_bytes"`
	// DecodeWindowBytes bounds the memory that the windows of answers decoded for clients
	// that do not accept their coding hold at once, node-wide: each decode is charged what
	// its decoder allocates for the window its stream declares (br up to 16 MiB, zstd up to
	// 8.25 MiB, gzip 32 KiB) until it ends, and one past the budget is answered 503 with
	// Retry-After. Default a quarter of MaxBytes, at least 16 MiB (one br stream of the
	// largest window).
	DecodeWindowBytes int64 `yaml:"decode_window_bytes"`
}

// minDecodeWindowBytes is the least default CacheConfig.DecodeWindowBytes: a br stream may
// declare a window of 16 MiB (RFC 7932 §9.1), and one such decode fits whatever max_bytes.
const minDecodeWindowBytes = 16 << 20

// PurgeConfig bounds staleness under partition (purge rule 5, docs/purge.md).
type PurgeConfig struct {
	// MaxLag is how long a node joined to a fleet may go without confirming that it applied
	// every purge published. Past it the node treats nothing in its cache as fresh (it
	// revalidates before serving) and reports itself not ready. Default 5s, at most 10m
	// (wire.MaxPurgeMaxLag).
	MaxLag time.Duration `yaml:"max_lag"`
}

// Peer is another edge node a fill may go to.
type Peer struct {
	ID   string `yaml:"id"`
	Addr string `yaml:"addr"` // host:port of its HTTP listener
}

// UpstreamConfig tunes timeouts, breakers and bulkheads for every upstream (origin.fetch
// defaults apply to zero fields).
type UpstreamConfig struct {
	DialTimeout           time.Duration `yaml:"dial_timeout"`            // default 2s
	TLSHandshakeTimeout   time.Duration `yaml:"tls_handshake_timeout"`   // default 3s
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"` // default 10s
	BodyTimeout           time.Duration `yaml:"body_timeout"`            // default 30s
	MaxConcurrent         int           `yaml:"max_concurrent"`          // default 64 per upstream
	QueueWait             time.Duration `yaml:"queue_wait"`              // default 50ms
	ConsecutiveFailures   uint32        `yaml:"consecutive_failures"`    // default 5 failures to reach it in a row (origin/fetch)
	FailureRatio          float64       `yaml:"failure_ratio"`           // default 0.5
	OpenTimeout           time.Duration `yaml:"open_timeout"`            // default 5s
}

// The servers of plain HTTP/1.1 (Config.HTTP1) and of HTTP/2 (Config.HTTP2).
const (
	HTTP1Fast = "fast"
	HTTP1Std  = "std"
	HTTP2Fast = "fast"
	HTTP2Std  = "std"
)

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.PoP, "local")
	def(&c.Node, "edge-1")
	def(&c.Listen, "127.0.0.1:8080")
	def(&c.AdminListen, "127.0.0.1:9080")
	def(&c.HTTP1, HTTP1Fast)
	def(&c.HTTP2, HTTP2Fast)
	if c.Cache.MaxBytes == 0 {
		c.Cache.MaxBytes = 256 << 20
	}
	if c.Cache.InFlightBytes == 0 {
		c.Cache.InFlightBytes = 64 << 20
	}
	if c.Cache.MaxObjectBytes == 0 {
		c.Cache.MaxObjectBytes = 8 << 20
	}
	if c.Cache.DecodeWindowBytes == 0 {
		// Within the headroom the memory limit leaves above a full store (0.3 x max_bytes,
		// command.go), and scaled with the memory the operator gave the cache.
		c.Cache.DecodeWindowBytes = max(c.Cache.MaxBytes/4, minDecodeWindowBytes)
	}
	if c.FleetStaleTimeout == 0 {
		c.FleetStaleTimeout = 300 * time.Millisecond
	}
	if c.MaxRequestBodyBytes == 0 {
		c.MaxRequestBodyBytes = 10 << 20
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.RequestBufferBytes == 0 {
		c.RequestBufferBytes = 64 << 10
	}
	if c.RequestBodyTimeout == 0 {
		c.RequestBodyTimeout = 60 * time.Second
	}
	if c.FillTimeout == 0 {
		c.FillTimeout = 60 * time.Second
	}
	if c.PeerTimeout == 0 {
		rh := c.Upstream.ResponseHeaderTimeout
		if rh <= 0 {
			rh = 10 * time.Second // origin/fetch's default
		}
		c.PeerTimeout = rh + 5*time.Second
		if c.FillTimeout > 0 { // else fill_timeout's own problem is reported
			// At most half the fill's time, so that one hung node leaves the fill time for
			// the next tier.
			c.PeerTimeout = min(c.PeerTimeout, c.FillTimeout/2)
		}
	}
	if c.PassTimeout == 0 {
		c.PassTimeout = time.Hour
	}
	if c.WebSocketIdleTimeout == 0 {
		c.WebSocketIdleTimeout = 60 * time.Second
	}
	c.trusted = nil
	for _, s := range c.TrustedProxies {
		if p, err := parsePrefix(s); err == nil {
			c.trusted = append(c.trusted, p)
		}
	}
	if c.TLS.ReloadInterval == 0 {
		c.TLS.ReloadInterval = 5 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Purge.MaxLag == 0 {
		c.Purge.MaxLag = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
}

// Validate reports every problem with the config at once, as wire.FieldErrors naming each
// field.
func (c *Config) Validate() error {
	var errs wire.FieldErrors
	bad := errs.Add
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		written := h.Host
		name, err := idnhost.ToASCII(written)
		if err != nil {
			bad(fmt.Sprintf("hosts[%d].host", i), "%w", err)
			continue
		}
		h.Host = name
		if err := validateHost(h, written); err != nil {
			var fe *wire.FieldError
			if errors.As(err, &fe) {
				bad(fmt.Sprintf("hosts[%d].%s", i, fe.Field), "%w", fe.Err)
			} else {
				bad(fmt.Sprintf("hosts[%d]", i), "%w", err)
			}
		}
		if seen[h.Host] {
			bad(fmt.Sprintf("hosts[%d].host", i), "%s is listed twice", idnhost.Quote(written, h.Host))
		}
		seen[h.Host] = true
	}
	if c.Cache.MaxBytes < 0 {
		bad("cache.max_bytes", "is negative")
	}
	if c.Cache.MaxObjectBytes < 0 {
		bad("cache.max_object_bytes", "is negative")
	}
	if c.Cache.InFlightBytes < 0 {
		bad("cache.in_flight_bytes", "is negative")
	}
	if c.Cache.DecodeWindowBytes < 0 {
		bad("cache.decode_window_bytes", "is negative")
	}
	if c.Purge.MaxLag < 0 {
		bad("purge.max_lag", "is negative")
	}
	if c.Purge.MaxLag > wire.MaxPurgeMaxLag {
		// A restart's new process holds its acks for the largest max_lag registered on the
		// node's key, up to this (fleet.go, ackHold).
		bad("purge.max_lag", "%v is more than %v", c.Purge.MaxLag, wire.MaxPurgeMaxLag)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"peer_timeout", c.PeerTimeout}, {"fleet_stale_timeout", c.FleetStaleTimeout},
		{"request_body_timeout", c.RequestBodyTimeout}, {"fill_timeout", c.FillTimeout},
		{"pass_timeout", c.PassTimeout}, {"shutdown_timeout", c.ShutdownTimeout},
		{"websocket_idle_timeout", c.WebSocketIdleTimeout},
		{"lame_duck", c.LameDuck}, {"tls.reload_interval", c.TLS.ReloadInterval},
		{"fleet.heartbeat", c.Fleet.Heartbeat}, {"fleet.ttl", c.Fleet.TTL},
		{"upstream.dial_timeout", c.Upstream.DialTimeout},
		{"upstream.tls_handshake_timeout", c.Upstream.TLSHandshakeTimeout},
		{"upstream.response_header_timeout", c.Upstream.ResponseHeaderTimeout},
		{"upstream.body_timeout", c.Upstream.BodyTimeout}, {"upstream.queue_wait", c.Upstream.QueueWait},
		{"upstream.open_timeout", c.Upstream.OpenTimeout},
	} {
		if d.v < 0 {
			bad(d.field, "is negative")
		}
	}
	if r := c.Upstream.FailureRatio; r < 0 || r > 1 {
		bad("upstream.failure_ratio", "%g is not between 0 and 1", r)
	}
	if c.MaxRequestBodyBytes < 0 {
		bad("max_request_body_bytes", "is negative")
	}
	if c.MaxHeaderBytes < 0 {
		bad("max_header_bytes", "is negative")
	}
	if c.HTTP1 != "" && c.HTTP1 != HTTP1Fast && c.HTTP1 != HTTP1Std {
		bad("http1", "is %q; want %q or %q", c.HTTP1, HTTP1Fast, HTTP1Std)
	}
	if c.HTTP2 != "" && c.HTTP2 != HTTP2Fast && c.HTTP2 != HTTP2Std {
		bad("http2", "is %q; want %q or %q", c.HTTP2, HTTP2Fast, HTTP2Std)
	}
	for i, p := range c.Peers {
		if p.ID == "" {
			bad(fmt.Sprintf("peers[%d].id", i), "is required")
		}
		if !wire.ValidHostPort(p.Addr) {
			bad(fmt.Sprintf("peers[%d].addr", i), "%q is not host:port", p.Addr)
		}
	}
	for pop, nodes := range c.Shields {
		for i, p := range nodes {
			if !wire.ValidHostPort(p.Addr) {
				bad(fmt.Sprintf("shields.%s[%d].addr", pop, i), "%q is not host:port", p.Addr)
			}
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not a CIDR or IP address", p)
		}
	}
	if c.RequestBufferBytes < 0 {
		bad("request_buffer_bytes", "is negative")
	}
	if c.HTTPSListen != "" && len(c.TLS.Certs) == 0 && !c.TLS.Dev {
		bad("tls", "https_listen needs tls.certs or tls.dev")
	}
	for i, cf := range c.TLS.Certs {
		if cf.Cert == "" || cf.Key == "" {
			bad(fmt.Sprintf("tls.certs[%d]", i), "needs both cert and key")
		}
	}
	if u := c.TLS.UnknownSNI; u != "" && u != "default" && u != "reject" {
		bad("tls.unknown_sni", "%q is not default or reject", u)
	}
	// The listeners in use. Each has SO_REUSEPORT (for restarts), so two on one port would both
	// bind and the kernel would split connections between their servers instead of refusing one.
	listeners := []struct{ field, addr string }{{"listen", c.Listen}}
	if c.AdminListen != "off" {
		listeners = append(listeners, struct{ field, addr string }{"admin_listen", c.AdminListen})
	}
	if c.HTTPSListen != "" {
		listeners = append(listeners, struct{ field, addr string }{"https_listen", c.HTTPSListen})
	}
	for j, b := range listeners {
		if !wire.ValidHostPort(b.addr) {
			bad(b.field, "%q is not host:port", b.addr)
		}
		for _, a := range listeners[:j] {
			if wire.SamePort(a.addr, b.addr) {
				bad(b.field, "%q is the same port as %s (%q)", b.addr, a.field, a.addr)
			}
		}
	}
	return errs.Err()
}

// parsePrefix parses a CIDR or a single address (as its /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// trustedProxy reports whether ip (a client's address) is a configured trusted proxy.
func (c *Config) trustedProxy(ip string) bool {
	if len(c.trusted) == 0 {
		return false // the default: no address to parse on every upstream request
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// configHosts returns a copy of hosts with every name in the form the edge serves and keys on,
// the one clients send in Host: lower case, with Unicode labels as their A-labels
// ("bücher.example" -> "xn--bcher-kva.example", idnhost.ToASCII). Only configured names are
// converted: a request's Host is taken as sent, so a client must send the A-label, as browsers
// and HTTP clients do. A name ToASCII refuses is left as it is, for Validate to report.
func configHosts(hosts []wire.HostConfig) []wire.HostConfig {
	out := slices.Clone(hosts)
	for i := range out {
		if name, err := idnhost.ToASCII(out[i].Host); err == nil {
			out[i].Host = name
		}
	}
	return out
}

// validateHost is h.Validate for a host whose name was converted from written (configHosts): a
// problem found in the ASCII form names the name as written too (idnhost.Wrap).
func validateHost(h wire.HostConfig, written string) error {
	err := h.Validate()
	var fe *wire.FieldError
	if errors.As(err, &fe) && fe.Field == "host" {
		return &wire.FieldError{Field: "host", Err: idnhost.Wrap(written, fe.Err)}
	}
	return err
}

// LoadConfig reads a YAML config file and checks it, reporting every problem at once as
// wire.FieldErrors with the file, line and column. Unknown fields are errors, so a typo never
// silently falls back to a default.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read edge config: %w", err)
	}
	var c Config
	doc, probs := yamlconf.Decode(data, &c)
	errs := wire.DocumentErrors(path, probs, doc.Position, func() wire.FieldErrors {
		// What New would refuse, found here where the file's positions are known.
		check := c
		check.setDefaults()
		var fes wire.FieldErrors
		errors.As(check.Validate(), &fes)
		return fes
	})
	if err := errs.Err(); err != nil {
		return Config{}, fmt.Errorf("edge config:\n%w", err)
	}
	// Converted once checked: Validate converts on its own, and names a name as written.
	c.Hosts = configHosts(c.Hosts)
	return c, nil
}
