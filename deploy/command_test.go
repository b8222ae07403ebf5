package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCommandRender(t *testing.T) {
	out := t.TempDir()
	cmd := NewCommand()
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs([]string{"render", filepath.Join("testdata", "fleet.yaml"), "--out", out, "--binary-path", "/opt/meridian/meridian"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("deploy render = %v", err)
	}
	if !strings.Contains(stdout.String(), "for 7 VMs") {
		t.Errorf("output %q, want it to count 7 VMs", stdout.String())
	}
	ud, err := os.ReadFile(filepath.Join(out, "nrt-edge-1", "user-data"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ud), "/opt/meridian/meridian") || strings.Contains(string(ud), "downloads.example.com") {
		t.Errorf("--binary-path did not replace the fleet file's binary_url:\n%s", ud)
	}
	for _, p := range []string{"vms.json", "prometheus/prometheus.yml", "hosts/www.example.com.json", "ctl-2/etc/meridian/dns.yaml"} {
		if _, err := os.Stat(filepath.Join(out, p)); err != nil {
			t.Errorf("render did not write %s: %v", p, err)
		}
	}
}

func TestCommandRenderReportsMistakes(t *testing.T) {
	cmd := NewCommand()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"render", filepath.Join("testdata", "bad", "mistakes.yaml"), "--out", t.TempDir()})
	err := cmd.Execute()
	want := filepath.Join("testdata", "bad", "mistakes.yaml") + ":26:5: pops[0].lat"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("deploy render of a bad fleet = %v, want the lat mistake as %q", err, want)
	}
}

func TestCommandValidate(t *testing.T) {
	run := func(path string) (string, error) {
		cmd := NewCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"validate", path})
		err := cmd.Execute()
		return out.String(), err
	}
	if out, err := run(filepath.Join("testdata", "fleet.yaml")); err != nil || !strings.Contains(out, "is valid") {
		t.Fatalf("deploy validate example = %q, %v", out, err)
	}
	// The example without TLS: refused, its VMs are not on loopback.
	b, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	noTLS := regexp.MustCompile(`(?m)^  tls:\n(    .*\n)+`).ReplaceAllString(string(b), "")
	p := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(p, []byte(noTLS), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(p); err == nil || !strings.Contains(err.Error(), "nats.tls: is required") {
		t.Fatalf("deploy validate without NATS TLS = %v, want nats.tls required", err)
	}
}

func TestCommandRenderBinaryURLNeedsChecksum(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no checksum", []string{"--binary-url", "https://dl.example.com/meridian"}, "binary-sha256"},
		{"plain http", []string{"--binary-url", "http://dl.example.com/meridian", "--binary-sha256", strings.Repeat("ab", 32)}, "https"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := NewCommand()
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs(append([]string{"render", filepath.Join("testdata", "fleet.yaml"), "--out", t.TempDir()}, tt.args...))
			if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("render %v = %v, want an error about %s", tt.args, err, tt.want)
			}
		})
	}
}
