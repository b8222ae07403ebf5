// Package natstest runs real embedded NATS servers with JetStream for
// tests, and waits on conditions instead of sleeping.
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an embedded NATS server that a test can stop and restart on the same port and
// store directory.
type Server struct {
	t        testing.TB
	StoreDir string
	Port     int
	NS       *server.Server
}

// Start runs a NATS server with JetStream on 127.0.0.1, a random port and a temporary store
// directory; it is shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, StoreDir: t.TempDir(), Port: -1}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server (again) on the same port and store directory.
func (s *Server) Restart() {
	s.t.Helper()
	ns, err := server.NewServer(&server.Options{
		ServerName: "natstest",
		Host:       "127.0.0.1",
		Port:       s.Port,
		JetStream:  true,
		StoreDir:   s.StoreDir,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		s.t.Fatalf("new nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		s.t.Fatalf("nats server not ready")
	}
	s.NS = ns
	s.Port = ns.Addr().(*net.TCPAddr).Port
}

// Stop shuts the server down and waits until it has.
func (s *Server) Stop() {
	if s.NS != nil {
		s.NS.Shutdown()
		s.NS.WaitForShutdown()
		s.NS = nil
	}
}

// URL is the client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.Port) }

// Connect opens a client connection that reconnects forever, closed when the test ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// WaitFor polls cond until it holds or timeout passes, then fails the test with msg.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
