// Package purge owns the purge message and how it travels: publishing to the PURGE stream, the
// node-side subscriber that replays what it missed, and per-node acknowledgements.
package purge

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

// Kind says what a purge message matches.
type Kind string

// The purge kinds. Their matching rules are in docs/purge.md.
const (
	// KindURL matches exact URLs (path and query), with all their Vary variants.
	KindURL Kind = "url"
	// KindPrefix matches URLs under a path prefix, on segment boundaries (see PrefixMatches).
	KindPrefix Kind = "prefix"
	// KindKey matches objects tagged with a surrogate key (Surrogate-Key, Cache-Tag, Cache-Groups).
	KindKey Kind = "key"
	// KindAll matches every object of the host.
	KindAll Kind = "all"
)

// Limits on one purge.
const (
	// MaxValues is the most values one message, or one request in total, may carry.
	MaxValues = 1000
	// MaxValueBytes is the longest value (URL, prefix or key) accepted.
	MaxValueBytes = 2048
)

// Message is one purge command as stored in the PURGE stream.
type Message struct {
	// ID is unique per purge (see NewID) and doubles as the Nats-Msg-Id, so a re-published
	// purge is stored once.
	ID string `json:"id"`
	// Seq is the stream sequence, filled in by Publish and by the Subscriber; it is not sent.
	Seq  uint64 `json:"seq,omitempty"`
	Host string `json:"host"`
	Kind Kind   `json:"kind"`
	// Values are path-form URLs ("/a?b"), path prefixes or surrogate keys; empty for KindAll.
	Values []string `json:"values,omitempty"`
	// Soft marks matching objects stale instead of gone.
	Soft     bool      `json:"soft,omitempty"`
	IssuedAt time.Time `json:"issued_at"`
	// Issuer says who asked (a token name), for audit.
	Issuer string `json:"issuer,omitempty"`
}

// Validate reports the first problem with the message, as a *wire.FieldError naming the field.
// Absolute URLs of the message's host are accepted; Normalize turns them into path form.
func (m Message) Validate() error {
	_, err := m.Normalize()
	return err
}

// Normalize validates m and returns a copy whose URL values are in path form ("/x?y"). Publish
// and the Subscriber both normalise, so nodes only ever see path-form URLs.
func (m Message) Normalize() (Message, error) {
	if m.ID == "" {
		return m, &wire.FieldError{Field: "id", Err: errors.New("is required")}
	}
	if len(m.ID) > 128 || strings.ContainsFunc(m.ID, badKeyRune) {
		return m, &wire.FieldError{Field: "id", Err: fmt.Errorf("%.40q is not a valid purge id", m.ID)}
	}
	if err := wire.ValidateHostname(m.Host); err != nil {
		return m, &wire.FieldError{Field: "host", Err: err}
	}
	values, err := normalizeValues(m.Host, m.Kind, m.Values, "values")
	if err != nil {
		return m, err
	}
	m.Values = values
	return m, nil
}

// normalizeValues checks values for kind and returns them normalised; field names the JSON field
// in errors ("values", or "urls" and friends for a Request).
func normalizeValues(host string, kind Kind, values []string, field string) ([]string, error) {
	switch kind {
	case KindAll:
		if len(values) != 0 {
			return nil, &wire.FieldError{Field: field, Err: errors.New("must be empty for a purge of everything")}
		}
		return nil, nil
	case KindURL, KindPrefix, KindKey:
	case "":
		return nil, &wire.FieldError{Field: "kind", Err: errors.New("is required")}
	default:
		return nil, &wire.FieldError{Field: "kind", Err: fmt.Errorf("%.40q is not url, prefix, key or all", string(kind))}
	}
	if len(values) == 0 {
		return nil, &wire.FieldError{Field: field, Err: errors.New("needs at least one value")}
	}
	if len(values) > MaxValues {
		return nil, &wire.FieldError{Field: field, Err: fmt.Errorf("has %d values, at most %d are allowed", len(values), MaxValues)}
	}
	// out is values until a value changes: nodes normalise purges that are normal already.
	out := values
	for i, v := range values {
		// The field name is made only for an error: every node normalises every purge.
		f := func() string { return fmt.Sprintf("%s[%d]", field, i) }
		if len(v) > MaxValueBytes {
			return nil, &wire.FieldError{Field: f(), Err: fmt.Errorf("is %d bytes, at most %d are allowed", len(v), MaxValueBytes)}
		}
		var err error
		switch kind {
		case KindURL:
			v, err = NormalizeURL(host, v)
		case KindPrefix:
			v, err = NormalizePrefix(v)
		case KindKey:
			err = checkKey(v)
		}
		if err != nil {
			return nil, &wire.FieldError{Field: f(), Err: err}
		}
		if len(v) > MaxValueBytes {
			// Bound as nodes get it, or they would refuse the message (control's publish
			// did, with a 503 after the request's other kinds were published).
			return nil, &wire.FieldError{Field: f(), Err: fmt.Errorf("is %d bytes percent-encoded as edges key it, at most %d are allowed; purge a prefix", len(v), MaxValueBytes)}
		}
		if v != out[i] {
			if &out[0] == &values[0] {
				out = slices.Clone(values)
			}
			out[i] = v
		}
	}
	return out, nil
}

// NormalizeURL turns a purge URL into the path form nodes match against: the escaped path plus
// "?query" when there is one, without fragment. raw is either path-absolute ("/a/b?c=1") or an
// absolute http(s) URL whose hostname is host (any port).
func NormalizeURL(host, raw string) (string, error) {
	if plainURL(raw) {
		// Normal already (what every node gets from control): no need to parse it.
		return raw, nil
	}
	return normalizeURLParsed(host, raw)
}

// plainURL reports whether raw is a path that normalizeURLParsed returns unchanged: "/" (not
// "//"), then only unreserved characters and "/" without a dot segment, then optionally "?" and
// a query of unreserved characters and "=&+/" (FuzzNormalizeURLPlain holds the two equal).
func plainURL(raw string) bool {
	if raw == "" || raw[0] != '/' || (len(raw) > 1 && raw[1] == '/') {
		return false
	}
	query := false
	for i := 1; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '.' && !query && dotSegmentAt(raw, i):
			return false // refused by normalizeURLParsed
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~', c == '/':
		case c == '?' && !query:
			query = true
		case query && (c == '=' || c == '&' || c == '+'):
		default:
			return false
		}
	}
	return true
}

// normalizeURLParsed is NormalizeURL for any input, through net/url.
func normalizeURLParsed(host, raw string) (string, error) {
	if raw == "" {
		return "", errors.New("is empty")
	}
	if strings.ContainsFunc(raw, badURLRune) {
		return "", fmt.Errorf("%.80q contains white space or control characters", raw)
	}
	u, err := parsePurgeURL(raw)
	if err != nil {
		return "", fmt.Errorf("%.80q is not a URL", raw)
	}
	switch {
	case u.Scheme == "" && u.Host == "":
		if !strings.HasPrefix(raw, "/") {
			return "", fmt.Errorf("%.80q is neither a path starting with / nor an absolute URL", raw)
		}
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%.80q is not an http or https URL", raw)
	case u.User != nil:
		return "", fmt.Errorf("%.80q carries user information", raw)
	default:
		// The edge drops a trailing dot too. A Unicode name is compared in ASCII, the form
		// clients send and host is in.
		h, err := Hostname(u.Hostname())
		if err != nil && u.Hostname() != "" {
			return "", fmt.Errorf("%.80q has an invalid host: %w", raw, err)
		}
		if err != nil || h != host {
			return "", fmt.Errorf("%.80q does not belong to host %s", raw, host)
		}
	}
	if u.Opaque != "" {
		return "", fmt.Errorf("%.80q is not a hierarchical URL", raw)
	}
	// As spelt, as the edge keys a request's path: u.EscapedPath may turn "%2F" into "/".
	p := wire.EscapedPath(u)
	if p == "" {
		p = "/"
	}
	if wire.HasDotSegment(u.Path) {
		return "", errDotSegment(raw)
	}
	if u.RawQuery != "" || u.ForceQuery {
		p += "?" + escapeNonASCII(u.RawQuery)
	}
	return p, nil
}

// parsePurgeURL parses a purge URL or prefix. One starting with "/" is origin-form, a request
// target's path and query (RFC 9112 §3.2.1), read as the edge reads the targets it keys: "//a"
// is the path "//a", whose first segment is empty, not a scheme-relative URL naming host "a"
// (url.Parse's reading, which refused it or, for "//?q", purged "/?q" instead). The fragment,
// which no request target carries, is dropped.
func parsePurgeURL(raw string) (*url.URL, error) {
	if !strings.HasPrefix(raw, "/") {
		return url.Parse(raw)
	}
	target, _, _ := strings.Cut(raw, "#")
	return url.ParseRequestURI(target)
}

// checkSchemeRelative refuses a purge URL as a request names it that is also a scheme-relative
// URL of host ("//www.example.com/a"): the operator may mean that URL or the path, and the
// absolute form says which. Only requests are checked: a message's path-form "//…" value is
// the path (it may come from "https://www.example.com//www.example.com/a").
func checkSchemeRelative(host, raw string) error {
	if !strings.HasPrefix(raw, "//") {
		return nil
	}
	r, err := url.Parse(raw)
	if err != nil || r.Host == "" {
		return nil
	}
	if h, err := Hostname(r.Hostname()); err != nil || h != host {
		return nil
	}
	return fmt.Errorf("%.80q is ambiguous, a path starting with // or a scheme-relative URL of %s: give an absolute URL (https://%s//… for the path)", raw, host, host)
}

// escapeNonASCII percent-encodes the bytes of s above 0x7f. Clients send a query's UTF-8
// percent-encoded ("?q=%C3%A9"), and edges key it as sent: a purge of "?q=é" as typed must
// name that key, as EscapedPath does for the path. s is valid UTF-8 (badURLRune).
func escapeNonASCII(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 }) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// NormalizePrefix turns a purge prefix into the form nodes match against: a path starting with
// "/", escaped like NormalizeURL, without query, and without a trailing "/" (except the root), since
// prefixes match whole path segments anyway (see PrefixMatches).
func NormalizePrefix(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New("is empty")
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("%.80q does not start with /", p)
	case strings.ContainsAny(p, "?#"):
		return "", fmt.Errorf("%.80q has a query or fragment; a prefix is a path", p)
	case strings.ContainsFunc(p, badURLRune):
		return "", fmt.Errorf("%.80q contains white space or control characters", p)
	}
	u, err := parsePurgeURL(p)
	if err != nil {
		return "", fmt.Errorf("%.80q is not a path", p)
	}
	if wire.HasDotSegment(u.Path) {
		return "", errDotSegment(p)
	}
	out := wire.EscapedPath(u)
	for len(out) > 1 && strings.HasSuffix(out, "/") {
		out = out[:len(out)-1]
	}
	if out == "" {
		return "", fmt.Errorf("%.80q is not a path", p)
	}
	return out, nil
}

// dotSegmentAt reports whether the '.' at s[i] begins a "." or ".." segment of the path s
// (plainURL: no escapes, no query before i).
func dotSegmentAt(s string, i int) bool {
	if s[i-1] != '/' {
		return false
	}
	end := strings.IndexAny(s[i:], "/?")
	if end < 0 {
		end = len(s) - i
	}
	seg := s[i : i+end]
	return seg == "." || seg == ".."
}

func errDotSegment(raw string) error {
	return fmt.Errorf("%.80q has a . or .. segment, which the edge never serves; give the path it resolves to", raw)
}

func checkKey(k string) error {
	switch {
	case k == "":
		return errors.New("is empty")
	case strings.ContainsFunc(k, badKeyRune):
		return fmt.Errorf("%.80q contains white space, commas or control characters", k)
	}
	return nil
}

// badURLRune refuses what a request target cannot carry unescaped.
func badURLRune(r rune) bool { return r <= ' ' || r == 0x7f || r == '\uFFFD' }

// badKeyRune refuses separators of the Surrogate-Key / Cache-Tag / Cache-Groups lists.
func badKeyRune(r rune) bool { return badURLRune(r) || r == ',' || r == '"' }

// PrefixMatches reports whether the path-form URL uri falls under the normalised prefix (see
// NormalizePrefix). Prefixes match whole path segments: "/a" matches "/a", "/a/", "/a/b" and
// "/a?x" but not the sibling "/ab"; "/" matches everything. The query never takes part.
func PrefixMatches(prefix, uri string) bool {
	path, _, _ := strings.Cut(uri, "?")
	if prefix == "/" {
		return strings.HasPrefix(path, "/")
	}
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}

// DecodeMessage parses and normalises a message as read from the stream.
func DecodeMessage(data []byte) (Message, error) { return decodeMessage(data, string(data)) }

// decodeOwnedMessage is DecodeMessage for data nothing writes to again (see ownedString): the
// fast path reads it without a copy.
func decodeOwnedMessage(data []byte) (Message, error) {
	return decodeMessage(data, ownedString(data))
}

// decodeMessage decodes data, given also as the string s whose memory the strings of the
// Message may share.
func decodeMessage(data []byte, s string) (Message, error) {
	m, ok := decodeMessageText(s)
	if !ok {
		m = Message{}
		if err := json.Unmarshal(data, &m); err != nil {
			return Message{}, fmt.Errorf("decode purge message: %w", err)
		}
	}
	m, err := m.Normalize()
	if err != nil {
		return Message{}, fmt.Errorf("decode purge message: %w", err)
	}
	return m, nil
}

// crockford is the Crockford base32 alphabet: it sorts in byte order and avoids I, L, O, U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

var (
	idMu   sync.Mutex // guards lastID
	lastID [16]byte   // the last ID handed out, so IDs from one process increase strictly
)

// NewID returns a unique purge id of 26 characters that sorts by creation time: 48 bits of Unix
// milliseconds then 80 random bits (the ULID layout). Within one millisecond the random part is
// incremented, so ids from one process are strictly increasing.
func NewID() string { return newID(time.Now()) }

func newID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	idMu.Lock()
	if string(b[:6]) <= string(lastID[:6]) {
		// Same (or an earlier) millisecond: keep the previous time and add one to the random part.
		b = lastID
		for i := 15; i >= 6; i-- {
			b[i]++
			if b[i] != 0 {
				break
			}
		}
	}
	lastID = b
	idMu.Unlock()
	return encodeBase32(b)
}

// encodeBase32 encodes 128 bits as 26 Crockford base32 characters (the top 2 bits of the first
// character are always 0).
func encodeBase32(b [16]byte) string {
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
