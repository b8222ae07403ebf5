package deploy

import (
	"bytes"
	"os"
	"path/filepath"
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
	if err == nil || !strings.Contains(err.Error(), "line 26: pops[0].lat") {
		t.Errorf("deploy render of a bad fleet = %v, want the lat mistake with its line", err)
	}
}
