package origin

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serveObject answers a request for an object path: GET and HEAD get the generated object, unsafe
// methods bump its version.
func (s *Server) serveObject(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	s.stats.begin(path, r.Header)
	s.inFlight.Inc()
	rec := &statusRecorder{ResponseWriter: w, srv: s, path: path}
	defer func() {
		s.stats.end()
		s.inFlight.Dec()
		s.requests.WithLabelValues(rec.label()).Inc()
	}()

	p, err := ParseParams(r.URL.Query())
	if err != nil {
		http.Error(rec, err.Error(), http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.serveGet(rec, r, p)
	case http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch:
		// Read the request body so the client's write completes before the answer.
		io.Copy(io.Discard, io.LimitReader(r.Body, MaxSize))
		s.Bump(path)
		if p.Location != "" {
			rec.Header().Set("Location", p.Location)
		}
		rec.WriteHeader(http.StatusNoContent)
	default:
		rec.Header().Set("Allow", "GET, HEAD, POST, PUT, DELETE, PATCH")
		http.Error(rec, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (s *Server) serveGet(w *statusRecorder, r *http.Request, p Params) {
	ctx := r.Context()
	path := r.URL.Path
	f := s.fault(path)
	if !sleep(ctx, p.Delay+f.Delay) {
		return
	}
	if f.Drop {
		w.drop()
		return
	}
	status := p.Status
	if f.Status != 0 {
		status = f.Status
	}
	stall := p.Stall
	if f.Stall != 0 {
		stall = f.Stall
	}

	now := s.now()
	s.mu.Lock()
	version, created := s.versionLocked(s.versions.find(path)) // find: a request is a use
	s.mu.Unlock()
	bodyPath := VariantPath(path, p.Vary, r.Header)
	// The body is read from a cached prefix block, so a large object is never held in memory.
	body := newBodyReader(s.bodies.get(bodyPath, version, blockSize(bodyPath, version, p.Size)), unitLen(bodyPath, version), p.Size)
	w.metered = f.BumpAfter > 0

	h := w.Header()
	h.Set("Date", now.UTC().Format(http.TimeFormat))
	h.Set("Content-Type", p.ContentType)
	setIf(h, "Cache-Control", p.CacheControl)
	setIf(h, "CDN-Cache-Control", p.CDNCacheControl)
	setIf(h, "Surrogate-Control", p.SurrogateControl)
	setIf(h, "Surrogate-Key", p.SurrogateKeys)
	setIf(h, "Cache-Tag", p.CacheTag)
	setIf(h, "Cache-Groups", p.CacheGroups)
	setIf(h, "Location", p.Location)
	if len(p.Vary) > 0 {
		h.Set("Vary", strings.Join(p.Vary, ", "))
	}
	if p.HasExpires {
		h.Set("Expires", now.Add(p.Expires).UTC().Format(http.TimeFormat))
	}
	if !p.NoETag {
		h.Set("ETag", ETag(bodyPath, version, p.Size))
	}
	modified := created
	if p.HasLastModified {
		modified = now.Add(-p.LastModifiedAgo)
	}
	if modified.After(now) {
		modified = now // a Last-Modified in the future would be ignored by caches
	}
	h.Set("X-Origin-Version", strconv.Itoa(version))

	half := int64(p.Size / 2)
	if f.Truncate {
		// Promise the whole body, send half, and cut the connection.
		h.Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
		h.Set("Content-Length", strconv.Itoa(p.Size))
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			io.CopyN(w, body, half)
		}
		w.abort()
		return
	}
	if status == http.StatusOK {
		if p.NoRange {
			// An origin that ignores Range: the whole object, 200, and no Accept-Ranges.
			r = r.Clone(ctx)
			r.Header.Del("Range")
			r.Header.Del("If-Range")
			w.noRanges = true
		}
		// ServeContent answers If-None-Match (weak comparison), If-Modified-Since, Range and HEAD.
		rs := &stallReader{r: body, at: half, stall: stall, ctx: ctx, flush: w.flush}
		http.ServeContent(w, r, "", modified, rs)
		return
	}
	h.Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
	if status == http.StatusNoContent || status == http.StatusNotModified {
		w.WriteHeader(status)
		return
	}
	h.Set("Content-Length", strconv.Itoa(p.Size))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.CopyN(w, body, half); err != nil {
		return
	}
	if stall > 0 {
		w.flush()
		if !sleep(ctx, stall) {
			return
		}
	}
	io.Copy(w, body)
}

func setIf(h http.Header, key, value string) {
	if value != "" {
		h.Set(key, value)
	}
}

// stallReader is the body given to http.ServeContent: it pauses once, after flushing what was
// written, when the read position reaches at.
type stallReader struct {
	r       *BodyReader
	at      int64
	stall   time.Duration
	ctx     context.Context
	flush   func()
	stalled bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.stall > 0 && !s.stalled {
		pos := s.r.off
		switch {
		case pos < s.at && int64(len(p)) > s.at-pos:
			p = p[:s.at-pos]
		case pos >= s.at:
			s.stalled = true
			s.flush()
			if !sleep(s.ctx, s.stall) {
				return 0, s.ctx.Err()
			}
		}
	}
	return s.r.Read(p)
}

func (s *stallReader) Seek(offset int64, whence int) (int64, error) {
	return s.r.Seek(offset, whence)
}

// statusRecorder remembers the status written, for the metrics, counts the body bytes sent
// (Server.BytesSent), and offers drop and abort.
type statusRecorder struct {
	http.ResponseWriter
	srv      *Server
	path     string
	metered  bool // path has a bump_after fault: writes stop at its byte and bump there
	noRanges bool // drop the Accept-Ranges that http.ServeContent sets (norange=1)
	status   int
	dropped  bool
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	if w.noRanges {
		w.Header().Del("Accept-Ranges")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.metered {
		n, err := w.ResponseWriter.Write(b)
		w.srv.sent(w.path, n, false)
		return n, err
	}
	total := 0
	for len(b) > 0 {
		chunk := b
		if room := w.srv.bumpRoom(w.path); room > 0 && room < int64(len(chunk)) {
			chunk = chunk[:room]
		}
		n, err := w.ResponseWriter.Write(chunk)
		total += n
		if w.srv.sent(w.path, n, true) {
			// Bumped before the bytes before the change are flushed: a request the client
			// makes once it has them gets the next version. This response goes on with the
			// version it started with.
			w.srv.Bump(w.path)
			w.flush()
		}
		if err != nil {
			return total, err
		}
		b = b[n:]
	}
	return total, nil
}

// ReadFrom keeps the underlying writer's pooled-buffer copy, which io.Copy would otherwise
// replace with a fresh buffer per response.
func (w *statusRecorder) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok || w.metered {
		return io.Copy(struct{ io.Writer }{w}, r) // through Write, which meters
	}
	// Counted as read, before they are written: a client that has the bytes finds them in
	// the stats.
	return rf.ReadFrom(&countingReader{r: r, sent: func(n int) { w.srv.sent(w.path, n, false) }})
}

// countingReader reports every read's byte count.
type countingReader struct {
	r    io.Reader
	sent func(n int)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.sent(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer's Flush and Hijack.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusRecorder) flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// drop closes the connection without writing a response.
func (w *statusRecorder) drop() {
	w.dropped = true
	conn, _, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): abort the stream instead.
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// abort flushes what was written and then cuts the connection, so the client sees a short body.
func (w *statusRecorder) abort() {
	w.flush()
	panic(http.ErrAbortHandler)
}

func (w *statusRecorder) label() string {
	switch {
	case w.dropped:
		return "dropped"
	case w.status == 0:
		return "000" // the client went away before anything was written
	}
	return strconv.Itoa(w.status)
}
