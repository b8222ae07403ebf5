package compress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// Budget bounds the memory that decoders' windows hold at once, across every decoder made by
// its NewReader: each is charged what it allocates for the window its stream declares
// (readHeader, windowCharge) until it is closed, and one that would take the total past the
// budget is refused with ErrOverBudget. A stream's window is what its decoder keeps,
// whatever the decoded size: gzip 32 KiB; br up to 16 MiB and zstd up to 8 MiB (and two
// blocks), as the stream's header says, so that without a budget every client of a stream
// that asks for a large window holds that much. The decoders' state and buffers (under 128
// KiB each, and zstd's block buffers, up to twice its block size) are not charged. A Budget
// is safe for concurrent use.
type Budget struct {
	max  int64
	used atomic.Int64
}

// ErrOverBudget is NewReader's error when the stream's window does not fit in what is left
// of the budget. It is temporary: the budget frees as decoders close.
var ErrOverBudget = errors.New("decoding windows over budget")

// NewBudget returns a budget of max bytes of windows (none fit if max is not positive).
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Used returns the bytes charged to the decoders open now.
func (b *Budget) Used() int64 { return b.used.Load() }

// NewReader is the package's NewReader, with the window the stream declares charged to b from
// now until Close (read from the header before any decoding, so a refused stream costs no
// window), or ErrOverBudget (wrapped) when that would take b past its size. No bytes at all
// are charged nothing. A zstd stream of several frames is charged its first frame's window,
// and a later frame that asks for a larger one fails at Read.
func (b *Budget) NewReader(r io.Reader, coding string) (io.ReadCloser, error) {
	return newReader(r, coding, b)
}

// take charges n bytes to b if they fit; if not, it returns the bytes in use it found. A nil
// budget (NewReader's) charges nothing.
func (b *Budget) take(n int64) (int64, bool) {
	if b == nil {
		return 0, true
	}
	for {
		used := b.used.Load()
		if used+n > b.max {
			return used, false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return used, true
		}
	}
}

// give returns n bytes that take charged.
func (b *Budget) give(n int64) {
	if b != nil {
		b.used.Add(-n)
	}
}

// The windows a decoder keeps: gzip's (deflate's, RFC 1951) is fixed; br's (RFC 7932 §9.1:
// at most 16 MiB, WBITS 24) and zstd's (RFC 8878 §3.1.1.1.2: at most zstdWindow here) are
// declared by the stream.
const (
	gzipWindow = 32 << 10
	brMinRing  = 1 << 10 // the smallest ring buffer the br decoder allocates
	// zstdBlock is zstd's largest block (RFC 8878 §3.1.1.2.4), and zstdOverAlloc the bytes
	// klauspost/compress's decoder adds to each block's room for its fast copies.
	zstdBlock     = 128 << 10
	zstdOverAlloc = 16
)

// zstdCharge is what the zstd decoder allocates for a frame of window w: with NewReader's
// options (one goroutine, streaming) klauspost/compress keeps its history in a ring of the
// window and room for two blocks, each of at most the window, so that it never moves history
// (its history.ensureBlockRing): up to 3 times the window, which a charge of the window alone
// would leave out.
func zstdCharge(w int64) int64 {
	return w + 2*(min(w, zstdBlock)+zstdOverAlloc)
}

// windowCharge is what Budget.NewReader charges a stream in coding whose header declares
// window (readHeader): the memory its decoder allocates for that window.
func windowCharge(coding string, window int64) int64 {
	if coding == "zstd" {
		return zstdCharge(window)
	}
	return window
}

// readHeader reads the rest of the header of a stream in coding whose first byte is first,
// and returns the bytes read (first included) and the window the header declares (for br,
// the ring buffer the decoder sizes for it; windowCharge is what Budget.NewReader charges).
// Every byte it reads is one the decoder needs before its first output, so it never waits
// for a byte the decoder would not wait for (a stream sent in pieces is not held up). An error is r's, or says that the
// stream does not start as the coding does: cut short, not the coding, or a window over the
// coding's limit (br's large-window extension; zstd over 8 MiB, RFC 9659 §3).
//
// gzip: 32 KiB. br: 2^WBITS, or, for a stream of one meta-block (ISLAST: what one-shot
// encoders make of a body up to 16 MiB), the power of two that holds its length (MLEN, at
// least 1 KiB) if smaller, as the decoder sizes its ring buffer (RFC 7932 §9.2; brotli's
// "canny" ring buffer allocation), and none for an empty stream (ISLASTEMPTY), for which the
// decoder allocates none. zstd: the first frame's Window_Size, or for a
// single-segment frame, which has none, its Frame_Content_Size (at least 1 KiB); a stream
// that starts with a skippable frame the 8 MiB limit, its first frame unread.
func readHeader(r io.Reader, coding string, first byte) ([]byte, int64, error) {
	head := []byte{first}
	upTo := func(n int) error { // reads head up to n bytes
		if n <= len(head) {
			return nil
		}
		more := make([]byte, n-len(head))
		k, err := io.ReadFull(r, more)
		head = append(head, more[:k]...)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%s header cut short after %d bytes: %w", coding, len(head), io.ErrUnexpectedEOF)
		}
		return err
	}
	switch coding {
	case "gzip":
		return head, gzipWindow, nil
	case "br":
		for {
			h, ok, err := parseBr(head)
			if err != nil {
				return head, 0, err
			}
			if ok {
				return head, h.window(), nil
			}
			if err := upTo(len(head) + 1); err != nil {
				return head, 0, err
			}
		}
	default: // zstd
		if err := upTo(4); err != nil {
			return head, 0, err
		}
		if head[0]&0xf0 == 0x50 && bytes.Equal(head[1:4], []byte{0x2a, 0x4d, 0x18}) {
			return head, zstdWindow, nil // a skippable frame (RFC 8878 §3.1.2)
		}
		if !bytes.Equal(head, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
			return head, 0, fmt.Errorf("zstd frame header: %w", zstd.ErrMagicMismatch)
		}
		if err := upTo(5); err != nil {
			return head, 0, err
		}
		if err := upTo(zstdHeaderSize(head[4])); err != nil {
			return head, 0, err
		}
		var h zstd.Header
		if err := h.Decode(head); err != nil {
			return head, 0, fmt.Errorf("zstd frame header: %w", err)
		}
		w := h.WindowSize
		if h.SingleSegment {
			w = max(h.FrameContentSize, zstd.MinWindowSize)
		}
		if w > zstdWindow {
			return head, 0, fmt.Errorf("zstd window of %d bytes, over the %d the coding allows: %w", w, zstdWindow,
				zstd.ErrWindowSizeExceeded)
		}
		return head, int64(w), nil
	}
}

// zstdHeaderSize is the size of a zstd frame header (magic number included) whose
// Frame_Header_Descriptor is fhd (RFC 8878 §3.1.1.1).
func zstdHeaderSize(fhd byte) int {
	n := 5
	single := fhd&(1<<5) != 0
	if !single {
		n++ // Window_Descriptor
	}
	n += [4]int{0, 1, 2, 4}[fhd&3] // Dictionary_ID
	switch fcs := fhd >> 6; {
	case fcs != 0:
		n += 1 << fcs
	case single:
		n++
	}
	return n
}

// brHeader is what the first bits of a br stream say (RFC 7932 §9.1, §9.2): WBITS, the
// length of the first meta-block if it is the last one and holds data, and whether the
// stream is empty (its first meta-block is the last and empty).
type brHeader struct {
	wbits int
	mlen  int
	empty bool
}

// window is the ring buffer the br decoder allocates for the stream: the window, halved
// while half of it still holds the stream's whole output when that is known (mlen); none for
// an empty stream, whose decoder ends before it sizes one.
func (h brHeader) window() int64 {
	if h.empty {
		return 0
	}
	ring := int64(1) << h.wbits
	if h.mlen > 0 {
		for ring>>1 >= max(int64(h.mlen), brMinRing) {
			ring >>= 1
		}
	}
	return ring
}

// parseBr reads a br stream's header from head; ok is false while head is too short to
// tell, err is for a header no br stream of HTTP's has.
func parseBr(head []byte) (h brHeader, ok bool, err error) {
	r := bitsLE{b: head}
	if v, ok := r.take(1); !ok {
		return h, false, nil
	} else if v == 0 {
		h.wbits = 16
	} else if n, ok := r.take(3); !ok {
		return h, false, nil
	} else if n != 0 {
		h.wbits = 17 + int(n)
	} else if m, ok := r.take(3); !ok {
		return h, false, nil
	} else if m == 1 {
		// The large-window extension (RFC 9841), not the br content coding.
		return h, false, errors.New("br stream with a large window (RFC 9841)")
	} else if m == 0 {
		h.wbits = 17
	} else {
		h.wbits = 8 + int(m)
	}
	last, ok := r.take(1)
	if !ok || last == 0 {
		return h, ok, nil
	}
	empty, ok := r.take(1)
	if !ok || empty == 1 {
		h.empty = ok
		return h, ok, nil
	}
	nibbles, ok := r.take(2)
	if !ok || nibbles == 3 { // 3: a metadata block, which writes nothing
		return h, ok, nil
	}
	mlen, ok := r.take(4 * (int(nibbles) + 4))
	if !ok {
		return h, false, nil
	}
	h.mlen = int(mlen) + 1
	return h, true, nil
}

// bitsLE reads bit fields from the start of b, least significant bit first (RFC 7932 §2).
type bitsLE struct {
	b   []byte
	pos int // in bits
}

// take returns the next n bits, or false if b ends first.
func (r *bitsLE) take(n int) (uint32, bool) {
	if r.pos+n > 8*len(r.b) {
		return 0, false
	}
	var v uint32
	for i := range n {
		p := r.pos + i
		v |= uint32(r.b[p/8]>>(p%8)&1) << i
	}
	r.pos += n
	return v, true
}
