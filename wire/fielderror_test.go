package wire

import (
	"errors"
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
