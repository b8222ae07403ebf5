package h2

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-cdn/meridian/internal/h1fields"
)

// stream is one request and its response. Its fields are guarded by the connection's mu,
// except rw's own state, which only the handler touches.
type stream struct {
	c      *conn
	id     uint32
	req    *http.Request
	ctx    context.Context
	cancel context.CancelFunc
	body   *requestBody // nil for a request that ended with its HEADERS
	rw     responseWriter
	url    url.URL // the request's URL when requestURL parsed it

	sendWindow  int64
	recvWindow  int64
	recvUnacked int64
	declaredLen int64 // the request's Content-Length, -1 if none
	// bad: the request is malformed in a way that is answered 400, its handler never called
	// (RFC 9113, sections 8.1.1 and 8.2.1), rather than reset.
	bad        malformed
	gotLen     int64
	remoteDone bool // the client sent END_STREAM
	localDone  bool // the response ended
	reset      bool // reset by either side, or the connection closed
	handedOff  bool // the handler ran inline and gave the reading away
}

// newStream makes the stream and its request from a HEADERS frame, or returns nil if the
// request is malformed (a stream error of type PROTOCOL_ERROR, RFC 9113 section 8.1.1).
func (c *conn) newStream(id uint32, f *http2.MetaHeadersFrame) *stream {
	var method, path, scheme, authority string
	hasAuthority := false
	var bad malformed // the fault that is answered 400 (openLocked): the first, or a forbidden field
	for _, hf := range f.PseudoFields() {
		v := hf.Value
		if edgeSpace(v) {
			// Section 8.2.1 holds for pseudo-fields' values too. Answered 400, as nginx answers
			// it: curl sends such a value (-X "GET ", --request-target "/x ") and reported the
			// reset as a stream error. The request is read without the white space, so that its
			// other faults still get the reset, and the answer is logged with its target.
			bad = cmp.Or(bad, badPseudoSpace)
			v = strings.Trim(v, " \t")
		}
		switch hf.Name {
		case ":method":
			method = v
		case ":path":
			path = v
		case ":scheme":
			scheme = v
		case ":authority":
			authority, hasAuthority = v, true
		default: // :status, or :protocol, which we do not allow (no SETTINGS_ENABLE_CONNECT_PROTOCOL)
			return nil
		}
	}
	isConnect := method == http.MethodConnect
	if isConnect {
		if path != "" || scheme != "" || authority == "" {
			return nil
		}
	} else if method == "" || path == "" || path[0] != '/' && path != "*" || scheme != "https" && scheme != "http" {
		return nil // an origin-form :path, or "*" (section 8.3.1), as x/net's server requires
	}
	regular := f.RegularFields()
	header := make(http.Header, len(regular))
	values := make([]string, len(regular)) // one backing array for the common one-value fields
	cookies := 0
	for i, hf := range regular {
		if malformedName(hf) {
			// Malformed (section 8.2.2), answered 400: Go's client sends a TE other than
			// trailers as given, and retried the request reset with PROTOCOL_ERROR on a new
			// connection without end. nginx serves it. The field is not kept.
			bad = badConnectionField // over any other: its answer ends with the reset h2spec looks for
			continue
		}
		if edgeSpace(hf.Value) {
			// Malformed too (section 8.2.1), but answered 400 rather than reset, as that
			// section asks: Go's client retries a request reset with PROTOCOL_ERROR on a new
			// connection, and sends such values (openLocked). The fields after it are still
			// checked: a fault that is reset still is. One test of the value per field: a
			// valid one costs no more than before d79979a.
			bad = cmp.Or(bad, badValueSpace)
		}
		if hf.Name == "cookie" {
			cookies++
		}
		key := http.CanonicalHeaderKey(hf.Name)
		if vv, ok := header[key]; ok {
			header[key] = append(vv, hf.Value)
			continue
		}
		values[i] = hf.Value
		header[key] = values[i : i+1 : i+1]
	}
	if cookies > 1 {
		// Cookie crumbs are joined back into one field (section 8.2.3).
		header["Cookie"] = []string{strings.Join(header["Cookie"], "; ")}
	}
	if hasAuthority && authority == "" {
		// Present but empty: the target URI has an empty host, which an http(s) URI may
		// not have (RFC 9110, section 4.2.1), and Host must not stand in for it (RFC 9113,
		// section 8.3.1: not when :authority is present).
		return nil
	}
	if host, ok := header["Host"]; ok {
		// Host may be sent beside :authority only naming the same entity, and only once
		// (RFC 9113, section 8.3.1): a front end and the edge must never read two
		// different hosts. The two are compared after scheme-based normalization, as that
		// section requires of a server that is not the origin; the host is :authority's.
		// As with net/http, Host leaves the header for r.Host.
		if len(host) != 1 || hasAuthority && !sameAuthority(scheme, authority, host[0]) {
			return nil
		}
		if !hasAuthority {
			authority = host[0]
		}
		delete(header, "Host")
	}
	// No userinfo in an http(s) authority, and nothing a host cannot hold (section 8.3.1).
	if authority != "" && (!httpguts.ValidHostHeader(authority) || !isConnect && strings.IndexByte(authority, '@') >= 0) {
		return nil
	}
	var u *url.URL
	var plain url.URL // the URL of a plain path, held in the stream: no allocation of its own
	requestURI := path
	switch {
	case isConnect:
		u = &url.URL{Host: authority}
		requestURI = authority
	case requestURL(path, &plain): // u points at the stream's copy of it, once st exists
	case strings.IndexByte(path, ' ') >= 0:
		// No request-target holds a space (RFC 9110 section 4.1): an invalid :path makes the
		// request malformed (section 8.3.1). net/url takes it, and it went upstream as "%20".
		// Answered 400, as nginx answers it: Go's client sends such a :path (URL.Opaque) and
		// retried the reset request on a new connection without end. requestURL takes no
		// path with a space: the plain path is not scanned again.
		bad = cmp.Or(bad, badTargetSpace)
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil
		}
	default:
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil
		}
	}
	declared := int64(-1)
	if vv := header["Content-Length"]; len(vv) > 0 {
		n, err := strconv.ParseInt(vv[0], 10, 64)
		if err != nil || n < 0 || vv[0][0] < '0' || vv[0][0] > '9' {
			return nil // a sign is no digit (RFC 9110, section 8.6)
		}
		for _, v := range vv[1:] {
			if v != vv[0] {
				return nil
			}
		}
		declared = n
	}
	endStream := f.StreamEnded()
	if endStream && declared > 0 {
		return nil // a length the request cannot have
	}

	st := &stream{
		c:           c,
		id:          id,
		sendWindow:  c.peerWindow,
		recvWindow:  recvStreamWindow,
		declaredLen: declared,
		remoteDone:  endStream,
		bad:         bad,
	}
	st.ctx, st.cancel = context.WithCancel(c.ctx)
	if u == nil {
		st.url = plain
		u = &st.url
	}
	req := http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     header,
		Host:       authority,
		RemoteAddr: c.remoteAddr,
		RequestURI: requestURI,
		TLS:        c.tlsState,
		Body:       http.NoBody,
	}
	if !endStream {
		st.body = &requestBody{st: st, needContinue: httpguts.HeaderValuesContainsToken(header["Expect"], "100-continue")}
		req.Body = st.body
		req.ContentLength = declared
	}
	st.req = req.WithContext(st.ctx)
	st.rw = responseWriter{st: st, head: method == http.MethodHead, cl: -1, header: c.takeHeaderLocked(), values: c.takeValuesLocked()}
	return st
}

// malformedName reports whether a regular field makes a request malformed in HTTP/2 (RFC
// 9113, section 8.2), in its header or its trailers, whatever its value's white space: a
// connection-specific field, or TE other than "trailers" (section 8.2.2; in any case, as RFC
// 9110 section 10.1.4 spells it in ABNF, whose literals are case-insensitive: nginx and
// Varnish take "Trailers" too). A value that starts or ends with white space (edgeSpace)
// makes it malformed too, but is answered rather than reset (the decoder has refused the
// other invalid values).
func malformedName(hf hpack.HeaderField) bool {
	switch hf.Name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		return true
	case "te":
		return !h1fields.EqualFold(hf.Value, "trailers")
	}
	return false
}

// malformed is a fault of a request that is answered 400 rather than reset; 0 is none.
type malformed uint8

const (
	badValueSpace malformed = iota + 1
	badPseudoSpace
	badTargetSpace
	badConnectionField
)

// reason says what is wrong, for Server.Answered.
func (m malformed) reason() string {
	switch m {
	case badValueSpace:
		return "a field value starts or ends with white space"
	case badPseudoSpace:
		return "a pseudo-field value starts or ends with white space"
	case badTargetSpace:
		return "a space in :path"
	case badConnectionField:
		return "a connection-specific field, or TE other than trailers"
	}
	return ""
}

// edgeSpaceField reports whether hf's value starts or ends with white space.
func edgeSpaceField(hf hpack.HeaderField) bool { return edgeSpace(hf.Value) }

// edgeSpace reports whether field value v starts or ends with SP or HTAB (RFC 9113, section
// 8.2.1), which makes a request malformed.
func edgeSpace(v string) bool {
	return v != "" && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t')
}

// sameAuthority reports whether authorities a and b name one entity under scheme-based
// normalization (RFC 3986, section 6.2.3): hosts compared without regard to ASCII case, and
// an empty port or the scheme's default one the same as none.
func sameAuthority(scheme, a, b string) bool {
	ah, ap := splitAuthority(scheme, a)
	bh, bp := splitAuthority(scheme, b)
	// h1fields.EqualFold, not strings.EqualFold: Unicode folding makes the Kelvin sign K
	// (U+212A) equal to k and the long s (U+017F) to s, so a Host a front end reads as
	// another name would compare equal.
	return ap == bp && h1fields.EqualFold(ah, bh)
}

// splitAuthority splits an authority into its host and port, the port "" when it is empty
// or scheme's default.
func splitAuthority(scheme, a string) (host, port string) {
	host = a
	if i := strings.LastIndexByte(a, ':'); i >= 0 && strings.IndexByte(a[i:], ']') < 0 {
		host, port = a[:i], a[i+1:]
	}
	if scheme == "https" && port == "443" || scheme == "http" && port == "80" {
		port = ""
	}
	return host, port
}

// requestBody is a request's body: DATA frames the reader puts, the handler reads. Memory is
// bounded by the stream's flow-control window.
type requestBody struct {
	st           *stream
	buf          []byte
	off          int
	err          error // io.EOF once the client ended the stream, or why it failed
	closed       bool  // the handler closed it
	dropping     bool  // data is dropped (closed, timed out, or the stream was reset)
	needContinue bool  // Expect: 100-continue, not answered yet
	deadline     *time.Timer
}

// put appends a DATA frame's data (the reader; mu held).
func (b *requestBody) put(p []byte) {
	if b.dropping {
		b.st.c.consumedLocked(nil, int64(len(p)))
		return
	}
	if b.off > 0 && b.off == len(b.buf) {
		b.buf, b.off = b.buf[:0], 0
	} else if b.off > 0 && len(b.buf)+len(p) > cap(b.buf) {
		n := copy(b.buf, b.buf[b.off:])
		b.buf, b.off = b.buf[:n], 0
	}
	b.buf = append(b.buf, p...)
}

// endLocked ends the body with err (io.EOF for a complete request).
func (b *requestBody) endLocked(err error) {
	if b.err == nil {
		b.err = err
	}
}

// closeLocked is the handler's Close: what is unread and what will come is dropped, and a
// Read waiting on another goroutine returns.
func (b *requestBody) closeLocked() {
	b.closed = true
	b.abortLocked(http.ErrBodyReadAfterClose)
	if b.deadline != nil {
		b.deadline.Stop()
	}
}

// abortLocked ends the body of a reset stream: reads fail with err, and the connection's
// window gets back what nobody will read.
func (b *requestBody) abortLocked(err error) {
	if b.err == nil || b.err == io.EOF {
		b.err = err
	}
	b.dropLocked()
	b.st.c.cond.Broadcast()
}

// setReadDeadline makes reads fail with os.ErrDeadlineExceeded from t on, as net/http's
// HTTP/2 server does; the stream stays, so the handler can still answer (mu held).
func (b *requestBody) setReadDeadline(t time.Time) {
	if b.deadline != nil {
		b.deadline.Stop()
		b.deadline = nil
	}
	if t.IsZero() || b.dropping {
		return
	}
	if d := time.Until(t); d > 0 {
		c := b.st.c
		b.deadline = time.AfterFunc(d, func() {
			c.mu.Lock()
			b.abortLocked(errBodyDeadline)
			c.flushLocked()
			c.mu.Unlock()
		})
		return
	}
	b.abortLocked(errBodyDeadline)
}

var errBodyDeadline = fmt.Errorf("h2: reading the request body: %w", os.ErrDeadlineExceeded)

func (b *requestBody) dropLocked() {
	if b.dropping {
		return
	}
	b.dropping = true
	if n := len(b.buf) - b.off; n > 0 {
		b.st.c.consumedLocked(nil, int64(n))
	}
	b.buf, b.off = nil, 0
}

func (b *requestBody) Read(p []byte) (int, error) {
	c := b.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.needContinue {
		b.needContinue = false
		if !b.st.reset && !c.closing && !b.st.rw.sentHeader {
			c.writeHeaderBlockLocked(b.st, c.encodeStatusOnly(http.StatusContinue), false)
			c.flushLocked()
		}
	}
	for b.off == len(b.buf) && b.err == nil {
		c.cond.Wait()
	}
	if b.off == len(b.buf) {
		return 0, b.err
	}
	n := copy(p, b.buf[b.off:])
	b.off += n
	c.consumedLocked(b.st, int64(n))
	c.flushLocked()
	return n, nil
}

func (b *requestBody) Close() error {
	c := b.st.c
	c.mu.Lock()
	b.closeLocked()
	c.flushLocked()
	c.mu.Unlock()
	return nil
}

// requestURL sets *u to what url.ParseRequestURI(path) gives for the common path: a slash,
// characters URL paths keep as they are (no escapes), and an optional query of visible
// characters. For any other path it reports false and the caller parses it with
// url.ParseRequestURI (FuzzRequestURL holds the two equal).
func requestURL(path string, u *url.URL) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	p, q, hasQuery := strings.Cut(path, "?")
	for i := 0; i < len(p); i++ {
		if !plainPathByte[p[i]] {
			return false
		}
	}
	if hasQuery {
		if q == "" {
			return false // url sets ForceQuery
		}
		for i := 0; i < len(q); i++ {
			if q[i] <= ' ' || q[i] >= 0x7f {
				return false
			}
		}
	}
	*u = url.URL{Path: p, RawQuery: q}
	return true
}

// plainPathByte holds the bytes net/url leaves unescaped in a path: the unreserved ones and
// "$&+,/:;=@".
var plainPathByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()
