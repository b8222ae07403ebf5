// Package natstest runs real embedded NATS servers with JetStream for
// tests, and waits on conditions instead of sleeping.
package natstest

import (
	"fmt"
	"net"
	"sync/atomic"
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

// FanoutFloor measures the bare core-NATS fan-out that purges ride on: one publish of a
// purge-sized message to subscribers plain subscribers, each on its own connection, until the last
// one received it; n times. Benchmarks report their figures next to it, measured in the same run.
func FanoutFloor(t testing.TB, url string, subscribers, n int) []time.Duration {
	t.Helper()
	var got atomic.Int32
	done := make(chan struct{}, 1)
	for range subscribers {
		c, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Subscribe("bench.floor", func(*nats.Msg) {
			if got.Add(1) == int32(subscribers) {
				done <- struct{}{}
			}
		}); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	payload := make([]byte, 200) // about a purge message's size
	lat := make([]time.Duration, 0, n)
	for range n {
		got.Store(0)
		start := time.Now()
		if err := pub.Publish("bench.floor", payload); err != nil {
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
