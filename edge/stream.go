package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// The streaming miss (docs/edge.md, "Streaming miss"). A collapsed fill hands its answer to
// every waiting client as soon as the upstream's header is in; the body goes into an inflight
// buffer that a pump goroutine of the filler fills as it arrives and that every client reads
// as it grows, Varnish-style. A body that will be stored is kept whole (it becomes the stored
// object's body, so it costs no more than a buffered fill did); a body too large to keep is
// held only for window bytes ahead of its slowest reader: the pump waits for readers
// (back-pressure), released bytes are gone, and a client arriving after the first release
// fetches its own copy. A fill therefore holds at most max(max_object_bytes, window) of memory,
// and there are at most as many fills as the upstreams' bulkheads allow.

// streamWindow is how much of a body too large to keep is held ahead of its slowest reader.
const streamWindow = 4 << 20

// smallBody is the largest declared length a collapsed fill reads whole before answering:
// streaming would not make its first byte come sooner.
const smallBody = 64 << 10

// pumpChunk is the most read from the upstream at once.
const pumpChunk = 64 << 10

// errNoReaders ends the fill of a body too large to keep once every client reading it left.
var errNoReaders = errors.New("every client reading the fill went away")

// inflight is the body of one fill as it arrives.
type inflight struct {
	limit  int64           // a kept body larger than this is not kept after all (max object size)
	budget *inflightBudget // shared by the node's fills: bytes of bodies not kept held past the window

	mu      sync.Mutex    // protects everything below
	keep    bool          // the whole body is kept (it will be stored): nothing is released
	buf     []byte        // body bytes [base, base+len(buf)); never modified once appended
	base    int64         // body offset of buf[0]; > 0 once bytes were released
	done    bool          // the body is complete, or failed with err
	err     error         //
	wake    chan struct{} // closed and replaced when buf grows, done is set or a reader moves
	readers map[*bodyReader]struct{}
	left    bool  // a reader attached and every reader has detached since
	counted int64 // bytes of buf counted in budget
}

// inflightBudget is the memory the fills of a node may hold, beyond the window, for bodies too
// large to keep (Config.Cache.InFlightBytes).
type inflightBudget struct {
	max  int64
	used atomic.Int64
}

// take counts n more bytes if they fit.
func (g *inflightBudget) take(n int64) bool {
	if g == nil {
		return false
	}
	if g.used.Add(n) > g.max {
		g.used.Add(-n)
		return false
	}
	return true
}

func (g *inflightBudget) give(n int64) {
	if g != nil && n != 0 {
		g.used.Add(-n)
	}
}

// newInflight returns an empty body; keep says it is meant to be stored. size is the declared
// length (negative if unknown), used to size the buffer once.
func newInflight(keep bool, size, limit int64, budget *inflightBudget) *inflight {
	b := &inflight{keep: keep, limit: limit, budget: budget, wake: make(chan struct{}), readers: map[*bodyReader]struct{}{}}
	if keep && size > 0 && size <= limit {
		b.buf = make([]byte, 0, size)
	}
	return b
}

// notifyLocked wakes everyone waiting for a change.
func (b *inflight) notifyLocked() {
	close(b.wake)
	b.wake = make(chan struct{})
}

// write appends p (copied). For a body not kept it first waits until its readers have
// consumed enough that at most streamWindow bytes are held.
func (b *inflight) write(ctx context.Context, p []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keep && b.base+int64(len(b.buf)+len(p)) > b.limit {
		b.keep = false // no declared length and larger than the store takes: stream only
	}
	for !b.keep && len(b.buf) >= streamWindow {
		if b.left {
			return errNoReaders
		}
		if b.budget.take(int64(len(p))) {
			// Room in the node's in-flight budget: hold on to the start, for clients to come.
			b.counted += int64(len(p))
			break
		}
		if slowest, ok := b.slowestLocked(); ok && slowest > b.base {
			// A fresh array: readers may still be writing from the old one outside the lock.
			b.buf = append(make([]byte, 0, streamWindow+pumpChunk), b.buf[slowest-b.base:]...)
			b.base = slowest
			b.budget.give(b.counted)
			b.counted = 0
			continue
		}
		ch := b.wake
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			b.mu.Lock()
			return context.Cause(ctx)
		}
		b.mu.Lock()
	}
	b.buf = append(b.buf, p...)
	b.notifyLocked()
	return nil
}

// slowestLocked is the smallest position of an attached reader.
func (b *inflight) slowestLocked() (int64, bool) {
	var min int64
	ok := false
	for r := range b.readers {
		if !ok || r.pos < min {
			min, ok = r.pos, true
		}
	}
	return min, ok
}

// finish marks the body complete (err nil) or failed.
func (b *inflight) finish(err error) {
	b.mu.Lock()
	b.budget.give(b.counted) // from now on the readers hold it, each for as long as it reads
	b.counted = 0
	b.done, b.err = true, err
	b.notifyLocked()
	b.mu.Unlock()
}

// kept returns the whole body once the pump is through with it, if it was kept.
func (b *inflight) kept() (body []byte, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.keep {
		return nil, false
	}
	return b.buf, true
}

// fromStart reports whether a client can still read the body from its start (attach).
func (b *inflight) fromStart() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.base == 0
}

// attach returns a reader from the start of the body, or nil when the start was released.
func (b *inflight) attach() *bodyReader {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.base > 0 {
		return nil
	}
	r := &bodyReader{b: b}
	b.readers[r] = struct{}{}
	b.left = false
	return r
}

// bodyReader is one client's position in an inflight body.
type bodyReader struct {
	b   *inflight
	pos int64 // guarded by b.mu
}

// failed reports whether the body ended in a failure (the upstream cut it short).
func (r *bodyReader) failed() bool {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done && b.err != nil
}

// close detaches the reader: the body no longer waits for it.
func (r *bodyReader) close() {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.readers[r]; !ok {
		return
	}
	delete(b.readers, r)
	b.left = b.left || len(b.readers) == 0
	b.notifyLocked()
}

// errNotKept is wait's answer for a body that turned out too large to keep (its length was not
// declared): the reader has read nothing yet, and can still read it as it streams (copyTo).
var errNotKept = errors.New("body too large to keep")

// wait blocks until the body is complete and returns it, or the error that ended it. Only a
// kept body can be waited for: one that stops being kept returns errNotKept at once.
func (r *bodyReader) wait(ctx context.Context) ([]byte, error) {
	b := r.b
	b.mu.Lock()
	for !b.done && b.keep {
		ch := b.wake
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	switch {
	case b.err != nil:
		return nil, b.err
	case !b.keep:
		return nil, errNotKept
	}
	return b.buf, nil
}

// copyTo writes the body to w as it arrives, calling flush whenever it has caught up with the
// fill and must wait, so a client never waits on bytes held in a buffer.
func (r *bodyReader) copyTo(ctx context.Context, w io.Writer, flush func()) error {
	b := r.b
	for {
		b.mu.Lock()
		for r.pos >= b.base+int64(len(b.buf)) && !b.done {
			ch := b.wake
			b.mu.Unlock()
			flush()
			select {
			case <-ch:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			b.mu.Lock()
		}
		if r.pos >= b.base+int64(len(b.buf)) {
			err := b.err
			b.mu.Unlock()
			return err
		}
		chunk := b.buf[r.pos-b.base:]
		if len(chunk) > 256<<10 {
			chunk = chunk[:256<<10]
		}
		b.mu.Unlock()
		n, err := w.Write(chunk) // outside the lock: the bytes are never modified
		b.mu.Lock()
		r.pos += int64(n)
		if !b.keep {
			b.notifyLocked() // the pump may be waiting for the slowest reader
		}
		b.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// reader returns the body as an io.Reader that reads as it arrives under ctx, for an answer
// passed through a decoder (deliverDecoded); like copyTo, it calls flush whenever it has
// caught up with the fill and must wait.
func (r *bodyReader) reader(ctx context.Context, flush func()) io.Reader {
	return &bodyStream{r: r, ctx: ctx, flush: flush}
}

// bodyStream is bodyReader.reader's reader.
type bodyStream struct {
	r     *bodyReader
	ctx   context.Context
	flush func()
}

func (s *bodyStream) Read(p []byte) (int, error) {
	r, b := s.r, s.r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := s.awaitLocked(); err != nil {
		return 0, err
	}
	if r.pos >= b.base+int64(len(b.buf)) {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n := copy(p, b.buf[r.pos-b.base:]) // under the lock: a copy never blocks
	r.pos += int64(n)
	if !b.keep {
		b.notifyLocked() // the pump may be waiting for the slowest reader
	}
	return n, nil
}

// skip moves the reader n bytes on as they arrive, without copying them (rangeSource).
func (s *bodyStream) skip(n int64) error {
	r, b := s.r, s.r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for to := r.pos + n; r.pos < to; {
		if err := s.awaitLocked(); err != nil {
			return err
		}
		end := b.base + int64(len(b.buf))
		if r.pos >= end {
			if b.err != nil {
				return b.err
			}
			return io.ErrUnexpectedEOF
		}
		r.pos = min(to, end)
		if !b.keep {
			b.notifyLocked() // the pump may be waiting for the slowest reader
		}
	}
	return nil
}

// awaitLocked waits until the body has bytes past the reader's position, or is done, calling
// flush before it blocks. b.mu is held, and released while it waits.
func (s *bodyStream) awaitLocked() error {
	r, b := s.r, s.r.b
	for r.pos >= b.base+int64(len(b.buf)) && !b.done {
		ch := b.wake
		b.mu.Unlock()
		s.flush()
		select {
		case <-ch:
		case <-s.ctx.Done():
			b.mu.Lock()
			return context.Cause(s.ctx)
		}
		b.mu.Lock()
	}
	return nil
}

// rangeSource is an answer's body of size bytes, read once from its start as it arrives,
// presented as the io.ReadSeeker that http.ServeContent answers a Range from (serveRange).
// ServeContent seeks to the end to learn the size, back to the start, and then, for the one
// range it is given, forward to the range's first byte: a seek only moves the position, and
// the next Read skips the bytes up to it (bodyStream.skip, or read and dropped), so nothing
// before the range is held or sent. A Read never reads past size: once the range's last byte
// is read, nothing more is waited for. Seeking back before what was read fails.
type rangeSource struct {
	r     io.Reader
	size  int64
	flush func() // called before a skip: the client gets the header while the bytes before its range go by
	pos   int64  // the position the next Read reads from
	read  int64  // how much of r was read or skipped
	err   error  // the first failure of r, which cuts the answer short
}

func newRangeSource(r io.Reader, size int64, flush func()) *rangeSource {
	return &rangeSource{r: r, size: size, flush: flush}
}

// errSeekBack is a seek before what a rangeSource has read already.
var errSeekBack = errors.New("seek back in a body read once")

func (s *rangeSource) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += s.pos
	case io.SeekEnd:
		offset += s.size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < s.read {
		return 0, errSeekBack
	}
	s.pos = offset
	return offset, nil
}

func (s *rangeSource) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.pos >= s.size {
		return 0, io.EOF
	}
	if gap := s.pos - s.read; gap > 0 {
		s.flush()
		var err error
		if sk, ok := s.r.(interface{ skip(int64) error }); ok {
			err = sk.skip(gap)
		} else if _, err = io.CopyN(io.Discard, s.r, gap); err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			s.err = fmt.Errorf("skip %d bytes to the range: %w", gap, err)
			return 0, s.err
		}
		s.read = s.pos
	}
	if left := s.size - s.pos; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := s.r.Read(p)
	s.pos += int64(n)
	s.read = s.pos
	switch {
	case err == io.EOF && s.pos < s.size:
		err = io.ErrUnexpectedEOF
		fallthrough
	case err != nil && err != io.EOF:
		s.err = err
	}
	return n, err
}

// failure is the body's first failure, or nil.
func (s *rangeSource) failure() error { return s.err }

// pump reads resp's body into b under ctx and returns why it stopped (nil: complete). It
// does not finish b: the caller stores the body first, so that a client that has read it all
// finds it in the store.
func pump(ctx context.Context, resp *http.Response, b *inflight, what string) error {
	defer resp.Body.Close()
	buf := make([]byte, pumpChunk)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if werr := b.write(ctx, buf[:n]); werr != nil {
				return fmt.Errorf("stream %s: %w", what, werr)
			}
		}
		switch {
		case err == io.EOF:
			if resp.ContentLength >= 0 && b.sizeNow() != resp.ContentLength {
				return fmt.Errorf("stream %s: %w", what, io.ErrUnexpectedEOF)
			}
			return nil
		case err != nil:
			return fmt.Errorf("read body of %s: %w", what, err)
		}
	}
}

// sizeNow is how many body bytes arrived so far.
func (b *inflight) sizeNow() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.base + int64(len(b.buf))
}
