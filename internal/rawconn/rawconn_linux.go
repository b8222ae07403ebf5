package rawconn

import (
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const supported = true

// reader is one read in progress; its callback is bound once, so a read allocates nothing.
type reader struct {
	buf   []byte
	n     int
	err   error
	fn    func(fd uintptr) bool
	empty int // reads that found the socket empty, for the tests
}

func (r *reader) init() { r.fn = r.do }

func (r *reader) read(rc syscall.RawConn, p []byte) (int, error) {
	r.buf, r.n, r.err = p, 0, nil
	err := rc.Read(r.fn)
	r.buf = nil
	if err != nil {
		return 0, err
	}
	return r.n, r.err
}

func (r *reader) do(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
		switch e {
		case 0:
			r.n = int(n)
			if n == 0 {
				r.err = io.EOF
			}
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			r.empty++
			return false // wait in the poller
		default:
			r.err = os.NewSyscallError("read", e)
			return true
		}
	}
}

// writer is one write in progress, of up to two buffers.
type writer struct {
	bufs [2][]byte
	iov  [2]unix.Iovec
	n    int
	err  error
	fn   func(fd uintptr) bool
}

func (w *writer) init() { w.fn = w.do }

func (w *writer) write(rc syscall.RawConn, a, b []byte) (int, error) {
	w.bufs[0], w.bufs[1] = a, b
	w.n, w.err = 0, nil
	err := rc.Write(w.fn)
	w.bufs = [2][]byte{} // keep no reference to the caller's buffers
	w.iov = [2]unix.Iovec{}
	if err == nil {
		err = w.err
	}
	return w.n, err
}

func (w *writer) do(fd uintptr) bool {
	for {
		cnt := 0
		for _, p := range w.bufs {
			if len(p) > 0 {
				w.iov[cnt].Base = &p[0]
				w.iov[cnt].SetLen(len(p))
				cnt++
			}
		}
		if cnt == 0 {
			return true
		}
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(cnt))
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait in the poller
		default:
			w.err = os.NewSyscallError("writev", e)
			return true
		}
		w.n += int(n)
		for i := range w.bufs {
			k := min(int(n), len(w.bufs[i]))
			w.bufs[i] = w.bufs[i][k:]
			n -= uintptr(k)
		}
	}
}

// exchanger is one WriteRead in progress: a peek, a write that never waits, then a read. Its
// callback runs under RawConn.Read, which clears the socket's readiness before the first call:
// the peek and the write happen after that, so whatever arrives later, the answer or the end of
// the connection, always wakes the wait that follows.
type exchanger struct {
	out   []byte
	wrote int // of out; all of it: what is left is the read
	r     *reader
	p     prober // the peek, on the first call
	err   error
	fn    func(fd uintptr) bool
}

func (x *exchanger) init(r *reader) { x.r, x.fn = r, x.do }

// exchange checks that the socket has nothing to read (else ErrNotQuiet), writes out, as much
// as the socket takes at once, and if it took all of it reads into p once the answer arrives;
// it returns what was read, how much of out was written, and an error of any of these.
func (x *exchanger) exchange(rc syscall.RawConn, out, p []byte) (n, wrote int, err error) {
	x.out, x.wrote, x.err = out, 0, nil
	x.r.buf, x.r.n, x.r.err = p, 0, nil
	err = rc.Read(x.fn)
	wrote, n = x.wrote, x.r.n
	if err == nil {
		err = x.err
	}
	if err == nil {
		err = x.r.err // nil unless the read ran
	}
	x.out, x.r.buf = nil, nil // keep no reference to the caller's buffers
	return n, wrote, err
}

func (x *exchanger) do(fd uintptr) bool {
	if x.wrote == len(x.out) { // out is never empty (WriteRead)
		return x.r.do(fd)
	}
	// The first call (each later one reads: only a call that sent everything returns false).
	if x.p.do(fd); x.p.got != PeekQuiet {
		x.err = ErrNotQuiet
		return true
	}
	for x.wrote < len(x.out) {
		rest := x.out[x.wrote:]
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch e {
		case 0:
			x.wrote += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return true // the socket is full: WriteRead sends the rest as Write does
		default:
			x.err = os.NewSyscallError("write", e)
			return true
		}
	}
	return false // nothing to read before the answer: wait for it
}

// prober peeks at a socket without waiting; its callback is bound once, so a peek allocates
// nothing. It runs under Control, not Read, so that a deadline in the past (a pooled
// connection keeps its last exchange's) does not refuse it.
type prober struct {
	b   [1]byte
	got PeekResult
	fn  func(fd uintptr)
}

func (p *prober) init() { p.fn = p.do }

func (p *prober) probe(rc syscall.RawConn) bool {
	if rc.Control(p.fn) != nil {
		return false // closed
	}
	return p.got == PeekQuiet
}

func (p *prober) do(fd uintptr) {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.b[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			p.got = PeekQuiet // nothing to read, and the peer has not closed its side
		case e == 0 && n > 0:
			p.got = PeekData
		default:
			p.got = PeekGone // the end of the stream (0 bytes), or an error
		}
		return
	}
}

// hangupWait is a HangupWatch's Wait in progress; its callback is bound once.
type hangupWait struct {
	events [64]unix.EpollEvent
	report func(id uint64)
	err    error
	fn     func(fd uintptr) bool
}

func (h *hangupWait) init() { h.fn = h.do }

// do reports every connection the epoll instance has ready; false (wait in the poller) once
// it has none left.
func (h *hangupWait) do(epfd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(epfd), h.events[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			h.err = os.NewSyscallError("epoll_wait", err)
			return true
		}
		for i := range h.events[:n] {
			h.report(*(*uint64)(unsafe.Pointer(&h.events[i].Fd)))
		}
		if n < len(h.events) {
			return false
		}
	}
}

type watchOp int

const (
	watchAdd watchOp = iota
	watchRemove
)

// watchOpOn adds fd to the epoll instance epfd under id, or removes it. An added fd is reported,
// edge-triggered, when its peer ends its side (EPOLLRDHUP) or it hangs up or fails (EPOLLHUP
// and EPOLLERR, which epoll always reports); not for bytes arriving.
func watchOpOn(epfd uintptr, op watchOp, fd uintptr, id uint64) error {
	var ev unix.EpollEvent
	ev.Events = unix.EPOLLRDHUP | unix.EPOLLET
	// Fd and Pad are the kernel's 64-bit data, which carries the id.
	*(*uint64)(unsafe.Pointer(&ev.Fd)) = id
	ctl := unix.EPOLL_CTL_ADD
	if op == watchRemove {
		ctl = unix.EPOLL_CTL_DEL
	}
	if err := unix.EpollCtl(int(epfd), ctl, int(fd), &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// newHangupWatchFile returns a new epoll instance as a pollable *os.File (non-blocking, so that
// os.NewFile puts it in the runtime's poller: an epoll instance is readable while it has a
// ready entry).
func newHangupWatchFile() (*os.File, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	return os.NewFile(uintptr(fd), "epoll"), nil
}

// looper is a Loop in progress; its callback is bound once, so a Loop allocates nothing.
type looper struct {
	step    func() bool
	fd      uintptr
	drained bool // a read since the last call of step emptied the socket (Loop)
	counted bool // by the kernel's count after its bytes, not by finding it empty (LoopReadMore)
	empty   int  // reads that found the socket empty, for the tests
	fn      func(fd uintptr) bool

	// Each read asks the kernel what is left after it (TCP_INQ): a read that returns fewer
	// bytes than asked for may have taken the end of the stream along (the FIN behind the
	// last bytes), which nothing announces again, so only the kernel's count says whether
	// the socket is empty. inq says the socket gives the count; without it only EAGAIN does.
	inq   bool
	inqFn func(fd uintptr) // turns TCP_INQ on, at the start of each Loop
	msg   unix.Msghdr
	iov   unix.Iovec
	cmsg  [8]uint64 // room for one TCP_CM_INQ message, aligned as a cmsghdr must be
}

func (l *looper) init() {
	l.fn = l.do
	l.inqFn = func(fd uintptr) { l.inq = unix.SetsockoptInt(int(fd), unix.SOL_TCP, unix.TCP_INQ, 1) == nil }
	l.msg.Iov = &l.iov
	l.msg.SetIovlen(1)
	l.msg.Control = (*byte)(unsafe.Pointer(&l.cmsg[0]))
}

func (l *looper) loop(rc syscall.RawConn, step func() bool) error {
	if err := rc.Control(l.inqFn); err != nil {
		return err
	}
	l.step = step
	err := rc.Read(l.fn)
	l.step, l.fd = nil, 0
	return err
}

func (l *looper) do(fd uintptr) bool {
	l.fd, l.drained, l.counted = fd, false, false
	return !l.step()
}

// read reads into p once, unless a read since the step was called emptied the socket; with
// more, only a read that found it empty counts as having emptied it (LoopReadMore).
func (l *looper) read(p []byte, more bool) (int, error) {
	if l.drained && !(more && l.counted) || l.step == nil {
		return 0, ErrWouldBlock
	}
	l.iov.Base = &p[0]
	l.iov.SetLen(len(p))
	var n uintptr
	var e syscall.Errno
	for {
		l.msg.SetControllen(int(unsafe.Sizeof(l.cmsg))) // the kernel sets it to what it wrote
		n, _, e = unix.RawSyscall(unix.SYS_RECVMSG, l.fd, uintptr(unsafe.Pointer(&l.msg)), 0)
		if e != unix.EINTR {
			break
		}
	}
	l.iov.Base = nil // keep no reference to the caller's buffer
	switch e {
	case 0:
		if n == 0 {
			return 0, io.EOF
		}
		// Nothing left, not even the end of the stream (which TCP_INQ counts as a byte):
		// what comes next will be announced.
		l.drained = l.inq && l.left() == 0
		l.counted = l.drained
		return int(n), nil
	case unix.EAGAIN:
		l.drained, l.counted = true, false
		l.empty++
		return 0, ErrWouldBlock
	default:
		return 0, os.NewSyscallError("recvmsg", e)
	}
}

// left returns what the kernel says is left to read after the last recvmsg (TCP_CM_INQ), or
// -1 when it did not say.
func (l *looper) left() int {
	if int(l.msg.Controllen) < unix.CmsgLen(4) {
		return -1
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&l.cmsg[0]))
	if h.Level != unix.SOL_TCP || h.Type != unix.TCP_CM_INQ || int(h.Len) < unix.CmsgLen(4) {
		return -1
	}
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(&l.cmsg[0]), unix.CmsgLen(0))))
}

func shutdownBoth(fd uintptr) error {
	if err := unix.Shutdown(int(fd), unix.SHUT_RDWR); err != nil {
		return os.NewSyscallError("shutdown", err)
	}
	return nil
}
