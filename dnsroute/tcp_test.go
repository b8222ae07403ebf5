package dnsroute

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// readAnswers reads length-prefixed messages from c until an error, which it returns with
// how many it read.
func readAnswers(c net.Conn) (int, error) {
	for n := 0; ; n++ {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return n, err
		}
		if _, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint16(l[:]))); err != nil {
			return n, err
		}
	}
}

// TestTCPClientThatDoesNotReadIsDropped: a TCP client that pipelines queries and reads none
// of the answers holds its connection no longer than the write timeout: the server gives up
// on an answer the client has not taken within tcpWriteTimeout, counts it as dropped
// ("send") and closes the connection, whose end the client then reads after the answers
// written before. Found probing: miekg/dns sets no write deadline (its Server.WriteTimeout is
// documented but unused), so the connection's goroutine waited in the write for good, and
// the server's shutdown with it.
func TestTCPClientThatDoesNotReadIsDropped(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		// Answers of some 56 KB: a connection's worth of them (128) is more than loopback
		// sockets buffer.
		c.AnswerCount = 2000
		for i := range 2000 {
			c.PoPs[0].Nodes = append(c.PoPs[0].Nodes, NodeConfig{ID: fmt.Sprintf("lhr-big-%d", i), Capacity: 1000,
				IPv6: fmt.Sprintf("2001:db8:ee::%x:%x", i/256, i%256)})
		}
	})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, 1, 60)}} // London: lhr
	conn, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := conn
	var burst []byte
	for i := range maxBadTCP {
		m := new(dns.Msg)
		m.SetQuestion("www.cdn.example.", dns.TypeAAAA)
		m.Id = uint16(i)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		burst = append(binary.BigEndian.AppendUint16(burst, uint16(len(b))), b...)
	}
	if _, err := c.Write(burst); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 3*tcpWriteTimeout, "an answer dropped as not taken", func() bool { return metricValue(t, ts.Server, "meridian_dns_dropped_total", "send") > 0 })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := readAnswers(c)
	if errors.Is(err, os.ErrDeadlineExceeded) || n >= maxBadTCP {
		t.Errorf("read %d answers then %v; want fewer than %d, then the end of the connection", n, err, maxBadTCP)
	}
}

// TestTCPPartialMessages: a message must arrive whole within the read timeout (5 s for the
// first, the idle timeout for later ones): a length prefix with fewer bytes behind it, or
// half a prefix, ends the connection then, and a message of length 0 gets no answer while
// the connection serves on.
func TestTCPPartialMessages(t *testing.T) {
	ts := startServer(t, nil)
	q := new(dns.Msg)
	q.SetQuestion("www.cdn.example.", dns.TypeA)
	q.Id = 77
	qb, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	framed := binary.BigEndian.AppendUint16(nil, uint16(len(qb)))
	framed = append(framed, qb...)
	for _, tt := range []struct {
		name    string
		send    []byte
		answers int
	}{
		{"length prefix longer than the data", append([]byte{0, 100}, make([]byte, 10)...), 0},
		{"half a length prefix", []byte{0}, 0},
		{"a query, then a cut one", append(slices.Clone(framed), framed[:len(framed)-1]...), 1},
		{"a message of length 0, then a query", append([]byte{0, 0}, framed...), 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			// The server ends the connection by its own timeouts, well within this one.
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			n, err := readAnswers(c)
			if n != tt.answers || !errors.Is(err, io.EOF) {
				t.Errorf("read %d answers then %v; want %d, then the end of the connection", n, err, tt.answers)
			}
		})
	}
}

// TestTCPConnectionsBounded: the server serves at most max_tcp_connections TCP connections at
// once (RFC 7766 section 10); a connection beyond them waits in the kernel's accept queue,
// its query unread, until one ends. Found in review: there was no bound, so idle connections
// (each held 5 s, or 10 s after a query) took file descriptors until accept failed with
// EMFILE, which miekg/dns retries without a pause (some 15,000 failing accepts a second in a
// test here), while the admin listener, NATS and MMDB reloads could open nothing.
func TestTCPConnectionsBounded(t *testing.T) {
	const limit = 2
	ts := startServer(t, func(c *Config) { c.MaxTCPConnections = limit })
	q := new(dns.Msg)
	q.SetQuestion("www.cdn.example.", dns.TypeA)
	qb, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	framed := append(binary.BigEndian.AppendUint16(nil, uint16(len(qb))), qb...)
	read := func(c net.Conn, wait time.Duration) error {
		c.SetReadDeadline(time.Now().Add(wait))
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint16(l[:])))
		return err
	}
	ask := func(c net.Conn, wait time.Duration) error {
		if _, err := c.Write(framed); err != nil {
			return err
		}
		return read(c, wait)
	}
	var held []net.Conn
	for range limit {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ask(c, 5*time.Second); err != nil {
			t.Fatalf("connection %d of %d: %v", len(held)+1, limit, err)
		}
		held = append(held, c)
	}
	extra, err := net.Dial("tcp", ts.addr) // the kernel completes the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := ask(extra, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a query on connection %d while %d are open: %v, want no answer", limit+1, limit, err)
	}
	held[0].Close()
	if err := read(extra, 5*time.Second); err != nil {
		t.Errorf("after a connection closed, the waiting one: %v, want its answer", err)
	}
}
