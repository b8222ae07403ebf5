//go:build !linux

package reuseport

import "syscall"

// Available reports whether sockets really get SO_REUSEPORT here.
const Available = false

func control(_, _ string, _ syscall.RawConn) error { return nil }
