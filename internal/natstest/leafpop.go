package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/meridian-cdn/meridian/internal/tcplink"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// StartLeafPoP is the production topology (deploy/render_nats.go): a hub with JetStream in
// domain "fleet", and a leaf node (a PoP's VM) linked to it through link, which a test can cut.
// It returns once JetStream answers through the leaf, not only once the link is counted: until
// the hub's interest in the JetStream API has crossed the link, the leaf answers a request
// itself (JetStream not enabled), a third of the time under load.
func StartLeafPoP(t testing.TB) (hub, leaf *server.Server, link *tcplink.Link) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leafPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	hub = StartOptions(t, &server.Options{ServerName: "hub", Host: "127.0.0.1", Port: -1, JetStream: true,
		JetStreamDomain: "fleet", StoreDir: t.TempDir(),
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort}})
	link, err = tcplink.Listen("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", leafPort), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.Close() })
	u, _ := url.Parse("nats-leaf://" + link.Addr().String())
	leaf = StartOptions(t, &server.Options{ServerName: "leaf", Host: "127.0.0.1", Port: -1,
		JsAccDefaultDomain: map[string]string{"$G": "fleet"},
		LeafNode: server.LeafNodeOpts{ReconnectInterval: 50 * time.Millisecond,
			Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}}})
	wait.For(t, 10*time.Second, "the leaf link", func() bool { return hub.NumLeafNodes() == 1 })
	_, ljs := ConnectURL(t, leaf.ClientURL())
	wait.For(t, 10*time.Second, "JetStream through the leaf", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := ljs.AccountInfo(ctx)
		return err == nil
	})
	return hub, leaf, link
}
