package http1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/rawconn"
	"github.com/meridian-cdn/meridian/internal/wait"
)

// serveLinger serves h on 127.0.0.65, over TLS if asked, and returns the server and a dial
// for its clients: each a slow reader (a small receive buffer, so that much of a large answer
// is still in flight when the server is done writing it), with a deadline that ends a test
// that hangs.
func serveLinger(t *testing.T, h http.Handler, useTLS bool, tweak func(*Server)) (*Server, func() net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.65:0")
	if err != nil {
		t.Fatal(err)
	}
	var clientTLS *tls.Config
	if useTLS {
		var serverTLS *tls.Config
		serverTLS, clientTLS = tlsConfigs(t)
		ln = tls.NewListener(ln, serverTLS)
	}
	s, addr := serveFastOn(t, ln, h, tweak)
	return s, func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetReadBuffer(64 << 10)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if clientTLS == nil {
			return c
		}
		tc := tls.Client(c, clientTLS)
		if err := tc.Handshake(); err != nil {
			c.Close()
			t.Fatal(err)
		}
		return tc
	}
}

// tlsConfigs returns a server's TLS configuration with a self-signed certificate for
// linger.test, and a client's that trusts it.
func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "linger.test"},
		DNSNames:     []string{"linger.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool, ServerName: "linger.test"}
}

// readToEnd reads one answer from br, which must be a 200 with body want, and then the end of
// the stream: a clean end (EOF, or close_notify over TLS), not a reset.
func readToEnd(t *testing.T, br *bufio.Reader, want []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer's head: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d of the answer's %d bytes (equal: %v), then %v; want all of it", len(got), len(want), bytes.Equal(got, want), err)
	}
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the answer: %q, %v; want the end of the stream (EOF)", b, err)
	}
}

// A connection that ends after an answer while the client has sent more (a request the
// server does not read) lingers: the client reads the whole answer, still in flight when the
// handler returns, and then the end of the stream. Closed at once, the socket with unread
// bytes reset the connection: the client lost the answer's end and read ECONNRESET.
func TestLingerKeepsAnswerEnd(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), (4<<20)/16)
	for _, tc := range []struct {
		name          string
		tls           bool
		handlerCloses bool // the handler's Connection: close, not the client's
	}{
		{"client asks close", false, false},
		{"handler closes", false, true},
		{"tls", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := make(chan struct{}) // the client has sent the bytes after its request
			release := sync.OnceFunc(func() { close(sent) })
			defer release()
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				if tc.handlerCloses {
					w.Header().Set("Connection", "close")
				}
				const chunk = 64 << 10
				w.Write(body[:chunk])
				w.(http.Flusher).Flush()
				<-sent
				for p := body[chunk:]; len(p) > 0; p = p[chunk:] {
					w.Write(p[:chunk])
				}
			})
			s, dial := serveLinger(t, h, tc.tls, nil)
			c := dial()
			defer c.Close()
			req := "GET /big HTTP/1.1\r\nHost: a\r\n"
			if !tc.handlerCloses {
				req += "Connection: close\r\n"
			}
			io.WriteString(c, req+"\r\n")
			br := bufio.NewReader(c)
			if _, err := br.Peek(1); err != nil { // the answer's first bytes
				t.Fatal(err)
			}
			// The handler waits, so a watch reads: it keeps the next request's first byte
			// (over TLS, its whole record), and the rest stays unread in the socket.
			wait.For(t, 5*time.Second, "the watch to read", func() bool { return watching(s) })
			io.WriteString(c, "GET /next HTTP/1.1\r\n")
			wait.For(t, 5*time.Second, "the watch to take the byte", func() bool { return !watchReading(s) })
			io.WriteString(c, "Host: a\r\n\r\n")
			release()
			readToEnd(t, br, body)
		})
	}
}

// A connection that ends after an answer with nothing unread is closed at once, not kept
// lingering until the client closes its side: the server closes it (ConnState hears
// StateClosed) while the client still holds it open.
func TestNoLingerWhenNothingUnread(t *testing.T) {
	for _, tc := range []struct {
		name          string
		tls           bool
		handlerCloses bool
	}{
		{"client asks close", false, false},
		{"handler closes", false, true},
		{"tls", true, false}, // the peek reaches the TCP socket beneath TLS
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.handlerCloses {
					w.Header().Set("Connection", "close")
				}
				io.WriteString(w, "ok")
			})
			states := newConnStates()
			lingered := make(chan struct{}, 1)
			_, dial := serveLinger(t, h, tc.tls, func(s *Server) {
				s.ConnState = states.note
				s.LingerTimeout, s.LingerTime = time.Hour, time.Hour
				s.lingering = func() { lingered <- struct{}{} }
			})
			c := dial()
			defer c.Close()
			req := "GET /ok HTTP/1.1\r\nHost: a\r\n"
			if !tc.handlerCloses {
				req += "Connection: close\r\n"
			}
			io.WriteString(c, req+"\r\n")
			readToEnd(t, bufio.NewReader(c), []byte("ok"))
			select {
			case <-states.closed:
			case <-lingered:
				t.Fatal("the connection lingered with nothing unread")
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not close the connection after its answer")
			}
		})
	}
}

// lingerOn sends a request that ends its connection with another pipelined behind it (read
// ahead, never answered), reads the answer and the end of the stream, and waits for the
// server to linger, returning when the server started to.
func lingerOn(t *testing.T, c net.Conn, lingering <-chan time.Time) time.Time {
	t.Helper()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
	readToEnd(t, bufio.NewReader(c), []byte("ok"))
	select {
	case start := <-lingering:
		return start
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not linger with a pipelined request unread")
	}
	return time.Time{}
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

// Close ends a lingering connection at once, however long it could still linger. Shutdown
// waits for it as for a request in flight, until the client closes its side (or Shutdown's
// context ends, and Close then ends it), as nginx's graceful shutdown does.
func TestShutdownAndLinger(t *testing.T) {
	for _, name := range []string{"Close", "Shutdown", "Shutdown past its context"} {
		t.Run(name, func(t *testing.T) {
			states := newConnStates()
			lingering := make(chan time.Time, 1)
			s, dial := serveLinger(t, okHandler, false, func(s *Server) {
				s.ConnState = states.note
				s.LingerTimeout, s.LingerTime = time.Hour, time.Hour
				s.lingering = func() { lingering <- time.Now() }
			})
			c := dial()
			defer c.Close()
			lingerOn(t, c, lingering)
			select {
			case <-states.closed:
				t.Fatal("the lingering connection was closed before Shutdown or Close")
			default:
			}
			switch name {
			case "Close":
				s.Close()
			case "Shutdown":
				shut := make(chan error, 1)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					shut <- s.Shutdown(ctx)
				}()
				wait.For(t, 5*time.Second, "Shutdown to begin", s.shuttingDown)
				select {
				case err := <-shut:
					t.Fatalf("Shutdown returned (%v) while a connection lingered", err)
				case <-states.closed:
					t.Fatal("Shutdown closed the lingering connection")
				default:
				}
				c.Close() // the client's end: the linger is over
				if err := <-shut; err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			default:
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				defer cancel()
				if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Shutdown with a connection lingering for an hour = %v, want its context's end", err)
				}
				s.Close()
			}
			select {
			case <-states.closed:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s left the lingering connection open", name)
			}
		})
	}
}

// An answer that goes out while Shutdown runs ends its connection; a client that pipelined
// more behind it still reads it whole. Found in review: the close did not linger during a
// Shutdown, and the reset cut the answer's end.
func TestShutdownKeepsInFlightAnswer(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), (4<<20)/16)
	begun := make(chan struct{})
	release := sync.OnceFunc(func() { close(begun) })
	defer release()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-begun // answer only once Shutdown has begun
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		const chunk = 64 << 10
		for p := body; len(p) > 0; p = p[chunk:] {
			w.Write(p[:chunk])
		}
	})
	s, dial := serveLinger(t, h, false, nil)
	c := dial()
	defer c.Close()
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n") // keep-alive
	wait.For(t, 5*time.Second, "the watch to read", func() bool { return watching(s) })
	io.WriteString(c, "GET /next HTTP/1.1\r\n")
	wait.For(t, 5*time.Second, "the watch to take the byte", func() bool { return !watchReading(s) })
	io.WriteString(c, "Host: a\r\n\r\n") // unread in the socket
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	wait.For(t, 5*time.Second, "Shutdown to begin", s.shuttingDown)
	release()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("head: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, body) {
		t.Errorf("an answer during Shutdown: read %d of %d bytes, then %v", len(got), len(body), err)
	}
	c.Close()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// A client that keeps sending while the connection lingers is cut off at LingerTime, though
// every read gets bytes well within LingerTimeout.
func TestLingerTimeBound(t *testing.T) {
	const total = 300 * time.Millisecond
	states := newConnStates()
	lingering := make(chan time.Time, 1)
	_, dial := serveLinger(t, okHandler, false, func(s *Server) {
		s.ConnState = states.note
		s.LingerTimeout, s.LingerTime = time.Hour, total
		s.lingering = func() { lingering <- time.Now() }
	})
	c := dial()
	defer c.Close()
	start := lingerOn(t, c, lingering)
	buf := bytes.Repeat([]byte("more"), 4<<10)
	var err error
	for err == nil {
		_, err = c.Write(buf)
	}
	d := time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server read on for as long as the client sent (%v)", d)
	}
	if d < total || d > total+5*time.Second {
		t.Errorf("cut off %v after the linger began (%v), want after LingerTime %v", d, err, total)
	}
	select {
	case <-states.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not closed")
	}
}

// A client that sends nothing more and does not close either is closed after LingerTimeout.
func TestLingerReadTimeout(t *testing.T) {
	const per = 200 * time.Millisecond
	states := newConnStates()
	lingering := make(chan time.Time, 1)
	_, dial := serveLinger(t, okHandler, false, func(s *Server) {
		s.ConnState = states.note
		s.LingerTimeout, s.LingerTime = per, time.Hour
		s.lingering = func() { lingering <- time.Now() }
	})
	c := dial()
	defer c.Close()
	start := lingerOn(t, c, lingering)
	select {
	case <-states.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the lingering connection was not closed after LingerTimeout")
	}
	if d := time.Since(start); d < per {
		t.Errorf("closed %v after the linger began, before LingerTimeout %v", d, per)
	}
}

// mayHaveUnread sees each of nginx's signs, and no sign on a quiet connection.
func TestMayHaveUnread(t *testing.T) {
	nc, client := tcpPair(t, "127.0.0.65:0")
	if rawconn.NewProber(nc) == nil {
		t.Skip("no peeking at sockets here")
	}
	c := (&Server{}).newConn(nc)
	if c.mayHaveUnread() {
		t.Fatal("a quiet connection may have unread bytes")
	}
	c.pipelined = true
	if !c.mayHaveUnread() {
		t.Error("pipelining seen is not a sign")
	}
	c.pipelined = false
	c.cr.hasByte = true
	if !c.mayHaveUnread() {
		t.Error("a watch's kept byte is not a sign")
	}
	c.cr.hasByte = false
	io.WriteString(client, "GET / HTTP/1.1\r\n")
	wait.For(t, 5*time.Second, "the bytes to be readable", c.mayHaveUnread) // the socket peeked at
	if _, err := c.br.Peek(1); err != nil {
		t.Fatal(err)
	}
	if c.br.Buffered() == 0 || !c.mayHaveUnread() {
		t.Error("bytes read ahead are not a sign")
	}
}

// Close ends a lingering TLS connection whose close_notify waits for room in the socket (a
// client that reads nothing more): it closes the TCP socket beneath, where tls.Conn's Close
// would have waited, holding the server's lock, for crypto/tls's 5 s write deadline.
func TestCloseEndsStalledTLSLinger(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.65:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := &stallListener{Listener: raw, conns: make(chan *stallConn, 1), stalled: make(chan struct{})}
	serverTLS, clientTLS := tlsConfigs(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
		w.(http.Flusher).Flush()
		(<-sl.conns).stall.Store(true) // the answer is out; the send buffer is now "full"
	})
	s, addr := serveFastOn(t, tls.NewListener(sl, serverTLS), h, nil)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(nc, clientTLS)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
		t.Fatalf("answer %q", b)
	}
	<-sl.stalled // lingerClose's close_notify waits
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v: it waited for the stalled close_notify", d)
	}
}

// stallListener's connections are TCP connections whose writes, once stalled, wait as a write
// into a full send buffer does: until the connection is closed or the write deadline passes.
type stallListener struct {
	net.Listener
	conns   chan *stallConn // each accepted connection, for the handler to stall
	stalled chan struct{}   // closed when a write first stalls
}

func (l *stallListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &stallConn{TCPConn: nc.(*net.TCPConn), closed: make(chan struct{}), stalled: l.stalled}
	l.conns <- c
	return c, nil
}

type stallConn struct {
	*net.TCPConn
	stall     atomic.Bool
	stalled   chan struct{} // closed when a write first stalls
	stallOnce sync.Once
	closed    chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	wdl       time.Time
}

func (c *stallConn) Write(p []byte) (int, error) {
	if !c.stall.Load() {
		return c.TCPConn.Write(p)
	}
	c.mu.Lock()
	wdl := c.wdl
	c.mu.Unlock()
	var expired <-chan time.Time
	if !wdl.IsZero() {
		timer := time.NewTimer(time.Until(wdl))
		defer timer.Stop()
		expired = timer.C
	}
	c.stallOnce.Do(func() { close(c.stalled) })
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case <-expired:
		return 0, os.ErrDeadlineExceeded
	}
}

func (c *stallConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.mu.Unlock()
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *stallConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.mu.Unlock()
	return c.TCPConn.SetDeadline(t)
}

func (c *stallConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.TCPConn.Close()
}

// tcpPair returns the two ends of a TCP connection over addr, the accepted one first; both
// are closed when the test ends.
func tcpPair(t *testing.T, addr string) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}
