package http1

import (
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/meridian-cdn/meridian/internal/rawconn"
)

// Lingering close.
//
// When the server ends a connection after an answer (the client's Connection: close or the
// server's own), the client may have sent bytes the server never read: requests pipelined
// behind the last one, in the same segment or a later one. Closing a socket with unread bytes
// makes the kernel send a reset instead of the end of the stream: what the server's kernel
// had not yet sent of the answer is dropped, and a client's kernel may drop what the client
// had not yet read, so the client loses the answer's end. So, as nginx does by default
// (lingering_close on), a connection that shows a sign of unread input is half-closed, which
// sends the end of the answer after its last byte, then read and discarded until the client
// closes its side, each read waiting at most LingerTimeout and all of them at most
// LingerTime; only then is it closed. A connection without such a sign is closed at once.

const (
	defaultLingerTimeout = 5 * time.Second  // nginx's lingering_timeout
	defaultLingerTime    = 30 * time.Second // nginx's lingering_time
)

// lingerClose lingers, if it should, before serve closes a connection whose last answer went
// out whole and ended it (closeLinger). It runs on the connection's goroutine. Shutdown
// waits for it as for a request in flight (every answer during a Shutdown ends its
// connection, and one answered while the client sent more must not be reset either), bounded
// by Shutdown's context, as nginx's graceful shutdown waits for its lingering connections;
// Close ends it at once, by closing the socket under its read.
func (c *conn) lingerClose() {
	s := c.srv
	if s.LingerTime < 0 || !c.mayHaveUnread() {
		return
	}
	c.lingering.Store(true) // for Close (shut)
	rd := c.halfClose()
	if rd == nil {
		return
	}
	if s.lingering != nil {
		s.lingering()
	}
	timeout, total := s.LingerTimeout, s.LingerTime
	if timeout <= 0 {
		timeout = defaultLingerTimeout
	}
	if total == 0 {
		total = defaultLingerTime
	}
	end := time.Now().Add(total)
	buf := c.out[:cap(c.out)] // the answer is written: its buffer is free (at least 4 KiB, as nginx's)
	for {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		dl := now.Add(timeout)
		if dl.After(end) {
			dl = end
		}
		rd.SetReadDeadline(dl)
		if _, err := rd.Read(buf); err != nil {
			return // the client's end, a timeout, or Shutdown or Close closing the socket
		}
	}
}

// mayHaveUnread reports whether the client may have sent bytes the server has not read, by
// nginx's signs: bytes read ahead and not consumed (here also the byte a watch kept), a
// request seen pipelined on this connection (more may be on the way), or the socket readable
// now, which one peek tells without waiting. It is asked only when a connection ends after an
// answer, never on a kept-alive one. Where the socket cannot be peeked at (not Linux, or no
// TCP socket), it cannot rule unread bytes out and says yes.
func (c *conn) mayHaveUnread() bool {
	if c.br.Buffered() > 0 || c.cr.hasByte || c.pipelined {
		return true
	}
	p := rawconn.NewProber(c.nc) // through TLS too: it peeks at the TCP socket beneath
	return p == nil || !p.Quiet()
}

// halfClose shuts the connection's sending side, so that the client reads the end of the
// answer while the server still reads, and returns the connection to read the client's
// remaining bytes from; nil if it cannot be half-closed (it is then closed at once).
//
// Over TLS, crypto/tls's CloseWrite sends close_notify, the end of the TLS stream, and leaves
// the TCP connection open; the TCP side is half-closed too, as nginx does (SSL_shutdown, then
// shutdown(SHUT_WR)), and what the client still sends is read from the TCP connection and
// dropped without being decrypted. Without a TCP half-close beneath (a wrapper that has none)
// close_notify is still the end a TLS client reads, so the connection lingers all the same.
func (c *conn) halfClose() net.Conn {
	if tc, ok := c.nc.(*tls.Conn); ok {
		if tc.CloseWrite() != nil { // an answer was written, so the handshake is complete
			return nil
		}
		rd := tc.NetConn()
		closeWrite(rd)
		return rd
	}
	if closeWrite(c.cr.nc) != nil {
		return nil
	}
	return c.cr.nc
}

// shut closes the connection for Shutdown and Close. A lingering TLS connection is closed
// beneath TLS: its close_notify may be waiting for room in a full send buffer (crypto/tls
// gives it 5 s), holding the TLS connection's write lock, which tls.Conn's Close would wait
// for while the caller holds the server's lock.
func (c *conn) shut() {
	if tc, ok := c.nc.(*tls.Conn); ok && c.lingering.Load() {
		tc.NetConn().Close()
		return
	}
	c.closeSocket()
}

// closeWrite half-closes nc's TCP connection: its own CloseWrite (net.TCPConn's, rawconn's),
// or that of the TCP connection a TCPer wraps.
func closeWrite(nc net.Conn) error {
	switch t := nc.(type) {
	case interface{ CloseWrite() error }:
		return t.CloseWrite()
	case rawconn.TCPer:
		return t.TCP().CloseWrite()
	}
	return errors.ErrUnsupported
}
