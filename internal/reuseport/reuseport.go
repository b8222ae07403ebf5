// Package reuseport opens listening sockets with SO_REUSEPORT, so that a new process can bind
// an address while the old one still holds it: restarts and rolling upgrades lose no
// connection attempt. Where the platform lacks it, sockets are opened without it.
package reuseport

import (
	"context"
	"net"
)

// Config is a net.ListenConfig that sets SO_REUSEPORT on every socket it opens.
var Config = net.ListenConfig{Control: control}

// Listen opens a TCP listener on addr with SO_REUSEPORT.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	return Config.Listen(ctx, "tcp", addr)
}

// ListenPacket opens a UDP socket on addr with SO_REUSEPORT.
func ListenPacket(ctx context.Context, addr string) (net.PacketConn, error) {
	return Config.ListenPacket(ctx, "udp", addr)
}
