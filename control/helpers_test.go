package control

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/rusage"
)

// issuers maps each NATS URL a test started (a control's embedded server, a natstest server, a
// cutter in front of either) to what issues credentials on it: every connection authenticates.
var issuers sync.Map // string -> func(natsauth.Identity) (natsauth.Credential, error)

func registerNATS(url string, issue func(natsauth.Identity) (natsauth.Credential, error)) {
	issuers.Store(url, issue)
}

// aliasNATS makes alias (a cutter's URL) use url's credentials.
func aliasNATS(t testing.TB, alias, url string) {
	t.Helper()
	issue, ok := issuers.Load(url)
	if !ok {
		t.Fatalf("no NATS server registered at %s", url)
	}
	issuers.Store(alias, issue)
}

// credential issues a credential for id on the NATS server at url.
func credential(t testing.TB, url string, id natsauth.Identity) natsauth.Credential {
	t.Helper()
	issue, ok := issuers.Load(url)
	if !ok {
		t.Fatalf("no NATS server registered at %s", url)
	}
	c, err := issue.(func(natsauth.Identity) (natsauth.Credential, error))(id)
	if err != nil {
		t.Fatalf("issue %s credential on %s: %v", id, url, err)
	}
	return c
}

// natsOptions authenticate as id on the NATS server at url.
func natsOptions(t testing.TB, url string, id natsauth.Identity) []nats.Option {
	t.Helper()
	opts, err := credential(t, url, id).Options()
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// credsFile writes a credentials file for id on the NATS server at url and returns its path.
func credsFile(t testing.TB, url string, id natsauth.Identity) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), id.String()+".creds")
	if err := os.WriteFile(p, credential(t, url, id).Format(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startNATS starts a natstest server (auth on) and registers it.
func startNATS(t testing.TB) *natstest.Server {
	t.Helper()
	ns := natstest.Start(t)
	registerNATS(ns.URL(), func(id natsauth.Identity) (natsauth.Credential, error) { return ns.Credential(id), nil })
	return ns
}

// connect opens a connection as control (allowed everything) to the NATS server at url.
func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connectAs(t, url, natsauth.Control())
}

// connectAs opens a connection as id to the NATS server at url.
func connectAs(t testing.TB, url string, id natsauth.Identity) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natstest.ConnectURL(t, url, append(natsOptions(t, url, id), nats.ReconnectWait(50*time.Millisecond))...)
}

// processCPU is the CPU time (user and system) the whole test process has used: control, its
// embedded NATS server, the edges and the benchmark's clients; 0 where the system does not
// say (the benchmarks then report 0 CPU per purge).
func processCPU() time.Duration {
	d, _ := rusage.CPU()
	return d
}

// processMinorFaults is how many pages the test process has touched for the first time; 0
// where the system does not say (the benchmark then reports 0 faults per purge).
func processMinorFaults() int64 {
	n, _ := rusage.MinorFaults()
	return n
}
