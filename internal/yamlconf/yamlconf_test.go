package yamlconf

import (
	"bytes"
	"cmp"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
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
		var n nums // every integer kind
		_, more := Decode(b, &n)
		// At most as many lines as yaml.v3 has line breaks: CR, LF (CRLF counted twice), NEL,
		// LS and PS.
		lines := 1
		for _, br := range []string{"\r", "\n", "\u0085", "\u2028", "\u2029"} {
			lines += bytes.Count(b, []byte(br))
		}
		for _, p := range append(probs, more...) {
			if p.Msg == "" {
				t.Fatalf("problem without a message: %+v", p)
			}
			// A position is in the document (a parser error at its end may name the line after).
			if p.Line < 0 || p.Line > lines+1 || p.Column < 0 || p.Field != "" && (p.Line == 0 || p.Column == 0) {
				t.Fatalf("problem %+v placed outside the document's %d lines", p, lines)
			}
		}
		// A syntax error is the one problem; in the first document it leaves the value untouched.
		if len(probs) > 0 && probs[0].Whole() && len(probs) != 1 {
			t.Fatalf("syntax error %+v with %d problems", probs[0], len(probs))
		}
		if yaml.Unmarshal(b, &yaml.Node{}) != nil && (len(probs) != 1 || !probs[0].Whole() || !reflect.DeepEqual(c, conf{})) {
			t.Fatalf("a first document yaml.v3 cannot parse gives %+v, value %+v", probs, c)
		}
		// In file order.
		if !slices.IsSortedFunc(probs, func(a, b Problem) int { return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column)) }) {
			t.Fatalf("problems out of file order: %+v", probs)
		}
		// A document without problems decodes as yaml.v3 decodes it.
		if len(probs) == 0 {
			var want conf
			if err := yaml.Unmarshal(b, &want); err != nil || !reflect.DeepEqual(c, want) {
				t.Fatalf("no problems, decoded %+v; yaml.v3: %+v, %v", c, want, err)
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

// count is an integer kind of its own, decoded by yaml.v3 as an int.
type count int

// size parses its own value (as a size "1.5" might be 1.5 units of something): a float is its
// business, not Decode's.
type size int64

func (s *size) UnmarshalYAML(n *yaml.Node) error {
	f, err := strconv.ParseFloat(n.Value, 64)
	*s = size(f * 10)
	return err
}

// tenths is a TextUnmarshaler over an integer kind.
type tenths int

func (t *tenths) UnmarshalText(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	*t = tenths(f * 10)
	return err
}

// old uses yaml.v3's older unmarshaler form (as wire.HeaderNames does).
type old int

func (o *old) UnmarshalYAML(unmarshal func(any) error) error {
	var f float64
	err := unmarshal(&f)
	*o = old(f * 10)
	return err
}

type numInner struct {
	N int `yaml:"n"`
}

type numInline struct {
	In int `yaml:"in"`
}

type nums struct {
	I         int            `yaml:"i"`
	I8        int8           `yaml:"i8"`
	I64       int64          `yaml:"i64"`
	U         uint           `yaml:"u"`
	U16       uint16         `yaml:"u16"`
	U64       uint64         `yaml:"u64"`
	P         *int           `yaml:"p"`
	List      []int          `yaml:"list"`
	Arr       [2]uint8       `yaml:"arr"`
	M         map[string]int `yaml:"m"`
	Keys      map[int]string `yaml:"keys"`
	Inner     numInner       `yaml:"inner"`
	Deep      []map[string]*numInner
	numInline `yaml:",inline"`
	C         count         `yaml:"c"`
	Size      size          `yaml:"size"`
	Text      tenths        `yaml:"text"`
	Old       old           `yaml:"old"`
	D         time.Duration `yaml:"d"`
	F         float64       `yaml:"f"`
	S         string        `yaml:"s"`
	A         any           `yaml:"a"`
	Skip      int           `yaml:"-"`
}

// yaml.v3 truncates a float into an integer field (1.5 decodes as 1, -1.0 into a uint as
// 18446744073709551615, -1e30 into an int64 as -9223372036854775808) without an error: the
// operator's value would silently be replaced by another.
func TestDecodeRefusesLossyFloatIntoInteger(t *testing.T) {
	type prob struct {
		line, col int
		field     string
		msg       string
	}
	for _, tt := range []struct {
		name string
		in   string
		want []prob
		ok   func(n nums) bool // the value decoded, when there is no problem
	}{
		{"fraction", "i: 1.5", []prob{{1, 4, "i", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"negative fraction", "i: -2.7", []prob{{1, 4, "i", "cannot unmarshal !!float `-2.7` into int"}}, nil},
		{"underscores", "i: 1_000.5", []prob{{1, 4, "i", "cannot unmarshal !!float `1_000.5` into int"}}, nil},
		{"tagged", "i: !!float 1.5", []prob{{1, 4, "i", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"integral", "i: 2.0", nil, func(n nums) bool { return n.I == 2 }},
		{"exponent", "i: 1e3", nil, func(n nums) bool { return n.I == 1000 }},
		{"tagged integral", "i: !!float 3", nil, func(n nums) bool { return n.I == 3 }},
		{"integer", "i: -7", nil, func(n nums) bool { return n.I == -7 }},
		{"below int64", "i64: -1e30", []prob{{1, 6, "i64", "cannot unmarshal !!float `-1e30` into int64"}}, nil},
		{"minus infinity", "i: -.inf", []prob{{1, 4, "i", "cannot unmarshal !!float `-.inf` into int"}}, nil},
		{"two to the 63", "i64: 9223372036854775808.0", []prob{{1, 6, "i64", "cannot unmarshal !!float `9223372...` into int64"}}, nil},
		{"smallest int64", "i64: -9223372036854775808.0", nil, func(n nums) bool { return n.I64 == math.MinInt64 }},
		// yaml.v3 refuses these itself: reported once.
		{"above int64", "i: 1e30", []prob{{1, 4, "i", "cannot unmarshal !!float `1e30` into int"}}, nil},
		{"nan", "i: .nan", []prob{{1, 4, "i", "cannot unmarshal !!float `.nan` into int"}}, nil},
		{"above int8", "i8: 300.0", []prob{{1, 5, "i8", "cannot unmarshal !!float `300.0` into int8"}}, nil},
		{"string", "i: '1.5'", []prob{{1, 4, "i", "cannot unmarshal !!str `1.5` into int"}}, nil},
		{"fraction in int8", "i8: 127.9", []prob{{1, 5, "i8", "cannot unmarshal !!float `127.9` into int8"}}, nil},
		{"negative into uint", "u: -1.0", []prob{{1, 4, "u", "cannot unmarshal !!float `-1.0` into uint"}}, nil},
		{"small negative into uint", "u: -0.5", []prob{{1, 4, "u", "cannot unmarshal !!float `-0.5` into uint"}}, nil},
		{"negative into uint16", "u16: -1.0", []prob{{1, 6, "u16", "cannot unmarshal !!float `-1.0` into uint16"}}, nil},
		{"two to the 64", "u64: 18446744073709551616.0", []prob{{1, 6, "u64", "cannot unmarshal !!float `1844674...` into uint64"}}, nil},
		{"uint integral", "u16: 65535.0", nil, func(n nums) bool { return n.U16 == 65535 }},
		{"pointer", "p: 1.5", []prob{{1, 4, "p", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"slice", "list: [1, 2.5, 3.5]", []prob{{1, 11, "list[1]", "cannot unmarshal !!float `2.5` into int"}, {1, 16, "list[2]", "cannot unmarshal !!float `3.5` into int"}}, nil},
		{"array", "arr: [1, 2.5]", []prob{{1, 10, "arr[1]", "cannot unmarshal !!float `2.5` into uint8"}}, nil},
		{"map value", "m:\n  a: 1\n  b.c: 1.5\n", []prob{{3, 8, "m.b.c", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"map key", "keys: {1.5: x}", []prob{{1, 8, "keys.1.5", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"nested", "inner:\n  n: 4.5\n", []prob{{2, 6, "inner.n", "cannot unmarshal !!float `4.5` into int"}}, nil},
		{"deep", "deep:\n  - a: {n: 1}\n  - b: {n: 1.5}\n", []prob{{3, 12, "deep[1].b.n", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"inline", "in: 1.5", []prob{{1, 5, "in", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"named integer", "c: 1.5", []prob{{1, 4, "c", "cannot unmarshal !!float `1.5` into yamlconf.count"}}, nil},
		{"merge", "inner: {<<: {n: 1.5}}", []prob{{1, 17, "inner.n", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"merge overridden", "inner: {n: 1, <<: {n: 1.5}}", nil, func(n nums) bool { return n.Inner.N == 1 }},
		{"merged twice", "inner: {<<: [{n: 2}, {n: 1.5}]}", nil, func(n nums) bool { return n.Inner.N == 2 }},
		{"alias", "list: [&x 1.5, *x]", []prob{{1, 8, "list[0]", "cannot unmarshal !!float `1.5` into int"}}, nil},
		{"with another problem", "bogus: 1\ni: 1.5\nu: -1\n", []prob{
			{1, 1, "bogus", `unknown field "bogus"`},
			{2, 4, "i", "cannot unmarshal !!float `1.5` into int"},
			{3, 4, "u", "cannot unmarshal !!int `-1` into uint"},
		}, nil},
		{"with a second document", "i: 1.5\n---\ni: 1\n", []prob{
			{1, 4, "i", "cannot unmarshal !!float `1.5` into int"},
			{3, 1, "", "a second document (only one is read)"},
		}, nil},
		// A type that decodes itself, and what is not an integer, takes a float.
		{"unmarshaler", "size: 1.5", nil, func(n nums) bool { return n.Size == 15 }},
		{"text unmarshaler", "text: 1.5", nil, func(n nums) bool { return n.Text == 15 }},
		{"old unmarshaler", "old: 1.5", nil, func(n nums) bool { return n.Old == 15 }},
		{"float", "f: 1.5", nil, func(n nums) bool { return n.F == 1.5 }},
		{"string field", "s: 1.5", nil, func(n nums) bool { return n.S == "1.5" }},
		{"any", "a: 1.5", nil, func(n nums) bool { return n.A == 1.5 }},
		{"duration", "d: 1.5", []prob{{1, 4, "d", "cannot unmarshal !!float `1.5` into time.Duration"}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var n nums
			_, probs := Decode([]byte(tt.in), &n)
			var got []prob
			for _, p := range probs {
				got = append(got, prob{p.Line, p.Column, p.Field, p.Msg})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Decode(%q) problems = %+v, want %+v", tt.in, got, tt.want)
			}
			for _, p := range probs {
				if strings.HasPrefix(p.Msg, "cannot unmarshal") && !p.Undecoded() {
					t.Errorf("Decode(%q): %+v is not Undecoded", tt.in, p)
				}
			}
			if tt.ok != nil && !tt.ok(n) {
				t.Errorf("Decode(%q) = %+v", tt.in, n)
			}
		})
	}
}

// restInner has an ",inline" map, which yaml.v3 does not carry into a struct that inlines
// restInner: there a key no field has is unknown.
type restInner struct {
	Rest map[string]int `yaml:",inline"`
}

type withInlinedRest struct {
	N         int `yaml:"n"`
	restInner `yaml:",inline"`
}

type withRest struct {
	N    int            `yaml:"n"`
	Rest map[string]int `yaml:",inline"`
}

// The walk places a key where yaml.v3 puts its value, so that a float is reported exactly
// when yaml.v3 stored it cut, and once.
func TestDecodeLossyFloatPlacedAsYAMLv3Places(t *testing.T) {
	type prob struct {
		line, col int
		field     string
		msg       string
	}
	large := "m:\n" // more keys than are compared pair by pair
	for i := range 20 {
		large += "  k" + strconv.Itoa(i) + ": 1\n"
	}
	large += "  k0: 2.5\n"
	for _, tt := range []struct {
		name string
		in   string
		v    func() any
		want []prob
	}{
		// yaml.v3 decodes a key through its alias: *k is the field "i", which held 1.
		{"alias key", "s: &k i\n*k : 1.5\n", func() any { return &nums{} },
			[]prob{{2, 6, "i", "cannot unmarshal !!float `1.5` into int"}}},
		// A !!binary key is the field its bytes name ("aQ==" is "i").
		{"binary key", "!!binary aQ==: 1.5\n", func() any { return &nums{} },
			[]prob{{1, 16, "i", "cannot unmarshal !!float `1.5` into int"}}},
		// yaml.v3 skips a null key in a struct without a word; it reaches no field.
		{"null key", "~: 1.5\nn: 1\n", func() any { return &withRest{} }, nil},
		// A merged key yaml.v3 does not find among the mapping's own (the int 1 is not the
		// string "1") is merged over it: m["1"] held 2.
		{"merged over a number key", "m: {1: 5, <<: {1: 2.5}}", func() any { return &nums{} },
			[]prob{{1, 19, "m.1", "cannot unmarshal !!float `2.5` into int"}}},
		{"merged under a string key", "m: {a: 5, <<: {a: 2.5}}", func() any { return &nums{} }, nil},
		// The inlined struct's own inline map is not the outer struct's: x is unknown, once.
		{"inline map of an inlined struct", "n: 1\nx: 1.5\n", func() any { return &withInlinedRest{} },
			[]prob{{2, 1, "x", `unknown field "x"`}}},
		{"inline map", "n: 1\nx: 1.5\n", func() any { return &withRest{} },
			[]prob{{2, 4, "x", "cannot unmarshal !!float `1.5` into int"}}},
		// yaml.v3 decodes nothing of a mapping with a duplicate key: the duplicate is its
		// problem, not the floats it never stored.
		{"duplicate key", "i: 1.5\ni: 2.5\n", func() any { return &nums{} },
			[]prob{{2, 4, "i", `mapping key "i" already defined at line 1`}}},
		{"duplicate key inside", "inner: {n: 1.5, n: 2}\ni: 1.5\n", func() any { return &nums{} }, []prob{
			{1, 20, "inner.n", `mapping key "n" already defined at line 1`},
			{2, 4, "i", "cannot unmarshal !!float `1.5` into int"},
		}},
		{"duplicate key in a large mapping", large, func() any { return &nums{} },
			[]prob{{22, 7, "m.k0", `mapping key "k0" already defined at line 2`}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, probs := Decode([]byte(tt.in), tt.v())
			var got []prob
			for _, p := range probs {
				got = append(got, prob{p.Line, p.Column, p.Field, p.Msg})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Decode(%q) problems = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}
