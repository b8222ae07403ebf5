package edge

import (
	"net/http"
	"net/url"
	"strings"

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
	names := []originName{{host: asciiHost(u.Hostname()), port: u.Port()}}
	if names[0].port == "" {
		names[0].port = defaultPort(u.Scheme)
	}
	if originHost != "" {
		if h, err := url.Parse("http://" + originHost); err == nil { // validated: a host[:port]
			names = append(names, originName{host: asciiHost(h.Hostname()), port: h.Port()})
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

func defaultPort(scheme string) string {
	if strings.EqualFold(scheme, "https") {
		return "443"
	}
	return "80"
}

// originRef reports whether u starts with an absolute http or https URL that names the
// host's origin (originNames; scheme and host in any case, no userinfo) under the path of its
// URL, if it has one ("http://10.0.0.5/site" and "/site/a", not "/sitemap": the edge sends
// "/a" there as "/site/a"), and returns its scheme, lower-case, and what follows that path
// (the rest of the path, query, fragment, and anything after the URL, such as a closing
// quote).
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
	if end := strings.IndexAny(auth, "/?#'\" \t"); end >= 0 {
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
	if port == "" {
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
	if base != "" && rest != "" && !strings.ContainsRune("/?#'\" \t", rune(rest[0])) {
		return "", false // "/sitemap" is not under "/site"
	}
	return rest, true
}

// sameHost compares host, as a URL gives it, with name (asciiHost's form).
func sameHost(host, name string) bool {
	if strings.EqualFold(host, name) {
		return true
	}
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 { // a Unicode name: compare its ASCII form
			return asciiHost(host) == name
		}
	}
	return false
}

// urlFields are the answer fields whose URL the edge gives a client as its own (above).
var urlFields = [...]string{"Location", "Content-Location", "Refresh"}

// namesOrigin reports whether a URL field of h names the host's origin.
func (hs *hostState) namesOrigin(h http.Header) bool {
	for _, k := range urlFields {
		for _, v := range h[k] {
			if _, _, ok := hs.originRef(fieldURL(k, v)); ok {
				return true
			}
		}
	}
	return false
}

// fieldURL is the part of field k's value v that starts with its URL: all of a Location or
// Content-Location, what follows "url=" in a Refresh ("5; url=http://a/b", as nginx reads it;
// an opening quote skipped), "" if it has none.
func fieldURL(k, v string) string {
	v = strings.TrimLeft(v, " \t")
	if k != "Refresh" {
		return v
	}
	for i := 0; i+4 <= len(v); i++ {
		if strings.EqualFold(v[i:i+4], "url=") {
			v = strings.TrimLeft(v[i+4:], " \t")
			if v != "" && (v[0] == '\'' || v[0] == '"') {
				v = v[1:]
			}
			return v
		}
	}
	return ""
}

// clientURLs gives req's client the URL fields of h that name the host's origin as the host's
// own URL: the host's name (as an origin is sent it by default, origin_host unset) in the
// client's scheme for an http URL of an http origin, else in the URL's own. An https URL is
// never made http: an origin's redirect to https (from http, or by the X-Forwarded-Proto it
// was sent, under its own scheme) stays one, or it would loop. Value slices are replaced,
// never written: they may be a stored object's.
func clientURLs(h http.Header, req *request) {
	hs := req.host
	for _, k := range urlFields {
		vs := h[k]
		var out []string
		for i, v := range vs {
			u := fieldURL(k, v)
			scheme, rest, ok := hs.originRef(u)
			if !ok {
				continue
			}
			if scheme == "http" && hs.origin.Scheme == "http" {
				scheme = clientScheme(req)
			}
			if out == nil {
				out = append([]string(nil), vs...)
			}
			out[i] = v[:len(v)-len(u)] + scheme + "://" + hs.cfg.Host + rest
		}
		if out != nil {
			h[k] = out
		}
	}
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
