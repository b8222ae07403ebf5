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
