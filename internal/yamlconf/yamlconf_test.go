package yamlconf

import (
	"testing"
)

type host struct {
	Name   string `yaml:"name"`
	Origin string `yaml:"origin"`
	Port   int    `yaml:"port"`
}

type conf struct {
	Listen string          `yaml:"listen"`
	Hosts  []host          `yaml:"hosts"`
	Pools  map[string]host `yaml:"pools"`
}

const doc = `listen: ":80"
hosts:
  - name: a
    origin: http://a
  - name: b
    orign: http://b
    port: eighty
pools:
  img.example.com:
    origin: http://img
`

func TestDecodeReportsEveryProblemWithPosition(t *testing.T) {
	var c conf
	d, probs := Decode([]byte(doc), &c)
	want := []Problem{
		{Line: 6, Column: 5, Field: "hosts[1].orign", Msg: `unknown field "orign"`},
		{Line: 7, Column: 11, Field: "hosts[1].port"},
	}
	if len(probs) != len(want) {
		t.Fatalf("Decode problems = %+v, want %d", probs, len(want))
	}
	for i, w := range want {
		p := probs[i]
		if p.Line != w.Line || p.Column != w.Column || p.Field != w.Field || (w.Msg != "" && p.Msg != w.Msg) || p.Msg == "" {
			t.Errorf("problem %d = %+v, want %+v", i, p, w)
		}
	}
	if c.Hosts[0].Origin != "http://a" || c.Pools["img.example.com"].Origin != "http://img" {
		t.Errorf("the valid parts did not decode: %+v", c)
	}
	for _, tt := range []struct {
		field     string
		line, col int
	}{
		{"listen", 1, 1},
		{"hosts[0].origin", 4, 5},
		{"hosts[1]", 5, 5},
		{"pools.img.example.com.origin", 10, 5},
		{"hosts[1].missing", 5, 5}, // absent: where its parent is
		{"hosts[9].name", 2, 1},
		{"nothing", 0, 0},
		{"", 0, 0},
	} {
		if l, c := d.Position(tt.field); l != tt.line || c != tt.col {
			t.Errorf("Position(%q) = %d:%d, want %d:%d", tt.field, l, c, tt.line, tt.col)
		}
	}
}

func TestDecodeSyntaxAndEmpty(t *testing.T) {
	var c conf
	_, probs := Decode([]byte("listen: [\n"), &c)
	if len(probs) != 1 || probs[0].Line == 0 || probs[0].Msg == "" {
		t.Errorf("syntax error: problems %+v, want one with a line", probs)
	}
	d, probs := Decode(nil, &c)
	if len(probs) != 0 {
		t.Errorf("empty document: problems %+v, want none", probs)
	}
	if l, _ := d.Position("listen"); l != 0 {
		t.Errorf("empty document: Position found line %d", l)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(doc))
	f.Add([]byte("hosts: [{name: 1}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c conf
		d, probs := Decode(b, &c)
		for _, p := range probs {
			if p.Msg == "" {
				t.Fatalf("problem without a message: %+v", p)
			}
		}
		d.Position("hosts[0].name")
	})
}

// A problem in a flow mapping is where its own value or key is, not the first value on the line.
func TestDecodeFlowProblemsPosition(t *testing.T) {
	const in = "hosts:\n  - {name: a, port: x}\n  - {name: b, origin: o, origin: p}\npools: {a: {port: 1}, b: [1]}\n"
	var c conf
	_, probs := Decode([]byte(in), &c)
	want := []Problem{
		{Line: 2, Column: 21, Field: "hosts[0].port"},
		{Line: 3, Column: 34, Field: "hosts[1].origin"},
		{Line: 4, Column: 26, Field: "pools.b"},
	}
	if len(probs) != len(want) {
		t.Fatalf("Decode problems = %+v, want %d", probs, len(want))
	}
	for i, w := range want {
		if p := probs[i]; p.Line != w.Line || p.Column != w.Column || p.Field != w.Field {
			t.Errorf("problem %d (%s) = %d:%d %q, want %d:%d %q", i, p.Msg, p.Line, p.Column, p.Field, w.Line, w.Column, w.Field)
		}
	}
}

// yaml.v3 gives a parser error's line counted from 0 (a scanner error's from 1).
func TestDecodeParserErrorLine(t *testing.T) {
	for _, tt := range []struct {
		in   string
		line int
	}{
		{"listen: a\n\n\nhosts: {a: 1\n", 4},                  // the flow mapping's line
		{"listen: a\nhosts:\n  - name: a\n    port: [1\n", 4}, // the flow sequence's line
		{"\n\nlisten: a\n  b: c\n", 4},                        // a scanner error, already right
		{"listen: \"a\n", 2},
	} {
		var c conf
		_, probs := Decode([]byte(tt.in), &c)
		if len(probs) != 1 || probs[0].Line != tt.line {
			t.Errorf("Decode(%q) problems %+v, want one on line %d", tt.in, probs, tt.line)
		}
	}
}

// A second document is not silently ignored: nothing of it would be read.
func TestDecodeRefusesASecondDocument(t *testing.T) {
	var c conf
	_, probs := Decode([]byte("listen: a\n---\nlisten: b\nbogus: 1\n"), &c)
	if len(probs) != 1 || probs[0].Line != 3 || probs[0].Msg == "" {
		t.Errorf("problems %+v, want one on line 3", probs)
	}
	if _, probs := Decode([]byte("listen: a\n---\n"), &c); len(probs) != 0 {
		t.Errorf("an empty second document: problems %+v", probs)
	}
	if c.Listen != "a" {
		t.Errorf("the first document did not decode: %+v", c)
	}
}
