// Package yamlconf reads YAML configuration strictly (an unknown field is an error, not
// silently ignored) and finds where a field is in the file, so that every Meridian
// configuration reader reports each problem as file:line:column with the field's path.
//
// It is a leaf: the standard library and yaml.v3 only. Readers turn its Problems into
// wire.FieldErrors.
package yamlconf

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a document.
type Problem struct {
	Line, Column int    // 1-based; 0 when unknown
	Field        string // the field's path, e.g. "hosts[0].origin"; "" when unknown
	Msg          string
	Kind         Kind
}

// Kind says what a Problem did to the decoded value.
type Kind int

const (
	// Syntax: the document is not YAML (or not the expected shape); nothing decoded.
	Syntax Kind = iota
	// Unknown: a field the value has no place for; the rest decoded.
	Unknown
	// Type: a value of the wrong type; its field holds nothing, the rest decoded.
	Type
)

// Error is the problem's message.
func (p Problem) Error() string { return p.Msg }

// Where is the problem's position and field path.
func (p Problem) Where() (line, column int, field string) { return p.Line, p.Column, p.Field }

// Undecoded reports whether the problem's field holds nothing (its value had the wrong type).
func (p Problem) Undecoded() bool { return p.Kind == Type }

// Whole reports whether nothing of the document decoded.
func (p Problem) Whole() bool { return p.Kind == Syntax }

// Doc is a parsed document, kept to find fields in.
type Doc struct {
	root *yaml.Node // nil for an empty document
}

var (
	lineRE    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// Decode parses b into v, refusing fields v has no place for. It returns every problem found
// (a syntax error is one problem and leaves v untouched; type errors and unknown fields are
// reported together, and v holds what did decode). An empty document decodes to nothing.
func Decode(b []byte, v any) (*Doc, []Problem) {
	d := &Doc{}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return d, []Problem{problem(err.Error())}
	}
	if root.Kind == 0 {
		return d, nil
	}
	d.root = &root
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return d, nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return d, []Problem{problem(err.Error())}
	}
	probs := make([]Problem, 0, len(te.Errors))
	for _, msg := range te.Errors {
		p := problem(msg)
		p.Kind = Type
		if m := unknownRE.FindStringSubmatch(p.Msg); m != nil {
			p.Kind = Unknown
			p.Msg = "unknown field " + strconv.Quote(m[1])
			if n, path := d.find(p.Line, m[1], true); n != nil {
				p.Column, p.Field = n.Column, path
			}
		} else if n, path := d.find(p.Line, "", false); n != nil {
			p.Column, p.Field = n.Column, path
		}
		probs = append(probs, p)
	}
	return d, probs
}

// problem splits yaml.v3's "line N: msg" into a position and a message.
func problem(msg string) Problem {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	return Problem{Line: line, Msg: m[2]}
}

// find returns the first node on line that is a mapping key named key (keys true) or a value
// (keys false), with its path.
func (d *Doc) find(line int, key string, keys bool) (*yaml.Node, string) {
	var found *yaml.Node
	var foundPath string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if found != nil || n == nil {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := join(path, k.Value)
				if keys && k.Line == line && k.Value == key {
					found, foundPath = k, p
					return
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, path+"["+strconv.Itoa(i)+"]")
			}
		default:
			if !keys && n.Line == line {
				found, foundPath = n, path
			}
		}
	}
	walk(d.root, "")
	return found, foundPath
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Position returns where field (a path like "pops[1].nodes[0].ipv4"; map keys may hold
// dots, as host names do) is in the document: the position of its key, or of the deepest
// part of the path that exists when the field itself is absent (a missing required field is
// reported where its parent is). It returns 0, 0 when nothing of the path is there.
func (d *Doc) Position(field string) (line, column int) {
	if d == nil || d.root == nil {
		return 0, 0
	}
	n := d.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	best := (*yaml.Node)(nil)
	rest := field
	for rest != "" && n != nil {
		var next, at *yaml.Node
		var after string
		switch n.Kind {
		case yaml.MappingNode:
			// The longest key that the path starts with, so that "hosts.a.example.com" finds
			// the key "a.example.com".
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				r, ok := strings.CutPrefix(rest, k.Value)
				if !ok || (r != "" && r[0] != '.' && r[0] != '[') {
					continue
				}
				if at == nil || len(k.Value) > len(at.Value) {
					at, next, after = k, n.Content[i+1], strings.TrimPrefix(r, ".")
				}
			}
		case yaml.SequenceNode:
			if !strings.HasPrefix(rest, "[") {
				break
			}
			end := strings.IndexByte(rest, ']')
			i, err := strconv.Atoi(rest[1:max(end, 1)])
			if end < 0 || err != nil || i < 0 || i >= len(n.Content) {
				break
			}
			at, next, after = n.Content[i], n.Content[i], strings.TrimPrefix(rest[end+1:], ".")
		}
		if at == nil {
			break
		}
		best, n, rest = at, next, after
	}
	if best == nil {
		return 0, 0
	}
	return best.Line, best.Column
}
