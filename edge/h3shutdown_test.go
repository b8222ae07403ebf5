package edge

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-cdn/meridian/wire"
)

// TestHTTP3DrainsWithTheOthers: at shutdown the HTTP/3 server is told to drain when the TCP
// servers are, not once they have finished. Its shutdown came after theirs: while one HTTP/1.1
// request was still in flight, HTTP/3 clients got no GOAWAY and the edge went on taking their
// new requests and connections, up to shutdown_timeout, when they were cut off.
func TestHTTP3DrainsWithTheOthers(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	originAddr := startHTTP(t, "127.0.0.20", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "ok")
	}))
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
	tlsConf := insecure(testHost)
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	dctx, dcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer dcancel()
	conn, err := quic.DialAddr(dctx, n.HTTPSAddr(), tlsConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	cc := (&http3.Transport{}).NewClientConn(conn)
	req, _ := http.NewRequestWithContext(dctx, http.MethodGet, "https://"+testHost+"/fast", nil)
	r, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("HTTP/3 GET = %d", r.StatusCode)
	}

	// An HTTP/1.1 request that the origin holds while the node shuts down.
	slow := make(chan error, 1)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	go func() {
		_, err := tryDo(c, http.MethodGet, n.Addr(), testHost, "/slow")
		slow <- err
	}()
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
