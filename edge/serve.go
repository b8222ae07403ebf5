package edge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/wire"
)

// hopHeader marks a fill request between edge nodes and lists the tiers it has crossed
// ("peer", "shield"). It is honoured only from fleet nodes; a client cannot forge it.
const hopHeader = "Meridian-Fill"

// hops is what a request's hop header says.
type hops struct{ peer, shield bool }

func (h hops) String() string {
	switch {
	case h.peer && h.shield:
		return "peer, shield"
	case h.shield:
		return "shield"
	case h.peer:
		return "peer"
	}
	return ""
}

// request is one client request on its way through the pipeline.
type request struct {
	r        *http.Request
	w        http.ResponseWriter // the client's, for 1xx interim responses while a fill runs
	host     *hostState
	key      string // primary cache key
	target   string // path and normalised query sent upstream
	path     string // escaped path, for prefix purges
	hop      hops   // tiers already crossed, from a trusted fleet node
	fromPeer bool   // sent by a fleet node (hop header trusted)
	// untrustedAnswer: the answer relays one that no verified chain gave this node
	// (fillResult.untrusted); a fleet node is not told it is trusted (markHop). Beside
	// fromPeer, in its padding: a request allocated (HTTP/2, HTTP/3) stays in its size class.
	untrustedAnswer bool
	// plainTarget: the request-target holds nothing requestTarget refuses or cuts (no space,
	// no '#'), as edge/http1's fast path (the one handlerStater) hands off any other: its hits
	// and misses skip the check. It hands off any head with Upgrade or HTTP2-Settings too, so
	// they skip keepWebSocketUpgrade as well. In the padding too.
	plainTarget bool
	needSeq     uint64 // purge sequence the requesting fleet node has applied (fills only)
	// maxAge bounds the age of what may answer a fleet node's fill (hasMaxAge), which asks for
	// nothing older than a URL's invalidation at its end (invalidations.go).
	maxAge    time.Duration
	hasMaxAge bool
	// puts is the store's Puts count for key, read before serveCacheable's lookup missed
	// (looked true): a fill that finds it unchanged skips its own look (storedFresh).
	puts   uint32
	looked bool
	// ageAtStart: the object answered was looked up at the request's start (no wait since),
	// so its Age is taken at lw.start, not at another reading of the clock (issue 15).
	ageAtStart bool
	coding     string // content coding the edge serves this cacheable request, "" for identity (encoding.go)
	trace      string // W3C traceparent passed upstream
	proto      string
	lw         logWriter
	// fields backs the one-value slices of the fields a hit sets (Age, Cache-Status,
	// Content-Length), so that they cost no allocation of their own; text backs their
	// values (spare, keep), used up to used.
	fields [3]string
	text   [96]byte
	used   int

	// clientAE is the client's Accept-Encoding as sent, which normalizeAcceptEncoding replaces:
	// what it accepts when an answer comes in another coding (undoCoding).
	clientAE []string
	// upstreamView is the header this request's shared fill sends, built when a lookup's Vary
	// needs it (VaryHeader), nil until then.
	upstreamView http.Header
}

// valueScratcher is a ResponseWriter with storage of its own, reused from one response to the
// next, for the response header's value slices (edge/http1, edge/h2): a hit copies a stored
// object's fields into the header with no allocation (store.Object.SetHeader), and the
// request stays small.
type valueScratcher interface {
	ValueScratch() []string
}

// spare is the unused part of req.text, empty, for a field value to be appended to.
func (req *request) spare() []byte { return req.text[req.used:req.used] }

// keep returns b, a value appended to spare, as a string sharing its bytes: an answer's own
// field values cost no allocation (issue 15). Those bytes are written again only when the
// connection reuses the request for its next one (handlerStater), once this answer is out,
// so the string is for this answer's header alone; a value that outgrew req.text was copied
// to the heap by append and is its own.
func (req *request) keep(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if req.used < len(req.text) && unsafe.SliceData(b) == &req.text[req.used] {
		req.used += len(b)
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// detached returns a copy of req for work that may outlive its handler (fleet asks, slice
// fetches), since edge/http1 reuses the client's request for the connection's next one: its
// own http.Request under ctx (header and URL copied), no client writer, and its trace ID
// made, so that copies of it share one.
func (req *request) detached(ctx context.Context) request {
	own := *req
	own.w, own.lw = nil, logWriter{}
	own.traceID()
	own.r = req.r.Clone(ctx)
	return own
}

// field returns a one-value slice of v for the response header, backed by req.fields[i].
func (req *request) field(i int, v string) []string {
	req.fields[i] = v
	return req.fields[i : i+1 : i+1]
}

// handlerStater is a ResponseWriter whose connection answers one request at a time, each
// written out before the next is read, and keeps a value for the handler from one request to
// the next (edge/http1's): the request's state is reused there, not allocated (issue 15).
type handlerStater interface{ HandlerState() *any }

func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := n.clock()
	// The request's state and its writer: the connection's own where it keeps one, else one
	// allocation.
	var req *request
	hs, fast := w.(handlerStater)
	if fast {
		p := hs.HandlerState()
		if req, _ = (*p).(*request); req == nil {
			req = new(request)
			*p = req
		}
	} else {
		req = new(request)
	}
	*req = request{r: r, proto: protoName(r), plainTarget: fast}
	req.lw = logWriter{ResponseWriter: w, status: http.StatusOK, start: start, since: n.since, no1xx: !r.ProtoAtLeast(1, 1)}
	lw := &req.lw
	req.w = lw
	// Deferred: a stream cut short aborts the handler (http.ErrAbortHandler) and is logged too.
	defer n.finish(lw, req)
	n.serve(lw, req)
}

// requestTarget checks r's request-target as received (r.RequestURI) and drops a fragment
// from it, reporting false for one no request may have. A space is in no request-target (RFC
// 9110 §4.1): over HTTP/1.1 it ends the target, and over HTTP/2 (http2: std) and HTTP/3 net/url
// took it, the origin sent "%20" (edge/h2 resets such a stream as malformed, RFC 9113 §8.3.1).
// A fragment ("#frag") is no part of a request-target either (RFC 9112 §3.2), but nginx and
// Varnish take it; net/url reads it as part of the path or query, which the origin was sent
// as "%23frag", another resource. It is dropped, as nginx reads it as an origin ($uri): the
// target is the URL without it, keyed and sent upstream so.
func requestTarget(r *http.Request) bool {
	if strings.IndexByte(r.RequestURI, ' ') >= 0 {
		return false
	}
	i := strings.IndexByte(r.RequestURI, '#')
	if i < 0 {
		return true
	}
	u, err := url.ParseRequestURI(r.RequestURI[:i])
	if err != nil {
		return false
	}
	// In place: the protocol servers may hold the URL for their next request.
	*r.URL = *u
	r.RequestURI = r.RequestURI[:i]
	return true
}

func (n *Node) serve(w *logWriter, req *request) {
	r := req.r
	// Before front: the beacon it answers is under the rule too.
	if len(r.TransferEncoding) > 0 || r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		// net/http drops a Content-Length sent beside Transfer-Encoding before we can see it;
		// RFC 9112 §6.1 then requires closing the connection, so that nothing a front end may
		// have framed differently is ever read as a next request. From an HTTP/1.0 request
		// net/http drops Transfer-Encoding itself and frames the body by Content-Length, so
		// an HTTP/1.0 connection is never kept: its next "request" may be a chunked body.
		w.Header().Set("Connection", "close")
	}
	if !wellFormedAuthority(r.Host) {
		// Refused before anything reads the host (RFC 9112 §3.2), as net/http and edge/h2
		// refuse an invalid character. quic-go checks no more than the userinfo, and none of
		// the servers the port: read past it, "host:abc" was served as the host.
		n.fail(w, req, http.StatusBadRequest, "bad host")
		return
	}
	if !req.plainTarget && !requestTarget(r) {
		n.fail(w, req, http.StatusBadRequest, "bad request target")
		return
	}
	if n.front(w, req) {
		return
	}
	if r.TLS != nil && r.ProtoMajor < 3 {
		if alt := n.altSvc.Load(); alt != nil {
			w.Header()["Alt-Svc"] = []string{*alt}
		}
	}
	// The edge is never an open proxy: only configured hostnames are served, and an
	// absolute-form target names the host itself (net/http puts it in r.Host).
	host := strings.ToLower(r.Host)
	if strings.LastIndexByte(host, ':') > strings.LastIndexByte(host, ']') {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	host = strings.TrimSuffix(host, ".")
	hs := (*n.hosts.Load())[host]
	if hs == nil {
		if r.Host == "" && (r.ProtoMajor > 1 || r.ProtoMinor > 0) {
			// No host at all (HTTP/2 or HTTP/3 without :authority or Host; net/http and
			// edge/http1 refuse an HTTP/1.1 request without Host themselves): the target URI has
			// none, which an http(s) URI must (RFC 9110 §4.2.1, §7.2; RFC 9113 §8.3.1), a bad
			// request, as nginx answers it, and no misdirected one (421) naming a host the edge
			// does not serve. An HTTP/1.0 request needs no Host, and gets the 421 of a host not
			// served. Checked here, where no host was found: a served request pays nothing for it.
			n.fail(w, req, http.StatusBadRequest, "missing host")
			return
		}
		n.fail(w, req, http.StatusMisdirectedRequest, "unknown host")
		return
	}
	req.host = hs
	if r.URL.Scheme != "" && r.URL.Host != "" && !strings.EqualFold(strings.TrimSuffix(r.URL.Hostname(), "."), host) {
		n.fail(w, req, http.StatusMisdirectedRequest, "absolute-form target for another host")
		return
	}
	// As the client spelt it: url.URL.EscapedPath may turn a "%2F" into "/" (wire.EscapedPath).
	path := wire.EscapedPath(r.URL)
	if path == "" && r.URL.Host != "" {
		if serverWideOptions(r) {
			answerServerOptions(w)
			return
		}
		// An absolute-form target without a path (GET http://host) is for "/" (RFC 9110
		// §4.2.3), as nginx reads it.
		path = "/"
	}
	if !strings.HasPrefix(path, "/") || wire.HasDotSegment(r.URL.Path) || strings.ContainsAny(r.URL.Path, "\x00") {
		n.fail(w, req, http.StatusBadRequest, "bad request target")
		return
	}
	req.path = path
	req.key = httpcache.KeyForced(host, path, r.URL.RawQuery, r.URL.ForceQuery, hs.keyOpts)
	// What goes upstream is the key's own path and query, so a parameter the key ignores
	// can never change what is stored. The key's host part never holds a '/'.
	req.target = req.key[strings.IndexByte(req.key, '/'):]
	// The fields the client's Connection names are for this hop: they never go upstream
	// (upstreamHeader), so nothing here may act on them either. Kept, they would select the
	// Vary variant a shared fill's answer (for a request without them) is stored as, and one
	// client could have every other that sends the same value served that answer. The
	// hop-by-hop fields themselves stay (an upgrade needs them); VaryKey keys them as absent.
	httpcache.RemoveConnectionOptions(r.Header)
	if !req.plainTarget { // the fast path's requests have neither Upgrade nor HTTP2-Settings
		keepWebSocketUpgrade(r.Header) // the one upgrade passed through (isUpgrade)
	}
	if n.trustedHop(r) {
		req.fromPeer = true
		req.needSeq = requiredPurgeSeq(r)
		for _, t := range strings.Split(r.Header.Get(hopHeader), ",") {
			switch strings.TrimSpace(t) {
			case "peer":
				req.hop.peer = true
			case "shield":
				req.hop.shield = true
			}
		}
		// A fleet node asks for its own key's target. If this node's key rules would make it
		// another URL (one of the two has not applied a change of the host's key options yet),
		// its answer is that other URL's, which the asker would store under its key: refuse, and
		// the asker goes to its next tier.
		if o := hs.keyOpts; (o.IgnoreQuery || o.SortQuery || len(o.KeepParams) > 0) &&
			httpcache.KeyForced(host, path, r.URL.RawQuery, r.URL.ForceQuery, httpcache.KeyOptions{}) != req.key {
			n.fail(w, req, http.StatusMisdirectedRequest, "key rules differ from the asking node's")
			return
		}
	}
	if via := r.Header.Values("Via"); len(via) > 0 && viaHas(via, n.name) {
		n.log.Warn("fill loop detected", "host", host, "path", path, "via", strings.Join(via, ", "))
		n.fail(w, req, http.StatusLoopDetected, "loop detected")
		return
	}
	switch {
	case isUpgrade(r):
		n.pass(w, req) // WebSocket: the client's own connection to the origin
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		n.serveCacheable(w, req)
	case !httpguts.ValidHeaderFieldName(r.Method):
		// A method must be a token (RFC 9110, section 9.1). net/http refuses any other over
		// HTTP/1.1 and quic-go over HTTP/3, but HTTP/2 servers hand it on: passed, the
		// upstream client would refuse it as a failed exchange, counted by the breaker.
		n.fail(w, req, http.StatusBadRequest, "bad method")
	default:
		n.pass(w, req)
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// trustedHop reports whether the request is a fill from a fleet node, proven by its hop
// signature (hopauth.go). The fleet-only fields of any other request are removed.
func (n *Node) trustedHop(r *http.Request) bool {
	if fieldValue(r.Header, hopHeader) == "" {
		stripFleetFields(r.Header)
		return false
	}
	if err := n.verifyHop(r); err != nil {
		n.metrics.hopRefused.Inc()
		n.log.Debug("fill request not verified; answering it as a client's", "remote", r.RemoteAddr, "err", err)
		stripFleetFields(r.Header)
		return false
	}
	return true
}

// wellFormedAuthority reports whether a request's host (Host, :authority) is a URI authority
// without userinfo (RFC 3986 §3.2): a reg-name, or an IP literal in brackets, then an optional
// port of digits. Empty is well-formed: no host, which no configured host matches.
func wellFormedAuthority(a string) bool {
	if !httpguts.ValidHostHeader(a) || strings.IndexByte(a, '@') >= 0 {
		return false
	}
	host := a
	if i := strings.LastIndexByte(a, ':'); i > strings.LastIndexByte(a, ']') {
		host = a[:i]
		for _, c := range []byte(a[i+1:]) {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	if strings.HasPrefix(host, "[") {
		return strings.IndexByte(host, ']') == len(host)-1 && strings.IndexByte(host[1:], '[') < 0
	}
	return !strings.ContainsAny(host, "[]:")
}

// serverWideOptions reports an OPTIONS whose absolute-form target has neither path nor query
// (OPTIONS http://host): RFC 9112 §3.2.4 makes it the asterisk-form OPTIONS *, for the server
// as a whole, which the last proxy forwards as "*", not as a request for "/". The edge
// forwards no asterisk-form target: it answers it itself (answerServerOptions).
func serverWideOptions(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.URL.Scheme != "" && r.URL.RawQuery == "" && !r.URL.ForceQuery
}

// serveNetHTTP is the handler of the node's net/http servers, which answer OPTIONS * no more
// (DisableGeneralOptionsHandler): net/http's own answer kept an HTTP/1.0 keep-alive
// connection, and so read the chunked body of one with Transfer-Encoding, which it frames by
// its Content-Length, as the next request. Here an HTTP/1.0 connection is not kept (serve).
// The fast path never serves OPTIONS: its requests pay nothing for this.
func (n *Node) serveNetHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions && r.RequestURI == "*" {
		if len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1) {
			w.Header().Set("Connection", "close")
		}
		answerServerOptions(w)
		return
	}
	n.ServeHTTP(w, r)
}

// answerServerOptions answers OPTIONS * (RFC 9110 §9.3.7: about the server, not a resource)
// as net/http does before any handler over HTTP/1.1 and HTTP/2: 200 with an empty body.
func answerServerOptions(w http.ResponseWriter) {
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

func viaHas(via []string, name string) bool {
	for _, v := range via {
		for _, part := range strings.Split(v, ",") {
			f := strings.Fields(part)
			if len(f) >= 2 && f[1] == name {
				return true
			}
		}
	}
	return false
}

// h2Answered logs and counts a request that edge/h2 answered itself, its handler never
// called (h2.Server.Answered: a 431 for a header list over max_header_bytes, a 400 for a
// malformed request), as the edge's own refusals (fail) are: an access log line with cache
// "error" and the reason as its note, and meridian_edge_requests_total. They were in
// neither, so an operator looking for why HTTP/2 clients failed saw nothing.
func (n *Node) h2Answered(r *http.Request, status int, reason string) {
	req := &request{r: r, proto: "h2"}
	req.lw = logWriter{status: status, cacheStatus: "error", note: reason, start: n.clock(), since: n.since}
	n.finish(&req.lw, req)
}

// fail answers with a short error and a Cache-Status that says nothing was forwarded.
func (n *Node) fail(w *logWriter, req *request, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Status", httpcache.Status{Cache: n.name, Proto: req.proto, Detail: detailToken(msg)}.String())
	h.Set("Cache-Control", "no-store")
	w.note = msg
	w.WriteHeader(status)
	if req.r.Method != http.MethodHead {
		w.Write([]byte(msg + "\n"))
	}
}

func detailToken(s string) string { return strings.ReplaceAll(s, " ", "-") }

func protoName(r *http.Request) string {
	switch {
	case r.ProtoMajor == 3:
		return "h3"
	case r.ProtoMajor == 2:
		return "h2"
	default:
		return "http/1.1"
	}
}

// traceID returns the request's W3C traceparent, made on first use: hits that log nothing
// never pay for it.
func (req *request) traceID() string {
	if req.trace == "" {
		req.trace = traceparent(req.r)
	}
	return req.trace
}

// traceparent returns the request's W3C traceparent if well-formed, else a new one.
func traceparent(r *http.Request) string {
	if tp := r.Header.Get("Traceparent"); validTraceparent(tp) {
		return tp
	}
	var b [24]byte
	rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}

func validTraceparent(tp string) bool {
	if len(tp) != 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	for i, c := range tp {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return tp[:2] != "ff" && tp[3:35] != strings.Repeat("0", 32) && tp[36:52] != strings.Repeat("0", 16)
}

// logWriter records what was answered, for metrics and the access log.
type logWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	// no1xx drops interim answers: the client speaks HTTP/1.0, which has no 1xx (RFC 9110
	// §15.2), and net/http would write them all the same. (Beside wroteHeader, in its padding:
	// a request's size class is a miss's allocation.)
	no1xx       bool
	hitSet      bool   // hitTime is set
	cacheStatus string // "hit", "miss", "stale", "pass", "error"
	tier        string
	note        string
	// start is when the request began (ServeHTTP); since measures time from a reading of
	// the node's clock (Node.since).
	start time.Time
	since func(time.Time) time.Duration
	// hitTime is a hit's service time, from start to its response header being written:
	// for the saturation figure, it leaves out how fast the client downloads the body.
	hitTime time.Duration
	// peer304 is the Last-Modified that a 304 gets back (keepFor304): http.ServeContent removes it.
	peer304 []string
}

// keepFor304 is for a conditional request from a fleet node, answered by http.ServeContent:
// the stored Last-Modified, which ServeContent leaves out of a 304 when there is an ETag (RFC
// 9110 §15.4.5 advises against it for a client), goes in it all the same, for it guides the
// update of the node's copy (RFC 9111 §4.3.4): a revalidation that brought a new
// Last-Modified from the origin to the shield brings it to the edges, whose clients'
// If-Modified-Since is compared with it. (Content-Type cannot follow: edge/http1, as net/http,
// never writes it in a 304.) h is the header about to be written.
func (w *logWriter) keepFor304(req *request, h http.Header) {
	if req.fromPeer {
		w.peer304 = h["Last-Modified"]
	}
}

func (w *logWriter) WriteHeader(code int) {
	if code < 200 && w.no1xx {
		return
	}
	if code == http.StatusNotModified && len(w.peer304) > 0 {
		w.ResponseWriter.Header()["Last-Modified"] = w.peer304
	}
	if code == http.StatusNoContent {
		// A 204 has no Content-Length (RFC 9110, section 8.6); a stored one says "0". The
		// HTTP/1.1 servers leave it out, the HTTP/2 and HTTP/3 ones send what they are given.
		delete(w.ResponseWriter.Header(), "Content-Length")
	}
	if !w.wroteHeader {
		w.status = code
		w.wroteHeader = code >= 200 // a 1xx may precede the final status
		if w.wroteHeader && w.cacheStatus == "hit" {
			w.markHit()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// markHit records a hit's service time as its header is written.
func (w *logWriter) markHit() {
	w.hitTime, w.hitSet = w.since(w.start), true
}

func (w *logWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader && w.cacheStatus == "hit" {
		w.markHit()
	}
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	if err != nil && w.note == "" {
		// Here, and not at each write: http.ServeContent (a Range, a sliced object) and
		// ReverseProxy return at a failed write without a word.
		w.note = "stream aborted: " + err.Error()
	}
	return n, err
}

// ReadFrom is what io.Copy (and http.ServeContent) use to write a body: a sliced object is
// written slice by slice from the store's bytes (sliceReader.writeTo); anything else is
// copied as io.Copy would.
func (w *logWriter) ReadFrom(src io.Reader) (int64, error) {
	if lr, ok := src.(*io.LimitedReader); ok {
		if sr, ok := lr.R.(*sliceReader); ok {
			n, err := sr.writeTo(w, lr.N)
			lr.N -= n
			return n, err
		}
	}
	return io.Copy(writerOnly{w}, src)
}

// writerOnly hides logWriter's ReadFrom from io.Copy, which would otherwise call it again.
type writerOnly struct{ io.Writer }

func (w *logWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (n *Node) finish(w *logWriter, req *request) {
	cs := w.cacheStatus
	if cs == "" {
		cs = "error"
	}
	n.metrics.observeRequest(req.proto, cs, w.status, w.bytes)
	if cs == "hit" && w.hitSet {
		n.hitLat.record(w.hitTime, w.start, n.clock) // in the second it began: a hit's header is written within it, or nearly
	}
	n.rttFinished(req)
	if n.cfg.AccessLog {
		n.log.Info("request",
			"method", req.r.Method, "host", req.r.Host, "path", req.r.URL.RequestURI(),
			"status", w.status, "bytes", w.bytes, "cache", cs, "tier", w.tier,
			"proto", req.proto, "remote", req.r.RemoteAddr, "traceparent", req.traceID(),
			"duration_ms", float64(n.since(w.start).Microseconds())/1000, "note", w.note)
	}
}
