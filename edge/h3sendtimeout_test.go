package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TestHTTP3WriteAfterTimeoutFails: once a write to an HTTP/3 client has failed on the send
// timeout, every further write and flush of the answer fails at once with the same error,
// even if the client reads again, and the client's stream is reset. A further write went to
// the stream: it waited for the client another whole timeout (60 s; a handler writing several
// more chunks was held that many times), and once the client read again it finished the
// failed write's DATA frame with its own bytes, so that the client took a body with a hole in
// it. The handler is the test's, behind the edge's HTTP/3 send timeout (serveSendTimeout):
// the node's own mostly stop at a failed write, and which do not depends on the path (an
// answer that outgrew the cache has its head written, error unchecked, then the rest copied).
func TestHTTP3WriteAfterTimeoutFails(t *testing.T) {
	const timeout = 200 * time.Millisecond
	const first, later = 1 << 20, 64 << 10 // the first more than the client's windows
	type result struct{ later, flush error }
	failed := make(chan error, 1)   // the first write's error
	reading := make(chan struct{})  // closed once the client reads again
	results := make(chan result, 1) // what the later write and flush returned
	handler := func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write(make([]byte, first))
		failed <- err
		select {
		case <-reading:
		case <-r.Context().Done():
			return
		}
		var res result
		_, res.later = w.Write(make([]byte, later))
		res.flush = http.NewResponseController(w).Flush()
		results <- res
	}

	cert, err := selfSigned([]string{testHost})
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.56:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http3.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serveSendTimeout(w, r, timeout, handler)
		}),
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{*cert}}),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(udp)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
		udp.Close()
	})

	// A client that takes little into its buffers, and reads nothing until told.
	tr := &http3.Transport{TLSClientConfig: insecure(testHost), QUICConfig: &quic.Config{
		InitialStreamReceiveWindow: 64 << 10, MaxStreamReceiveWindow: 64 << 10,
		InitialConnectionReceiveWindow: 128 << 10, MaxConnectionReceiveWindow: 128 << 10}}
	t.Cleanup(func() { tr.Close() })
	resp := roundTrip(t, tr, "https://"+udp.LocalAddr().String()+"/", "")

	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a write of %d bytes to a client that reads nothing: %v, want the send timeout", first, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a write to a client that reads nothing has not failed")
	}
	type read struct {
		n   int64
		err error
	}
	got := make(chan read, 1)
	go func() {
		n, err := io.Copy(io.Discard, resp.Body)
		got <- read{n, err}
	}()
	close(reading)

	var res result
	select {
	case res = <-results:
	case <-time.After(15 * time.Second):
		t.Fatal("the handler has not written again")
	}
	if !errors.Is(res.later, os.ErrDeadlineExceeded) {
		t.Errorf("a write after the failed one: %v, want the failed one's error", res.later)
	}
	if !errors.Is(res.flush, os.ErrDeadlineExceeded) {
		t.Errorf("a flush after the failed write: %v, want the failed write's error", res.flush)
	}
	// The stream is reset: the client reads what was sent of the first write, then an error.
	r := <-got
	if r.err == nil || errors.Is(r.err, context.DeadlineExceeded) || r.n >= first {
		t.Errorf("the client read %d bytes, then %v; want fewer than %d, then the stream's reset", r.n, r.err, first)
	}
}
