package edge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// buildMeridian builds the meridian binary for tests that run it as a process.
func buildMeridian(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meridian")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/meridian-cdn/meridian")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// edgeProcess runs `meridian edge` and returns once it serves.
func edgeProcess(t *testing.T, bin, config string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "edge", "--config", config)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "edge serving") {
				once.Do(func() { close(serving) })
			}
		}
	}()
	select {
	case <-serving:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("edge process did not start serving")
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// TestRestartUnderLoad: 50 clients fetch for 10 s while the edge process is replaced by a new
// one on the same port (SO_REUSEPORT, drain, graceful stop): zero failed requests.
func TestRestartUnderLoad(t *testing.T) {
	bin := buildMeridian(t)
	_, originAddr := startOrigin(t, "127.0.0.10", nil)
	probe := listen(t, "127.0.0.14")
	addr := probe.Addr().String()
	probe.Close()
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

	old := edgeProcess(t, bin, config)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 50}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for c := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/r%d?cc=max-age%%3D60", addr, (c*7+i)%200), nil)
				req.Host = testHost
				r, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
				}
				switch {
				case err == nil && r.StatusCode == 200:
					ok.Add(1)
				case ctx.Err() != nil:
					return
				default:
					failed.Add(1)
					if err == nil {
						err = fmt.Errorf("status %d", r.StatusCode)
					}
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, "load running", func() bool { return ok.Load() > 1000 })
	next := edgeProcess(t, bin, config) // binds the same port while the old one still serves
	if err := old.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := old.Wait(); err != nil {
		t.Errorf("old edge exited with %v, want a clean exit", err)
	}
	wg.Wait()
	t.Logf("requests: %d ok, %d failed", ok.Load(), failed.Load())
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the restart (first: %v)", n, firstErr.Load())
	}
	// The new process serves on its own.
	if r := do(t, http.DefaultClient, http.MethodGet, addr, testHost, "/after?cc=max-age%3D60"); r.status != 200 {
		t.Errorf("new edge = %d", r.status)
	}
	next.Process.Signal(syscall.SIGTERM)
	if err := next.Wait(); err != nil {
		t.Errorf("new edge exited with %v", err)
	}
}
