package edge

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"unsafe"

	"github.com/meridian-cdn/meridian/internal/idnhost"
)

// An origin that builds absolute URLs from its own name or address (its configured base URL,
// the address it listens on, or the origin_host it is sent) answers with URLs a client cannot
// use: "Location: http://10.0.0.5:8080/login". nginx's default (proxy_redirect default)
// rewrites a Location or Refresh that starts with the proxy_pass URL to the client's scheme
// and host; Apache's ProxyPassReverse does so for Location and Content-Location. The edge
// does the same for those three fields, at delivery: the stored answer keeps the origin's
// URL, since the key does not hold the client's scheme (a 301 filled for an http client is
// served to https ones), and a fleet node is given it unchanged, to rewrite for its own
// clients.

// originName is one authority by which an origin may name itself: a lower-case ASCII host and
// its port, "" for the default port of whatever scheme names it.
type originName struct{ host, port string }

// originNames are the authorities of the origin u (its URL's, with its scheme's default port
// if none) and of originHost (the Host it is sent, if set).
func originNames(u *url.URL, originHost string) []originName {
	names := []originName{{host: asciiHost(u.Hostname()), port: portNumber(u.Port())}}
	if names[0].port == "" {
		names[0].port = defaultPort(u.Scheme)
	}
	if originHost != "" {
		if h, err := url.Parse("http://" + originHost); err == nil { // validated: a host[:port]
			names = append(names, originName{host: asciiHost(h.Hostname()), port: portNumber(h.Port())})
		}
	}
	return names
}

// asciiHost is host lower-case, in its ASCII form if it is an internationalised name, without
// a trailing dot.
func asciiHost(host string) string {
	if a, err := idnhost.ToASCII(host); err == nil {
		host = a
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// portNumber is port, a URL's digits, without leading zeros: a port is a number, and a
// client reads "080" as 80 (WHATWG URL; Go dials it so). "" stays "".
func portNumber(port string) string {
	for len(port) > 1 && port[0] == '0' {
		port = port[1:]
	}
	return port
}

func defaultPort(scheme string) string {
	if strings.EqualFold(scheme, "https") {
		return "443"
	}
	return "80"
}

// originRef reports whether u is an absolute http or https URL that names the host's origin
// (originNames; scheme and host in any case, no userinfo) under the path of its URL, if it
// has one ("http://10.0.0.5/site" and "/site/a", not "/sitemap": the edge sends "/a" there as
// "/site/a"), and returns its scheme, lower-case, and what follows that path (the rest of the
// path, query, fragment). Its authority ends at "/", "?", "#" or u's end (RFC 3986 §3.2), so
// anything else in it (a tab, which a client drops to read what follows as authority too; a
// quote; a backslash) makes it another authority, left alone.
func (hs *hostState) originRef(u string) (scheme, rest string, ok bool) {
	i := strings.Index(u, "://")
	if i < 0 {
		return "", "", false
	}
	switch {
	case strings.EqualFold(u[:i], "http"):
		scheme = "http"
	case strings.EqualFold(u[:i], "https"):
		scheme = "https"
	default:
		return "", "", false
	}
	auth := u[i+3:]
	if end := strings.IndexAny(auth, "/?#"); end >= 0 {
		auth, rest = auth[:end], auth[end:]
	}
	if strings.Contains(auth, "@") {
		return "", "", false // userinfo: not a URL the origin gives for itself
	}
	host, port := auth, ""
	if j := strings.LastIndexByte(auth, ':'); j >= 0 && !strings.Contains(auth[j:], "]") {
		host, port = auth[:j], auth[j+1:]
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if port = portNumber(port); port == "" {
		port = defaultPort(scheme)
	}
	for _, o := range hs.originNames {
		p := o.port
		if p == "" {
			p = defaultPort(scheme)
		}
		if p == port && sameHost(host, o.host) {
			if rest, ok := underBase(rest, hs.origin.Path); ok {
				return scheme, rest, true
			}
			return "", "", false
		}
	}
	return "", "", false
}

// underBase reports whether rest, what follows a URL's authority, is under the path base (no
// trailing slash), and returns it without base.
func underBase(rest, base string) (string, bool) {
	if !strings.HasPrefix(rest, base) {
		return "", false
	}
	rest = rest[len(base):]
	if base != "" && rest != "" && !strings.ContainsRune("/?#", rune(rest[0])) {
		return "", false // "/sitemap" is not under "/site"
	}
	return rest, true
}

// sameHost compares host, as a URL gives it, with name (asciiHost's form).
func sameHost(host, name string) bool {
	if strings.EqualFold(host, name) {
		return true
	}
	// A Unicode name: compare its ASCII form.
	return !idnhost.IsASCII(host) && asciiHost(host) == name
}

// urlFields are the answer fields whose URL the edge gives a client as its own (above).
var urlFields = [...]string{"Location", "Content-Location", "Refresh"}

// namesOrigin reports whether a URL field of h names the host's origin, to be rewritten for
// each client: never when the host keeps them.
func (hs *hostState) namesOrigin(h http.Header) bool {
	if hs.keepURLs {
		return false
	}
	for _, k := range urlFields {
		for _, v := range h[k] {
			_, u, _ := fieldURL(k, v)
			if _, _, ok := hs.originRef(u); ok {
				return true
			}
		}
	}
	return false
}

// fieldURL splits field k's value v into the URL it names and what comes before and after
// it (v == pre+u+post): all of a Location or Content-Location but leading whitespace; for a
// Refresh, the URL as HTML's declarative refresh reads it ("5; url=http://a/b", "5;
// URL='http://a/b'", "5, http://a/b": "url=" is optional, a quote is taken off both ends),
// u "" if it has none. A "url=" elsewhere, in another URL's query, is not the field's.
func fieldURL(k, v string) (pre, u, post string) {
	i := skipSpace(v, 0)
	if k != "Refresh" {
		return v[:i], v[i:], ""
	}
	// The time: digits, then digits and dots; then a separator.
	j := i
	for j < len(v) && '0' <= v[j] && v[j] <= '9' {
		j++
	}
	if j == i && (j == len(v) || v[j] != '.') {
		return v, "", "" // no time: a browser ignores the field
	}
	for j < len(v) && ('0' <= v[j] && v[j] <= '9' || v[j] == '.') {
		j++
	}
	if j == len(v) || !(v[j] == ';' || v[j] == ',' || isSpace(v[j])) {
		return v, "", ""
	}
	j = skipSpace(v, j)
	if j < len(v) && (v[j] == ';' || v[j] == ',') {
		j++
	}
	j = skipSpace(v, j)
	quoted := true
	if j+3 <= len(v) && strings.EqualFold(v[j:j+3], "url") {
		if e := skipSpace(v, j+3); e < len(v) && v[e] == '=' {
			j = skipSpace(v, e+1)
		} else {
			quoted = false // "url" not followed by "=" starts the URL itself
		}
	}
	end := len(v)
	if quoted && j < len(v) && (v[j] == '\'' || v[j] == '"') {
		q := v[j]
		j++
		if e := strings.IndexByte(v[j:], q); e >= 0 {
			end = j + e
		}
	}
	return v[:j], v[j:end], v[end:]
}

// skipSpace is the index of the first byte of v from i on that is not ASCII whitespace.
func skipSpace(v string, i int) int {
	for i < len(v) && isSpace(v[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r' }

// clientURLs gives req's client the URL fields of h that name the host's origin as the host's
// own URL (clientURL), unless the host keeps them (response_headers.origin_urls: keep). Value
// slices are replaced, never written: they may be a stored object's.
func clientURLs(h http.Header, req *request) {
	if !req.host.keepURLs {
		hostURLs(h, req)
	}
}

// hostURLs is clientURLs whatever the host's origin_urls: also what invalidation reads.
func hostURLs(h http.Header, req *request) {
	for _, k := range urlFields {
		vs := h[k]
		var out []string
		for i, v := range vs {
			pre, scheme, rest, post, ok := clientURL(req, k, v)
			if !ok {
				continue
			}
			if out == nil {
				out = append([]string(nil), vs...)
			}
			out[i] = pre + scheme + "://" + req.host.cfg.Host + rest + post
		}
		if out != nil {
			h[k] = out
		}
	}
}

// appendClientURLs appends to b the field lines of lines, URL fields serialised as
// http1.AppendField does, each as req's client gets it (clientURL): a hit's header block
// holds every other field of an answer whose URL fields name the origin (blockHeader).
func appendClientURLs(b []byte, req *request, lines []byte) []byte {
	for len(lines) > 0 {
		line, more, _ := bytes.Cut(lines, []byte("\r\n"))
		lines = more
		// The memo's bytes never change once built: its strings need no copy.
		k, v, _ := strings.Cut(unsafe.String(unsafe.SliceData(line), len(line)), ": ")
		pre, scheme, rest, post, ok := clientURL(req, k, v)
		if !ok {
			b = append(append(b, line...), "\r\n"...)
			continue
		}
		b = append(append(b, k...), ": "...)
		b = append(append(append(b, pre...), scheme...), "://"...)
		b = append(append(append(b, req.host.cfg.Host...), rest...), post...)
		b = append(b, "\r\n"...)
	}
	return b
}

// clientURL reports whether field k's value v names the host's origin, and returns it as
// req's client gets it, pre+scheme+"://"+host+rest+post: the host's name (as an origin is sent
// it by default, origin_host unset) in the client's scheme for an http URL of an http origin,
// else in the URL's own. An https URL is never made http: an origin's redirect to https (from
// http, or by the X-Forwarded-Proto it was sent, under its own scheme) stays one, or it would
// loop.
func clientURL(req *request, k, v string) (pre, scheme, rest, post string, ok bool) {
	hs := req.host
	pre, u, post := fieldURL(k, v)
	scheme, rest, ok = hs.originRef(u)
	if !ok {
		return "", "", "", "", false
	}
	if scheme == "http" && hs.origin.Scheme == "http" {
		scheme = clientScheme(req)
	}
	return pre, scheme, rest, post, true
}

// clientScheme is the scheme of req's client as the edge tells the origin
// (X-Forwarded-Proto): a trusted proxy's, else that of the client's connection.
func clientScheme(req *request) string {
	if _, trusted := req.host.node.forwardedFor(req); trusted {
		if v := req.r.Header["X-Forwarded-Proto"]; len(v) > 0 {
			first, _, _ := strings.Cut(v[0], ",")
			switch first = strings.TrimSpace(first); {
			case strings.EqualFold(first, "http"):
				return "http"
			case strings.EqualFold(first, "https"):
				return "https"
			}
		}
	}
	if req.r.TLS != nil {
		return "https"
	}
	return "http"
}
