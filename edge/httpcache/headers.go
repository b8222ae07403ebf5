package httpcache

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// hopByHop are the RFC 9110 §7.6.1 connection-specific fields, plus the legacy Keep-Alive and
// Proxy-Connection.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// RemoveHopByHop deletes RFC 9110 §7.6.1 hop-by-hop fields from h: Connection and every field it
// names, Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
// Transfer-Encoding, Upgrade.
func RemoveHopByHop(h http.Header) {
	RemoveConnectionOptions(h)
	for _, k := range hopByHop {
		delete(h, k)
	}
}

// RemoveConnectionOptions deletes from h the fields its Connection names (RFC 9110 §7.6.1),
// but not the hop-by-hop fields themselves, which the recipient may still need (an upgrade's
// Connection and Upgrade; VaryKey keys them as absent). A proxy removes them from a request as
// it arrives: one that kept them while leaving them out of what it forwards would key on, and
// select a stored variant by, a field the origin never saw.
func RemoveConnectionOptions(h http.Header) {
	for _, v := range h["Connection"] {
		for o := range strings.SplitSeq(v, ",") {
			// The options almost every message names are not canonicalised into a new
			// string. Equal lengths keep the comparison to ASCII, as CanonicalHeaderKey's
			// (strings.EqualFold alone would take "cloſe" for "close").
			switch o = trimOWS(o); {
			case o == "":
			case len(o) == len("keep-alive") && strings.EqualFold(o, "keep-alive"):
				// Keep-Alive is in hopByHop.
			case len(o) == len("close") && strings.EqualFold(o, "close"):
				delete(h, "Close")
			default:
				if k := http.CanonicalHeaderKey(o); !IsHopByHop(k) {
					delete(h, k)
				}
			}
		}
	}
}

// IsHopByHop reports whether the field k (canonical) is one of the hop-by-hop fields
// themselves (RemoveHopByHop's fixed list), not one that a Connection names: a copy of a header
// whose Connection options were removed already (RemoveConnectionOptions) tests only these.
func IsHopByHop(k string) bool { return slices.Contains(hopByHop, k) }

// hopByHopLens has bit n set when a field of hopByHop is n bytes long.
var hopByHopLens = func() (m uint64) {
	for _, k := range hopByHop {
		m |= 1 << len(k)
	}
	return m
}()

// hopByHopName is IsHopByHop for a field name in any case (a Vary's are lower-cased). It is on
// every hit of a URL with a Vary (VaryKey): the usual names (Accept-Encoding, ...) fail at the
// length test, inlined.
func hopByHopName(name string) bool {
	return len(name) < 64 && hopByHopLens&(1<<len(name)) != 0 && hopByHopFold(name)
}

// hopByHopFold compares name with each of hopByHop, ignoring case. Equal lengths keep the
// comparison to ASCII, as in RemoveConnectionOptions. Kept out of line, so that hopByHopName
// is inlined.
//
//go:noinline
func hopByHopFold(name string) bool {
	for _, k := range hopByHop {
		if len(k) == len(name) && strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// notRefreshed are the fields a 304 never changes in the stored header (RFC 9111 §3.2):
// Content-Length (MUST NOT), Content-Encoding (it describes the stored bytes, which the 304 does
// not replace), and Content-Range (processed and removed by the recipient). Hop-by-hop fields
// are dropped by RemoveHopByHop instead.
var notRefreshed = []string{"Content-Length", "Content-Encoding", "Content-Range"}

// Refresh returns the stored header updated by a 304 response per RFC 9111 §3.2 and §4.3.4:
// each field in the 304 replaces the stored field of that name, except those in notRefreshed,
// and hop-by-hop fields (of either) are dropped. Neither argument is modified. The caller
// recomputes the Policy from the result (and deletes its StripFields again).
func Refresh(stored, notModified http.Header) http.Header {
	out := stored.Clone()
	if out == nil {
		out = http.Header{}
	}
	RemoveHopByHop(out)
	update := notModified.Clone()
	RemoveHopByHop(update)
	for _, f := range notRefreshed {
		delete(update, f)
	}
	if sWeak, sOpaque, ok := ParseETag(out.Get("Etag")); ok && sWeak {
		// The strong form of a stored weak tag (NotModifiedSelects takes it) does not make
		// the copy's tag strong: nginx's 304s to its gzip answers' W/"x" carry "x", the
		// uncoded file's, whose bytes the copy does not have.
		if weak, opaque, ok := ParseETag(update.Get("Etag")); ok && !weak && opaque == sOpaque {
			delete(update, "Etag")
		}
	}
	for k, v := range update {
		out[http.CanonicalHeaderKey(k)] = v
	}
	return out
}

// NotModifiedSelects reports whether a 304 (header notModified) identifies the stored response
// whose validators are etag and lastModified (either may be ""), so that Refresh may update it
// (RFC 9111 §4.3.4). etag is the stored entity tag as the revalidation sent it.
//   - An entity tag in the 304 decides, compared weakly (RFC 9110 §8.8.3.2): a stored response
//     with another opaque tag is not the one it names. The letter of §4.3.4 would take a strong
//     tag only for a stored strong one, but nginx answers the conditional request for its gzip
//     answer's W/"x" with a 304 carrying "x" (the uncoded file's tag): strictly, every
//     revalidation of such a copy would be a full fetch. Refresh keeps the stored weak tag then.
//     A stored response without a tag is not the one a tagged 304 names.
//   - A 304 without one but with a Last-Modified identifies only a stored response with the
//     same date.
//   - A 304 with neither identifies the response it answers. RFC 9111 would identify it only if
//     that response had no validators either, but many servers send bare 304s, which nginx
//     and Varnish accept; the answer to a conditional request is about its validators.
//
// An entity tag or date that does not parse is no validator.
func NotModifiedSelects(etag, lastModified string, notModified http.Header) bool {
	if _, opaque, ok := ParseETag(notModified.Get("Etag")); ok {
		_, sOpaque, sOK := ParseETag(etag)
		return sOK && opaque == sOpaque
	}
	if lm, err := ParseDate(notModified.Get("Last-Modified")); err == nil {
		stored, err := ParseDate(lastModified)
		return err == nil && stored.Equal(lm)
	}
	return true
}

// parseETag splits an entity tag (RFC 9110 §8.8.3) into its weakness and its opaque part.
func ParseETag(s string) (weak bool, opaque string, ok bool) {
	s = trimOWS(s)
	if rest, found := strings.CutPrefix(s, "W/"); found {
		weak, s = true, rest
	}
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return false, "", false
	}
	opaque = s[1 : len(s)-1]
	for i := 0; i < len(opaque); i++ {
		// etagc = %x21 / %x23-7E / obs-text
		if c := opaque[i]; c < 0x21 || c == '"' || c == 0x7f {
			return false, "", false
		}
	}
	return weak, opaque, true
}

// surrogateHeaders are the fields addressed to the CDN rather than the client. CDN-Cache-Control
// is not one of them: a CDN that reads it "will typically forward" it, so that a CDN downstream
// can read it too (RFC 9213 §3), as every cache the cache-tests suite has published results for
// does (bench/cache-tests.sh).
var surrogateHeaders = []string{
	"Surrogate-Key", "Cache-Tag", "Cache-Groups", "Cache-Group-Invalidation",
	hdrSurrogateControl,
}

// StripSurrogateHeaders removes Surrogate-Key, Cache-Tag, Cache-Groups, Cache-Group-Invalidation
// and Surrogate-Control (targeted at us, not the client).
func StripSurrogateHeaders(h http.Header) {
	for _, f := range surrogateHeaders {
		delete(h, f)
	}
}

// InvalidationTargets implements RFC 9111 §4.4: for an unsafe method (anything but GET, HEAD,
// OPTIONS and TRACE) answered with a non-error status (2xx or 3xx), the request-targets
// (path, plus "?query" if any) to purge: the request's own, then those of Location and
// Content-Location when they resolve (against reqURL) to the same host as host, compared
// case-insensitively without port. Duplicates are removed. Nil otherwise. Each path is
// spelt by escapedPath, as the caller keys a request's: net/url's own escaping turns a
// "%2F" into "/" when the path also holds a byte it must escape ("/a%2Fb|c" would name
// "/a/b%7Cc", another resource), so the caller's spelling is taken before references resolve.
func InvalidationTargets(method string, reqURL *url.URL, host string, status int, respHeader http.Header, escapedPath func(*url.URL) string) []string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return nil
	}
	if status < 200 || status > 399 {
		return nil
	}
	// spelt is u with its path as escapedPath spells it, which resolving keeps (url takes a
	// RawPath it would write itself as it is).
	spelt := func(u *url.URL) *url.URL {
		if u.RawPath == "" {
			return u // no spelling of its own: escapedPath has nothing to keep
		}
		c := *u
		c.RawPath = escapedPath(u)
		return &c
	}
	base := &url.URL{Path: "/"}
	if reqURL != nil {
		base = spelt(reqURL)
	}
	var out []string
	add := func(u *url.URL) {
		t := requestTarget(u)
		for _, o := range out {
			if o == t {
				return
			}
		}
		out = append(out, t)
	}
	if reqURL != nil {
		add(base)
	}
	want := strings.ToLower(stripPort(host))
	for _, name := range []string{"Location", "Content-Location"} {
		v := respHeader[name]
		if len(v) == 0 {
			continue
		}
		ref, err := url.Parse(strings.TrimSpace(v[0]))
		if err != nil {
			continue
		}
		// A relative reference stays on the request's host; an absolute one must name it.
		if (ref.Scheme != "" || ref.Host != "") && !strings.EqualFold(stripPort(ref.Host), want) {
			continue
		}
		t := base.ResolveReference(spelt(ref))
		if ref.Scheme == "" && ref.Host == "" && ref.Path == "" && ref.RawQuery == "" && !ref.ForceQuery {
			// RFC 3986 §5.2.2: no path and no query keeps the base's query, an empty one too;
			// net/url keeps its text but not the "?" of an empty one ("/x?" is not "/x").
			t.ForceQuery = base.ForceQuery
		}
		add(t)
	}
	return out
}

// requestTarget is the origin-form request-target of u: path (at least "/") and "?query".
func requestTarget(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	if u.RawQuery != "" || u.ForceQuery {
		return p + "?" + u.RawQuery
	}
	return p
}
