package wire

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestFieldErrorFormat(t *testing.T) {
	bad := errors.New("is bad")
	tests := []struct {
		e    FieldError
		want string
	}{
		{FieldError{Field: "id", Err: bad}, "id: is bad"},
		{FieldError{File: "edge.yaml", Line: 3, Column: 5, Field: "hosts[0].origin", Err: bad}, "edge.yaml:3:5: hosts[0].origin: is bad"},
		{FieldError{File: "edge.yaml", Field: "listen", Err: bad}, "edge.yaml: listen: is bad"},
		{FieldError{Line: 2, Field: "x", Err: bad}, "line 2: x: is bad"},
		{FieldError{File: "f", Line: 1, Err: bad}, "f:1: is bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestFieldErrorsListAndLocate(t *testing.T) {
	var l FieldErrors
	if l.Err() != nil {
		t.Fatal("an empty list is not an error")
	}
	l.Add("a", "is %d", 1)
	l = append(l, &FieldError{Line: 9, Column: 1, Field: "b", Err: errors.New("known")})
	l.Locate("c.yaml", func(f string) (int, int) {
		if f == "a" {
			return 4, 2
		}
		return 7, 7
	})
	if got, want := l.Err().Error(), "c.yaml:4:2: a: is 1\nc.yaml:9:1: b: known"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var fe *FieldError
	if !errors.As(l.Err(), &fe) || fe.Field != "a" {
		t.Errorf("errors.As found %v, want the first FieldError", fe)
	}
}

// problem is a DecodeProblem for the tests.
type problem struct {
	line, col      int
	field, msg     string
	undecoded, all bool
}

func (p problem) Error() string             { return p.msg }
func (p problem) Where() (int, int, string) { return p.line, p.col, p.field }
func (p problem) Undecoded() bool           { return p.undecoded }
func (p problem) Whole() bool               { return p.all }
func at(line int) func(string) (int, int)   { return func(string) (int, int) { return line, 1 } }
func fields(l FieldErrors) (out []string) {
	for _, e := range l {
		out = append(out, fmt.Sprintf("%s:%d:%s", e.File, e.Line, e.Field))
	}
	return out
}

func TestDocumentErrors(t *testing.T) {
	validate := func() FieldErrors {
		var l FieldErrors
		l.Add("hosts[0].origin", "is required") // inside a field that did not decode: dropped
		l.Add("hosts[1].origin", "is required")
		l.Add("hostsx", "is bad") // a sibling with the same prefix: kept
		return l
	}
	decoded := []problem{
		{line: 3, col: 5, field: "colour", msg: `unknown field "colour"`},
		{line: 4, col: 9, field: "hosts[0]", msg: "cannot unmarshal", undecoded: true},
	}
	got := fields(DocumentErrors("f.yaml", decoded, at(7), validate))
	want := []string{"f.yaml:3:colour", "f.yaml:4:hosts[0]", "f.yaml:7:hosts[1].origin", "f.yaml:7:hostsx"}
	if !slices.Equal(got, want) {
		t.Errorf("DocumentErrors = %v, want %v", got, want)
	}
	// In the file's order, decoded and validated together; what has no place in it last.
	place := map[string]int{"a": 2, "b": 12}
	validate2 := func() FieldErrors {
		var l FieldErrors
		l.Add("b", "is bad")
		l.Add("c", "is bad") // not in the file
		l.Add("a", "is bad")
		return l
	}
	got = fields(DocumentErrors("f.yaml", decoded, func(f string) (int, int) { return place[f], 1 }, validate2))
	if want := []string{"f.yaml:2:a", "f.yaml:3:colour", "f.yaml:4:hosts[0]", "f.yaml:12:b", "f.yaml:0:c"}; !slices.Equal(got, want) {
		t.Errorf("DocumentErrors = %v, want %v, in the file's order", got, want)
	}
	// A syntax error: nothing decoded, so nothing is validated.
	got = fields(DocumentErrors("f.yaml", []problem{{line: 1, msg: "did not find expected key", all: true}}, at(7), validate))
	if want := []string{"f.yaml:1:"}; !slices.Equal(got, want) {
		t.Errorf("DocumentErrors after a syntax error = %v, want %v", got, want)
	}
}
