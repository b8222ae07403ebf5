//go:build !linux

package dnsroute

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatchConn(uc *net.UDPConn) batchConn {
	if a, ok := uc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		return ipv4.NewPacketConn(uc)
	}
	return ipv6.NewPacketConn(uc)
}

// serveUDPBatch is serveUDP for a *net.UDPConn on systems other than Linux (udp_linux.go):
// batched reads and writes through x/net.
func (s *Server) serveUDPBatch(ctx context.Context, uc *net.UDPConn) {
	bc := newBatchConn(uc)
	w := newWorker()
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, udpBatch)
	outBufs := make([][]byte, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, udpBufLen)}
		out[i].Buffers = [][]byte{nil}
		outBufs[i] = make([]byte, 0, udpBufLen)
	}
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		k := 0
		for i := range n {
			ua, ok := in[i].Addr.(*net.UDPAddr)
			if !ok || ua.Port == 0 {
				continue // source port 0: no reply is wanted (RFC 768), nor can be sent
			}
			from := ua.AddrPort()
			w.out = outBufs[k][:0]
			resp := s.handleUDP(w, in[i].Buffers[0][:in[i].N], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
			if resp == nil {
				continue
			}
			if cap(resp) > cap(outBufs[k]) {
				outBufs[k] = resp[:0] // keep the grown buffer for next time
			}
			out[k].Buffers[0] = resp
			out[k].Addr = ua
			k++
		}
		s.flushHits(w)
		for sent := 0; sent < k; {
			m, err := bc.WriteBatch(out[sent:k], 0)
			sent += m
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				sent++ // drop the reply that failed, not the ones behind it; UDP clients retry
			}
		}
	}
}
