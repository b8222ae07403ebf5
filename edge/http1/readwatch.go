package http1

import (
	"sync"

	"github.com/meridian-cdn/meridian/internal/rawconn"
)

// readWatch watches, for the whole server, the connections in a Loop whose request has run
// watchDelay, for their client going away: one rawconn.ReadWatch (epoll) and one goroutine
// parked on it, rather than a goroutine per watched request parked in a read of a duplicate of
// its socket, which cost a 1 KiB miss about 6 % of its CPU on a quiet machine (issue 15,
// docs/benchmarks.md "Fiftieth pass"). What it sees is peeked at, not read, so the Loop reads
// every byte itself. Made at the first such watch; it ends once the server has stopped
// (Shutdown, Close) and has no connection left, so that a handler still running at Close
// still hears its client go (its socket shut down).
type readWatch struct {
	rw *rawconn.ReadWatch

	mu    sync.Mutex
	conns map[uint64]*conn // by the id of their watch
	next  uint64
}

// newReadWatch is rawconn.NewReadWatch; tests make it fail, as it does out of file descriptors.
var newReadWatch = rawconn.NewReadWatch

// readWatch returns the server's read watch, making it at the first call; nil when it cannot
// be made (logged once: no connection in a Loop is watched then) or has ended.
func (s *Server) readWatch() *readWatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rw != nil || s.noReadWatch {
		return s.rw
	}
	rw, err := newReadWatch()
	if err != nil {
		s.noReadWatch = true
		s.logf("http1: no watch for clients going away while their requests run: %v", err)
		return nil
	}
	w := &readWatch{rw: rw, conns: map[uint64]*conn{}}
	s.rwDone = make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		rw.Wait(w.ready)
	}(s.rwDone)
	s.rw = w
	s.endReadWatch() // stopped already, and the connection gone since
	return w
}

// stopReadWatch ends the server's read watch once no connection is left: at Shutdown's end
// and at Close.
func (s *Server) stopReadWatch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rwStop = true
	s.endReadWatch()
}

// endReadWatch ends the read watch if the server has stopped and has no connection left; s.mu
// held. Its goroutine returns once the watch's Close has woken it.
func (s *Server) endReadWatch() {
	if !s.rwStop || len(s.conns) > 0 {
		return
	}
	s.noReadWatch = true // none is made after this
	if s.rw != nil {
		s.rw.rw.Close()
		s.rw = nil
	}
}

// add watches c under a new id.
func (w *readWatch) add(c *conn) (uint64, error) {
	w.mu.Lock()
	w.next++
	id := w.next
	w.conns[id] = c
	w.mu.Unlock()
	if err := w.rw.Add(c.raw, id); err != nil {
		w.forget(id)
		return 0, err
	}
	return id, nil
}

// remove ends c's watch id.
func (w *readWatch) remove(c *conn, id uint64) {
	w.forget(id)
	w.rw.Remove(c.raw) // an error: the watch or the socket was closed, and the kernel's entry with it
}

func (w *readWatch) forget(id uint64) {
	w.mu.Lock()
	delete(w.conns, id)
	w.mu.Unlock()
}

// ready is the watch's goroutine hearing that the connection watched under id has something
// to read.
func (w *readWatch) ready(id uint64) {
	w.mu.Lock()
	c := w.conns[id]
	w.mu.Unlock()
	if c != nil {
		c.readReady(w, id)
	}
}
