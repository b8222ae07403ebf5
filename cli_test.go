package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestMain removes the meridian binary the tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	proctest.Cleanup()
	os.Exit(code)
}

// TestCLIHelpAndErrors: every command's --help exits 0 with its usage on stdout; an unknown
// flag, command or argument exits non-zero with one "meridian: " line on stderr and nothing
// on stdout.
func TestCLIHelpAndErrors(t *testing.T) {
	bin := proctest.Build(t)
	for _, args := range [][]string{
		{}, {"edge"}, {"origin"}, {"control"}, {"control", "creds"}, {"control", "creds", "edge"},
		{"control", "creds", "dns"}, {"control", "creds", "list"}, {"control", "creds", "revoke"},
		{"dns"}, {"dns", "explain"}, {"deploy"}, {"deploy", "render"}, {"deploy", "validate"},
		{"purge"}, {"sim"}, {"version"},
	} {
		res := proctest.Run(t, 5*time.Second, bin, append(args, "--help")...)
		if res.Code != 0 || !strings.Contains(res.Stdout, "Usage:") || res.Stderr != "" {
			t.Errorf("%v --help: exit %d, stdout %q, stderr %q", args, res.Code, res.Stdout, res.Stderr)
		}
	}
	for _, args := range [][]string{
		{"edge", "--bogus"}, {"nosuch"}, {"version", "extra"}, {"origin", "extra"}, {"purge", "--url", "/x"},
	} {
		res := proctest.Run(t, 5*time.Second, bin, args...)
		if res.Code == 0 || res.Stdout != "" || !strings.HasPrefix(res.Stderr, "meridian: ") ||
			strings.Count(res.Stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, res.Code, res.Stdout, res.Stderr)
		}
	}
	if res := proctest.Run(t, 5*time.Second, bin, "version"); res.Code != 0 || !strings.HasPrefix(res.Stdout, "meridian ") {
		t.Errorf("version: exit %d, stdout %q", res.Code, res.Stdout)
	}
}

// TestSecondSignalExitsAtOnce: the first SIGTERM starts a graceful stop that waits for a
// request in flight (up to shutdown_timeout); a second one ends the process at once, of that
// signal, saying so. It used to be ignored, so the operator waited out shutdown_timeout.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	bin := proctest.Build(t)
	hit, release := make(chan struct{}, 1), make(chan struct{})
	originLn, err := net.Listen("tcp", "127.0.9.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
	edgeLn, err := net.Listen("tcp", "127.0.9.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := edgeLn.Addr().String()
	edgeLn.Close()
	config := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("listen: %s\nadmin_listen: \"off\"\nshutdown_timeout: 5m\nhosts:\n  - host: example.test\n    origin: http://%s\n",
		addr, originLn.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, lines := proctest.StartLines(t, bin, "edge", "--config", config)
	waitLine := func(s string) { t.Helper(); proctest.WaitLine(t, cmd, lines, s, 10*time.Second) }
	waitLine("edge serving")
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/slow", nil)
		req.Host = "example.test"
		if resp, err := (&http.Client{Timeout: time.Minute}).Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-hit:
	case <-time.After(10 * time.Second):
		t.Fatal("the edge never asked the origin")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLine("edge draining")
	// Signals of one kind do not queue: the second is sent once the first was handled.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var last string
	if rest := proctest.RestLines(t, cmd, lines, 10*time.Second); len(rest) > 0 {
		last = rest[len(rest)-1]
	}
	cmd.Wait()
	// Dead of SIGTERM itself, which systemd counts as a clean stop (an exit 143 it would
	// restart under Restart=on-failure), and a shell reports as 143.
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM || !strings.HasPrefix(last, "meridian: second signal") {
		t.Errorf("ended %v, last line of stderr %q; want killed by SIGTERM and meridian: second signal...", cmd.ProcessState, last)
	}
}

// TestHangupDoesNotKill: SIGHUP, which operators send by habit to make a daemon reload its
// configuration (nginx, NATS, Prometheus), neither reloads nor ends a meridian process: it
// says so on one line and keeps serving; SIGTERM then stops it cleanly. Go's default, which
// it had, ended the process at once: the edge dropped its requests in flight without
// draining, and systemd, which counts a death by SIGHUP as a clean stop, left it down.
func TestHangupDoesNotKill(t *testing.T) {
	bin := proctest.Build(t)
	edgeLn, err := net.Listen("tcp", "127.0.9.3:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := edgeLn.Addr().String()
	edgeLn.Close()
	config := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("listen: %s\nadmin_listen: \"off\"\n", addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, lines := proctest.StartLines(t, bin, "edge", "--config", config)
	waitLine := func(s string) { t.Helper(); proctest.WaitLine(t, cmd, lines, s, 10*time.Second) }
	waitLine("edge serving")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLine("meridian: SIGHUP ignored")
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET after SIGHUP: %v", err)
	}
	resp.Body.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil || cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("after SIGHUP then SIGTERM: %v (exit %d), want a clean exit 0", err, cmd.ProcessState.ExitCode())
	}
}

// TestHangupEndsCLI: a one-shot command keeps Go's default for SIGHUP and dies of it, as any
// command line tool does when its terminal goes away: only the servers (edge, origin,
// control, dns) log a hangup and go on. Ignored everywhere, a `meridian purge --wait` whose
// SSH session dropped went on without its terminal.
func TestHangupEndsCLI(t *testing.T) {
	bin := proctest.Build(t)
	hit := make(chan struct{}, 1)
	apiLn, err := net.Listen("tcp", "127.0.9.4:0")
	if err != nil {
		t.Fatal(err)
	}
	api := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hit <- struct{}{}:
		default:
		}
		<-r.Context().Done() // hold the purge until the client goes away
	})}
	go api.Serve(apiLn)
	defer api.Close()
	// A test run under nohup (or any parent that ignores SIGHUP) hands the command an ignored
	// SIGHUP, which Go keeps ignored, as it should: the command is started with SIGHUP at its
	// default instead, which a fork resets signals this process catches to.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	cmd, lines := proctest.StartLines(t, bin, "purge", "--api", "http://"+apiLn.Addr().String(),
		"--token", "t", "--host", "example.test", "--url", "/x", "--wait", "1m")
	signal.Stop(hup)
	select {
	case <-hit:
	case <-time.After(10 * time.Second):
		t.Fatal("meridian purge never asked the API")
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	got := proctest.RestLines(t, cmd, lines, 10*time.Second)
	cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGHUP {
		t.Errorf("meridian purge ended %v after SIGHUP (stderr %q), want killed by SIGHUP", cmd.ProcessState, got)
	}
}

// TestIgnoresHangup: the servers log and ignore SIGHUP, whatever their flags; a one-shot
// command, the servers' own one-shot subcommands included, does not.
func TestIgnoresHangup(t *testing.T) {
	root := newRoot()
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"edge", "--config", "edge.yaml"}, true},
		{[]string{"origin"}, true},
		{[]string{"origin", "--listen", "127.0.0.1:0"}, true},
		{[]string{"control", "--config", "control.yaml"}, true},
		{[]string{"dns", "--config", "dns.yaml"}, true},
		{[]string{"dns", "explain", "192.0.2.1"}, false},
		{[]string{"dns", "gen-mmdb", "x.mmdb"}, false},
		{[]string{"control", "creds", "list"}, false},
		{[]string{"purge", "--host", "h", "--all"}, false},
		{[]string{"deploy", "render", "fleet.yaml"}, false},
		{[]string{"sim", "--duration", "10s"}, false},
		{[]string{"version"}, false},
		{[]string{}, false},
		{[]string{"nosuch"}, false},
	} {
		if got := ignoresHangup(root, c.args); got != c.want {
			t.Errorf("ignoresHangup(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
