package edge

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestHTTP3SocketClosedAfterItsDrain: the HTTP/3 socket is closed once HTTP/3 has shut down,
// while the TCP servers still drain, and ServeListeners returns with it closed. quic-go leaves
// open a PacketConn it is given, and it stayed bound until the process exited: on a fixed port
// with SO_REUSEPORT, beside a restarted node's socket, it got a share of the new node's QUIC
// packets and dropped them.
func TestHTTP3SocketClosedAfterItsDrain(t *testing.T) {
	originAddr, arrived, release := holdingOrigin(t)
	var quicConn net.PacketConn
	_, n, stop := tlsEdgeWith(t, TLSConfig{Dev: true}, func(_ *Node, ls *Listeners) { quicConn = ls.QUIC }, func(c *Config) {
		c.Hosts = []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}
	})
	// HTTP/3 serves on the socket.
	if _, r := h3Get(t, n, "/fast", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("HTTP/3 GET = %d", r.StatusCode)
	}

	// An HTTP/1.1 request that the origin holds keeps the TCP servers draining.
	slow := getInBackground(t, n, "/slow")
	<-arrived
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The socket was opened without SO_REUSEPORT (port 0): its port binds again once it is closed.
	addr := quicConn.LocalAddr().String()
	wait.For(t, 10*time.Second, "the HTTP/3 socket's port free while the TCP servers drain", func() bool {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		pc.Close()
		return true
	})
	select {
	case err := <-stopped:
		t.Fatalf("serve returned (%v) with an HTTP/1.1 request in flight", err)
	default:
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("the HTTP/1.1 request in flight: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
	if err := quicConn.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("closing the HTTP/3 socket after serve = %v, want net.ErrClosed (closed already)", err)
	}
}

// TestServeListenersErrorClosesListeners: ServeListeners owns the listeners it is given, so one
// that returns before serving closes every one; the HTTP/3 socket stayed open, and, given by
// Run, bound until the process exited.
func TestServeListenersErrorClosesListeners(t *testing.T) {
	tests := []struct {
		name  string
		noTCP bool // no HTTP listener
		tls   TLSConfig
	}{
		{"no HTTP listener", true, TLSConfig{Dev: true}},
		{"no certificates", false, TLSConfig{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(Config{PoP: "tst", Node: "e1", TLS: tt.tls, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			https, quicConn, err := listenHTTPS(t.Context(), "127.0.7.12:0", true)
			if err != nil {
				t.Fatal(err)
			}
			ls := Listeners{HTTPS: https, QUIC: quicConn, Admin: listen(t, "127.0.7.12")}
			if !tt.noTCP {
				ls.HTTP = listen(t, "127.0.7.12")
			}
			if err := n.ServeListeners(context.Background(), ls); err == nil {
				t.Fatal("ServeListeners = nil, want an error")
			}
			for name, c := range map[string]io.Closer{"http": ls.HTTP, "https": ls.HTTPS, "quic": ls.QUIC, "admin": ls.Admin} {
				if c == nil {
					continue
				}
				if err := c.Close(); !errors.Is(err, net.ErrClosed) {
					t.Errorf("closing the %s listener after ServeListeners = %v, want net.ErrClosed (closed already)", name, err)
				}
			}
		})
	}
}
