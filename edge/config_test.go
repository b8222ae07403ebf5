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
// and bad values gets every problem back at once, each with file:line:column and its field.
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
	tests := []struct {
		path string
		want []string // "line:col field", in order
	}{
		{decode, []string{"5:5 hosts[0].orign", "7:14 cache.max_bytes"}},
		{values, []string{"6:5 hosts[1].origin", "5:5 hosts[1].host", "8:3 cache.max_bytes", "13:1 fill_timeout", "11:1 http1", "12:1 http2", "10:5 peers[0].id", "1:1 listen"}},
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
