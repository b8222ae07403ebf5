package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/logtest"
	"github.com/meridian-cdn/meridian/internal/metricstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// openTunnel upgrades a new connection to addr to WebSocket through the edge and returns it once
// the edge answered 101, with the reader the rest of the tunnel comes through.
func openTunnel(t *testing.T, addr, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, testHost)
	br := bufio.NewReader(conn)
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the upgrade's answer: %v", err)
	}
	if r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d, want 101", r.StatusCode)
	}
	return conn, br
}

// echoTunnel is an origin that switches to WebSocket and echoes what it reads until the
// client's end.
var echoTunnel = webSocketOrigin(func(conn net.Conn, brw *bufio.ReadWriter) { io.Copy(conn, brw) })

// tunnelEcho sends msg through a tunnel and reads the echo back.
func tunnelEcho(t *testing.T, conn net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatalf("write to the tunnel: %v", err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(br, back); err != nil || string(back) != msg {
		t.Fatalf("echo = %q (%v), want %q", back, err, msg)
	}
}

// TestTunnelsInLoadReport: a switched WebSocket upgrade is an open client connection and a
// request in flight in the load the node reports to the fleet for as long as it lasts.
// net/http stops following a connection once it is hijacked (StateHijacked), which trackConn
// counted as closed: a node holding thousands of WebSockets reported no open connections.
func TestTunnelsInLoadReport(t *testing.T) {
	n, _ := echoEdge(t, echoTunnel, nil, nil)
	const tunnels = 3
	var conns []net.Conn
	for i := range tunnels {
		conn, br := openTunnel(t, n.Addr(), "/ws")
		tunnelEcho(t, conn, br, fmt.Sprintf("hello %d", i))
		conns = append(conns, conn)
	}
	rep := n.TakeLoadReport()
	if rep.OpenConns != tunnels {
		t.Errorf("load report with %d tunnels open: open_conns = %d, want %d", tunnels, rep.OpenConns, tunnels)
	}
	if want := float64(tunnels) / DefaultMaxInFlight; rep.Saturation < want {
		t.Errorf("load report with %d tunnels open: saturation = %g, want at least %g (in flight)", tunnels, rep.Saturation, want)
	}
	if got := n.tunnels.count(); got != tunnels {
		t.Errorf("tunnels counted = %d, want %d", got, tunnels)
	}
	if got := metricstest.Values(t, n.Registry())["meridian_edge_websocket_tunnels"]; got != tunnels {
		t.Errorf("meridian_edge_websocket_tunnels = %v, want %d", got, tunnels)
	}
	for _, c := range conns {
		c.Close()
	}
	wait.For(t, 10*time.Second, "the tunnels to leave the load report", func() bool {
		return n.openConns.Load() == 0 && n.inFlight() == 0 && n.tunnels.count() == 0
	})
}

// TestTunnelIdleTimeout: a tunnel through which nothing passed either way for
// websocket_idle_timeout is closed, at both ends, as nginx closes one after proxy_read_timeout
// and Varnish a pipe after pipe_timeout; bytes either way keep it. It lived for as long as its
// client and origin kept their TCP connections, idle or not.
func TestTunnelIdleTimeout(t *testing.T) {
	const idle = time.Second
	const beat = idle / 10
	const beats = 15 // past the idle timeout
	originSaw := make(chan string, 4)
	origin := webSocketOrigin(func(conn net.Conn, brw *bufio.ReadWriter) {
		line, err := brw.ReadString('\n')
		if err != nil {
			originSaw <- "closed before a command: " + err.Error()
			return
		}
		switch strings.TrimSpace(line) {
		case "push": // the origin talks, the client does not
			for i := range beats {
				fmt.Fprintf(conn, "%d\n", i)
				time.Sleep(beat) // the stream's pace, not a wait for another goroutine
			}
		case "listen": // the client talks, the origin does not
			got := 0
			for range beats {
				if _, err := brw.ReadString('\n'); err != nil {
					break
				}
				got++
			}
			fmt.Fprintf(conn, "got %d\n", got)
		case "quiet":
			_, err := brw.ReadByte() // nothing comes: the edge ends it
			originSaw <- fmt.Sprintf("quiet tunnel ended: %v", err)
		}
	})
	var out logtest.Buffer
	n, _ := echoEdge(t, origin, nil, func(c *Config) {
		c.WebSocketIdleTimeout = idle
		c.AccessLog = true
		c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
	})
	t.Run("push", func(t *testing.T) {
		conn, br := openTunnel(t, n.Addr(), "/push")
		io.WriteString(conn, "push\n")
		for i := range beats {
			line, err := br.ReadString('\n')
			if want := fmt.Sprintf("%d\n", i); line != want {
				t.Fatalf("push %d: read %q (%v), want %q: the tunnel was cut while the origin talked", i, line, err, want)
			}
		}
	})
	t.Run("listen", func(t *testing.T) {
		conn, br := openTunnel(t, n.Addr(), "/listen")
		io.WriteString(conn, "listen\n")
		for i := range beats {
			if _, err := fmt.Fprintf(conn, "%d\n", i); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			time.Sleep(beat) // the client's pace
		}
		line, err := br.ReadString('\n')
		if want := fmt.Sprintf("got %d\n", beats); line != want {
			t.Fatalf("origin answered %q (%v), want %q: the tunnel was cut while the client talked", line, err, want)
		}
	})
	t.Run("quiet", func(t *testing.T) {
		start := time.Now()
		conn, br := openTunnel(t, n.Addr(), "/quiet")
		io.WriteString(conn, "quiet\n")
		_, err := br.ReadByte()
		took := time.Since(start)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("an idle tunnel was still open after %v (websocket_idle_timeout %v)", took, idle)
		}
		if took < idle {
			t.Errorf("an idle tunnel was closed after %v, before websocket_idle_timeout (%v)", took, idle)
		}
		select {
		case saw := <-originSaw:
			if !strings.HasPrefix(saw, "quiet tunnel ended") {
				t.Errorf("origin: %s", saw)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the origin's side of an idle tunnel stayed open")
		}
		var note string
		wait.For(t, 5*time.Second, "the idle tunnel's access log line", func() bool {
			note = accessNote(t, out.String(), http.MethodGet, testHost, "/quiet")
			return note != ""
		})
		if !strings.Contains(note, "idle") {
			t.Errorf("idle tunnel logged with note %q, want it to say it idled out", note)
		}
	})
}

// TestTunnelDrain: a stop waits for open tunnels within shutdown_timeout, as nginx -s quit
// keeps upgraded connections until they close or worker_shutdown_timeout, and closes those
// still open then. They were left open: the node returned from Serve with its tunnels (and
// their origin connections) still running, for as long as their ends kept them.
func TestTunnelDrain(t *testing.T) {
	originEnded := make(chan error, 2)
	origin := webSocketOrigin(func(conn net.Conn, brw *bufio.ReadWriter) {
		_, err := io.Copy(conn, brw)
		originEnded <- err
	})
	originAddr := startHTTP(t, "127.0.0.20", origin)
	n, cancel, done := stoppableTunnelEdge(t, originAddr, 2*time.Second)
	defer cancel()

	kept, keptR := openTunnel(t, n.Addr(), "/kept")  // left open by both ends
	ended, endedR := openTunnel(t, n.Addr(), "/end") // ended by its client during the drain
	tunnelEcho(t, kept, keptR, "a")
	tunnelEcho(t, ended, endedR, "b")
	cancel()
	wait.For(t, 10*time.Second, "the edge to stop accepting", func() bool {
		c, err := net.Dial("tcp", n.Addr())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// Draining, the tunnels still pass bytes.
	tunnelEcho(t, kept, keptR, "still")
	tunnelEcho(t, ended, endedR, "here")
	ended.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadAll(endedR); err != nil {
		t.Errorf("the tunnel ended by its client during the drain: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a tunnel open, before shutdown_timeout", err)
	default:
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
	// The tunnel still open at shutdown_timeout is closed, at both ends.
	_, err := keptR.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a tunnel open at shutdown_timeout was left open after Serve returned")
	}
	for range 2 {
		select {
		case <-originEnded:
		case <-time.After(10 * time.Second):
			t.Fatal("an origin's side of a tunnel stayed open after Serve returned")
		}
	}
	if n.tunnels.count() != 0 || n.openConns.Load() != 0 {
		t.Errorf("after Serve: %d tunnels, %d open connections counted, want none", n.tunnels.count(), n.openConns.Load())
	}
}

// TestTunnelAccessLog: a tunnel's access log line, written as it ends, says how many bytes went
// each way and how long it lasted: its bytes were the 101's body's, none.
func TestTunnelAccessLog(t *testing.T) {
	var out logtest.Buffer
	n, _ := echoEdge(t, echoTunnel, nil, func(c *Config) {
		c.AccessLog = true
		c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
	})
	conn, br := openTunnel(t, n.Addr(), "/logged")
	tunnelEcho(t, conn, br, "twelve bytes")
	tunnelEcho(t, conn, br, "and eight")
	conn.(*net.TCPConn).CloseWrite()
	io.ReadAll(br)
	var l map[string]any
	wait.For(t, 5*time.Second, "the tunnel's access log line", func() bool {
		l = accessEntry(t, out.String(), http.MethodGet, testHost, "/logged")
		return l != nil
	})
	if l["status"] != float64(http.StatusSwitchingProtocols) {
		t.Errorf("status = %v, want 101", l["status"])
	}
	if l["bytes"] != float64(21) {
		t.Errorf("bytes = %v, want 21, the bytes sent to the client through the tunnel", l["bytes"])
	}
	if note, _ := l["note"].(string); !strings.Contains(note, "21 bytes from the client") {
		t.Errorf("note = %q, want the bytes the client sent through the tunnel", note)
	}
	// requests_total counts it once, as the log does: a 101, not a 200.
	v := metricstest.Values(t, n.Registry())
	for code, want := range map[string]float64{"101": 1, "200": 0} {
		k := "meridian_edge_requests_total,cache=pass,code=" + code + ",proto=http/1.1"
		if v[k] != want {
			t.Errorf("%s = %v, want %v", k, v[k], want)
		}
	}
}

// floodTunnel is an origin that switches to WebSocket and writes to the tunnel until a write
// fails: with a client that reads nothing, the edge's write to the client blocks once the
// sockets' buffers are full.
var floodTunnel = webSocketOrigin(func(conn net.Conn, _ *bufio.ReadWriter) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := conn.Write(buf); err != nil {
			return
		}
	}
})

// assertTunnelClosed checks that the client's side of a tunnel the edge closed was closed: what
// the sockets' buffers held comes, and then the end.
func assertTunnelClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, conn)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the client's connection of a tunnel the edge closed stayed open")
	}
}

// TestTunnelIdleCloseStalledClient: a tunnel whose client reads nothing while the origin
// sends is closed at websocket_idle_timeout, its client's connection too, as nginx closes it
// at send_timeout. The edge's write to the client was blocked: closing the origin's
// connection ended neither copy, and the tunnel, its client's connection and its goroutines
// stayed, counted open, until the blocked write failed (15 s later here).
func TestTunnelIdleCloseStalledClient(t *testing.T) {
	n, _ := echoEdge(t, floodTunnel, nil, func(c *Config) { c.WebSocketIdleTimeout = 500 * time.Millisecond })
	conn, _ := openTunnel(t, n.Addr(), "/flood")
	wait.For(t, 10*time.Second, "the idle tunnel with a stalled client to end", func() bool {
		return n.tunnels.count() == 0 && n.openConns.Load() == 0 && n.inFlight() == 0
	})
	assertTunnelClosed(t, conn)
}

// TestTunnelDrainStalledClient: a tunnel whose client reads nothing while the origin sends is
// closed at shutdown_timeout, its client's connection too, and Serve returns without waiting
// for it past tunnelCloseWait. The edge's write to the client was blocked: closing the
// origin's connection ended neither copy, Serve returned tunnelCloseWait (5 s) past
// shutdown_timeout with the tunnel still open and counted, its goroutines running.
func TestTunnelDrainStalledClient(t *testing.T) {
	originAddr := startHTTP(t, "127.0.0.20", floodTunnel)
	n, cancel, done := stoppableTunnelEdge(t, originAddr, time.Second)
	defer cancel()
	conn, _ := openTunnel(t, n.Addr(), "/flood")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	if n.tunnels.count() != 0 || n.openConns.Load() != 0 {
		t.Errorf("after Serve: %d tunnels, %d open connections counted, want none", n.tunnels.count(), n.openConns.Load())
	}
	assertTunnelClosed(t, conn)
}

// stoppableTunnelEdge runs an edge on 127.0.0.21 in front of originAddr with shutdownTimeout,
// until the test cancels it; done gets what Serve returns.
func stoppableTunnelEdge(t *testing.T, originAddr string, shutdownTimeout time.Duration) (*Node, context.CancelFunc, <-chan error) {
	t.Helper()
	n, err := New(Config{PoP: "tst", Node: "e1", Logger: testLogger(t), ShutdownTimeout: shutdownTimeout,
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, listen(t, "127.0.0.21"), nil) }()
	<-n.Ready()
	return n, cancel, done
}
