package purge

import (
	"bytes"
	"strconv"
)

// decodeMessageFast reads exactly what json.Marshal makes of a Message whose strings are plain
// ASCII (what Publish stores); ok is false for anything else, which DecodeMessage then hands to
// encoding/json (FuzzDecodeMessageFast holds the two equal). Every node decodes every purge, on
// the way to its ack.
func decodeMessageFast(b []byte) (m Message, ok bool) {
	p := jsonParser{b: b}
	m.ID = p.field(`{"id":`)
	if p.has(`,"seq":`) {
		m.Seq = p.uint(`,"seq":`)
	}
	m.Host = p.field(`,"host":`)
	m.Kind = Kind(p.field(`,"kind":`))
	if p.has(`,"values":[`) {
		p.lit(`,"values":[`)
		for !p.bad {
			m.Values = append(m.Values, p.field(``))
			if p.has(`]`) {
				break
			}
			p.lit(`,`)
		}
		p.lit(`]`)
	}
	if p.has(`,"soft":true`) {
		p.lit(`,"soft":true`)
		m.Soft = true
	}
	issued := p.field(`,"issued_at":`)
	if p.has(`,"issuer":`) {
		m.Issuer = p.field(`,"issuer":`)
	}
	p.lit(`}`)
	if p.bad || len(p.b) != 0 {
		return Message{}, false
	}
	if err := m.IssuedAt.UnmarshalText([]byte(issued)); err != nil {
		return Message{}, false
	}
	return m, true
}

// jsonParser reads, from the front of b, JSON exactly as encoding/json writes it for the
// ack and message structs with plain ASCII strings; bad sticks once anything did not match, and
// the caller then falls back to encoding/json.
type jsonParser struct {
	b   []byte
	bad bool
}

func (p *jsonParser) lit(s string) {
	if p.bad || !bytes.HasPrefix(p.b, []byte(s)) {
		p.bad = true
		return
	}
	p.b = p.b[len(s):]
}

// field reads key, then a string of printable ASCII without escapes.
func (p *jsonParser) field(key string) string {
	p.lit(key + `"`)
	if p.bad {
		return ""
	}
	for i, c := range p.b {
		switch {
		case c == '"':
			s := string(p.b[:i])
			p.b = p.b[i+1:]
			return s
		case c < 0x20 || c > 0x7e || c == '\\':
			p.bad = true
			return ""
		}
	}
	p.bad = true
	return ""
}

// uint reads key, then a non-negative integer as JSON writes it (no leading zeros).
func (p *jsonParser) uint(key string) uint64 {
	p.lit(key)
	if p.bad {
		return 0
	}
	n := 0
	for n < len(p.b) && p.b[n] >= '0' && p.b[n] <= '9' {
		n++
	}
	if n == 0 || n > 20 || (n > 1 && p.b[0] == '0') {
		p.bad = true
		return 0
	}
	v, err := strconv.ParseUint(string(p.b[:n]), 10, 64)
	if err != nil {
		p.bad = true
		return 0
	}
	p.b = p.b[n:]
	return v
}

// has reports whether what is left starts with s, consuming nothing.
func (p *jsonParser) has(s string) bool { return !p.bad && bytes.HasPrefix(p.b, []byte(s)) }
