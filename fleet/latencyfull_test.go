package fleet_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestLatencyBucketFullOnCluster: on a JetStream cluster (deploy's control VMs, three replicas)
// the server checks a write against the bucket's byte bound before it proposes it, whatever
// the write replaces: a full latency bucket refuses every record that does not fit, an update
// of a node's existing record included, unlike a single server, which takes an update no
// larger than the record it replaces (TestLatencyBucketFill). A bound below what the bucket
// holds (control's --latency-max-bytes lowered) so refuses every write until enough records
// expire (docs/deploy.md, "Latency bucket size"; docs/security.md, "Latency bucket"). The
// cases are successive writes to one bucket.
func TestLatencyBucketFullOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster of three servers")
	}
	js := startCluster(t, 3)
	ctx := t.Context()
	if err := fleet.EnsureBuckets(ctx, js, "", testTTL, 3); err != nil {
		t.Fatal(err)
	}
	subject := func(network string) string {
		return "$KV." + wire.Bucket("", wire.LatencyBucket) + ".lon.n1." + network
	}
	const records, size = 100, 500
	for i := range records {
		if _, err := js.Publish(ctx, subject(fmt.Sprintf("net%d", i)), bytes.Repeat([]byte("r"), size)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, "KV_"+wire.Bucket("", wire.LatencyBucket))
	if err != nil {
		t.Fatal(err)
	}
	held := int64(st.CachedInfo().State.Bytes)
	for _, tt := range []struct {
		name    string
		bound   int64 // the bucket's byte bound for this write
		network string
		size    int
		refused bool
	}{
		// Room for a small record, not for a record of the size of those it holds.
		{"full: an update of the same size", held + size/2, "net1", size, true},
		{"full: a new record that fits", held + size/2, "new1", 10, false},
		{"bound below what it holds: a smaller update", held / 2, "net2", size / 2, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := fleet.SetLatencyMaxBytes(ctx, js, "", tt.bound); err != nil {
				t.Fatal(err)
			}
			_, err := js.Publish(ctx, subject(tt.network), bytes.Repeat([]byte("u"), tt.size))
			// The server's "maximum bytes exceeded" (JSStreamStoreFailedF, 10077).
			var apiErr *jetstream.APIError
			if refused := errors.As(err, &apiErr) && apiErr.ErrorCode == 10077; refused != tt.refused {
				t.Errorf("writing %d bytes to %s under a bound of %d (the bucket held %d): %v, want refused %v; docs/security.md and docs/deploy.md say which: update them",
					tt.size, tt.network, tt.bound, held, err, tt.refused)
			}
		})
	}
}

// startCluster runs a JetStream cluster of n servers on loopback and returns a JetStream
// context on the first once the cluster has a meta leader.
func startCluster(t *testing.T, n int) jetstream.JetStream {
	t.Helper()
	var routes []*url.URL
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: ln.Addr().String()})
	}
	for _, ln := range lns {
		ln.Close() // the ports the servers' route listeners take
	}
	var first *server.Server
	for i := range n {
		s := natstest.StartOptions(t, &server.Options{ServerName: fmt.Sprintf("c%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), Routes: routes,
			Cluster: server.ClusterOpts{Name: "meridian", Host: "127.0.0.1", Port: lns[i].Addr().(*net.TCPAddr).Port}})
		if first == nil {
			first = s
		}
	}
	_, js := natstest.ConnectURL(t, first.ClientURL())
	wait.For(t, 30*time.Second, "the cluster's meta leader", func() bool {
		_, err := js.AccountInfo(t.Context())
		return err == nil
	})
	return js
}
