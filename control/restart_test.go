package control

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// controlProcess runs `meridian control` against an external NATS and returns once it is ready.
func controlProcess(t *testing.T, bin, listen, natsURL string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "control", "--listen", listen, "--nats", natsURL, "--tokens", "testdata/tokens.yaml")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			if strings.Contains(sc.Text(), "control plane ready") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("control process did not become ready")
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestRestartUnderLoad: with an external NATS, API clients see no failed request while
// `meridian control` is replaced by a new process on the same port (SO_REUSEPORT).
func TestRestartUnderLoad(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "meridian")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/meridian-cdn/meridian").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	probe, err := net.Listen("tcp", "127.0.7.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()

	old := controlProcess(t, bin, addr, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/pops", nil)
				req.Header.Set("Authorization", "Bearer reader-secret-0123456789")
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
					if err != nil {
						firstErr.CompareAndSwap(nil, err.Error())
					} else {
						firstErr.CompareAndSwap(nil, r.Status)
					}
				}
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for ok.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	next := controlProcess(t, bin, addr, ns.ClientURL())
	if err := old.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := old.Wait(); err != nil {
		t.Errorf("old control exited with %v, want a clean exit", err)
	}
	wg.Wait()
	t.Logf("requests: %d ok, %d failed", ok.Load(), failed.Load())
	if ok.Load() < 200 {
		t.Errorf("only %d requests succeeded: the load did not run", ok.Load())
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the restart (first: %v)", n, firstErr.Load())
	}
	next.Process.Signal(syscall.SIGTERM)
	if err := next.Wait(); err != nil {
		t.Errorf("new control exited with %v", err)
	}
}
