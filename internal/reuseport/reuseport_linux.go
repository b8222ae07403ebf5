package reuseport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Available reports whether sockets really get SO_REUSEPORT here.
const Available = true

func control(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
