package control

import (
	"net"
	"strings"
	"testing"
	"time"

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
