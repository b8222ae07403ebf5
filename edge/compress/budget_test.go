package compress

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// brStream encodes body in br with window bits lgwin at quality q. With flush, the body's
// first half is flushed first, so that the stream has more than one meta-block.
func brStream(t testing.TB, body []byte, lgwin, q int, flush bool) []byte {
	t.Helper()
	var b bytes.Buffer
	w := brotli.NewWriterOptions(&b, brotli.WriterOptions{Quality: q, LGWin: lgwin})
	if flush {
		w.Write(body[:len(body)/2])
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		body = body[len(body)/2:]
	}
	w.Write(body)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// zstdStream encodes body in one zstd frame with the window given, as a stream (no content
// size, so a Window_Descriptor) or in one call (single-segment when the body fits).
func zstdStream(t testing.TB, body []byte, window int, stream bool) []byte {
	t.Helper()
	if !stream {
		e, err := zstd.NewWriter(nil, zstd.WithWindowSize(window))
		if err != nil {
			t.Fatal(err)
		}
		return e.EncodeAll(body, nil)
	}
	var b bytes.Buffer
	w, err := zstd.NewWriter(&b, zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(body)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// skippable is a zstd skippable frame (RFC 8878 §3.1.2) of n bytes of data.
func skippable(n int) []byte {
	return append([]byte{0x50, 0x2a, 0x4d, 0x18, byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}, make([]byte, n)...)
}

// TestBudgetChargesDeclaredWindow: a decoder is charged the window its stream's header
// declares while it is open, decodes as NewReader does, and gives the charge back at Close
// (a second Close gives nothing more).
func TestBudgetChargesDeclaredWindow(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	body := textBody(300 << 10)
	tests := []struct {
		name   string
		coding string
		in     []byte
		want   []byte // decoded; body if nil
		charge int64
	}{
		{"gzip", "gzip", mustEncode(t, "gzip", body), nil, 32 * kib},
		{"br lgwin 24, meta-blocks", "br", brStream(t, body, 24, 5, true), nil, 16 * mib},
		{"br lgwin 22, meta-blocks", "br", brStream(t, body, 22, 1, false), nil, 4 * mib},
		{"br lgwin 18, meta-blocks", "br", brStream(t, body, 18, 5, true), nil, 256 * kib},
		{"br lgwin 17, meta-blocks", "br", brStream(t, body, 17, 5, true), nil, 128 * kib},
		{"br lgwin 16, meta-blocks", "br", brStream(t, body, 16, 5, true), nil, 64 * kib},
		{"br lgwin 10, meta-blocks", "br", brStream(t, body, 10, 5, true), nil, 1 * kib},
		// One meta-block: the decoder's ring buffer holds the output, not the window.
		{"br lgwin 24, one meta-block of 300 KiB", "br", brStream(t, body, 24, 11, false), nil, 512 * kib},
		{"br lgwin 24, one meta-block of 5000 bytes", "br", brStream(t, body[:5000], 24, 5, false), body[:5000], 8 * kib},
		{"br lgwin 24, one meta-block of 100 bytes", "br", brStream(t, body[:100], 24, 11, false), body[:100], 1 * kib},
		{"br lgwin 16, one meta-block over the window", "br", brStream(t, body, 16, 11, false), nil, 64 * kib},
		// Its decoder allocates no ring buffer (ISLASTEMPTY): an empty body, charged nothing.
		{"br empty stream", "br", brStream(t, nil, 24, 5, false), []byte{}, 0},
		// zstd: the decoder's ring, of the window and two blocks (of at most 128 KiB, and 16
		// bytes more each).
		{"zstd stream, 8 MiB window", "zstd", zstdStream(t, body, 8*mib, true), nil, 8*mib + 2*(128*kib+16)},
		{"zstd stream, 1 MiB window", "zstd", zstdStream(t, body, 1*mib, true), nil, 1*mib + 2*(128*kib+16)},
		{"zstd single segment", "zstd", zstdStream(t, body, 8*mib, false), nil, int64(len(body)) + 2*(128*kib+16)},
		{"zstd single segment, tiny", "zstd", zstdStream(t, body[:100], 8*mib, false), body[:100], 3*kib + 2*16},
		{"zstd after a skippable frame", "zstd", append(skippable(10), zstdStream(t, body, 1*mib, true)...), nil, 8*mib + 2*(128*kib+16)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := cmpOr(tt.want, body)
			b := NewBudget(64 << 20)
			d, err := b.NewReader(bytes.NewReader(tt.in), tt.coding)
			if err != nil {
				t.Fatalf("NewReader: %v", err)
			}
			if got := b.Used(); got != tt.charge {
				t.Errorf("charged %d bytes, want %d", got, tt.charge)
			}
			got, err := io.ReadAll(d)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("decoded %d bytes, %v; want the %d of the input", len(got), err, len(want))
			}
			d.Close()
			d.Close()
			if got := b.Used(); got != 0 {
				t.Errorf("after Close: %d bytes charged, want 0", got)
			}
		})
	}
}

func mustEncode(t testing.TB, coding string, body []byte) []byte {
	t.Helper()
	enc, err := Encode(coding, body, 0)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

func cmpOr(b, or []byte) []byte {
	if b == nil {
		return or
	}
	return b
}

// TestBudgetRefusesPastItsSize: a decoder whose window would take the budget past its size
// is refused with ErrOverBudget before any decoding, and charged nothing; one fits again once
// another closes. A stream of no bytes is charged nothing.
func TestBudgetRefusesPastItsSize(t *testing.T) {
	body := textBody(300 << 10) // more than a zstd block: a stream's encoder keeps its window
	for _, tt := range []struct {
		coding string
		in     []byte
		window int64
	}{
		{"gzip", mustEncode(t, "gzip", body), 32 << 10},
		{"br", brStream(t, body, 24, 5, true), 16 << 20},
		{"zstd", zstdStream(t, body, 8<<20, true), zstdCharge(8 << 20)},
	} {
		t.Run(tt.coding, func(t *testing.T) {
			b := NewBudget(3*tt.window + tt.window/2)
			var open []io.ReadCloser
			for range 3 {
				d, err := b.NewReader(bytes.NewReader(tt.in), tt.coding)
				if err != nil {
					t.Fatalf("decoder %d: %v", len(open)+1, err)
				}
				open = append(open, d)
			}
			_, err := b.NewReader(bytes.NewReader(tt.in), tt.coding)
			if !errors.Is(err, ErrOverBudget) || !strings.HasPrefix(err.Error(), "decode "+tt.coding) {
				t.Fatalf("fourth decoder: %v, want ErrOverBudget, saying what was decoded", err)
			}
			if got := b.Used(); got != 3*tt.window {
				t.Errorf("after a refusal %d bytes charged, want %d", got, 3*tt.window)
			}
			if d, err := b.NewReader(bytes.NewReader(nil), tt.coding); err != nil {
				t.Errorf("an empty body under a full budget: %v, want it decoded (to nothing)", err)
			} else {
				d.Close()
			}
			open[0].Close()
			d, err := b.NewReader(bytes.NewReader(tt.in), tt.coding)
			if err != nil {
				t.Fatalf("after a Close: %v", err)
			}
			open[0] = d
			for _, d := range open {
				if got, err := io.ReadAll(d); err != nil || !bytes.Equal(got, body) {
					t.Errorf("decoded %d bytes, %v; want the input", len(got), err)
				}
				d.Close()
			}
			if got := b.Used(); got != 0 {
				t.Errorf("all closed: %d bytes charged, want 0", got)
			}
		})
	}
}

// zstdFrameHeader is a zstd frame header (RFC 8878 §3.1.1.1) with descriptor fhd and the
// fields after it, then a last raw block of one byte: a whole frame if the header is valid.
func zstdFrameHeader(fhd byte, fields ...byte) []byte {
	b := append([]byte{0x28, 0xb5, 0x2f, 0xfd, fhd}, fields...)
	return append(b, 0x09, 0x00, 0x00, 'x') // Last_Block, Raw_Block, Block_Size 1
}

// TestBudgetRefusesBadHeaders: a stream whose header claims a window over the coding's
// limit, or that is not the coding's, or is cut short in its header, fails at NewReader with
// an error that says what was decoded (not ErrOverBudget: it would never fit), before any
// decoding and charged nothing.
func TestBudgetRefusesBadHeaders(t *testing.T) {
	for _, tt := range []struct {
		name, coding string
		in           []byte
		want         error // errors.Is, if not nil
	}{
		{"zstd window of 16 MiB", "zstd", zstdFrameHeader(0x00, 14<<3), zstd.ErrWindowSizeExceeded},
		{"zstd window of 8 MiB + 1/8", "zstd", zstdFrameHeader(0x00, 13<<3|1), zstd.ErrWindowSizeExceeded},
		{"zstd window of 3.75 TiB", "zstd", zstdFrameHeader(0x00, 0xff), zstd.ErrWindowSizeExceeded},
		{"zstd single segment of 1 GiB", "zstd", zstdFrameHeader(0xa0, 0, 0, 0, 0x40), zstd.ErrWindowSizeExceeded},
		{"zstd single segment of 2^64-1", "zstd", zstdFrameHeader(0xe0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), zstd.ErrWindowSizeExceeded},
		{"zstd reserved bit", "zstd", zstdFrameHeader(0x08, 0), nil},
		{"zstd bad magic", "zstd", []byte("not zstd at all"), zstd.ErrMagicMismatch},
		{"zstd magic only", "zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}, io.ErrUnexpectedEOF},
		{"zstd header cut in its content size", "zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0, 1, 2}, io.ErrUnexpectedEOF},
		{"br large window", "br", []byte{0x11, 0x01, 0x8c, 0xc1, 0xc5, 0x0d, 0x08, 0x00}, nil},
		{"br header cut in its length", "br", []byte{0x1f, 0x63}, io.ErrUnexpectedEOF},
		{"br large window, cut", "br", []byte{0x11}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBudget(1 << 30)
			d, err := b.NewReader(bytes.NewReader(tt.in), tt.coding)
			if err == nil {
				d.Close()
				t.Fatalf("NewReader succeeded, want an error")
			}
			if errors.Is(err, ErrOverBudget) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("error %v, want %v", err, cmpErr(tt.want))
			}
			if !strings.HasPrefix(err.Error(), "decode "+tt.coding) {
				t.Errorf("error %q does not say what was being done", err)
			}
			if got := b.Used(); got != 0 {
				t.Errorf("%d bytes charged, want 0", got)
			}
			// The decoder would have refused them too: nothing it decodes is refused.
			if _, err := io.ReadAll(libraryReader(t, tt.coding, tt.in)); err == nil {
				t.Errorf("the %s library decodes it", tt.coding)
			}
		})
	}
}

func cmpErr(err error) any {
	if err == nil {
		return "an error other than ErrOverBudget"
	}
	return err
}

// libraryReader decodes in with the coding's library alone, at the limits NewReader had
// before budgets (zstd 8 MiB windows).
func libraryReader(t testing.TB, coding string, in []byte) io.Reader {
	switch coding {
	case "br":
		return brotli.NewReader(bytes.NewReader(in))
	case "zstd":
		d, err := zstd.NewReader(bytes.NewReader(in), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdWindow))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		return d
	}
	d, err := NewReader(bytes.NewReader(in), coding)
	if err != nil {
		return errorReader{err}
	}
	return d
}

type errorReader struct{ err error }

func (r errorReader) Read([]byte) (int, error) { return 0, r.err }

// TestBudgetHoldsLaterZstdFrames: the frames after a zstd stream's first are held to the
// window charged for it, so a stream cannot take more than it was charged by asking for a
// larger window later; the charge is given back all the same.
func TestBudgetHoldsLaterZstdFrames(t *testing.T) {
	body := textBody(64 << 10)
	in := append(zstdStream(t, body, 64<<10, true), zstdStream(t, body, 8<<20, true)...)
	b := NewBudget(64 << 20)
	d, err := b.NewReader(bytes.NewReader(in), "zstd")
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Used(); got != zstdCharge(64<<10) {
		t.Errorf("charged %d, want the first frame's 64 KiB window (%d with its blocks)", got, zstdCharge(64<<10))
	}
	got, err := io.ReadAll(d)
	if err == nil || !strings.HasPrefix(err.Error(), "decode zstd") {
		t.Errorf("decoded %d bytes, %v; want an error at the second frame", len(got), err)
	}
	d.Close()
	if got := b.Used(); got != 0 {
		t.Errorf("after Close: %d bytes charged, want 0", got)
	}
	// Without a budget, frames may ask for up to 8 MiB each, as before.
	plain, err := NewReader(bytes.NewReader(in), "zstd")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got, err := io.ReadAll(plain); err != nil || len(got) != 2*len(body) {
		t.Errorf("NewReader: decoded %d bytes, %v; want both frames", len(got), err)
	}
}

// TestBudgetHeaderReadsNoMore: NewReader reads no byte its decoder would not read before its
// first output, so a stream sent in pieces (an event stream) is not held up by the header.
func TestBudgetHeaderReadsNoMore(t *testing.T) {
	first := []byte("data: first event\n\n")
	for _, coding := range []string{"gzip", "br", "zstd"} {
		t.Run(coding, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pr.Close()
			var w io.WriteCloser
			switch coding {
			case "gzip":
				w, _ = NewWriter(pw, coding, 0)
			case "br":
				w = brotli.NewWriterOptions(pw, brotli.WriterOptions{Quality: 5, LGWin: 24})
			default:
				w, _ = zstd.NewWriter(pw, zstd.WithEncoderConcurrency(1))
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				w.Write(first)
				w.(interface{ Flush() error }).Flush() // then nothing more until the reader stops
			}()
			b := NewBudget(64 << 20)
			d, err := b.NewReader(pr, coding)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := make([]byte, len(first))
			if _, err := io.ReadFull(d, got); err != nil || !bytes.Equal(got, first) {
				t.Errorf("first event: %q, %v; want %q", got, err, first)
			}
			pr.Close()
			<-done
		})
	}
}

// TestBudgetChargeBoundsAllocation: what a decoder allocates while decoding a stream is
// within its charge and a fixed allowance for its buffers, tables and state, so that the
// charge of a br stream of one meta-block (its output, not its 16 MiB window) holds with the
// brotli library in go.mod, which sizes its ring buffer so. Measured on this goroutine, with
// no other test running.
func TestBudgetChargeBoundsAllocation(t *testing.T) {
	const allowance = 1 << 20
	body := textBody(300 << 10)
	for _, tt := range []struct {
		name, coding string
		in           []byte
	}{
		{"gzip", "gzip", mustEncode(t, "gzip", body)},
		{"br lgwin 24, one meta-block", "br", brStream(t, body, 24, 11, false)},
		{"br lgwin 20, meta-blocks", "br", brStream(t, body, 20, 5, true)},
		{"zstd single segment", "zstd", zstdStream(t, body, 8<<20, false)},
		{"zstd stream, 1 MiB window", "zstd", zstdStream(t, body, 1<<20, true)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBudget(64 << 20)
			out := make([]byte, 32<<10)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			d, err := b.NewReader(bytes.NewReader(tt.in), tt.coding)
			if err != nil {
				t.Fatal(err)
			}
			charge := b.Used()
			total := 0
			for {
				n, err := d.Read(out)
				total += n
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			d.Close()
			runtime.ReadMemStats(&after)
			if total != len(body) {
				t.Fatalf("decoded %d bytes, want %d", total, len(body))
			}
			alloc := int64(after.TotalAlloc - before.TotalAlloc)
			t.Logf("charged %d KiB, allocated %d KiB", charge>>10, alloc>>10)
			if alloc > charge+allowance {
				t.Errorf("allocated %d KiB decoding, over its charge of %d KiB and %d KiB for buffers",
					alloc>>10, charge>>10, allowance>>10)
			}
		})
	}
}

// TestBudgetChargeBoundsLiveMemory: the memory a decoder holds while it decodes (measured:
// the live heap with decoders open mid-stream) is within its charge and what the charge
// leaves out (Budget): its state and buffers, under 128 KiB, and zstd's block buffers, up to
// twice its block size. So a full budget holds what it says, with the libraries in go.mod.
// Before, a zstd decoder was charged its window alone, where it holds a ring of the window
// and two blocks: up to 3 times the window, 4.6 times with its buffers (a single-segment
// frame of 100 KiB, the usual small answer, held 460 KiB charged 100). Measured on this
// goroutine, with no other test running.
func TestBudgetChargeBoundsLiveMemory(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	const state = 128 * kib // state, tables and input buffers: not charged
	body := textBody(2 * mib)
	for _, tt := range []struct {
		name, coding string
		in           []byte
		read         int // decoded bytes read before measuring
		block        int // zstd's block size: min(window, 128 KiB)
	}{
		{"gzip", "gzip", mustEncode(t, "gzip", body), mib, 0},
		{"br lgwin 10, meta-blocks", "br", brStream(t, body, 10, 5, true), mib, 0},
		{"br lgwin 16, meta-blocks", "br", brStream(t, body, 16, 5, true), mib, 0},
		{"br lgwin 22, meta-blocks", "br", brStream(t, body, 22, 5, true), mib, 0},
		{"br lgwin 24, one meta-block of 100 KiB", "br", brStream(t, body[:100*kib], 24, 11, false), 80 * kib, 0},
		{"zstd stream, 1 KiB window", "zstd", zstdStream(t, body, 1*kib, true), mib, 1 * kib},
		{"zstd stream, 64 KiB window", "zstd", zstdStream(t, body, 64*kib, true), mib, 64 * kib},
		{"zstd stream, 128 KiB window", "zstd", zstdStream(t, body, 128*kib, true), mib, 128 * kib},
		{"zstd stream, 1 MiB window", "zstd", zstdStream(t, body, 1*mib, true), mib, 128 * kib},
		{"zstd stream, 8 MiB window", "zstd", zstdStream(t, body, 8*mib, true), mib, 128 * kib},
		{"zstd single segment of 100 KiB", "zstd", zstdStream(t, body[:100*kib], 8*mib, false), 80 * kib, 100 * kib},
		{"zstd single segment of 3000 bytes", "zstd", zstdStream(t, body[:3000], 8*mib, false), 2000, 3000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const open = 4 // decoders measured together, for a steadier figure
			b := NewBudget(1 << 30)
			out := make([]byte, 32*kib)
			decoders := make([]io.ReadCloser, 0, open)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&before)
			for range open {
				d, err := b.NewReader(bytes.NewReader(tt.in), tt.coding)
				if err != nil {
					t.Fatal(err)
				}
				decoders = append(decoders, d)
				if _, err := io.ReadFull(d, out[:0]); err != nil {
					t.Fatal(err)
				}
				for n := 0; n < tt.read; {
					k, err := d.Read(out[:min(len(out), tt.read-n)])
					if err != nil {
						t.Fatalf("decoded %d bytes: %v", n+k, err)
					}
					n += k
				}
			}
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&after)
			charge := b.Used() / open
			live := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / open
			for _, d := range decoders {
				d.Close()
			}
			allowance := int64(state + 2*tt.block)
			t.Logf("charged %d KiB, holds %d KiB", charge/kib, live/kib)
			if live > charge+allowance {
				t.Errorf("a decoder holds %d KiB, over its charge of %d KiB and the %d KiB left out of it",
					live/kib, charge/kib, allowance/kib)
			}
		})
	}
}

// FuzzBudgetNewReader: whatever the bytes, a budgeted decoder is refused or decodes exactly
// what the coding's library decodes (within the window it was charged), its charge is at
// most the coding's largest window, and all of it is given back at Close.
func FuzzBudgetNewReader(f *testing.F) {
	body := textBody(4 << 10)
	f.Add(byte(0), mustEncode(f, "gzip", body))
	f.Add(byte(1), brStream(f, body, 24, 5, true))
	f.Add(byte(1), brStream(f, body, 24, 11, false))
	f.Add(byte(1), []byte{0x11, 0x01, 0x8c, 0xc1, 0xc5, 0x0d, 0x08, 0x00})
	f.Add(byte(2), zstdStream(f, body, 1<<20, true))
	f.Add(byte(2), zstdStream(f, body, 8<<20, false))
	f.Add(byte(2), append(skippable(3), zstdStream(f, body, 1<<20, true)...))
	f.Add(byte(2), zstdFrameHeader(0x00, 14<<3))
	f.Fuzz(func(t *testing.T, which byte, in []byte) {
		coding := [3]string{"gzip", "br", "zstd"}[which%3]
		limit := map[string]int64{"gzip": 32 << 10, "br": 16 << 20, "zstd": zstdCharge(zstdWindow)}[coding]
		want, werr := io.ReadAll(io.LimitReader(libraryReader(t, coding, in), 1<<20))
		b := NewBudget(1 << 30)
		d, err := b.NewReader(bytes.NewReader(in), coding)
		if errors.Is(err, ErrOverBudget) {
			t.Fatalf("refused by a budget of 1 GiB: %v", err)
		}
		if err != nil {
			if b.Used() != 0 {
				t.Fatalf("refused, yet %d bytes charged", b.Used())
			}
			if werr == nil && coding != "gzip" {
				t.Fatalf("refused (%v) a stream the library decodes", err)
			}
			return
		}
		if charge := b.Used(); charge > limit {
			t.Fatalf("charged %d, over the %s limit %d", charge, coding, limit)
		}
		got, gerr := io.ReadAll(io.LimitReader(d, 1<<20))
		d.Close()
		if b.Used() != 0 {
			t.Fatalf("after Close: %d bytes charged", b.Used())
		}
		switch {
		case werr != nil || coding == "gzip": // gzip's header is the library's own
		case coding == "br" && (gerr != nil || !bytes.Equal(got, want)):
			t.Fatalf("decoded %d bytes, %v; the library %d", len(got), gerr, len(want))
		case coding == "zstd" && gerr == nil && !bytes.Equal(got, want):
			// (A frame after the first may fail: it is held to the first one's window.)
			t.Fatalf("decoded %d bytes; the library %d", len(got), len(want))
		}
	})
}
