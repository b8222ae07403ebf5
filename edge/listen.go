package edge

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort lets a new process bind the same address while the old one still holds it (a
// restart or rolling upgrade loses no connection attempt): SO_REUSEPORT on TCP and UDP.
var reusePort = net.ListenConfig{
	Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	},
}

// ListenTCP listens on addr with SO_REUSEPORT.
func ListenTCP(ctx context.Context, addr string) (net.Listener, error) {
	return reusePort.Listen(ctx, "tcp", addr)
}

// ListenUDP listens on addr with SO_REUSEPORT.
func ListenUDP(ctx context.Context, addr string) (net.PacketConn, error) {
	return reusePort.ListenPacket(ctx, "udp", addr)
}
