package compress

import (
	"bytes"
	stdgzip "compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

func TestCompressible(t *testing.T) {
	tests := []struct {
		ct    string
		types []string
		want  bool
	}{
		{"text/html; charset=utf-8", nil, true},
		{"TEXT/CSS", nil, true},
		{"application/json", nil, true},
		{"application/ld+json", nil, true},
		{"application/javascript", nil, true},
		{"text/javascript", nil, true},
		{"image/svg+xml", nil, true},
		{"application/atom+xml", nil, true},
		{"application/wasm", nil, true},
		{"application/octet-stream", nil, false},
		{"image/png", nil, false},
		{"video/mp4", nil, false},
		{"font/woff2", nil, false},
		{"", nil, false},
		{"text", nil, false},
		{"application/epub+zip", []string{"*/*"}, false},
		{"image/jpeg", []string{"image/*"}, false},
		{"image/bmp", []string{"image/*"}, true},
		{"application/x-ndjson", []string{"application/x-ndjson"}, true},
		{"text/html", []string{"application/json"}, false},
		{"text/html", []string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.ct, func(t *testing.T) {
			if got := Compressible(tt.ct, tt.types); got != tt.want {
				t.Errorf("Compressible(%q, %q) = %v, want %v", tt.ct, tt.types, got, tt.want)
			}
		})
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestShouldCompress(t *testing.T) {
	text := func(kv ...string) http.Header { return hdr(append([]string{"Content-Type", "text/html"}, kv...)...) }
	tests := []struct {
		name    string
		status  int
		h       http.Header
		size    int64
		minSize int64
		want    bool
	}{
		{"text", 200, text(), 4096, 0, true},
		{"unknown size", 200, text(), -1, 0, true},
		{"tiny", 200, text(), 1023, 0, false},
		{"at minimum", 200, text(), 1024, 0, true},
		{"own minimum", 200, text(), 100, 50, true},
		{"no minimum", 200, text(), 1, -1, true},
		{"not 200", 404, text(), 4096, 0, false},
		{"partial", 206, text("Content-Range", "bytes 0-9/4096"), 10, -1, false},
		{"no-transform", 200, text("Cache-Control", "public, No-Transform"), 4096, 0, false},
		{"cdn no-transform", 200, text("CDN-Cache-Control", "max-age=60, no-transform"), 4096, 0, false},
		{"no-transform quoted", 200, text("Cache-Control", `private="no-transform", max-age=5`), 4096, 0, true},
		{"no-transform second line", 200, text("Cache-Control", "max-age=5", "Cache-Control", "no-transform"), 4096, 0, false},
		{"already encoded", 200, text("Content-Encoding", "gzip"), 4096, 0, false},
		{"identity encoding", 200, text("Content-Encoding", "identity"), 4096, 0, true},
		{"binary", 200, hdr("Content-Type", "application/octet-stream"), 4096, 0, false},
		{"no type", 200, hdr(), 4096, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ShouldCompress(tt.status, tt.h, tt.size, tt.minSize, nil); got != tt.want {
				t.Errorf("ShouldCompress(%d, %v, %d, %d) = %v, want %v", tt.status, tt.h, tt.size, tt.minSize, got, tt.want)
			}
		})
	}
}

// decode decompresses body with a decoder independent of Encode's writers (the standard
// library's gzip; zstd limited to the 8 MiB window browsers accept).
func decode(t *testing.T, coding string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch coding {
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		d, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatalf("zstd.NewReader: %v", err)
		}
		defer d.Close()
		r = d
	case "gzip":
		g, err := stdgzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip.NewReader: %v", err)
		}
		r = g
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decode %s: %v", coding, err)
	}
	return out
}

// textBody is size bytes of compressible, not trivially repetitive text.
func textBody(size int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("edge origin cache slice range vary encoding brotli zstd gzip fill purge shield tier the a of")
	var b bytes.Buffer
	for b.Len() < size {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.Bytes()[:size]
}

func TestEncodeRoundTrip(t *testing.T) {
	bodies := map[string][]byte{
		"empty": {},
		"small": []byte("hello, world"),
		"text":  textBody(256 << 10),
		"large": textBody(9 << 20), // over the zstd window: several frames' worth of history
	}
	for _, coding := range []string{"br", "zstd", "gzip"} {
		for name, body := range bodies {
			for _, level := range []int{0, 1} {
				if name == "large" && (level != 0 || testing.Short()) {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/level%d", coding, name, level), func(t *testing.T) {
					enc, err := Encode(coding, body, level)
					if err != nil {
						t.Fatalf("Encode(%s, %d bytes, %d): %v", coding, len(body), level, err)
					}
					if len(body) > 4096 && len(enc) >= len(body)/2 {
						t.Errorf("Encode(%s, %d bytes text) = %d bytes, want under half", coding, len(body), len(enc))
					}
					if got := decode(t, coding, enc); !bytes.Equal(got, body) {
						t.Errorf("decode(Encode(%s, %d bytes)) = %d bytes, not the input", coding, len(body), len(got))
					}
				})
			}
		}
	}
}

func TestNewWriterRoundTrip(t *testing.T) {
	body := textBody(100 << 10)
	for _, coding := range []string{"br", "zstd", "gzip"} {
		t.Run(coding, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, coding, 0)
			if err != nil {
				t.Fatalf("NewWriter(%s): %v", coding, err)
			}
			for i := 0; i < len(body); i += 3000 {
				if _, err := w.Write(body[i:min(i+3000, len(body))]); err != nil {
					t.Fatalf("Write: %v", err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got := decode(t, coding, buf.Bytes()); !bytes.Equal(got, body) {
				t.Errorf("streamed %s decodes to %d bytes, not the input", coding, len(got))
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	for _, tt := range []struct {
		coding string
		level  int
	}{{"deflate", 0}, {"", 0}, {"br", 12}, {"br", -1}, {"zstd", 23}, {"gzip", 10}, {"gzip", -3}} {
		if _, err := Encode(tt.coding, []byte("x"), tt.level); err == nil {
			t.Errorf("Encode(%q, level %d) succeeded, want an error", tt.coding, tt.level)
		}
	}
}

func TestTransform(t *testing.T) {
	body := textBody(8 << 10)
	tests := []struct {
		name     string
		in       http.Header
		wantVary string
		wantETag string
	}{
		{"plain", hdr("Content-Type", "text/html", "ETag", `"abc"`), "Accept-Encoding", `"abc-br.` + Mark() + `"`},
		{"weak etag", hdr("ETag", `W/"abc"`, "Vary", "Origin"), "Origin, Accept-Encoding", `W/"abc-br.` + Mark() + `"`},
		{"vary has it", hdr("Vary", "origin, accept-encoding"), "origin, accept-encoding", ""},
		{"vary lines", hdr("Vary", "Origin", "Vary", " ,Accept-Language"), "Origin, Accept-Language, Accept-Encoding", ""},
		{"vary star", hdr("Vary", "*"), "*", ""},
		{"bad etag dropped", hdr("ETag", `abc`), "Accept-Encoding", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in.Clone()
			in.Set("Content-Length", "8192")
			in.Set("Content-Digest", "sha-256=:x:")
			h, out, err := Transform(in, body, "br", 0)
			if err != nil {
				t.Fatalf("Transform: %v", err)
			}
			if got := decode(t, "br", out); !bytes.Equal(got, body) {
				t.Errorf("Transform body decodes to %d bytes, not the input", len(got))
			}
			checks := []struct{ field, want string }{
				{"Content-Encoding", "br"},
				{"Content-Length", fmt.Sprint(len(out))},
				{"Vary", tt.wantVary},
				{"ETag", tt.wantETag},
				{"Content-Digest", ""},
			}
			for _, c := range checks {
				if got := h.Get(c.field); got != c.want {
					t.Errorf("Transform(%v) %s = %q, want %q", tt.in, c.field, got, c.want)
				}
			}
			if n := len(h.Values("Vary")); n != 1 {
				t.Errorf("Transform(%v) has %d Vary lines, want 1", tt.in, n)
			}
			if in.Get("Content-Encoding") != "" || in.Get("Content-Length") != "8192" {
				t.Errorf("Transform modified its input header: %v", in)
			}
		})
	}
}

func TestETagSuffix(t *testing.T) {
	m := Mark()
	for _, tt := range []struct{ in, coding, want string }{
		{`"abc"`, "gzip", `"abc-gzip.` + m + `"`},
		{`W/"abc"`, "zstd", `W/"abc-zstd.` + m + `"`},
		{`""`, "br", `"-br.` + m + `"`},
		{`"abc-gzip"`, "gzip", `"abc-gzip-gzip.` + m + `"`},
	} {
		got, ok := SuffixETag(tt.in, tt.coding)
		if !ok || got != tt.want {
			t.Errorf("SuffixETag(%q, %q) = %q, %v, want %q, true", tt.in, tt.coding, got, ok, tt.want)
		}
		back, ok := UnsuffixETag(got, tt.coding)
		if !ok || back != tt.in {
			t.Errorf("UnsuffixETag(%q, %q) = %q, %v, want %q, true", got, tt.coding, back, ok, tt.in)
		}
	}
	for _, bad := range []string{"abc", `"a"b"`, `W/abc`, `"a b"`, `"`} {
		if got, ok := SuffixETag(bad, "br"); ok {
			t.Errorf("SuffixETag(%q) = %q, true; want false", bad, got)
		}
	}
	for _, tt := range []struct {
		in, coding, want string
		ok               bool
	}{
		{`"abc-gzip"`, "gzip", `"abc"`, true},     // a node of a version before the mark
		{`"abc-gzip.zz9"`, "gzip", `"abc"`, true}, // another node's mark
		{`W/"abc-br.1"`, "br", `W/"abc"`, true},
		{`"abc-gzip"`, "br", `"abc-gzip"`, false},
		{`"abc-gzip."`, "gzip", `"abc-gzip."`, false},
		{`"abc-gzip.X1"`, "gzip", `"abc-gzip.X1"`, false},
		{`"abc-gzipped"`, "gzip", `"abc-gzipped"`, false},
		{`"abc-gzip.1.2"`, "gzip", `"abc-gzip.1.2"`, false},
	} {
		if got, ok := UnsuffixETag(tt.in, tt.coding); ok != tt.ok || got != tt.want {
			t.Errorf("UnsuffixETag(%q, %q) = %q, %v, want %q, %v", tt.in, tt.coding, got, ok, tt.want, tt.ok)
		}
	}
}

// TestResuffixETag: a 304's tag for a stored variant keeps the stored bytes' mark, whichever
// node encoded them, not this node's.
func TestResuffixETag(t *testing.T) {
	for _, tt := range []struct {
		etag, stored, coding, want string
		ok                         bool
	}{
		{`"v2"`, `"v1-gzip.zz9"`, "gzip", `"v2-gzip.zz9"`, true},
		{`W/"v2"`, `"v1-br.1"`, "br", `W/"v2-br.1"`, true},
		{`"v2"`, `"v1-gzip"`, "gzip", `"v2-gzip"`, true},
		{`"v2"`, `"v1"`, "gzip", "", false},
		{`"v2"`, `"v1-br.1"`, "gzip", "", false},
		{`v2`, `"v1-gzip.1"`, "gzip", "", false},
		{`"v2"`, ``, "gzip", "", false},
	} {
		if got, ok := ResuffixETag(tt.etag, tt.stored, tt.coding); ok != tt.ok || got != tt.want {
			t.Errorf("ResuffixETag(%q, %q, %q) = %q, %v, want %q, %v", tt.etag, tt.stored, tt.coding, got, ok, tt.want, tt.ok)
		}
	}
}

// TestMarkNamesTheEncoders: builds with other compression library versions, or replaced ones,
// or compiled by another Go toolchain, mark their tags apart; other modules do not matter.
func TestMarkNamesTheEncoders(t *testing.T) {
	mod := func(path, version string) *debug.Module { return &debug.Module{Path: path, Version: version} }
	base := []*debug.Module{mod("github.com/klauspost/compress", "v1.20.3"), mod("github.com/andybalholm/brotli", "v1.3.0"), mod("github.com/nats-io/nats.go", "v1.0.0")}
	const goVersion = "go1.26.8"
	m := markOf(goVersion, base)
	if m != markOf(goVersion, slices.Clone(base)) {
		t.Fatal("markOf is not a function of its input")
	}
	if strings.Trim(m, "0123456789abcdefghijklmnopqrstuvwxyz") != "" || m == "" {
		t.Errorf("mark %q is not base-36 digits", m)
	}
	other := func(i int, d *debug.Module) []*debug.Module {
		c := slices.Clone(base)
		c[i] = d
		return c
	}
	replaced := mod("github.com/klauspost/compress", "v1.20.3")
	replaced.Replace = mod("example.com/fork", "v1.20.3-fork")
	for name, deps := range map[string][]*debug.Module{
		"klauspost/compress bumped": other(0, mod("github.com/klauspost/compress", "v1.20.4")),
		"brotli bumped":             other(1, mod("github.com/andybalholm/brotli", "v1.3.1")),
		"klauspost/compress forked": other(0, replaced),
		"no build info":             nil,
	} {
		if markOf(goVersion, deps) == m {
			t.Errorf("%s: mark unchanged (%s)", name, m)
		}
	}
	// brotli's cost model is floating point, and whether the compiler fuses its multiply-adds
	// (it does on arm64) is the toolchain's choice, as is math.Log2's last bit: another Go
	// version may pick other blocks and clusters, so other bytes, from the same library.
	if markOf("go1.27.0", base) == m {
		t.Errorf("another Go toolchain: mark unchanged (%s)", m)
	}
	if markOf(goVersion, other(2, mod("github.com/nats-io/nats.go", "v2.0.0"))) != m {
		t.Error("another module's version changed the mark")
	}
}

// FuzzETagSuffix: a tag SuffixETag makes is undone by UnsuffixETag to the tag it was made of,
// and ResuffixETag moves its suffix onto another tag; any other input leaves them without a
// panic, UnsuffixETag returning a tag it does not recognise unchanged.
func FuzzETagSuffix(f *testing.F) {
	for _, s := range []string{`"abc"`, `W/"abc"`, `""`, `"v1-gzip"`, `"v1-gzip.zz9"`, `"a-br.1-br"`, `abc`, `"a"b"`} {
		f.Add(s, `"v2"`, uint8(0))
	}
	codings := []string{"gzip", "br", "zstd"}
	f.Fuzz(func(t *testing.T, etag, other string, c uint8) {
		coding := codings[int(c)%len(codings)]
		if back, ok := UnsuffixETag(etag, coding); !ok && back != etag {
			t.Fatalf("UnsuffixETag(%q, %s) = %q, false: want the tag unchanged", etag, coding, back)
		}
		// A tag as the functions write it: the field value's surrounding white space dropped.
		canon := func(etag string) (string, bool) {
			weak, opaque, ok := splitETag(etag)
			return weak + `"` + opaque + `"`, ok
		}
		tag, ok := SuffixETag(etag, coding)
		if !ok {
			return
		}
		back, ok := UnsuffixETag(tag, coding)
		if want, _ := canon(etag); !ok || back != want {
			t.Fatalf("UnsuffixETag(SuffixETag(%q, %s) = %q) = %q, %v; want %q", etag, coding, tag, back, ok, want)
		}
		re, ok := ResuffixETag(other, tag, coding)
		want, valid := canon(other)
		if ok != valid {
			t.Fatalf("ResuffixETag(%q, %q, %s) ok = %v, want %v", other, tag, coding, ok, valid)
		}
		if ok {
			if back, ok := UnsuffixETag(re, coding); !ok || back != want {
				t.Fatalf("UnsuffixETag(ResuffixETag(%q, %q) = %q) = %q, %v; want %q", other, tag, re, back, ok, want)
			}
		}
	})
}
