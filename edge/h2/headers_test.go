package h2

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// encodeBlock is fields (name, value, ...) as one HPACK block.
func encodeBlock(fields ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

var getFields = []string{":method", "GET", ":scheme", "https", ":path", "/a", ":authority", "x.test"}

// TestHeaderBlock checks the header block decoder against what x/net's Framer decides with
// ReadMetaHeaders for the same bytes: the same fields, the same Truncated, the same kind of
// error (a stream error, or a connection error with its code).
func TestHeaderBlock(t *testing.T) {
	long := strings.Repeat("v", 3000)
	cases := []struct {
		name  string
		block []byte
		split int // bytes in the HEADERS frame; the rest in CONTINUATIONs of this size (0: one frame)
	}{
		{"request", encodeBlock(append(getFields, "accept", "*/*", "cookie", "a=1", "cookie", "b=2")...), 0},
		{"split in continuations", encodeBlock(append(getFields, "x-long", long, "accept", "*/*")...), 7},
		{"upper-case name", encodeBlock(append(getFields, "Accept", "*/*")...), 0},
		{"invalid name", encodeBlock(append(getFields, "a b", "1")...), 0},
		{"invalid value", encodeBlock(append(getFields, "x-a", "1\x002")...), 0},
		{"pseudo after regular", encodeBlock("accept", "*/*", ":method", "GET", ":path", "/", ":scheme", "https"), 0},
		{"duplicate pseudo", encodeBlock(append(getFields, ":path", "/b")...), 0},
		{"unknown pseudo", encodeBlock(append([]string{":foo", "1"}, getFields...)...), 0},
		{"response pseudo mixed in", encodeBlock(append([]string{":status", "200"}, getFields...)...), 0},
		{"over the list size", encodeBlock(append(getFields, "x-1", long, "x-2", long)...), 0},
		{"trailer names counted", encodeBlock(append(getFields, "trailer", strings.Repeat("a,", 150)+"a")...), 0},
		{"far over the list size", encodeBlock(append(getFields, "x-1", long, "x-2", long, "x-3", long, "x-4", long, "x-5", long)...), 1000},
		{"bad hpack", []byte{0x80}, 0},
		{"truncated hpack", encodeBlock(getFields...)[:5], 0},
	}
	const maxList = 4096
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var wire bytes.Buffer
			w := http2.NewFramer(&wire, nil)
			first, rest := c.block, []byte(nil)
			if c.split > 0 && c.split < len(c.block) {
				first, rest = c.block[:c.split], c.block[c.split:]
			}
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: len(rest) == 0})
			for len(rest) > 0 {
				n := min(c.split, len(rest))
				w.WriteContinuation(1, n == len(rest), rest[:n])
				rest = rest[n:]
			}
			// x/net's Framer with ReadMetaHeaders: the reference.
			ref := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
			ref.MaxHeaderListSize = maxList
			ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			wantF, wantErr := ref.ReadFrame()
			if m, ok := wantF.(*http2.MetaHeadersFrame); ok && wantErr == nil {
				t.Logf("x/net: %d fields, truncated %v", len(m.Fields), m.Truncated)
			} else {
				t.Logf("x/net: %s", kind(wantErr))
			}
			// headerBlock reads the block twice, each time with a fresh HPACK decoder as the
			// reference has: the second read must not see the first's fields.
			b := newHeaderBlock(maxList)
			for round := range 2 {
				fr := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
				fr.MaxHeaderListSize = maxList
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading the HEADERS frame: %v", err)
				}
				if round == 1 {
					b.dec = hpack.NewDecoder(4096, b.emit) // a fresh dynamic table, as the reference's
					b.dec.SetMaxStringLength(maxList)
				}
				got, err := b.read(fr, f.(*http2.HeadersFrame))
				if kind(err) != kind(wantErr) {
					t.Fatalf("round %d: error %v (%s), x/net: %v (%s)", round, err, kind(err), wantErr, kind(wantErr))
				}
				if err != nil {
					continue
				}
				want := wantF.(*http2.MetaHeadersFrame)
				if got.Truncated != want.Truncated || !sameFields(got.Fields, want.Fields) || got.StreamID != 1 || !got.StreamEnded() {
					t.Errorf("round %d: fields %v truncated %v, x/net: %v truncated %v", round, got.Fields, got.Truncated, want.Fields, want.Truncated)
				}
			}
		})
	}
}

// kind names an error from reading a frame as the connection acts on it.
func kind(err error) string {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &se):
		return "stream " + se.Code.String()
	case errors.As(err, &ce):
		return "connection " + http2.ErrCode(ce).String()
	}
	return "other: " + err.Error()
}

func sameFields(a, b []hpack.HeaderField) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Value != b[i].Value {
			return false
		}
	}
	return true
}

// BenchmarkHeaderBlock is the decoding of a typical request's header block.
func BenchmarkHeaderBlock(b *testing.B) {
	var wire bytes.Buffer
	w := http2.NewFramer(&wire, nil)
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true,
		BlockFragment: encodeBlock(append(getFields, "user-agent", "bench/1", "accept", "*/*", "accept-encoding", "gzip")...)})
	hb := newHeaderBlock(1 << 20)
	r := bytes.NewReader(nil)
	fr := http2.NewFramer(nil, r)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(wire.Bytes())
		f, err := fr.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := hb.read(fr, f.(*http2.HeadersFrame)); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzRequestURL holds requestURL to url.ParseRequestURI for every path it accepts (seeds in
// testdata/fuzz/FuzzRequestURL).
func FuzzRequestURL(f *testing.F) {
	f.Fuzz(func(t *testing.T, path string) {
		var got url.URL
		if !requestURL(path, &got) {
			return
		}
		want, err := url.ParseRequestURI(path)
		if err != nil {
			t.Fatalf("requestURL(%q) accepted what url.ParseRequestURI refuses: %v", path, err)
		}
		if got != *want {
			t.Fatalf("requestURL(%q) = %#v, url.ParseRequestURI: %#v", path, got, *want)
		}
	})
}

// TestHeaderBlockSequence decodes blocks one after another on one connection, as a client
// sends them with one HPACK encoder (its dynamic table carried from block to block), valid and
// invalid ones mixed, and requires what x/net's Framer decides for each: nothing of one block
// may reach the next.
func TestHeaderBlockSequence(t *testing.T) {
	blocks := [][]string{
		append(getFields, "accept", "*/*", "x-a", "1"),
		append(getFields, "x-a", "2", "x-b", "new"),
		append(getFields, "Upper", "x"), // a stream error: the next block still decodes
		append(getFields, "x-a", "1", "x-b", "new", "trailer", "x-t"),
		append([]string{"accept", "*/*"}, getFields...), // pseudo fields after a regular one
		append(getFields, "x-long", strings.Repeat("v", 1500), "x-long-2", strings.Repeat("w", 1500)),
		append(getFields, "x-a", "1"),
	}
	var wire bytes.Buffer
	w := http2.NewFramer(&wire, nil)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for i, fields := range blocks {
		hbuf.Reset()
		for j := 0; j+1 < len(fields); j += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[j], Value: fields[j+1]})
		}
		blk := hbuf.Bytes()
		id := uint32(2*i + 1)
		if i%2 == 1 && len(blk) > 10 { // every other block split into CONTINUATIONs
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk[:10], EndStream: true})
			w.WriteContinuation(id, true, blk[10:])
		} else {
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true})
		}
	}
	const maxList = 2048
	ref := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
	ref.MaxHeaderListSize = maxList
	ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
	fr.MaxHeaderListSize = maxList
	hb := newHeaderBlock(maxList)
	kinds := map[string]int{}
	for i := range blocks {
		wantF, wantErr := ref.ReadFrame()
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("block %d: reading its HEADERS: %v", i, err)
		}
		got, err := hb.read(fr, f.(*http2.HeadersFrame))
		if kind(err) != kind(wantErr) {
			t.Fatalf("block %d: error %v (%s), x/net: %v (%s)", i, err, kind(err), wantErr, kind(wantErr))
		}
		kinds[kind(err)]++
		if err != nil {
			continue
		}
		want := wantF.(*http2.MetaHeadersFrame)
		if got.Truncated != want.Truncated || !sameFields(got.Fields, want.Fields) || got.StreamID != want.StreamID {
			t.Errorf("block %d: stream %d fields %v truncated %v, x/net: stream %d %v truncated %v",
				i, got.StreamID, got.Fields, got.Truncated, want.StreamID, want.Fields, want.Truncated)
		}
		if want.Truncated {
			kinds["truncated"]++
		}
	}
	if kinds["none"] < 4 || kinds["stream PROTOCOL_ERROR"] != 2 || kinds["truncated"] != 1 {
		t.Errorf("outcomes %v: the sequence no longer covers valid, invalid and truncated blocks", kinds)
	}
}
