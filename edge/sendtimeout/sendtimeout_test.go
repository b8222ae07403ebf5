package sendtimeout

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection with small socket buffers, so that a
// write of a few hundred KiB waits for the client: the server's end wrapped with a send
// timeout of timeout, and the client's.
func pair(t *testing.T, timeout time.Duration) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.107:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	server.(*net.TCPConn).SetWriteBuffer(32 << 10)
	client.(*net.TCPConn).SetReadBuffer(64 << 10)
	return NewConn(server, timeout), client.(*net.TCPConn)
}

// overTLS puts TLS over both ends of a pair, as the edge puts crypto/tls over Conn.
func overTLS(t *testing.T, server, client net.Conn) (net.Conn, net.Conn) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ts := tls.Server(server, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	tc := tls.Client(client, &tls.Config{InsecureSkipVerify: true, ServerName: "test"})
	errc := make(chan error, 1)
	go func() { errc <- tc.Handshake() }()
	if err := ts.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return ts, tc
}

var stacks = []struct {
	name string
	wrap func(t *testing.T, server, client net.Conn) (net.Conn, net.Conn)
}{
	{"tcp", func(_ *testing.T, s, c net.Conn) (net.Conn, net.Conn) { return s, c }},
	{"tls over it", overTLS},
}

// TestClientThatStopsReading: a write the client takes nothing of fails once the timeout has
// passed, not before, over TCP and with TLS above.
func TestClientThatStopsReading(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, st := range stacks {
		t.Run(st.name, func(t *testing.T) {
			sc, cc := pair(t, timeout)
			server, _ := st.wrap(t, sc, cc)
			start := time.Now()
			n, err := server.Write(make([]byte, 8<<20))
			took := time.Since(start)
			if err == nil {
				t.Fatalf("wrote all %d bytes to a client that reads nothing", n)
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Write: %v, want a timeout", err)
			}
			t.Logf("cut off after %v", took)
			if took < timeout || took > 5*time.Second {
				t.Errorf("the write failed after %v, want about the %v timeout", took, timeout)
			}
		})
	}
}

// readSlowly reads r to its end, 16 KiB at a time with a pause between reads, and returns how
// many bytes it read.
func readSlowly(r io.Reader, pace time.Duration) (int, error) {
	buf := make([]byte, 16<<10)
	total := 0
	for {
		n, err := io.ReadFull(r, buf)
		total += n
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		time.Sleep(pace) // a slow link: the reader's pace, not a wait for an event
	}
}

// TestSlowSteadyReader: one write that takes several times the timeout goes out whole to a
// client that reads slowly but all the time: the timeout bounds a wait for progress, not the
// write (as net/http's WriteTimeout would).
func TestSlowSteadyReader(t *testing.T) {
	// A second, and a write of over 2 s (128 reads of 16 KiB at 20 ms, less what the socket
	// buffers hold at the end): a reader held off the CPU for a few hundred milliseconds by a
	// loaded machine must not look stopped.
	const timeout = time.Second
	const size = 2 << 20
	for _, st := range stacks {
		t.Run(st.name, func(t *testing.T) {
			sc, cc := pair(t, timeout)
			server, client := st.wrap(t, sc, cc)
			read := make(chan int, 1)
			go func() {
				n, _ := readSlowly(client, 20*time.Millisecond)
				read <- n
			}()
			start := time.Now()
			if _, err := server.Write(make([]byte, size)); err != nil {
				t.Fatalf("Write after %v: %v", time.Since(start), err)
			}
			if took := time.Since(start); took < 2*timeout {
				t.Fatalf("the write took %v: the test wants one longer than the %v timeout", took, timeout)
			}
			server.Close()
			if n := <-read; n != size {
				t.Errorf("the client read %d bytes, want %d", n, size)
			}
		})
	}
}

// TestUserDeadline: a deadline the user sets ends a write for good when it passes, progress or
// not; cleared, it leaves the writes to the send timeout.
func TestUserDeadline(t *testing.T) {
	sc, cc := pair(t, 10*time.Second)
	go readSlowly(cc, 10*time.Millisecond)
	sc.SetWriteDeadline(time.Now().Add(150 * time.Millisecond))
	start := time.Now()
	if _, err := sc.Write(make([]byte, 4<<20)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past the user's deadline: %v, want a timeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the user's deadline ended the write after %v", took)
	}
	sc2, cc2 := pair(t, 10*time.Second)
	go readSlowly(cc2, 10*time.Millisecond)
	sc2.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := sc2.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write after the user's deadline: %v, want a timeout", err)
	}
	sc2.SetWriteDeadline(time.Time{})
	if _, err := sc2.Write(make([]byte, 256<<10)); err != nil {
		t.Fatalf("Write once the user cleared the deadline: %v", err)
	}
}

// nopWriter takes every write at once.
type nopWriter struct{}

func (nopWriter) Writev(a, b []byte) (int, error)  { return len(a) + len(b), nil }
func (nopWriter) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkWrite is what the send timeout adds to a write that does not wait: the cost on
// every answer of the HTTP/1.1 fast path.
func BenchmarkWrite(b *testing.B) {
	var d Deadline
	d.Init(nopWriter{}, 0)
	p := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		d.Write(nopWriter{}, p, nil)
	}
}
