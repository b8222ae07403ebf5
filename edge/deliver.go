package edge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/edge/compress"
	"github.com/meridian-cdn/meridian/edge/http1"
	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
	"github.com/meridian-cdn/meridian/wire"
)

// deliverAnswer writes what the filler decided: an object, a stream, or an error.
func (n *Node) deliverAnswer(w *logWriter, req *request, a answer) {
	w.tier = a.tier
	switch {
	case a.fail != 0:
		if a.fail == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		n.fail(w, req, a.fail, http.StatusText(a.fail))
		w.note = a.note // fail noted the status text; the log wants the cause, as a pass's
		w.cacheStatus = "error"
	case a.stream != nil:
		defer a.stream.closeStream()
		w.cacheStatus = a.cacheStatus
		n.deliverStream(w, req, a.stream, a.cs)
	case a.body != nil:
		defer a.body.close()
		w.cacheStatus = a.cacheStatus
		n.deliverBody(w, req, a)
	default:
		w.cacheStatus = a.cacheStatus
		n.deliver(w, req, a.obj, a.cs, a.upstreamCS)
	}
}

// deliver writes obj to the client. It never modifies obj: header value slices are the
// response writer's (valueScratcher) or shared with the object, and only replaced, never
// appended to.
func (n *Node) deliver(w *logWriter, req *request, obj *store.Object, cs httpcache.Status, upstreamCS string) {
	if coding := undoObjectCoding(req, obj); coding != "" {
		preset := w.Header().Clone()
		h := n.objectHeader(w, req, obj, cs, upstreamCS)
		var src io.Reader = bytes.NewReader(obj.Body)
		if obj.Size > 0 {
			src = n.newSliceReader(req, obj)
		}
		n.deliverDecoded(w, req, decoded{status: obj.Status, h: h, preset: preset, coding: coding, src: src})
		return
	}
	if obj.Size > 0 {
		n.deliverSliced(w, req, obj, cs, upstreamCS)
		return
	}
	r := req.r
	if obj.Status == http.StatusOK && needsServeContent(r.Header) {
		h := n.objectHeader(w, req, obj, cs, upstreamCS)
		if _, ok := h["Content-Type"]; !ok {
			h["Content-Type"] = nil // no sniffing: the origin said nothing, so do we
		}
		delete(h, "Content-Length")
		w.keepFor304(req, h)
		serveContent(w, r, req.lw.start, h, obj, int64(len(obj.Body)), bytes.NewReader(obj.Body))
		return
	}
	if !n.blockHeader(w, req, obj, cs, upstreamCS) {
		h := n.objectHeader(w, req, obj, cs, upstreamCS)
		noSniff(h) // a block has a Content-Type (http1.HeaderBlock)
		h["Content-Length"] = req.field(2, req.keep(strconv.AppendInt(req.spare(), int64(len(obj.Body)), 10)))
	}
	w.WriteHeader(obj.Status)
	if r.Method != http.MethodHead && bodyAllowed(obj.Status) {
		w.Write(obj.Body) // nothing follows; a failure is noted (logWriter.Write)
	}
}

// serveContent answers r with content, obj's representation of size bytes (header h),
// through http.ServeContent: the conditionals read as RFC 9110 reads them first
// (conditionalsRead, with now the request's time), the Range checked (rangeChecked), and a
// whole answer with a Content-Encoding given its Content-Length, which ServeContent leaves
// out (contentWriter); a 412 or a 416 is the header ownErrorHeader makes.
func serveContent(w *logWriter, r *http.Request, now time.Time, h http.Header, obj *store.Object, size int64, content io.ReadSeeker) {
	serveChecked(w, rangeChecked(conditionalsRead(r, now, obj.LastModified), obj, size), h, obj.LastModified, size, content)
}

// conditionalsRead returns r, or a copy of it whose conditionals http.ServeContent reads as
// RFC 9110 §13.1 has them read at now, as preconditionStatus does. ServeContent reads a
// field's first line alone: an If-Match or If-None-Match sent as several lines, one list (RFC
// 9110 §5.3), is joined into one (a 412 to an If-Match whose second line named the object,
// the whole object to such an If-None-Match), and an If-Modified-Since or If-Unmodified-Since
// sent as several, a list of dates, is left out (§13.1.3, §13.1.4: ignored). An
// If-Modified-Since later than now and than lastModified, the object's, is left out too
// (ignoredModifiedSince). r is never modified.
func conditionalsRead(r *http.Request, now, lastModified time.Time) *http.Request {
	c := r
	own := func() {
		if c == r {
			cp := *r
			cp.Header = r.Header.Clone()
			c = &cp
		}
	}
	for _, k := range [...]string{"If-Match", "If-None-Match"} {
		if v := r.Header[k]; len(v) > 1 {
			own()
			c.Header[k] = []string{strings.Join(v, ", ")}
		}
	}
	if v := r.Header["If-Unmodified-Since"]; len(v) > 1 {
		own()
		delete(c.Header, "If-Unmodified-Since")
	}
	if v, ok := r.Header["If-Modified-Since"]; ok && ignoredModifiedSince(v, now, lastModified) {
		own()
		delete(c.Header, "If-Modified-Since")
	}
	return c
}

// ignoredModifiedSince reports whether an If-Modified-Since of field lines v is ignored at
// now for an object last modified at lastModified: sent as several lines, a list of dates (RFC
// 9110 §13.1.3), or a date later than now, as Varnish ignores it (RFC 2616 §14.25 called it
// invalid): a client whose clock runs ahead would get a 304 whatever version it holds, also
// one older than the object. A date no later than lastModified is read, though: from an
// origin whose clock runs ahead of the edge's, a Last-Modified is in the edge's future, and
// the client (or fleet node) that sends it back holds that very version.
func ignoredModifiedSince(v []string, now, lastModified time.Time) bool {
	if len(v) != 1 {
		return true
	}
	t, err := http.ParseTime(v[0])
	return err == nil && t.After(now) && t.After(lastModified)
}

// serveChecked is serveContent for r, whose Range was checked already, and a representation
// last modified at lastModified.
func serveChecked(w *logWriter, r *http.Request, h http.Header, lastModified time.Time, size int64, content io.ReadSeeker) {
	cw := contentWriter{w, -1, nil}
	if sr, ok := content.(*sliceReader); ok {
		cw.hold = sr.hold
	}
	if _, ok := h["Content-Encoding"]; ok {
		cw.length = size
	}
	http.ServeContent(cw, r, "", lastModified, content)
}

// contentWriter is the writer http.ServeContent answers through: a 200 (the whole object) of
// an encoded representation, length >= 0, gets the object's Content-Length, which ServeContent
// sets for a range but not for a whole answer with a Content-Encoding; a 412 or a 416, the
// edge's own errors about the object, get ownErrorHeader's fields. Its other answers set their
// own framing. A sliced answer's head and first bytes go through hold (headHold).
type contentWriter struct {
	*logWriter
	length int64     // the encoded representation's, or -1
	hold   *headHold // a sliced answer's (deliverSliced), or nil
}

func (w contentWriter) WriteHeader(code int) {
	h := w.Header()
	switch {
	case code == http.StatusOK && w.length >= 0 && len(h["Content-Length"]) == 0:
		h["Content-Length"] = []string{strconv.FormatInt(w.length, 10)}
	case code == http.StatusPreconditionFailed || code == http.StatusRequestedRangeNotSatisfiable:
		ownErrorHeader(h, code)
	}
	if w.hold != nil {
		w.hold.writeHeader(code)
		return
	}
	w.logWriter.WriteHeader(code)
}

func (w contentWriter) Write(b []byte) (int, error) {
	if w.hold != nil {
		return w.hold.Write(b)
	}
	return w.logWriter.Write(b)
}

// ReadFrom is logWriter.ReadFrom through the hold, if any.
func (w contentWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.hold == nil {
		return w.logWriter.ReadFrom(src)
	}
	if lr, ok := src.(*io.LimitedReader); ok {
		if sr, ok := lr.R.(*sliceReader); ok {
			n, err := sr.writeTo(w.hold, lr.N)
			lr.N -= n
			return n, err
		}
	}
	return io.Copy(writerOnly{w.hold}, src)
}

// ownErrorHeader makes h, an object's answer's fields, the header of code, a 412 or a 416 that
// the edge answers about the object itself (a precondition failed against it, a range past its
// end: writePrecondition, contentWriter). Such an error is no representation of the object,
// and does not carry its freshness (Cache-Control, Expires, and the targeted CDN-Cache-Control
// and Surrogate-Control), with which RFC 9111 §3 lets any cache downstream store the error (any
// final status with explicit expiration may be) and serve it to every client of the URL, nor
// the fields of content it does not have (Content-Encoding, a 412's Content-Type and length).
// It says Cache-Control: no-store instead, as the edge's other own errors do (Node.fail): also
// a downstream cache set to keep any status for a time of its own (nginx's proxy_cache_valid
// any) keeps none of them. A 412 keeps the object's ETag and Last-Modified, the validators
// its precondition failed against; a 416 has none (http.ServeContent's serveError drops them),
// and keeps the Content-Type of its text (http.Error's) and its Content-Range. A 304 is
// another matter: it carries the object's fields (RFC 9110 §15.4.5).
func ownErrorHeader(h http.Header, code int) {
	for _, k := range [...]string{"Expires", "Cdn-Cache-Control", "Surrogate-Control", "Content-Encoding"} {
		delete(h, k)
	}
	if code == http.StatusPreconditionFailed {
		for _, k := range [...]string{"Content-Type", "Content-Length", "Content-Range"} {
			delete(h, k)
		}
	}
	h["Cache-Control"] = []string{"no-store"}
}

// clientHeader copies an answer's fields into the response header: the fleet-only ones only
// for a verified fleet node, and under the host's response policy, with the origin's own URLs
// made the host's (clientURLs), for anyone else.
func clientHeader(w *logWriter, req *request, src http.Header) http.Header {
	h := w.Header()
	for k, v := range src {
		h[k] = v
	}
	clientPolicy(h, req)
	if !req.fromPeer {
		clientURLs(h, req)
	}
	return h
}

// clientPolicy applies to h, an answer's fields, what clientHeader does once they are copied.
func clientPolicy(h http.Header, req *request) http.Header {
	markHop(h, req)
	if !req.fromPeer {
		if !req.host.cfg.Cache.KeepSurrogateHeaders {
			httpcache.StripSurrogateHeaders(h)
		}
		applyResponsePolicy(h, req.host)
	}
	return h
}

// objectHeader sets the response header for obj: its stored fields, less what only the fleet
// may see, under the host's response policy, with Age and Cache-Status.
func (n *Node) objectHeader(w *logWriter, req *request, obj *store.Object, cs httpcache.Status, upstreamCS string) http.Header {
	h := w.Header()
	var scratch []string
	if vs, ok := w.ResponseWriter.(valueScratcher); ok {
		scratch = vs.ValueScratch()
	}
	obj.SetHeader(h, scratch) // without, one allocation for the values
	clientPolicy(h, req)
	if !req.fromPeer && obj.HasURLFields() { // a flag: an answer without such fields pays nothing
		clientURLs(h, req)
	}
	markEdgeCoded(h, req, obj)
	markFleetKeys(h, req, obj)
	n.setPerAnswer(h, req, obj, cs, upstreamCS)
	return h
}

// setPerAnswer sets the fields of a stored object's answer that change with each answer.
func (n *Node) setPerAnswer(h http.Header, req *request, obj *store.Object, cs httpcache.Status, upstreamCS string) {
	h["Age"] = req.field(0, req.keep(strconv.AppendInt(req.spare(), n.age(req, obj), 10)))
	h["Cache-Status"] = req.field(1, req.keep(httpcache.AppendStatusTo(req.spare(), upstreamCS, cs)))
}

// age is obj's Age in seconds, for req's answer.
func (n *Node) age(req *request, obj *store.Object) int64 {
	now := req.lw.start
	if !req.ageAtStart {
		now = n.clock()
	}
	return int64(obj.Age(now) / time.Second)
}

// appendPerAnswer appends setPerAnswer's fields to b serialised, for a header block
// (blockHeader): two map entries fewer to set, write out and clear per hit (issue 15).
func (n *Node) appendPerAnswer(b []byte, req *request, obj *store.Object, cs httpcache.Status, upstreamCS string) []byte {
	b = append(b, "Age: "...)
	b = strconv.AppendInt(b, n.age(req, obj), 10)
	b = append(b, "\r\nCache-Status: "...)
	v := len(b)
	return http1.EndField(httpcache.AppendStatusTo(b, upstreamCS, cs), v)
}

// headerBlocker is a ResponseWriter that writes fields serialised ahead of time beside its
// header map (edge/http1's).
type headerBlocker interface {
	SetHeaderBlock(block, fields []byte, contentLength int64)
}

// blockHeader is objectHeader for a writer that takes a serialised header block: obj's fields
// under the host's policy are serialised once per shared view of it (store.Object.Memo), Age
// and Cache-Status per answer (appendPerAnswer), and Content-Length declared beside them: no
// map entry to set and write out per hit (a dozen were 1-11 % of an HTTP/1.1 hit's CPU, the
// last three 2 %; issue 15). URL fields that name the origin are each client's own
// (clientURLs): serialised ahead of the block in the memo, they are rewritten per answer into
// its own fields (appendClientURLs). It reports false when the answer needs objectHeader:
// another writer, a fleet node's request (its fields differ), a status without a body, fields
// set before (the map's would then mix with the block's), or an object without a memo or
// whose fields http1.HeaderBlock cannot serialise.
func (n *Node) blockHeader(w *logWriter, req *request, obj *store.Object, cs httpcache.Status, upstreamCS string) bool {
	bw, ok := w.ResponseWriter.(headerBlocker)
	if !ok || req.fromPeer || !bodyAllowed(obj.Status) || len(w.Header()) != 0 {
		return false
	}
	memo := obj.Memo(req.host, func() []byte {
		f := clientPolicy(obj.HeaderMap(), req)
		// setPerAnswer's fields replace any the policy set, as on objectHeader's way.
		delete(f, "Age")
		delete(f, "Cache-Status")
		var urls []byte
		if obj.HasURLFields() && req.host.namesOrigin(f) {
			for _, k := range urlFields {
				urls = http1.AppendField(urls, k, f[k])
				delete(f, k)
			}
		}
		block := http1.HeaderBlock(f)
		if block == nil {
			return nil
		}
		// The memo: the URL fields' length, the URL fields, the block.
		m := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(urls)+len(block)), uint32(len(urls)))
		return append(append(m, urls...), block...)
	})
	if memo == nil {
		return false
	}
	urls := binary.LittleEndian.Uint32(memo)
	fields := req.spare()
	if urls > 0 {
		// More than the request's own bytes hold: one allocation, sized for a few rewritten
		// lines and the per-answer fields, rather than one per append that outgrows it.
		fields = make([]byte, 0, int(urls)+4*len(req.host.cfg.Host)+128)
		fields = appendClientURLs(fields, req, memo[4:4+urls])
	}
	fields = n.appendPerAnswer(fields, req, obj, cs, upstreamCS)
	req.keep(fields)
	bw.SetHeaderBlock(memo[4+urls:], fields, int64(len(obj.Body)))
	return true
}

// deliverBody writes a streaming miss to the client: the header at once, the body as the fill
// receives it. A conditional or Range request waits for the whole body when it will be kept,
// and is answered from it as from a stored object; of a body too large to keep, a Range gets
// its bytes cut out as they arrive (streamRange), and the body is otherwise sent whole.
func (n *Node) deliverBody(w *logWriter, req *request, a answer) {
	r := req.r
	// A flush that fails ends the wait for the fill's next bytes (clientFlush); the fill
	// itself goes on, for its other readers and the store.
	fl := newClientFlush(w, r.Context())
	defer fl.stop()
	if coding := undoObjectCoding(req, a.obj); coding != "" {
		// Decoded as it arrives: a Range is not served on decoded bytes, so nothing waits
		// for the whole body.
		preset := w.Header().Clone()
		h := n.objectHeader(w, req, a.obj, a.cs, a.upstreamCS)
		n.deliverDecoded(w, req, decoded{status: a.obj.Status, h: h, preset: preset, coding: coding,
			src: a.body.reader(fl.ctx, fl.flushSent)})
		return
	}
	if !a.tooLarge && needsServeContent(r.Header) {
		body, err := a.body.wait(r.Context())
		switch {
		case errors.Is(err, errNotKept):
			// Its length was not declared, and it outgrew max_object_bytes: sent whole, as a
			// body known too large from its header is, and not stored after all.
			a.cs.Stored, a.cs.HasTTL = false, false
		case err != nil:
			w.note = err.Error()
			n.fail(w, req, http.StatusBadGateway, "upstream body failed")
			return
		default:
			o := *a.obj
			o.Body = body
			n.deliver(w, req, &o, a.cs, a.upstreamCS)
			return
		}
	}
	obj := a.obj
	h := n.objectHeader(w, req, obj, a.cs, a.upstreamCS)
	noSniff(h)
	delete(h, "Content-Length")
	if writePrecondition(w, r, req.lw.start, obj.Status, h) {
		return
	}
	if rr, lm := streamRange(r, obj.Status, h, a.length); rr != nil {
		if err := serveRange(w, rr, h, lm, newRangeSource(a.body.reader(fl.ctx, fl.flushSent), a.length, fl.flushSent)); err != nil {
			fl.cutShort(a.body, err)
		}
		return
	}
	if a.length >= 0 {
		h["Content-Length"] = []string{strconv.FormatInt(a.length, 10)}
	}
	w.WriteHeader(obj.Status)
	if r.Method == http.MethodHead || !bodyAllowed(obj.Status) {
		return
	}
	if err := a.body.copyTo(fl.ctx, w, fl.flush); err != nil {
		fl.cutShort(a.body, err)
	}
}

// clientFlush flushes an answer that streams to its client. Its first failed flush (the
// client went away, or took nothing for the send timeout) ends ctx, so that what the answer
// then waits for, a fill's next bytes or the upstream's, is waited for no longer: they could
// not reach the client. Over HTTP/3 a failed write does not end the request's context, and a
// client gone there held its handler until the upstream sent more (TestClientGoneMidBody).
// Used by the handler's goroutine only.
type clientFlush struct {
	w   *logWriter
	ctx context.Context // the request's, ended by the first failed flush
	cut context.CancelCauseFunc
	err error // the first failed flush
}

func newClientFlush(w *logWriter, parent context.Context) *clientFlush {
	ctx, cut := context.WithCancelCause(parent)
	return &clientFlush{w: w, ctx: ctx, cut: cut}
}

// flush sends what the server holds of the answer; after a failed flush it does nothing.
func (f *clientFlush) flush() {
	if f.err != nil {
		return
	}
	if err := f.w.FlushError(); err != nil {
		f.err = fmt.Errorf("flush to the client: %w", err)
		f.cut(f.err)
	}
}

// flushSent is flush once the header is written: before, a flush would send the header,
// which waits for the first bytes.
func (f *clientFlush) flushSent() {
	if f.w.wroteHeader {
		f.flush()
	}
}

// abort ends the answer, cut short by err or by the failed flush that brought err about.
func (f *clientFlush) abort(err error) {
	if f.err != nil {
		err = f.err
	}
	abortAnswer(f.w, err)
}

// cutShort ends the answer, cut short by err, a failure of the fill's body read by body or of the
// client. When the fill failed, what the client was written of it goes out first (sendHeld):
// the bytes that came with the fill's last read, or since the last flush, sat in the server's
// buffer and were dropped at the abort, so the client got the head and none of them.
func (f *clientFlush) cutShort(body *bodyReader, err error) {
	if f.err == nil && body.failed() {
		f.w.sendHeld()
	}
	f.abort(err)
}

// stop releases the context once the answer is done.
func (f *clientFlush) stop() { f.cut(nil) }

// FlushError is Flush that says whether it reached the client (http.ResponseController's): a
// failed flush is a failed write.
func (w *logWriter) FlushError() error {
	if f, ok := w.ResponseWriter.(interface{ FlushError() error }); ok {
		return f.FlushError()
	}
	w.Flush()
	return nil
}

// sendHeld sends what the client was written of an answer whose upstream cut it short, before
// the abort: the servers hold a small answer's head and first bytes back (edge/http1 and
// net/http's until 4 KiB or the handler's end, HTTP/3's until a flush) and dropped them at the
// abort, so the client got a bare close (HTTP/1.1) or reset and nothing else. Sent, it gets the
// head and the bytes that came, then the cut, which its framing shows (fewer bytes than
// Content-Length, no last chunk), as nginx and Varnish relay such an answer. Not for a client
// that failed: its flush could only wait for it.
func (w *logWriter) sendHeld() {
	if w.wroteHeader {
		w.FlushError()
	}
}

// abortAnswer ends an answer cut short by err, the client's side or the upstream's: the log
// says why, and the client sees the answer cut short, never a complete-looking one.
func abortAnswer(w *logWriter, err error) {
	w.note = "stream aborted: " + err.Error()
	panic(http.ErrAbortHandler)
}

// decoded is an answer that deliverDecoded sends decoded.
type decoded struct {
	status int
	h      http.Header // the response header, the answer's fields set
	preset http.Header // the response header before they were set: what a 502 goes out with
	coding string      // the answer's coding, the upstream's, which the client does not accept (undoCoding)
	src    io.Reader   // the answer's body, coded
	flush  bool        // flush after every write (event streams, bodies without a length)
}

// deliverDecoded writes the answer d decoded, as it is read (compress.NewReader): bounded
// memory whatever the decoded size, no Content-Length (unknown until the end), and a Range
// ignored, as by nginx's gunzip module and Varnish: the whole answer is a 200. Conditionals
// are evaluated against the decoded answer's header (compress.DecodeHeader: its ETag is weak).
// A body that does not decode, or whose source fails, before the first decoded bytes gets a
// 502; after them, the answer is cut short, never completed. The log says why.
func (n *Node) deliverDecoded(w *logWriter, req *request, d decoded) {
	r := req.r
	h := d.h
	compress.DecodeHeader(h)
	noSniff(h)
	if writePrecondition(w, r, req.lw.start, d.status, h) {
		return
	}
	if r.Method == http.MethodHead || !bodyAllowed(d.status) {
		w.WriteHeader(d.status)
		return
	}
	src := &sourceReader{r: d.src}
	buf := make([]byte, 32<<10)
	var nr int
	dec, err := n.newDecoder(src, d.coding)
	if err == nil {
		defer dec.Close() // gives its window back on every way out, a panic's too
		nr, err = readFirst(dec, buf, d.flush)
	}
	if err != nil && err != io.EOF {
		clear(h)
		maps.Copy(h, d.preset)
		if errors.Is(err, compress.ErrOverBudget) {
			n.refuseDecode(w, req, err)
			return
		}
		n.fail(w, req, http.StatusBadGateway, "upstream body not decodable")
		w.note = n.decodeFailure(req, d.coding, src, err) // after fail, which notes its own
		return
	}
	w.WriteHeader(d.status)
	for {
		if nr > 0 {
			if _, werr := w.Write(buf[:nr]); werr != nil {
				abortAnswer(w, werr)
			}
			if d.flush {
				if ferr := w.FlushError(); ferr != nil {
					abortAnswer(w, fmt.Errorf("flush to the client: %w", ferr))
				}
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			w.note = n.decodeFailure(req, d.coding, src, err)
			// Its source failed (the upstream cut it short), or the coded bytes turned corrupt
			// (the decoder's error: the client took every write so far): what was decoded
			// before goes out ahead of the cut, as in deliverStream.
			w.sendHeld()
			// The client must see the answer cut short, not a complete-looking one.
			panic(http.ErrAbortHandler)
		}
		nr, err = dec.Read(buf)
	}
}

// sourceReader is the coded body deliverDecoded reads: it keeps the body's own error, told
// apart from a decoding one.
type sourceReader struct {
	r   io.Reader
	err error // the first error other than io.EOF
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// decodeFailure says why deliverDecoded's answer failed, for the access log: its source (the
// upstream, a slice, the client gone), or the decoding, which is also logged as a warning:
// the origin sent bytes that are not in the coding it named.
func (n *Node) decodeFailure(req *request, coding string, src *sourceReader, err error) string {
	if src.err != nil {
		return "stream aborted: " + src.err.Error()
	}
	n.log.Warn("answer in a coding its client does not accept could not be decoded", "host", req.host.cfg.Host,
		"path", req.path, "coding", coding, "err", err)
	return err.Error()
}

// readFirst reads the first decoded bytes of an answer into buf, before its header is sent,
// so that a body that does not decode gets an error status rather than a 200 cut short: a
// body not in its coding at all (the usual corruption: a label on the wrong bytes) fails at
// once, and one whose decoded size fits in buf is checked whole, its checksum included. A
// stream (an event stream, a body without a length) is not held up: its first bytes are
// enough. The end of the body is io.EOF.
func readFirst(dec io.Reader, buf []byte, stream bool) (int, error) {
	if !stream {
		n, err := io.ReadFull(dec, buf)
		if err == io.ErrUnexpectedEOF { // ReadFull's own: dec's errors are wrapped
			err = io.EOF
		}
		return n, err
	}
	for range 100 {
		if n, err := dec.Read(buf); n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.ErrNoProgress
}

// noSniff keeps the server from adding a Content-Type that the origin did not send (it would
// sniff one from the body, as net/http does): the origin said nothing, so do we, as nginx and
// Varnish. A sniffed text/html would also undo an origin's X-Content-Type-Options: nosniff.
// A field without values is never written.
func noSniff(h http.Header) {
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil
	}
}

// markHop tells a verified fleet node that we answered it as one (surrogate fields kept), and
// removes any such claim from what anyone else gets, or from an answer no verified chain gave us.
func markHop(h http.Header, req *request) {
	if req.fromPeer && !req.untrustedAnswer {
		h[hopHeader] = []string{hopTrustedValue}
	} else {
		delete(h, hopHeader)
	}
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// needsServeContent reports request fields that http.ServeContent answers: conditionals
// (RFC 9110 §13) and byte ranges. Plain requests take the cheaper direct path.
func needsServeContent(h http.Header) bool {
	for _, k := range []string{"If-None-Match", "If-Modified-Since", "Range", "If-Match", "If-Unmodified-Since"} {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// writePrecondition answers r's conditionals (RFC 9110 §13.2.2) for an answer that is passed on
// as it streams, not through http.ServeContent (too large to keep, or not stored): the fill
// did not carry them (docs/edge.md, "What reaches the origin"), so nobody else evaluates them.
// It writes a 304 with h, the answer's header, or a 412 with ownErrorHeader's, and reports
// whether it did; the answer's body is then not sent. A Range is answered after it (streamRange).
func writePrecondition(w http.ResponseWriter, r *http.Request, now time.Time, status int, h http.Header) bool {
	if status != http.StatusOK {
		return false // preconditions are ignored for any other answer (RFC 9110 §13.2.1)
	}
	code := preconditionStatus(r, now, h)
	if code == 0 {
		return false
	}
	if code == http.StatusPreconditionFailed {
		ownErrorHeader(h, code)
	} else {
		for _, k := range []string{"Content-Length", "Content-Type", "Content-Encoding", "Content-Range"} {
			delete(h, k)
		}
	}
	w.WriteHeader(code)
	return true
}

// preconditionStatus evaluates r's If-Match, If-Unmodified-Since, If-None-Match and
// If-Modified-Since against a 200 answer's header h in RFC 9110 §13.2.2's order, at now: 412,
// 304, or 0 to send the answer. A date field sent as several lines is ignored, and so is an
// If-Modified-Since later than now and than the answer's Last-Modified (ignoredModifiedSince),
// as on a kept object (conditionalsRead).
func preconditionStatus(r *http.Request, now time.Time, h http.Header) int {
	rh := r.Header
	etag := h.Get("Etag")
	lastModified, lmErr := http.ParseTime(h.Get("Last-Modified"))
	if im, ok := rh["If-Match"]; ok {
		if !etagListMatch(strings.Join(im, ","), etag, false) {
			return http.StatusPreconditionFailed
		}
	} else if ius, ok := rh["If-Unmodified-Since"]; ok && len(ius) == 1 && lmErr == nil {
		if t, err := http.ParseTime(ius[0]); err == nil && lastModified.After(t) {
			return http.StatusPreconditionFailed
		}
	}
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	if inm, ok := rh["If-None-Match"]; ok {
		if etagListMatch(strings.Join(inm, ","), etag, true) {
			if get {
				return http.StatusNotModified
			}
			return http.StatusPreconditionFailed
		}
	} else if ims, ok := rh["If-Modified-Since"]; ok && get && lmErr == nil && !ignoredModifiedSince(ims, now, lastModified) {
		if t, err := http.ParseTime(ims[0]); err == nil && !lastModified.After(t) {
			return http.StatusNotModified
		}
	}
	return 0
}

// etagListMatch reports whether list, an If-Match or If-None-Match value, matches etag, the
// answer's (RFC 9110 §8.8.3.2): "*" matches any answer; weak compares the tags' opaque parts,
// else both must be strong and equal.
func etagListMatch(list, etag string, weak bool) bool {
	if strings.TrimSpace(list) == "*" {
		return true
	}
	if etag == "" || !weak && strings.HasPrefix(etag, "W/") {
		return false
	}
	for list != "" {
		list = strings.TrimLeft(list, " \t,")
		if list == "" {
			break
		}
		start := 0
		if strings.HasPrefix(list, "W/") {
			start = 2
		}
		if len(list) <= start || list[start] != '"' {
			return false // not an entity-tag: no match
		}
		end := strings.IndexByte(list[start+1:], '"')
		if end < 0 {
			return false
		}
		tag := list[:start+end+2]
		list = list[start+end+2:]
		if !weak && start != 0 {
			continue
		}
		if strings.TrimPrefix(tag, "W/") == strings.TrimPrefix(etag, "W/") {
			return true
		}
	}
	return false
}

// maxRanges is the most ranges one request may ask for. A request with more, or with
// overlapping or descending ranges, is answered whole: RFC 9110 §14.2 names them the marks of
// a broken client or a denial-of-service attempt, each part costs a part header (and on a
// sliced object a seek across slices), and the sum of ranges alone (http.ServeContent's limit)
// lets a few bytes of request ask for thousands of parts.
const maxRanges = 64

// rangeChecked returns r, or a copy without its Range when http.ServeContent must not answer
// that Range from obj, a representation of size bytes: a Range on another method than GET,
// the only one range handling is defined for (RFC 9110 §14.2: it must be ignored, where
// ServeContent answers a HEAD with the 206's header), a unit other than bytes, which must be
// ignored (RFC 9110 §14.2; ServeContent answers 416), a ranges-specifier that is invalid
// (bytes=5-2, bytes=abc: ignored, as RFC 9110 §14.2 allows, where ServeContent answers 416
// without a Content-Range), too many or overlapping ranges (maxRanges), or an If-Range date
// that obj's Last-Modified cannot be strongly compared with (weakLastModified). A suffix
// range of length 0 is rewritten as one past the end (withoutEmptySuffixes). r is never
// modified: its header may be read elsewhere.
func rangeChecked(r *http.Request, obj *store.Object, size int64) *http.Request {
	v, ok := r.Header["Range"]
	if !ok {
		return r
	}
	if len(v) == 1 && r.Method == http.MethodGet {
		if _, ok := rangeServable(v[0], size); ok && !ifRangeDateOnWeak(r.Header, obj) {
			fixed, changed := withoutEmptySuffixes(v[0], size)
			if !changed {
				return r
			}
			c := *r
			c.Header = r.Header.Clone()
			c.Header["Range"] = []string{fixed}
			return &c
		}
	}
	c := *r
	c.Header = r.Header.Clone()
	delete(c.Header, "Range")
	return &c
}

// withoutEmptySuffixes rewrites the suffix ranges of length 0 in v, a servable ranges-specifier
// (rangeServable), as ranges starting at size: both are unsatisfiable (RFC 9110 §14.1.1), but
// http.ServeContent answers bytes=-0 as a range of no bytes, a 206 whose Content-Range ends
// before it begins (bytes 10-9/10, invalid by RFC 9110 §14.4), where it skips the other, or
// answers 416 when no range is left.
func withoutEmptySuffixes(v string, size int64) (string, bool) {
	emptySuffix := func(spec string) bool {
		n, ok := strings.CutPrefix(strings.Trim(spec, " \t"), "-")
		return ok && strings.Trim(n, "0") == ""
	}
	// Looked for first: a ranged request with none (nearly all) allocates nothing here.
	found := false
	for spec := range strings.SplitSeq(strings.TrimPrefix(v, "bytes="), ",") {
		if found = emptySuffix(spec); found {
			break
		}
	}
	if !found {
		return v, false
	}
	specs := strings.Split(strings.TrimPrefix(v, "bytes="), ",")
	for i, spec := range specs {
		if emptySuffix(spec) {
			specs[i] = strconv.FormatInt(size, 10) + "-"
		}
	}
	return "bytes=" + strings.Join(specs, ","), true
}

// ifRangeDateOnWeak reports an If-Range with a date where obj's Last-Modified is a weak
// validator: not at least 60 seconds before its Date (RFC 9110 §8.8.2.2), since the object
// may have changed twice within that window. Such an If-Range must be ignored (RFC 9110
// §13.1.5), and the Range with it: http.ServeContent compares the date alone and would join a new
// version's bytes to a client's old ones.
func ifRangeDateOnWeak(h http.Header, obj *store.Object) bool {
	return ifRangeDate(h) && weakLastModified(obj.HeaderValue("Date"), obj.LastModified)
}

// ifRangeDate reports whether h, a request's header, has an If-Range that is not an
// entity-tag (which http.ServeContent compares strongly): a date, or anything else.
func ifRangeDate(h http.Header) bool {
	ir, ok := h["If-Range"]
	return ok && !(len(ir) == 1 && (strings.HasPrefix(ir[0], `"`) || strings.HasPrefix(ir[0], "W/")))
}

// weakLastModified reports whether lastModified, of an answer whose Date field is date, is a
// weak validator (RFC 9110 §8.8.2.2): absent, or less than 60 seconds before date.
func weakLastModified(date string, lastModified time.Time) bool {
	d, err := http.ParseTime(date)
	return lastModified.IsZero() || err != nil || d.Sub(lastModified) < 60*time.Second
}

// rangeServable reports whether v is a valid bytes ranges-specifier (RFC 9110 §14.1.2) of at
// most maxRanges ranges whose satisfiable ones, for size bytes, ascend without overlapping,
// and how many of its ranges are satisfiable.
func rangeServable(v string, size int64) (satisfiable int, ok bool) {
	set, ok := strings.CutPrefix(v, "bytes=")
	if !ok {
		return 0, false
	}
	n := 0
	next := int64(0) // the first byte a later satisfiable range may start at
	for spec := range strings.SplitSeq(set, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			continue // an empty list element (RFC 9110 §5.6.1)
		}
		if n++; n > maxRanges {
			return 0, false
		}
		a, b, ok := strings.Cut(spec, "-")
		first, okA := rangeNumber(a)
		last, okB := rangeNumber(b)
		switch {
		case !ok || a != "" && !okA || b != "" && !okB || a == "" && b == "":
			return 0, false
		case a == "" && size == 0 && last > 0:
			// Satisfiable (RFC 9110 §14.1.1), with no byte to send: no Content-Range can
			// say so (ServeContent writes bytes 0--1/0); the empty 200 does.
			return 0, false
		case a == "": // suffix range
			first, last = max(size-last, 0), size-1
		case b == "" || last >= size:
			if b != "" && last < first {
				return 0, false
			}
			last = size - 1
		case last < first:
			return 0, false
		}
		if first >= size || last < first {
			continue // unsatisfiable: ServeContent skips it
		}
		if first < next {
			return 0, false
		}
		next = last + 1
		satisfiable++
	}
	return satisfiable, n > 0
}

// streamRange returns the request that http.ServeContent answers r's Range with from an
// answer passed on as it streams, not kept (deliverStream, deliverBody): a status with header
// h (the client's) and a body of size bytes. As Varnish does on a streaming object, and
// nginx's range filter on an upstream answer it streams, one satisfiable range is a 206 of
// that range's bytes alone, cut out as they arrive (rangeSource), a range that starts past the
// end is a 416, and an If-Range that does not match is the answer whole; If-Range is
// honoured as on a stored object (rangeChecked). It returns nil, and the answer goes whole as
// before, for a request without Range or not a GET, a status other than 200, a length not
// declared, a Range the stored path ignores too, and several ranges: their multipart answer
// would seek back across a body read once, and nginx, on a stream, answers them whole too
// (single_range).
// The request returned carries only Range and If-Range: the conditionals were answered before
// it (writePrecondition). Its other result is h's Last-Modified, for ServeContent.
func streamRange(r *http.Request, status int, h http.Header, size int64) (*http.Request, time.Time) {
	v, ok := r.Header["Range"]
	if !ok || len(v) != 1 || r.Method != http.MethodGet || status != http.StatusOK || size < 0 || len(h["Content-Range"]) > 0 {
		return nil, time.Time{}
	}
	n, ok := rangeServable(v[0], size)
	lm, _ := httpcache.ParseDate(h.Get("Last-Modified"))
	if !ok || n > 1 || ifRangeDate(r.Header) && weakLastModified(h.Get("Date"), lm) {
		return nil, time.Time{}
	}
	fixed, _ := withoutEmptySuffixes(v[0], size)
	c := *r
	c.Header = http.Header{"Range": {fixed}}
	if ir, ok := r.Header["If-Range"]; ok {
		c.Header["If-Range"] = ir
	}
	return &c, lm
}

// serveRange answers r (streamRange) from src, an answer's body as it arrives, with header h:
// by http.ServeContent, as a stored object's Range is answered (serveChecked). It returns the
// failure of a body that failed before the answer's last byte, which must cut the answer short.
func serveRange(w *logWriter, r *http.Request, h http.Header, lastModified time.Time, src *rangeSource) error {
	delete(h, "Content-Length") // ServeContent's, or contentWriter's
	serveChecked(w, r, h, lastModified, src.size, src)
	return src.failure()
}

// rangeNumber parses a range's first-pos, last-pos or suffix-length: digits only.
func rangeNumber(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// deliverStream passes an answer that will not be stored to the client as it arrives. It is
// flushed on every write when it is an event stream or has no declared length (a long poll,
// a live stream), so nothing waits in a buffer. A Range gets its bytes cut out of the answer
// as it arrives (streamRange).
func (n *Node) deliverStream(w *logWriter, req *request, res *fillResult, cs httpcache.Status) {
	resp := res.stream
	fl := newClientFlush(w, req.r.Context())
	defer fl.stop()
	if res.cancel != nil {
		// A stream is this client's alone: when the client goes, or a flush to it fails, the
		// upstream exchange ends.
		stop := context.AfterFunc(fl.ctx, res.cancel)
		defer stop()
	}
	coding := undoCoding(req, resp.StatusCode, resp.Header)
	var preset http.Header
	if coding != "" {
		preset = w.Header().Clone()
	}
	h := clientHeader(w, req, resp.Header)
	noSniff(h)
	h.Set("Cache-Status", httpcache.AppendStatus(res.upstreamCS, cs))
	flush := isEventStream(resp.Header) || resp.ContentLength < 0
	if coding != "" {
		n.deliverDecoded(w, req, decoded{status: resp.StatusCode, h: h, preset: preset, coding: coding,
			src: io.MultiReader(bytes.NewReader(res.head), resp.Body), flush: flush})
		return
	}
	if writePrecondition(w, req.r, req.lw.start, resp.StatusCode, h) {
		return
	}
	// An event stream, flushed on every write, is sent as it comes.
	if rr, lm := streamRange(req.r, resp.StatusCode, h, resp.ContentLength); rr != nil && !flush {
		var body io.Reader = resp.Body
		if len(res.head) > 0 {
			body = io.MultiReader(bytes.NewReader(res.head), resp.Body)
		}
		if err := serveRange(w, rr, h, lm, newRangeSource(body, resp.ContentLength, fl.flush)); err != nil {
			// The upstream cut it (failure is the body's): as below, the client sees the head
			// the server holds, then the cut.
			w.sendHeld()
			fl.abort(err)
		}
		return
	}
	w.WriteHeader(resp.StatusCode)
	if req.r.Method == http.MethodHead || !bodyAllowed(resp.StatusCode) {
		return
	}
	// What was read before the answer turned out too large to keep (up to max_object_bytes):
	// a client gone by then must not have the upstream read on for it.
	if _, err := w.Write(res.head); err != nil {
		abortAnswer(w, err)
	}
	src := &sourceReader{r: resp.Body}
	if err := copyFlushing(w, src, flush); err != nil {
		if src.err != nil {
			w.sendHeld()
		}
		abortAnswer(w, err)
	}
}

// copyFlushing copies src to w, flushing after each write if flush is set. It stops at the
// first write or flush that fails: the upstream is not read on for a client that is gone.
func copyFlushing(w *logWriter, src io.Reader, flush bool) error {
	if !flush {
		_, err := io.Copy(w, src)
		return err
	}
	buf := make([]byte, 32<<10)
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if _, err := w.Write(buf[:nr]); err != nil {
				return err
			}
			if err := w.FlushError(); err != nil {
				return fmt.Errorf("flush to the client: %w", err)
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// invalidate applies RFC 9111 §4.4 and RFC 9875 invalidation after a successful unsafe request
// answered with status and the fields h.
func (n *Node) invalidate(req *request, r *http.Request, status int, h http.Header) {
	if safeMethod(r.Method) {
		// A safe method's answer invalidates nothing (RFC 9111 §4.4), and its
		// Cache-Group-Invalidation is ignored (RFC 9875 §3): passes carry GET and HEAD with a
		// cookie, and OPTIONS, whose answers emptied the groups they named.
		return
	}
	host := req.host.cfg.Host
	// Paths spelt as keyed (wire.EscapedPath), which r.URL's own escaping may not be.
	targets := httpcache.InvalidationTargets(r.Method, r.URL, host, status, h, wire.EscapedPath)
	var opts []httpcache.KeyOptions
	if len(targets) > 0 {
		// Named under each key option set a copy of the URL may be stored under, as a URL
		// purge names it (keyeras.go): options changed back make those copies its again.
		var buf [2]httpcache.KeyOptions
		opts = n.invalidationKeyOptions(host, req.host.keyOpts, buf[:0])
	}
	for _, target := range targets {
		path, query, hasQuery := strings.Cut(target, "?")
		var stack [4]string
		keys := stack[:0]
		for _, o := range opts {
			key := httpcache.KeyForced(host, path, query, hasQuery, o)
			if slices.Contains(keys, key) {
				continue
			}
			keys = append(keys, key)
			at := n.store.Purge(store.Record{Kind: store.URL, Host: host, Value: key})
			// A fill under any of them asks the tiers above for nothing older (fillCacheControl).
			n.invalidations.add(key, at)
		}
	}
	for _, g := range httpcache.CacheGroupInvalidation(h) {
		n.store.Purge(store.Record{Kind: store.Key, Host: host, Value: g})
	}
}
