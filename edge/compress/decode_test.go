package compress

import (
	"bytes"
	stdgzip "compress/gzip"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestDecodable(t *testing.T) {
	for _, tt := range []struct {
		name string
		h    http.Header
		want string
	}{
		{"gzip", hdr("Content-Encoding", "gzip"), "gzip"},
		{"x-gzip", hdr("Content-Encoding", "X-Gzip"), "gzip"},
		{"br", hdr("Content-Encoding", "br"), "br"},
		{"zstd", hdr("Content-Encoding", " zstd "), "zstd"},
		{"identity around", hdr("Content-Encoding", "identity, gzip", "Content-Encoding", "identity"), "gzip"},
		{"none", hdr(), ""},
		{"identity", hdr("Content-Encoding", "identity"), ""},
		{"deflate", hdr("Content-Encoding", "deflate"), ""},
		{"compress", hdr("Content-Encoding", "compress"), ""},
		{"twice", hdr("Content-Encoding", "deflate, gzip"), ""},
		{"twice on two lines", hdr("Content-Encoding", "gzip", "Content-Encoding", "gzip"), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decodable(tt.h); got != tt.want {
				t.Errorf("Decodable(%v) = %q, want %q", tt.h, got, tt.want)
			}
		})
	}
}

// TestNewReader: NewReader undoes what Encode (and other encoders) did, in small reads.
func TestNewReader(t *testing.T) {
	body := textBody(300 << 10)
	var std bytes.Buffer
	zw := stdgzip.NewWriter(&std)
	zw.Write(body[:1000])
	zw.Close()
	zw = stdgzip.NewWriter(&std) // a second member: RFC 1952 allows several
	zw.Write(body[1000:])
	zw.Close()
	inputs := map[string][]byte{"gzip, two members": std.Bytes()}
	for _, coding := range []string{"gzip", "br", "zstd"} {
		enc, err := Encode(coding, body, 0)
		if err != nil {
			t.Fatal(err)
		}
		inputs[coding] = enc
	}
	for name, enc := range inputs {
		t.Run(name, func(t *testing.T) {
			coding, _, _ := strings.Cut(name, ",")
			d, err := NewReader(bytes.NewReader(enc), coding)
			if err != nil {
				t.Fatalf("NewReader: %v", err)
			}
			defer d.Close()
			var got bytes.Buffer
			buf := make([]byte, 1000)
			for {
				n, err := d.Read(buf)
				got.Write(buf[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Read after %d bytes: %v", got.Len(), err)
				}
			}
			if !bytes.Equal(got.Bytes(), body) {
				t.Errorf("decoded %d bytes, not the %d of the input", got.Len(), len(body))
			}
		})
	}
	// No bytes at all decode to none, in any coding: an empty answer its origin labelled.
	for _, coding := range []string{"gzip", "br", "zstd"} {
		d, err := NewReader(bytes.NewReader(nil), coding)
		if err != nil {
			t.Errorf("%s, empty: NewReader: %v", coding, err)
			continue
		}
		if b, err := io.ReadAll(d); err != nil || len(b) != 0 {
			t.Errorf("%s, empty: read %d bytes, %v; want none, no error", coding, len(b), err)
		}
		d.Close()
	}
}

// TestNewReaderErrors: bytes not in the coding fail, at NewReader for a gzip header, else at
// a Read, with an error that says what was decoded; a zstd frame asking for more than the 8
// MiB window browsers accept is refused rather than decoded with more memory.
func TestNewReaderErrors(t *testing.T) {
	body := textBody(64 << 10)
	gz, _ := Encode("gzip", body, 0)
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-8] ^= 0xff
	var bigWindow bytes.Buffer
	zw, err := zstd.NewWriter(&bigWindow, zstd.WithWindowSize(64<<20), zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(textBody(20 << 20))
	zw.Close()
	for _, tt := range []struct {
		name, coding string
		in           []byte
		atOpen       bool
	}{
		{"not gzip", "gzip", body, true},
		{"gzip cut short", "gzip", gz[:len(gz)/2], false},
		{"gzip bad checksum", "gzip", badCRC, false},
		{"gzip then garbage", "gzip", append(bytes.Clone(gz), "garbage"...), false},
		{"not br", "br", body, false},
		{"not zstd", "zstd", body, false},
		{"zstd window over 8 MiB", "zstd", bigWindow.Bytes(), false},
		{"unknown coding", "deflate", gz, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewReader(bytes.NewReader(tt.in), tt.coding)
			if err == nil {
				defer d.Close()
				_, err = io.Copy(io.Discard, d)
				if tt.atOpen {
					t.Errorf("NewReader succeeded, want an error")
				}
			}
			if err == nil {
				t.Fatalf("decoded without an error")
			}
			if !strings.HasPrefix(err.Error(), "decode") {
				t.Errorf("error %q does not say what was being done", err)
			}
		})
	}
	// A source's own error comes through, wrapped.
	d, err := NewReader(io.MultiReader(bytes.NewReader(gz[:100]), errReader{}), "gzip")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, d); !errors.Is(err, errSource) {
		t.Errorf("source failure: %v, want it wrapped", err)
	}
}

var errSource = errors.New("source failed")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errSource }

func TestDecodeHeader(t *testing.T) {
	for _, tt := range []struct {
		name     string
		in       http.Header
		wantETag string
		wantVary string
	}{
		{"tag made weak", hdr("ETag", `"abc"`), `W/"abc"`, "Accept-Encoding"},
		{"weak tag kept weak", hdr("ETag", `W/"abc"`, "Vary", "Origin"), `W/"abc"`, "Origin, Accept-Encoding"},
		{"tag ending in -gzip", hdr("ETag", `"abc-gzip"`, "Vary", "accept-encoding"), `W/"abc-gzip"`, "accept-encoding"},
		{"no tag", hdr("Vary", "*"), "", "*"},
		{"bad tag dropped", hdr("ETag", "abc"), "", "Accept-Encoding"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.in.Clone()
			for _, kv := range [][2]string{{"Content-Encoding", "gzip"}, {"Content-Length", "100"}, {"Accept-Ranges", "bytes"},
				{"Content-Digest", "sha-256=:x:"}, {"Content-Type", "text/plain"}} {
				h.Set(kv[0], kv[1])
			}
			DecodeHeader(h)
			for _, k := range []string{"Content-Encoding", "Content-Length", "Accept-Ranges", "Content-Digest"} {
				if v, ok := h[k]; ok {
					t.Errorf("%s %q kept", k, v)
				}
			}
			if got := h.Get("ETag"); got != tt.wantETag {
				t.Errorf("ETag %q, want %q", got, tt.wantETag)
			}
			if got := h.Get("Vary"); got != tt.wantVary {
				t.Errorf("Vary %q, want %q", got, tt.wantVary)
			}
			if h.Get("Content-Type") != "text/plain" {
				t.Errorf("Content-Type %q, want it kept", h.Get("Content-Type"))
			}
		})
	}
}
