package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

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
// The first fill is an ordinary GET (collapsed): its header shows the object is large, its
// first slice is read from it, and it is closed; the manifest is stored at once. Every other
// slice is fetched from the origin with Range when a client first reads it, one fetch per
// slice in flight however many clients read it (a flash crowd costs the origin about one copy,
// and each upstream exchange is one slice, well within the body timeout; clients read at their
// own pace). A slice must carry the manifest's validator and length: an object changed since
// is never stitched to the old one's slices; the manifest is dropped and the client's answer
// is cut short, so the next request fetches the new version. An origin that ignores Range
// (answers 200) still works: that slice is cut from its full answer, and its large objects
// stream through (collapsed, uncached) from then on. Client ranges are served from the slices
// they cover by http.ServeContent: one range is a 206 with Content-Range, several are a
// multipart/byteranges 206.

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

// sliced reports whether a fill's 200 answer of size bytes is kept in slices.
func (hs *hostState) sliced(status int, h http.Header, size int64) bool {
	c := hs.cfg.Cache
	threshold := c.SliceThresholdBytes
	if threshold == 0 {
		threshold = hs.maxObject
	}
	return !c.DisableSlices && status == http.StatusOK && size > threshold && validator(h) != "" &&
		h.Get("Content-Range") == ""
}

// validator is what ties the slices of one version of an object together: its ETag if
// strong or weak, else its Last-Modified.
func validator(h http.Header) string {
	if etag := h.Get("ETag"); etag != "" {
		return etag
	}
	if lm := h.Get("Last-Modified"); lm != "" {
		return "lm:" + lm
	}
	return ""
}

// slicePart is the store part name of slice i of the version with validator v.
func slicePart(i int64, v string) string {
	return "\x00slice=" + strconv.FormatInt(i, 10) + "\x00" + v
}

// startSliced keeps a fill's answer (whose header is in res.obj) in slices: the first slice is
// read from the answer, which is then closed; the manifest is stored at once; every client of
// the fill, and every later one, is served by deliverSliced, which fetches the other slices
// with Range as they are read.
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
	putSlice(f.n.store, &m, 0, first)
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

// putSlice stores slice i of manifest's object.
func putSlice(st *store.Store, manifest *store.Object, i int64, body []byte) {
	o := *manifest
	o.Part, o.Body, o.Size = slicePart(i, validator(manifest.Header)), body, 0
	st.Put(&o)
}

// deliverSliced answers from a sliced object: ranges, conditionals and HEAD by
// http.ServeContent over the slices, fetching missing ones as they are read.
func (n *Node) deliverSliced(w *logWriter, req *request, obj *store.Object, cs httpcache.Status, upstreamCS string) {
	h := n.objectHeader(w, req, obj, cs, upstreamCS)
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // no sniffing: the origin said nothing, so do we
	}
	delete(h, "Content-Length")
	sr := &sliceReader{f: n.fill, req: req, obj: obj, sliceSize: req.host.sliceBytes(), cur: -1}
	http.ServeContent(w, req.r, "", obj.LastModified, sr)
	if sr.err != nil {
		w.note = "sliced answer aborted: " + sr.err.Error()
		// The client must see the answer cut short, never bytes of two versions.
		panic(http.ErrAbortHandler)
	}
}

// sliceReader reads a sliced object, slice by slice, for http.ServeContent.
type sliceReader struct {
	f         *filler
	req       *request
	obj       *store.Object // a manifest: its Size is the object's
	sliceSize int64
	off       int64
	cur       int64 // index of buf's slice, -1 before the first
	buf       []byte
	err       error // the first failure, which cuts the answer short
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
	if r.err != nil {
		return nil, r.err
	}
	if r.off >= r.obj.Size {
		return nil, io.EOF
	}
	i := r.off / r.sliceSize
	if i != r.cur {
		b, err := r.f.slice(r.req, r.obj, i, r.sliceSize)
		if err != nil {
			r.err = err
			return nil, err
		}
		r.cur, r.buf = i, b
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

// slice returns slice i of obj from the store, or fetches it from the origin (one fetch per
// slice in flight, however many clients read it).
func (f *filler) slice(req *request, obj *store.Object, i, sliceSize int64) ([]byte, error) {
	v := validator(obj.Header)
	part := slicePart(i, v)
	if o, _ := f.n.store.LookupPart(obj.Primary, part, req.r.Header); o != nil {
		return o.Body, nil
	}
	lead := *req
	lead.w = nil
	lead.traceID()
	lead.r = req.r.Clone(context.Background())
	ch := f.flight.DoChan(obj.Primary+part, func() (any, error) {
		if !f.enter() {
			return nil, errClosing
		}
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(f.ctx, f.n.cfg.FillTimeout)
		defer cancel()
		lead.r = lead.r.WithContext(ctx)
		return f.fetchSlice(&lead, obj, i, sliceSize)
	})
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

// fetchSlice fetches slice i of obj from the origin with Range and stores it. An answer of
// another version drops obj's manifest (the next request fetches the object anew).
func (f *filler) fetchSlice(req *request, obj *store.Object, i, sliceSize int64) ([]byte, error) {
	n := f.n
	first := i * sliceSize
	last := min(first+sliceSize, obj.Size) - 1
	o := req.host.origin
	began := n.clock()
	up, err := http.NewRequestWithContext(req.r.Context(), http.MethodGet, o.Scheme+"://"+o.Host+o.Path+req.target, nil)
	if err != nil {
		return nil, fmt.Errorf("build slice request: %w", err)
	}
	up.Host = req.host.cfg.Host
	if req.host.cfg.OriginHost != "" {
		up.Host = req.host.cfg.OriginHost
	}
	up.Header = n.upstreamHeader(req, sharedFill)
	up.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first, last))
	resp, err := f.upstream("origin "+req.host.cfg.Host, o.Host).Do(up)
	n.metrics.originFetches.Inc()
	if err != nil {
		return nil, fmt.Errorf("fetch slice %d of %s from origin %s: %w", i, req.target, o.Host, err)
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
		if _, loaded := f.noRange.LoadOrStore(o.Host, true); !loaded {
			n.log.Warn("origin ignores Range; its large objects will stream through uncached",
				"host", req.host.cfg.Host, "origin", o.Host)
		}
		n.store.Delete(obj.Primary)
		if _, err := io.CopyN(io.Discard, resp.Body, first); err != nil {
			return nil, fmt.Errorf("read slice %d of %s: %w", i, req.target, err)
		}
	case resp.StatusCode == http.StatusOK:
		return nil, f.changed(obj, fmt.Errorf("slice %d of %s: whole answer of %d bytes: %w", i, req.target, resp.ContentLength, errObjectChanged))
	default:
		return nil, fmt.Errorf("slice %d of %s: origin answered %s", i, req.target, resp.Status)
	}
	if validator(resp.Header) != validator(obj.Header) {
		return nil, f.changed(obj, fmt.Errorf("slice %d of %s: validator %q, want %q: %w", i, req.target,
			validator(resp.Header), validator(obj.Header), errObjectChanged))
	}
	b := make([]byte, last-first+1)
	if _, err := io.ReadFull(body, b); err != nil {
		return nil, fmt.Errorf("read slice %d of %s: %w", i, req.target, err)
	}
	m := *obj
	m.StoredAt = began // a purge during the fetch still matches the slice (purge rule 2)
	putSlice(n.store, &m, i, b)
	return b, nil
}

// changed forgets obj's manifest, whose slices no longer match the origin's object, and
// returns err.
func (f *filler) changed(obj *store.Object, err error) error {
	f.n.store.Delete(obj.Primary)
	return err
}
