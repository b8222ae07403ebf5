package deploy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseBadFleets checks that every mistake in testdata/bad/*.yaml gets exactly one clear
// error. Each file lists the errors it wants in "# want: ..." comments (substrings, any order).
func TestParseBadFleets(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no bad fleets: %v", err)
	}
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			for _, l := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(l, "# want: "); ok {
					wants = append(wants, w)
				}
			}
			_, err = Parse(data)
			if err == nil {
				t.Fatalf("Parse(%s) = nil, want %d errors", p, len(wants))
			}
			got := splitErrors(err)
			for _, e := range got {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Errorf("error %q is a %T, want *FieldError", e, e)
				}
			}
			used := make([]bool, len(got))
			for _, w := range wants {
				found := false
				for i, e := range got {
					if !used[i] && strings.Contains(e.Error(), w) {
						used[i], found = true, true
						break
					}
				}
				if !found {
					t.Errorf("no error contains %q", w)
				}
			}
			for i, e := range got {
				if !used[i] {
					t.Errorf("unexpected error %q", e)
				}
			}
		})
	}
}

func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestParseExample(t *testing.T) {
	f := loadExample(t)
	tests := []struct {
		name      string
		got, want any
	}{
		{"prefix", f.Prefix, "meridian"},
		{"client port default", f.NATS.ClientPort, DefaultClientPort},
		{"lame duck default (dns ttl + 5s)", f.Edge.LameDuck.String(), "35s"},
		{"ns name default", f.nsName(f.Control.Nodes[1]), "ns2.cdn.example.com."},
		{"vms", len(f.VMs()), 7},
		{"edge vm name", f.VMs()[3].Name, "fra-edge-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	f := loadExample(t)
	sec, err := NewSecrets()
	if err != nil {
		t.Fatal(err)
	}
	a, err := Render(f, RenderOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Render(f, RenderOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("renders have %d and %d files", len(a), len(b))
	}
	for p := range a {
		if !bytes.Equal(a[p], b[p]) {
			t.Errorf("%s differs between two renders", p)
		}
	}
}

func TestRenderNeedsBinary(t *testing.T) {
	f := loadExample(t)
	f.Release.BinaryURL = ""
	if _, err := Render(f, RenderOptions{}); err == nil || !strings.Contains(err.Error(), "release") {
		t.Errorf("Render without a binary = %v, want an error naming release", err)
	}
}
