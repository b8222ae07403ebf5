package deploy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/wire"
)

// TestParseBadFleets checks that every mistake in testdata/bad/*.yaml gets exactly one clear
// error. Each file lists the errors it wants in "# want: ..." comments (substrings, any order).
func TestParseBadFleets(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no bad fleets: %v", err)
	}
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			for _, l := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(l, "# want: "); ok {
					wants = append(wants, w)
				}
			}
			_, err = Parse(data)
			if err == nil {
				t.Fatalf("Parse(%s) = nil, want %d errors", p, len(wants))
			}
			got := splitErrors(err)
			for _, e := range got {
				var fe *wire.FieldError
				if !errors.As(e, &fe) {
					t.Errorf("error %q is a %T, want *wire.FieldError", e, e)
				}
			}
			used := make([]bool, len(got))
			for _, w := range wants {
				found := false
				for i, e := range got {
					if !used[i] && strings.Contains(e.Error(), w) {
						used[i], found = true, true
						break
					}
				}
				if !found {
					t.Errorf("no error contains %q", w)
				}
			}
			for i, e := range got {
				if !used[i] {
					t.Errorf("unexpected error %q", e)
				}
			}
		})
	}
}

func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestParseExample(t *testing.T) {
	f := loadExample(t)
	tests := []struct {
		name      string
		got, want any
	}{
		{"prefix", f.Prefix, "meridian"},
		{"client port default", f.NATS.ClientPort, DefaultClientPort},
		{"lame duck default (dns ttl + 5s)", f.Edge.LameDuck.String(), "35s"},
		{"ns name default", f.nsName(f.Control.Nodes[1]), "ns2.cdn.example.com."},
		{"vms", len(f.VMs()), 7},
		{"edge vm name", f.VMs()[3].Name, "fra-edge-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	f := loadExample(t)
	sec, err := NewSecrets()
	if err != nil {
		t.Fatal(err)
	}
	a, err := Render(f, RenderOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Render(f, RenderOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("renders have %d and %d files", len(a), len(b))
	}
	for p := range a {
		if !bytes.Equal(a[p], b[p]) {
			t.Errorf("%s differs between two renders", p)
		}
	}
}

func TestRenderNeedsBinary(t *testing.T) {
	f := loadExample(t)
	f.Release.BinaryURL = ""
	if _, err := Render(f, RenderOptions{}); err == nil || !strings.Contains(err.Error(), "release") {
		t.Errorf("Render without a binary = %v, want an error naming release", err)
	}
}

// severalProblems holds one mistake of each kind: an unknown field, values of the wrong type
// and bad values, in sections at several depths. The test lists where each is.
const severalProblems = `name: several
release:
  binary_path: /opt/meridian/meridian
control:
  insecure_http: true
  replicas: three
  nodes:
    - {name: ctl-1, region: eu-central-1, ipv4: 203.0.113.11}
    - {name: ctl-2, region: us-east-1, ipv4: 203.0.113.12}
    - {name: ctl-3, region: ap-northeast-1, ipv4: 203.0.113.300}
nats:
  tls: {cert_file: /etc/tls/nats.crt, key_file: /etc/tls/nats.key, ca_file: /etc/tls/ca.crt}
dns:
  zone: cdn.example.com.
  ttl: soon
pops:
  - id: fra
    region: eu-central-1
    lat: 50.1
    lon: 190
    nodes:
      - id: edge-1
        ipv4: 198.51.100.11
        capacty: 100
hosts:
  - host: www.example.com
    origin: https://origin.example.com
    shield: ams
`

// TestLoadReportsEveryProblemWithPosition checks that one Load reports the unknown field, the
// type errors and the bad values together, each as a *wire.FieldError with its file, line,
// column and field.
func TestLoadReportsEveryProblemWithPosition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(path, []byte(severalProblems), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var list wire.FieldErrors
	if !errors.As(err, &list) {
		t.Fatalf("Load = %v (%T), want wire.FieldErrors", err, err)
	}
	want := []struct {
		line, col int
		field     string
		msg       string
	}{
		{6, 13, "control.replicas", "cannot unmarshal !!str `three` into int"},
		{15, 8, "dns.ttl", "cannot unmarshal !!str `soon` into time.Duration"},
		{24, 9, "pops[0].nodes[0].capacty", `unknown field "capacty"`},
		{10, 45, "control.nodes[2].ipv4", `"203.0.113.300" is not an IP address`},
		{20, 5, "pops[0].lon", "190 is not between -180 and 180"},
		{28, 5, "hosts[0].shield", `"ams" is not a PoP of this fleet`},
	}
	if len(list) != len(want) {
		t.Errorf("Load reported %d problems, want %d:\n%v", len(list), len(want), err)
	}
	for _, w := range want {
		var got *wire.FieldError
		for _, e := range list {
			if e.Field == w.field {
				got = e
			}
		}
		switch {
		case got == nil:
			t.Errorf("no problem with %s (want %q at %d:%d)", w.field, w.msg, w.line, w.col)
		case got.File != path || got.Line != w.line || got.Column != w.col || got.Err.Error() != w.msg:
			t.Errorf("problem with %s = %s:%d:%d %q, want %s:%d:%d %q",
				w.field, got.File, got.Line, got.Column, got.Err, path, w.line, w.col, w.msg)
		}
	}
	for i := 1; i < len(list); i++ {
		if list[i].Line < list[i-1].Line {
			t.Errorf("problems out of file order: line %d after line %d", list[i].Line, list[i-1].Line)
		}
	}
	// What the operator reads: file:line:column: field: problem, one per line.
	if line := path + ":20:5: pops[0].lon: 190 is not between -180 and 180"; !strings.Contains(err.Error()+"\n", line+"\n") {
		t.Errorf("Load error reads\n%v\nwant a line %q", err, line)
	}
}

// TestParseInternationalisedHost: a host named in Unicode is rendered under its A-label, the
// form clients send and edges serve: in the edge configs and as the host config to PUT.
func TestParseInternationalisedHost(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, "  - host: Bücher.example\n    origin: https://origin.example.com\n"...)
	f, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if got := f.Hosts[len(f.Hosts)-1].Host; got != "xn--bcher-kva.example" {
		t.Errorf("host = %q, want xn--bcher-kva.example", got)
	}
	sec, err := NewSecrets()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(f, RenderOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := out["hosts/xn--bcher-kva.example.json"]; !ok {
		t.Errorf("rendered no hosts/xn--bcher-kva.example.json")
	}
	for p, b := range out {
		if strings.Contains(string(b), "ücher") {
			t.Errorf("%s names the host in Unicode", p)
		}
	}
}

// TestParseInternationalisedDNSNames: the DNS zone, the name servers' names, hostnames and
// cnames may be written in Unicode, as dnsroute takes them; every rendered dns.yaml names them
// by their A-labels, the form resolvers ask for, and loads. The fleet checks refused them.
func TestParseInternationalisedDNSNames(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, r := range [][2]string{
		{"zone: cdn.example.com.", "zone: cdn.Bücher.example"},
		{"private_ipv4: 10.1.0.10", "private_ipv4: 10.1.0.10\n      ns: nß"},
		{`hostnames: ["*"]`, `hostnames: [straße]` + "\n  cnames: {ñ: straße}"},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("example has no %q", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	f, err := Parse([]byte(text))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	renderedConfigsLoad(t, f)
	out, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const zone = "cdn.xn--bcher-kva.example."
	n := 0
	for p, b := range out {
		if !strings.HasSuffix(p, "/dns.yaml") {
			continue
		}
		n++
		for _, want := range []string{"zone: " + zone, "name: xn--n-qfa." + zone, "- xn--strae-oqa", "xn--ida: xn--strae-oqa"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s holds no %q:\n%s", p, want, b)
			}
		}
		if strings.ContainsAny(string(b), "üßñ") {
			t.Errorf("%s names a DNS name in Unicode:\n%s", p, b)
		}
	}
	if n == 0 {
		t.Error("rendered no dns.yaml")
	}
}
