package fetch

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/meridian-cdn/meridian/internal/h1fields"
	"golang.org/x/net/http/httpguts"
)

// readHead reads the answer to req, a GET, from what br already holds, if it is a head read
// in exactly one way: a final answer (200-599 but 204 and 304) in HTTP/1.1 with CRLF line
// ends, valid fields (h1fields), one Content-Length, and no field that makes net/http read it
// differently (Transfer-Encoding, Trailer, Pragma, a Connection with close). It returns the
// response and its body's length, the head consumed from br. For anything else, or a head
// not yet whole in the buffer, it returns ok false with nothing consumed, and
// http.ReadResponse reads it as it always has.
//
// Why: http.ReadResponse costs a dozen allocations per answer (a string per value, its reader,
// the body's framing); one string for the head and one array for the values do (issue 15).
// FuzzReadHead holds it to http.ReadResponse's reading of every head it accepts, but for one
// field: a "Connection: keep-alive" is left out (below).
func readHead(br *bufio.Reader, req *http.Request) (resp *http.Response, length int64, ok bool) {
	if req.Method != http.MethodGet {
		return nil, 0, false
	}
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, 0, false
	}
	// One string for the whole head: the status and every name and value are slices of it.
	s := string(buf[:end+2])
	line, rest, _ := h1fields.CutLine(s)
	status, code, ok := statusLine(line)
	if !ok {
		return nil, 0, false
	}
	length, lengths := -1, 0
	// Room for every field but a "Connection: keep-alive", which is left out below: most
	// servers send it on every answer, and a map of up to 8 fields is one group of slots where
	// more take a table (twice the bytes, two more allocations) for every field read from it.
	n := strings.Count(rest, "\n")
	if strings.Contains(rest, "\nConnection: keep-alive\r\n") || strings.HasPrefix(rest, "Connection: keep-alive\r\n") {
		n--
	}
	h := make(http.Header, n)
	ok = h1fields.ReadInto(h, make([]string, n), rest, func(key, value string) (keep, ok bool) {
		switch key {
		case "Content-Length":
			lengths++
			length = parseLength(value)
			return true, lengths == 1 && length >= 0
		case "Transfer-Encoding", "Trailer", "Pragma":
			return false, false
		case "Connection":
			// keep-alive alone says what HTTP/1.1 means anyway, and names no field to remove
			// (Keep-Alive is hop-by-hop whatever names it): every user of the answer would
			// only remove it (httpcache.RemoveHopByHop).
			if h1fields.EqualFold(value, "keep-alive") {
				return false, true
			}
			// net/http drops a Connection with close from the answer it reads; such a
			// connection is not kept either: it is left to net/http.
			return true, !httpguts.HeaderValuesContainsToken([]string{value}, "close")
		}
		return true, true
	})
	if !ok || length < 0 {
		return nil, 0, false
	}
	resp = &http.Response{
		Status:        status,
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: length,
		Request:       req,
	}
	if length == 0 {
		resp.Body = http.NoBody
	}
	br.Discard(end + 4)
	return resp, length, true
}

// statusLine reads "HTTP/1.1 200 OK": a three-digit final status but 204 and 304 (which
// have no body whatever they say), then nothing or one space and a reason of visible ASCII,
// spaces and tabs. The status is what http.Response.Status holds: code and reason.
func statusLine(line string) (status string, code int, ok bool) {
	const proto = "HTTP/1.1 "
	if len(line) < len(proto)+3 || line[:len(proto)] != proto {
		return "", 0, false
	}
	status = line[len(proto):]
	for i := 0; i < 3; i++ {
		c := status[i]
		if c < '0' || c > '9' {
			return "", 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return "", 0, false
	}
	if len(status) > 3 {
		if status[3] != ' ' {
			return "", 0, false
		}
		for i := 4; i < len(status); i++ {
			if c := status[i]; (c < ' ' || c > '~') && c != '\t' {
				return "", 0, false
			}
		}
	}
	return status, code, true
}

// parseLength reads a Content-Length of 1 to 18 digits (within int64, as net/http's 63 bits);
// -1 for anything else.
func parseLength(v string) int64 {
	if v == "" || len(v) > 18 {
		return -1
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// lengthBody reads a body of n bytes from br, as net/http reads one of a declared length: EOF
// with its last bytes, io.ErrUnexpectedEOF if the stream ends first.
type lengthBody struct {
	br *bufio.Reader
	n  int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close does nothing: the h1Body around it gives the connection back or closes it.
func (b *lengthBody) Close() error { return nil }

// errCodedHTTP10 is an HTTP/1.0 answer with Transfer-Encoding: its framing is faulty (RFC 9112
// §6.1), as a proxy answers a response framed faultily with 502 (§6.3).
var errCodedHTTP10 = errors.New("HTTP/1.0 answer with Transfer-Encoding (faulty framing, RFC 9112 §6.1)")

// errHiddenCoding is a Transfer-Encoding field that net/http did not read as one, having
// whitespace before its colon (RFC 9112 §5.1), in an answer without a Content-Length: it read
// the body to the connection's end, chunk sizes and all. nginx (since 1.21.1) refuses such a
// field from an upstream.
var errHiddenCoding = errors.New("a Transfer-Encoding field with whitespace before its colon (faulty framing, RFC 9112 §5.1)")

// framingFields says whether the answer head at the front of br has a Transfer-Encoding field
// and a Content-Length field, reading into br's buffer until the head is whole there (as
// http.ReadResponse would read it next) and consuming nothing. http.ReadResponse hides both
// cases that matter: it drops Transfer-Encoding from an HTTP/1.0 answer and frames the body
// by Content-Length or the connection's end (golang.org/issue/12785), so chunk sizes and all
// were read as the body, and stored; and it drops Content-Length beside Transfer-Encoding.
// long is a head larger than br's buffer, which is not looked at (readLongHead reads it); one
// cut short is not either: http.ReadResponse reports its error. Only heads readHead leaves to
// http.ReadResponse come here.
func framingFields(br *bufio.Reader) (te, cl, long bool) {
	from := 0 // where the search for the head's end goes on: what came before is no blank line
	for {
		buf, _ := br.Peek(br.Buffered())
		end, next := headEnd(buf, from)
		from = next
		if end >= 0 {
			te, cl = scanFraming(buf[:end])
			return te, cl, false
		}
		if len(buf) == br.Size() {
			return false, false, true
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return false, false, false
		}
	}
}

// readLongHead reads a head longer than br's buffer, through its blank line (as headEnd finds
// it), or as much as came before an error (the connection's end, MaxHeadBytes), which
// http.ReadResponse reports when it reads the head from what is returned.
func readLongHead(br *bufio.Reader) []byte {
	var head []byte
	first, start := true, true // in the status line; at the start of a line
	for {
		line, err := br.ReadSlice('\n')
		if start && !first && (string(line) == "\n" || string(line) == "\r\n") {
			return append(head, line...)
		}
		head = append(head, line...)
		if err != nil && err != bufio.ErrBufferFull {
			return head
		}
		if start = err == nil; start {
			first = false
		}
	}
}

// headEnd is the index of the blank line ending the head in b (CRLF or bare LF line ends, as
// http.ReadResponse reads them), -1 if b holds no whole head, searched for from b[from:], and
// where a search of a longer b (b and what followed it) goes on: each byte of a head that
// trickles in is looked at a bounded number of times, not once per read.
func headEnd(b []byte, from int) (end, next int) {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1, len(b) // no LF in b[i:]: none of it ends a line
		}
		i += j + 1
		rest := b[i:]
		if len(rest) > 0 && rest[0] == '\n' || len(rest) > 1 && rest[0] == '\r' && rest[1] == '\n' {
			return i, i
		}
		if len(rest) < 2 { // the line after this LF may yet be blank: look again from the LF
			return -1, i - 1
		}
	}
}

// scanFraming says whether a field line of head (past its status line) is named
// Transfer-Encoding, and whether one is named Content-Length; a continuation line (obs-fold)
// names no field. Whitespace before the colon, which net/http keeps in the name (so that it
// ignores such a Transfer-Encoding), does not hide it: RFC 9112 §5.1 has a proxy remove it.
func scanFraming(head []byte) (te, cl bool) {
	te, cl, _ = framingOf(head)
	return te, cl
}

// framingOf is scanFraming that also says whether a Transfer-Encoding field is named so
// exactly, without whitespace before its colon: one net/http sees (framingConn).
func framingOf(head []byte) (te, cl, named bool) {
	_, fields, _ := bytes.Cut(head, []byte("\n"))
	for len(fields) > 0 {
		var line []byte
		line, fields, _ = bytes.Cut(fields, []byte("\n"))
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || name[0] == ' ' || name[0] == '\t' {
			continue
		}
		trimmed := bytes.TrimRight(name, " \t")
		switch len(trimmed) {
		case len("Transfer-Encoding"):
			if h1fields.EqualFold(string(trimmed), "Transfer-Encoding") {
				te = true
				named = named || len(trimmed) == len(name)
			}
		case len("Content-Length"):
			cl = cl || h1fields.EqualFold(string(trimmed), "Content-Length")
		}
	}
	return te, cl, named
}
