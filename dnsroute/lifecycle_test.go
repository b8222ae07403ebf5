package dnsroute

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestNATSUnreachableLogged: `meridian dns` whose NATS server refuses connections says so at
// once, naming the server (it used to stay silent for the 10 s registry wait, then warn only
// that the registry was not loaded); SIGTERM still stops it cleanly.
func TestNATSUnreachableLogged(t *testing.T) {
	dir := t.TempDir()
	bin := proctest.Build(t)
	closed, err := net.Listen("tcp", "127.0.7.4:0")
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := closed.Addr().String()
	closed.Close()
	config := binaryConfig(t, dir, "127.0.7.4:0", "nats: nats://"+natsAddr+"\n")
	cmd := proctest.StartWithin(t, 5*time.Second, bin, "nats=nats://"+natsAddr, "dns", "--config", config)
	proctest.Stop(t, cmd)
}

// TestRestartWithAdminListener: a new `meridian dns` with the same config, admin_listen
// included (deploy render always sets it), starts while the old one still runs, as the
// restart procedure needs. The admin listener had no SO_REUSEPORT, so the new process exited
// with "address already in use" until the old one was gone.
func TestRestartWithAdminListener(t *testing.T) {
	dir := t.TempDir()
	bin := proctest.Build(t)
	admin := freeAddr(t, "tcp", "127.0.7.5")
	config := binaryConfig(t, dir, freeAddr(t, "udp", "127.0.7.5"), "admin_listen: "+admin+"\n")
	old := proctest.Start(t, bin, "dns serving", "dns", "--config", config)
	next := proctest.StartWithin(t, 10*time.Second, bin, "dns serving", "dns", "--config", config)
	proctest.Stop(t, old)
	r, err := http.Get("http://" + admin + "/healthz")
	if err != nil {
		t.Fatalf("new process's admin listener: %v", err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("GET /healthz from the new process = %d %q, want 200 ok", r.StatusCode, body)
	}
	proctest.Stop(t, next)
}

// binaryConfig writes testdata/dns.yaml into dir for the real binary: listening on listen,
// with a generated test database, and extra appended; it returns the file's path.
func binaryConfig(t *testing.T, dir, listen, extra string) string {
	t.Helper()
	yaml, err := os.ReadFile("testdata/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(yaml), "listen: 127.0.0.53:53", "listen: "+listen, 1)
	conf = strings.Replace(conf, "mmdb: test-city.mmdb", "mmdb: "+testMMDB(t, dir), 1)
	config := filepath.Join(dir, "dns.yaml")
	if err := os.WriteFile(config, []byte(conf+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return config
}

// TestStopBeforeTCPStarted: a server stopped before its TCP server has started (a SIGTERM
// right after "dns serving" on a loaded machine) stops cleanly. It closed the TCP listener
// under the starting server, which returned "use of closed network connection" as the serve's
// error, and `meridian dns` exited 1 (TestRestartWithAdminListener failed so under load).
func TestStopBeforeTCPStarted(t *testing.T) {
	s, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		udps, tcp, err := listenN(context.Background(), "127.0.7.6:0", 1)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // stopped before serve's goroutines ran
		if err := s.serve(ctx, udps, tcp); err != nil {
			t.Fatalf("serve stopped before it started, run %d: %v", i, err)
		}
	}
}

// TestRestartWithCNAMELoopKeepsServing: dns.yaml is read at start only (no reload: a changed
// file takes a new process, see TestRestartUnderLoad), so a CNAME loop put into it is met by
// the new process of a restart. It exits 1 with the loop named and without binding, and the
// old process, started on the same address with SO_REUSEPORT, keeps answering from the
// config it has, over real DNS. The loop was taken, and the new process served it.
func TestRestartWithCNAMELoopKeepsServing(t *testing.T) {
	bin := proctest.Build(t)
	probe, err := net.ListenPacket("udp", "127.0.7.7:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	good := binaryConfig(t, t.TempDir(), addr, "")
	old := proctest.Start(t, bin, "dns serving", "dns", "--config", good)

	bad := binaryConfig(t, t.TempDir(), addr, "")
	b, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	looped := strings.Replace(string(b), "  alias: www\n", "  alias: www2\n  www2: alias\n", 1)
	if looped == string(b) {
		t.Fatal("testdata/dns.yaml has no cname alias: www")
	}
	if err := os.WriteFile(bad, []byte(looped), 0o600); err != nil {
		t.Fatal(err)
	}
	res := proctest.Run(t, 10*time.Second, bin, "dns", "--config", bad)
	want := "cnames.alias: CNAME loop alias.cdn.example. -> www2.cdn.example. -> alias.cdn.example."
	if res.Code != 1 || !strings.Contains(res.Stderr, want) || strings.Contains(res.Stderr, "dns serving") {
		t.Errorf("meridian dns with a CNAME loop: exit %d, stderr:\n%s\nwant exit 1 before serving, saying %s", res.Code, res.Stderr, want)
	}

	m := new(dns.Msg)
	m.SetQuestion("alias.cdn.example.", dns.TypeA)
	r, err := dns.Exchange(m, addr)
	if err != nil {
		t.Fatalf("old process after the refused restart: %v", err)
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) < 2 || r.Answer[0].Header().Rrtype != dns.TypeCNAME || r.Answer[1].Header().Rrtype != dns.TypeA {
		t.Errorf("alias A from the old process = %s %v, want its CNAME to www and www's addresses", dns.RcodeToString[r.Rcode], r.Answer)
	}
	proctest.Stop(t, old)
}
