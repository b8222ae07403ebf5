package dnsroute

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dnsProcess runs `meridian dns` and returns once it serves.
func dnsProcess(t *testing.T, bin, config string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "dns", "--config", config)
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
		var once sync.Once
		for sc.Scan() {
			if strings.Contains(sc.Text(), "dns serving") {
				once.Do(func() { close(serving) })
			}
		}
	}()
	select {
	case <-serving:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("dns process did not start serving")
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestRestartUnderLoad: resolvers querying while `meridian dns` is replaced by a new process on
// the same port (SO_REUSEPORT) get every answer. Like real resolvers they retry a query that
// got no answer in time (at most twice): a UDP query in the old socket's queue at the instant
// it closes is lost to the kernel and answered on the retry.
func TestRestartUnderLoad(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "meridian")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/meridian-cdn/meridian").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	probe, err := net.ListenPacket("udp", "127.0.2.201:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	yaml, err := os.ReadFile("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(yaml), "listen: 127.0.0.53:53", "listen: "+addr, 1)
	conf = strings.Replace(conf, "mmdb: test-city.mmdb", "mmdb: "+testMMDB(t, dir), 1)
	config := filepath.Join(dir, "dns.yaml")
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	old := dnsProcess(t, bin, config)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	var ok, failed, retried atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Timeout: 300 * time.Millisecond}
			m := new(dns.Msg)
			m.SetQuestion("www.cdn.example.", dns.TypeA)
			for ctx.Err() == nil {
				answered := false
				for attempt := 0; attempt < 3 && !answered; attempt++ {
					if attempt > 0 {
						retried.Add(1)
					}
					r, _, err := c.Exchange(m, addr)
					answered = err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0
				}
				if answered {
					ok.Add(1)
				} else if ctx.Err() == nil {
					failed.Add(1)
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, func() bool { return ok.Load() > 500 })
	next := dnsProcess(t, bin, config)
	if err := old.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := old.Wait(); err != nil {
		t.Errorf("old dns exited with %v, want a clean exit", err)
	}
	wg.Wait()
	t.Logf("queries: %d answered, %d unanswered after retries, %d retries", ok.Load(), failed.Load(), retried.Load())
	if n := failed.Load(); n != 0 {
		t.Errorf("%d queries went unanswered during the restart", n)
	}
	next.Process.Signal(syscall.SIGTERM)
	if err := next.Wait(); err != nil {
		t.Errorf("new dns exited with %v", err)
	}
}
