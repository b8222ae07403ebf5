package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
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
			"- /usr/sbin/nats-server",
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

// TestRenderCredentials: every VM gets its own NATS credentials, as files beside its cloud-init
// and never inside it; no VM's tree holds another VM's secrets; the NATS configs hold public
// keys only, require credentials on every port and keep routes on their own password.
func TestRenderCredentials(t *testing.T) {
	f := loadExample(t)
	sec, err := NewSecrets()
	if err != nil {
		t.Fatal(err)
	}
	files, err := Render(f, RenderOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	secretsOf := map[string][]string{} // vm -> seeds and passwords it must hold alone
	for key, seed := range sec.Seeds {
		vm, _, _ := strings.Cut(key, "/")
		secretsOf[vm] = append(secretsOf[vm], seed)
	}
	for _, vm := range f.VMs() {
		want := []string{"edge.creds", "nats-leaf.conf"}
		if vm.Role == RoleControl {
			want = []string{"control.creds", "dns.creds", "nats-cluster.conf"}
		}
		for _, name := range want {
			p := vm.Name + CredsDir + "/" + name
			if files[p] == nil || !IsSecret(p) {
				t.Errorf("%s: no %s", vm.Name, p)
			}
		}
		ud := string(files[vm.UserData])
		if strings.Contains(ud, "NKEY SEED") || strings.Contains(ud, sec.RoutePassword) {
			t.Errorf("%s: user-data holds a secret", vm.Name)
		}
		cfg := string(files[vm.Name+EtcDir+"/edge.yaml"])
		if vm.Role == RoleControl {
			cfg = string(files[vm.Name+EtcDir+"/dns.yaml"])
			// The internet-facing DNS runs with response rate limiting on.
			var d struct {
				RateLimit struct{ QPS, Burst float64 } `yaml:"rate_limit"`
			}
			if err := yaml.Unmarshal([]byte(cfg), &d); err != nil || d.RateLimit.QPS <= 0 || d.RateLimit.Burst < d.RateLimit.QPS {
				t.Errorf("%s: dns.yaml rate_limit = %+v (%v), want qps > 0 and burst >= qps", vm.Name, d.RateLimit, err)
			}
		}
		if !strings.Contains(cfg, "admin_listen: 10.") && !strings.Contains(cfg, "admin_listen: 127.0.0.1:") {
			t.Errorf("%s: admin listener not on a private or loopback address:\n%s", vm.Name, cfg)
		}
		nc := string(files[vm.Name+EtcDir+"/nats.conf"])
		if !strings.Contains(nc, "authorization {") || !strings.Contains(nc, "include \"creds/") {
			t.Errorf("%s: nats.conf requires no credentials:\n%s", vm.Name, nc)
		}
	}
	for p, b := range files {
		vm, _, _ := strings.Cut(p, "/")
		for other, secrets := range secretsOf {
			if other == vm {
				continue
			}
			for _, s := range secrets {
				if strings.Contains(string(b), s) {
					t.Errorf("%s holds a secret of %s", p, other)
				}
			}
		}
		if !IsSecret(p) && strings.Contains(string(b), "NKEY SEED") {
			t.Errorf("%s holds a seed outside the credentials directory", p)
		}
		// The route password is the cluster's, shared by the control VMs only.
		if strings.Contains(string(b), sec.RoutePassword) && !strings.HasSuffix(p, CredsDir+"/nats-cluster.conf") {
			t.Errorf("%s holds the route password", p)
		}
	}
}
