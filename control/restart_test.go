package control

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestRestartUnderLoad: with an external NATS, API clients see no failed request while
// `meridian control` is replaced by a new process on the same port (SO_REUSEPORT).
func TestRestartUnderLoad(t *testing.T) {
	bin := proctest.Build(t)
	ns := startNATS(t)
	probe, err := net.Listen("tcp", "127.0.7.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()

	old := proctest.Start(t, bin, "control plane ready", "control", "--listen", addr, "--nats", ns.URL(), "--nats-creds", credsFile(t, ns.URL(), natsauth.Control()), "--tokens", "testdata/tokens.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	// Keep-alive connections, as API clients keep them. A client that opens a new connection for
	// every request can race the old listener's close (see docs/operations.md on
	// net.ipv4.tcp_migrate_req).
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 20}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	load := proctest.RunLoad(ctx, 20, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/pops", nil)
		req.Header.Set("Authorization", "Bearer reader-secret-0123456789")
		r, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != 200 {
			return &statusErr{r.StatusCode}
		}
		return nil
	})
	load.WaitFor(t, 200, 5*time.Second)
	next := proctest.Replace(t, old, "control plane ready")
	load.Finish(t)
	proctest.Stop(t, next)
}

type statusErr struct{ code int }

func (e *statusErr) Error() string { return http.StatusText(e.code) }
