package edge

import (
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/meridian-cdn/meridian/edge/httpcache"
	"github.com/meridian-cdn/meridian/wire"
)

// The origin request policy (docs/edge.md, "What reaches the origin"). A client's end-to-end
// request fields go upstream, as nginx and Varnish send them. What keeps one client from
// poisoning what another gets is the cache key plus these rules for a shared fill (one that is
// collapsed and stored, so other clients are served its answer):
//
//   - a shared fill carries the leader's fields; its answer is given to another client only if
//     that client's fields match it on every field the answer's Vary names, as each one's fill
//     sends them (request.VaryHeader, below), so an origin whose answer depends on a field must
//     say so in Vary (then that field is part of the key; a hop-by-hop one, which no fill
//     carries, counts as absent: httpcache.VaryKey);
//   - the fields known to make origins build a different answer without saying so are never
//     sent on a shared fill (fillDeny), unless the host names them in request_headers.forward;
//   - Forwarded and X-Forwarded-* are the edge's own view of the client, kept from the client
//     only when it is a trusted proxy (or a verified fleet node);
//   - the fields that drive caching or select part of an answer are the edge's own business
//     on a fill (fillOwn), and a shared fill never carries Cookie or Authorization.

// upstreamKind says what an upstream request is for, which decides what it may carry.
type upstreamKind int

const (
	sharedFill  upstreamKind = iota // collapsed and maybe stored: its answer may reach others
	directFill                      // a fill for one client (Authorization): stored only if public
	passThrough                     // the client's own exchange with the origin, never stored
)

// fillDeny are fields that no cache keys on and that make an origin answer otherwise: never
// sent on a fill unless the host's forward list names them.
var fillDeny = slices.Concat(fillRewrite, fillBodyDeny)

// fillRewrite are fields that rewrite what an origin answers (the URL, the method, the host it
// believes it serves).
var fillRewrite = []string{"X-Original-Url", "X-Rewrite-Url", "X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// fillBodyDeny are fields that describe a request's content: a fill sends none (a GET's
// body stays behind), so they describe nothing there; an origin that answered by them (a
// 415, a decoding error) would have that answer stored for everyone. A pass sends them with
// the body. Varnish sends them on without the body; nginx sends the body too.
var fillBodyDeny = []string{"Content-Type", "Content-Encoding", "Content-Language", "Content-Location",
	"Content-Range", "Content-Md5", "Digest", "Content-Digest", "Repr-Digest"}

// fillOwn are fields a fill sets itself: it asks for a whole, current object to store, with
// its own validators, whatever the first client asked for.
var fillOwn = []string{"Cache-Control", "Pragma", "If-None-Match", "If-Modified-Since", "If-Match",
	"If-Unmodified-Since", "If-Range", "Range", "Expect", "Content-Length", "Cookie"}

// protocolFields always pass the forward filter: the edge handles them by the rules above,
// and an origin cannot do without them.
var protocolFields = []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cookie",
	"Content-Type", "Content-Encoding", "Content-Language", "If-None-Match", "If-Modified-Since", "If-Match",
	"If-Unmodified-Since", "If-Range", "Range", "Cache-Control", "Pragma", "Traceparent", "Tracestate",
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"}

// upstreamHeader builds the header of an upstream request for req under its host's policy.
// The client's values are copied into value slices of its own: edge/http1 reuses the client's
// for the connection's next request, and an upstream request can outlive its handler (a
// transport still writing it, a fleet ask still running). extra is how many fields the
// caller adds to it afterwards.
//
// Each client field is tested once and copied only if it goes (upstreamKeeps), rather than
// copied and then deleted by each rule in turn: a delete from a map hashes its key even when
// the key is absent, and the rules made about thirty of them per miss (issue 15).
func (n *Node) upstreamHeader(req *request, kind upstreamKind, extra int) http.Header {
	in := req.r.Header
	pol := req.host.cfg.RequestHeaders
	ip, trusted := n.forwardedFor(req)
	k := upstreamKeeps{all: pol.Forward.All(), forward: pol.Forward, kind: kind, trusted: trusted}
	var keptBuf [24]string
	kept := keptBuf[:0]
	values := 0
	for f, v := range in {
		if k.keeps(f) {
			kept = append(kept, f)
			if len(v) == 1 {
				values++
			}
		}
	}
	vals := fieldValues{a: make([]string, 0, ownFields+values)}
	// Room for the client's fields that go, the ones set here (ownFields) and the caller's: a
	// map of up to 8 fields is one group of slots, more take a table of 16 or more, twice the
	// bytes. A map sized too small would grow, and be copied, while it is built.
	out := make(http.Header, len(kept)+ownFields+len(pol.Set)+extra)
	for _, f := range kept {
		if v := in[f]; len(v) == 1 {
			out[f] = vals.one(v[0])
		} else {
			out[f] = slices.Clone(v)
		}
	}
	if kind != passThrough && len(out["Accept-Encoding"]) == 0 {
		// A fill asks for the coding it serves (normalizeAcceptEncoding left none for
		// identity); an upstream sent no field may choose any (RFC 9110 §12.5.3).
		out["Accept-Encoding"] = identityField
	}
	n.setForwarded(out, req, kind, &vals, ip)
	for _, f := range pol.Deny {
		out.Del(f)
	}
	out["Via"] = vals.one(n.via(strings.Join(in["Via"], ", "), req.r.ProtoMajor, req.r.ProtoMinor))
	out["Traceparent"] = vals.one(req.traceID())
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = vals.one("") // net/http would send its own
	}
	for f, v := range pol.Set {
		out.Set(f, v)
	}
	return out
}

// upstreamKeeps decides which of a client's fields go upstream (upstreamHeader): those the
// host forwards (or every field protocolFields names), less the hop-by-hop ones, the fleet's
// own, on a fill those it sets itself (fillOwn), Authorization on a shared fill and fillDeny
// unless the host forwards them by name, and Forwarded and X-Forwarded-* from a client the
// edge does not trust (setForwarded).
//
// The fields the client's Connection names are not looked for: serve removed them as the
// request arrived (httpcache.RemoveConnectionOptions). Testing each field against that list
// made a miss cost fields times options, which a client chooses: 64 ms of CPU for a head
// within the default 64 KiB bound (BenchmarkUpstreamHeader/options).
type upstreamKeeps struct {
	all     bool
	forward wire.HeaderNames
	kind    upstreamKind
	trusted bool
}

// keeps reports whether the client's field f (canonical) goes upstream.
func (k *upstreamKeeps) keeps(f string) bool {
	if !k.all && !slices.Contains(protocolFields, f) && !namesField(k.forward, f) ||
		httpcache.IsHopByHop(f) || isFleetField(f) {
		return false
	}
	if k.kind != passThrough {
		if slices.Contains(fillOwn, f) || k.kind == sharedFill && f == "Authorization" ||
			slices.Contains(fillDeny, f) && (k.all || !namesField(k.forward, f)) {
			return false
		}
	}
	return k.trusted || f != "Forwarded" && !strings.HasPrefix(f, "X-Forwarded-")
}

// ownFields is how many fields upstreamHeader sets itself: Accept-Encoding, Via, Traceparent,
// User-Agent, Forwarded and three X-Forwarded-*.
const ownFields = 8

// fieldValues hands out the one-value slices of the fields an upstream request sets itself
// from one array, so that they cost one allocation rather than one each (issue 15). Each
// slice has capacity 1: appending to one never writes into the next.
type fieldValues struct{ a []string }

func (f *fieldValues) one(v string) []string {
	f.a = append(f.a, v)
	n := len(f.a)
	return f.a[n-1 : n : n]
}

// fieldValue is h.Get for a key in canonical form, which h.Get would canonicalise again: on
// every request's way, that was 1 % of a hit's CPU (issue 15). Every server the edge runs
// behind (edge/http1, edge/h2, net/http, quic-go's http3) stores keys canonical.
func fieldValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// namesField reports whether the list names field k (canonical).
func namesField(l wire.HeaderNames, k string) bool {
	for _, f := range l {
		if strings.EqualFold(f, k) {
			return true
		}
	}
	return false
}

// forwardedFor is the client's address as the edge forwards it ("" if its RemoteAddr has
// none), and whether the edge trusts the Forwarded and X-Forwarded-* fields it sent: those of
// a trusted proxy or a verified fleet node.
func (n *Node) forwardedFor(req *request) (ip string, trusted bool) {
	ip, _, err := net.SplitHostPort(req.r.RemoteAddr)
	if err != nil {
		ip = ""
	}
	return ip, req.fromPeer || n.cfg.trustedProxy(ip)
}

// setForwarded sets Forwarded (RFC 7239), X-Forwarded-For, X-Forwarded-Proto and
// X-Forwarded-Host to the edge's view of the client at ip. From a trusted proxy or a verified
// fleet node their values were kept and are appended to; anyone else's, with every other
// X-Forwarded-* field (X-Forwarded-Scheme, -Port, -Prefix, ...), were never copied into h
// (upstreamKeeps), so a client can never make the origin believe another host, scheme or
// address. On a shared fill X-Forwarded-Host is always the edge's: it is part of the key.
func (n *Node) setForwarded(h http.Header, req *request, kind upstreamKind, vals *fieldValues, ip string) {
	r := req.r
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	host := req.host.cfg.Host
	if ip != "" {
		xff := ip
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + ip
		}
		h["X-Forwarded-For"] = vals.one(xff)
	}
	if _, ok := h["X-Forwarded-Proto"]; !ok {
		h["X-Forwarded-Proto"] = vals.one(proto)
	}
	if _, ok := h["X-Forwarded-Host"]; !ok || kind == sharedFill && !namesField(req.host.cfg.RequestHeaders.Forward, "X-Forwarded-Host") {
		h["X-Forwarded-Host"] = vals.one(host)
	}
	node := ip
	if strings.Contains(ip, ":") {
		node = `"[` + ip + `]"`
	}
	if node == "" {
		node = "unknown"
	}
	fwd := "for=" + node + ";host=" + quoteForwarded(host) + ";proto=" + proto
	if prior := h["Forwarded"]; len(prior) > 0 {
		fwd = strings.Join(prior, ", ") + ", " + fwd
	}
	h["Forwarded"] = vals.one(fwd)
}

// quoteForwarded quotes a Forwarded value that is not a token (a host with a port).
func quoteForwarded(v string) string {
	if strings.ContainsAny(v, ":[]") {
		return `"` + v + `"`
	}
	return v
}

// applyResponsePolicy applies a host's response_headers to what a client gets. h is the
// response writer's header: its values may be shared with a stored object, so fields are only
// deleted or replaced.
func applyResponsePolicy(h http.Header, hs *hostState) {
	p := hs.cfg.ResponseHeaders
	for _, k := range p.Deny {
		h.Del(k)
	}
	for k, v := range p.Set {
		h.Set(k, v)
	}
}

// isEventStream reports a text/event-stream body, which is never stored and is flushed as it
// arrives.
func isEventStream(h http.Header) bool {
	ct, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// wantsEventStream reports a request for server-sent events: it is passed through, since an
// event stream is never stored and outlives a fill's timeout.
func wantsEventStream(r *http.Request) bool {
	for _, v := range r.Header["Accept"] {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// cookiePass reports whether req must go to the origin with its cookies, unserved from cache.
func cookiePass(req *request) bool {
	return req.host.cfg.Cookies == wire.CookiesPass && req.r.Header.Get("Cookie") != ""
}

// The Vary key. An answer is the origin's answer to the request it got, so the variant it is
// stored as, and the one a request selects, are keyed on the fields its Vary names as the
// request's fill sends them upstream (upstreamHeader), not as the client sent them: a field
// the edge sets (X-Forwarded-Proto from the client's connection, X-Forwarded-For, Via, a
// host's request_headers.set) is keyed on the edge's value, and one it drops (Cookie, If-*,
// a host's deny list, a field a forward list does not name) as absent. Keyed on the client's
// value, the answer for http was served to https clients (a redirect loop), one client's
// answer by address to every client, and each value of a dropped field filled a variant of its
// own. The hop-by-hop fields, which stay in the client's request, are keyed as absent by
// httpcache.VaryKey itself.
//
// Accept-Encoding is the exception: it is always keyed on the client's (normalised) field,
// whatever the host's request_headers do to it upstream (varyView). The edge codes a
// compressible answer in its client's coding and stores it as that coding's variant
// (compressAnswer), and decodes an upstream's coding for a client that does not accept it
// (undoCoding); keyed on what a deny or set list sends the origin, every client shared the
// first one's coding, and a client that accepts none was served br.
//
// Building the upstream header costs a hit allocations: it is built only for a Vary that names
// a field the edge sets or drops for the host (upstreamSets), once per request. Any other
// field (Accept-Encoding, Accept-Language, Accept, User-Agent, Origin, ...) goes upstream as
// the request holds it, and its key is read from the request itself.

// fillSetFields are the fields, lower-case as a Vary names them, that no fill sends as the
// client sent them, whatever the host: the ones it drops (fillOwn, fillDeny unless a forward
// list names them, Authorization on a shared fill, the fleet's own) or sets itself (Forwarded,
// Via, Traceparent; X-Forwarded-* are matched by prefix). Cookie is not among them: a cacheable
// request has none by the time it is looked up or filled (serveCacheable), so its key is the
// origin's already, and a Vary: Cookie (common) costs a hit nothing more. A field the edge
// only adds when the client sent none keeps its key too: Accept-Encoding (identity) is keyed
// alike on the lookup and the store, and an empty User-Agent is not sent.
var fillSetFields = func() map[string]bool {
	m := map[string]bool{}
	for _, l := range [][]string{fillOwn, fillDeny, {"Authorization", "Forwarded", "Via", "Traceparent",
		hopHeader, hopAuthHeader, purgeSeqHeader}} {
		for _, f := range l {
			m[strings.ToLower(f)] = true
		}
	}
	delete(m, "cookie")
	return m
}()

// fillSetLens has bit n set when a name of fillSetFields is n bytes long: most names a Vary
// holds (accept-encoding, accept-language, user-agent) fail this test, on every hit, without
// a map lookup.
var fillSetLens = func() (m uint64) {
	for f := range fillSetFields {
		m |= 1 << len(f)
	}
	return m
}()

// protocolNames is protocolFields lower-case, for a host with a forward list.
var protocolNames = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range protocolFields {
		m[strings.ToLower(f)] = true
	}
	return m
}()

// upstreamSets reports whether a shared fill for the host may send one of the fields vary
// (lower-case, as httpcache.Policy.Vary) names otherwise than the client sent it.
func (hs *hostState) upstreamSets(vary []string) bool {
	for _, name := range vary {
		if hs.setsField(name) {
			return true
		}
	}
	return false
}

// setsField is upstreamSets for one field name, lower-case (upstreamKeeps and upstreamHeader
// as they treat it, on a shared fill from any client).
func (hs *hostState) setsField(name string) bool {
	if name == "accept-encoding" {
		return false // keyed on the client's coding (varyView)
	}
	if slices.Contains(hs.upstreamNamed, name) {
		return true // denied or set, whatever a forward list says
	}
	all := hs.cfg.RequestHeaders.Forward.All()
	if len(name) < 64 && fillSetLens&(1<<len(name)) != 0 && fillSetFields[name] || strings.HasPrefix(name, "x-forwarded-") {
		// A forward list that names one of fillDeny forwards it as sent.
		return all || !namesField(fillDeny, name) || !namesField(hs.cfg.RequestHeaders.Forward, name)
	}
	return !all && !protocolNames[name] && !namesField(hs.cfg.RequestHeaders.Forward, name)
}

// upstreamNames is the host's request_headers deny and set field names, lower-case (setsField).
func upstreamNames(p wire.RequestHeaders) []string {
	var l []string
	for _, f := range p.Deny {
		l = append(l, strings.ToLower(f))
	}
	for f := range p.Set {
		l = append(l, strings.ToLower(f))
	}
	return l
}

// VaryHeader is the header whose fields select req's variant of a URL whose answers vary by
// vary (store.VaryHeader): req's own, unless the Vary names a field the host's shared fill sets
// or drops (upstreamSets), when it is the header req's shared fill sends (as upstreamHeader
// builds it, without the fill's validators or range), built once per request. A request with
// Authorization looks nothing up: it is filled for its client alone (serveCacheable).
func (req *request) VaryHeader(vary []string) http.Header {
	if !req.host.upstreamSets(vary) {
		return req.r.Header
	}
	if req.upstreamView == nil {
		req.upstreamView = req.host.node.varyView(req, sharedFill)
	}
	return req.upstreamView
}

// varyView is the header a Vary key of req reads when its fill of kind sends some field
// otherwise than the client did: that fill's upstream header, but with the client's
// Accept-Encoding as normalizeAcceptEncoding left it (none for identity), the coding the
// edge stores the answer in. Its value slice is one of the edge's own (normalizeAcceptEncoding
// replaced the client's), so the view may outlive the client's request.
func (n *Node) varyView(req *request, kind upstreamKind) http.Header {
	h := n.upstreamHeader(req, kind, 0)
	if ae, ok := req.r.Header["Accept-Encoding"]; ok {
		h["Accept-Encoding"] = ae
	} else {
		delete(h, "Accept-Encoding")
	}
	return h
}

// fillVariant is the Vary key an answer to req's fill of kind is stored as: its fields as
// that fill sent them. A fill for one client sends its Authorization, which a shared fill
// never does: a public answer whose Vary names it is the variant for those credentials, which
// no lookup (a shared fill's view, without them) selects. It builds that header (a miss's
// cost) rather than keep it, as a fleet ask's request is read by several goroutines at once.
func (n *Node) fillVariant(req *request, vary []string, kind upstreamKind) string {
	switch {
	case len(vary) == 0:
		return ""
	case !req.host.upstreamSets(vary):
		return httpcache.VaryKey(vary, req.r.Header)
	case kind == sharedFill && req.upstreamView != nil:
		return httpcache.VaryKey(vary, req.upstreamView)
	}
	return httpcache.VaryKey(vary, n.varyView(req, kind))
}
