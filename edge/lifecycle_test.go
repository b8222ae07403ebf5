package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestNATSUnreachableLogged: an edge whose NATS server refuses connections keeps serving and
// retrying, and says so naming the server (it used to log only "nats not connected"); SIGTERM
// still stops it cleanly.
func TestNATSUnreachableLogged(t *testing.T) {
	bin := proctest.Build(t)
	closed, err := net.Listen("tcp", "127.0.7.3:0")
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := closed.Addr().String()
	closed.Close()
	cmd := proctest.StartWithin(t, 5*time.Second, bin, `"nats":"nats://`+natsAddr+`"`,
		"edge", "--listen", "127.0.7.3:0", "--admin-listen", "off", "--nats", "nats://"+natsAddr)
	proctest.Stop(t, cmd)
}

// TestListenersOnOnePortRefused: an admin listener on the HTTP listener's port is a mistake the
// edge refuses at start, with one line naming the field. With SO_REUSEPORT on both sockets it
// used to start, and the kernel split connections between the two servers: clients got the
// admin listener's 404s and health checks the edge's 421s.
func TestListenersOnOnePortRefused(t *testing.T) {
	bin := proctest.Build(t)
	addr := freeAddr(t, "127.0.7.7")
	res := proctest.Run(t, 5*time.Second, bin, "edge", "--listen", addr, "--admin-listen", addr)
	lines := strings.Split(strings.TrimSpace(res.Stderr), "\n")
	if last := lines[len(lines)-1]; res.Code != 1 || !strings.HasPrefix(last, "meridian: ") ||
		!strings.Contains(last, "admin_listen") || !strings.Contains(last, "same port as listen") {
		t.Errorf("exit %d, last line of stderr %q; want 1 and admin_listen: ...same port as listen...", res.Code, last)
	}
}

// TestShutdownTimeoutSaysSo: a request still in flight when shutdown_timeout ends makes the
// stop unclean (exit 1), and the one error line says why, naming shutdown_timeout; it used to
// say only "edge shutdown: context deadline exceeded".
func TestShutdownTimeoutSaysSo(t *testing.T) {
	bin := proctest.Build(t)
	hit, release := make(chan struct{}, 1), make(chan struct{})
	originLn := listen(t, "127.0.7.8")
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hit <- struct{}{}:
		default:
		}
		select { // hold the edge's request until the test ends
		case <-release:
		case <-r.Context().Done():
		}
	})}
	go origin.Serve(originLn)
	defer origin.Close()
	defer close(release)
	addr := freeAddr(t, "127.0.7.8")
	config := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("listen: %s\nadmin_listen: \"off\"\nshutdown_timeout: 200ms\nhosts:\n  - host: %s\n    origin: http://%s\n",
		addr, testHost, originLn.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, lines := proctest.StartLines(t, bin, "edge", "--config", config)
	for l := range lines {
		if strings.Contains(l, "edge serving") {
			break
		}
	}
	go tryDo(&http.Client{Timeout: 10 * time.Second}, http.MethodGet, addr, testHost, "/slow")
	select {
	case <-hit:
	case <-time.After(10 * time.Second):
		t.Fatal("the edge never asked the origin")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var last string
	for l := range lines {
		last = l
	}
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.HasPrefix(last, "meridian: ") ||
		!strings.Contains(last, "shutdown_timeout") {
		t.Errorf("exit %d (%v), last line of stderr %q; want 1 and a line naming shutdown_timeout", code, err, last)
	}
}

// TestStopBeforeServing: a fleet node stopped before its servers started (a SIGTERM right after
// "edge serving" on a loaded machine) stops cleanly: no error, no warning, and every TCP
// listener closed. The registrar's first heartbeat, cut short by the stop, was logged as
// "fleet heartbeat failing ... context canceled"; and the HTTP/1.1 fast path's Serve, run after
// its Shutdown, returned without closing its listener, which stayed bound and queued
// connections nobody would accept.
func TestStopBeforeServing(t *testing.T) {
	url, _, _ := startNATS(t)
	creds := edgeCreds(t, url, "s1", "n1")
	for i := range 10 {
		var w logtest.Warnings
		n, err := New(Config{PoP: "s1", Node: "n1", TLS: TLSConfig{Dev: true}, Logger: slog.New(&w),
			Fleet: FleetConfig{NATS: url, Creds: creds}})
		if err != nil {
			t.Fatal(err)
		}
		https, quicConn, err := listenHTTPS(context.Background(), "127.0.7.11:0", true)
		if err != nil {
			t.Fatal(err)
		}
		ls := Listeners{HTTP: listen(t, "127.0.7.11"), HTTPS: https, QUIC: quicConn, Admin: listen(t, "127.0.7.11")}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // stopped before the serving goroutines ran
		if err := n.ServeListeners(ctx, ls); err != nil {
			t.Fatalf("run %d: stopped before serving: %v", i, err)
		}
		if c := w.Count(""); c != 0 {
			t.Errorf("run %d: %d warnings logged (%d of a failing heartbeat), want none", i, c, w.Count("fleet heartbeat failing"))
		}
		for name, ln := range map[string]net.Listener{"http": ls.HTTP, "https": ls.HTTPS, "admin": ls.Admin} {
			if c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); err == nil {
				c.Close()
				ln.Close()
				t.Errorf("run %d: %s listener still accepts connections after the stop", i, name)
			}
		}
		if err := quicConn.Close(); !errors.Is(err, net.ErrClosed) { // ServeListeners's to close
			t.Errorf("run %d: closing the HTTP/3 socket after the stop = %v, want net.ErrClosed (closed already)", i, err)
		}
	}
}
