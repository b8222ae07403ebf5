package httpcache

import (
	"net/http"
	"strings"
)

// Limits on the purge keys one response may declare, so a hostile origin cannot make the
// edge index unbounded data.
const (
	// MaxSurrogateKeys is how many keys are kept per response; a response that declares more
	// (TooManySurrogateKeys) must not be stored, since a purge by one of the others would miss it.
	MaxSurrogateKeys = 256
	// MaxSurrogateKeyLen is the longest key kept, in bytes: the longest value a purge may name
	// (purge.MaxValueBytes), so that only keys no purge can name are dropped.
	MaxSurrogateKeyLen = 2048
)

// SurrogateKeys returns the purge keys a response declares: Surrogate-Key (space-separated),
// Cache-Tag (comma-separated), then RFC 9875 Cache-Groups (a Structured Fields list of strings,
// RFC 8941; non-string members and all parameters are ignored; a malformed field yields no
// groups). Keys are de-duplicated in first-seen order; at most MaxSurrogateKeys keys of at most
// MaxSurrogateKeyLen bytes each are returned. Nil when there are none.
func SurrogateKeys(h http.Header) []string { return surrogateKeySet(h).keys }

// DeclaresSurrogateKeys reports whether h has a field that declares purge keys (SurrogateKeys
// reads them), with keys or empty.
func DeclaresSurrogateKeys(h http.Header) bool {
	return len(h["Surrogate-Key"])+len(h["Cache-Tag"])+len(h["Cache-Groups"]) > 0
}

// SurrogateKeyField reports whether the field name (in any case) is one that declares purge
// keys: Surrogate-Key, Cache-Tag or Cache-Groups.
func SurrogateKeyField(name string) bool {
	return strings.EqualFold(name, "Surrogate-Key") || strings.EqualFold(name, "Cache-Tag") || strings.EqualFold(name, "Cache-Groups")
}

// TooManySurrogateKeys reports whether h declares more distinct keys than SurrogateKeys keeps
// (MaxSurrogateKeys).
func TooManySurrogateKeys(h http.Header) bool {
	return DeclaresSurrogateKeys(h) && surrogateKeySet(h).over
}

// surrogateKeySet collects the keys h declares, as SurrogateKeys describes.
func surrogateKeySet(h http.Header) keySet {
	var ks keySet
	for _, v := range h["Surrogate-Key"] {
		for k := range strings.FieldsSeq(v) {
			ks.add(k)
		}
	}
	for _, v := range h["Cache-Tag"] {
		for k := range strings.SplitSeq(v, ",") {
			ks.add(strings.TrimSpace(k))
		}
	}
	if groups, ok := ParseStringList(h["Cache-Groups"]); ok {
		for _, g := range groups {
			ks.add(g)
		}
	}
	return ks
}

// CacheGroupInvalidation parses RFC 9875 Cache-Group-Invalidation (same list syntax and limits
// as Cache-Groups in SurrogateKeys). RFC 9875 §3 lets it act only on responses to unsafe
// methods, and only on groups of the same origin; that is the caller's part.
func CacheGroupInvalidation(h http.Header) []string {
	var ks keySet
	if groups, ok := ParseStringList(h["Cache-Group-Invalidation"]); ok {
		for _, g := range groups {
			ks.add(g)
		}
	}
	return ks.keys
}

// keySet collects unique, bounded keys in order; over records that a new key was dropped
// because MaxSurrogateKeys were collected already.
type keySet struct {
	keys []string
	over bool
}

func (s *keySet) add(k string) {
	if k == "" || len(k) > MaxSurrogateKeyLen || s.over {
		return
	}
	for _, have := range s.keys {
		if have == k {
			return
		}
	}
	if len(s.keys) >= MaxSurrogateKeys {
		s.over = true
		return
	}
	s.keys = append(s.keys, k)
}

// ParseStringList parses the field lines of a Structured Fields List (RFC 8941 §4.2.1, with
// the Date and Display String types of RFC 9651) and returns its members that are Strings, in
// order, ignoring every other member and all parameters. ok is false, and the strings nil,
// when the field is malformed: then the whole field is to be ignored. No lines, or only empty
// ones, give an empty list.
func ParseStringList(values []string) (strs []string, ok bool) {
	// Field lines combine with commas; empty lines add no members (RFC 9110 §5.3).
	p := sfParser{s: joinFieldLines(values)}
	if p.s == "" {
		return nil, true
	}
	for {
		str, isStr, ok := p.member()
		if !ok {
			return nil, false
		}
		if isStr {
			strs = append(strs, str)
		}
		p.skipOWS()
		if p.s == "" {
			return strs, true
		}
		if p.s[0] != ',' {
			return nil, false
		}
		p.s = p.s[1:]
		p.skipOWS()
		if p.s == "" {
			return nil, false // trailing comma
		}
	}
}

// sfParser consumes a Structured Fields value from the front of s.
type sfParser struct{ s string }

func (p *sfParser) skipOWS() {
	for p.s != "" && (p.s[0] == ' ' || p.s[0] == '\t') {
		p.s = p.s[1:]
	}
}

func (p *sfParser) skipSP() {
	for p.s != "" && p.s[0] == ' ' {
		p.s = p.s[1:]
	}
}

// member parses an item or inner list with its parameters; isStr says it was a String item.
func (p *sfParser) member() (str string, isStr, ok bool) {
	if p.s != "" && p.s[0] == '(' {
		p.s = p.s[1:]
		for {
			p.skipSP()
			if p.s == "" {
				return "", false, false
			}
			if p.s[0] == ')' {
				p.s = p.s[1:]
				return "", false, p.params()
			}
			if _, _, ok := p.bareItem(); !ok || !p.params() {
				return "", false, false
			}
			if p.s == "" || (p.s[0] != ' ' && p.s[0] != ')') {
				return "", false, false
			}
		}
	}
	str, isStr, ok = p.bareItem()
	if !ok || !p.params() {
		return "", false, false
	}
	return str, isStr, true
}

// params parses ;key[=value] parameters.
func (p *sfParser) params() bool {
	for p.s != "" && p.s[0] == ';' {
		p.s = p.s[1:]
		p.skipSP()
		if !p.key() {
			return false
		}
		if p.s != "" && p.s[0] == '=' {
			p.s = p.s[1:]
			if _, _, ok := p.bareItem(); !ok {
				return false
			}
		}
	}
	return true
}

func (p *sfParser) key() bool {
	if p.s == "" || !('a' <= p.s[0] && p.s[0] <= 'z' || p.s[0] == '*') {
		return false
	}
	i := 1
	for i < len(p.s) {
		c := p.s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		i++
	}
	p.s = p.s[i:]
	return true
}

// bareItem parses one bare item; for a String it returns the unescaped value.
func (p *sfParser) bareItem() (str string, isStr, ok bool) {
	if p.s == "" {
		return "", false, false
	}
	switch c := p.s[0]; {
	case c == '-' || '0' <= c && c <= '9':
		return "", false, p.number(true)
	case c == '"':
		str, ok = p.str()
		return str, ok, ok
	case isAlpha(c) || c == '*':
		i := 1
		for i < len(p.s) && (isTchar(p.s[i]) || p.s[i] == ':' || p.s[i] == '/') {
			i++
		}
		p.s = p.s[i:]
		return "", false, true
	case c == ':':
		for i := 1; i < len(p.s); i++ {
			switch b := p.s[i]; {
			case b == ':':
				p.s = p.s[i+1:]
				return "", false, true
			case isAlpha(b) || '0' <= b && b <= '9' || b == '+' || b == '/' || b == '=':
			default:
				return "", false, false
			}
		}
		return "", false, false
	case c == '?':
		if len(p.s) < 2 || (p.s[1] != '0' && p.s[1] != '1') {
			return "", false, false
		}
		p.s = p.s[2:]
		return "", false, true
	case c == '@':
		p.s = p.s[1:]
		return "", false, p.number(false)
	case c == '%':
		return "", false, p.displayString()
	}
	return "", false, false
}

// number parses an Integer (at most 15 digits) or, if allowed, a Decimal (at most 12 integer
// and 3 fraction digits).
func (p *sfParser) number(decimalOK bool) bool {
	i := 0
	if i < len(p.s) && p.s[i] == '-' {
		i++
	}
	start, dot := i, -1
	for i < len(p.s) {
		c := p.s[i]
		if c == '.' && decimalOK && dot < 0 {
			if i-start > 12 {
				return false
			}
			dot = i
		} else if c < '0' || c > '9' {
			break
		}
		i++
		if dot < 0 && i-start > 15 || dot >= 0 && i-dot-1 > 3 {
			return false
		}
	}
	if i == start || dot == start || dot == i-1 {
		return false // no digits, or a '.' without digits on either side
	}
	p.s = p.s[i:]
	return true
}

// str parses a String: printable ASCII, with only \" and \\ as escapes.
func (p *sfParser) str() (string, bool) {
	escaped := false
	for i := 1; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '\\':
			if i+1 >= len(p.s) || (p.s[i+1] != '"' && p.s[i+1] != '\\') {
				return "", false
			}
			escaped = true
			i++
		case c == '"':
			v := p.s[1:i]
			p.s = p.s[i+1:]
			if escaped {
				v = unescape(v)
			}
			return v, true
		case c < 0x20 || c > 0x7e:
			return "", false
		}
	}
	return "", false
}

// displayString parses an RFC 9651 Display String: %"...", with lower-case %xx escapes.
func (p *sfParser) displayString() bool {
	if len(p.s) < 2 || p.s[1] != '"' {
		return false
	}
	for i := 2; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '%':
			if i+2 >= len(p.s) || !isLowerHex(p.s[i+1]) || !isLowerHex(p.s[i+2]) {
				return false
			}
			i += 2
		case c == '"':
			p.s = p.s[i+1:]
			return true
		case c < 0x20 || c > 0x7e:
			return false
		}
	}
	return false
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
