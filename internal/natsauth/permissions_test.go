package natsauth_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

var names = natsauth.Names{}

// fleetBus is an embedded NATS server with auth on and the buckets and purge stream a fleet has,
// created by control.
type fleetBus struct {
	s   *natstest.Server
	js  jetstream.JetStream // control's
	nc  *nats.Conn          // control's
	ctx context.Context
}

func newFleetBus(t *testing.T) *fleetBus {
	t.Helper()
	s := natstest.Start(t)
	nc, js := s.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	for _, b := range []string{"fleet", "config", "peerkeys", "latency"} {
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.Bucket(b)}); err != nil {
			t.Fatalf("control creates bucket %s: %v", b, err)
		}
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: names.PurgeStream(), Subjects: []string{names.PurgeCommands()}}); err != nil {
		t.Fatalf("control creates the purge stream: %v", err)
	}
	b := &fleetBus{s: s, js: js, nc: nc, ctx: ctx}
	b.put(t, js, "config", "host.www_example_com", `{"origin":"https://origin.example"}`)
	b.put(t, js, "peerkeys", "keyring", `{"secret":"s3cret"}`)
	if _, err := js.Publish(ctx, "meridian.purge.cmd.www_example_com", []byte(`{"id":"p1"}`)); err != nil {
		t.Fatalf("control publishes a purge: %v", err)
	}
	return b
}

func (b *fleetBus) put(t *testing.T, js jetstream.JetStream, bucket, key, value string) {
	t.Helper()
	kv, err := js.KeyValue(b.ctx, names.Bucket(bucket))
	if err != nil {
		t.Fatalf("bind %s: %v", bucket, err)
	}
	if _, err := kv.Put(b.ctx, key, []byte(value)); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

// client is one identity's connection, with the permission violations the server reported to it.
type client struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	violations *natstest.Violations
}

func (b *fleetBus) connect(t *testing.T, id natsauth.Identity) *client {
	t.Helper()
	c := &client{violations: natstest.NewViolations()}
	c.nc, c.js = natstest.ConnectURL(t, b.s.URL(), append(b.s.Options(id), c.violations.Option())...)
	return c
}

// refused runs try and waits for the server's permissions violation naming op ("Publish" or
// "Subscription") and subject; then it cancels try's context (a refused request gets no reply).
func (c *client) refused(t *testing.T, op, subject string, try func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = try(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	c.violations.Wait(t, op, subject)
}

func TestAnonymousAndUnknownRefused(t *testing.T) {
	b := newFleetBus(t)
	if nc, err := nats.Connect(b.s.URL()); err == nil {
		nc.Close()
		t.Fatal("anonymous connect succeeded, want an authorization violation")
	} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("anonymous connect = %v, want authorization violation", err)
	}
	stranger, err := natsauth.NewCredential(natsauth.Edge("lon", "n1")) // never issued to the server
	if err != nil {
		t.Fatal(err)
	}
	opts, err := stranger.Options()
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(b.s.URL(), opts...); err == nil {
		nc.Close()
		t.Fatal("unknown nkey connected, want an authorization violation")
	}
}

func TestEdgePermissions(t *testing.T) {
	b := newFleetBus(t)
	e := b.connect(t, natsauth.Edge("lon", "n1"))
	ctx := b.ctx

	// Allowed: its own registry key, reading fleet, config and peer keys, the purge stream, its acks.
	fleet, err := e.js.KeyValue(ctx, names.Bucket("fleet"))
	if err != nil {
		t.Fatalf("edge binds the fleet bucket: %v", err)
	}
	if _, err := fleet.Put(ctx, "lon.n1", []byte(`{"pop":"lon","id":"n1"}`)); err != nil {
		t.Fatalf("edge writes its own registry key: %v", err)
	}
	if err := fleet.Delete(ctx, "lon.n1"); err != nil {
		t.Fatalf("edge deletes its own registry key: %v", err)
	}
	if _, err := fleet.Put(ctx, "lon.n1", []byte(`{"pop":"lon","id":"n1"}`)); err != nil {
		t.Fatalf("edge writes its own registry key again: %v", err)
	}
	w, err := fleet.WatchAll(ctx)
	if err != nil {
		t.Fatalf("edge watches the fleet: %v", err)
	}
	if u := <-w.Updates(); u == nil || u.Key() != "lon.n1" {
		t.Fatalf("edge's fleet watch: first update %v, want lon.n1", u)
	}
	_ = w.Stop()
	for bucket, key := range map[string]string{"config": "host.www_example_com", "peerkeys": "keyring"} {
		kv, err := e.js.KeyValue(ctx, names.Bucket(bucket))
		if err != nil {
			t.Fatalf("edge binds %s: %v", bucket, err)
		}
		if _, err := kv.Get(ctx, key); err != nil {
			t.Fatalf("edge reads %s/%s: %v", bucket, key, err)
		}
		w, err := kv.WatchAll(ctx)
		if err != nil {
			t.Fatalf("edge watches %s: %v", bucket, err)
		}
		if u := <-w.Updates(); u == nil || u.Key() != key {
			t.Fatalf("edge's %s watch: first update %v, want %s", bucket, u, key)
		}
		_ = w.Stop()
	}
	cons, err := e.js.OrderedConsumer(ctx, names.PurgeStream(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("edge creates a purge consumer: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil || string(msg.Data()) != `{"id":"p1"}` {
		t.Fatalf("edge consumes the purge stream: %v, %v", msg, err)
	}
	// Live purge announcements: the edge receives control's, and may not make its own.
	live, err := e.nc.SubscribeSync(names.PurgeLive())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Publish(names.PurgeLive(), []byte("2\n{\"id\":\"p2\"}")); err != nil {
		t.Fatal(err)
	}
	if m, err := live.NextMsg(5 * time.Second); err != nil || string(m.Data) != "2\n{\"id\":\"p2\"}" {
		t.Fatalf("edge receives control's live purge: %v, %v", m, err)
	}
	acks, err := b.nc.SubscribeSync(names.AckSubject("*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Publish(names.AckSubject("lon", "n1"), []byte(`{"id":"p1"}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := acks.NextMsg(5 * time.Second); err != nil || m.Subject != names.AckSubject("lon", "n1") {
		t.Fatalf("control receives the edge's ack: %v, %v", m, err)
	}

	// Its own latency records, published without binding the bucket (as the edge does), under
	// the keys the edge makes: an IPv6 network is one token too (wire.LatencyKey).
	for _, network := range []string{"100.64.3.0/24", "2001:db8:1::/48"} {
		key := wire.LatencyKey("lon", "n1", netip.MustParsePrefix(network))
		if err := e.nc.Publish("$KV.meridian_latency."+key, []byte(`{"samples":1}`)); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 5*time.Second, "the edge's own latency record "+key, func() bool {
			_, err := b.kvGet("latency", key)
			return err == nil
		})
	}

	// Refused: another node's records, and keys of its own with more tokens than a network
	// (wire.LatencyKey is three tokens), which no reader takes.
	for _, key := range []string{"lon.n2.100-64-3-0-24", "par.n1.100-64-3-0-24", "lon.n1.100-64-3-0-24.x", "lon.n1.a.b.c"} {
		e.refused(t, "Publish", "$KV.meridian_latency."+key, func(context.Context) error {
			return e.nc.Publish("$KV.meridian_latency."+key, []byte(`{"samples":1}`))
		})
	}
	e.refused(t, "Publish", "meridian.purge.cmd.www_example_com", func(ctx context.Context) error {
		_, err := e.js.Publish(ctx, "meridian.purge.cmd.www_example_com", []byte(`{"id":"evil","kind":"all"}`))
		return err
	})
	e.refused(t, "Publish", names.PurgeLive(), func(context.Context) error {
		return e.nc.Publish(names.PurgeLive(), []byte("3\n{\"id\":\"evil\",\"kind\":\"all\"}"))
	})
	// The forged publish reached the server before its refusal came back: had it been routed,
	// it would arrive before this marker from control.
	if err := b.nc.Publish(names.PurgeLive(), []byte("marker")); err != nil {
		t.Fatal(err)
	}
	if m, err := live.NextMsg(5 * time.Second); err != nil || string(m.Data) != "marker" {
		t.Errorf("after a refused live purge the subscriber got %v (%v), want control's marker", m, err)
	}
	e.refused(t, "Publish", "$KV.meridian_config.host.www_example_com", func(ctx context.Context) error {
		kv, err := e.js.KeyValue(ctx, names.Bucket("config"))
		if err != nil {
			return err
		}
		_, err = kv.Put(ctx, "host.www_example_com", []byte(`{"origin":"http://evil.example"}`))
		return err
	})
	for _, key := range []string{"lon.n2", "par.n1"} {
		e.refused(t, "Publish", "$KV.meridian_fleet."+key, func(ctx context.Context) error {
			_, err := fleet.Put(ctx, key, []byte(`{"pop":"lon","id":"fake"}`))
			return err
		})
	}
	e.refused(t, "Publish", names.AckSubject("lon", "n2"), func(context.Context) error {
		return e.nc.Publish(names.AckSubject("lon", "n2"), []byte(`{"id":"p1"}`))
	})
	e.refused(t, "Subscription", "meridian.purge.ack.>", func(context.Context) error {
		_, err := e.nc.SubscribeSync("meridian.purge.ack.>")
		return err
	})
	e.refused(t, "Subscription", "_INBOX.>", func(context.Context) error {
		_, err := e.nc.SubscribeSync("_INBOX.>")
		return err
	})
	// Getting keys of the fleet bucket, which edges write: a get is answered on the reply
	// subject the request names (here the live purge subject), the value as it is.
	for _, get := range []string{"$JS.API.DIRECT.GET.KV_meridian_fleet.$KV.meridian_fleet.lon.n1", "$JS.API.STREAM.MSG.GET.KV_meridian_fleet"} {
		e.refused(t, "Publish", get, func(context.Context) error {
			return e.nc.PublishMsg(&nats.Msg{Subject: get, Reply: names.PurgeLive(), Data: []byte(`{"last_by_subj":"$KV.meridian_fleet.lon.n1"}`)})
		})
	}
	e.refused(t, "Publish", "$JS.API.STREAM.DELETE.KV_meridian_config", func(ctx context.Context) error {
		return e.js.DeleteKeyValue(ctx, names.Bucket("config"))
	})
	e.refused(t, "Publish", "$JS.API.STREAM.PURGE."+names.PurgeStream(), func(ctx context.Context) error {
		_, err := e.nc.Request("$JS.API.STREAM.PURGE."+names.PurgeStream(), nil, time.Second)
		return err
	})

	// Nothing refused reached the buckets or the stream.
	if e, err := b.kvGet("config", "host.www_example_com"); err != nil || strings.Contains(e, "evil") {
		t.Errorf("config after refused writes = %q, %v", e, err)
	}
	for _, key := range []string{"lon.n2", "par.n1"} {
		if _, err := b.kvGet("fleet", key); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("fleet key %s after a refused write: %v, want not found", key, err)
		}
	}
	st, err := b.js.Stream(b.ctx, names.PurgeStream())
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("purge stream holds %d messages after a refused publish, want 1", n)
	}
}

func (b *fleetBus) kvGet(bucket, key string) (string, error) {
	kv, err := b.js.KeyValue(b.ctx, names.Bucket(bucket))
	if err != nil {
		return "", err
	}
	e, err := kv.Get(b.ctx, key)
	if err != nil {
		return "", err
	}
	return string(e.Value()), nil
}

func TestDNSPermissions(t *testing.T) {
	b := newFleetBus(t)
	b.put(t, b.js, "fleet", "lon.n1", `{"pop":"lon","id":"n1"}`)
	d := b.connect(t, natsauth.DNS("ns1"))
	ctx := b.ctx

	b.put(t, b.js, "latency", "lon.n1.100-64-3-0-24", `{"samples":1}`)
	b.put(t, b.js, "config", "routing", `{"mode":"latency"}`)
	b.put(t, b.js, "config", "drain.lon", `{"by":"ops"}`)
	// DNS watches the whole fleet and latency buckets, and of the config bucket the routing
	// policy and the drains, each through a consumer whose filter is in its create subject.
	for _, tt := range []struct{ bucket, keys, key string }{
		{"fleet", ">", "lon.n1"},
		{"latency", ">", "lon.n1.100-64-3-0-24"},
		{"config", "routing", "routing"},
		{"config", "drain.>", "drain.lon"},
	} {
		kv, err := d.js.KeyValue(ctx, names.Bucket(tt.bucket))
		if err != nil {
			t.Fatalf("dns binds %s: %v", tt.bucket, err)
		}
		w, err := kv.Watch(ctx, tt.keys)
		if err != nil {
			t.Fatalf("dns watches %s %s: %v", tt.bucket, tt.keys, err)
		}
		if u := <-w.Updates(); u == nil || u.Key() != tt.key {
			t.Fatalf("dns's %s %s watch: first update %v, want %s", tt.bucket, tt.keys, u, tt.key)
		}
		_ = w.Stop()
	}
	// Host configs are not DNS's: they hold origins (addresses the CDN hides) and the fields
	// set on origin requests (often a secret the origin checks). No consumer on other keys
	// (nor one with several filters, which are in its body), no get.
	for _, sub := range []string{
		"$JS.API.CONSUMER.CREATE.KV_meridian_config.x.$KV.meridian_config.>",
		"$JS.API.CONSUMER.CREATE.KV_meridian_config.x.$KV.meridian_config.host.www_example_com",
		"$JS.API.CONSUMER.CREATE.KV_meridian_config.x",
		"$JS.API.DIRECT.GET.KV_meridian_config",
		"$JS.API.DIRECT.GET.KV_meridian_config.$KV.meridian_config.host.www_example_com",
		"$JS.API.STREAM.MSG.GET.KV_meridian_config",
	} {
		d.refused(t, "Publish", sub, func(context.Context) error {
			return d.nc.PublishRequest(sub, d.nc.NewInbox(), []byte(`{"stream_name":"KV_meridian_config","config":{"name":"x","filter_subjects":["$KV.meridian_config.>"]},"last_by_subj":"$KV.meridian_config.host.www_example_com"}`))
		})
	}
	// The subject's filter is the consumer's: the server refuses a body that names another.
	m, err := d.nc.Request("$JS.API.CONSUMER.CREATE.KV_meridian_config.x.$KV.meridian_config.routing",
		[]byte(`{"stream_name":"KV_meridian_config","config":{"name":"x","filter_subject":"$KV.meridian_config.>","ack_policy":"none"}}`), 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"error"`) {
		t.Errorf("dns creates a routing consumer whose body filters every key: %v, %v; want the server's refusal", m, err)
	}

	fleet, err := d.js.KeyValue(ctx, names.Bucket("fleet"))
	if err != nil {
		t.Fatal(err)
	}
	d.refused(t, "Publish", "$KV.meridian_fleet.lon.n1", func(ctx context.Context) error {
		_, err := fleet.Put(ctx, "lon.n1", []byte(`{"pop":"lon","id":"n1","ipv4":"203.0.113.66"}`))
		return err
	})
	d.refused(t, "Publish", "$KV.meridian_latency.lon.n1.100-64-3-0-24", func(context.Context) error {
		return d.nc.Publish("$KV.meridian_latency.lon.n1.100-64-3-0-24", []byte(`{"samples":9}`))
	})
	d.refused(t, "Publish", "$KV.meridian_config.routing", func(ctx context.Context) error {
		_, err := d.js.Publish(ctx, "$KV.meridian_config.routing", []byte(`{}`))
		return err
	})
	d.refused(t, "Publish", "meridian.purge.cmd.x", func(context.Context) error {
		return d.nc.Publish("meridian.purge.cmd.x", nil)
	})
	d.refused(t, "Publish", names.AckSubject("lon", "n1"), func(context.Context) error {
		return d.nc.Publish(names.AckSubject("lon", "n1"), nil)
	})
	d.refused(t, "Publish", "$JS.API.STREAM.INFO.KV_meridian_peerkeys", func(ctx context.Context) error {
		_, err := d.js.KeyValue(ctx, names.Bucket("peerkeys"))
		return err
	})
	d.refused(t, "Publish", "$JS.API.DIRECT.GET.KV_meridian_peerkeys.$KV.meridian_peerkeys.keyring", func(ctx context.Context) error {
		_, err := d.nc.Request("$JS.API.DIRECT.GET.KV_meridian_peerkeys.$KV.meridian_peerkeys.keyring", nil, time.Second)
		return err
	})
	// Getting keys of the buckets that edges write, which DNS only watches.
	for _, get := range []string{
		"$JS.API.DIRECT.GET.KV_meridian_fleet.$KV.meridian_fleet.lon.n1",
		"$JS.API.DIRECT.GET.KV_meridian_latency.$KV.meridian_latency.lon.n1.100-64-3-0-24",
		"$JS.API.STREAM.MSG.GET.KV_meridian_latency",
	} {
		d.refused(t, "Publish", get, func(context.Context) error {
			return d.nc.PublishRequest(get, d.nc.NewInbox(), nil)
		})
	}
	d.refused(t, "Publish", "$JS.API.CONSUMER.CREATE."+names.PurgeStream()+".x", func(ctx context.Context) error {
		_, err := d.nc.Request("$JS.API.CONSUMER.CREATE."+names.PurgeStream()+".x", []byte(`{}`), time.Second)
		return err
	})
	if v, err := b.kvGet("fleet", "lon.n1"); err != nil || strings.Contains(v, "203.0.113.66") {
		t.Errorf("fleet key after dns's refused write = %q, %v", v, err)
	}
}

// captureLog is a NATS server logger that hands its error lines to a channel.
type captureLog struct {
	errs chan string
}

func (l *captureLog) send(s string) {
	select {
	case l.errs <- s:
	default:
	}
}
func (l *captureLog) Noticef(string, ...any)    {}
func (l *captureLog) Warnf(f string, v ...any)  { l.send(fmt.Sprintf(f, v...)) }
func (l *captureLog) Fatalf(f string, v ...any) { l.send(fmt.Sprintf(f, v...)) }
func (l *captureLog) Errorf(f string, v ...any) { l.send(fmt.Sprintf(f, v...)) }
func (l *captureLog) Debugf(string, ...any)     {}
func (l *captureLog) Tracef(string, ...any)     {}
func newCaptureLog() *captureLog                { return &captureLog{errs: make(chan string, 256)} }

// wait waits for an error or warning line containing substr.
func (l *captureLog) wait(t *testing.T, substr string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-l.errs:
			if strings.Contains(s, substr) {
				return
			}
		case <-timeout:
			t.Fatalf("no server log line containing %q", substr)
		}
	}
}

func startServer(t *testing.T, opts *server.Options, log server.Logger) *server.Server {
	t.Helper()
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	if log != nil {
		ns.SetLoggerV2(log, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// freePorts returns n distinct free ports: their listeners are all open at once, so the kernel
// cannot hand out one port twice (nats-server gives no accessor for a random leaf port).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// hub is a cluster server as deploy renders it: clients and leaf links authenticate with nkeys,
// routes with their own user and password.
func hub(t *testing.T, users []natsauth.User, routeUser, routePass string) (*server.Server, int, int) {
	t.Helper()
	ports := freePorts(t, 2)
	leafPort, clusterPort := ports[0], ports[1]
	opts := &server.Options{
		ServerName: "hub",
		Host:       "127.0.0.1",
		Port:       -1,
		NoLog:      true,
		Nkeys:      natsauth.NkeyUsers("", users),
		LeafNode:   server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort},
		Cluster: server.ClusterOpts{Name: "meridian", Host: "127.0.0.1", Port: clusterPort,
			Username: routeUser, Password: routePass},
	}
	return startServer(t, opts, nil), leafPort, clusterPort
}

func mustCred(t *testing.T, id natsauth.Identity) (natsauth.Credential, natsauth.User) {
	t.Helper()
	c, err := natsauth.NewCredential(id)
	if err != nil {
		t.Fatal(err)
	}
	u, err := c.User()
	if err != nil {
		t.Fatal(err)
	}
	return c, u
}

func TestLeafLinksNeedLeafCredentials(t *testing.T) {
	leafCred, leafUser := mustCred(t, natsauth.Leaf("lon"))
	edgeCred, edgeUser := mustCred(t, natsauth.Edge("lon", "n1"))
	h, leafPort, _ := hub(t, []natsauth.User{leafUser, edgeUser}, "route", "route-secret")

	leaf := func(name, seed string) (*server.Server, *captureLog) {
		log := newCaptureLog()
		u, _ := url.Parse(fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort))
		s := startServer(t, &server.Options{ServerName: name, Host: "127.0.0.1", Port: -1,
			LeafNode: server.LeafNodeOpts{ReconnectInterval: 50 * time.Millisecond,
				Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}, Nkey: seed}}}}, log)
		return s, log
	}
	// A refused leaf retries every 50ms for as long as it runs: each one stops once the hub
	// has refused it, or its retries load the hub while the next link tries its handshake
	// (under load that handshake ran out of the hub's auth timeout again and again).
	for _, refused := range []struct{ name, seed string }{{"no-creds", ""}, {"edge-creds", string(edgeCred.Seed)}} {
		s, log := leaf(refused.name, refused.seed)
		log.wait(t, "Authorization Violation")
		if n := h.NumLeafNodes(); n != 0 {
			t.Fatalf("hub has %d leaf nodes after refusing %s, want 0", n, refused.name)
		}
		s.Shutdown()
		s.WaitForShutdown()
	}
	leaf("lon", string(leafCred.Seed))
	wait.For(t, 10*time.Second, "the leaf link with the leaf credential", func() bool { return h.NumLeafNodes() == 1 })
}

func TestRoutePortRefusesClientCredentials(t *testing.T) {
	edgeCred, edgeUser := mustCred(t, natsauth.Edge("lon", "n1"))
	h, _, clusterPort := hub(t, []natsauth.User{edgeUser}, "route", "route-secret")
	opts, err := edgeCred.Options()
	if err != nil {
		t.Fatal(err)
	}
	// The route port may answer the first PING before it checks the CONNECT; the refusal
	// follows as an authorization error that closes the connection.
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", clusterPort), append(opts, nats.MaxReconnects(0))...)
	if err == nil {
		defer nc.Close()
		wait.For(t, 5*time.Second, "the route port to refuse the edge", func() bool { return nc.LastError() != nil })
		err = nc.LastError()
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("edge credential on the route port: %v, want an authorization violation", err)
	}
	if n := h.NumRoutes(); n != 0 {
		t.Fatalf("hub has %d routes after an edge dialled the route port, want 0", n)
	}

	join := func(name, user, pass string) *server.Server {
		u, _ := url.Parse(fmt.Sprintf("nats-route://%s:%s@127.0.0.1:%d", user, pass, clusterPort))
		log := newCaptureLog()
		s := startServer(t, &server.Options{ServerName: name, Host: "127.0.0.1", Port: -1,
			Cluster: server.ClusterOpts{Name: "meridian", Host: "127.0.0.1", Port: -1,
				Username: user, Password: pass, ConnectRetries: 1000},
			Routes: []*url.URL{u}}, log)
		if pass != "route-secret" {
			log.wait(t, "Authorization")
		}
		return s
	}
	join("intruder", "route", "guess")
	if n := h.NumRoutes(); n != 0 {
		t.Fatalf("hub has %d routes after a refused one, want 0", n)
	}
	join("peer", "route", "route-secret")
	wait.For(t, 10*time.Second, "the route with the route credentials", func() bool { return h.NumRoutes() >= 1 })
}

// TestConfUsersMatchNkeyUsers: the authorization block rendered for nats-server.conf files
// (deploy) gives the server the same users, permissions and connection types as NkeyUsers
// (control's embedded server, the tests).
func TestConfUsersMatchNkeyUsers(t *testing.T) {
	var users []natsauth.User
	for _, id := range []natsauth.Identity{natsauth.Control(), natsauth.Edge("lon", "n1"), natsauth.DNS("ns1"), natsauth.Leaf("lon")} {
		_, u := mustCred(t, id)
		users = append(users, u)
	}
	for _, prefix := range []string{"", "edge.eu"} {
		conf := filepath.Join(t.TempDir(), "nats.conf")
		if err := os.WriteFile(conf, []byte("listen: \"127.0.0.1:-1\"\n"+natsauth.ConfUsers(prefix, users, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("prefix %q: rendered users do not parse: %v", prefix, err)
		}
		want := natsauth.NkeyUsers(prefix, users)
		if len(opts.Nkeys) != len(want) {
			t.Fatalf("prefix %q: %d users parsed, want %d", prefix, len(opts.Nkeys), len(want))
		}
		for i, got := range opts.Nkeys {
			if got.Nkey != want[i].Nkey || !reflect.DeepEqual(got.Permissions, want[i].Permissions) ||
				!reflect.DeepEqual(got.AllowedConnectionTypes, want[i].AllowedConnectionTypes) {
				t.Errorf("prefix %q user %d parsed as %+v %+v %v, want %+v %+v %v", prefix, i,
					got.Permissions.Publish, got.Permissions.Subscribe, got.AllowedConnectionTypes,
					want[i].Permissions.Publish, want[i].Permissions.Subscribe, want[i].AllowedConnectionTypes)
			}
		}
	}
}
