package edge

import (
	"net"
	"testing"
	"time"

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
