package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func loadExample(t *testing.T) *Fleet {
	t.Helper()
	f, err := Load(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatalf("Load(testdata/fleet.yaml) = %v", err)
	}
	return f
}

// TestRenderDump writes the rendered example to $DEPLOY_DUMP, for reading it.
func TestRenderDump(t *testing.T) {
	dir := os.Getenv("DEPLOY_DUMP")
	if dir == "" {
		t.Skip("set DEPLOY_DUMP=dir to write the rendered example")
	}
	files, err := Render(loadExample(t), RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteTree(dir, files); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkParseRender measures parsing and rendering the example fleet (7 VMs).
func BenchmarkParseRender(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		f, err := Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Render(f, RenderOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRenderUserData checks what cloud-init does for each release source.
func TestRenderUserData(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Release)
		wants []string
	}{
		{"url with checksum", func(*Release) {}, []string{
			"#cloud-config\n",
			"curl -fsSL --retry 5 -o /usr/local/bin/meridian.new 'https://downloads.example.com/meridian/v0.1.0/meridian-linux-amd64'",
			"sha256sum -c -",
			"install -m 0755 /tmp/nats-server/nats-server /usr/local/bin/nats-server",
			"- meridian-edge.service",
		}},
		{"path and debian nats-server", func(r *Release) {
			*r = Release{BinaryPath: "/opt/meridian/meridian"}
		}, []string{
			"  - - ln\n    - -sf\n    - /opt/meridian/meridian\n    - /usr/local/bin/meridian\n",
			"  - nats-server\n",
			"- /usr/bin/nats-server",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := loadExample(t)
			tt.edit(&f.Release)
			files, err := Render(f, RenderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ud := string(files["fra-edge-1/user-data"])
			for _, w := range tt.wants {
				if !strings.Contains(ud, w) {
					t.Errorf("fra-edge-1/user-data lacks %q", w)
				}
			}
			if len(ud) > 16384 {
				t.Errorf("user data is %d bytes; EC2 takes 16 KiB before gzip", len(ud))
			}
			if strings.Contains(ud, "token:") {
				t.Errorf("user data carries a token")
			}
		})
	}
}
