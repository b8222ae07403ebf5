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
//     that client's fields match it on every field the answer's Vary names, so an origin whose
//     answer depends on a field must say so in Vary (then that field is part of the key; a
//     hop-by-hop one, which no fill carries, counts as absent: httpcache.VaryKey);
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

// fillDeny are fields that rewrite what an origin answers (the URL, the method, the host it
// believes it serves) and that no cache keys on: never sent on a fill unless the host's
// forward list names them.
var fillDeny = []string{"X-Original-Url", "X-Rewrite-Url", "X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

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
