package dnsroute

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
