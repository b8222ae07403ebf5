package httpcache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// KeyOptions are a host's cache-key options (they mirror wire.CacheOptions). The zero value
// keeps the whole query, in its order.
type KeyOptions struct {
	// IgnoreQuery drops the whole query string from the key.
	IgnoreQuery bool
	// KeepParams, if not empty, keeps only the query parameters with these names (compared
	// byte for byte with the name after unreserved percent-encodings are decoded); it implies
	// sorting.
	KeepParams []string
	// SortQuery sorts the parameters by name, then value (then the whole parameter), so their
	// order does not matter.
	SortQuery bool
}

// Key builds the primary cache key: host + path [+ "?" + query].
//
//   - host is lower-cased (ASCII) and loses its port ("[::1]:80" -> "[::1]"); a '/' or '%' in
//     it is percent-encoded, so the first '/' of a key always ends the host and different
//     hosts never collide.
//   - path is used as given (the edge rejects ".." segments before calling), except that "" is
//     "/" and a path not starting with '/' gets one, a literal '?' is encoded as %3F so the
//     query boundary stays unambiguous, and percent-encodings of unreserved characters
//     (ALPHA, DIGIT, "-", ".", "_", "~"; RFC 3986 §6.2.2.2) are decoded: "%7Euser" and "~user"
//     are the same resource. Other percent-encodings get upper-case hex digits ("%2f" is
//     "%2F", RFC 3986 §6.2.2.1) but stay encoded ("%2F" is not "/"); every other byte is
//     preserved. So "%2E%2E" becomes "..": check the key's path, not only the raw one, if
//     that matters.
//   - the query gets the same decoding; it is dropped if IgnoreQuery; only KeepParams are
//     kept if set; parameters ('&'-separated, empty ones dropped) are sorted by name, then
//     value, then whole parameter ("a" before "a=") if SortQuery or KeepParams, so the key never
//     depends on their order. An empty query gives no '?' (KeyForced keeps one).
//
// Key allocates once (the result) unless the query has more than 16 parameters to sort.
func Key(host, path, rawQuery string, opts KeyOptions) string {
	return KeyForced(host, path, rawQuery, false, opts)
}

// KeyForced is Key for a URL whose query may be present but empty, as url.URL.ForceQuery
// says: with forceQuery and an empty rawQuery, the key ends in '?' ("/x?" is another URL than
// "/x": RFC 3986 §6.2.3 lets no normaliser drop the delimiter of an empty component, and
// nginx's and Varnish's default keys keep it), unless the options drop or rebuild the query
// (IgnoreQuery, SortQuery, KeepParams), which leave no '?' for an empty one, as for "?&".
func KeyForced(host, path, rawQuery string, forceQuery bool, opts KeyOptions) string {
	host = stripPort(host)
	if opts.IgnoreQuery {
		rawQuery = ""
		forceQuery = false
	}
	var b strings.Builder
	b.Grow(len(host) + len(path) + len(rawQuery) + 2)
	if !strings.ContainsFunc(host, func(r rune) bool { return 'A' <= r && r <= 'Z' || r == '/' || r == '%' }) {
		b.WriteString(host)
		host = ""
	}
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case 'A' <= c && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case c == '/':
			b.WriteString("%2F")
		case c == '%':
			b.WriteString("%25")
		default:
			b.WriteByte(c)
		}
	}
	if !strings.HasPrefix(path, "/") {
		b.WriteByte('/')
	}
	writeNormalized(&b, path, true)
	if rawQuery == "" {
		if forceQuery && len(opts.KeepParams) == 0 && !opts.SortQuery {
			b.WriteByte('?')
		}
		return b.String()
	}
	if len(opts.KeepParams) == 0 && !opts.SortQuery {
		b.WriteByte('?')
		writeNormalized(&b, rawQuery, false)
		return b.String()
	}

	var stack [16]param
	params := stack[:0]
	for seg := range strings.SplitSeq(rawQuery, "&") {
		if seg == "" {
			continue
		}
		name, value, _ := strings.Cut(seg, "=")
		if len(opts.KeepParams) > 0 && !kept(name, opts.KeepParams) {
			continue
		}
		params = append(params, param{name: name, value: value, raw: seg})
	}
	slices.SortStableFunc(params, func(a, b param) int {
		if c := compareNormalized(a.name, b.name); c != 0 {
			return c
		}
		if c := compareNormalized(a.value, b.value); c != 0 {
			return c
		}
		// "a" and "a=" have the same name and value; order them too, so that the key does not
		// depend on the order they came in.
		return compareNormalized(a.raw, b.raw)
	})
	for i, p := range params {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		writeNormalized(&b, p.raw, false)
	}
	return b.String()
}

type param struct{ name, value, raw string }

// kept reports whether the (normalised) parameter name is one of keep.
func kept(name string, keep []string) bool {
	for _, k := range keep {
		if compareNormalized(name, k) == 0 {
			return true
		}
	}
	return false
}

// stripPort removes a trailing :port from a Host value, keeping IPv6 brackets. A bare IPv6
// address (more than one colon, no brackets) is left alone.
func stripPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i >= 0 {
			return host[:i+1]
		}
		return host
	}
	if i := strings.IndexByte(host, ':'); i >= 0 && strings.IndexByte(host[i+1:], ':') < 0 {
		return host[:i]
	}
	return host
}

// unreservedAt decodes a percent-encoding of an unreserved character at s[i], if there is one.
func unreservedAt(s string, i int) (byte, bool) {
	if s[i] != '%' || i+2 >= len(s) {
		return 0, false
	}
	hi, ok1 := unhex(s[i+1])
	lo, ok2 := unhex(s[i+2])
	if !ok1 || !ok2 {
		return 0, false
	}
	c := hi<<4 | lo
	if isUnreserved(c) {
		return c, true
	}
	return 0, false
}

// upperHexAt returns the hex digits of a percent-encoding at s[i] in upper case, if there is
// one: their case does not change what it encodes (RFC 3986 §6.2.2.1).
func upperHexAt(s string, i int) (hi, lo byte, ok bool) {
	if s[i] != '%' || i+2 >= len(s) {
		return 0, 0, false
	}
	if _, ok1 := unhex(s[i+1]); !ok1 {
		return 0, 0, false
	}
	if _, ok2 := unhex(s[i+2]); !ok2 {
		return 0, 0, false
	}
	return upperHex(s[i+1]), upperHex(s[i+2]), true
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// NormalizePath returns path as Key writes it: with unreserved percent-encodings decoded, the
// others in upper case, a literal '?' as %3F, and a leading '/' added if missing. A prefix purge's path is matched
// against stored objects' paths in this form.
func NormalizePath(path string) string {
	if strings.HasPrefix(path, "/") && !strings.ContainsAny(path, "%?") {
		return path
	}
	var b strings.Builder
	b.Grow(len(path) + 1)
	if !strings.HasPrefix(path, "/") {
		b.WriteByte('/')
	}
	writeNormalized(&b, path, true)
	return b.String()
}

// writeNormalized writes s with unreserved percent-encodings decoded and the others in upper
// case, and bytes above 0x7f percent-encoded (a client may send a query's UTF-8 raw, another
// encoded, and purges name it encoded: one key for both); in a path, a literal '?' is written
// as %3F.
func writeNormalized(b *strings.Builder, s string, isPath bool) {
	// Copy the runs between '%', '?' and non-ASCII bytes in one go; most paths have none.
	for {
		i := indexSpecial(s)
		if i < 0 {
			b.WriteString(s)
			return
		}
		b.WriteString(s[:i])
		s = s[i:]
		if s[0] == '?' && !isPath {
			b.WriteByte('?')
			s = s[1:]
			continue
		}
		break
	}
	for i := 0; i < len(s); i++ {
		if c, ok := unreservedAt(s, i); ok {
			b.WriteByte(c)
			i += 2
			continue
		}
		if hi, lo, ok := upperHexAt(s, i); ok {
			b.WriteByte('%')
			b.WriteByte(hi)
			b.WriteByte(lo)
			i += 2
			continue
		}
		if isPath && s[i] == '?' {
			b.WriteString("%3F")
			continue
		}
		if c := s[i]; c >= utf8.RuneSelf {
			b.WriteByte('%')
			b.WriteByte(upperHexDigits[c>>4])
			b.WriteByte(upperHexDigits[c&15])
			continue
		}
		b.WriteByte(s[i])
	}
}

const upperHexDigits = "0123456789ABCDEF"

// indexSpecial is the index of the first '%', '?' or non-ASCII byte of s, or -1.
func indexSpecial(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || c == '?' || c >= utf8.RuneSelf {
			return i
		}
	}
	return -1
}

// compareNormalized compares a and b as writeNormalized would write them, without building
// either.
func compareNormalized(a, b string) int {
	if plainASCII(a) && plainASCII(b) {
		return strings.Compare(a, b)
	}
	ra, rb := normReader{s: a}, normReader{s: b}
	for {
		ca, oka := ra.next()
		cb, okb := rb.next()
		switch {
		case !oka && !okb:
			return 0
		case !oka:
			return -1
		case !okb:
			return 1
		case ca != cb:
			if ca < cb {
				return -1
			}
			return 1
		}
	}
}

// normReader reads a string byte by byte as writeNormalized (not in a path) writes it.
type normReader struct {
	s       string
	i       int
	pend    [2]byte // the hex digits of a percent-encoding whose '%' was read
	pending int
}

func (r *normReader) next() (byte, bool) {
	if r.pending > 0 {
		c := r.pend[2-r.pending]
		r.pending--
		return c, true
	}
	if r.i >= len(r.s) {
		return 0, false
	}
	if c, ok := unreservedAt(r.s, r.i); ok {
		r.i += 3
		return c, true
	}
	if hi, lo, ok := upperHexAt(r.s, r.i); ok {
		r.pend, r.pending = [2]byte{hi, lo}, 2
		r.i += 3
		return '%', true
	}
	if c := r.s[r.i]; c >= utf8.RuneSelf {
		r.pend, r.pending = [2]byte{upperHexDigits[c>>4], upperHexDigits[c&15]}, 2
		r.i++
		return '%', true
	}
	r.i++
	return r.s[r.i-1], true
}

// plainASCII reports whether s has neither '%' nor a non-ASCII byte: writeNormalized writes it
// (outside a path) as it is.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// VaryKey builds the secondary key from the request's values of the Vary fields (as in
// Policy.Vary). Each field becomes `name="values"`, quoted Go-style so that no value can forge a
// boundary; an absent field is its bare name, so absent and empty differ. Fields are joined
// with "; ". It returns "" when vary is empty.
//
// A hop-by-hop field (RemoveHopByHop's list: TE, Upgrade, Keep-Alive, ...) counts as absent
// whatever the request holds: a proxy never forwards one, so the answer is the one for a
// request without it. Keyed on the client's value, each value would fill a variant of its own
// (up to the store's bound on variants, past which the URL's real ones are not stored).
//
// The fields whose syntax is a list (RFC 9110 §5.6.1: Accept, Accept-Charset, Accept-Language,
// and the client hints Sec-CH-UA and Sec-CH-UA-Full-Version-List, structured-field lists) are
// read as one, so that spellings a cache must treat alike (RFC 9111 §4.1: whitespace where the
// syntax allows it, field lines combined) share a variant: the field lines' elements (split at
// commas outside quoted strings) lose the whitespace around them, empty ones are dropped, and
// they are joined with ", "; the whitespace around the ";" before a parameter goes too, and
// Accept-Language is lower-cased (language ranges and q are case-insensitive, RFC 4647 §2).
// The order of the elements is kept: with equal weights, servers take it as the preference.
// Any other field is keyed as sent, its lines trimmed of whitespace and joined with ", ": its
// syntax is not known here, and an origin may read another spelling as another value, whose
// answer must not be served for this one.
//
// Accept-Encoding is keyed on CanonicalAcceptEncoding, so spellings that accept the same codings
// ("gzip, br", "br,gzip", "BR;q=1.0, gzip;q=0.5", ...) share one variant; a malformed value
// is keyed as the other lists.
func VaryKey(vary []string, reqHeader http.Header) string {
	if len(vary) == 0 {
		return ""
	}
	var stack [128]byte
	buf := stack[:0]
	for i, name := range vary {
		if i > 0 {
			buf = append(buf, "; "...)
		}
		buf = append(buf, name...)
		if hopByHopName(name) {
			continue
		}
		values := headerValues(reqHeader, name)
		if len(values) == 0 {
			continue
		}
		buf = append(buf, '=')
		lower := false
		switch {
		case strings.EqualFold(name, "accept-encoding"):
			// Canonical values hold only tchar, ' ', ',', ';' and '=': quoting changes nothing.
			n := len(buf)
			var ok bool
			if buf, ok = appendCanonicalAcceptEncoding(append(buf, '"'), values); ok {
				buf = append(buf, '"')
				continue
			}
			buf = buf[:n]
		case strings.EqualFold(name, "accept-language"):
			lower = true
		case strings.EqualFold(name, "accept"), strings.EqualFold(name, "accept-charset"),
			strings.EqualFold(name, "sec-ch-ua"), strings.EqualFold(name, "sec-ch-ua-full-version-list"):
		default:
			buf = appendRaw(buf, values)
			continue
		}
		// Written in place, then quoted: a value of printable ASCII without '"' or '\\' (the
		// usual) is quoted as it is, with no copy.
		n := len(buf)
		buf = appendList(append(buf, '"'), values, lower)
		if quoteAsIs(buf[n+1:]) {
			buf = append(buf, '"')
			continue
		}
		list := string(buf[n+1:])
		buf = strconv.AppendQuote(buf[:n], list)
	}
	return string(buf)
}

// quoteAsIs reports whether strconv.AppendQuote would write b between quotes unchanged.
func quoteAsIs(b []byte) bool {
	for _, c := range b {
		if c < ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// appendRaw appends values quoted, each trimmed of whitespace, joined with ", ".
func appendRaw(buf []byte, values []string) []byte {
	if len(values) == 1 {
		return strconv.AppendQuote(buf, strings.TrimSpace(values[0]))
	}
	var joined strings.Builder
	for j, v := range values {
		if j > 0 {
			joined.WriteString(", ")
		}
		joined.WriteString(strings.TrimSpace(v))
	}
	return strconv.AppendQuote(buf, joined.String())
}

// isOWS reports whether c is optional whitespace (RFC 9110 §5.6.3).
func isOWS(c byte) bool { return c == ' ' || c == '\t' }

// appendList appends the elements of the field lines values, split at commas outside quoted
// strings, trimmed of whitespace, empty ones dropped, joined with ", " (see VaryKey), and
// without whitespace next to a ";" outside quoted strings (RFC 9110 §5.6.6 allows it there,
// not around "="). With lower, letters outside quoted strings are lower-cased.
func appendList(dst []byte, values []string, lower bool) []byte {
	first := true
	for _, v := range values {
		for len(v) > 0 {
			end := elemEnd(v)
			elem := strings.Trim(v[:end], " \t")
			if end < len(v) {
				v = v[end+1:]
			} else {
				v = ""
			}
			if elem == "" {
				continue
			}
			if !first {
				dst = append(dst, ", "...)
			}
			first = false
			dst = appendElem(dst, elem, lower)
		}
	}
	return dst
}

// elemEnd is the index of the first comma of v outside a quoted string, or len(v).
func elemEnd(v string) int {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++ // a quoted pair
		case c == '"':
			quoted = !quoted
		case !quoted && c == ',':
			return i
		}
	}
	return len(v)
}

// appendElem appends one list element (see appendList).
func appendElem(dst []byte, elem string, lower bool) []byte {
	quoted := false
	for i := 0; i < len(elem); i++ {
		c := elem[i]
		switch {
		case quoted:
			if c == '\\' && i+1 < len(elem) {
				dst = append(dst, c)
				i++
				c = elem[i]
			} else if c == '"' {
				quoted = false
			}
		case c == '"':
			quoted = true
		case isOWS(c):
			j := i
			for j < len(elem) && isOWS(elem[j]) {
				j++
			}
			if prev := len(dst) - 1; j < len(elem) && elem[j] == ';' || prev >= 0 && dst[prev] == ';' {
				i = j - 1
				continue
			}
		case lower && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// headerValues is h[http.CanonicalHeaderKey(name)] without allocating for names up to 64
// bytes: the canonical form is built on the stack, and a map index by string(bytes) does not
// copy.
func headerValues(h http.Header, name string) []string {
	var stack [64]byte
	if len(name) > len(stack) {
		return h[http.CanonicalHeaderKey(name)]
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isTchar(c) {
			return h[name] // not a valid field name: CanonicalHeaderKey leaves it as is
		}
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		stack[i] = c
		upper = c == '-'
	}
	return h[string(stack[:len(name)])]
}
