package edge

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// storeGoroutines counts the goroutines a node's store started (its confirm goroutine and
// Ristretto's), whichever node they belong to.
func storeGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "created by github.com/meridian-cdn/meridian/edge/store.New") ||
			strings.Contains(g, "created by github.com/dgraph-io/ristretto/") {
			count++
		}
	}
	return count
}

// TestFailedServeStopsStore: a node whose Run or ServeListeners fails before it serves stops
// its store's goroutines before it returns the error, as it does after serving; they used to
// run on for the life of the process, one set for every failed start.
func TestFailedServeStopsStore(t *testing.T) {
	for _, tt := range []struct {
		name  string
		serve func(t *testing.T, n *Node) error
		want  string // in the error
	}{
		{"no HTTP listener", func(t *testing.T, n *Node) error {
			return n.ServeListeners(context.Background(), Listeners{})
		}, "no HTTP listener"},
		{"certificate missing", func(t *testing.T, n *Node) error {
			n.cfg.TLS.Certs = []CertFiles{{Cert: filepath.Join(t.TempDir(), "no.pem"), Key: filepath.Join(t.TempDir(), "no.key")}}
			https := listen(t, "127.0.4.72")
			return n.ServeListeners(context.Background(), Listeners{HTTP: listen(t, "127.0.4.72"), HTTPS: https})
		}, "tls.certs[0]"},
		{"listen address taken", func(t *testing.T, n *Node) error {
			taken := listen(t, "127.0.4.72") // without SO_REUSEPORT: Run's listen cannot share it
			defer taken.Close()
			n.cfg.Listen = taken.Addr().String()
			return n.Run(context.Background())
		}, "edge listen"},
		{"admin address taken", func(t *testing.T, n *Node) error {
			taken := listen(t, "127.0.4.72")
			defer taken.Close()
			n.cfg.Listen, n.cfg.AdminListen = "127.0.4.72:0", taken.Addr().String()
			return n.Run(context.Background())
		}, "edge admin listen"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := storeGoroutines()
			n, err := New(Config{PoP: "p", Node: "n1", Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if got := storeGoroutines(); got <= before {
				t.Fatalf("New started %d store goroutines; the count cannot see them", got-before)
			}
			err = tt.serve(t, n)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("serve: %v, want an error naming %q", err, tt.want)
			}
			wait.For(t, 5*time.Second, "the store's goroutines to stop", func() bool { return storeGoroutines() == before })
		})
	}
}
