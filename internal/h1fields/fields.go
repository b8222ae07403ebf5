// Package h1fields reads the lines of an HTTP/1.1 head (RFC 9112 §2.2, §5) the one way they
// can be read, for the fast paths that read heads without net/http: edge/http1 (requests from
// clients) and origin/fetch (responses from upstreams).
//
// It owns only the strict subset: CRLF line ends, no obs-fold, valid field names and values.
// Whatever it refuses, its callers hand to net/http, which answers as it always has, so a
// fast path never has to judge a doubtful head.
package h1fields

import (
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"
)

// CutLine cuts s at its first CRLF; a line with a CR or LF of its own is refused.
func CutLine(s string) (line, rest string, ok bool) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				return s[:i], s[i+2:], true
			}
			return "", "", false
		case '\n':
			return "", "", false
		}
	}
	return "", "", false
}

// Check looks at one field (its name canonical, its value without surrounding whitespace):
// keep false leaves it out of the header, ok false refuses the whole head.
type Check func(key, value string) (keep, ok bool)

// Read parses lines, the field lines of a head each with its CRLF (and no empty line), into a
// header whose names are canonical, as net/textproto reads them: values of a repeated name in
// order, every value a slice of lines, one backing array for the values. check, if not nil,
// sees each field first. It refuses (ok false) a line without a colon, an invalid name or
// value, obs-fold (a line starting with whitespace) and a CR or LF out of place.
func Read(lines string, check Check) (h http.Header, ok bool) {
	n := countLines(lines)
	h = make(http.Header, n)
	if !ReadInto(h, make([]string, n), lines, check) {
		return nil, false
	}
	return h, true
}

// ReadInto is Read into h, an empty header, with strs as the values' backing array (once it is
// used up, one more is made for the fields left): a server reading one request after another
// on a connection reuses both, and reads a head with no allocation (issue 15). On a refusal h
// holds the fields read before it.
func ReadInto(h http.Header, strs []string, lines string, check Check) (ok bool) {
	for lines != "" {
		var line string
		if line, lines, ok = CutLine(lines); !ok {
			return false
		}
		colon := -1
		for i := 0; i < len(line); i++ {
			if line[i] == ':' {
				colon = i
				break
			}
		}
		if colon <= 0 {
			return false
		}
		name, value := line[:colon], TrimOWS(line[colon+1:])
		if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return false
		}
		key := CanonicalKey(name)
		if check != nil {
			keep, ok := check(key, value)
			if !ok {
				return false
			}
			if !keep {
				continue
			}
		}
		vv := h[key]
		if vv == nil {
			if len(strs) == 0 {
				strs = make([]string, 1+countLines(lines)) // this field and the lines left
			}
			strs[0] = value
			h[key], strs = strs[:1:1], strs[1:]
		} else {
			h[key] = append(vv, value)
		}
	}
	return true
}

// countLines is the number of field lines in lines: at most one field each.
func countLines(lines string) int {
	n := 0
	for i := 0; i < len(lines); i++ {
		if lines[i] == '\n' {
			n++
		}
	}
	return n
}

// TrimOWS trims optional whitespace (spaces and tabs) from both ends of s.
func TrimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// CanonicalKey returns name in canonical form, without allocating when it already is.
func CanonicalKey(name string) string {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return textproto.CanonicalMIMEHeaderKey(name)
		}
		upper = c == '-'
	}
	return name
}

// EqualFold reports whether ASCII strings a and b are equal ignoring case.
func EqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
