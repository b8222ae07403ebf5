package wire

import (
	"net/url"
	"strings"
)

// EscapedPath is u's path as its request target spelt it, with only the bytes a URL path may not
// hold raw percent-encoded (upper-case hex), as url.URL.EscapedPath does for a path it keeps as
// given: every pchar of RFC 3986 and '/' stay as they are, and so do the percent-encodings,
// '[' and ']'. url.URL.EscapedPath instead escapes the decoded path again when the raw one
// holds such a byte, which turns an encoded "/" into a real one: "/a%2Fb|c" (as browsers send
// '|') gave "/a/b%7Cc", another resource. Edges key and forward the form this returns, and
// purges name paths in it, so both spell one URL alike.
func EscapedPath(u *url.URL) string {
	raw := u.RawPath
	if raw == "" {
		return u.EscapedPath() // Path escaped as url does is the target's spelling
	}
	if p, err := url.PathUnescape(raw); err != nil || p != u.Path {
		return u.EscapedPath() // RawPath is stale: Path was set since
	}
	n := 0
	for i := 0; i < len(raw); i++ {
		if mustEscapeInPath(raw[i]) {
			n++
		}
	}
	if n == 0 {
		return raw
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(raw) + 2*n)
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !mustEscapeInPath(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// mustEscapeInPath reports whether c cannot stand raw in an escaped path: anything but the
// unreserved characters, sub-delimiters, ':', '@', '/', '%' (of an escape) and the '[' and ']'
// that url keeps (its validEncoded).
func mustEscapeInPath(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return false
	}
	return !strings.ContainsRune("-._~!$&'()*+,;=:@/%[]", rune(c))
}

// HasDotSegment reports whether the decoded path p has a "." or ".." segment. The edge answers
// 400 to such a request target, which could address something other than what its cache key
// says, and so stores nothing under it; a purge naming one is refused, since it would be acked
// and match nothing, while the operator meant the path it resolves to.
func HasDotSegment(p string) bool {
	for p != "" {
		seg, rest, _ := strings.Cut(p, "/")
		if seg == "." || seg == ".." {
			return true
		}
		p = rest
	}
	return false
}
