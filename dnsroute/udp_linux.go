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
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockaddrLen is the room for a source address: sockaddr_in6 holds sockaddr_in too.
const sockaddrLen = unix.SizeofSockaddrInet6

// ctrlWords is the room for a datagram's control messages, in 8-byte words (aligned, as the
// kernel's cmsghdr is): an IPV6_PKTINFO's takes 40 bytes, an IP_PKTINFO's 32.
const ctrlWords = 8

// udpRing is one worker's message headers and buffers, allocated once.
type udpRing struct {
	in    [udpBatch]unix.Mmsghdr
	inIov [udpBatch]unix.Iovec
	names [udpBatch][sockaddrLen]byte
	out   [udpBatch]unix.Mmsghdr
	outIv [udpBatch]unix.Iovec
	bufs  []byte   // udpBatch datagrams of udpBufLen
	outs  [][]byte // reply buffers

	// On a socket bound to every address (pktinfo set), the address each datagram was sent
	// to (IP_PKTINFO, IPV6_PKTINFO) and the one each reply is sent from.
	pktinfo bool
	ctrl    [udpBatch][ctrlWords]uint64
	outCtrl [udpBatch][ctrlWords]uint64
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
	if la, ok := uc.LocalAddr().(*net.UDPAddr); ok && la.IP.IsUnspecified() {
		// Bound to every address: a reply must leave from the address its query was sent
		// to, which the kernel does not pick (it picks the one of the route to the client),
		// or the client, which checks, never sees it. miekg/dns's UDP server does the same.
		if err := recvPktinfo(rc); err != nil {
			s.cfg.Logger.Warn("dns udp socket: replies to queries sent to another of the host's addresses than the route's leave from the wrong one", "err", err)
		} else {
			r.pktinfo = true
			for i := range r.in {
				r.in[i].Hdr.Control = (*byte)(unsafe.Pointer(&r.ctrl[i][0]))
			}
		}
	}
	var n int
	var errno syscall.Errno
	recv := func(fd uintptr) bool {
		for i := range r.in {
			r.in[i].Hdr.Namelen = sockaddrLen
			r.in[i].Hdr.Flags = 0
			if r.pktinfo {
				r.in[i].Hdr.SetControllen(ctrlWords * 8)
			}
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
			if r.pktinfo {
				r.replySource(i, k)
			}
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

// recvPktinfo asks the kernel to say, with each datagram read from rc, which address it was
// sent to (IP_PKTINFO on an IPv4 socket, IPV6_RECVPKTINFO on an IPv6 one, which says it of
// IPv4 datagrams too, as IPv4-mapped addresses).
func recvPktinfo(rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		var domain int
		if domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); serr != nil {
			return
		}
		if domain == unix.AF_INET6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err != nil {
		return fmt.Errorf("pktinfo: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("pktinfo: %w", serr)
	}
	return nil
}

// replySource sets reply k of r to leave from the address datagram i was sent to: the
// IP_PKTINFO or IPV6_PKTINFO that came with it, given back as the reply's. The interface is
// left to routing (index 0), as miekg/dns leaves it, except for an IPv6 link-local address,
// which means something on its own interface only. No such message: the kernel chooses.
func (r *udpRing) replySource(i, k int) {
	out := &r.out[k].Hdr
	out.Control = nil
	out.SetControllen(0)
	ctrl := unsafe.Slice((*byte)(unsafe.Pointer(&r.ctrl[i][0])), ctrlWords*8)[:r.in[i].Hdr.Controllen]
	dst := unsafe.Slice((*byte)(unsafe.Pointer(&r.outCtrl[k][0])), ctrlWords*8)
	for off := 0; off+unix.SizeofCmsghdr <= len(ctrl); {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[off]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || off+l > len(ctrl) {
			return
		}
		data := ctrl[off+unix.CmsgLen(0) : off+l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			in := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			*(*unix.Inet4Pktinfo)(unsafe.Pointer(&dst[unix.CmsgLen(0)])) = unix.Inet4Pktinfo{Spec_dst: in.Addr}
			setCmsg(out, dst, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
			return
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := *(*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			if !netip.AddrFrom16(pi.Addr).IsLinkLocalUnicast() {
				pi.Ifindex = 0
			}
			*(*unix.Inet6Pktinfo)(unsafe.Pointer(&dst[unix.CmsgLen(0)])) = pi
			setCmsg(out, dst, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
			return
		}
		off += unix.CmsgSpace(l - unix.CmsgLen(0))
	}
}

// setCmsg makes dst, whose data is written, the one control message of h: level, typ, and
// n bytes of data.
func setCmsg(h *unix.Msghdr, dst []byte, level, typ int32, n int) {
	c := (*unix.Cmsghdr)(unsafe.Pointer(&dst[0]))
	c.Level, c.Type = level, typ
	c.SetLen(unix.CmsgLen(n))
	h.Control = &dst[0]
	h.SetControllen(unix.CmsgSpace(n))
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
