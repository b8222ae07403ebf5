//go:build unix

package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLongCredsTmpfiles runs the real systemd-tmpfiles (MERIDIAN_LONG=1, as root) on each
// VM's rendered config in a root of its own, after the credentials and the fleet's secret
// files were copied in as the docs say an operator may (the directory as it is: 0700, root's;
// the files root's, 0644): the directory must become traversable and each file its service's
// alone; a certificate beside a key is left as it is.
func TestLongCredsTmpfiles(t *testing.T) {
	tool := longTool(t, "systemd-tmpfiles")
	if os.Geteuid() != 0 {
		t.Skip("needs root to change owners")
	}
	f := loadExample(t)
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The service users, in the root's own user database (systemd-tmpfiles --root reads it).
	uids := map[string]int{}
	var passwd, group strings.Builder
	passwd.WriteString("root:x:0:0:root:/root:/bin/sh\n")
	group.WriteString("root:x:0:\n")
	for i, u := range []string{userNATS, userControl, userDNS, userEdge} {
		uids[u] = 61001 + i
		fmt.Fprintf(&passwd, "%s:x:%d:%d::%s:/usr/sbin/nologin\n", u, uids[u], uids[u], StateDir)
		fmt.Fprintf(&group, "%s:x:%d:\n", u, uids[u])
	}
	for _, vm := range f.VMs() {
		t.Run(vm.Name, func(t *testing.T) {
			root := t.TempDir()
			putFileMode(t, filepath.Join(root, "etc/passwd"), passwd.String(), 0o644)
			putFileMode(t, filepath.Join(root, "etc/group"), group.String(), 0o644)
			conf := filepath.Join(root, TmpfilesConf)
			putFileMode(t, conf, string(files[vm.Name+TmpfilesConf]), 0o644)
			readers := credsReaders(t, files, vm)
			secrets := secretReaders(t, files, vm)
			creds := filepath.Join(root, CredsDir)
			apply := func(when string) {
				t.Helper()
				if out, err := exec.Command(tool, "--root="+root, "--create", conf).CombinedOutput(); err != nil {
					t.Fatalf("systemd-tmpfiles --create, %s: %v\n%s", when, err, out)
				}
			}
			// Cloud-init, before the operator copied anything: the directory, no files.
			apply("before the credentials are there")
			check := func(p string, mode os.FileMode, uid int) {
				t.Helper()
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if fi.Mode().Perm() != mode || int(st.Uid) != uid || int(st.Gid) != uid {
					t.Errorf("%s: mode %v, owner %d:%d; want %v, %d:%d", p, fi.Mode().Perm(), st.Uid, st.Gid, mode, uid, uid)
				}
			}
			check(creds, 0o755, 0)
			// The operator copies the directory in as it is (rsync -a, scp -rp); then a unit
			// starts.
			for name := range readers {
				putFileMode(t, filepath.Join(creds, name), string(files[vm.Name+CredsDir+"/"+name]), 0o644)
			}
			if err := os.Chmod(creds, 0o700); err != nil {
				t.Fatal(err)
			}
			for p := range secrets {
				putFileMode(t, filepath.Join(root, p), "secret\n", 0o644)
			}
			cert := filepath.Join(root, f.NATS.TLS.CertFile)
			putFileMode(t, cert, "certificate\n", 0o644)
			apply("after the credentials were copied in")
			check(creds, 0o755, 0)
			for name, u := range readers {
				check(filepath.Join(creds, name), 0o600, uids[u])
			}
			if len(secrets) == 0 {
				t.Fatal("no secret files found in the rendered configs")
			}
			for p, u := range secrets {
				check(filepath.Join(root, p), 0o600, uids[u])
			}
			check(cert, 0o644, 0)
		})
	}
}
