package dnsroute

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
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
	waitFor(t, 3*tcpWriteTimeout, func() bool { return metricValue(t, ts.Server, "meridian_dns_dropped_total", "send") > 0 })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := readAnswers(c)
	if errors.Is(err, os.ErrDeadlineExceeded) || n >= maxBadTCP {
		t.Errorf("read %d answers then %v; want fewer than %d, then the end of the connection", n, err, maxBadTCP)
	}
}
