package http1

import (
	"bytes"
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"
)

// verdict is what the parser makes of the bytes buffered so far.
type verdict int

const (
	incomplete verdict = iota // no end of head yet: read more
	fast                      // a request the fast path serves
	handOff                   // anything else: net/http's to answer
)

// head is a parsed request head: a GET or HEAD without a body, in origin form, HTTP/1.1.
type head struct {
	method string
	target string
	host   string
	header http.Header
	close  bool // the client sent Connection: close
}

// parseHead reads one request head from buf, the bytes buffered so far. It accepts only what
// it can read in exactly one way: a GET or HEAD in origin form, HTTP/1.1, CRLF line ends,
// valid field names and values, one Host, and no field that frames a body or changes the
// connection (Content-Length, Transfer-Encoding, Expect, Upgrade, a Connection other than
// keep-alive or close). Everything else is handed off before a byte is consumed, so that
// net/http answers it exactly as it always has: the fast path never judges a doubtful request.
// It returns the head's length in buf.
func parseHead(buf []byte) (head, int, verdict) {
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		// A bare LF may end a line for net/http: hand such a client over at once rather
		// than wait for a CRLF CRLF that may never come.
		for i, c := range buf {
			if c == '\n' && (i == 0 || buf[i-1] != '\r') {
				return head{}, 0, handOff
			}
		}
		return head{}, 0, incomplete
	}
	n := end + 4
	block := buf[:end+2] // every line with its CRLF
	// One string for the whole head: field names and values are slices of it.
	s := string(block)
	line, rest, _ := cutLine(s)
	var h head
	var ok bool
	if h.method, h.target, ok = requestLine(line); !ok {
		return head{}, 0, handOff
	}
	lines := 0
	for i := 0; i < len(rest); i++ {
		if rest[i] == '\n' {
			lines++
		}
	}
	h.header = make(http.Header, lines)
	strs := make([]string, lines) // one backing array for the values, as net/http does
	hosts := 0
	for rest != "" {
		line, rest, ok = cutLine(rest)
		if !ok {
			return head{}, 0, handOff
		}
		colon := -1
		for i := 0; i < len(line); i++ {
			if line[i] == ':' {
				colon = i
				break
			}
		}
		if colon <= 0 {
			return head{}, 0, handOff
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return head{}, 0, handOff
		}
		key := canonicalKey(name)
		switch key {
		case "Host":
			hosts++
			if hosts > 1 || !httpguts.ValidHostHeader(value) {
				return head{}, 0, handOff
			}
			h.host = value
			continue
		case "Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Http2-Settings", "Trailer":
			return head{}, 0, handOff
		case "Connection":
			switch {
			case asciiEqualFold(value, "close"):
				h.close = true
			case asciiEqualFold(value, "keep-alive"):
			default:
				return head{}, 0, handOff
			}
		}
		vv := h.header[key]
		if vv == nil && len(strs) > 0 {
			strs[0] = value
			h.header[key], strs = strs[:1:1], strs[1:]
		} else {
			h.header[key] = append(vv, value)
		}
	}
	if hosts != 1 {
		return head{}, 0, handOff
	}
	return h, n, fast
}

// requestLine splits "GET /path HTTP/1.1"; only GET and HEAD in origin form are accepted.
func requestLine(line string) (method, target string, ok bool) {
	switch {
	case len(line) > 4 && line[:4] == "GET ":
		method, line = http.MethodGet, line[4:]
	case len(line) > 5 && line[:5] == "HEAD ":
		method, line = http.MethodHead, line[5:]
	default:
		return "", "", false
	}
	const version = " HTTP/1.1"
	if len(line) <= len(version) || line[len(line)-len(version):] != version {
		return "", "", false
	}
	target = line[:len(line)-len(version)]
	if target[0] != '/' {
		return "", "", false
	}
	for i := 0; i < len(target); i++ {
		// Visible ASCII only; a fragment has no place in a request target.
		if c := target[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return "", "", false
		}
	}
	return method, target, true
}

// cutLine cuts s at its first CRLF; a line with a CR or LF of its own is refused.
func cutLine(s string) (line, rest string, ok bool) {
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

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// canonicalKey returns name in canonical form, without allocating when it already is.
func canonicalKey(name string) string {
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

func asciiEqualFold(a, b string) bool {
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
