package wire

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// FieldError is a validation error that names the offending field and, when the value was
// read from a file, where it is. It is the one error type every Meridian reader of
// configuration, records and requests reports problems with.
type FieldError struct {
	File string // the file the value was read from; "" when not from a file
	// Line and Column are the 1-based position of the field in File; 0 when unknown.
	Line, Column int
	// Field is the path of the offending field, e.g. "pops[1].nodes[0].ipv4"; "" for the
	// whole document.
	Field string
	Err   error
}

// Error reads "file:line:column: field: problem", leaving out the parts that are unknown.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if e.File == "" {
			b.WriteString("line ")
		} else {
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrors is every problem found in one document, in the order found: readers report
// them all at once so that an operator fixes a file in one round.
type FieldErrors []*FieldError

// Error lists the problems one per line.
func (l FieldErrors) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.As find each *FieldError.
func (l FieldErrors) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Add appends a problem with field, formatted like fmt.Errorf (so %w wraps).
func (l *FieldErrors) Add(field, format string, args ...any) {
	*l = append(*l, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
}

// Err returns the list as an error, or nil when it is empty.
func (l FieldErrors) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// DecodeProblem is a problem a configuration decoder found (internal/yamlconf.Problem is
// one).
type DecodeProblem interface {
	error
	// Where is the problem's 1-based line and column (0 when unknown) and field path.
	Where() (line, column int, field string)
	// Undecoded: the field's value could not be decoded (a wrong type), so it holds nothing.
	Undecoded() bool
	// Whole: nothing of the document decoded (a syntax error).
	Whole() bool
}

// DocumentErrors is every problem of one configuration document read from file: what the
// decoder found and what validate finds, except on fields whose value did not decode (it
// holds nothing, which validation would report again as missing) and not at all when nothing
// decoded (it would bury the syntax error under "is required"). pos places the validation
// problems in the file; all of them come in the file's order (SortByPosition): they came
// the decoder's first and then validate's in the order it checks fields, so an unknown field
// at the end of a file led a bad value on its first line. Readers return
// DocumentErrors(...).Err().
func DocumentErrors[P DecodeProblem](file string, decoded []P, pos func(field string) (line, column int), validate func() FieldErrors) FieldErrors {
	var errs FieldErrors
	var undecoded []string
	whole := false
	for _, p := range decoded {
		line, column, field := p.Where()
		errs = append(errs, &FieldError{Line: line, Column: column, Field: field, Err: errors.New(p.Error())})
		if p.Undecoded() {
			undecoded = append(undecoded, field)
		}
		whole = whole || p.Whole()
	}
	if !whole && validate != nil {
		for _, e := range validate() {
			if !slices.ContainsFunc(undecoded, func(f string) bool { return within(e.Field, f) }) {
				errs = append(errs, e)
			}
		}
	}
	errs.Locate(file, pos)
	errs.SortByPosition()
	return errs
}

// SortByPosition puts the problems in the file's order, as a reader fixes it, top to bottom:
// by line and column, those in one place in the order they came, and those without a
// position (a field the file does not write) after the rest.
func (l FieldErrors) SortByPosition() {
	slices.SortStableFunc(l, func(a, b *FieldError) int {
		unplaced := func(e *FieldError) int {
			if e.Line == 0 {
				return 1
			}
			return 0
		}
		return cmp.Or(cmp.Compare(unplaced(a), unplaced(b)), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}

// within reports whether field is parent or inside it ("a.b" and "a[0]" are inside "a"; ""
// holds everything).
func within(field, parent string) bool {
	r, ok := strings.CutPrefix(field, parent)
	return ok && (parent == "" || r == "" || r[0] == '.' || r[0] == '[')
}

// Locate sets File on every problem, and Line and Column on those without a position, from
// pos (which returns 0, 0 for a field it cannot find: the problem then keeps no position).
func (l FieldErrors) Locate(file string, pos func(field string) (line, column int)) {
	for _, e := range l {
		e.File = file
		if e.Line == 0 && pos != nil {
			e.Line, e.Column = pos(e.Field)
		}
	}
}
