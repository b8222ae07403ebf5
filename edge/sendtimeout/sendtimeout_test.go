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
	server, client := tcpPair(t)
	return NewConn(server, timeout), client
}

// tcpPair returns the two ends of a loopback TCP connection with small socket buffers: the
// server's and the client's.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
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
	return server.(*net.TCPConn), client.(*net.TCPConn)
}

// progressConn is a connection that notes when a write to it last returned having written
// something: when the send timeout last saw the client take bytes.
type progressConn struct {
	net.Conn
	last time.Time
}

func (c *progressConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.last = time.Now()
	}
	return n, err
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
// passed since the send timeout last saw the client take bytes (the socket's buffers take some
// at first), not before, and within a step and the last try after that (the package's bound
// is the timeout, a step and the last try after the last byte taken: the step is how late
// progress may be seen), over TCP and with TLS above.
func TestClientThatStopsReading(t *testing.T) {
	// A second, so that the quarter second a step gives beyond the last try covers a writer
	// held off the CPU for a while by a loaded machine.
	const timeout = time.Second
	const bound = timeout + timeout/4 + timeout/16
	for _, st := range stacks {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			s, cc := tcpPair(t)
			pc := &progressConn{Conn: s}
			server, _ := st.wrap(t, NewConn(pc, timeout), cc)
			n, err := server.Write(make([]byte, 8<<20))
			took := time.Since(pc.last)
			if err == nil {
				t.Fatalf("wrote all %d bytes to a client that reads nothing", n)
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Write: %v, want a timeout", err)
			}
			t.Logf("cut off %v after the last bytes taken", took)
			if took < timeout || took > bound {
				t.Errorf("the write failed %v after the client last took bytes, want between the %v timeout and %v", took, timeout, bound)
			}
		})
	}
}

// lateWriter is a Writev and its Target that emulate a TCP write on an edge short of CPU. Its
// first write waits in the poller and returns having taken nothing only once firstBack has
// passed since start (the writer woke that late, after every deadline the send timeout set
// meanwhile: the poller says the deadline passed and does not try the write again). A later
// write fails at once when its deadline has passed, as internal/poll checks the deadline
// before the system call; otherwise it takes every byte when takes (the client read all
// along), or nothing, failing at its deadline.
type lateWriter struct {
	start     time.Time
	firstBack time.Duration
	takes     bool
	// user, when set, is the Deadline whose user sets a deadline far ahead as a later write
	// begins: it must not cut that write's last try short.
	user *Deadline

	calls    int             // Writev calls
	deadline time.Time       // the target's write deadline
	tries    []time.Duration // the deadline of each write after the first, from its start
}

func (w *lateWriter) SetWriteDeadline(t time.Time) error {
	w.deadline = t
	return nil
}

func (w *lateWriter) Writev(a, b []byte) (int, error) {
	w.calls++
	if w.calls == 1 {
		time.Sleep(time.Until(w.start.Add(w.firstBack))) // the late wake this emulates
		return 0, os.ErrDeadlineExceeded
	}
	if w.user != nil {
		w.user.SetWriteDeadline(time.Now().Add(time.Hour))
	}
	w.tries = append(w.tries, time.Until(w.deadline))
	if !time.Now().Before(w.deadline) {
		return 0, os.ErrDeadlineExceeded
	}
	if w.takes {
		return len(a) + len(b), nil
	}
	time.Sleep(time.Until(w.deadline)) // the poller's wait for room that never comes
	return 0, os.ErrDeadlineExceeded
}

// TestLateWake: a write whose writer woke only after the timeout had passed, having taken
// nothing meanwhile, has one last try with a deadline still ahead before it fails: a client
// that read all along gets its bytes (the edge on a loaded machine cut off clients that read
// steadily: "tls: bad record MAC" at TestSendTimeoutOverTLS's client), one that still takes
// nothing is cut off then. The user's deadline, once passed, and an error that stays (no
// deadline passed) still end the write with no further try.
func TestLateWake(t *testing.T) {
	const timeout = 200 * time.Millisecond
	const lastTry = timeout / 16
	for _, tc := range []struct {
		name      string
		firstBack time.Duration
		takes     bool
		user      time.Duration // the user's deadline from the start, 0: none
		userLater bool          // the user sets a deadline far ahead during the last try
		wantErr   bool
		wantCalls int
	}{
		{name: "the client read meanwhile", firstBack: timeout * 3 / 2, takes: true, wantCalls: 2},
		{name: "the client still takes nothing", firstBack: timeout * 3 / 2, wantErr: true, wantCalls: 2},
		{name: "the user sets a deadline during the last try", firstBack: timeout * 3 / 2, takes: true, userLater: true, wantCalls: 2},
		{name: "the user's deadline passed", firstBack: timeout * 3 / 2, takes: true, user: timeout, wantErr: true, wantCalls: 1},
		{name: "an error that stays", firstBack: 0, takes: true, wantErr: true, wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := &lateWriter{start: time.Now(), firstBack: tc.firstBack, takes: tc.takes}
			var d Deadline
			d.Init(w, timeout)
			if tc.user != 0 {
				d.SetWriteDeadline(w.start.Add(tc.user))
			}
			if tc.userLater {
				w.user = &d
			}
			const size = 300 << 10
			n, err := d.Write(w, make([]byte, size), nil)
			if tc.wantErr {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("Write: %d bytes, %v; want a timeout", n, err)
				}
			} else if n != size || err != nil {
				t.Errorf("Write: %d bytes, %v; want all %d", n, err, size)
			}
			if w.calls != tc.wantCalls {
				t.Errorf("%d writes, want %d", w.calls, tc.wantCalls)
			}
			for _, ahead := range w.tries {
				if ahead <= 0 || ahead > lastTry {
					t.Errorf("a last try with its deadline %v ahead, want up to %v", ahead, lastTry)
				}
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
