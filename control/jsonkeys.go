package control

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/meridian-cdn/meridian/wire"
)

// checkKeys refuses, in data (a JSON value that decoded into a value of type t without error),
// any object key that names a struct field other than by its exact JSON name, any key that
// appears twice in one object, and a null where the type does not say a value may be absent.
// encoding/json matches names case-insensitively and keeps the last of duplicates, so
// `{"urls":["/a"],"Urls":["/b"]}` would purge /b only, silently; and it reads a null as "leave
// the value alone", so the body null would store the zero routing policy. A null is taken only
// by a pointer, an interface or a type that decodes itself (t itself is the pointer decoding
// writes through: the body null is refused for a *T). Errors are *wire.FieldError naming the
// key's path ("cache.Keep_Params", "weights.par"), but for a null body.
func checkKeys(data []byte, t reflect.Type) error {
	k := keyWalker{dec: json.NewDecoder(bytes.NewReader(data))}
	k.dec.UseNumber() // numbers are skipped, not parsed
	if t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return k.walk(t)
}

// selfDecodeError finds, in data (a whole JSON value that failed to decode into a value of
// type t with an error of no kind encoding/json names a field for), the value of a type that
// decodes itself whose decoding fails, and returns that error as a *wire.FieldError naming the
// value's path; nil when it finds none. encoding/json returns such an error as the type wrote
// it, without the field: `"forward": null` got 400 "\"\" is neither \"*\" nor a list of field
// names", naming nothing. A null there is refused as every other null is.
func selfDecodeError(data []byte, t reflect.Type) error {
	k := keyWalker{dec: json.NewDecoder(bytes.NewReader(data)), decodeSelf: true}
	k.dec.UseNumber()
	if t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var fe *wire.FieldError
	if err := k.walk(t); errors.As(err, &fe) {
		return err
	}
	return nil
}

// takesNull reports whether a JSON null is a value for t: encoding/json sets a pointer or an
// interface to nil, and leaves it to a type that decodes itself; into anything else a null
// decodes as if the value were absent, which no API schema allows.
func takesNull(t reflect.Type) bool {
	return t == nil || t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface ||
		reflect.PointerTo(t).Implements(jsonUnmarshaler)
}

// failNull is the error for a null where a value of type t is wanted.
func (k *keyWalker) failNull(t reflect.Type) error {
	if len(k.path) == 0 {
		return fmt.Errorf("request body is null; want a JSON %s", jsonKind(t))
	}
	return k.fail(errors.New("is null: give a value, or leave it out"))
}

// jsonKind names the JSON type a value of t decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	}
	return "number"
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// keyWalker reads a JSON value token by token along the type it decoded into.
type keyWalker struct {
	dec  *json.Decoder
	raw  json.RawMessage // reused by every skip
	path []pathStep      // where the walk is; made a string only for an error
	// decodeSelf has a value of a type that decodes itself decoded on its own, its error
	// named (selfDecodeError), instead of its keys walked.
	decodeSelf bool
}

// pathStep is an object key, or an array index when key is "".
type pathStep struct {
	key   string
	index int
}

// fail returns err as a *wire.FieldError naming the current path.
func (k *keyWalker) fail(err error) error {
	var b strings.Builder
	for _, p := range k.path {
		switch {
		case p.key == "":
			b.WriteString("[" + strconv.Itoa(p.index) + "]")
		case b.Len() > 0:
			b.WriteString("." + shortKey(p.key))
		default:
			b.WriteString(shortKey(p.key))
		}
	}
	return &wire.FieldError{Field: b.String(), Err: err}
}

// walk reads the next value, which is to decode into a t; a nil t stands for a value whose
// shape the type does not say (an interface, or a type that decodes itself), in which only
// duplicate keys are looked for.
func (k *keyWalker) walk(t reflect.Type) error {
	nullable := takesNull(t)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && k.decodeSelf && reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return k.decodeItself(t)
	}
	if t != nil && (reflect.PointerTo(t).Implements(jsonUnmarshaler) || t.Kind() == reflect.Interface) {
		t = nil
	}
	if t != nil && !holdsObjects(t, 0) {
		// The value decoded into t, so it holds no object: skip it whole (a token per element
		// costs a decode each).
		if err := k.dec.Decode(&k.raw); err != nil {
			return err
		}
		if !nullable && string(k.raw) == "null" {
			return k.failNull(t)
		}
		if bytes.Contains(k.raw, []byte("null")) {
			return k.nullInArray(k.raw, t)
		}
		return nil
	}
	tok, err := k.dec.Token()
	if err != nil {
		return err
	}
	if tok == nil && !nullable {
		return k.failNull(t)
	}
	switch tok {
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; k.dec.More(); i++ {
			k.path = append(k.path, pathStep{index: i})
			if err := k.walk(elem); err != nil {
				return err
			}
			k.path = k.path[:len(k.path)-1]
		}
	case json.Delim('{'):
		var fields map[string]reflect.Type
		var elem reflect.Type
		switch {
		case t != nil && t.Kind() == reflect.Struct:
			fields = structFields(t)
		case t != nil && t.Kind() == reflect.Map:
			elem = t.Elem()
		}
		// Objects are small: a list beats a map, up to a point. A map-typed field (routing
		// weights, header sets) may hold tens of thousands of keys in a 1 MiB body, and the
		// list would cost their square.
		var seen []string
		var seenSet map[string]struct{}
		for k.dec.More() {
			tok, err := k.dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string)
			k.path = append(k.path, pathStep{key: key})
			switch {
			case seenSet != nil:
				if _, dup := seenSet[key]; dup {
					return k.fail(errors.New("appears more than once in its object"))
				}
				seenSet[key] = struct{}{}
			case slices.Contains(seen, key):
				return k.fail(errors.New("appears more than once in its object"))
			case len(seen) < 16:
				seen = append(seen, key)
			default:
				seenSet = make(map[string]struct{}, 2*len(seen))
				for _, s := range append(seen, key) {
					seenSet[s] = struct{}{}
				}
			}
			if fields != nil {
				ft, ok := fields[key]
				if !ok {
					return k.fail(unknownKey(key, fields))
				}
				elem = ft
			}
			if err := k.walk(elem); err != nil {
				return err
			}
			k.path = k.path[:len(k.path)-1]
		}
	default:
		return nil // a scalar
	}
	_, err = k.dec.Token() // the closing ']' or '}'
	return err
}

// decodeItself reads the next value and decodes it into a new t, a type that decodes itself,
// returning its error as a *wire.FieldError naming the current path: a refused null as any
// other null, a type error as DecodeJSON describes one.
func (k *keyWalker) decodeItself(t reflect.Type) error {
	if err := k.dec.Decode(&k.raw); err != nil {
		return err
	}
	err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(k.raw)
	if err == nil {
		return nil
	}
	if string(k.raw) == "null" {
		return k.failNull(t)
	}
	if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) {
		return k.fail(fmt.Errorf("is a JSON %s, want a %s", te.Value, te.Type))
	}
	return k.fail(err)
}

// nullInArray refuses a null element, at any depth, of raw, a JSON array of scalars that
// decoded into t (a slice or array type), where the element type takes no null.
func (k *keyWalker) nullInArray(raw json.RawMessage, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	raw = bytes.TrimSpace(raw)
	if (t.Kind() != reflect.Slice && t.Kind() != reflect.Array) || len(raw) == 0 || raw[0] != '[' {
		return nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return err
	}
	for i, e := range elems {
		k.path = append(k.path, pathStep{index: i})
		if string(e) == "null" && !takesNull(t.Elem()) {
			return k.failNull(t.Elem())
		}
		if err := k.nullInArray(e, t.Elem()); err != nil {
			return err
		}
		k.path = k.path[:len(k.path)-1]
	}
	return nil
}

// shortKey is key as an error shows it: a key may be as long as the body, and the error goes
// back to the client and into logs.
func shortKey(key string) string {
	if len(key) <= 80 {
		return key
	}
	return key[:77] + "..."
}

// unknownKey describes key, which names no field exactly: encoding/json matched it to a field
// by folding case, or it would have refused it already. Of several names it could mean, it
// names the first in order, so that the message is the same every time.
func unknownKey(key string, fields map[string]reflect.Type) error {
	var names []string
	for name := range fields {
		if strings.EqualFold(name, key) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return errors.New("unknown field")
	}
	return fmt.Errorf("unknown field (names are case-sensitive: did you mean %q?)", slices.Min(names))
}

// holdsObjects reports whether a JSON value decoded into a t may contain an object. The answer
// for a type that decodes itself is yes: it may accept any JSON; so it is for a type nested
// deeper than depth allows (type T []T is one).
func holdsObjects(t reflect.Type, depth int) bool {
	if depth > 32 {
		return true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case reflect.PointerTo(t).Implements(jsonUnmarshaler):
		return true
	case reflect.PointerTo(t).Implements(textUnmarshaler):
		return false // decodes from a JSON string only
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Interface:
		return true
	case reflect.Slice, reflect.Array:
		return holdsObjects(t.Elem(), depth+1)
	}
	return false
}

// fieldCache holds structFields' answers by type: request types are few and fixed.
var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// structFields maps the JSON names encoding/json decodes into struct type t to their types,
// with the fields of embedded structs promoted by its rules: the shallowest name wins, then
// the one tagged; names still ambiguous are left out, as encoding/json ignores them.
func structFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	type candidate struct {
		typ    reflect.Type
		depth  int
		tagged bool
		count  int // candidates of this depth and taggedness
	}
	found := map[string]candidate{}
	var collect func(t reflect.Type, depth int, visiting map[reflect.Type]bool)
	collect = func(t reflect.Type, depth int, visiting map[reflect.Type]bool) {
		if visiting[t] {
			return
		}
		visiting[t] = true
		defer delete(visiting, t)
		for i := range t.NumField() {
			sf := t.Field(i)
			ft := sf.Type
			if sf.Anonymous {
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if !sf.IsExported() && ft.Kind() != reflect.Struct {
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if name == "" && sf.Anonymous && ft.Kind() == reflect.Struct {
				collect(ft, depth+1, visiting)
				continue
			}
			tagged := name != ""
			if !tagged {
				name = sf.Name
			}
			c, ok := found[name]
			switch {
			case !ok || depth < c.depth || depth == c.depth && tagged && !c.tagged:
				found[name] = candidate{typ: sf.Type, depth: depth, tagged: tagged, count: 1}
			case depth == c.depth && tagged == c.tagged:
				c.count++
				found[name] = c
			}
		}
	}
	collect(t, 0, map[reflect.Type]bool{})
	fields := make(map[string]reflect.Type, len(found))
	for name, c := range found {
		if c.count == 1 {
			fields[name] = c.typ
		}
	}
	f, _ := fieldCache.LoadOrStore(t, fields)
	return f.(map[string]reflect.Type)
}
