package tcptest

import (
	"net"
	"testing"
	"time"
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
	for end := time.Now().Add(5 * time.Second); !CloseWaiting(t, s.(*net.TCPConn)); {
		if time.Now().After(end) {
			t.Fatal("not close-waiting 5 s after the peer half-closed")
		}
		time.Sleep(time.Millisecond)
	}
}
