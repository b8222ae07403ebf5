package tcplink

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every line with the same line, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// roundTrip sends line over c and returns the answer and how long it took.
func roundTrip(t *testing.T, c net.Conn, rd *bufio.Reader, line string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatalf("write through the link: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := rd.ReadString('\n')
	if err != nil {
		t.Fatalf("read through the link: %v", err)
	}
	return got, time.Since(start)
}

// TestLinkDelaysAndCuts uses the link over a real echo server, with and without a delay: a
// round trip pays the one-way delay twice, a cut closes the connection and refuses new ones
// (the dial may succeed, but the link closes it at once), restore lets them in again, and
// Close returns once everything stopped.
func TestLinkDelaysAndCuts(t *testing.T) {
	for _, delay := range []time.Duration{0, 30 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			l, err := Listen("127.0.0.1:0", echoServer(t), delay)
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rd := bufio.NewReader(c)
			if got, rtt := roundTrip(t, c, rd, "ping\n"); got != "ping\n" || rtt < 2*delay {
				t.Fatalf("echo through the link = %q after %v; want \"ping\\n\" after at least %v", got, rtt, 2*delay)
			}
			l.Cut()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := rd.ReadString('\n'); err == nil {
				t.Fatal("read after cut succeeded, want the connection closed")
			}
			c2, err := net.Dial("tcp", addr)
			if err == nil {
				c2.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c2.Read(make([]byte, 1)); err == nil {
					t.Error("a connection made while cut got data, want it closed")
				}
				c2.Close()
			}
			l.Restore()
			c3, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c3.Close()
			if got, _ := roundTrip(t, c3, bufio.NewReader(c3), "again\n"); got != "again\n" {
				t.Fatalf("echo after restore = %q, want \"again\\n\"", got)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			c3.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c3.Read(make([]byte, 1)); err == nil {
				t.Error("a connection survived Close")
			}
		})
	}
}

func TestListenRefusesABadAddress(t *testing.T) {
	if _, err := Listen("256.0.0.1:0", "127.0.0.1:1", 0); err == nil {
		t.Error("Listen on 256.0.0.1 = nil error, want one")
	}
}
