package deploy

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
	"go.yaml.in/yaml/v3"

	"github.com/meridian-cdn/meridian/control"
	"github.com/meridian-cdn/meridian/dnsroute"
	"github.com/meridian-cdn/meridian/edge"
)

// TestTerraformParses parses every .tf file with HashiCorp's HCL parser, so a syntax error in
// the example is caught here rather than at `terraform plan`.
func TestTerraformParses(t *testing.T) {
	var files []string
	err := filepath.WalkDir("terraform", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".tf") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) < 3 {
		t.Fatalf("found %d .tf files (%v), want at least 3", len(files), err)
	}
	p := hclparse.NewParser()
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			if _, diags := p.ParseHCLFile(f); diags.HasErrors() {
				t.Errorf("parse %s: %v", f, diags)
			}
		})
	}
}

// TestTerraformReadsRenderedVMs checks that the fields main.tf reads from vms.json exist.
func TestTerraformReadsRenderedVMs(t *testing.T) {
	files, err := Render(loadExample(t), RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var vms []map[string]any
	if err := json.Unmarshal(files["vms.json"], &vms); err != nil {
		t.Fatalf("vms.json: %v", err)
	}
	for _, vm := range vms {
		for _, k := range []string{"name", "role", "region", "ipv4", "user_data"} {
			if _, ok := vm[k]; !ok {
				t.Errorf("vms.json entry %v has no %q, which terraform/main.tf reads", vm, k)
			}
		}
		if ud, _ := vm["user_data"].(string); files[ud] == nil {
			t.Errorf("vms.json names user data %q, which was not rendered", ud)
		}
	}
}

// composeFile is what the tests read of compose.yaml.
type composeFile struct {
	Services map[string]struct {
		Command []string `yaml:"command"`
		Volumes []string `yaml:"volumes"`
		Ports   []string `yaml:"ports"`
	} `yaml:"services"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

func TestComposeParses(t *testing.T) {
	c := readCompose(t)
	var edges int
	for name, s := range c.Services {
		if strings.HasPrefix(name, "edge-") {
			edges++
		}
		for _, v := range s.Volumes {
			if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, "./") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	if edges != 3 {
		t.Errorf("compose.yaml has %d edge services, want 3 (one per PoP)", edges)
	}
	// The control API is published on the host's loopback only; NATS is not published.
	if p := c.Services["control"].Ports; len(p) != 1 || !strings.HasPrefix(p[0], "127.0.0.1:") {
		t.Errorf("control publishes %q, want only its API on 127.0.0.1", p)
	}
}

// TestComposeCredentialsAreEachTheirs: every compose service that runs with a NATS credential
// can read its own and no other. The creds-* services issue each credential into a volume; a
// service mounting a volume that holds another's credential could connect as that node (write
// its registry key, ack purges for it) or as DNS.
func TestComposeCredentialsAreEachTheirs(t *testing.T) {
	c := readCompose(t)
	// written[volume] are the credential files the issuing services write into it, as paths
	// relative to the volume's root.
	written := map[string][]string{}
	issuers := map[string]bool{}
	for name, s := range c.Services {
		if len(s.Command) < 2 || s.Command[0] != "control" || s.Command[1] != "creds" {
			continue
		}
		issuers[name] = true
		out := ""
		for i, a := range s.Command {
			if (a == "-o" || a == "--out") && i+1 < len(s.Command) {
				out = s.Command[i+1]
			}
		}
		if out == "" {
			t.Errorf("service %s issues a credential to stdout, want -o FILE on a volume", name)
			continue
		}
		found := false
		for _, v := range s.Volumes {
			src, target, _ := strings.Cut(v, ":")
			target, _, _ = strings.Cut(target, ":")
			if rel, ok := strings.CutPrefix(out, target+"/"); ok {
				written[src] = append(written[src], rel)
				found = true
			}
		}
		if !found {
			t.Errorf("service %s writes %s on no volume", name, out)
		}
	}
	if len(issuers) != 4 {
		t.Fatalf("compose.yaml has %d creds-issuing services, want 4 (three edges, DNS)", len(issuers))
	}
	for name, s := range c.Services {
		if issuers[name] {
			continue
		}
		var reach []string // credential files the service can read
		own := ""          // the credential its config names
		for _, v := range s.Volumes {
			src, target, _ := strings.Cut(v, ":")
			target, _, _ = strings.Cut(target, ":")
			for _, rel := range written[src] {
				reach = append(reach, target+"/"+rel)
			}
			if strings.HasPrefix(src, "./") && strings.HasSuffix(src, ".yaml") {
				var cfg struct {
					Creds string `yaml:"creds"`
					Fleet struct {
						Creds string `yaml:"creds"`
					} `yaml:"fleet"`
				}
				if b, err := os.ReadFile(src); err == nil && yaml.Unmarshal(b, &cfg) == nil {
					own = cfg.Creds + cfg.Fleet.Creds
				}
			}
		}
		sort.Strings(reach)
		switch {
		case own == "" && len(reach) > 0:
			t.Errorf("service %s uses no NATS credential but can read %v", name, reach)
		case own != "" && (len(reach) != 1 || reach[0] != own):
			t.Errorf("service %s can read the credentials %v, want only its own %s", name, reach, own)
		}
	}
}

func TestDockerfileIsStaticScratch(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "FROM scratch", "ENTRYPOINT"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// TestDashboardUsesDocumentedMetrics checks the dashboard is valid JSON with the panels the
// issue asks for, and that every metric it queries is documented in docs/ (that each is
// exported is TestDashboardsQueryScrapedMetrics's job).
func TestDashboardUsesDocumentedMetrics(t *testing.T) {
	b, err := os.ReadFile("grafana/meridian-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		titles[p.Title] = true
	}
	for _, want := range []string{"Fleet requests/s", "Hit ratio", "Origin offload", "Purge latency", "DNS answers per PoP", "Breaker states"} {
		if !titles[want] {
			t.Errorf("dashboard has no %q panel", want)
		}
	}
	var docs strings.Builder
	for _, f := range []string{"edge.md", "dns.md", "control.md", "purge.md", "deploy.md"} {
		db, err := os.ReadFile(filepath.Join("..", "docs", f))
		if err != nil {
			t.Fatal(err)
		}
		docs.Write(db)
	}
	re := regexp.MustCompile(`meridian_[a-z_]+`)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range re.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !strings.Contains(docs.String(), base) {
					t.Errorf("panel %q queries %s, which docs/ does not document", p.Title, base)
				}
			}
		}
	}
}

func TestPrometheusConfigListsEveryNode(t *testing.T) {
	f := loadExample(t)
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			Scheme        string `yaml:"scheme"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(files["prometheus/prometheus.yml"], &pc); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	got := map[string][]string{}
	for _, sc := range pc.ScrapeConfigs {
		// The example's control API has a certificate: it serves HTTPS only.
		if sc.JobName == "meridian-control" && sc.Scheme != "https" {
			t.Errorf("job meridian-control scheme = %q, want https (control.tls_cert is set)", sc.Scheme)
		}
		for _, s := range sc.StaticConfigs {
			got[sc.JobName] = append(got[sc.JobName], s.Targets...)
		}
	}
	want := map[string][]string{
		// nrt-edge-1 has no private address: its admin port is on loopback, not scraped.
		"meridian-edge":    {"10.1.0.11:9080", "10.1.0.12:9080", "10.2.0.21:9080"},
		"meridian-dns":     {"10.1.0.10:9153", "10.2.0.10:9153", "10.3.0.10:9153"},
		"meridian-control": {"203.0.113.11:7070", "203.0.113.12:7070", "203.0.113.13:7070"},
	}
	for job, w := range want {
		g := got[job]
		sort.Strings(g)
		if strings.Join(g, " ") != strings.Join(w, " ") {
			t.Errorf("job %s targets = %v, want %v", job, g, w)
		}
	}
}

// TestUnitsAreHardened checks the unit templates carry the hardening the issue asks for.
func TestUnitsAreHardened(t *testing.T) {
	for _, u := range []string{"meridian-edge.service", "meridian-dns.service", "meridian-control.service", "nats-server.service"} {
		t.Run(u, func(t *testing.T) {
			b, err := units.ReadFile("systemd/" + u)
			if err != nil {
				t.Fatal(err)
			}
			user := map[string]string{"meridian-edge.service": "meridian-edge", "meridian-dns.service": "meridian-dns",
				"meridian-control.service": "meridian-control", "nats-server.service": "meridian-nats"}[u]
			for _, want := range []string{"User=" + user + "\n", "ProtectSystem=strict", "NoNewPrivileges=yes",
				"CapabilityBoundingSet=", "LimitNOFILE=", "Restart=on-failure"} {
				if !strings.Contains(string(b), want) {
					t.Errorf("%s lacks %s", u, want)
				}
			}
		})
	}
}

// TestLongRenderedUnitsVerify runs systemd-analyze verify on every rendered unit (MERIDIAN_LONG=1
// and systemd-analyze installed). Binaries are stubbed under a temporary root.
func TestLongRenderedUnitsVerify(t *testing.T) {
	tool := longTool(t, "systemd-analyze")
	files, err := Render(loadExample(t), RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, bin := range []string{"meridian", "nats-server"} {
		putFileMode(t, filepath.Join(root, "usr/local/bin", bin), "#!/bin/sh\n", 0o755)
	}
	byVM := map[string][]string{}
	for p, b := range files {
		vm, rest, _ := strings.Cut(p, "/")
		if !strings.HasPrefix("/"+rest, UnitDir+"/") {
			continue
		}
		path := filepath.Join(root, vm, filepath.Base(rest))
		putFileMode(t, path, string(relocate(b, root)), 0o644)
		byVM[vm] = append(byVM[vm], path)
	}
	if len(byVM) == 0 {
		t.Fatal("no units rendered")
	}
	// A VM's units are verified together: meridian-control requires nats-server.
	for vm, paths := range byVM {
		t.Run(vm, func(t *testing.T) {
			sort.Strings(paths)
			out, err := exec.Command(tool, append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
			// Unknown keys are only warnings (exit 0): any output fails the test.
			if err != nil || len(out) > 0 {
				t.Errorf("systemd-analyze verify %v: %v\n%s", paths, err, out)
			}
		})
	}
}

// TestLongCloudInitSchema runs cloud-init schema on every rendered user data (MERIDIAN_LONG=1
// and cloud-init installed).
func TestLongCloudInitSchema(t *testing.T) {
	tool := longTool(t, "cloud-init")
	files, err := Render(loadExample(t), RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	checked := 0
	for p, b := range files {
		if !strings.HasSuffix(p, "/user-data") {
			continue
		}
		checked++
		t.Run(p, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(p, "/", "_"))
			putFileMode(t, path, string(b), 0o644)
			out, err := exec.Command(tool, "schema", "--config-file", path).CombinedOutput()
			if err != nil {
				t.Errorf("cloud-init schema %s: %v\n%s", p, err, out)
			}
		})
	}
	if checked == 0 {
		t.Fatal("no user data rendered")
	}
}

func longTool(t *testing.T, name string) string {
	t.Helper()
	if os.Getenv("MERIDIAN_LONG") != "1" {
		t.Skip("set MERIDIAN_LONG=1 (make test-long)")
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed", name)
	}
	return p
}

func putFileMode(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// TestComposeConfigsLoad checks the compose fleet's configs with the loaders the services use.
func TestComposeConfigsLoad(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join("compose", "edge-*.yaml"))
	if len(paths) != 3 {
		t.Fatalf("found %d edge configs, want 3", len(paths))
	}
	for _, p := range paths {
		c, err := edge.LoadConfig(p)
		if err != nil {
			t.Errorf("edge.LoadConfig(%s) = %v", p, err)
			continue
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := dnsroute.LoadConfig(filepath.Join("compose", "dns.yaml")); err != nil {
		t.Errorf("dnsroute.LoadConfig(compose/dns.yaml) = %v", err)
	}
	toks, err := control.LoadTokens(filepath.Join("compose", "tokens.yaml"))
	if err != nil {
		t.Errorf("control.LoadTokens(compose/tokens.yaml) = %v", err)
	}
	for _, tok := range toks {
		if len(tok.Scopes) > 1 && len(tok.Hosts) == 0 {
			t.Errorf("compose demo token %s has scopes %v on every host; want one narrow scope", tok.Name, tok.Scopes)
		}
	}
}
