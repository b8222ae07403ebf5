//go:build !linux

package edge

import (
	"net"
	"time"
)

// tcpRTT reports nothing outside Linux: TCP_INFO's layout is Linux's, so on other systems
// the latency map learns TCP clients' RTT from beacons alone (HTTP/3's is measured anywhere).
func tcpRTT(*net.TCPConn) (time.Duration, bool) { return 0, false }
