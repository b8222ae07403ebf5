package http1

// Raw reads and writes for the fast path's TCP connections. The system calls are raw (no
// entersyscall): the socket is non-blocking, so they never block, and an empty socket or a
// full send buffer parks the goroutine in the network poller as net.Conn's would. A write
// over loopback runs the receiver's delivery inline for tens of microseconds, long enough
// that the runtime's sysmon takes the P away from a goroutine in an ordinary system call and
// wakes another thread to run it; under wrk that made most of the edge's futex calls and kept
// sysmon polling every 20 µs (docs/benchmarks.md, issue 15). DNS's UDP loop does the same
// (dnsroute/udp_linux.go).

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawIO does one connection's reads and writes. Its callbacks are bound once, so a read or
// a write allocates nothing.
type rawIO struct {
	rc syscall.RawConn

	rbuf    []byte
	rn      int
	rerr    error
	readFn  func(fd uintptr) bool
	wbufs   [2][]byte
	iov     [2]unix.Iovec
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// rawTCP is implemented by a connection that wraps a TCP connection without changing its
// Read and Write (the edge's RTT sampling), so raw I/O on the TCP socket is the same I/O.
type rawTCP interface {
	RawTCP() *net.TCPConn
}

// newRawIO returns raw I/O for nc, or nil when nc is not a plain TCP connection (TLS, a
// connection that adds its own behaviour to Read or Write): those use nc itself.
func newRawIO(nc net.Conn) *rawIO {
	var tc *net.TCPConn
	switch c := nc.(type) {
	case *net.TCPConn:
		tc = c
	case rawTCP:
		tc = c.RawTCP()
	}
	if tc == nil {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc}
	r.readFn = r.doRead
	r.writeFn = r.doWrite
	return r
}

// read reads into p, waiting in the poller while the socket is empty; the read deadline
// applies as for net.Conn.
func (r *rawIO) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerr = p, 0, nil
	err := r.rc.Read(r.readFn)
	r.rbuf = nil
	if err != nil {
		return 0, err
	}
	return r.rn, r.rerr
}

func (r *rawIO) doRead(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		switch e {
		case 0:
			r.rn = int(n)
			if n == 0 {
				r.rerr = io.EOF
			}
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait in the poller
		default:
			r.rerr = os.NewSyscallError("read", e)
			return true
		}
	}
}

// write writes a and then b (either may be empty) with writev, waiting in the poller while
// the send buffer is full; the write deadline applies as for net.Conn.
func (r *rawIO) write(a, b []byte) (int, error) {
	r.wbufs[0], r.wbufs[1] = a, b
	r.wn, r.werr = 0, nil
	err := r.rc.Write(r.writeFn)
	r.wbufs = [2][]byte{}
	r.iov = [2]unix.Iovec{}
	if err == nil {
		err = r.werr
	}
	return r.wn, err
}

func (r *rawIO) doWrite(fd uintptr) bool {
	for {
		cnt := 0
		for _, p := range r.wbufs {
			if len(p) > 0 {
				r.iov[cnt].Base = &p[0]
				r.iov[cnt].SetLen(len(p))
				cnt++
			}
		}
		if cnt == 0 {
			return true
		}
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&r.iov[0])), uintptr(cnt))
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait in the poller
		default:
			r.werr = os.NewSyscallError("writev", e)
			return true
		}
		r.wn += int(n)
		for i := range r.wbufs {
			k := min(int(n), len(r.wbufs[i]))
			r.wbufs[i] = r.wbufs[i][k:]
			n -= uintptr(k)
		}
	}
}
