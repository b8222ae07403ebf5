package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/singleflight"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/edge/store"
)

// Slices (docs/edge.md, "Large objects in slices"). An object larger than its host's slice
// threshold, with a validator, is kept as fixed-size slices, each its own store entry under the
// object's primary key plus the slice index and the object's validator, beside a manifest: the
// object's header with store.Object.Size set and no body, stored under the primary key itself
// when the first fill's header is in. The manifest goes through lookup, freshness,
// revalidation and purge like any object; its slices carry its Primary, Host, Path and Keys, so
// every purge record that matches it matches them.
//
// The first fill (collapsed) asks the origin for the first slice only, as nginx's slice module
// does (firstSlice): a 206 gives the object's length in its Content-Range, so that one answer
// is either the whole object (small) or the large object's first slice, and the origin never
// sends more than the edge keeps; the manifest is stored at once. Every other slice is fetched
// with Range when a client first reads it, one fetch per slice in flight however many clients
// read it, through the key's owner peer and the shield like a fill (sliceTiers), so a flash
// crowd costs the origin one copy, and each upstream exchange is one slice, well within the
// body timeout; clients read at their own pace. A slice must carry the manifest's validator
// and length: an object changed since is never stitched to the old one's slices; the manifest
// is dropped and the client's answer is cut short, so the next request fetches the new
// version. An origin that ignores Range (answers 200) still works: its answer is the object
// whole, and its large objects stream through (collapsed, uncached) from then on. Client
// ranges are served from the slices they cover by http.ServeContent: one range is a 206 with
// Content-Range, several are a multipart/byteranges 206.

// defaultSliceBytes is a slice's size when the host sets none.
const defaultSliceBytes = 2 << 20

// errObjectChanged is a slice whose validator or length is not its manifest's.
var errObjectChanged = errors.New("object changed upstream since its slices were stored")

// sliceBytes is the host's slice size.
func (hs *hostState) sliceBytes() int64 {
	if s := hs.cfg.Cache.SliceBytes; s > 0 {
		return s
	}
	return defaultSliceBytes
}

// sliced reports whether a fill's 200 answer of size bytes is kept in slices: it must have a
// strong ETag.
func (hs *hostState) sliced(status int, h http.Header, size int64) bool {
	c := hs.cfg.Cache
	threshold := c.SliceThresholdBytes
	if threshold == 0 {
		threshold = hs.maxObject
	}
	// Slices are fetched one by one, possibly hours apart: only a strong ETag says two of them
	// are of one version (RFC 9110 §15.3.7.3). A weak one or a Last-Modified can stay the same
	// across a change, and the answer would be stitched from two versions; such an object
	// streams through uncached instead.
	return !c.DisableSlices && status == http.StatusOK && size > threshold && strongETag(h) != "" &&
		h.Get("Content-Range") == ""
}

// strongETag is h's ETag if it is a strong one, else "": parts of a representation are joined
// only under one strong validator (RFC 9110 §15.3.7.3).
func strongETag(h http.Header) string {
	if etag := h.Get("ETag"); !strings.HasPrefix(etag, "W/") {
		return etag
	}
	return ""
}

// validator is what ties the slices of one version of an object together: its ETag (a sliced
// object's is strong, see sliced), else its Last-Modified, by which firstSlice still tells an
// origin that ignored Range.
func validator(h http.Header) string { return validatorOf(h.Get("ETag"), h.Get("Last-Modified")) }

// objectValidator is validator for a stored object's header.
func objectValidator(o *store.Object) string {
	return validatorOf(o.HeaderValue("ETag"), o.HeaderValue("Last-Modified"))
}

func validatorOf(etag, lastModified string) string {
	if etag != "" {
		return etag
	}
	if lastModified != "" {
		return "lm:" + lastModified
	}
	return ""
}

// slicePart is the store part name of slice i, of sliceSize bytes, of the version with
// validator v. The size is part of the name: the host's slice_bytes may change while slices
// cut at the old size are stored, and slice i of one size is not slice i of another.
func slicePart(i, sliceSize int64, v string) string {
	return "\x00slice=" + strconv.FormatInt(sliceSize, 10) + ":" + strconv.FormatInt(i, 10) + "\x00" + v
}

// startSliced keeps a fill's answer (whose header is in res.obj) in slices: the first slice is
// read from the answer (all of it, for a first-slice answer; the start of a whole one from a
// peer or an origin that ignores Range), which is then closed; the manifest is stored at
// once; every client of the fill, and every later one, is served by deliverSliced, which
// fetches the other slices with Range as they are read.
func (f *filler) startSliced(req *request, resp *http.Response, res fillResult) fillResult {
	m := *res.obj
	m.Size = resp.ContentLength
	first := make([]byte, min(req.host.sliceBytes(), m.Size))
	_, err := io.ReadFull(resp.Body, first)
	resp.Body.Close() // the rest comes slice by slice: each a bounded exchange of its own
	if err != nil {
		res.err = fmt.Errorf("read first slice of %s from %s: %w", req.target, res.tier, err)
		res.obj, res.shareable, res.stored = nil, false, false
		return res
	}
	putSlice(f.n.store, &m, 0, req.host.sliceBytes(), first)
	res.obj, res.shareable = &m, true
	res.stored = f.n.store.Put(&m)
	return res
}

// sliced reports whether a fill's answer of size bytes from hs's origin is kept in slices.
func (f *filler) sliced(hs *hostState, status int, h http.Header, size int64) bool {
	if _, ignores := f.noRange.Load(hs.origin.Host); ignores {
		return false
	}
	return hs.sliced(status, h, size)
}

// ignoresRange records that hs's origin answered a Range with its whole object: its large
// objects stream through from now on.
func (f *filler) ignoresRange(hs *hostState) {
	if _, loaded := f.noRange.LoadOrStore(hs.origin.Host, true); !loaded {
		f.n.log.Warn("origin ignores Range; its large objects will stream through uncached",
			"host", hs.cfg.Host, "origin", hs.origin.Host)
	}
}

// rangedFill reports whether a fill of req asks the origin for the first slice only, as
// nginx's slice module does: then an object that turns out large costs the origin one slice
// before the others are fetched, where a whole GET would have had it send several more
// into the socket buffers before the edge could close the connection. Collapsed fills of
// hosts that slice do, unless the origin was seen ignoring Range.
func (f *filler) rangedFill(req *request, opts fillOptions) bool {
	if opts.direct || !opts.stream || req.host.cfg.Cache.DisableSlices {
		return false
	}
	_, ignores := f.noRange.Load(req.host.origin.Host)
	return !ignores
}

// keepsSliced reports whether fetchAndStore keeps a collapsed fill's 200 answer of size bytes
// with header h in slices (the same test, made before the answer is read).
func (f *filler) keepsSliced(req *request, opts fillOptions, h http.Header, size int64) bool {
	return opts.stream && size > req.host.maxObject && f.sliced(req.host, http.StatusOK, h, size) &&
		fillPolicy(req, http.StatusOK, h, f.n.clock()).Storable
}

// firstSlice turns the origin's answer to a first-slice request (rangedFill) into the answer
// to a whole GET, so that the rest of the fill (storing, streaming, compressing, RFC 9111)
// sees what an ordinary fill sees:
//   - a 206 that covers the whole object is that object: a 200 with its Content-Length and
//     no Content-Range;
//   - a 206 of the first slice of an object that will be kept in slices is the object's
//     header (a 200 of the whole length) over a body of that slice only, which startSliced
//     reads; reading past it is an error, never a short object;
//   - a 206 of the first slice of any other object (one stored whole, or not stored) is
//     completed by a request for the rest, bound to the first part by its strong ETag
//     (If-Range, and checked on the answer) so that two versions are never joined; without
//     a strong ETag, or when the rest does not match, the object is asked for again whole;
//   - anything else is the answer as it is (a 200 from an origin that ignores Range, a 304 to
//     a revalidation, an error status), except a 416 (an empty object has no first byte),
//     which is asked for again without Range.
func (f *filler) firstSlice(req *request, stale *store.Object, opts fillOptions, resp *http.Response) (*http.Response, error) {
	again := func() (*http.Response, error) {
		resp.Body.Close()
		return f.originRequest(req, stale, opts, "", "")
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		if resp.ContentLength > req.host.maxObject && validator(resp.Header) != "" {
			f.ignoresRange(req.host)
		}
		return resp, nil
	case http.StatusRequestedRangeNotSatisfiable:
		return again()
	default:
		return resp, nil
	}
	first, last, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
	got := last + 1
	if !ok || first != 0 || resp.ContentLength >= 0 && resp.ContentLength != got || got != min(req.host.sliceBytes(), total) {
		return again() // not the one range asked for (several, unknown length, shorter)
	}
	h := resp.Header
	delete(h, "Content-Range")
	if _, ok := h["Accept-Ranges"]; !ok {
		// The 200 this stands for serves ranges, and says so as the origin's own 200 would:
		// nginx sends the field in its 200s but not in its 206s.
		h["Accept-Ranges"] = []string{"bytes"}
	}
	// A part that is the whole object already says its length, as the field would: no new one.
	var nb [20]byte
	if cl, want := h["Content-Length"], strconv.AppendInt(nb[:0], total, 10); len(cl) != 1 || cl[0] != string(want) {
		h["Content-Length"] = []string{string(want)}
	}
	resp.StatusCode, resp.Status, resp.ContentLength = http.StatusOK, "200 OK", total
	if got == total {
		return resp, nil
	}
	if f.keepsSliced(req, opts, h, total) {
		resp.Body = &firstSliceBody{ReadCloser: resp.Body}
		return resp, nil
	}
	etag := strongETag(h)
	if etag == "" {
		return again()
	}
	rest, err := f.originRequest(req, nil, opts, fmt.Sprintf("bytes=%d-%d", got, total-1), etag)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	switch {
	case rest.StatusCode == http.StatusPartialContent && rest.Header.Get("ETag") == etag &&
		rest.Header.Get("Content-Range") == fmt.Sprintf("bytes %d-%d/%d", got, total-1, total):
		resp.Body = &joinedBody{r: io.MultiReader(resp.Body, rest.Body), left: total, parts: [2]io.Closer{resp.Body, rest.Body}}
		return resp, nil
	case rest.StatusCode == http.StatusOK:
		// If-Range did not match: the object changed since its first part, and this is the
		// new version whole.
		resp.Body.Close()
		return rest, nil
	}
	rest.Body.Close()
	return again()
}

// parseContentRange reads a byte Content-Range of one satisfied range with a known length.
func parseContentRange(v string) (first, last, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	rng, size, found2 := strings.Cut(rest, "/")
	a, b, found3 := strings.Cut(rng, "-")
	if !found || !found2 || !found3 {
		return 0, 0, 0, false
	}
	nums := [3]int64{}
	for i, s := range [3]string{a, b, size} {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || s == "" || s[0] < '0' || s[0] > '9' {
			return 0, 0, 0, false
		}
		nums[i] = n
	}
	first, last, total = nums[0], nums[1], nums[2]
	return first, last, total, first <= last && last < total
}

// firstSliceBody is the body of a first-slice answer presented as the whole object: it ends
// with an error, not EOF, where the slice ends, so nothing can take it for the whole object.
type firstSliceBody struct{ io.ReadCloser }

// errFirstSliceOnly is reading past the first slice of an answer that holds only that slice.
var errFirstSliceOnly = errors.New("the answer holds the first slice only")

func (b *firstSliceBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		err = fmt.Errorf("%w: %w", errFirstSliceOnly, io.ErrUnexpectedEOF)
	}
	return n, err
}

// joinedBody is an object's body read from two answers, its first part and the rest. It ends
// with an error if they hold fewer bytes than the object (a rest without Content-Length that
// ends early), so a short body is never taken for the whole.
type joinedBody struct {
	r     io.Reader
	left  int64
	parts [2]io.Closer
}

func (b *joinedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left != 0 {
		err = fmt.Errorf("joined body: %d bytes missing: %w", b.left, io.ErrUnexpectedEOF)
	}
	return n, err
}

func (b *joinedBody) Close() error {
	return errors.Join(b.parts[0].Close(), b.parts[1].Close())
}

// putSlice stores slice i, of sliceSize bytes, of manifest's object.
func putSlice(st *store.Store, manifest *store.Object, i, sliceSize int64, body []byte) {
	o := *manifest
	o.Part, o.Body, o.Size = slicePart(i, sliceSize, objectValidator(manifest)), body, 0
	st.Put(&o)
}

// deliverSliced answers from a sliced object: ranges, conditionals and HEAD by
// http.ServeContent over the slices, fetching missing ones as they are read.
func (n *Node) deliverSliced(w *logWriter, req *request, obj *store.Object, cs httpcache.Status, upstreamCS string) {
	preset := w.Header().Clone() // what a 502 goes out with
	h := n.objectHeader(w, req, obj, cs, upstreamCS)
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // no sniffing: the origin said nothing, so do we
	}
	delete(h, "Content-Length")
	sr := n.newSliceReader(req, obj)
	hold := &headHold{w: w, sr: sr}
	sr.hold = hold
	w.keepFor304(req, h)
	serveContent(w, req.r, req.lw.start, h, obj, obj.Size, sr)
	if err := sr.failure(); err != nil {
		if !hold.sent && !req.fromPeer && req.r.Context().Err() == nil {
			// The first slice the answer needs failed, its head still held: a 502, as
			// nginx's slice module answers a first slice that fails before its head.
			// A fleet node asking gets a bare cut instead, below: it takes any answer with
			// a head, a 502 too, for the object's (fetchNode), where a failure moves it on
			// to its next tier.
			clear(h)
			maps.Copy(h, preset)
			hitTime := w.hitTime
			n.fail(w, req, http.StatusBadGateway, "upstream slice failed")
			w.hitTime = hitTime                              // a hit's, to its held head (headHold.writeHeader)
			w.note = "sliced answer aborted: " + err.Error() // after fail, which notes its own
			return
		}
		w.note = "sliced answer aborted: " + err.Error()
		if !hold.sent && hold.code != 0 {
			// A bare cut (a fleet node's, or a client gone): no status went out, and the log
			// keeps the one its head was held with, as before the hold, not logWriter's 200.
			w.status = hold.code
		}
		if req.r.Context().Err() == nil && hold.sent && w.bytes > 0 {
			// A slice's fetch failed, not the client: what it was written of the slices
			// before goes out first, as a streamed miss's bytes do (clientFlush.cutShort).
			w.sendHeld()
		}
		// The client must see the answer cut short, never bytes of two versions.
		panic(http.ErrAbortHandler)
	}
	hold.release() // an answer that read no slice: HEAD, 304, 412, 416
}

// headHold holds a sliced answer's head, and what is written before its first slice is read
// (a multipart/byteranges part's header), until that slice is read: until then the answer can
// still be the edge's 502, when the slice's fetch fails. The head of a slice in the store goes
// at once: it is read as soon as it is asked for. The servers hold a head back until the first
// body bytes anyway (edge/http1, net/http's HTTP/1.1 and HTTP/2: until 4 KiB or a flush), so
// holding it here until the slice is read delays no answer's first byte.
type headHold struct {
	w    *logWriter
	sr   *sliceReader
	code int    // the status held, 0 before WriteHeader
	held []byte // what was written before the first slice was read
	sent bool   // the head went to w
}

func (h *headHold) writeHeader(code int) {
	if h.sent || code < http.StatusOK {
		h.w.WriteHeader(code)
		return
	}
	if h.w.cacheStatus == "hit" && !h.w.hitSet {
		h.w.markHit() // a hit's service time is to its head, as for every hit
	}
	h.code = code
}

func (h *headHold) Write(b []byte) (int, error) {
	if !h.sent {
		if !h.sr.started.Load() {
			h.held = append(h.held, b...)
			return len(b), nil
		}
		if err := h.release(); err != nil {
			return 0, err
		}
	}
	return h.w.Write(b)
}

// release sends the held head and bytes.
func (h *headHold) release() error {
	if h.sent {
		return nil
	}
	h.sent = true
	if h.code != 0 {
		hitTime := h.w.hitTime
		h.w.WriteHeader(h.code)
		h.w.hitTime = hitTime // a held hit's service time is to its head (writeHeader), not to here
	}
	held := h.held
	h.held = nil
	if len(held) > 0 {
		if _, err := h.w.Write(held); err != nil {
			return fmt.Errorf("write a sliced answer's first bytes: %w", err)
		}
	}
	return nil
}

// newSliceReader returns a reader of obj, a sliced object, for req's answer.
func (n *Node) newSliceReader(req *request, obj *store.Object) *sliceReader {
	// The slices are read, and fetched, on http.ServeContent's own goroutine when a client
	// asks for several ranges, which may outlive this handler: the fetches get a request of
	// their own, copied here, and the client's context, asked for its end here so that
	// edge/http1 never reuses it for the connection's next request.
	ctx := req.r.Context()
	_ = ctx.Done()
	own := req.detached(ctx)
	// Detached: a slow client may read for hours, and the stored manifest would keep its
	// store segment alive all that time.
	return &sliceReader{f: n.fill, req: &own, obj: obj.Detached(), sliceSize: req.host.sliceBytes(), cur: -1}
}

// sliceReader reads a sliced object, slice by slice, for http.ServeContent.
type sliceReader struct {
	f         *filler
	req       *request      // the slice fetches' own copy of the client's (deliverSliced)
	obj       *store.Object // a manifest: its Size is the object's
	sliceSize int64
	off       int64
	cur       int64 // index of buf's slice, -1 before the first
	buf       []byte

	mu  sync.Mutex // err is read by the handler while ServeContent's goroutine may still read
	err error      // the first failure, which cuts the answer short

	hold    *headHold   // deliverSliced's, or nil
	started atomic.Bool // a slice was read: the answer's head may go (headHold)
}

// fail records err as the reader's first failure.
func (r *sliceReader) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

// failure is the reader's first failure, or nil.
func (r *sliceReader) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *sliceReader) Read(p []byte) (int, error) {
	b, err := r.rest()
	if err != nil {
		return 0, err
	}
	n := copy(p, b)
	r.off += int64(n)
	return n, nil
}

// rest returns what is left of the slice at the read position, loading it if needed.
func (r *sliceReader) rest() ([]byte, error) {
	if err := r.failure(); err != nil {
		return nil, err
	}
	if r.off >= r.obj.Size {
		return nil, io.EOF
	}
	i := r.off / r.sliceSize
	if i != r.cur {
		b, err := r.f.slice(r.req, r.obj, i, r.sliceSize)
		if err == nil && int64(len(b)) != min(r.sliceSize, r.obj.Size-i*r.sliceSize) {
			err = fmt.Errorf("slice %d of %s: %d bytes, want %d", i, r.req.target, len(b), min(r.sliceSize, r.obj.Size-i*r.sliceSize))
		}
		if err != nil {
			r.fail(err)
			return nil, err
		}
		r.cur, r.buf = i, b
		r.started.Store(true)
	}
	return r.buf[r.off-i*r.sliceSize:], nil
}

// writeTo writes up to limit bytes to w straight from the slices, one write per slice: no
// copy through io.Copy's 32 KiB buffer, and a few large writes instead of thousands of small
// ones (logWriter.ReadFrom hands it the connection).
func (r *sliceReader) writeTo(w io.Writer, limit int64) (int64, error) {
	var total int64
	for total < limit {
		b, err := r.rest()
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, err
		}
		if rem := limit - total; int64(len(b)) > rem {
			b = b[:rem]
		}
		n, err := w.Write(b)
		r.off += int64(n)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (r *sliceReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.obj.Size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	r.off = offset
	return offset, nil
}

// slice returns slice i of obj from the store, or fetches it (sliceTiers; one fetch per slice
// in flight, however many clients read it).
func (f *filler) slice(req *request, obj *store.Object, i, sliceSize int64) ([]byte, error) {
	b, ch := f.sliceFlight(req, obj, i, sliceSize)
	if ch == nil {
		return b, nil
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]byte), nil
	case <-req.r.Context().Done():
		return nil, context.Cause(req.r.Context())
	}
}

// sliceFlight returns slice i of obj from the store, or else the channel on which its fetch
// reports (one fetch per slice in flight: a fetch already running is joined). The fetch runs
// under the filler's context, not the client's, so its other readers are not cut short if
// this one goes away.
func (f *filler) sliceFlight(req *request, obj *store.Object, i, sliceSize int64) ([]byte, <-chan singleflight.Result) {
	part := slicePart(i, sliceSize, objectValidator(obj))
	if o, _ := f.n.store.LookupPartVary(obj.Primary, part, req); o != nil {
		return o.Body, nil
	}
	lead := req.detached(context.Background())
	return nil, f.flight.DoChan(obj.Primary+part, func() (any, error) {
		if !f.enter() {
			return nil, errClosing
		}
		defer f.wg.Done()
		// Looked up again: a fetch of this slice that ended between the lookup above and
		// this flight's start has stored it.
		if o, _ := f.n.store.LookupPartVary(obj.Primary, part, &lead); o != nil {
			return o.Body, nil
		}
		ctx, cancel := context.WithTimeout(f.ctx, f.n.cfg.FillTimeout)
		defer cancel()
		lead.r = lead.r.WithContext(ctx)
		return f.fetchSlice(&lead, obj, i, sliceSize)
	})
}

// sliceTiers fetches the byte range rng of req's object as fetchTiers fetches a fill: from
// the key's owner in this PoP, else the shield PoP, else the origin. The owner or shield
// serves the range from its own slices (fetching what it lacks, once for the whole PoP or
// region); only its 206 is taken, anything else (an answer it streams whole, an error, a
// timeout) moves on to the next node and finally to the origin. A node that was itself asked
// by a peer or for the shield goes on upward only, as for fills, so slice requests never loop.
func (f *filler) sliceTiers(req *request, rng string) (*http.Response, string, error) {
	n := f.n
	t := n.tiers.Load()
	try := func(tier string, p Peer, h hops) *http.Response {
		resp, err := f.fetchNode(req, p, tier, h, nil, "", rng)
		if err == nil && resp.StatusCode == http.StatusPartialContent {
			return resp
		}
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %s", resp.Status)
		}
		n.metrics.tierSkips.WithLabelValues(tier).Inc()
		n.log.Debug("slice fetch from fleet node failed, trying next", "tier", tier, "node", p.ID, "key", req.key, "err", err)
		return nil
	}
	if !req.hop.peer && !req.hop.shield {
		for _, p := range rendezvous(t.peers, req.key) {
			if p.ID == n.cfg.Node {
				break // we own the key: upward ourselves
			}
			if resp := try("peer", p, hops{peer: true}); resp != nil {
				return resp, "peer", nil
			}
		}
	}
	if shield := req.host.cfg.Shield; shield != "" && shield != n.cfg.PoP && !req.hop.shield {
		for _, p := range rendezvous(t.shields[shield], req.key) {
			if resp := try("shield", p, hops{peer: req.hop.peer, shield: true}); resp != nil {
				return resp, "shield", nil
			}
		}
	}
	if _, ignores := f.noRange.Load(req.host.origin.Host); ignores {
		// Its whole answer would have to be read up to the slice, for every slice a reader
		// still needs: the object again and again. The reader is cut short instead, and the
		// next request streams the object through.
		return nil, "origin", errOriginIgnoresRange
	}
	resp, err := f.originRequest(req, nil, fillOptions{}, rng, "")
	return resp, "origin", err
}

// errOriginIgnoresRange is a slice fetch from an origin seen answering Range with its whole
// object.
var errOriginIgnoresRange = errors.New("origin ignores Range")

// fetchSlice fetches slice i of obj with Range (sliceTiers) and stores it. An answer of
// another version drops obj's manifest (the next request fetches the object anew).
func (f *filler) fetchSlice(req *request, obj *store.Object, i, sliceSize int64) ([]byte, error) {
	n := f.n
	first := i * sliceSize
	last := min(first+sliceSize, obj.Size) - 1
	began := n.clock()
	resp, tier, err := f.sliceTiers(req, fmt.Sprintf("bytes=%d-%d", first, last))
	if errors.Is(err, errOriginIgnoresRange) {
		// A manifest stored before the origin was seen ignoring Range: the next request
		// streams the object through instead. Every variant's: each would find the same.
		n.store.Delete(obj.Primary)
		return nil, fmt.Errorf("fetch slice %d of %s: %w", i, req.target, err)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch slice %d from %s: %w", i, tier, err)
	}
	defer resp.Body.Close()
	body := resp.Body.(io.Reader)
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		if resp.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", first, last, obj.Size) {
			return nil, f.changed(obj, fmt.Errorf("slice %d of %s: Content-Range %q: %w", i, req.target, resp.Header.Get("Content-Range"), errObjectChanged))
		}
	case resp.StatusCode == http.StatusOK && resp.ContentLength == obj.Size:
		// The origin ignores Range: cut the slice out of the whole body, and stream its large
		// objects whole from now on (this one too, from its next request).
		f.ignoresRange(req.host)
		n.store.Delete(obj.Primary)
		if _, err := io.CopyN(io.Discard, resp.Body, first); err != nil {
			return nil, fmt.Errorf("read slice %d of %s: %w", i, req.target, err)
		}
	case resp.StatusCode == http.StatusOK:
		return nil, f.changed(obj, fmt.Errorf("slice %d of %s: whole answer of %d bytes: %w", i, req.target, resp.ContentLength, errObjectChanged))
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable || resp.StatusCode == http.StatusNotFound ||
		resp.StatusCode == http.StatusGone:
		// The object shrank (a range within the manifest's length is past its end) or is gone:
		// kept, the manifest would cut every answer short until it expires. Its slices stay
		// stored under their validator, so dropping it costs one first-slice fetch.
		return nil, f.changed(obj, fmt.Errorf("slice %d of %s: origin answered %s: %w", i, req.target, resp.Status, errObjectChanged))
	default:
		return nil, fmt.Errorf("slice %d of %s: origin answered %s", i, req.target, resp.Status)
	}
	if validator(resp.Header) != objectValidator(obj) {
		return nil, f.changed(obj, fmt.Errorf("slice %d of %s: validator %q, want %q: %w", i, req.target,
			validator(resp.Header), objectValidator(obj), errObjectChanged))
	}
	b := make([]byte, last-first+1)
	if _, err := io.ReadFull(body, b); err != nil {
		return nil, fmt.Errorf("read slice %d of %s: %w", i, req.target, err)
	}
	m := *obj
	m.StoredAt = began // a purge during the fetch still matches the slice (purge rule 2)
	putSlice(n.store, &m, i, sliceSize, b)
	return b, nil
}

// changed forgets obj's manifest, whose slices no longer match the origin's object, and
// returns err. Only obj's variant: the URL's others are other objects, with validators of
// their own, which their own slice fetches check.
func (f *filler) changed(obj *store.Object, err error) error {
	f.n.store.DeleteVariant(obj.Primary, obj.Variant)
	return err
}
