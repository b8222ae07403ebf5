package purge

import (
	"strconv"
	"strings"
	"unsafe"
)

// decodeMessageFast reads exactly what json.Marshal makes of a Message whose strings are plain
// ASCII (what Publish stores); ok is false for anything else, which DecodeMessage then hands to
// encoding/json (FuzzDecodeMessageFast holds the two equal). Every node decodes every purge, on
// the way to its ack.
func decodeMessageFast(b []byte) (m Message, ok bool) { return decodeMessageText(string(b)) }

// ownedString is b as a string without a copy, for a b that nothing writes to again: the NATS
// client gives every message a payload of its own and never reuses it, so what is decoded from
// it can share it (every node decodes every purge, the tracker every ack). That is nats.go's
// behaviour, not a documented promise: TestMessagePayloadsAreOwned checks it for the version
// in go.mod.
func ownedString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// decodeMessageText is decodeMessageFast on the message as a string; the strings of the
// Message share its memory.
func decodeMessageText(s string) (m Message, ok bool) {
	p := jsonParser{s: s}
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
	if p.bad || len(p.s) != 0 {
		return Message{}, false
	}
	if err := m.IssuedAt.UnmarshalText([]byte(issued)); err != nil {
		return Message{}, false
	}
	return m, true
}

// jsonParser reads, from the front of s, JSON exactly as encoding/json writes it for the
// ack and message structs with plain ASCII strings; bad sticks once anything did not match, and
// the caller then falls back to encoding/json. The strings it returns share s (one copy of the
// input at most, instead of one per field).
type jsonParser struct {
	s   string
	bad bool
}

func (p *jsonParser) lit(s string) {
	if p.bad || !strings.HasPrefix(p.s, s) {
		p.bad = true
		return
	}
	p.s = p.s[len(s):]
}

// field reads key, then a string of printable ASCII without escapes.
func (p *jsonParser) field(key string) string {
	p.lit(key)
	p.lit(`"`)
	if p.bad {
		return ""
	}
	for i := 0; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '"':
			v := p.s[:i]
			p.s = p.s[i+1:]
			return v
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
	for n < len(p.s) && p.s[n] >= '0' && p.s[n] <= '9' {
		n++
	}
	if n == 0 || n > 20 || (n > 1 && p.s[0] == '0') {
		p.bad = true
		return 0
	}
	v, err := strconv.ParseUint(p.s[:n], 10, 64)
	if err != nil {
		p.bad = true
		return 0
	}
	p.s = p.s[n:]
	return v
}

// has reports whether what is left starts with s, consuming nothing.
func (p *jsonParser) has(s string) bool { return !p.bad && strings.HasPrefix(p.s, s) }
