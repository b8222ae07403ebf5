package h2

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzHeaderBlockSameAsXNet holds the header block decoder to x/net's Framer with
// ReadMetaHeaders (as TestHeaderBlockSequence does for chosen blocks) for any two HPACK blocks
// sent one after the other on one connection, each in a HEADERS frame and CONTINUATIONs of
// split bytes (0: one frame): the same fields, Truncated and kind of error, the dynamic table
// carried from the first block to the second; nothing is compared after a connection error,
// which ends the connection, nor where the decoder ends it on its own limit, which x/net does
// not have (seed size-updates-past-the-block-limit: a block of 2 KiB, mostly size updates).
func FuzzHeaderBlockSameAsXNet(f *testing.F) {
	f.Add(encodeBlock(append(getFields, "accept", "*/*", "x-a", "1")...), encodeBlock(append(getFields, "x-a", "1")...), uint8(0))
	f.Add(encodeBlock(append(getFields, "x-long", strings.Repeat("v", 300))...), encodeBlock(append(getFields, "Upper", "x")...), uint8(7))
	f.Add([]byte{0x3f, 0xe1, 0x1f}, encodeBlock(getFields...), uint8(3)) // a table size update
	f.Add([]byte{0x80}, []byte{}, uint8(0))
	const maxList = 512
	f.Fuzz(func(t *testing.T, a, b []byte, split uint8) {
		var wire bytes.Buffer
		w := http2.NewFramer(&wire, nil)
		blocks := [][]byte{a, b}
		for i, blk := range blocks {
			id := uint32(2*i + 1)
			first, rest := blk, []byte(nil)
			if n := int(split); n > 0 && n < len(blk) {
				first, rest = blk[:n], blk[n:]
			}
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: true, EndHeaders: len(rest) == 0})
			for len(rest) > 0 {
				n := min(int(split), len(rest))
				w.WriteContinuation(id, n == len(rest), rest[:n])
				rest = rest[n:]
			}
		}
		ref := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
		ref.MaxHeaderListSize = maxList
		ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
		fr.MaxHeaderListSize = maxList
		hb := newHeaderBlock(maxList)
		for i := range blocks {
			wantF, wantErr := ref.ReadFrame()
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("block %d: reading its HEADERS: %v", i, err)
			}
			got, err := hb.read(fr, f.(*http2.HeadersFrame))
			// The decoder's own limit (headerBlock.read), which x/net does not have: a block
			// whose bytes pass twice what its fields may still take, or that goes on in another
			// frame after an invalid field or truncation, ends the connection.
			limited := len(blocks[i]) > 4*maxList || split > 0 && len(blocks[i]) > int(split)
			if limited && kind(err) == "connection PROTOCOL_ERROR" {
				return
			}
			if kind(err) != kind(wantErr) {
				t.Fatalf("block %d (% x): error %v (%s), x/net: %v (%s)", i, blocks[i], err, kind(err), wantErr, kind(wantErr))
			}
			if err != nil {
				if strings.HasPrefix(kind(err), "connection ") {
					return
				}
				continue
			}
			want := wantF.(*http2.MetaHeadersFrame)
			if got.Truncated != want.Truncated || !sameFields(got.Fields, want.Fields) || got.StreamID != want.StreamID {
				t.Fatalf("block %d (% x): stream %d fields %q truncated %v, x/net: stream %d %q truncated %v",
					i, blocks[i], got.StreamID, got.Fields, got.Truncated, want.StreamID, want.Fields, want.Truncated)
			}
		}
	})
}
