package http1

import (
	"crypto/tls"
	"net"
	"net/http"
)

// GuardConn is a connection net/http serves (one the fast path handed over, every plain one
// under http1: std, and, as a TLSGuardConn, every HTTP/1.1 one over TLS), read through a guard against HTTP/1.0 requests with
// Transfer-Encoding. net/http drops Transfer-Encoding from an HTTP/1.0 request before any
// handler sees it and frames the body by Content-Length (golang issue 12785): a chunked body
// would be read as the next request. RFC 9112 §6.1 calls such framing faulty and asks for a
// close. The guard follows the requests net/http reads, as net/http frames them, and, in an
// HTTP/1.0 head, turns the colon after a field name "Transfer-Encoding" into a byte no field
// name has: net/http then refuses the head as malformed, with 400 and a close, before any
// handler runs, and reads nothing after it. Everything else passes as it is.
//
// The guard follows heads and Content-Length bodies only. After a request it cannot follow
// (Transfer-Encoding in HTTP/1.1, which the edge answers with a close; CONNECT, after which
// the bytes are a tunnel's; a version other than HTTP/1.x; a head net/http refuses) it lets
// every byte pass: net/http ends such a connection after that request, or the bytes are no
// longer HTTP/1. A request with an Upgrade field is followed as any other: until it is
// switched the connection is HTTP/1 (net/http keeps it after an answer other than 101), and
// the switch is a hijack, at which the guard stops (StopOnHijack). A client sends its
// tunnel's first byte only once it has the 101 (RFC 6455 §4.1, RFC 7540 §3.2's h2c), so the
// guard has stopped before: what it followed of a client that sent early, it followed as the
// requests they would have been had the upgrade not been switched, and a colon it marked
// there the hijacker puts back (Unmark).
type GuardConn struct {
	net.Conn
	g guard
}

// NewGuardConn returns c read through the guard; c must be at a request's first byte.
func NewGuardConn(c net.Conn) *GuardConn { return &GuardConn{Conn: c} }

func (c *GuardConn) Read(p []byte) (int, error) { return c.g.read(c.Conn, p) }

// NetConn returns the connection beneath, as tls.Conn's does.
func (c *GuardConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection beneath when it can (net/http's closeWriteAndWait).
func (c *GuardConn) CloseWrite() error { return closeWrite(c.Conn) }

// TLSGuardConn is a GuardConn over a TLS connection whose handshake is done, for net/http to
// serve HTTP/1.1 over TLS through the guard. Its ConnectionState is the TLS connection's:
// net/http, which takes a connection that is no *tls.Conn for one it need not handshake, sets
// every request's TLS from it (once, before it reads the first request), as it does from a
// *tls.Conn's.
type TLSGuardConn struct {
	GuardConn
	tc *tls.Conn
}

// NewTLSGuardConn returns tc, its handshake done, read through the guard; tc must be at a
// request's first byte.
func NewTLSGuardConn(tc *tls.Conn) *TLSGuardConn {
	return &TLSGuardConn{GuardConn: GuardConn{Conn: tc}, tc: tc}
}

// ConnectionState is the TLS connection's.
func (c *TLSGuardConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// StopOnHijack stops the guard of c (a GuardConn or TLSGuardConn), or of the one c wraps
// (through NetConn), when s is http.StateHijacked: an http.Server that serves GuardConns
// calls it from its ConnState. net/http hijacks a connection for a handler that switches protocols (an upgrade answered
// 101), and reads nothing of it after; the handler's reads then pass untouched. net/http calls
// ConnState in Hijack once its own read, if one was running, has returned, and before the
// handler has the connection: nothing reads the guard meanwhile. What net/http had read ahead
// of the connection before, it hands the handler with it: see Unmark.
func StopOnHijack(c net.Conn, s http.ConnState) {
	if s != http.StateHijacked {
		return
	}
	if g := guardOf(c); g != nil {
		g.g.state = gOff
	}
}

// Unmark puts back the colon the guard of c (or of the GuardConn or TLSGuardConn c wraps)
// marked in early, if it marked one there. early is what net/http had read of c past the head of the request whose
// handler hijacked c (the bufio.Reader Hijack returns holds it), and so the last bytes read
// through the guard: a client that sent its tunnel's bytes right behind the upgrade's head had
// them followed as the request they would have been had the upgrade not been switched. The
// hijacker calls it before it passes early on, with nothing reading c meanwhile.
func Unmark(c net.Conn, early []byte) {
	g := guardOf(c)
	if g == nil || g.g.marked == 0 {
		return
	}
	at := g.g.marked - 1 - (g.g.total - int64(len(early)))
	if at >= 0 && at < int64(len(early)) && early[at] == mangled {
		early[at] = ':'
	}
}

// guardOf is c, or the GuardConn c wraps (through NetConn), or nil.
func guardOf(c net.Conn) *GuardConn {
	for c != nil {
		switch g := c.(type) {
		case *GuardConn:
			return g
		case *TLSGuardConn:
			return &g.GuardConn
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}

// GuardListener hands out its connections as GuardConns.
type GuardListener struct{ net.Listener }

func (l GuardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewGuardConn(c), nil
}

// The guard's states.
const (
	gStart   = iota // at a request's first byte (after a POST, up to 4 CR or LF net/http skips)
	gReqLine        // in the request line
	gLine           // at a header line's first byte
	gName           // in a field name that may be one of the names watched
	gValue          // in the value of Content-Length
	gRest           // in the rest of a header line
	gBody           // in a Content-Length body
	gOff            // not following: every byte passes
)

// Field names the guard watches, lower case, each with its colon.
const (
	nameTE = "transfer-encoding:"
	nameCL = "content-length:"
)

// mangled takes the place of the colon after Transfer-Encoding: a byte that is no token byte
// and no space (net/http takes a field name with a space in it as it is), so the line is
// malformed for net/http's reader.
const mangled = '"'

type guard struct {
	state  int
	crlf   int     // gStart: CR or LF bytes still skipped (net/http's tolerance after a POST)
	spaces int     // gReqLine: spaces seen
	method [8]byte // gReqLine: the method's first bytes, nm of them in all
	nm     int
	proto  [9]byte // gReqLine: what follows the second space (the version), np bytes
	np     int
	http10 bool // the head is HTTP/1.0
	post   bool // the request's method is POST
	off    bool // leave the guard at the head's end: a request it cannot follow
	// gName: which names still match, and how far.
	name      int
	teOK      bool
	clOK      bool
	cl        int64 // Content-Length, -1 if none
	clv       int64 // gValue: the value so far, -1 if not digits
	clDigits  int
	clSpace   bool  // gValue: white space after the digits
	lastCL    bool  // gLine: a Content-Length line ended, its value judged when no fold follows
	remaining int64 // gBody: bytes of the body still to come
	total     int64 // bytes read through the guard
	marked    int64 // 1 + the offset (in total) of the byte marked, 0 if none (Unmark)
}

// read reads from src into p through the guard.
func (g *guard) read(src net.Conn, p []byte) (int, error) {
	n, err := src.Read(p)
	if g.state != gOff {
		g.feed(p[:n])
	}
	g.total += int64(n)
	return n, err
}

// feed follows b, changing in place the one byte it marks.
func (g *guard) feed(b []byte) {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch g.state {
		case gOff:
			return
		case gBody:
			k := min(int64(len(b)-i), g.remaining)
			g.remaining -= k
			i += int(k) - 1
			if g.remaining == 0 {
				g.startRequest()
			}
			continue
		case gStart:
			if g.crlf > 0 && (c == '\r' || c == '\n') {
				g.crlf--
				continue
			}
			g.state = gReqLine
			g.spaces, g.nm, g.np = 0, 0, 0
			g.http10, g.off, g.cl, g.lastCL = false, false, -1, false
		}
		switch g.state {
		case gReqLine:
			g.requestLine(c)
		case gLine:
			if g.lastCL && c != ' ' && c != '\t' {
				g.endCL()
			}
			switch c {
			case '\n':
				g.endHead()
			case '\r': // an empty line's CR; anything else is malformed for net/http
			case ' ', '\t':
				g.state = gRest
				if g.lastCL {
					// A Content-Length folded onto this line: net/http joins it to the value
					// with a space.
					g.state = gValue
					g.clSpace = g.clDigits > 0
				}
			default:
				g.name, g.teOK, g.clOK = 0, true, true
				g.state = gName
				if g.nameByte(c) {
					g.mark(b, i)
				}
			}
		case gName:
			if g.nameByte(c) {
				g.mark(b, i)
			}
		case gValue:
			g.valueByte(c)
		case gRest:
			if c == '\n' {
				g.state = gLine
			}
		}
	}
}

// mark marks b[i], the colon after Transfer-Encoding in an HTTP/1.0 head.
func (g *guard) mark(b []byte, i int) {
	b[i] = mangled
	g.marked = g.total + int64(i) + 1
}

// requestLine follows c in the request line.
func (g *guard) requestLine(c byte) {
	switch {
	case c == '\n':
		proto := g.proto[:g.np]
		if len(proto) > 0 && proto[len(proto)-1] == '\r' {
			proto = proto[:len(proto)-1]
		}
		method := string(g.method[:min(g.nm, len(g.method))])
		g.http10 = string(proto) == "HTTP/1.0"
		g.post = method == "POST"
		if g.spaces < 2 || len(proto) != len("HTTP/1.x") || string(proto[:7]) != "HTTP/1." || method == "CONNECT" {
			g.off = true
		}
		g.state = gLine
	case c == ' ' && g.spaces < 2:
		g.spaces++
	case g.spaces == 0:
		if g.nm < len(g.method) {
			g.method[g.nm] = c
		}
		g.nm++
	case g.spaces == 2:
		if g.np < len(g.proto) {
			g.proto[g.np] = c
			g.np++
		} else {
			g.off = true // longer than any HTTP/1.x version
		}
	}
}

// nameByte follows c in a field name; true if c is the colon to mark.
func (g *guard) nameByte(c byte) (mark bool) {
	lc := c
	if 'A' <= lc && lc <= 'Z' {
		lc += 'a' - 'A'
	}
	i := g.name
	g.name++
	g.teOK = g.teOK && i < len(nameTE) && nameTE[i] == lc
	g.clOK = g.clOK && i < len(nameCL) && nameCL[i] == lc
	switch {
	case g.teOK && g.name == len(nameTE):
		if g.http10 {
			// The head is refused (see GuardConn): nothing after it is read as a request.
			g.state = gOff
			return true
		}
		g.off = true // HTTP/1.1 with Transfer-Encoding: the edge closes after it
		g.state = gRest
	case g.clOK && g.name == len(nameCL):
		g.state = gValue
		g.clv, g.clDigits, g.clSpace = 0, 0, false
	case !g.teOK && !g.clOK:
		g.state = gRest
		if c == '\n' {
			g.state = gLine // a line without a colon: malformed for net/http, which ends here
			g.off = true
		}
	}
	return false
}

// valueByte follows c in a Content-Length value.
func (g *guard) valueByte(c byte) {
	switch {
	case c == '\n':
		g.endValue()
	case c >= '0' && c <= '9' && !g.clSpace && g.clv >= 0:
		g.clDigits++
		if g.clv >= 1e17 { // leading zeros count for nothing, as in strconv.ParseUint
			g.clv = -1
		} else {
			g.clv = g.clv*10 + int64(c-'0')
		}
	case c == ' ' || c == '\t' || c == '\r':
		if g.clDigits > 0 {
			g.clSpace = true
		}
	default:
		g.clv = -1
	}
}

// endValue ends a Content-Length field line; a line folded onto it may add to the value.
func (g *guard) endValue() {
	g.state = gLine
	g.lastCL = true
}

// endCL ends a Content-Length field, with the lines folded onto it.
func (g *guard) endCL() {
	g.lastCL = false
	switch {
	case g.clv < 0 || g.clDigits == 0 || g.cl >= 0 && g.cl != g.clv:
		g.off = true // net/http refuses it
	default:
		g.cl = g.clv
	}
}

// endHead follows the empty line that ends a head.
func (g *guard) endHead() {
	if g.off {
		g.state = gOff
		return
	}
	if g.cl > 0 {
		g.remaining = g.cl
		g.state = gBody
		return
	}
	g.startRequest()
}

// startRequest readies the guard for the next request's first byte.
func (g *guard) startRequest() {
	g.state = gStart
	g.crlf = 0
	if g.post {
		g.crlf = 4
	}
}
