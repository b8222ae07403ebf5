package http1

import (
	"bytes"
	"net/http"
	"net/url"

	"github.com/meridian-cdn/meridian/internal/h1fields"
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
	skip   int  // the length of the empty lines before the request line
}

// parseHead reads one request head from buf, the bytes buffered so far. It accepts only what
// it can read in exactly one way: a GET or HEAD in origin form, HTTP/1.1, CRLF line ends,
// valid field names and values, one Host, and no field that frames a body or changes the
// connection (Content-Length, Transfer-Encoding, Expect, Upgrade, a Connection other than
// keep-alive or close). Everything else is handed off before a byte is consumed, so that
// net/http answers it exactly as it always has: the fast path never judges a doubtful request.
// Empty lines (CRLF) before the request line are skipped, as RFC 9112 §2.2 asks and nginx
// does (net/http refuses them, but after a POST); they are part of the head for its limit.
// It returns the head's length in buf, empty lines included; on a hand-off, the length of the
// empty lines alone, which are dropped first, so that Fallback reads the request from its
// first byte. The fields are read into hdr, which it clears first, with strs as their values'
// backing array (the connection's, reused request after request).
func parseHead(buf []byte, hdr http.Header, strs []string) (head, int, verdict) {
	skip := emptyLines(buf)
	buf = buf[skip:]
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		// A bare LF may end a line for net/http: hand such a client over at once rather
		// than wait for a CRLF CRLF that may never come.
		for i, c := range buf {
			if c == '\n' && (i == 0 || buf[i-1] != '\r') {
				return head{}, skip, handOff
			}
		}
		return head{}, 0, incomplete
	}
	n := skip + end + 4
	block := buf[:end+2] // every line with its CRLF
	// One string for the whole head: field names and values are slices of it.
	s := string(block)
	line, rest, _ := h1fields.CutLine(s)
	h := head{skip: skip}
	var ok bool
	if h.method, h.target, ok = requestLine(line); !ok {
		return head{}, skip, handOff
	}
	hosts := 0
	clear(hdr)
	h.header = hdr
	ok = h1fields.ReadInto(hdr, strs, rest, func(key, value string) (keep, ok bool) {
		switch key {
		case "Host":
			hosts++
			if hosts > 1 || !httpguts.ValidHostHeader(value) {
				return false, false
			}
			h.host = value
			return false, true
		case "Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Http2-Settings", "Trailer":
			return false, false
		case "Connection":
			switch {
			case h1fields.EqualFold(value, "close"):
				h.close = true
			case h1fields.EqualFold(value, "keep-alive"):
			default:
				return false, false
			}
		}
		return true, true
	})
	if !ok || hosts != 1 {
		return head{}, skip, handOff
	}
	return h, n, fast
}

// emptyLines returns the length of the empty lines (CRLF) at the start of buf.
func emptyLines(buf []byte) int {
	n := 0
	for len(buf)-n >= 2 && buf[n] == '\r' && buf[n+1] == '\n' {
		n += 2
	}
	return n
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

// parseTarget parses an origin-form target (one requestLine accepted) as url.ParseRequestURI
// does. The usual target, a path of unreserved characters and sub-delimiters with or without a
// query, is parsed into u with no allocation (issue 15); anything else, such as a
// percent-encoded path, is left to url.ParseRequestURI. FuzzParseHead holds the two equal.
func parseTarget(target string, u *url.URL) (*url.URL, error) {
	path, query, hasQuery := target, "", false
	for i := 0; i < len(target); i++ {
		c := target[i]
		if c == '?' {
			path, query, hasQuery = target[:i], target[i+1:], true
			break
		}
		if !plainPathByte[c] {
			return url.ParseRequestURI(target)
		}
	}
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return u, nil
}

// plainPathByte holds the bytes that url.URL keeps in a path as they are: with only these,
// Path is the target's path and RawPath is empty.
var plainPathByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()
