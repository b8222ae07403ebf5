package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlVMKeepsNameResolution: the rendered drop-in turns off systemd-resolved's stub
// listener so that meridian dns can bind :53, but /etc/resolv.conf on images that use resolved
// (Ubuntu, Debian cloud images) is a link to stub-resolv.conf, which names 127.0.0.53 whatever
// the listener does. Left so, the VM's every lookup goes to the zone's own authoritative server,
// which refuses names outside the zone: apt, curl and anything else resolving a name fails. The
// control VM's cloud-init must point resolv.conf at resolved's list of upstream servers, and only
// where it named the stub (a file the operator wrote stays). Edges keep the stub.
func TestControlVMKeepsNameResolution(t *testing.T) {
	f := loadExample(t)
	f.Release = Release{BinaryPath: "/opt/meridian/meridian"}
	var repoint string
	restartedResolved := false
	for _, c := range userData(t, f, "ctl-1").RunCmd {
		s := strings.Join(c, " ")
		if strings.Contains(s, ResolvConf) {
			if restartedResolved {
				t.Errorf("resolv.conf is repointed after resolved restarts without its stub: %q", s)
			}
			repoint = c[len(c)-1]
		}
		if strings.Contains(s, "systemd-resolved.service") {
			restartedResolved = true
		}
	}
	if repoint == "" {
		t.Fatalf("ctl-1's cloud-init never repoints %s: it keeps naming the stub 127.0.0.53 that the drop-in turns off", ResolvConf)
	}
	for _, c := range userData(t, f, "fra-edge-1").RunCmd {
		if s := strings.Join(c, " "); strings.Contains(s, ResolvConf) {
			t.Errorf("fra-edge-1 (no DNS server on :53) changes %s: %q", ResolvConf, s)
		}
	}

	upstream := resolvedDir + "/resolv.conf"
	for _, tc := range []struct {
		name    string
		link    string // resolv.conf's link target ("" a regular file)
		repoint bool
	}{
		{"absolute link to the stub", resolvedDir + "/stub-resolv.conf", true},
		{"relative link to the stub", "../run/systemd/resolve/stub-resolv.conf", true},
		{"link to the static stub file", "/usr/lib/systemd/resolv.conf", true},
		{"link to the upstream list already", upstream, false},
		{"a file the operator wrote", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			conf := filepath.Join(root, ResolvConf)
			if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.link == "" {
				if err := os.WriteFile(conf, []byte("nameserver 10.0.0.2\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Symlink(tc.link, conf); err != nil {
				t.Fatal(err)
			}
			// The command as rendered, on the test's root instead of /.
			s := strings.ReplaceAll(repoint, " "+upstream+" ", " "+root+upstream+" ")
			s = strings.ReplaceAll(s, " "+ResolvConf, " "+conf)
			if strings.Contains(s, " "+ResolvConf) || !strings.Contains(s, root+upstream) {
				t.Fatalf("the command %q still names this machine's files", s)
			}
			if out, err := exec.Command("sh", "-c", s).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", s, err, out)
			}
			got, _ := os.Readlink(conf)
			want := tc.link
			if tc.repoint {
				want = root + upstream
			}
			if got != want {
				t.Errorf("%s links to %q, want %q (command %q)", ResolvConf, got, want, s)
			}
		})
	}
}
