package tcptest

import (
	"net"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// CloseWaiting is false on a connection both ends keep open, and true once the peer has
// half-closed it.
func TestCloseWaiting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if CloseWaiting(t, s.(*net.TCPConn)) {
		t.Fatal("close-waiting before the peer half-closed")
	}
	client.(*net.TCPConn).CloseWrite()
	wait.For(t, 5*time.Second, "close-waiting after the peer half-closed", func() bool { return CloseWaiting(t, s.(*net.TCPConn)) })
}
