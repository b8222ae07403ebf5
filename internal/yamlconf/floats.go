package yamlconf

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yaml.v3 decodes a float into an integer by Go conversion, without an error when the result
// fits: 1.5 becomes 1, -1.0 into a uint becomes its largest value (on amd64; 0 on arm64), -1e30 into an int64 its
// smallest (go.yaml.in/yaml/v4 refuses these; v3 will not change). lossyFloats walks the
// document beside the type it decoded into and reports each float scalar that went into an
// integer (int*, uint*, or a type over one) and is not exactly a value of it. An integral
// float in range (2.0, 1e3) decodes as that integer, as it does in v4.

// Implemented by types that decode themselves: their values are theirs to judge.
var (
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	obsoleteType        = reflect.TypeFor[interface{ UnmarshalYAML(func(any) error) error }]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	nodeType            = reflect.TypeFor[yaml.Node]()
	stringType          = reflect.TypeFor[string]()
	anyType             = reflect.TypeFor[any]()
)

type floatCheck struct {
	probs   []Problem
	seen    map[seenKey]bool        // an anchored node reached again through an alias
	merging map[*yaml.Node]bool     // merge sources being walked: a merge cycle ends here
	structs map[reflect.Type]fields // by struct type
}

type seenKey struct {
	n *yaml.Node
	t reflect.Type
}

// fields is how yaml.v3 places a mapping's keys in a struct (its getStructInfo).
type fields struct {
	byName map[string]reflect.Type
	rest   reflect.Type // the ",inline" map's element type; nil when there is none
}

// lossyFloats returns a Type problem for every float in root that v (a pointer, as given to
// Decode) holds in an integer other than as written.
func lossyFloats(root *yaml.Node, v any) []Problem {
	c := &floatCheck{seen: map[seenKey]bool{}, merging: map[*yaml.Node]bool{}, structs: map[reflect.Type]fields{}}
	c.walk(root, reflect.TypeOf(v), "")
	return c.probs
}

func (c *floatCheck) walk(n *yaml.Node, t reflect.Type, path string) {
	if n == nil || t == nil {
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, e := range n.Content {
			c.walk(e, t, path)
		}
		return
	case yaml.AliasNode:
		c.walk(n.Alias, t, path)
		return
	}
	if n.ShortTag() == "!!null" || c.seen[seenKey{n, t}] {
		return
	}
	c.seen[seenKey{n, t}] = true
	// As yaml.v3's prepare: an unmarshaler at any pointer level decodes the value itself.
	for {
		if t == nodeType || c.decodesItself(t, n) {
			return
		}
		if t.Kind() != reflect.Pointer {
			break
		}
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.ScalarNode:
		c.scalar(n, t, path)
	case yaml.SequenceNode:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, e := range n.Content {
				c.walk(e, t.Elem(), path+"["+strconv.Itoa(i)+"]")
			}
		}
	case yaml.MappingNode:
		if t.Kind() == reflect.Map || t.Kind() == reflect.Struct {
			c.mapping(n, t, path, nil)
		}
	}
}

func (c *floatCheck) decodesItself(t reflect.Type, n *yaml.Node) bool {
	pt := reflect.PointerTo(t)
	return pt.Implements(unmarshalerType) || pt.Implements(obsoleteType) ||
		(n.Kind == yaml.ScalarNode && pt.Implements(textUnmarshalerType))
}

func (c *floatCheck) scalar(n *yaml.Node, t reflect.Type, path string) {
	var ok func(float64) bool
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		limit := math.Ldexp(1, t.Bits()-1)
		ok = func(f float64) bool { return f >= -limit && f < limit }
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		limit := math.Ldexp(1, t.Bits())
		ok = func(f float64) bool { return f >= 0 && f < limit }
	default:
		return
	}
	if n.ShortTag() != "!!float" {
		return
	}
	var f float64
	if err := n.Decode(&f); err != nil {
		return // not a float yaml.v3 reads; it says so itself
	}
	if f == math.Trunc(f) && ok(f) { // NaN fails both
		return
	}
	// In yaml.v3's words ("cannot unmarshal !!str `eighty` into int"), so that the value it
	// refuses itself (1e30 into an int) is reported once, as one message.
	val := n.Value
	if len(val) > 10 {
		val = val[:7] + "..."
	}
	c.probs = append(c.probs, Problem{
		Line: n.Line, Column: n.Column, Field: path, Kind: Type,
		Msg: fmt.Sprintf("cannot unmarshal %s `%s` into %s", n.ShortTag(), val, t),
	})
}

// mapping walks n's pairs as yaml.v3 decodes them into t (a map or a struct), merge keys
// ("<<") last, whose keys are skipped when done (the keys already set) has them.
func (c *floatCheck) mapping(n *yaml.Node, t reflect.Type, path string, done map[any]bool) {
	if duplicateKey(n) {
		return // yaml.v3 decodes none of it, and reports the key
	}
	var merge *yaml.Node
	var fs fields
	kt := stringType // a struct's key is a field name
	if t.Kind() == reflect.Struct {
		fs = c.fields(t)
	} else {
		kt = t.Key()
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge") {
			merge = v
			continue
		}
		// The key as yaml.v3 reads it (through an alias, !!binary decoded), which is what
		// places the value, not the key's text.
		key, ok := decodeKey(k, kt)
		if !ok {
			continue // yaml.v3 skips the pair
		}
		if done != nil {
			if done[key] {
				continue
			}
			done[key] = true
		}
		if t.Kind() == reflect.Map {
			p := join(path, unalias(k).Value)
			c.walk(k, t.Key(), p)
			c.walk(v, t.Elem(), p)
			continue
		}
		name := key.(string)
		p := join(path, name)
		if ft, ok := fs.byName[name]; ok {
			c.walk(v, ft, p)
		} else if fs.rest != nil {
			c.walk(v, fs.rest, p)
		}
	}
	if merge == nil {
		return
	}
	if done == nil {
		// yaml.v3 compares a merged key with the mapping's own keys decoded as any: the int 1
		// there is not a map[string]'s "1", which the merge then sets.
		done = map[any]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if key, ok := decodeKey(n.Content[i], anyType); ok {
				done[key] = true
			}
		}
	}
	c.merge(merge, t, path, done)
}

func unalias(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// decodeKey returns k decoded as yaml.v3 decodes a key into a value of type t, and false when
// yaml.v3 skips the pair (a key it cannot decode, a null one where t has no nil) or the key
// cannot be compared (yaml.v3 fails on it when merging).
func decodeKey(k *yaml.Node, t reflect.Type) (any, bool) {
	k = unalias(k)
	if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!str" && (t == stringType || t == anyType) {
		return k.Value, true // nearly every key, without a decoder
	}
	if k.ShortTag() == "!!null" {
		switch t.Kind() {
		case reflect.Interface, reflect.Pointer, reflect.Map, reflect.Slice:
			return reflect.Zero(t).Interface(), true
		}
		return nil, false
	}
	v := reflect.New(t)
	if err := k.Decode(v.Interface()); err != nil {
		return nil, false
	}
	key := v.Elem().Interface()
	if key != nil && !reflect.ValueOf(key).Comparable() {
		return nil, false
	}
	return key, true
}

// duplicateKey reports whether two of n's keys are alike as yaml.v3 compares them (kind and
// text), pair by pair in a small mapping.
func duplicateKey(n *yaml.Node) bool {
	if len(n.Content) <= 32 {
		for i := 0; i < len(n.Content); i += 2 {
			for j := i + 2; j < len(n.Content); j += 2 {
				if n.Content[i].Kind == n.Content[j].Kind && n.Content[i].Value == n.Content[j].Value {
					return true
				}
			}
		}
		return false
	}
	type key struct {
		kind  yaml.Kind
		value string
	}
	keys := make(map[key]bool, len(n.Content)/2)
	for i := 0; i < len(n.Content); i += 2 {
		k := key{n.Content[i].Kind, n.Content[i].Value}
		if keys[k] {
			return true
		}
		keys[k] = true
	}
	return false
}

func (c *floatCheck) merge(m *yaml.Node, t reflect.Type, path string, done map[any]bool) {
	if m == nil || c.merging[m] {
		return
	}
	c.merging[m] = true
	defer delete(c.merging, m)
	switch m.Kind {
	case yaml.AliasNode:
		c.merge(m.Alias, t, path, done)
	case yaml.MappingNode:
		c.mapping(m, t, path, done)
	case yaml.SequenceNode:
		for _, e := range m.Content {
			if e.Kind != yaml.SequenceNode {
				c.merge(e, t, path, done)
			}
		}
	}
}

func (c *floatCheck) fields(t reflect.Type) fields {
	fs, ok := c.structs[t]
	if !ok {
		fs = fields{byName: map[string]reflect.Type{}}
		addFields(t, &fs, false)
		c.structs[t] = fs
	}
	return fs
}

// addFields follows yaml.v3's getStructInfo: the tag's name, else the field's in lower case;
// "-" skipped; ",inline" structs' fields as the struct's own, unless they decode themselves,
// but not their ",inline" map (inlined): a key no field has is unknown there.
func addFields(t reflect.Type, fs *fields, inlined bool) {
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() && !sf.Anonymous {
			continue
		}
		tag := sf.Tag.Get("yaml")
		if tag == "" && !strings.Contains(string(sf.Tag), ":") {
			tag = string(sf.Tag)
		}
		if tag == "-" {
			continue
		}
		name, flags, _ := strings.Cut(tag, ",")
		if slices.Contains(strings.Split(flags, ","), "inline") {
			ft := sf.Type
			if ft.Kind() == reflect.Map {
				if !inlined {
					fs.rest = ft.Elem()
				}
				continue
			}
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(unmarshalerType) {
				addFields(ft, fs, true)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		fs.byName[name] = sf.Type
	}
}
