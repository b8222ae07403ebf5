package edge

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// tcpRTT is the kernel's smoothed RTT of c (tcpi_rtt), and whether it holds a sample of
// response data: the client has acknowledged some (tcpi_bytes_acked), so it is more than the
// handshake's single round trip.
func tcpRTT(c *net.TCPConn) (time.Duration, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var serr error
	if err := raw.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || serr != nil {
		return 0, false
	}
	return time.Duration(info.Rtt) * time.Microsecond, info.Rtt > 0 && info.Bytes_acked > 0
}
