package sim

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/report"
)

// TestCommandRefusesBadInput checks the errors the command gives before it starts anything.
func TestCommandRefusesBadInput(t *testing.T) {
	bad := filepath.Join("scenario", "testdata", "bad", "bad_kind.yaml")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad scenario names file, line, column and field", []string{"--scenario", bad}, bad + `:7:5: events[1].kind: "explode" is not one of`},
		{"missing scenario file", []string{"--scenario", filepath.Join(t.TempDir(), "none.yaml")}, "read scenario"},
		{"negative duration", []string{"--duration", "-1s"}, "--duration must be positive"},
		{"negative seed", []string{"--seed", "-3"}, "--seed must not be negative"},
		{"arguments", []string{"extra"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := NewCommand()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tt.args)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := cmd.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("sim %v = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestCommandChecksOutFirst: an --out that cannot be written is refused before the fleet
// starts (a world run takes over a minute), and no "report:" line names a file that is not
// there.
func TestCommandChecksOutFirst(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, out string }{
		{"parent is a file", filepath.Join(file, "out")},
		{"out is a file", file},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := NewCommand()
			var stdout, stderr bytes.Buffer
			cmd.SetOut(&stdout)
			cmd.SetErr(&stderr)
			cmd.SetArgs([]string{"--scenario", filepath.Join("testdata", "tiny.yaml"), "--out", tt.out})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := cmd.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), "output directory") {
				t.Errorf("sim --out %s = %v, want an error about the output directory", tt.out, err)
			}
			// The summary is written only after a run: none means nothing ran.
			if stdout.Len() != 0 {
				t.Errorf("sim --out %s ran the scenario before refusing the directory; stdout:\n%s", tt.out, stdout.String())
			}
		})
	}
}

func TestCommandFlags(t *testing.T) {
	cmd := NewCommand()
	for flag, def := range map[string]string{"scenario": "", "duration": "0s", "seed": "0", "out": "sim-out", "check": "false"} {
		f := cmd.Flags().Lookup(flag)
		if f == nil {
			t.Errorf("flag --%s missing", flag)
			continue
		}
		if f.DefValue != def {
			t.Errorf("--%s default = %q, want %q", flag, f.DefValue, def)
		}
	}
}

// TestReportInChromium loads the Small run's report.html in headless Chromium and checks that
// every plot is an image that decoded (naturalWidth > 0) and the page logged no errors.
func TestReportInChromium(t *testing.T) {
	if os.Getenv("MERIDIAN_LONG") != "1" {
		t.Skip("set MERIDIAN_LONG=1 to check report.html in headless Chromium")
	}
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s not installed", chromium)
	}
	dir, _ := runSmall(t)
	page := filepath.Join(dir, "report.html")
	// The check runs in the page: it rewrites the title with what it found, and
	// --dump-dom prints the document after load.
	check := `<script>addEventListener('load',()=>{const imgs=[...document.querySelectorAll('figure img, [id^=plot-] img')];` +
		`document.title='plots:'+imgs.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+imgs.length;});</script>`
	data, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	checked := filepath.Join(dir, "checked.html")
	if err := os.WriteFile(checked, append(data, check...), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	// --enable-logging=stderr: without it Chromium writes nothing of the page's console (an
	// uncaught error included) to stderr, and the check below could not fail.
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
		"--enable-logging=stderr", "--dump-dom", "file://"+checked)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	// Every plot of the page (the eight of docs/sim.md's table), not a count that goes stale.
	want := fmt.Sprintf("<title>plots:%d/%d</title>", len(report.PlotIDs), len(report.PlotIDs))
	if !strings.Contains(string(out), want) {
		i := strings.Index(string(out), "<title>")
		t.Errorf("chromium shows %.60q, want every one of the %d plots decoded (%s)", string(out[max(i, 0):]), len(report.PlotIDs), want)
	}
	for line := range strings.Lines(stderr.String()) {
		if strings.Contains(line, ":CONSOLE") && strings.Contains(line, "Uncaught") {
			t.Errorf("chromium reported a page error: %s", line)
		}
	}
}

// TestCommandRunsTheScenario runs `sim --scenario testdata/tiny.yaml --check --out DIR` end to
// end: the summary goes to stdout, both reports are written and every invariant passes.
func TestCommandRunsTheScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a fleet")
	}
	out := t.TempDir()
	cmd := NewCommand()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--scenario", filepath.Join("testdata", "tiny.yaml"), "--check", "--out", out, "--seed", "9"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("sim --check = %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"scenario   tiny (seed 9, 3s)", "purges     5 (5 complete)", "report: "} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), `sim: scenario "tiny", 2 PoPs`) {
		t.Errorf("stderr lacks the start line:\n%s", stderr.String())
	}
	for _, f := range []string{"report.json", "report.html"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v, want a non-empty file", f, err)
		}
	}
}
