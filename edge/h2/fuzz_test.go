package h2

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// FuzzServeConn feeds arbitrary frames (after the preface) to a connection: it must never
// panic, and it must end, every handler with it, once the client hangs up. Seeds in
// testdata/fuzz/FuzzServeConn: a GET, a POST with a body, trailers, CONTINUATION, a
// WINDOW_UPDATE, PING and SETTINGS, padding, a reset (frames written with x/net's Framer).
func FuzzServeConn(f *testing.F) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "fuzz")
	})
	f.Fuzz(func(t *testing.T, frames []byte) {
		client, server := net.Pipe()
		s := &Server{MaxConcurrentStreams: 8, IdleTimeout: time.Second}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ServeConn(context.Background(), server, nil, h)
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(client, clientPreface)
		client.Write(frames)
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection did not end after the client hung up")
		}
	})
}
