package deploy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary fleet files to Parse: it must never panic, and a fleet it accepts
// must render.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	paths = append(paths, filepath.Join("testdata", "fleet.yaml"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fl, err := Parse(data)
		if err != nil {
			return
		}
		if fl.Release.BinaryURL == "" && fl.Release.BinaryPath == "" {
			fl.Release.BinaryPath = "/opt/meridian/meridian"
		}
		if fl.Release.BinaryURL != "" && fl.Release.BinaryPath != "" {
			return
		}
		if _, err := Render(fl, RenderOptions{}); err != nil {
			t.Errorf("Parse accepted a fleet that Render refuses: %v", err)
		}
	})
}
