package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// credsReaders returns, for the rendered VM vm, each credential file under CredsDir that one
// of its services reads, with the user that service runs as: found the way the services find
// them (edge.yaml, dns.yaml, control.env, nats.conf's includes) and the units' User=.
func credsReaders(t *testing.T, files map[string][]byte, vm VM) map[string]string {
	t.Helper()
	unitUser := func(unit string) string {
		b := files[vm.Name+UnitDir+"/"+unit]
		if m := regexp.MustCompile(`(?m)^User=(.+)$`).FindSubmatch(b); m != nil {
			return string(m[1])
		}
		t.Fatalf("%s: %s has no User=", vm.Name, unit)
		return ""
	}
	readers := map[string]string{}
	add := func(file, unit string) {
		if path.Dir(file) != CredsDir {
			t.Fatalf("%s: %s reads %s, outside %s", vm.Name, unit, file, CredsDir)
		}
		readers[path.Base(file)] = unitUser(unit)
	}
	yamlField := func(name string, v any) {
		if err := yaml.Unmarshal(files[vm.Name+EtcDir+"/"+name], v); err != nil {
			t.Fatalf("%s: %s: %v", vm.Name, name, err)
		}
	}
	if vm.Role == RoleEdge {
		var e struct {
			Fleet struct{ Creds string } `yaml:"fleet"`
		}
		yamlField("edge.yaml", &e)
		add(e.Fleet.Creds, "meridian-edge.service")
	} else {
		var d struct{ Creds string }
		yamlField("dns.yaml", &d)
		add(d.Creds, "meridian-dns.service")
		m := regexp.MustCompile(`--nats-creds (\S+)`).FindSubmatch(files[vm.Name+EtcDir+"/control.env"])
		if m == nil {
			t.Fatalf("%s: control.env has no --nats-creds", vm.Name)
		}
		add(string(m[1]), "meridian-control.service")
	}
	// nats-server reads an include relative to its config's directory.
	for _, m := range regexp.MustCompile(`include "([^"]+)"`).FindAllSubmatch(files[vm.Name+EtcDir+"/nats.conf"], -1) {
		add(path.Join(EtcDir, string(m[1])), "nats-server.service")
	}
	return readers
}

// secretReaders returns, for the rendered VM vm, each secret file the fleet names that one of
// its services reads (the API tokens and key in control.env, the NATS TLS key in nats.conf),
// with the user that service runs as (its unit's User=).
func secretReaders(t *testing.T, files map[string][]byte, vm VM) map[string]string {
	t.Helper()
	unitUser := func(unit string) string {
		if m := regexp.MustCompile(`(?m)^User=(.+)$`).FindSubmatch(files[vm.Name+UnitDir+"/"+unit]); m != nil {
			return string(m[1])
		}
		t.Fatalf("%s: %s has no User=", vm.Name, unit)
		return ""
	}
	readers := map[string]string{}
	if vm.Role == RoleControl {
		for _, m := range regexp.MustCompile(`--(?:tokens|tls-key) (\S+)`).FindAllSubmatch(files[vm.Name+EtcDir+"/control.env"], -1) {
			readers[string(m[1])] = unitUser("meridian-control.service")
		}
	}
	for _, m := range regexp.MustCompile(`key_file: "([^"]+)"`).FindAllSubmatch(files[vm.Name+EtcDir+"/nats.conf"], -1) {
		readers[string(m[1])] = unitUser("nats-server.service")
	}
	return readers
}

// TestRenderCredsDirectory: cloud-init creates the credentials directory, and each
// credential copied into it becomes its service's alone whoever copied it and however: before,
// nothing created /etc/meridian/creds, and a directory copied in as it is arrived mode 0700,
// root's, its files root's, and every unit restarted for ever, unable to read its credential.
// Each VM's tmpfiles.d config must give every credential the renderer writes for it to the
// user of the one service that reads it (as its configs and units say), and so every secret
// file the fleet names for it (tokens, API key, NATS TLS key: before, the operator had to
// set their owners by hand); the user data must carry and apply it, and every unit must apply
// it before it starts.
func TestRenderCredsDirectory(t *testing.T) {
	f := loadExample(t)
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range f.VMs() {
		t.Run(vm.Name, func(t *testing.T) {
			readers := credsReaders(t, files, vm)
			var rendered []string
			for p := range files {
				if name, ok := strings.CutPrefix(p, vm.Name+CredsDir+"/"); ok {
					rendered = append(rendered, name)
				}
			}
			slices.Sort(rendered)
			// The directory first (before the files in it), then one line per file.
			want := []string{fmt.Sprintf("d %s 0755 root root -", CredsDir)}
			for _, name := range rendered {
				u, ok := readers[name]
				if !ok {
					t.Errorf("the renderer writes %s, which no service of %s reads", name, vm.Name)
				}
				want = append(want, fmt.Sprintf("z %s/%s 0600 %s %s -", CredsDir, name, u, u))
			}
			if len(readers) != len(rendered) {
				t.Errorf("%s's services read %v, the renderer writes %v", vm.Name, readers, rendered)
			}
			for p, u := range secretReaders(t, files, vm) {
				want = append(want, fmt.Sprintf("z %s 0600 %s %s -", p, u, u))
			}
			slices.Sort(want[1:])

			conf := files[vm.Name+TmpfilesConf]
			var got []string
			sc := bufio.NewScanner(bytes.NewReader(conf))
			for sc.Scan() {
				if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
					got = append(got, strings.Join(strings.Fields(l), " "))
				}
			}
			if len(got) > 1 {
				slices.Sort(got[1:])
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s%s =\n%s\nwant the lines\n%s", vm.Name, TmpfilesConf, conf, strings.Join(want, "\n"))
			}

			var cc struct {
				WriteFiles []writeFile `yaml:"write_files"`
				RunCmd     [][]string  `yaml:"runcmd"`
			}
			if err := yaml.Unmarshal(files[vm.UserData], &cc); err != nil {
				t.Fatalf("user data: %v", err)
			}
			carried := false
			for _, w := range cc.WriteFiles {
				if w.Path == TmpfilesConf {
					carried = w.Content == string(conf) && w.Permissions == "0644" && w.Owner == "root:root" && w.Defer
				}
			}
			if !carried {
				t.Errorf("%s: user data does not write %s (root's, 0644, deferred) as rendered", vm.Name, TmpfilesConf)
			}
			apply, restart := -1, -1
			for i, c := range cc.RunCmd {
				switch strings.Join(c, " ") {
				case "systemd-tmpfiles --create " + TmpfilesConf:
					apply = i
				}
				if len(c) > 1 && c[0] == "systemctl" && c[1] == "restart" {
					restart = i
				}
			}
			if apply < 0 || restart < 0 || apply > restart {
				t.Errorf("%s: runcmd %q: want systemd-tmpfiles --create %s before the units start", vm.Name, cc.RunCmd, TmpfilesConf)
			}

			for p, b := range files {
				unit, ok := strings.CutPrefix(p, vm.Name+UnitDir+"/")
				if !ok {
					continue
				}
				pre := strings.Index(string(b), "\nExecStartPre=-+/usr/bin/systemd-tmpfiles --create "+TmpfilesConf+"\n")
				start := strings.Index(string(b), "\nExecStart=")
				if pre < 0 || pre > start {
					t.Errorf("%s: %s does not apply %s as root before it starts", vm.Name, unit, TmpfilesConf)
				}
			}
		})
	}
}
