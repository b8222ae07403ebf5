package http1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
)

// Close, while a handler runs inside the connection's read loop (a plain TCP connection is
// served so), ends the connection at once: the client reads the end, and the handler's
// context is cancelled by the watch. Closing the socket itself would have waited for the
// handler to return (poll.FD.Close waits for the loop's read in progress).
func TestCloseDuringHandler(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(20 * time.Second):
			ended <- nil
		}
	})
	s, addr := serveFast(t, h, nil)
	c := dialSend(t, addr, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the handler")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("the client read %d bytes after Close, want the connection's end", n)
	}
	if err := <-ended; err != context.Canceled {
		t.Errorf("handler's context: %v, want context.Canceled", err)
	}
}

// Clients that send each request as soon as the answer to the one before has arrived, and
// some that pipeline two at a time, all get every answer promptly: a request that arrives
// just after the read before it emptied the socket is never left waiting for more bytes
// (which would hold it until the idle timeout, a minute here).
func TestAnswerToAnswerClients(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	})
	_, addr := serveFast(t, h, func(s *Server) { s.IdleTimeout = time.Minute })
	const clients, requests = 16, 300
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	deadline := time.Now().Add(20 * time.Second)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(deadline)
			br := bufio.NewReader(c)
			pipeline := 1 + i%2 // odd clients send two requests at a time
			for j := 0; j < requests; j += pipeline {
				var batch string
				for k := range pipeline {
					batch += "GET /" + strconv.Itoa(j+k) + " HTTP/1.1\r\nHost: a\r\n\r\n"
				}
				if _, err := io.WriteString(c, batch); err != nil {
					errs <- err
					return
				}
				for k := range pipeline {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						errs <- fmt.Errorf("client %d, request %d: %w", i, j+k, err)
						return
					}
					body, err := io.ReadAll(resp.Body)
					if want := "/" + strconv.Itoa(j+k); err != nil || string(body) != want {
						errs <- fmt.Errorf("client %d: answer %q, %v; want %q", i, body, err, want)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A client that resets its connection (RST, not FIN) while a handler runs: a close from
// another goroutine does not wait for the handler. shutdown(2) fails with ENOTCONN on a reset
// socket, and closing the socket instead waits for the read loop, which waits for the handler:
// for the watch of a handler that asked CloseWhenClientGone, the handler's unwatch then waits
// for the watch, for ever; Close waits for as long as the handler runs.
func TestCloseAfterClientReset(t *testing.T) {
	for _, tc := range []struct {
		name      string
		closeGone bool // the handler asks CloseWhenClientGone: the watch closes the connection
	}{
		{"watch", true},
		{"Server.Close", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started, gone, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.(interface{ CloseWhenClientGone(bool) }).CloseWhenClientGone(tc.closeGone)
				close(started)
				<-r.Context().Done() // the watch saw the reset
				close(gone)
				<-release // work that outlives the client
			})
			states := newConnStates()
			s, addr := serveFast(t, h, func(s *Server) { s.ConnState = states.note })
			defer close(release)
			c := dialSend(t, addr, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
			<-started
			c.(*net.TCPConn).SetLinger(0) // Close sends RST
			c.Close()
			<-gone
			closed := states.closed
			if !tc.closeGone {
				done := make(chan struct{})
				go func() {
					s.Close()
					close(done)
				}()
				closed = done
			}
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("the connection of a client that reset it was not closed while its handler ran")
			}
			release <- struct{}{}
			wait.For(t, 5*time.Second, "the connection's goroutine to end", func() bool { return s.running.Load() == 0 })
		})
	}
}
