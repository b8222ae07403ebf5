//go:build !linux

package http1

import "net"

// rawIO is Linux only (rawio_linux.go); elsewhere connections use net.Conn's I/O.
type rawIO struct{}

func newRawIO(net.Conn) *rawIO { return nil }

func (*rawIO) read([]byte) (int, error)       { panic("http1: no raw I/O on this system") }
func (*rawIO) write(a, b []byte) (int, error) { panic("http1: no raw I/O on this system") }
