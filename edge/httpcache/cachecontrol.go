package httpcache

import (
	"net/textproto"
	"strings"
	"time"
)

// MaxDelta is the largest delta-seconds value the package reports: RFC 9111 §1.2.2 says a value
// that overflows is to be read as 2^31 seconds.
const MaxDelta = (1 << 31) * time.Second

// Directives is a parsed Cache-Control-style field (Cache-Control, CDN-Cache-Control,
// Surrogate-Control).
//
// A duration is meaningful only when its Has flag is set; it is never negative and never above
// MaxDelta. NoCache and Private are set only by the unqualified forms; the qualified forms
// (no-cache="Set-Cookie") fill NoCacheFields and PrivateFields with canonical header names.
type Directives struct {
	MaxAge, SMaxAge, StaleWhileRevalidate, StaleIfError, MaxStale, MinFresh                   time.Duration
	HasMaxAge, HasSMaxAge, HasStaleWhileRevalidate, HasStaleIfError, HasMaxStale, HasMinFresh bool

	NoStore, NoCache, Private, Public, MustRevalidate, ProxyRevalidate, Immutable, OnlyIfCached bool
	NoTransform, MustUnderstand                                                                 bool

	NoCacheFields, PrivateFields []string // qualified forms: no-cache="Set-Cookie"

	// InvalidMaxAge: a max-age or s-maxage came without delta-seconds (max-age=-1, s-maxage=10m,
	// a bare max-age). Such a response has invalid freshness information, which RFC 9111 §4.2.1
	// encourages caches to read as stale: ResponsePolicy gives it no heuristic lifetime.
	InvalidMaxAge bool
}

// ParseCacheControl parses all field lines of one header (values as in http.Header[...]).
//
// It is lenient, as RFC 9111 §4.2.1 and §5.2 ask: directive names are case-insensitive, unknown
// directives are ignored, arguments may be tokens or quoted-strings, a delta-seconds argument
// that is not a non-negative integer is ignored (as if the directive were absent, but for
// InvalidMaxAge), and one that overflows reads as MaxDelta. For a directive given more than once, the first valid
// delta-seconds wins (§4.2.1) and a flag counts if it appears anywhere (the more restrictive
// reading); the unqualified and qualified forms of no-cache and private combine. An unvalued
// max-stale means any staleness and reads as MaxDelta. It never panics and, unless a qualified
// no-cache or private is present, does not allocate.
func ParseCacheControl(values []string) Directives {
	var d Directives
	for _, v := range values {
		for len(v) > 0 {
			var name, arg string
			var hasArg bool
			name, arg, hasArg, v = nextDirective(v)
			if name == "" {
				continue
			}
			d.apply(name, arg, hasArg)
		}
	}
	return d
}

// nextDirective splits the first directive off s: its name, its argument (unquoted) and the
// rest of s after the comma that ends it.
func nextDirective(s string) (name, arg string, hasArg bool, rest string) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
		i++
	}
	start := i
	for i < len(s) && s[i] != '=' && s[i] != ',' {
		i++
	}
	name = trimOWS(s[start:i])
	if i >= len(s) || s[i] == ',' {
		return name, "", false, s[i:]
	}
	i++ // '='
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i < len(s) && s[i] == '"' {
		var n int
		arg, n = unquote(s[i:])
		i += n
		// Anything between the closing quote and the next comma is not part of the grammar.
		for i < len(s) && s[i] != ',' {
			i++
		}
		return name, arg, true, s[i:]
	}
	start = i
	for i < len(s) && s[i] != ',' {
		i++
	}
	return name, trimOWS(s[start:i]), true, s[i:]
}

// unquote reads the quoted-string at the start of s (s[0] == '"') and returns its content and
// how many bytes it spanned. An unterminated string runs to the end of s. It allocates only
// when the string holds a quoted-pair.
func unquote(s string) (string, int) {
	escaped := false
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			if !escaped {
				return s[1:i], i + 1
			}
			return unescape(s[1:i]), i + 1
		}
	}
	if !escaped {
		return s[1:], len(s)
	}
	return unescape(s[1:]), len(s)
}

// unescape removes the backslashes of quoted-pairs.
func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// apply records one directive. Names are matched case-insensitively through a lower-cased copy
// on the stack; no known name is longer than the buffer.
func (d *Directives) apply(name, arg string, hasArg bool) {
	var buf [24]byte
	if len(name) > len(buf) {
		return
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(name)]) {
	case "max-age":
		d.InvalidMaxAge = !setDelta(&d.MaxAge, &d.HasMaxAge, arg, hasArg) || d.InvalidMaxAge
	case "s-maxage":
		d.InvalidMaxAge = !setDelta(&d.SMaxAge, &d.HasSMaxAge, arg, hasArg) || d.InvalidMaxAge
	case "stale-while-revalidate":
		setDelta(&d.StaleWhileRevalidate, &d.HasStaleWhileRevalidate, arg, hasArg)
	case "stale-if-error":
		setDelta(&d.StaleIfError, &d.HasStaleIfError, arg, hasArg)
	case "min-fresh":
		setDelta(&d.MinFresh, &d.HasMinFresh, arg, hasArg)
	case "max-stale":
		if !hasArg {
			if !d.HasMaxStale {
				d.MaxStale, d.HasMaxStale = MaxDelta, true
			}
			return
		}
		setDelta(&d.MaxStale, &d.HasMaxStale, arg, hasArg)
	case "no-store":
		d.NoStore = true
	case "no-cache":
		if fields := fieldList(arg); hasArg && len(fields) > 0 {
			d.NoCacheFields = append(d.NoCacheFields, fields...)
		} else {
			d.NoCache = true
		}
	case "private":
		if fields := fieldList(arg); hasArg && len(fields) > 0 {
			d.PrivateFields = append(d.PrivateFields, fields...)
		} else {
			d.Private = true
		}
	case "public":
		d.Public = true
	case "must-revalidate":
		d.MustRevalidate = true
	case "proxy-revalidate":
		d.ProxyRevalidate = true
	case "immutable":
		d.Immutable = true
	case "only-if-cached":
		d.OnlyIfCached = true
	case "no-transform":
		d.NoTransform = true
	case "must-understand":
		d.MustUnderstand = true
	}
}

// setDelta stores the first valid delta-seconds argument of a directive, and says whether this
// one is valid.
func setDelta(dst *time.Duration, has *bool, arg string, hasArg bool) (valid bool) {
	if !hasArg {
		return false
	}
	v, ok := parseDelta(arg)
	if ok && !*has {
		*dst, *has = v, true
	}
	return ok
}

// parseDelta reads delta-seconds (1*DIGIT), clamping at MaxDelta.
func parseDelta(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	const limit = int64(MaxDelta / time.Second)
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < limit {
			n = n*10 + int64(c-'0')
		}
	}
	if n > limit {
		n = limit
	}
	return time.Duration(n) * time.Second, true
}

// fieldList splits the argument of a qualified no-cache or private into canonical field names.
func fieldList(arg string) []string {
	if strings.TrimSpace(arg) == "" {
		return nil
	}
	var out []string
	for f := range strings.SplitSeq(arg, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, textproto.CanonicalMIMEHeaderKey(f))
		}
	}
	return out
}
