package edge

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/gcheadroom"
	"github.com/meridian-cdn/meridian/wire"
)

// TestLoadConfigReportsEveryProblemWithPosition: one file with an unknown field, a type error
// and bad values gets every problem back at once, each with file:line:column and its field,
// in the file's order: what did not decode came first, then the bad values in the order
// Validate checks them.
func TestLoadConfigReportsEveryProblemWithPosition(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	decode := write("decode.yaml", `listen: 127.0.0.2:8080
hosts:
  - host: www.example.com
    origin: http://127.0.0.1:9000
    orign: typo
cache:
  max_bytes: lots
`)
	values := write("values.yaml", `listen: nowhere
hosts:
  - host: www.example.com
    origin: http://127.0.0.1:9000
  - host: www.example.com
    origin: ftp://127.0.0.1
cache:
  max_bytes: -1
peers:
  - addr: 127.0.0.3:80
http1: nginx
http2: h2o
fill_timeout: -1s
`)
	mixed := write("mixed.yaml", `listen: nowhere
hosts:
  - host: www.example.com
    origin: http://127.0.0.1:9000
    orign: typo
cache:
  max_bytes: -1
`)
	tests := []struct {
		path string
		want []string // "line:col field", in order
	}{
		{decode, []string{"5:5 hosts[0].orign", "7:14 cache.max_bytes"}},
		{values, []string{"1:1 listen", "5:5 hosts[1].host", "6:5 hosts[1].origin", "8:3 cache.max_bytes", "10:5 peers[0].id", "11:1 http1", "12:1 http2", "13:1 fill_timeout"}},
		{mixed, []string{"1:1 listen", "5:5 hosts[0].orign", "7:3 cache.max_bytes"}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
			_, err := LoadConfig(tt.path)
			var fes wire.FieldErrors
			if !errors.As(err, &fes) {
				t.Fatalf("LoadConfig error = %v, want wire.FieldErrors", err)
			}
			var got []string
			for _, fe := range fes {
				if fe.File != tt.path {
					t.Errorf("%v: file %q, want %q", fe, fe.File, tt.path)
				}
				got = append(got, strings.Join([]string{strconv.Itoa(fe.Line) + ":" + strconv.Itoa(fe.Column), fe.Field}, " "))
			}
			if strings.Join(got, "; ") != strings.Join(tt.want, "; ") {
				t.Errorf("problems:\n  %s\nwant:\n  %s\n(error: %v)", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "), err)
			}
		})
	}
}

func TestMemoryLimit(t *testing.T) {
	var cfg Config
	cfg.setDefaults()
	limit, set := memoryLimit(cfg, "")
	if want := int64(256<<20)*130/100 + 64<<20 + memoryBaseline; !set || limit != want {
		t.Errorf("memoryLimit(defaults) = %d, %v; want %d (1.3 x max_bytes + in_flight_bytes + baseline)", limit, set, want)
	}
	if _, set := memoryLimit(cfg, "1GiB"); set {
		t.Error("memoryLimit overrode an operator's GOMEMLIMIT")
	}
}

// TestEdgeHeadroom checks the GOGC the edge sets as its live heap grows (internal/gcheadroom):
// a node serving hits keeps edgeGCPercent, a filling store gets 64 MiB of headroom instead of
// four times its size, and a full store a goal at its memory limit or above, so that the limit
// decides there as it did before.
func TestEdgeHeadroom(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		maxBytes int64
		at128    int // GOGC at 128 MiB live (0: more than the store holds)
	}{
		{0, 80}, // the default 256 MiB: 0.8 x 128 MiB is more than 64 MiB
		{64 * mib, 0},
		{1024 * mib, 50},
		{16384 * mib, 50},
	} {
		var cfg Config
		cfg.Cache.MaxBytes = tt.maxBytes
		cfg.setDefaults()
		c := edgeHeadroom(cfg)
		if got := gcheadroom.Percent(14*mib, 14*mib, c); got != edgeGCPercent {
			t.Errorf("max_bytes %d MiB: GOGC at 14 MiB live = %d, want %d", cfg.Cache.MaxBytes/mib, got, edgeGCPercent)
		}
		if got := gcheadroom.Percent(128*mib, 128*mib, c); tt.at128 != 0 && got != tt.at128 {
			t.Errorf("max_bytes %d MiB: GOGC at 128 MiB live = %d, want %d", cfg.Cache.MaxBytes/mib, got, tt.at128)
		}
		limit, _ := memoryLimit(cfg, "")
		full := cfg.Cache.MaxBytes
		if goal := full + full*int64(gcheadroom.Percent(full, full, c))/100; goal < limit {
			t.Errorf("max_bytes %d MiB: a full store's goal %d MiB is below the memory limit %d MiB",
				full/mib, goal/mib, limit/mib)
		}
	}
}

func TestGCPercent(t *testing.T) {
	tests := []struct {
		gogc, gomemlimit string
		want             int
		set              bool
	}{
		{"", "", edgeGCPercent, true}, // under the edge's own memory limit
		{"100", "", 0, false},         // the operator's GOGC stands
		{"", "off", 0, false},         // no limit of ours to cap a larger heap
		{"", "2GiB", 0, false},        // the operator's limit: their GOGC too
		{"off", "2GiB", 0, false},
	}
	for _, tt := range tests {
		if got, set := gcPercent(tt.gogc, tt.gomemlimit); got != tt.want || set != tt.set {
			t.Errorf("gcPercent(%q, %q) = %d, %v; want %d, %v", tt.gogc, tt.gomemlimit, got, set, tt.want, tt.set)
		}
	}
}

// TestPeerTimeoutDefault: a fill from a peer or shield node may wait as long as that node's own
// fill may wait for the origin's answer, and 5 s more, but at most half the fill's time; a
// value set stays.
func TestPeerTimeoutDefault(t *testing.T) {
	for _, tt := range []struct{ peer, header, fill, want time.Duration }{
		{0, 0, 0, 15 * time.Second},
		{0, 20 * time.Second, 0, 25 * time.Second},
		{2 * time.Second, 0, 0, 2 * time.Second},
		{0, 30 * time.Second, 0, 30 * time.Second}, // half of fill_timeout's 60 s
		{0, 30 * time.Second, 2 * time.Minute, 35 * time.Second},
	} {
		cfg := Config{PeerTimeout: tt.peer, FillTimeout: tt.fill, Upstream: UpstreamConfig{ResponseHeaderTimeout: tt.header}}
		cfg.setDefaults()
		if cfg.PeerTimeout != tt.want {
			t.Errorf("peer_timeout %v, response_header_timeout %v: default %v, want %v", tt.peer, tt.header, cfg.PeerTimeout, tt.want)
		}
	}
}

// TestLoadConfigDocumentedDefaults: an empty edge.yaml (every field may be left out) gets
// exactly the defaults docs/edge.md's configuration block states, so the two cannot drift.
func TestLoadConfigDocumentedDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	c.setDefaults() // what New applies
	for _, tt := range []struct {
		key       string
		got, want any
	}{
		{"pop", c.PoP, "local"},
		{"node", c.Node, "edge-1"},
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"https_listen", c.HTTPSListen, ""},
		{"tls.unknown_sni", c.TLS.UnknownSNI, ""}, // "" is "default": the first certificate
		{"tls.reload_interval", c.TLS.ReloadInterval, 5 * time.Second},
		{"tls.disable_http3", c.TLS.DisableHTTP3, false},
		{"tls.allow_0rtt", c.TLS.Allow0RTT, false},
		{"tls.dev", c.TLS.Dev, false},
		{"h2c", c.H2C, false},
		{"http1", c.HTTP1, "fast"},
		{"http2", c.HTTP2, "fast"},
		{"admin_listen", c.AdminListen, "127.0.0.1:9080"},
		{"pprof", c.Pprof, false},
		{"access_log", c.AccessLog, false},
		{"cache.max_bytes", c.Cache.MaxBytes, int64(256 << 20)},
		{"cache.max_object_bytes", c.Cache.MaxObjectBytes, int64(8 << 20)},
		{"cache.in_flight_bytes", c.Cache.InFlightBytes, int64(64 << 20)},
		{"cache.decode_window_bytes", c.Cache.DecodeWindowBytes, int64(64 << 20)},
		{"peer_timeout", c.PeerTimeout, 15 * time.Second}, // response_header_timeout (10s) + 5s
		{"fleet_stale_timeout", c.FleetStaleTimeout, 300 * time.Millisecond},
		{"max_request_body_bytes", c.MaxRequestBodyBytes, int64(10 << 20)},
		{"request_buffer_bytes", c.RequestBufferBytes, int64(64 << 10)},
		{"request_buffer_dir", c.RequestBufferDir, ""},
		{"request_body_timeout", c.RequestBodyTimeout, 60 * time.Second},
		{"fill_timeout", c.FillTimeout, 60 * time.Second},
		{"pass_timeout", c.PassTimeout, time.Hour},
		{"websocket_idle_timeout", c.WebSocketIdleTimeout, 60 * time.Second},
		{"max_header_bytes", c.MaxHeaderBytes, 64 << 10},
		{"lame_duck", c.LameDuck, time.Duration(0)},
		{"shutdown_timeout", c.ShutdownTimeout, 30 * time.Second},
		{"purge.max_lag", c.Purge.MaxLag, 5 * time.Second},
		{"rtt.disable", c.RTT.Disable, false},
		{"fleet.nats", c.Fleet.NATS, ""}, // standalone
		{"fleet.saturation.max_in_flight", saturationLimit(c.Fleet.Saturation), DefaultMaxInFlight},
		{"fleet.saturation.hit_latency_target", DefaultHitLatencyTarget, 20 * time.Millisecond},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: default %v, docs/edge.md says %v", tt.key, tt.got, tt.want)
		}
	}
}

// TestDecodeWindowBytesDefault: the decode budget defaults to a quarter of max_bytes, within
// the headroom the memory limit leaves above a full store, and at least one br stream's
// largest window (16 MiB); a value set is kept.
func TestDecodeWindowBytesDefault(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		maxBytes, set, want int64
	}{
		{0, 0, 64 * mib}, // the default 256 MiB store
		{1024 * mib, 0, 256 * mib},
		{32 * mib, 0, 16 * mib},
		{1024 * mib, 1 * mib, 1 * mib},
	} {
		var cfg Config
		cfg.Cache.MaxBytes, cfg.Cache.DecodeWindowBytes = tt.maxBytes, tt.set
		cfg.setDefaults()
		if got := cfg.Cache.DecodeWindowBytes; got != tt.want {
			t.Errorf("max_bytes %d MiB, decode_window_bytes %d: default %d MiB, want %d MiB", tt.maxBytes/mib, tt.set, got/mib, tt.want/mib)
		}
		if limit, _ := memoryLimit(cfg, ""); tt.set == 0 && cfg.Cache.MaxBytes+cfg.Cache.DecodeWindowBytes > limit {
			t.Errorf("max_bytes %d MiB: a full store and a full decode budget exceed the memory limit %d MiB", cfg.Cache.MaxBytes/mib, limit/mib)
		}
	}
}

// saturationLimit is the in-flight limit saturationFigure uses for c.
func saturationLimit(c SaturationConfig) int {
	if c.MaxInFlight == 0 {
		return DefaultMaxInFlight
	}
	return c.MaxInFlight
}

// TestLoadConfigRefusesNonsense: values that cannot mean anything are refused at load, each
// naming its field, instead of being taken silently (a negative tls.reload_interval made the
// certificate watcher's ticker panic after start-up; a negative max_request_body_bytes
// answered every request with a body 413; a port past 65535 failed only at listen).
func TestLoadConfigRefusesNonsense(t *testing.T) {
	for _, tt := range []struct{ yaml, field, msg string }{
		{"fill_timeout: 5\n", "fill_timeout", "cannot unmarshal"},
		{"cache:\n  max_bytes: 1GB\n", "cache.max_bytes", "cannot unmarshal"},
		{"cache:\n  max_bytes: -1\n", "cache.max_bytes", "is negative"},
		{"cache:\n  decode_window_bytes: -1\n", "cache.decode_window_bytes", "is negative"},
		{"tls:\n  reload_interval: -1s\n", "tls.reload_interval", "is negative"},
		{"lame_duck: -5s\n", "lame_duck", "is negative"},
		{"purge:\n  max_lag: 11m\n", "purge.max_lag", "11m0s is more than 10m0s"},
		{"max_request_body_bytes: -1\n", "max_request_body_bytes", "is negative"},
		{"max_header_bytes: -1\n", "max_header_bytes", "is negative"},
		{"upstream:\n  dial_timeout: -2s\n", "upstream.dial_timeout", "is negative"},
		{"upstream:\n  body_timeout: -1s\n", "upstream.body_timeout", "is negative"},
		{"upstream:\n  failure_ratio: 1.5\n", "upstream.failure_ratio", "not between 0 and 1"},
		{"upstream:\n  failure_ratio: -0.5\n", "upstream.failure_ratio", "not between 0 and 1"},
		{"fleet:\n  heartbeat: -1s\n", "fleet.heartbeat", "is negative"},
		{"fleet:\n  ttl: -3s\n", "fleet.ttl", "is negative"},
		{"listen: 127.0.0.1:99999\n", "listen", "not host:port"},
		{"admin_listen: 127.0.0.1:65536\n", "admin_listen", "not host:port"},
		{"https_listen: nowhere\ntls:\n  dev: true\n", "https_listen", "not host:port"},
		{"peers:\n  - {id: a, addr: 10.0.0.1:123456}\n", "peers[0].addr", "not host:port"},
		// Every listener has SO_REUSEPORT, so two of them on one port both bind, and the
		// kernel splits connections between them (health checks got 421, clients 404).
		{"listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:8080\n", "admin_listen", "same port as listen"},
		{"listen: 0.0.0.0:8443\nhttps_listen: 127.0.0.1:8443\ntls:\n  dev: true\n", "https_listen", "same port as listen"},
		{"https_listen: '[::]:9080'\ntls:\n  dev: true\n", "https_listen", "same port as admin_listen"},
		{"colour: blue\n", "colour", "unknown field"},
	} {
		p := filepath.Join(t.TempDir(), "edge.yaml")
		if err := os.WriteFile(p, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(p)
		var fes wire.FieldErrors
		if !errors.As(err, &fes) {
			t.Errorf("%q: error %v, want a problem with %s", tt.yaml, err, tt.field)
			continue
		}
		found := false
		for _, fe := range fes {
			if fe.Field == tt.field && fe.File == p && fe.Line > 0 && strings.Contains(fe.Error(), tt.msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: problems %v, want %s: ...%s... at its line", tt.yaml, err, tt.field, tt.msg)
		}
	}
}

// TestLoadConfigRefusesFractionalIntegers: yaml.v3 cut a float into an integer field without
// a word (max_concurrent: 1.5 ran with 1, a host's max_object_bytes: 1048576.5 with 1048576);
// the operator gets the value back as a problem at its place, once (-1.0 into a uint32 was
// refused already). An integral float is that integer.
func TestLoadConfigRefusesFractionalIntegers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edge.yaml")
	bad := `upstream:
  max_concurrent: 1.5
  consecutive_failures: -1.0
hosts:
  - host: www.example.com
    origin: http://127.0.0.1:9000
    cache: {max_object_bytes: 1048576.5}
`
	if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(p)
	want := "edge config:\n" +
		p + ":2:19: upstream.max_concurrent: cannot unmarshal !!float `1.5` into int\n" +
		p + ":3:25: upstream.consecutive_failures: cannot unmarshal !!float `-1.0` into uint32\n" +
		p + ":7:31: hosts[0].cache.max_object_bytes: cannot unmarshal !!float `1048576.5` into int64"
	if err == nil || err.Error() != want {
		t.Errorf("LoadConfig error:\n%v\nwant:\n%s", err, want)
	}

	if err := os.WriteFile(p, []byte("upstream:\n  max_concurrent: 2.0\ncache:\n  max_bytes: 1e9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil || c.Upstream.MaxConcurrent != 2 || c.Cache.MaxBytes != 1e9 {
		t.Errorf("LoadConfig = max_concurrent %d, max_bytes %d, %v; want 2, 1e9", c.Upstream.MaxConcurrent, c.Cache.MaxBytes, err)
	}
}
