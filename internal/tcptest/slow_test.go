package tcptest

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// ReadSlowly reads everything up to the end, in pieces, and stops at the first error.
func TestReadSlowly(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 40<<10) // two whole pieces and a part
	if got, err := ReadSlowly(bytes.NewReader(data), 0); got != len(data) || err != nil {
		t.Errorf("ReadSlowly = %d, %v; want %d, nil", got, err, len(data))
	}
	cut := errors.New("cut")
	r := io.MultiReader(bytes.NewReader(data[:20<<10]), &failing{cut})
	if got, err := ReadSlowly(r, 0); got != 20<<10 || err != cut {
		t.Errorf("ReadSlowly of a reader cut short = %d, %v; want %d, %v", got, err, 20<<10, cut)
	}
}

type failing struct{ err error }

func (f *failing) Read([]byte) (int, error) { return 0, f.err }
