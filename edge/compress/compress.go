// Package compress decides whether and how the edge compresses a response and does it, and
// decodes one for a client that does not accept its coding.
//
// The edge compresses a compressible, uncompressed 200 response once, in the coding
// httpcache.NormalizeAcceptEncoding chose for the client (br, zstd or gzip), and stores the
// result as its own variant; Transform gives that variant's body and header. An answer in a
// coding its client does not accept (an origin that ignores Accept-Encoding) is decoded on
// delivery: Decodable, NewReader and DecodeHeader; a Budget bounds the windows that decoders
// hold at once. The package keeps no state besides one shared zstd encoder per speed
// (zstdEncoders).
package compress

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/meridian-cdn/meridian/edge/httpcache"
)

// DefaultMinSize is the smallest body worth compressing: below it, framing overhead and the
// extra variant cost more than the bytes saved.
const DefaultMinSize = 1024

// DefaultTypes are the media types compressed when a host configures none. A pattern is
// "type/subtype", "type/*" (any subtype) or "*/*+suffix" (any structured-syntax suffix).
var DefaultTypes = []string{
	"text/*",
	"application/json", "*/*+json",
	"application/xml", "*/*+xml", "image/svg+xml",
	"application/javascript", "application/x-javascript", "text/javascript",
	"application/wasm",
	"font/ttf", "font/otf",
}

// Compressible reports whether a response of contentType (a Content-Type value, parameters
// allowed) should be compressed: its media type matches one of types (nil means DefaultTypes;
// matching is case-insensitive) and is not a type whose bytes are already compressed (images
// other than SVG, BMP and icons, audio, video, WOFF fonts, archives, PDF, and "+zip", "+gzip"
// or "+zstd" types), whatever types says.
func Compressible(contentType string, types []string) bool {
	if types == nil {
		types = DefaultTypes
	}
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.Trim(mt, " \t"))
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok || typ == "" || sub == "" || alreadyCompressed(typ, sub) {
		return false
	}
	for _, p := range types {
		if matchType(strings.ToLower(strings.TrimSpace(p)), typ, sub) {
			return true
		}
	}
	return false
}

// matchType reports whether the media type typ/sub matches pattern.
func matchType(pattern, typ, sub string) bool {
	ptyp, psub, ok := strings.Cut(pattern, "/")
	if !ok {
		return false
	}
	switch {
	case ptyp == "*" && psub == "*":
		return true
	case ptyp == "*" && strings.HasPrefix(psub, "*+"):
		return strings.HasSuffix(sub, psub[1:])
	case ptyp != typ:
		return false
	}
	return psub == "*" || psub == sub
}

// alreadyCompressed reports whether bytes of media type typ/sub are compressed already, so that
// compressing them again only costs CPU.
func alreadyCompressed(typ, sub string) bool {
	switch typ {
	case "image":
		return sub != "svg+xml" && sub != "bmp" && sub != "x-icon" && sub != "vnd.microsoft.icon"
	case "audio", "video":
		return true
	case "font":
		return sub == "woff" || sub == "woff2"
	case "application":
		switch sub {
		case "zip", "gzip", "x-gzip", "zstd", "x-bzip2", "x-xz", "x-7z-compressed", "vnd.rar",
			"x-rar-compressed", "pdf", "font-woff", "x-font-woff", "brotli", "x-brotli":
			return true
		}
	}
	return strings.HasSuffix(sub, "+zip") || strings.HasSuffix(sub, "+gzip") || strings.HasSuffix(sub, "+zstd")
}

// ShouldCompress reports whether the edge should compress a response with this status and
// header whose body has size bytes (negative when unknown, e.g. streamed): the status is 200,
// Cache-Control (and CDN-Cache-Control) has no no-transform (RFC 9111 §5.2.2.6), there is no
// Content-Encoding other than identity, Content-Range is absent, the Content-Type is Compressible
// under types (nil means DefaultTypes), and a known size is at least minSize (0 means
// DefaultMinSize; negative means no minimum).
func ShouldCompress(status int, h http.Header, size, minSize int64, types []string) bool {
	if status != http.StatusOK {
		return false
	}
	if minSize == 0 {
		minSize = DefaultMinSize
	}
	if size >= 0 && size < minSize {
		return false
	}
	// The type first: it rejects most binary answers with one look at the header, before the
	// codings and the two Cache-Control parses (issue 15).
	if !Compressible(h.Get("Content-Type"), types) {
		return false
	}
	if Encoded(h) {
		return false
	}
	if h.Get("Content-Range") != "" {
		return false
	}
	return !NoTransform(h)
}

// NoTransform reports whether a response with header h forbids a proxy to change its content
// coding: Cache-Control or CDN-Cache-Control has no-transform (RFC 9110 §7.7, RFC 9111
// §5.2.2.6, RFC 9213).
func NoTransform(h http.Header) bool {
	// The canonical key: Values would canonicalise "CDN-Cache-Control" into a new string on
	// every fill.
	return httpcache.ParseCacheControl(h.Values("Cache-Control")).NoTransform || httpcache.ParseCacheControl(h["Cdn-Cache-Control"]).NoTransform
}

// Encoded reports whether a response with header h has a content coding: a Content-Encoding
// other than identity.
func Encoded(h http.Header) bool {
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.Trim(c, " \t"); c != "" && !strings.EqualFold(c, "identity") {
				return true
			}
		}
	}
	return false
}

// Default levels, used when a level is 0: moderate settings, since a variant is compressed once
// per fill but a fill of a large text object should not stall its followers.
const (
	DefaultBrotliLevel = 6 // of 0 to 11
	DefaultZstdLevel   = 3 // of 1 to 22 (zstd's own scale, mapped onto klauspost's four speeds)
	DefaultGzipLevel   = 6 // of 1 to 9
)

// zstdWindow is the largest window an encoded body asks of the decoder: RFC 9659 §3 caps the
// zstd content coding at 8 MiB, and browsers refuse larger ones.
const zstdWindow = 8 << 20

// NewWriter returns a writer that compresses into w in coding ("br", "zstd" or "gzip") at level
// (0 means the coding's default). Close flushes the encoding's end; it does not close w.
func NewWriter(w io.Writer, coding string, level int) (io.WriteCloser, error) {
	switch coding {
	case "br":
		if level == 0 {
			level = DefaultBrotliLevel
		}
		if level < brotli.BestSpeed || level > brotli.BestCompression {
			return nil, fmt.Errorf("compress br: level %d is not from %d to %d", level, brotli.BestSpeed, brotli.BestCompression)
		}
		return brotli.NewWriterLevel(w, level), nil
	case "zstd":
		if level == 0 {
			level = DefaultZstdLevel
		}
		if level < 1 || level > 22 {
			return nil, fmt.Errorf("compress zstd: level %d is not from 1 to 22", level)
		}
		return zstd.NewWriter(w, zstdOptions(level, true)...)
	case "gzip":
		if level == 0 {
			level = DefaultGzipLevel
		}
		if level < gzip.BestSpeed || level > gzip.BestCompression {
			return nil, fmt.Errorf("compress gzip: level %d is not from %d to %d", level, gzip.BestSpeed, gzip.BestCompression)
		}
		return gzip.NewWriterLevel(w, level)
	}
	return nil, fmt.Errorf("compress: unknown coding %q (want br, zstd or gzip)", coding)
}

// zstdOptions configures a zstd encoder at level; a stream encoder runs on its caller's
// goroutine, a shared EncodeAll encoder serves as many calls at once as there are CPUs.
func zstdOptions(level int, stream bool) []zstd.EOption {
	opts := []zstd.EOption{
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithWindowSize(zstdWindow),
	}
	if stream {
		opts = append(opts, zstd.WithEncoderConcurrency(1))
	}
	return opts
}

// zstdEncoders holds one encoder per zstd speed; Encoder.EncodeAll is safe for concurrent use.
var zstdEncoders sync.Map // zstd.EncoderLevel -> *zstd.Encoder

// Encode compresses body in coding ("br", "zstd" or "gzip") at level (0 means the coding's
// default) and returns the encoded bytes.
func Encode(coding string, body []byte, level int) ([]byte, error) {
	if coding == "zstd" {
		if level == 0 {
			level = DefaultZstdLevel
		}
		if level < 1 || level > 22 {
			return nil, fmt.Errorf("compress zstd: level %d is not from 1 to 22", level)
		}
		speed := zstd.EncoderLevelFromZstd(level)
		enc, ok := zstdEncoders.Load(speed)
		if !ok {
			e, err := zstd.NewWriter(nil, zstdOptions(level, false)...)
			if err != nil {
				return nil, fmt.Errorf("compress zstd: %w", err)
			}
			enc, _ = zstdEncoders.LoadOrStore(speed, e)
		}
		return enc.(*zstd.Encoder).EncodeAll(body, make([]byte, 0, len(body)/3+64)), nil
	}
	var buf bytes.Buffer
	buf.Grow(len(body)/3 + 64)
	w, err := NewWriter(&buf, coding, level)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(body); err != nil {
		return nil, fmt.Errorf("compress %s: %w", coding, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compress %s: %w", coding, err)
	}
	return buf.Bytes(), nil
}

// representationDigests describe the bytes as sent, which compression changes: dropped.
var representationDigests = []string{"Content-Digest", "Repr-Digest", "Digest", "Content-MD5"}

// DropDigests removes from h the digests of a response's bytes (Content-Digest, Repr-Digest,
// Digest, Content-MD5), which do not describe them once their coding changed.
func DropDigests(h http.Header) {
	for _, k := range representationDigests {
		h.Del(k)
	}
}

// Transform compresses an uncompressed response body in coding at level (0: the coding's
// default) and returns the encoded body with a copy of h describing it (h is not modified):
//
//   - Content-Encoding is coding; Content-Length is the encoded length;
//   - Vary gains Accept-Encoding once, merged into one line with the fields already there
//     (unless it lists Accept-Encoding or "*" already);
//   - ETag gets the coding and this build's encoder mark inside the quotes: `"x"` becomes
//     `"x-br.<mark>"`, `W/"x"` becomes `W/"x-br.<mark>"` (see SuffixETag, Mark); an ETag that
//     is not a valid entity tag is dropped;
//   - digests of the old bytes (Content-Digest, Repr-Digest, Digest, Content-MD5) are dropped.
//
// Last-Modified and Accept-Ranges stay: ranges of a compressed variant are ranges of its encoded
// bytes. Transform does not check ShouldCompress; the caller does.
func Transform(h http.Header, body []byte, coding string, level int) (http.Header, []byte, error) {
	out, err := Encode(coding, body, level)
	if err != nil {
		return nil, nil, err
	}
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Encoding", coding)
	h.Set("Content-Length", strconv.Itoa(len(out)))
	if vary := MergeVary(h.Values("Vary"), "Accept-Encoding"); vary != "" {
		h.Set("Vary", vary)
	}
	if etag := h.Get("ETag"); etag != "" {
		if tagged, ok := SuffixETag(etag, coding); ok {
			h.Set("ETag", tagged)
		} else {
			h.Del("ETag")
		}
	}
	DropDigests(h)
	return h, out, nil
}

// MergeVary returns the Vary field lines in one value with field added, unless a line lists it
// (case-insensitive) or "*" already; then it returns them joined unchanged. Empty list elements
// are dropped.
func MergeVary(lines []string, field string) string {
	var names []string
	has := false
	for _, l := range lines {
		for name := range strings.SplitSeq(l, ",") {
			name = strings.Trim(name, " \t")
			if name == "" {
				continue
			}
			if name == "*" || strings.EqualFold(name, field) {
				has = true
			}
			names = append(names, name)
		}
	}
	if !has {
		names = append(names, field)
	}
	return strings.Join(names, ", ")
}

// SuffixETag gives the entity tag of a coding's variant as this build encodes it: the coding
// and the encoder's mark appended inside the quotes, weakness kept (`"abc"` -> `"abc-br.1x2y3z"`,
// `W/"abc"` -> `W/"abc-br.1x2y3z"`). ok is false when etag is not an RFC 9110 §8.8.3 entity tag.
//
// A suffix rather than a weak tag: the issue asks for Range on compressed variants, and If-Range
// needs a strong validator (RFC 9110 §13.1.5), which must differ between different bytes, so each
// coding gets its own strong tag; the origin's weakness, if any, is kept. The mark (Mark) names
// the encoder that made the bytes: nodes of one fleet built with other compressor versions make
// other bytes of one body, and a range resumed on such a node must not be spliced onto the
// first's. UnsuffixETag gives the origin's tag back for conditional requests sent upstream.
func SuffixETag(etag, coding string) (string, bool) {
	weak, opaque, ok := splitETag(etag)
	if !ok {
		return "", false
	}
	return weak + `"` + opaque + "-" + coding + "." + mark + `"`, true
}

// ResuffixETag gives the entity tag of a coding's variant stored under the tag stored when its
// origin now names it etag (a 304's): etag's opaque part and weakness, with stored's suffix, the
// mark of whichever node's encoder made the stored bytes. ok is false when stored has no suffix
// of coding or either is not an entity tag.
func ResuffixETag(etag, stored, coding string) (string, bool) {
	weak, opaque, ok := splitETag(etag)
	if !ok {
		return "", false
	}
	_, storedOpaque, ok := splitETag(stored)
	if !ok {
		return "", false
	}
	_, suffix, ok := cutCoding(storedOpaque, coding)
	if !ok {
		return "", false
	}
	return weak + `"` + opaque + suffix + `"`, true
}

// UnsuffixETag undoes SuffixETag, for any node's mark or none (the suffix of versions before the
// mark): for a tag of coding's variant it returns the origin's tag and true; for any other tag,
// the tag unchanged and false.
func UnsuffixETag(etag, coding string) (string, bool) {
	weak, opaque, ok := splitETag(etag)
	if !ok {
		return etag, false
	}
	base, _, found := cutCoding(opaque, coding)
	if !found {
		return etag, false
	}
	return weak + `"` + base + `"`, true
}

// cutCoding splits an opaque tag of coding's variant into the origin's part and the suffix:
// "-" and coding, then "." and a mark of base-36 digits, or nothing.
func cutCoding(opaque, coding string) (base, suffix string, ok bool) {
	i := strings.LastIndex(opaque, "-"+coding)
	if i < 0 {
		return "", "", false
	}
	if m, has := strings.CutPrefix(opaque[i+1+len(coding):], "."); has {
		if m == "" || strings.Trim(m, "0123456789abcdefghijklmnopqrstuvwxyz") != "" {
			return "", "", false
		}
	} else if i+1+len(coding) != len(opaque) {
		return "", "", false
	}
	return opaque[:i], opaque[i:], true
}

// mark names this build's encoders (see Mark).
var mark = markOf(runtime.Version(), buildDeps())

// Mark is the mark SuffixETag gives a variant's tag: a hash of what decides the bytes an
// encoder makes of a body (the compression libraries' versions, the levels, the zstd window,
// the architecture, the Go toolchain), so that two builds share it only if they encode alike.
func Mark() string { return mark }

// buildDeps lists the modules the binary was built with (none in a test binary).
func buildDeps() []*debug.Module {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Deps
	}
	return nil
}

// markOf hashes the encoder settings, the Go toolchain that compiled the encoders (goVersion)
// and the versions of the compression libraries in deps.
func markOf(goVersion string, deps []*debug.Module) string {
	h := fnv.New32a()
	// The toolchain too: brotli's cost model is floating point, and whether a multiply-add is
	// fused (arm64 fuses them) or math.Log2 rounds alike is not fixed across Go versions.
	fmt.Fprintf(h, "%s %s br%d zstd%d w%d gzip%d", goVersion, runtime.GOARCH, DefaultBrotliLevel, DefaultZstdLevel, zstdWindow, DefaultGzipLevel)
	for _, d := range deps {
		switch d.Path {
		case "github.com/klauspost/compress", "github.com/andybalholm/brotli":
			if d.Replace != nil {
				d = d.Replace // a fork or a local copy: its own version, or its path
			}
			fmt.Fprintf(h, " %s@%s %s", d.Path, d.Version, d.Sum)
		}
	}
	return strconv.FormatUint(uint64(h.Sum32()), 36)
}

// splitETag splits an entity tag into its weakness prefix ("" or "W/") and opaque-tag contents.
func splitETag(etag string) (weak, opaque string, ok bool) {
	w, opaque, ok := httpcache.ParseETag(etag)
	if w {
		weak = "W/"
	}
	return weak, opaque, ok
}
