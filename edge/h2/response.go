package h2

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-cdn/meridian/internal/httpdate"
)

// responseWriter is a stream's http.ResponseWriter. It frames the answer as net/http's HTTP/2
// server does: Date and Content-Type (sniffed) when the handler sets none, no body for HEAD,
// 204 and 304, END_STREAM on the last DATA frame when the body reaches its Content-Length.
type responseWriter struct {
	st     *stream
	header http.Header
	values *[16]string // ValueScratch's, recycled with header
	head   bool

	status      int
	wroteHeader bool  // a final status is set
	sentHeader  bool  // the HEADERS frame is out (guarded by the connection's mu)
	endSent     bool  // END_STREAM is out
	cl          int64 // declared Content-Length, -1 if none
	written     int64
	pending     []byte   // body bytes held before the header is sent (for HEAD: its start)
	trailers    []string // trailer fields declared in Trailer at WriteHeader, canonical
}

// bufferBeforeHeader is how much of a body without a declared length is held before the
// header is sent: a handler that finishes within it gets a Content-Length (as with net/http).
// sniffLen is what http.DetectContentType reads.
const (
	bufferBeforeHeader = 2048
	sniffLen           = 512
)

var errTooLong = errors.New("h2: handler wrote more than the declared Content-Length")

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// ValueScratch returns storage for the response header's value slices, which the handler may
// use until it returns: a hit's dozen stored fields then need no allocation of their own
// (edge's objectHeader). Like the header map, it is recycled for a later stream once the
// handler returned and the header is encoded.
func (w *responseWriter) ValueScratch() []string {
	if w.values == nil {
		w.values = new([16]string)
	}
	return w.values[:]
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	c := w.st.c
	if code < 200 {
		if code == http.StatusSwitchingProtocols {
			return // there is no upgrade in HTTP/2
		}
		// An interim response goes out at once; the final one follows.
		c.mu.Lock()
		if !w.st.reset && !c.closing {
			c.writeHeaderBlockLocked(w.st, c.encodeHeaderLocked(code, w.header, "", "", true, nil), false)
			c.flushLocked()
		}
		c.mu.Unlock()
		return
	}
	w.wroteHeader = true
	w.status = code
	for _, v := range w.header["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			w.declareTrailer(http.CanonicalHeaderKey(strings.TrimSpace(k)))
		}
	}
	if v := w.header["Content-Length"]; len(v) > 0 {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err == nil && n >= 0 {
			w.cl = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	return w.write(p, "")
}

func (w *responseWriter) WriteString(s string) (int, error) {
	return w.write(nil, s)
}

func (w *responseWriter) write(p []byte, s string) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n := len(p) + len(s)
	if n == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(n) > w.cl {
		return 0, errTooLong
	}
	if !w.sentHeader && w.cl < 0 && len(w.pending)+n <= bufferBeforeHeader {
		// Held: a handler that ends within it gets a Content-Length, as with net/http.
		if p != nil {
			w.pending = append(w.pending, p...)
		} else {
			w.pending = append(w.pending, s...)
		}
		w.written += int64(n)
		return n, nil
	}
	if w.head {
		if len(w.pending) < sniffLen {
			if p == nil {
				p = []byte(s[:min(len(s), sniffLen)])
			}
			w.pending = append(w.pending, p[:min(len(p), sniffLen)]...) // for the Content-Type
		}
		w.written += int64(n)
		return n, nil // counted, not sent
	}
	if p == nil {
		p = []byte(s)
	}
	end := w.cl >= 0 && w.written+int64(n) == w.cl && len(w.trailers) == 0
	c := w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.st.reset || c.closing {
		return 0, errStreamClosed
	}
	if !w.sentHeader {
		if err := w.sendHeaderLocked(p, false, "", true); err != nil {
			return 0, err
		}
	}
	if sent, err := c.writeDataLocked(w.st, p, end); err != nil {
		// As io.Writer asks, the bytes of p that went out before the failure: the access
		// log counts what the client may have received from Write's count.
		return sent, err
	}
	w.written += int64(n)
	if end {
		w.endSent = true
		c.localEndLocked(w.st)
		if c.inline != w.st {
			// A whole answer from a handler off the reader (which may go on working, or
			// wait) leaves now; on the reader, it leaves with the batch.
			c.flushLocked()
		}
	}
	return n, nil
}

// Flush sends the header if it is not out and writes what the connection has gathered.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.st.c
	c.mu.Lock()
	if !w.st.reset && !c.closing {
		if !w.sentHeader {
			w.sendHeaderLocked(nil, false, "", true)
		}
		c.dirty = true
		c.flushLocked()
	}
	c.mu.Unlock()
}

// SetReadDeadline bounds the reading of the request body (http.ResponseController): reads
// fail with os.ErrDeadlineExceeded from t on.
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	c := w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := w.st.body; b != nil {
		b.setReadDeadline(t)
	}
	return nil
}

// FlushError is Flush that says whether the stream is still there (http.ResponseController).
// A whole answer is not failed by the RST_STREAM NO_ERROR that followed it (localEndLocked).
// A failed write to the client fails it at once, not only once the reader has seen the
// connection end: a handler streaming a long answer stops there.
func (w *responseWriter) FlushError() error {
	w.Flush()
	c := w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if w.st.reset && !w.endSent || c.closing {
		return errStreamClosed
	}
	return nil
}

// finish ends the response when the handler returns: with a HEADERS frame of trailers when
// the handler set any (as net/http's HTTP/2 server: the fields named in Trailer when the
// header was written, and those set with http.TrailerPrefix).
func (w *responseWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.st.reset || c.closing || w.endSent {
		return
	}
	trailers := !w.head && w.promoteTrailers()
	switch {
	case !w.sentHeader && !w.head && w.cl > 0 && w.written < w.cl && bodyAllowed(w.status):
		// A declared body never written (an object whose read failed): not a whole answer.
		c.resetLocked(w.st.id, http2.ErrCodeInternal)
		return
	case !w.sentHeader:
		// Everything the handler wrote is held: its length is the Content-Length.
		var cl string
		if w.cl < 0 && bodyAllowed(w.status) && w.written <= bufferBeforeHeader && (w.written > 0 || !w.head) {
			cl = strconv.FormatInt(w.written, 10)
		}
		if w.head || len(w.pending) == 0 {
			if w.sendHeaderLocked(nil, !trailers, cl, false) != nil || !trailers {
				return
			}
			break
		}
		if w.sendHeaderLocked(nil, false, cl, false) != nil {
			return
		}
		if _, err := c.writeDataLocked(w.st, w.pending, !trailers); err != nil {
			return
		}
		w.pending = nil
	case !w.head && w.cl >= 0 && w.written < w.cl:
		// A body shorter than its Content-Length: the client must not take it as whole.
		c.resetLocked(w.st.id, http2.ErrCodeInternal)
		return
	case !trailers:
		if _, err := c.writeDataLocked(w.st, nil, true); err != nil {
			return
		}
	}
	if trailers {
		c.writeHeaderBlockLocked(w.st, c.encodeTrailersLocked(w.trailers, w.header), true)
	}
	w.endSent = true
	c.localEndLocked(w.st)
}

// declareTrailer adds k to the trailer fields, unless HTTP forbids it in a trailer.
func (w *responseWriter) declareTrailer(k string) {
	if !httpguts.ValidTrailerHeader(k) || slices.Contains(w.trailers, k) {
		return
	}
	w.trailers = append(w.trailers, k)
}

// promoteTrailers declares the fields set with http.TrailerPrefix as trailers, and reports
// whether any trailer field has a value.
func (w *responseWriter) promoteTrailers() bool {
	for k, vv := range w.header {
		if !strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		name := http.CanonicalHeaderKey(k[len(http.TrailerPrefix):])
		w.declareTrailer(name)
		w.header[name] = vv
	}
	for _, k := range w.trailers {
		if len(w.header[k]) > 0 {
			return true
		}
	}
	return false
}

// sendHeaderLocked writes the response's HEADERS and, if sendHeld (and not for HEAD), the
// body bytes held so far; next is what the handler writes now (with the held bytes, the start
// of the body, from which a missing Content-Type is sniffed). cl, if set, is the
// Content-Length to declare.
func (w *responseWriter) sendHeaderLocked(next []byte, endStream bool, cl string, sendHeld bool) error {
	w.sentHeader = true
	c := w.st.c
	var ctype string
	if _, ok := w.header["Content-Type"]; !ok && bodyAllowed(w.status) && w.header.Get("Content-Encoding") == "" {
		start := w.pending
		if len(start) < sniffLen && len(next) > 0 {
			start = append(start[:len(start):len(start)], next[:min(len(next), sniffLen-len(start))]...)
		}
		if len(start) > 0 {
			ctype = http.DetectContentType(start)
		}
	}
	c.writeHeaderBlockLocked(w.st, c.encodeHeaderLocked(w.status, w.header, ctype, cl, false, w.trailers), endStream)
	if endStream {
		w.endSent = true
		c.localEndLocked(w.st)
		return nil
	}
	if sendHeld && len(w.pending) > 0 && !w.head {
		if _, err := c.writeDataLocked(w.st, w.pending, false); err != nil {
			return err
		}
		w.pending = nil
	}
	return nil
}

// encodeHeaderLocked HPACK-encodes a response header block. Connection-specific fields are
// left out (they are malformed in HTTP/2), as are fields with invalid names or values, and the
// trailer fields (named in trailers, or set with http.TrailerPrefix), which go at the end.
func (c *conn) encodeHeaderLocked(status int, h http.Header, ctype, cl string, interim bool, trailers []string) []byte {
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusValue(status)})
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || slices.Contains(trailers, k) {
			continue
		}
		lk := c.lowerHeader(k)
		switch lk {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			continue
		case "content-length", "trailer":
			if interim {
				continue
			}
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue
			}
			c.enc.WriteField(hpack.HeaderField{Name: lk, Value: v})
		}
	}
	if ctype != "" {
		c.enc.WriteField(hpack.HeaderField{Name: "content-type", Value: ctype})
	}
	if _, ok := h["Content-Length"]; cl != "" && !ok { // unless set after WriteHeader
		c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: cl})
	}
	if !interim {
		if _, ok := h["Date"]; !ok {
			c.enc.WriteField(hpack.HeaderField{Name: "date", Value: httpdate.Now()})
		}
	}
	return c.hbuf.Bytes()
}

// encodeTrailersLocked HPACK-encodes a trailer block: the values of the fields named in keys.
func (c *conn) encodeTrailersLocked(keys []string, h http.Header) []byte {
	c.hbuf.Reset()
	for _, k := range keys {
		lk := c.lowerHeader(k)
		for _, v := range h[k] {
			if httpguts.ValidHeaderFieldValue(v) {
				c.enc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	return c.hbuf.Bytes()
}

// encodeStatusOnly encodes a header block of a status alone (431, 100 Continue).
func (c *conn) encodeStatusOnly(status int) []byte {
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusValue(status)})
	return c.hbuf.Bytes()
}

// lowerHeader is a field name as HTTP/2 sends it; common names cost no allocation.
func (c *conn) lowerHeader(k string) string {
	if v, ok := commonLower[k]; ok {
		return v
	}
	if v, ok := c.lowerCache[k]; ok {
		return v
	}
	v := strings.ToLower(k)
	if c.lowerCache == nil {
		c.lowerCache = map[string]string{}
	}
	if len(c.lowerCache) < 64 {
		c.lowerCache[k] = v
	}
	return v
}

var commonLower = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges", "Age",
		"Access-Control-Allow-Credentials", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods",
		"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
		"Allow", "Alt-Svc", "Authorization", "Cache-Control", "Cache-Status", "Cdn-Cache-Control",
		"Connection", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Location", "Content-Range", "Content-Security-Policy", "Content-Type", "Cookie", "Date",
		"Etag", "Expect", "Expires", "Keep-Alive", "Last-Modified", "Link", "Location",
		"Proxy-Connection", "Range", "Referrer-Policy", "Retry-After", "Server", "Server-Timing",
		"Set-Cookie", "Strict-Transport-Security", "Surrogate-Control", "Surrogate-Key", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade", "User-Agent", "Vary", "Via", "Www-Authenticate",
		"X-Cache", "X-Content-Type-Options", "X-Frame-Options", "X-Request-Id", "Traceparent",
	} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

func statusValue(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 206:
		return "206"
	case 304:
		return "304"
	case 404:
		return "404"
	}
	return strconv.Itoa(code)
}

// bodyAllowed reports whether a status may carry a body (RFC 9110, section 6.4.1).
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
