// Package yamlconf reads YAML configuration strictly (an unknown field is an error, not
// silently ignored) and finds where a field is in the file, so that every Meridian
// configuration reader reports each problem as file:line:column with the field's path.
//
// It is a leaf: the standard library and yaml.v3 only. Readers turn its Problems into
// wire.FieldErrors.
package yamlconf

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"regexp"
	"slices"
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
	// Type: a value of the wrong type, or a float that is not exactly a value of its integer
	// field; the field holds nothing (or the float cut to an integer), the rest decoded.
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

// Decode parses b into v, refusing fields v has no place for and floats an integer cannot
// hold exactly (1.5, or -1.0 into a uint; 2.0 and 1e3 are integers). It returns every problem
// found, in file order (a syntax error is one problem and leaves v untouched, unless it is in a
// second document, after the first decoded into v; type errors and unknown fields are
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
		probs := lossyFloats(d.root, v)
		// One document only: a second one (after "---") would be silently left unread.
		var next yaml.Node
		switch err := dec.Decode(&next); {
		case errors.Is(err, io.EOF):
		case err != nil:
			return d, []Problem{problem(err.Error())}
		default:
			if next.Kind == yaml.DocumentNode && len(next.Content) > 0 {
				c := next.Content[0]
				if c.Kind == yaml.ScalarNode && c.Value == "" && c.ShortTag() == "!!null" {
					break // an empty one
				}
				probs = append(probs, Problem{Line: c.Line, Column: c.Column, Msg: "a second document (only one is read)", Kind: Unknown})
			}
		}
		return d, probs
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return d, []Problem{problem(err.Error())}
	}
	probs := make([]Problem, 0, len(te.Errors))
	taken := map[*yaml.Node]bool{} // nodes already given a problem
	for _, msg := range te.Errors {
		p := problem(msg)
		p.Kind = Type
		var n *yaml.Node
		var path string
		if m := unknownRE.FindStringSubmatch(p.Msg); m != nil {
			p.Kind = Unknown
			p.Msg = "unknown field " + strconv.Quote(m[1])
			n, path = d.find(p.Line, taken, func(mp *yaml.Node, i int) bool { return mp.Content[i].Value == m[1] }, nil)
		} else if m := dupRE.FindStringSubmatch(p.Msg); m != nil {
			// The later key of the two (on the line given), whatever else its line holds; placed
			// at its value, as a type error is.
			var val *yaml.Node
			n, path = d.find(p.Line, taken, func(mp *yaml.Node, i int) bool {
				k := mp.Content[i]
				if strconv.Quote(k.Value) != m[1] {
					return false
				}
				for j := 0; j < i; j += 2 {
					if mp.Content[j].Kind == k.Kind && mp.Content[j].Value == k.Value {
						val = mp.Content[i+1]
						return true
					}
				}
				return false
			}, nil)
			if n != nil {
				taken[n] = true
				n = val
			}
		} else {
			// The value the message names ("cannot unmarshal !!str `x` into int"), not the
			// first value on its line: a flow mapping has several.
			m := typeRE.FindStringSubmatch(p.Msg)
			n, path = d.find(p.Line, taken, nil, func(v *yaml.Node) bool {
				if m == nil {
					return v.Kind == yaml.ScalarNode || v.Kind == yaml.AliasNode
				}
				if v.ShortTag() != m[1] && v.Tag != m[1] {
					return false
				}
				if m[2] == "" {
					return true
				}
				s := v.Value
				if len(s) > 10 {
					s = s[:7] + "..."
				}
				return s == m[3]
			})
		}
		if n != nil {
			taken[n] = true
			p.Column, p.Field = n.Column, path
		}
		probs = append(probs, p)
	}
	// A float yaml.v3 refused itself (1e30 into an int) is not reported again.
	reported := map[Problem]int{}
	for _, p := range probs {
		reported[Problem{Line: p.Line, Msg: p.Msg}]++
	}
	for _, p := range lossyFloats(d.root, v) {
		if k := (Problem{Line: p.Line, Msg: p.Msg}); reported[k] > 0 {
			reported[k]--
			continue
		}
		probs = append(probs, p)
	}
	slices.SortStableFunc(probs, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return d, probs
}

var (
	dupRE  = regexp.MustCompile(`^mapping key (".*") already defined at line \d+$`)
	typeRE = regexp.MustCompile("^cannot unmarshal (\\S+)( `(.*)`)? into ")
)

// parserProblems are yaml.v3's parser errors (not its scanner's): their "line N" counts from 0.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// problem splits yaml.v3's "line N: msg" into a position and a message.
func problem(msg string) Problem {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	if parserProblems[m[2]] {
		line++
	}
	return Problem{Line: line, Msg: m[2]}
}

// find returns the first node on line, not taken, that is a mapping key for which key says so
// (given the mapping and the key's index) or else a value for which value says so, with its
// path.
func (d *Doc) find(line int, taken map[*yaml.Node]bool, key func(m *yaml.Node, i int) bool, value func(*yaml.Node) bool) (*yaml.Node, string) {
	var found *yaml.Node
	var foundPath string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if found != nil || n == nil {
			return
		}
		if value != nil && n.Kind != yaml.DocumentNode && n.Line == line && !taken[n] && value(n) {
			found, foundPath = n, path
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
				if key != nil && k.Line == line && !taken[k] && key(n, i) {
					found, foundPath = k, p
					return
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, path+"["+strconv.Itoa(i)+"]")
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
