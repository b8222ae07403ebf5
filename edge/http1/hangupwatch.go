package http1

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-cdn/meridian/internal/rawconn"
)

// hangupWatch hears, for the whole server, the clients of connections in a Loop end their
// connections (their end of the stream, a reset): one rawconn.HangupWatch (epoll) and one
// goroutine parked on it. A connection joins it when its first request runs watchDelay, with
// one system call, and stays in it: its later requests are watched with no timer, goroutine or
// system call of their own. Before it, every request that ran watchDelay started a goroutine
// parked in a read of a duplicate of the socket, which cost a 1 KiB miss about 6 % of its CPU
// on a quiet machine (issue 15, docs/benchmarks.md "Fiftieth pass"). Bytes arriving (a request
// pipelined behind) are not heard, and are left in the socket for the Loop. Made at the first
// such watch; it ends once the server has stopped (Shutdown, Close) and has no connection
// left, so that a handler still running at Close still hears its connection shut down.
type hangupWatch struct {
	hw   *rawconn.HangupWatch
	dead atomic.Bool // it has ended: a connection joined to it joins the next one (watch)

	mu    sync.Mutex
	conns map[uint64]*conn // by the id they joined under
	next  uint64
}

// newHangupWatch is rawconn.NewHangupWatch; tests make it fail, as it does out of file
// descriptors.
var newHangupWatch = rawconn.NewHangupWatch

// hangupWatchRetry is how long after a failure to make the hangup watch the next long request
// tries again: a moment out of file descriptors must not leave the server's connections
// unwatched for its life. A var for the tests.
var hangupWatchRetry = time.Second

// hangupWatch returns the server's hangup watch, making it at the first call; nil when it
// cannot be made (logged once; tried again at a call hangupWatchRetry later, and until then no
// request joins) or has ended.
func (s *Server) hangupWatch() *hangupWatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hw != nil || s.noHangupWatch {
		return s.hw
	}
	if s.hwFailed && time.Now().Before(s.hwRetry) {
		return nil
	}
	hw, err := newHangupWatch()
	if err != nil {
		if !s.hwFailed {
			s.logf("http1: no watch for clients going away while their requests run: %v", err)
		}
		s.hwFailed, s.hwRetry = true, time.Now().Add(hangupWatchRetry)
		return nil
	}
	w := &hangupWatch{hw: hw, conns: map[uint64]*conn{}}
	s.hwDone = make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		err := hw.Wait(w.hungUp)
		s.mu.Lock()
		defer s.mu.Unlock()
		w.dead.Store(true)
		if s.hw == w { // not ended by endHangupWatch: epoll_wait failed; a later watch is a new one
			s.logf("http1: the watch for clients going away stopped: %v", err)
			s.hw = nil
			hw.Close()
		}
	}(s.hwDone)
	s.hw = w
	s.endHangupWatch() // stopped already, and the connection gone since
	return w
}

// stopHangupWatch ends the server's hangup watch once no connection is left: at Shutdown's
// end and at Close.
func (s *Server) stopHangupWatch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hwStop = true
	s.endHangupWatch()
}

// endHangupWatch ends the hangup watch if the server has stopped and has no connection left;
// s.mu held. Its goroutine returns once the watch's Close has woken it. The Close runs on a
// goroutine of its own, which ends with it: it waits for the watch's goroutine to leave
// hungUp, and that goroutine may be the caller (its closeConn of the server's last
// connection, CloseWhenClientGone), or wait in hungUp for s.mu (another closeConn's forget).
func (s *Server) endHangupWatch() {
	if !s.hwStop || len(s.conns) > 0 {
		return
	}
	s.noHangupWatch = true // none is made after this
	if s.hw != nil {
		go s.hw.hw.Close()
		s.hw = nil
	}
}

// join puts c in the watch under a new id.
func (w *hangupWatch) join(c *conn) (uint64, error) {
	w.mu.Lock()
	w.next++
	id := w.next
	w.conns[id] = c
	w.mu.Unlock()
	if err := w.hw.Add(c.raw, id); err != nil {
		w.forget(id)
		return 0, err
	}
	return id, nil
}

// leave takes c, joined under id, out of the watch. A connection about to be closed need not
// be removed from the epoll instance (closing its socket does that): only one whose socket
// lives on (handed to Fallback).
func (w *hangupWatch) leave(c *conn, id uint64, remove bool) {
	w.forget(id)
	if remove {
		w.hw.Remove(c.raw) // an error: the watch or the socket was closed, and the kernel's entry with it
	}
}

func (w *hangupWatch) forget(id uint64) {
	w.mu.Lock()
	delete(w.conns, id)
	w.mu.Unlock()
}

// hungUp is the watch's goroutine hearing that the client of the connection joined under id
// has ended it.
func (w *hangupWatch) hungUp(id uint64) {
	w.mu.Lock()
	c := w.conns[id]
	w.mu.Unlock()
	if c != nil {
		c.hungUp(w, id)
	}
}
