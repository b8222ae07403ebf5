package dnsroute

// The Linux UDP loop. Each worker reads a batch with one recvmmsg, answers it inline and
// writes the answers with one sendmmsg, like gdnsd. The system calls are raw (no
// entersyscall): both are non-blocking, and a sendmmsg over loopback runs the receivers'
// delivery inline for tens of microseconds, long enough that the runtime's sysmon took the
// worker's P away in the middle of nearly every batch and woke another thread to look for
// work (under dnsperf, sysmon alone was 14 % of the server's CPU; docs/benchmarks.md, issue
// 15). Blocking in recvmmsg as gdnsd does hands sysmon the same P to retake, and measured
// worse; so only an empty socket parks the worker, in the network poller. Addresses stay in
// fixed sockaddr buffers, so answering from the cache allocates nothing.

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockaddrLen is the room for a source address: sockaddr_in6 holds sockaddr_in too.
const sockaddrLen = unix.SizeofSockaddrInet6

// udpRing is one worker's message headers and buffers, allocated once.
type udpRing struct {
	in    [udpBatch]unix.Mmsghdr
	inIov [udpBatch]unix.Iovec
	names [udpBatch][sockaddrLen]byte
	out   [udpBatch]unix.Mmsghdr
	outIv [udpBatch]unix.Iovec
	bufs  []byte   // udpBatch datagrams of udpBufLen
	outs  [][]byte // reply buffers
}

func newUDPRing() *udpRing {
	r := &udpRing{bufs: make([]byte, udpBatch*udpBufLen), outs: make([][]byte, udpBatch)}
	for i := range r.in {
		r.inIov[i].Base = &r.bufs[i*udpBufLen]
		r.inIov[i].SetLen(udpBufLen)
		r.in[i].Hdr.Iov = &r.inIov[i]
		r.in[i].Hdr.SetIovlen(1)
		r.in[i].Hdr.Name = &r.names[i][0]
		r.out[i].Hdr.Iov = &r.outIv[i]
		r.out[i].Hdr.SetIovlen(1)
		r.outs[i] = make([]byte, 0, udpBufLen)
	}
	return r
}

// serveUDPBatch answers queries on uc until ctx ends or uc is closed (serve sets a read
// deadline to stop it).
func (s *Server) serveUDPBatch(ctx context.Context, uc *net.UDPConn) {
	rc, err := uc.SyscallConn()
	if err != nil {
		s.cfg.Logger.Error("dns udp socket", "err", err)
		return
	}
	w := newWorker()
	r := newUDPRing()
	var n int
	var errno syscall.Errno
	recv := func(fd uintptr) bool {
		for i := range r.in {
			r.in[i].Hdr.Namelen = sockaddrLen
			r.in[i].Hdr.Flags = 0
		}
		n, errno = recvmmsg(fd, r.in[:])
		return errno != unix.EAGAIN && errno != unix.EINTR // false: wait in the poller
	}
	var k int
	send := func(fd uintptr) bool {
		for sent := 0; sent < k; {
			// MSG_DONTWAIT: with the send buffer full (the interface's queue backed up),
			// the rest of the batch is dropped and counted rather than waited for; the
			// worker goes back to reading, and UDP clients retry.
			m, errno := sendBatch(fd, r.out[sent:k])
			switch errno {
			case 0:
				sent += m
			case unix.EINTR:
			case unix.EAGAIN:
				s.m.dropped.WithLabelValues("send").Add(float64(k - sent))
				sent = k
			default:
				// The kernel refused this reply's address (a spoofed source, a broadcast
				// one, a firewall's EPERM): drop it alone, not the replies behind it.
				s.m.dropped.WithLabelValues("send").Inc()
				sent++
			}
		}
		return true
	}
	for {
		if err := rc.Read(recv); err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if errno != 0 || n <= 0 {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		k = 0
		for i := range n {
			from, ok := sockaddrPort(r.names[i][:r.in[i].Hdr.Namelen])
			if !ok || from.Port() == 0 {
				continue // source port 0: no reply is wanted (RFC 768), nor can be sent
			}
			w.out = r.outs[k][:0]
			p := r.bufs[i*udpBufLen : i*udpBufLen+min(int(r.in[i].Len), udpBufLen)]
			var resp []byte
			if r.in[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
				resp = s.tooLong(w, p)
			} else {
				resp = s.handleUDP(w, p, from)
			}
			if len(resp) == 0 {
				continue
			}
			if cap(resp) > cap(r.outs[k]) {
				r.outs[k] = resp[:0] // keep the grown buffer for next time
			}
			r.outIv[k].Base = &resp[0]
			r.outIv[k].SetLen(len(resp))
			r.out[k].Hdr.Name = &r.names[i][0]
			r.out[k].Hdr.Namelen = r.in[i].Hdr.Namelen
			k++
		}
		s.flushHits(w)
		if k > 0 {
			if err := rc.Write(send); err != nil && (ctx.Err() != nil || errors.Is(err, net.ErrClosed)) {
				return
			}
		}
	}
}

// recvmmsg reads up to len(ms) datagrams without blocking.
func recvmmsg(fd uintptr, ms []unix.Mmsghdr) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&ms[0])), uintptr(len(ms)), unix.MSG_DONTWAIT, 0, 0)
	return int(n), errno
}

// sendBatch is sendmmsg; tests make it refuse an address, as the kernel can.
var sendBatch = sendmmsg

// sendmmsg writes the datagrams of ms without blocking; it returns how many were sent. When
// the first fails it returns its error; when a later one fails it returns how many were
// sent before it, and the next call returns the error.
func sendmmsg(fd uintptr, ms []unix.Mmsghdr) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&ms[0])), uintptr(len(ms)), unix.MSG_DONTWAIT, 0, 0)
	return int(n), errno
}

// sockaddrPort reads a raw sockaddr_in or sockaddr_in6; IPv4-mapped addresses are unmapped.
func sockaddrPort(b []byte) (netip.AddrPort, bool) {
	if len(b) < 2 {
		return netip.AddrPort{}, false
	}
	switch *(*uint16)(unsafe.Pointer(&b[0])) { // sa_family is in host order
	case unix.AF_INET:
		if len(b) < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:])), true
	case unix.AF_INET6:
		if len(b) < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), binary.BigEndian.Uint16(b[2:])), true
	}
	return netip.AddrPort{}, false
}
