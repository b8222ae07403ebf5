package compress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Decodable returns the content coding of a response with header h when it has exactly one
// that NewReader undoes: "gzip" ("x-gzip" too), "br" or "zstd"; else "". Identity elements do
// not count; a response coded twice ("deflate, gzip") gives "", since undoing the outer coding
// would leave one the client may not take either.
func Decodable(h http.Header) string {
	coding := ""
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			c = strings.ToLower(strings.Trim(c, " \t"))
			switch c {
			case "", "identity":
				continue
			case "x-gzip":
				c = "gzip"
			}
			if coding != "" {
				return ""
			}
			coding = c
		}
	}
	switch coding {
	case "gzip", "br", "zstd":
		return coding
	}
	return ""
}

// NewReader returns a reader of r's bytes decoded from coding ("gzip", "br" or "zstd").
// Decoding streams: memory is the coding's window and a few buffers, whatever the output's
// size (gzip 32 KiB; br at most 16 MiB; zstd at most 8 MiB, as RFC 9659 §3 allows and browsers
// enforce: a frame asking for a larger window fails). Budget.NewReader bounds the windows of
// many decoders together. No bytes at all decode to none: an origin labels an empty answer (a
// redirect, a Content-Length: 0) with its coding but sends no stream, and clients (Go's,
// browsers) read it as empty, where gzip's decoder wants a header and br's a stream. The
// stream's header is read at once (gzip's, the bits of br's that give its window, zstd's
// first frame header), so an error here means r failed or does not start as the coding does
// (a br stream with a large window, a zstd frame asking for more than 8 MiB included); later
// errors (a corrupt stream, a bad checksum, bytes after the last member, an early end) come
// from Read. Close releases the decoder; it does not close r.
func NewReader(r io.Reader, coding string) (io.ReadCloser, error) {
	return newReader(r, coding, nil)
}

// newReader is NewReader, the window charged to b unless b is nil.
func newReader(r io.Reader, coding string, b *Budget) (io.ReadCloser, error) {
	if coding != "gzip" && coding != "br" && coding != "zstd" {
		return nil, fmt.Errorf("decode: unknown coding %q (want gzip, br or zstd)", coding)
	}
	var first [1]byte
	switch _, err := io.ReadFull(r, first[:]); {
	case err == io.EOF:
		return &decoder{ReadCloser: http.NoBody, coding: coding}, nil
	case err != nil:
		return nil, fmt.Errorf("decode %s: %w", coding, err)
	}
	head, window, err := readHeader(r, coding, first[0])
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", coding, err)
	}
	r = io.MultiReader(bytes.NewReader(head), r)
	cost := windowCharge(coding, window)
	if used, ok := b.take(cost); !ok {
		return nil, fmt.Errorf("decode %s: a window of %d KiB, with %d KiB of %d in use: %w", coding, cost>>10,
			used>>10, b.max>>10, ErrOverBudget)
	}
	var rc io.ReadCloser
	switch coding {
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			b.give(cost)
			return nil, fmt.Errorf("decode gzip: %w", err)
		}
		rc = zr
	case "br":
		rc = io.NopCloser(brotli.NewReader(r))
	default: // zstd
		// Under a budget, every frame is held to the window charged for the first.
		maxWindow := uint64(zstdWindow)
		if b != nil {
			maxWindow = uint64(window)
		}
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxWindow))
		if err != nil {
			b.give(cost)
			return nil, fmt.Errorf("decode zstd: %w", err)
		}
		rc = d.IOReadCloser()
	}
	return &decoder{ReadCloser: rc, coding: coding, budget: b, charge: cost}, nil
}

// decoder is a NewReader: its errors say what was being done, and its Close gives its window
// back to its budget.
type decoder struct {
	io.ReadCloser // nil once closed: the window is garbage then, even if the decoder is not
	coding        string
	budget        *Budget
	charge        int64
}

// errClosed is a Read after Close.
var errClosed = errors.New("decoder closed")

func (d *decoder) Read(p []byte) (int, error) {
	if d.ReadCloser == nil {
		return 0, fmt.Errorf("decode %s: %w", d.coding, errClosed)
	}
	n, err := d.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("decode %s: %w", d.coding, err)
	}
	return n, err
}

// Close releases the decoder and its window; a second Close does nothing.
func (d *decoder) Close() error {
	if d.ReadCloser == nil {
		return nil
	}
	err := d.ReadCloser.Close()
	d.ReadCloser = nil
	d.budget.give(d.charge)
	return err
}

// DecodeHeader rewrites h, the header of a response in an upstream's coding, for the same
// response sent decoded (NewReader), as nginx's gunzip module does:
//
//   - Content-Encoding goes; so do Content-Length, the decoded length being unknown until the
//     end, Accept-Ranges, since ranges of the decoded bytes are not served, and the digests of
//     the coded bytes;
//   - ETag is made weak (`"x"` -> `W/"x"`): the decoded bytes are equivalent to the coded ones
//     but not the same (RFC 9110 §8.8.1), and the upstream's tag may be strong; one that is not
//     an entity tag is dropped. (A coding the edge applied itself, whose tag it suffixed, is
//     never undone: the edge codes a variant in the coding its clients accept.)
//   - Vary gains Accept-Encoding (unless it lists it or "*"): what is sent depends on it.
//
// Values are replaced, never modified in place: h's slices may be shared with a stored object.
func DecodeHeader(h http.Header) {
	for _, k := range []string{"Content-Encoding", "Content-Length", "Accept-Ranges"} {
		delete(h, k)
	}
	DropDigests(h)
	if etag := h.Get("ETag"); etag != "" {
		if _, opaque, ok := splitETag(etag); ok {
			h.Set("ETag", `W/"`+opaque+`"`)
		} else {
			h.Del("ETag")
		}
	}
	h.Set("Vary", MergeVary(h.Values("Vary"), "Accept-Encoding"))
}
