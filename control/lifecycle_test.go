package control

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestEmbeddedNATSPortInUse: `meridian control` whose embedded NATS port is taken exits at
// once, non-zero, with one line naming the address and the bind error (it used to wait 30 s
// and then say only "did not start").
func TestEmbeddedNATSPortInUse(t *testing.T) {
	bin := proctest.Build(t)
	taken, err := net.Listen("tcp", "127.0.7.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	api, err := net.Listen("tcp", "127.0.7.2:0")
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := api.Addr().String()
	api.Close()
	res := proctest.Run(t, 5*time.Second, bin, "control", "--tokens", "testdata/tokens.yaml",
		"--store-dir", t.TempDir(), "--listen", apiAddr, "--nats-listen", taken.Addr().String())
	if res.Code != 1 {
		t.Errorf("exit code %d, want 1", res.Code)
	}
	lines := strings.Split(strings.TrimSpace(res.Stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "meridian: ") || !strings.Contains(last, taken.Addr().String()) ||
		!strings.Contains(last, "address already in use") {
		t.Errorf("last line of stderr %q, want the NATS address and \"address already in use\"", last)
	}
}

// natsWithoutJetStream runs a NATS server on host without JetStream until the test ends:
// control connects and then waits for its buckets, retrying.
func natsWithoutJetStream(t *testing.T, host string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: host, Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns
}

// TestStopWhileWaitingForJetStream: SIGTERM while control still waits for JetStream to create
// its buckets (a cluster without a meta leader, here a server without JetStream) is an
// operator's stop, not a failure: exit 0. It exited 1 with "context canceled", which systemd
// records as the unit failing.
func TestStopWhileWaitingForJetStream(t *testing.T) {
	bin := proctest.Build(t)
	ns := natsWithoutJetStream(t, "127.0.7.6")
	cmd := proctest.Start(t, bin, "creating buckets and streams failed; retrying", "control",
		"--listen", "127.0.7.6:0", "--nats", ns.ClientURL(), "--tokens", "testdata/tokens.yaml")
	proctest.Stop(t, cmd)
}

// TestAPIAnswersWhileStarting: while control waits for JetStream (here a NATS server without
// it), its API port answers: /healthz 503 "starting" as the API spec says, any other route 503.
// It accepted connections and answered nothing until ready, so a load balancer's probe timed
// out instead of reading "starting".
func TestAPIAnswersWhileStarting(t *testing.T) {
	addr, stop := serveStarting(t, "127.0.7.8")
	client := &http.Client{Timeout: 3 * time.Second}
	defer client.CloseIdleConnections()
	for _, tc := range []struct{ path, want string }{
		{"/healthz", `"starting"`},
		{"/v1/pops", "starting"},
	} {
		res, err := client.Get("http://" + addr + tc.path)
		if err != nil {
			t.Errorf("GET %s while starting: %v", tc.path, err)
			continue
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s while starting = %d %s, want 503 with %s", tc.path, res.StatusCode, body, tc.want)
		}
	}
	stop()
}

// TestEveryRouteAnswers503WhileStarting: every route answers 503 while control starts, and the
// API spec lists 503 for every operation (four of them lacked it).
func TestEveryRouteAnswers503WhileStarting(t *testing.T) {
	spec, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"` // operations, and parameters
	}
	if err := yaml.Unmarshal(spec, &doc); err != nil {
		t.Fatal(err)
	}
	addr, stop := serveStarting(t, "127.0.7.10")
	defer stop()
	routes, err := New(Config{TokensFile: "testdata/tokens.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 3 * time.Second}
	defer client.CloseIdleConnections()
	for _, r := range routes.Routes() {
		method, path, _ := strings.Cut(r.Pattern, " ")
		var op struct {
			Responses map[string]yaml.Node `yaml:"responses"`
		}
		node := doc.Paths[path][strings.ToLower(method)]
		if err := node.Decode(&op); err != nil {
			t.Fatalf("the spec's %s: %v", r.Pattern, err)
		}
		if _, ok := op.Responses["503"]; !ok {
			t.Errorf("the spec lists no 503 for %s", r.Pattern)
		}
		req, err := http.NewRequest(method, "http://"+addr+strings.NewReplacer("{", "", "}", "").Replace(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokAdmin)
		res, err := client.Do(req)
		if err != nil {
			t.Errorf("%s while starting: %v", r.Pattern, err)
			continue
		}
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s while starting = %d, want 503", r.Pattern, res.StatusCode)
		}
	}
}

// serveStarting serves a control whose NATS server (on ip) has no JetStream, so that it stays
// starting, on ip; stop ends it and checks that Serve returns nil within 10 s.
func serveStarting(t *testing.T, ip string) (addr string, stop func()) {
	t.Helper()
	ns := natsWithoutJetStream(t, ip)
	s, err := New(Config{NATSURL: ns.ClientURL(), TokensFile: "testdata/tokens.yaml", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	return ln.Addr().String(), func() {
		t.Helper()
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve stopped while starting = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return within 10 s of its context's end")
		}
	}
}

// TestUnauthenticatedBodyIsNotReadAhead: a chunked body sent to /healthz, which needs no
// token, is not read ahead, while control starts or once it runs: /healthz answers with 300
// KiB of a chunk of 1 MiB - 1 sent (under --max-body-bytes) and the rest still to come, and
// net/http reads at most 256 KiB of it, kept nowhere, before the answer closes the
// connection, as after a 401. Read ahead, anyone could have control read and hold up to
// --max-body-bytes per request (and /healthz waited here for the rest of the chunk).
func TestUnauthenticatedBodyIsNotReadAhead(t *testing.T) {
	addr, stop := serveStarting(t, "127.0.7.9")
	healthzWithBodyComing(t, "starting", addr, http.StatusServiceUnavailable)
	stop()

	// The spec check in front of the API reads every body: without it, what control reads shows.
	ts := startServer(t, Config{}, func(s *Server) { s.wrapAPI = nil })
	healthzWithBodyComing(t, "running", strings.TrimPrefix(ts.base, "http://"), http.StatusOK)
}

// healthzWithBodyComing sends GET /healthz to addr with a chunk of 1 MiB - 1 announced and
// 300 KiB of it sent, and checks that the answer is want and closes the connection.
func healthzWithBodyComing(t *testing.T, when, addr string, want int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		// Fails once control closed the connection with some of it unread.
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: control\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s",
			DefaultMaxBodyBytes-1, strings.Repeat("x", 300<<10))
	}()
	defer func() {
		c.Close()
		<-sent
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: GET /healthz with a chunked body still coming: %v; want an answer without the rest", when, err)
	}
	resp.Body.Close()
	if resp.StatusCode != want || !resp.Close {
		t.Errorf("%s: GET /healthz with a chunked body still coming = %s (close %v), want %d closing the connection", when, resp.Status, resp.Close, want)
	}
}
