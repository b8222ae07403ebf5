package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// relay forwards each TCP connection it accepts to target. blackhole and deafen stall the
// connections open at that moment, keeping their sockets open; connections made after are
// relayed as before. That is what a NAT or firewall that dropped a connection's state, a
// partition or an origin host that lost power does to a client: nothing comes back, and no FIN
// or RST says so.
type relay struct {
	ln      net.Listener
	target  string
	bufSize int            // if > 0, both sockets' kernel buffers, so that a stalled one fills soon
	wg      sync.WaitGroup // the accept loop and every pipe
	stop    chan struct{}  // closed by Close: pipes stalled without reading return
	gone    chan struct{}  // one per connection whose client ended it

	accepted atomic.Int64
	reads    atomic.Int64 // reads of what clients sent

	mu    sync.Mutex // guards conns
	conns []*relayed // open ones
}

// relayed is one connection through the relay; its pipes look at the flags before each write.
type relayed struct {
	client, origin net.Conn
	dropped        atomic.Bool // nothing is forwarded either way
	deaf           atomic.Bool // the client's bytes are no longer read
}

func startRelay(t *testing.T, ip, target string, bufSize int) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	r := &relay{ln: ln, target: target, bufSize: bufSize, stop: make(chan struct{}), gone: make(chan struct{}, 64)}
	r.wg.Go(r.accept)
	t.Cleanup(r.Close)
	return r
}

func (r *relay) accept() {
	for {
		client, err := r.ln.Accept()
		if err != nil {
			return
		}
		origin, err := net.Dial("tcp", r.target)
		if err != nil {
			client.Close()
			continue
		}
		if r.bufSize > 0 {
			client.(*net.TCPConn).SetReadBuffer(r.bufSize)
			origin.(*net.TCPConn).SetWriteBuffer(r.bufSize)
		}
		c := &relayed{client: client, origin: origin}
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		r.accepted.Add(1)
		r.wg.Go(func() {
			var pipes sync.WaitGroup
			pipes.Go(func() { r.pipe(c, c.origin, c.client, true) })
			pipes.Go(func() { r.pipe(c, c.client, c.origin, false) })
			pipes.Wait()
			c.client.Close()
			c.origin.Close()
		})
	}
}

// pipe copies src to dst until src's side ends, which it passes on (each side's end is seen
// by the relay, not hidden by the other's), or either fails, which ends both. Dropped, it reads
// on and forwards nothing; deaf, the client's side reads no more.
func (r *relay) pipe(c *relayed, dst, src net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		if fromClient && c.deaf.Load() {
			<-r.stop
			return
		}
		n, err := src.Read(buf)
		// A client that closes with bytes unread (a PING's answer that crossed its close)
		// resets the connection rather than ending it: ended by the client too.
		if fromClient && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			select {
			case r.gone <- struct{}{}:
			default:
			}
		}
		if errors.Is(err, io.EOF) {
			dst.(*net.TCPConn).CloseWrite()
			return
		}
		if err != nil {
			dst.Close()
			src.Close()
			return
		}
		if fromClient {
			r.reads.Add(1)
		}
		if c.dropped.Load() || fromClient && c.deaf.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			dst.Close()
			src.Close()
			return
		}
	}
}

// blackhole stops forwarding anything on every connection open now, either way.
func (r *relay) blackhole() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.dropped.Store(true)
	}
}

// deafen stops reading what the client sends on every connection open now, as an origin that
// stopped reading its socket: the client's writes block once the sockets' buffers are full.
// What the origin sends still comes through.
func (r *relay) deafen() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.deaf.Store(true)
	}
}

func (r *relay) Close() {
	r.ln.Close()
	close(r.stop)
	r.mu.Lock()
	for _, c := range r.conns {
		c.client.Close()
		c.origin.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// h2Origin starts an https origin offering HTTP/2 on ip, behind a relay on relayIP, and
// returns the relay, a client for it configured by cfg (its breaker left out) and its URL,
// once the client has a connection. Its handler
// answers /stream with a chunk every 20 ms until the client leaves, /up with the size of the
// body it read, and anything else with the request's protocol.
func h2Origin(t *testing.T, ip, relayIP string, bufSize int, cfg Config) (*relay, *Upstream, string) {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-r.Context().Done():
					return
				case <-tick.C:
					io.WriteString(w, ".")
					w.(http.Flusher).Flush()
				}
			}
		case "/up":
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
		default:
			io.WriteString(w, r.Proto)
		}
	}))
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// Closed before the server, which waits for its handlers: the relay's Close ends the
	// connections that a stalled client cannot end.
	rl := startRelay(t, relayIP, ln.Addr().String(), bufSize)
	tc := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.ServerName = "example.com" // httptest's certificate names 127.0.0.1 and example.com
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil && bufSize > 0 {
			c.(*net.TCPConn).SetWriteBuffer(bufSize)
		}
		return c, err
	}
	cfg.Name, cfg.TLSConfig, cfg.DialContext, cfg.BodyTimeout = "origin", tc, dial, time.Minute
	cfg.MinRequests = 1 << 20 // the breaker stays out of it: this is about connections
	u := New(cfg)
	t.Cleanup(func() { u.Close() })
	url := "https://" + rl.ln.Addr().String()
	if got := getBody(t, u, context.Background(), url+"/"); got != "HTTP/2.0" {
		t.Fatalf("first answer = %q, want HTTP/2.0", got)
	}
	return rl, u, url
}

// getBody GETs url and returns its body, or "" with the error logged.
func getBody(t *testing.T, u *Upstream, ctx context.Context, url string) string {
	t.Helper()
	resp, err := u.Do(get(t, ctx, url))
	if err != nil {
		t.Logf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Logf("GET %s body: %v", url, err)
		return ""
	}
	return string(b)
}

// recovers GETs url one after another until one is answered, and fails t if none was
// within bound.
func recovers(t *testing.T, u *Upstream, url string, bound time.Duration) {
	t.Helper()
	start := time.Now()
	for n := 1; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		got := getBody(t, u, ctx, url)
		cancel()
		if got == "HTTP/2.0" {
			t.Logf("request %d answered, %v after the connection stalled", n, time.Since(start))
			return
		}
		if time.Since(start) > bound {
			t.Fatalf("%d requests failed in %v since the connection stalled; want one answered on a new connection within %v", n, time.Since(start), bound)
		}
	}
}

// TestHTTP2DeadConnection: an HTTP/2 connection to an origin that goes silent, without a FIN
// or RST, is closed within a few ResponseHeaderTimeouts and requests go to a new one. Before,
// each request was multiplexed onto it and failed at ResponseHeaderTimeout, and after each
// failure the transport held a stream slot of it until a PING came back (none did), so a new
// connection came only once a whole MaxConcurrentStreams (250 with Go's servers, 128 with
// nginx's) had failed: 40 minutes at the default 10 s, requests one at a time, and with the
// breaker open most of that time more, unless the kernel gave up on the socket first (some 15
// minutes of retransmissions on Linux).
func TestHTTP2DeadConnection(t *testing.T) {
	const rht = 300 * time.Millisecond
	rl, u, url := h2Origin(t, "127.0.0.150", "127.0.0.151", 0, Config{ResponseHeaderTimeout: rht})
	rl.blackhole()
	recovers(t, u, url+"/", 20*rht)
	if n := rl.accepted.Load(); n != 2 {
		t.Errorf("connections accepted = %d, want 2 (the silent one and its replacement)", n)
	}
	select {
	case <-rl.gone:
	case <-time.After(20 * rht):
		t.Errorf("the silent connection was not closed by the client")
	}
}

// TestHTTP2WriterBlocked: an origin that stops reading its socket, while it still sends (a
// response streaming on another stream), has the connection closed once the client's writes
// take nothing for ResponseHeaderTimeout. Before, the write of a request body blocked for
// good, holding the connection's writer: every request sent on it after waited to write its
// head, before any timeout of the transport's started, until its caller's deadline (30 s by
// default), and the connection, which received frames all along, stayed in the pool.
func TestHTTP2WriterBlocked(t *testing.T) {
	const rht = 300 * time.Millisecond
	rl, u, url := h2Origin(t, "127.0.0.152", "127.0.0.153", 16<<10, Config{ResponseHeaderTimeout: rht})
	// A response that keeps frames coming, so that no PING is needed to see the origin alive.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := u.Do(get(t, ctx, url+"/stream"))
	if err != nil {
		t.Fatal(err)
	}
	streamed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		streamed <- err
	}()
	rl.deafen()
	// 1 MiB fits the origin's flow-control window (Go's servers give 1 MiB), not the sockets'
	// buffers: the client's write blocks, and the upload fails as stalled.
	body := strings.Repeat("a", 1<<20)
	req, _ := http.NewRequest(http.MethodPost, url+"/up", strings.NewReader(body))
	if resp, err := u.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("upload to an origin that reads nothing succeeded")
	}
	recovers(t, u, url+"/", 20*rht)
	select {
	case err := <-streamed:
		if err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("stream on the blocked connection ended with %v, want the connection's failure", err)
		}
	case <-time.After(20 * rht):
		t.Error("the stream on the blocked connection still runs: the connection was not closed")
	}
}

// TestHTTP2IdleConnection: the PINGs that check an idle HTTP/2 connection neither close a
// healthy one (the next request reuses it) nor keep it past IdleConnTimeout.
func TestHTTP2IdleConnection(t *testing.T) {
	const rht, idle = 100 * time.Millisecond, 2 * time.Second
	rl, u, url := h2Origin(t, "127.0.0.154", "127.0.0.155", 0, Config{ResponseHeaderTimeout: rht, IdleConnTimeout: idle})
	// A PING goes out every rht or so: some have been answered once five more writes came.
	start, n := time.Now(), rl.reads.Load()
	wait.For(t, 50*rht, "PINGs on the idle connection", func() bool { return rl.reads.Load() >= n+5 })
	if got := getBody(t, u, context.Background(), url+"/"); got != "HTTP/2.0" {
		t.Fatalf("answer after %v idle = %q, want HTTP/2.0", time.Since(start), got)
	}
	if n := rl.accepted.Load(); n != 1 {
		t.Errorf("connections accepted = %d, want 1: the idle one, checked, reused", n)
	}
	used := time.Now()
	select {
	case <-rl.gone:
		if took := time.Since(used); took < idle {
			t.Errorf("idle connection closed after %v, want IdleConnTimeout (%v)", took, idle)
		}
	case <-time.After(10 * idle): // closed at idle; a PING that kept it would keep it for good
		t.Errorf("idle connection still open %v after its last use, want closed at IdleConnTimeout (%v)", time.Since(used), idle)
	}
}
