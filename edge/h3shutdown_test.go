package edge

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestHTTP3DrainsWithTheOthers: at shutdown the HTTP/3 server is told to drain when the TCP
// servers are, not once they have finished. Its shutdown came after theirs: while one HTTP/1.1
// request was still in flight, HTTP/3 clients got no GOAWAY and the edge went on taking their
// new requests and connections, up to shutdown_timeout, when they were cut off.
func TestHTTP3DrainsWithTheOthers(t *testing.T) {
	originAddr, arrived, release := holdingOrigin(t)
	cert := writeCert(t, t.TempDir(), "drain", testHost)
	n, err := New(Config{PoP: "tst", Node: "e1", TLS: TLSConfig{Certs: []CertFiles{cert}}, HTTPSListen: "127.0.0.12:0",
		Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	https, quicConn, err := listenHTTPS(ctx, "127.0.0.12:0", true)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- n.ServeListeners(ctx, Listeners{HTTP: listen(t, "127.0.0.12"), HTTPS: https, QUIC: quicConn})
	}()
	<-n.Ready()

	// An HTTP/3 connection, idle after one request.
	conn, r := h3Do(t, n, http.MethodGet, "/fast", nil, &quic.Config{})
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("HTTP/3 GET = %d", r.StatusCode)
	}

	// An HTTP/1.1 request that the origin holds while the node shuts down.
	slow := getInBackground(t, n, "/slow")
	<-arrived
	cancel()
	// The HTTP/3 server's GOAWAY makes the idle client close its connection (quic-go's does).
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Error("no GOAWAY for HTTP/3 while an HTTP/1.1 request was in flight")
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("the HTTP/1.1 request in flight: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// TestHTTP3DrainWithNothingInFlight: a connection with no request in flight, whose client
// keeps it open after the GOAWAY, is closed a few round trips into the drain (h3Linger), not
// after the fixed second the drain used to give every connection with nothing in flight.
func TestHTTP3DrainWithNothingInFlight(t *testing.T) {
	_, n, stop := tlsEdgeWith(t, TLSConfig{Dev: true}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// A client that never reads what the server sends on its control stream: the GOAWAY goes
	// unread, and the connection stays open (quic-go's HTTP/3 client closes it at once).
	idle := dialQUIC(ctx, t, n.HTTPSAddr(), &quic.Config{})
	defer idle.CloseWithError(0, "")
	if _, err := idle.AcceptUniStream(ctx); err != nil { // the server's control stream: it serves the connection
		t.Fatal(err)
	}

	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case <-idle.Context().Done():
	case <-ctx.Done():
		t.Fatal("the idle connection is still open")
	}
	if took := time.Since(start); took >= time.Second {
		t.Errorf("the idle connection was closed %v into the drain, want a few round trips", took)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// TestHTTP3DrainWaitsForAnswerInFlight: an answer that quic-go still writes after its handler
// returned is in flight, and the drain leaves its connection open while the client takes its
// time (up to shutdown_timeout), as the TCP servers do; it used to close it a second in. An
// answer under 4 KiB is written whole after the handler (quic-go holds it for its
// Content-Length), and a client with a 1 KiB stream window that reads nothing holds it back.
func TestHTTP3DrainWaitsForAnswerInFlight(t *testing.T) {
	const size = 3000
	_, n, stop := tlsEdgeWith(t, TLSConfig{Dev: true}, nil)
	path := "/small?cc=max-age%3D600&size=" + strconv.Itoa(size)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	if r := do(t, c, http.MethodGet, n.Addr(), testHost, path); r.status != http.StatusOK || len(r.body) != size {
		t.Fatalf("filling the cache: %d with %d bytes", r.status, len(r.body))
	}
	// Its header comes with the answer's first bytes, once the handler returned.
	conn, resp := h3Get(t, n, path, &quic.Config{InitialStreamReceiveWindow: 1 << 10, MaxStreamReceiveWindow: 1 << 10})

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	wait.For(t, 5*time.Second, "the drain", n.Draining)
	select {
	case <-conn.Context().Done():
		t.Fatal("the drain closed the connection of an answer in flight")
	case <-time.After(1500 * time.Millisecond): // past the second after which it was closed
	}
	if b, err := io.ReadAll(resp.Body); err != nil || len(b) != size {
		t.Fatalf("read %d of %d bytes, then %v", len(b), size, err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// holdingOrigin starts an origin on 127.0.0.20 that answers "ok" (cacheable for a minute), and
// holds a request for /slow: it says so on arrived and answers once release is closed.
func holdingOrigin(t *testing.T) (addr string, arrived <-chan struct{}, release chan struct{}) {
	got, release := make(chan struct{}, 1), make(chan struct{})
	addr = startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			got <- struct{}{}
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "ok")
	}))
	return addr, got, release
}

// getInBackground GETs path from n over HTTP/1.1 on a goroutine of its own, and sends the
// request's error on the channel it returns.
func getInBackground(t *testing.T, n *Node, path string) <-chan error {
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)
	done := make(chan error, 1)
	go func() {
		_, err := tryDo(c, http.MethodGet, n.Addr(), testHost, path)
		done <- err
	}()
	return done
}
