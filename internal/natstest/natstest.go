// Package natstest runs real embedded NATS servers with JetStream for
// tests, with the production credentials and permissions on (see internal/natsauth), and waits
// on conditions instead of sleeping.
package natstest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-cdn/meridian/internal/natsauth"
)

// Server is an embedded NATS server that a test can stop and restart on the same port and
// store directory. Nobody connects anonymously: each connection authenticates as an identity
// (Connect as control, ConnectAs as any), with the permissions production gives that role.
type Server struct {
	t        testing.TB
	StoreDir string
	Port     int
	NS       *server.Server
	// Prefix is the fleet prefix the permissions are built for; empty means the default.
	Prefix string

	mu    sync.Mutex // guards creds and the users of NS
	creds map[natsauth.Identity]natsauth.Credential
	auth  *natsauth.Authenticator // NS's users, as control's embedded server takes them
}

// Start runs a NATS server with JetStream on 127.0.0.1, a random port and a temporary store
// directory, accepting the control identity; it is shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, StoreDir: t.TempDir(), Port: -1, creds: map[natsauth.Identity]natsauth.Credential{}}
	s.Credential(natsauth.Control())
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// StartOptions runs a NATS server of opts (quiet, no signal handlers), waits until it takes
// connections and shuts it down when the test ends: for the topologies Start does not make
// (a hub and its leaf nodes).
func StartOptions(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new nats server %s: %v", opts.ServerName, err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats server %s not ready", opts.ServerName)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// usersLocked are the users issued so far.
func (s *Server) usersLocked() []natsauth.User {
	users := make([]natsauth.User, 0, len(s.creds))
	for _, c := range s.creds {
		u, err := c.User()
		if err != nil {
			s.t.Fatalf("natstest: %v", err)
		}
		users = append(users, u)
	}
	return users
}

// optionsLocked are the options of a new server with the users issued so far.
func (s *Server) optionsLocked() *server.Options {
	opts := &server.Options{
		ServerName: "natstest",
		Host:       "127.0.0.1",
		Port:       s.Port,
		JetStream:  true,
		StoreDir:   s.StoreDir,
		NoLog:      true,
		NoSigs:     true,
	}
	s.auth = natsauth.NewAuthenticator(s.Prefix, s.usersLocked())
	s.auth.Configure(opts)
	return opts
}

// Restart starts the server (again) on the same port and store directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	opts := s.optionsLocked()
	s.mu.Unlock()
	ns, err := server.NewServer(opts)
	if err != nil {
		s.t.Fatalf("new nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		s.t.Fatalf("nats server not ready")
	}
	s.mu.Lock()
	s.NS = ns
	s.Port = ns.Addr().(*net.TCPAddr).Port
	s.mu.Unlock()
}

// Stop shuts the server down and waits until it has.
func (s *Server) Stop() {
	s.mu.Lock()
	ns := s.NS
	s.NS = nil
	s.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// URL is the client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.Port) }

// Credential returns id's credential, issuing it (and reloading the running server's users)
// the first time.
func (s *Server) Credential(id natsauth.Identity) natsauth.Credential {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.creds[id]; ok {
		return c
	}
	c, err := natsauth.NewCredential(id)
	if err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
	s.creds[id] = c
	// The authenticator of the running server, or of the one Restart is starting (NS nil).
	if s.auth != nil {
		s.auth.SetUsers(s.NS, s.usersLocked())
	}
	return c
}

// Options are the nats.Connect options that authenticate as id.
func (s *Server) Options(id natsauth.Identity) []nats.Option {
	s.t.Helper()
	opts, err := s.Credential(id).Options()
	if err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
	return opts
}

// CredsFile writes id's credentials file (mode 0600) in a temporary directory of t and returns
// its path.
func (s *Server) CredsFile(t testing.TB, id natsauth.Identity) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), id.String()+".creds")
	if err := s.Credential(id).WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Connect opens a client connection as control (allowed everything) that reconnects forever,
// closed when the test ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return s.ConnectAs(t, natsauth.Control())
}

// ConnectAs opens a client connection as id that reconnects forever, closed when the test ends.
func (s *Server) ConnectAs(t testing.TB, id natsauth.Identity) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, s.URL(), s.Options(id)...)
}

// ConnectURL opens a client connection to url with opts (credentials, say) that reconnects
// forever, closed when the test ends.
func ConnectURL(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond),
		nats.ReconnectJitter(0, 0)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to nats %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// FanoutFloor measures the bare core-NATS fan-out that purges ride on: one publish of a
// purge-sized message to subscribers plain subscribers, each on its own connection, until the last
// one received it; n times. Benchmarks report their figures next to it, measured in the same run.
// opts authenticate the connections (they need to publish and subscribe "bench.floor");
// pubOpts are added to the publisher's alone (nats.InProcessServer, when the publisher it
// stands for is in process with the server, as control is with its embedded one).
func FanoutFloor(t testing.TB, url string, subscribers, n int, pubOpts []nats.Option, opts ...nats.Option) []time.Duration {
	t.Helper()
	return floor(t, url, subscribers, n, false, pubOpts, opts)
}

// RoundTripFloor is FanoutFloor with the way back that a purge's acks take: each subscriber
// answers with an ack-sized reply from its own connection, and a publish is done once the
// publisher has received every reply: the floor of a purge acknowledged by every node, on core
// NATS alone, without the stream, decoding or applying. opts must also allow publishing and
// subscribing on the _INBOX subjects (the control identity's do).
func RoundTripFloor(t testing.TB, url string, subscribers, n int, pubOpts []nats.Option, opts ...nats.Option) []time.Duration {
	t.Helper()
	return floor(t, url, subscribers, n, true, pubOpts, opts)
}

func floor(t testing.TB, url string, subscribers, n int, reply bool, pubOpts, opts []nats.Option) []time.Duration {
	t.Helper()
	var got atomic.Int32
	done := make(chan struct{}, 1)
	count := func(*nats.Msg) {
		if got.Add(1) == int32(subscribers) {
			done <- struct{}{}
		}
	}
	ack := make([]byte, 120) // about an ack's size
	for range subscribers {
		c, err := nats.Connect(url, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		handle := count
		if reply {
			handle = func(m *nats.Msg) { _ = c.Publish(m.Reply, ack) }
		}
		if _, err := c.Subscribe("bench.floor", handle); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := nats.Connect(url, append(slices.Clip(opts), pubOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	inbox := ""
	if reply {
		inbox = pub.NewInbox()
		if _, err := pub.Subscribe(inbox, count); err != nil {
			t.Fatal(err)
		}
	}
	msg := &nats.Msg{Subject: "bench.floor", Reply: inbox, Data: make([]byte, 200)} // about a purge message's size
	lat := make([]time.Duration, 0, n)
	for range n {
		got.Store(0)
		start := time.Now()
		if err := pub.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
		if err := pub.FlushTimeout(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("floor fan-out lost a message")
		}
		lat = append(lat, time.Since(start))
	}
	return lat
}

// StreamConsumers is how many consumers stream has now.
func StreamConsumers(t testing.TB, js jetstream.JetStream, stream string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}
