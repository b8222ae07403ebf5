package http1

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/internal/h1fields"
	"github.com/meridian-cdn/meridian/internal/httpdate"
	"golang.org/x/net/http/httpguts"
)

// bufferBeforeChunking is how much of a body without a declared length is held before the
// header is sent: a handler that finishes within it gets a Content-Length (as with net/http).
const bufferBeforeChunking = 2048

// response is the http.ResponseWriter of one request on the fast path. It frames the answer
// as net/http does (Content-Length or chunked, Date, Connection: close, Content-Type sniffing,
// no body for HEAD, 204 and 304) and writes the header and the body's first bytes in one
// system call, a large body beside the header with writev.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header
	head   bool // a HEAD request: the body is counted, not sent

	status      int
	wroteHeader bool  // a final status is set
	committed   bool  // the header is in the output
	cl          int64 // declared or computed Content-Length, -1 if none
	written     int64 // body bytes the handler wrote
	chunked     bool
	closeAfter  bool
	handlerDone bool
	pending     []byte // body bytes held before the header is committed
	block       []byte // fields serialised ahead (SetHeaderBlock), written after the map's
	fields      []byte // this answer's own fields, serialised (SetHeaderBlock), after block
}

func (w *response) Header() http.Header { return w.header }

// ValueScratch returns storage for the response header's value slices, the connection's,
// which the handler may use until it returns: a hit's dozen stored fields then need no
// allocation of their own (edge's objectHeader). Like the header map, it is reused for the
// connection's next request.
func (w *response) ValueScratch() []string { return w.c.values[:] }

// SetHeaderBlock adds fields serialised ahead of time, by HeaderBlock, to the answer, and
// fields, this answer's own, serialised as field lines (EndField), and declares the body's
// length, contentLength bytes: they are written after the header map's fields, so a hit needs
// no map entries at all (edge: a stored object's fields, serialised once per reader view; Age
// and Cache-Status, per answer). The map must hold none of their fields, nor Content-Length,
// and the status must allow a body. Call it before the header is written; block and fields
// must not change until the handler has returned.
func (w *response) SetHeaderBlock(block, fields []byte, contentLength int64) {
	if !w.wroteHeader {
		w.block, w.fields, w.cl = block, fields, contentLength
	}
}

func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// An interim response goes out at once; the final one follows.
		c := w.c
		c.out = appendStatusLine(c.out, code)
		for k, vv := range w.header {
			// As net/http, a field whose name is not a token is left out (a 1xx's fields
			// come from the origin as they are: ReverseProxy's, the edge's fills).
			if k == "Content-Length" || k == "Transfer-Encoding" || k == "Trailer" || !httpguts.ValidHeaderFieldName(k) {
				continue
			}
			c.out = appendField(c.out, k, vv)
		}
		c.out = append(c.out, "\r\n"...)
		c.flush()
		return
	}
	w.wroteHeader = true
	w.status = code
	if v := w.header["Content-Length"]; len(v) > 0 {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err == nil && n >= 0 {
			w.cl = n
		} else {
			w.c.srv.logf("http1: invalid Content-Length of %q", v[0])
			delete(w.header, "Content-Length")
		}
	}
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.c.werr != nil {
		return 0, w.c.werr
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed {
		if w.cl < 0 && len(w.pending)+len(p) <= bufferBeforeChunking {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		first := p
		if len(w.pending) > 0 {
			first = w.pending
		}
		w.commit(first)
		if len(w.pending) > 0 {
			w.writeBody(w.pending)
			w.pending = w.pending[:0]
		}
	}
	if w.head {
		return len(p), nil
	}
	n := w.writeBody(p)
	if w.c.werr != nil {
		// As io.Writer's contract asks, the bytes of p that went out before the failure: the
		// access log counts what the client may have received from Write's count.
		return n, w.c.werr
	}
	return len(p), nil
}

// Flush sends the header, if not yet sent, and every byte written so far.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(w.pending)
		if len(w.pending) > 0 && !w.head {
			w.writeBody(w.pending)
		}
		w.pending = w.pending[:0]
	}
	w.c.flush()
	return w.c.werr
}

// SetReadDeadline and SetWriteDeadline are for http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.rdlLost.Store(true)
	return w.c.nc.SetReadDeadline(t)
}

// SetWriteDeadline bounds the writes of this answer besides the send timeout
// (Server.WriteTimeout); it is cleared once the answer is written, as net/http does.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.wdlSet.Store(true)
	return w.c.setWriteDeadline(t)
}

// finish completes the answer once the handler has returned.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.handlerDone = true
	if !w.committed {
		w.commit(w.pending)
		if len(w.pending) > 0 && !w.head {
			w.writeBody(w.pending)
		}
	}
	if w.chunked {
		w.c.out = append(w.c.out, "0\r\n\r\n"...)
	}
	if !w.head && w.cl >= 0 && bodyAllowed(w.status) && w.written != w.cl {
		// Fewer bytes than declared: the client would wait for the rest, so the
		// connection ends with this answer.
		w.closeAfter = true
	}
	w.c.flush()
}

// writeBody writes body bytes after the header, framed if chunked, and returns how many of
// them went out or into the output (conn.write).
func (w *response) writeBody(p []byte) int {
	if w.head || len(p) == 0 {
		return 0
	}
	c := w.c
	if w.chunked {
		c.out = strconv.AppendInt(c.out, int64(len(p)), 16)
		c.out = append(c.out, "\r\n"...)
		n := c.write(p)
		c.out = append(c.out, "\r\n"...)
		return n
	}
	return c.write(p)
}

// commit puts the status line and header in the output. first is the body's first bytes, for
// Content-Type sniffing as net/http does it.
func (w *response) commit(first []byte) {
	w.committed = true
	h := w.header
	code := w.status
	te := ""
	if v := h["Transfer-Encoding"]; len(v) > 0 {
		te = v[0]
	}
	_, hasCL := h["Content-Length"]
	if w.handlerDone && te == "" && bodyAllowed(code) && !hasCL && (!w.head || len(first) > 0) {
		w.cl = int64(len(first))
	}
	if w.req.Close || w.c.srv.shuttingDown() || headerValue(h, "Connection") == "close" {
		w.closeAfter = true
	}
	var contentType string
	skipType := false
	if bodyAllowed(code) {
		_, haveType := h["Content-Type"]
		haveType = haveType || w.block != nil // HeaderBlock makes none without one
		if !haveType && headerValue(h, "Content-Encoding") == "" && te == "" && len(first) > 0 {
			contentType = http.DetectContentType(first)
		}
	} else {
		skipType = code == http.StatusNotModified
		w.cl = -1
	}
	setCL := w.cl >= 0 && !hasCL
	skipCL := !bodyAllowed(code)
	switch {
	case w.head || !bodyAllowed(code):
	case w.cl >= 0:
	case te == "identity":
		w.closeAfter = true
	default:
		w.chunked = true
	}
	if w.chunked {
		skipCL, setCL = true, false
	}
	skipConn := w.closeAfter && !hasToken(headerValue(h, "Connection"), "close")

	c := w.c
	c.out = appendStatusLine(c.out, code)
	for k, vv := range h {
		switch {
		case k == "Transfer-Encoding", // framing is the server's: chunked or none
			k == "Content-Length" && skipCL,
			k == "Content-Type" && skipType,
			k == "Connection" && skipConn,
			strings.HasPrefix(k, http.TrailerPrefix):
			continue
		}
		c.out = appendField(c.out, k, vv)
	}
	c.out = append(c.out, w.block...)
	c.out = append(c.out, w.fields...)
	if contentType != "" {
		c.out = append(append(append(c.out, "Content-Type: "...), contentType...), "\r\n"...)
	}
	if skipConn {
		c.out = append(c.out, "Connection: close\r\n"...)
	}
	if w.chunked {
		c.out = append(c.out, "Transfer-Encoding: chunked\r\n"...)
	}
	if setCL {
		c.out = strconv.AppendInt(append(c.out, "Content-Length: "...), w.cl, 10)
		c.out = append(c.out, "\r\n"...)
	}
	if _, ok := h["Date"]; !ok && w.block == nil { // HeaderBlock makes none without Date
		c.out = append(append(c.out, "Date: "...), httpdate.Now()...)
		c.out = append(c.out, "\r\n"...)
	}
	c.out = append(c.out, "\r\n"...)
}

// HeaderBlock serialises h for SetHeaderBlock, each field as commit writes it from the header
// map (appendField), so that an answer with the block is the answer with h in the map. It
// leaves out Content-Length, which SetHeaderBlock declares, and trailer declarations, which
// commit never writes. It returns nil, and the answer then needs the map, when h lacks Date
// or Content-Type (commit would add a Date, or sniff a type) or holds a field commit frames
// the answer by (Transfer-Encoding, Connection).
func HeaderBlock(h http.Header) []byte {
	_, date := h["Date"]
	_, ctype := h["Content-Type"]
	_, te := h["Transfer-Encoding"]
	_, conn := h["Connection"]
	if !date || !ctype || te || conn {
		return nil
	}
	block := make([]byte, 0, 512)
	for k, vv := range h {
		if k == "Content-Length" || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		block = appendField(block, k, vv)
	}
	return block
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// headerValue is h.Get for a canonical key.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// hasToken reports whether the comma-separated list v holds token (case-insensitive).
func hasToken(v, token string) bool {
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		if h1fields.EqualFold(h1fields.TrimOWS(t), token) {
			return true
		}
	}
	return false
}

// AppendField appends field k with values vv to out as HeaderBlock serialises it, a field
// line per value.
func AppendField(out []byte, k string, vv []string) []byte { return appendField(out, k, vv) }

// appendField writes a field line per value. A CR or LF in a value becomes a space and the
// value is trimmed, as net/http writes it: no value can start a field or a response of its own.
func appendField(out []byte, k string, vv []string) []byte {
	for _, v := range vv {
		out = append(out, k...)
		out = append(out, ": "...)
		start := len(out)
		out = EndField(append(out, h1fields.TrimOWS(v)...), start)
	}
	return out
}

// EndField ends a field line whose value was appended to out from start, as commit writes a
// field of the header map, for SetHeaderBlock's fields: CR and LF in the value become spaces,
// so that no value can end the field, and the line its CRLF. The value must have no leading or
// trailing whitespace.
func EndField(out []byte, start int) []byte {
	for i := start; i < len(out); i++ {
		if out[i] == '\r' || out[i] == '\n' {
			out[i] = ' '
		}
	}
	return append(out, "\r\n"...)
}

var statusLines [600]string

func init() {
	for code := 100; code < len(statusLines); code++ {
		if text := http.StatusText(code); text != "" {
			statusLines[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
}

func appendStatusLine(out []byte, code int) []byte {
	if code < len(statusLines) && statusLines[code] != "" {
		return append(out, statusLines[code]...)
	}
	out = strconv.AppendInt(append(out, "HTTP/1.1 "...), int64(code), 10)
	out = strconv.AppendInt(append(out, " status code "...), int64(code), 10)
	return append(out, "\r\n"...)
}

// HandlerState returns storage the handler may use from one request of the connection to the
// next (edge keeps its request state there): the connection answers one request at a time,
// and each answer is written out before the next request is read.
func (w *response) HandlerState() *any { return &w.c.state }
