package tcptest

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// CloseWaiting reports whether the peer's end of the stream (FIN) has reached c's socket and
// c has not closed its own side yet (TCP state CLOSE_WAIT).
func CloseWaiting(t testing.TB, c *net.TCPConn) bool {
	t.Helper()
	return State(t, c) == unix.BPF_TCP_CLOSE_WAIT
}

// State returns c's TCP state (TCP_INFO: unix.BPF_TCP_*), 0 if it cannot be read.
func State(t testing.TB, c *net.TCPConn) uint8 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var state uint8
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = info.State
		}
	})
	return state
}
