package edge

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// limitWriter takes up to n bytes, then fails: a reader that stops at a given point.
type limitWriter struct {
	buf bytes.Buffer
	n   int
}

var errEnough = errors.New("enough")

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.n {
		k := w.n - w.buf.Len()
		w.buf.Write(p[:k])
		return k, errEnough
	}
	return w.buf.Write(p)
}

func TestInflightBody(t *testing.T) {
	chunk := bytes.Repeat([]byte{'x'}, streamWindow)
	tests := []struct {
		name       string
		budget     int64
		lateJoins  bool // a reader attaching after 2 windows were written can read from the start
		wantBudget int64
	}{
		{"within the budget the start is held", 16 << 20, true, 0},
		{"past the budget bytes behind the slowest reader go", 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &inflightBudget{max: tt.budget}
			b := newInflight(false, -1, 8<<20, g)
			first := b.attach()
			ctx := context.Background()
			if err := b.write(ctx, chunk); err != nil {
				t.Fatalf("write 1: %v", err)
			}
			// The first reader takes nearly all of the first window, then stops reading.
			w := &limitWriter{n: streamWindow - 1}
			if err := first.copyTo(ctx, w, func() {}); !errors.Is(err, errEnough) {
				t.Fatalf("copyTo = %v, want errEnough", err)
			}
			if err := b.write(ctx, chunk); err != nil {
				t.Fatalf("write 2: %v", err)
			}
			late := b.attach()
			if got := late != nil; got != tt.lateJoins {
				t.Errorf("late attach possible = %v, want %v", got, tt.lateJoins)
			}
			b.finish(nil)
			if got := g.used.Load(); got != tt.wantBudget {
				t.Errorf("budget used after finish = %d, want %d", got, tt.wantBudget)
			}
			if late != nil {
				var all bytes.Buffer
				if err := late.copyTo(ctx, &all, func() {}); err != nil || all.Len() != 2*streamWindow {
					t.Errorf("late reader: %d bytes, err %v; want %d", all.Len(), err, 2*streamWindow)
				}
			}
		})
	}
}

func TestInflightEndsWhenReadersLeave(t *testing.T) {
	b := newInflight(false, -1, 8<<20, &inflightBudget{})
	r := b.attach()
	chunk := make([]byte, streamWindow)
	if err := b.write(context.Background(), chunk); err != nil {
		t.Fatal(err)
	}
	r.close()
	if err := b.write(context.Background(), chunk); !errors.Is(err, errNoReaders) {
		t.Errorf("write after every reader left = %v, want errNoReaders", err)
	}
}

func TestInflightKeptBodyOverLimitStopsBeingKept(t *testing.T) {
	b := newInflight(true, -1, 1<<20, nil)
	r := b.attach()
	done := make(chan error)
	go func() { done <- r.copyTo(context.Background(), &bytes.Buffer{}, func() {}) }() // waited for below
	if err := b.write(context.Background(), make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	b.finish(nil)
	if err := <-done; err != nil {
		t.Errorf("reader: %v", err)
	}
	if _, ok := b.kept(); ok {
		t.Errorf("a body over the limit is still kept")
	}
}
