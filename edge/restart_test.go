package edge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestRestartUnderLoad: 50 clients fetch for 10 s while the edge process is replaced by a new
// one on the same port (SO_REUSEPORT, drain, graceful stop): zero failed requests.
func TestRestartUnderLoad(t *testing.T) {
	bin := proctest.Build(t)
	_, originAddr := startOrigin(t, "127.0.0.10", nil)
	addr := freeAddr(t, "127.0.0.14")
	config := filepath.Join(t.TempDir(), "edge.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`pop: rst
node: e1
listen: %s
admin_listen: "off"
lame_duck: 1s
hosts:
  - host: %s
    origin: http://%s
`, addr, testHost, originAddr)), 0o600)

	old := proctest.Start(t, bin, "edge serving", "edge", "--config", config)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 50}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var n atomic.Int64
	load := proctest.RunLoad(ctx, 50, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/r%d?cc=max-age%%3D60", addr, n.Add(1)%200), nil)
		req.Host = testHost
		r, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != 200 {
			return fmt.Errorf("status %d", r.StatusCode)
		}
		return nil
	})
	load.WaitFor(t, 1000, 5*time.Second)
	next := proctest.Replace(t, old, "edge serving")
	load.Finish(t)
	if r := do(t, http.DefaultClient, http.MethodGet, addr, testHost, "/after?cc=max-age%3D60"); r.status != 200 {
		t.Errorf("new edge = %d", r.status)
	}
	proctest.Stop(t, next)
}
