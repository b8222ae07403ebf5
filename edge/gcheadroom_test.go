package edge

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/gcheadroom"
	"github.com/meridian-cdn/meridian/internal/proctest"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// TestCommandGCHeadroom runs `meridian edge` as a newcomer does (a config with one host) and
// reads its GOGC from /metrics: 400 while it holds little, less once its store holds about
// 48 MiB, so that the heap's headroom for garbage is not four times the store
// (internal/gcheadroom), but never below what keeps a full store's goal at the memory limit.
func TestCommandGCHeadroom(t *testing.T) {
	// The edge tunes GOGC only when the operator set neither: the test's own environment
	// must not decide for it.
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	bin := proctest.Build(t)
	_, originAddr := startOrigin(t, "127.0.0.24", nil)
	addr, admin := freeAddr(t, "127.0.0.25"), freeAddr(t, "127.0.0.26")
	config := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`listen: %s
admin_listen: %q
hosts:
  - host: %s
    origin: http://%s
`, addr, admin, testHost, originAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := proctest.Start(t, bin, "edge serving", "edge", "--config", config)
	defer proctest.Stop(t, cmd)

	if p := gogcOf(t, admin); p != edgeGCPercent {
		t.Fatalf("GOGC of an empty edge = %d, want %d", p, edgeGCPercent)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	fetch := func(i int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/o%d?size=524288&cc=max-age%%3D3600", addr, i), nil)
		req.Host = testHost
		r, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK || n != 524288 {
			t.Fatalf("GET o%d: status %d, %d bytes", i, r.StatusCode, n)
		}
	}
	// 96 objects of 512 KiB stay in the store (256 MiB by default): 48 MiB of live heap asks
	// for GOGC 134 at most. More objects are fetched until a collection has seen them.
	var cfg Config
	cfg.setDefaults()
	least := gcheadroom.Percent(cfg.Cache.MaxBytes, cfg.Cache.MaxBytes, edgeHeadroom(cfg))
	i := 0
	for ; i < 96; i++ {
		fetch(i)
	}
	var p int
	wait.For(t, 30*time.Second, "GOGC below 400 with objects of 512 KiB stored", func() bool {
		if p = gogcOf(t, admin); p < edgeGCPercent {
			return true
		}
		fetch(i)
		i++
		return false
	})
	if p < least {
		t.Fatalf("GOGC %d, below the %d a full store gets", p, least)
	}
}

// gogcOf reads go_gc_gogc_percent from the admin listener's /metrics.
func gogcOf(t *testing.T, admin string) int {
	t.Helper()
	r, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_gc_gogc_percent "); ok {
			p, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("go_gc_gogc_percent %q: %v", v, err)
			}
			return int(p)
		}
	}
	t.Fatal("no go_gc_gogc_percent in /metrics")
	return 0
}
