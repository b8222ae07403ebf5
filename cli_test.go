package main

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/proctest"
)

// TestCLIHelpAndErrors: every command's --help exits 0 with its usage on stdout; an unknown
// flag, command or argument exits non-zero with one "meridian: " line on stderr and nothing
// on stdout.
func TestCLIHelpAndErrors(t *testing.T) {
	bin := proctest.Build(t)
	for _, args := range [][]string{
		{}, {"edge"}, {"origin"}, {"control"}, {"control", "creds"}, {"control", "creds", "edge"},
		{"control", "creds", "dns"}, {"control", "creds", "list"}, {"control", "creds", "revoke"},
		{"dns"}, {"dns", "explain"}, {"deploy"}, {"deploy", "render"}, {"deploy", "validate"},
		{"purge"}, {"sim"}, {"version"},
	} {
		res := proctest.Run(t, 5*time.Second, bin, append(args, "--help")...)
		if res.Code != 0 || !strings.Contains(res.Stdout, "Usage:") || res.Stderr != "" {
			t.Errorf("%v --help: exit %d, stdout %q, stderr %q", args, res.Code, res.Stdout, res.Stderr)
		}
	}
	for _, args := range [][]string{
		{"edge", "--bogus"}, {"nosuch"}, {"version", "extra"}, {"origin", "extra"}, {"purge", "--url", "/x"},
	} {
		res := proctest.Run(t, 5*time.Second, bin, args...)
		if res.Code == 0 || res.Stdout != "" || !strings.HasPrefix(res.Stderr, "meridian: ") ||
			strings.Count(res.Stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, res.Code, res.Stdout, res.Stderr)
		}
	}
	if res := proctest.Run(t, 5*time.Second, bin, "version"); res.Code != 0 || !strings.HasPrefix(res.Stdout, "meridian ") {
		t.Errorf("version: exit %d, stdout %q", res.Code, res.Stdout)
	}
}
