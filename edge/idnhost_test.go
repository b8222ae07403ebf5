package edge

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestLoadConfigInternationalisedHosts: a host in hosts: may be written in Unicode; it is
// served under its ASCII form (A-labels), the only one clients send in Host, and one IDNA
// refuses is a config error naming it at its line.
func TestLoadConfigInternationalisedHosts(t *testing.T) {
	tests := []struct {
		name      string
		hosts     []string // YAML scalars, as written
		want      []string // the hosts loaded
		wantField string   // else the problem
		wantMsg   string
	}{
		{"u-label", []string{"bücher.example"}, []string{"xn--bcher-kva.example"}, "", ""},
		{"upper case u-label", []string{"BÜCHER.Example"}, []string{"xn--bcher-kva.example"}, "", ""},
		{"fullwidth dot", []string{`"bücher\uff0eexample"`}, []string{"xn--bcher-kva.example"}, "", ""},
		{"a-label", []string{"xn--bcher-kva.example"}, []string{"xn--bcher-kva.example"}, "", ""},
		{"ascii, upper case", []string{"WWW.Example.com"}, []string{"www.example.com"}, "", ""},
		{"both forms", []string{"bücher.example", "xn--bcher-kva.example"}, nil, "hosts[1].host", `"xn--bcher-kva.example" is listed twice`},
		// A problem found in the ASCII form names the name as written too: that is what the
		// operator looks for in the file.
		{"both forms, u-label second", []string{"xn--bcher-kva.example", "Bücher.example"}, nil, "hosts[1].host", `"Bücher.example" (xn--bcher-kva.example) is listed twice`},
		{"u-label, trailing dot", []string{"bücher.example."}, nil, "hosts[0].host", `"bücher.example.": "xn--bcher-kva.example." is not a valid hostname`},
		{"disallowed code point", []string{`"b\u2028ücher.example"`}, nil, "hosts[0].host", `"b\u2028ücher.example" is not a valid internationalised hostname`},
		{"bidi rule", []string{"aא.example"}, nil, "hosts[0].host", `"aא.example" is not a valid internationalised hostname`},
		{"maps to an empty label", []string{`"\u00ad.example"`}, nil, "hosts[0].host", `"\u00ad.example" is not a valid internationalised hostname`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			b.WriteString("hosts:\n")
			for _, h := range tt.hosts {
				b.WriteString("  - host: " + h + "\n    origin: http://127.0.0.1:9000\n")
			}
			p := filepath.Join(t.TempDir(), "edge.yaml")
			if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tt.wantField != "" {
				var fes wire.FieldErrors
				if !errors.As(err, &fes) || len(fes) != 1 || fes[0].Field != tt.wantField || fes[0].Line == 0 || !strings.Contains(fes[0].Error(), tt.wantMsg) {
					t.Fatalf("LoadConfig error = %v, want one problem with %s at its line: ...%s...", err, tt.wantField, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig error = %v, want nil", err)
			}
			var got []string
			for _, h := range c.Hosts {
				got = append(got, h.Host)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("LoadConfig hosts = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestInternationalisedHostServedAndPurged: a node configured (in Go, not a file) with a U-label serves
// its A-label (what clients send), and a purge naming the U-label invalidates what was
// fetched under the A-label. The Host a client sends is not converted: a raw UTF-8 Host is no
// configured host.
func TestInternationalisedHostServedAndPurged(t *testing.T) {
	const aLabel = "xn--bcher-kva.example"
	s := newSingle(t, func(c *Config) { c.Hosts[0].Host = "Bücher.example" })
	get := func(path string) resp { return do(t, s.client, http.MethodGet, s.edge.Addr(), aLabel, path) }
	const path = "/a?cc=max-age%3D600"
	if r := get(path); r.status != http.StatusOK {
		t.Fatalf("GET %s%s = %d %q, want 200", aLabel, path, r.status, r.body)
	}
	if r := get(path); !strings.Contains(r.header.Get("Cache-Status"), "; hit") {
		t.Fatalf("second GET: Cache-Status %q, want a hit", r.header.Get("Cache-Status"))
	}
	msgs, err := purge.Request{Host: "bücher.example", URLs: []string{"https://bücher.example" + path}}.Messages("t", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.edge.ApplyPurge(context.Background(), msgs[0]); err != nil {
		t.Fatal(err)
	}
	if r := get(path); !strings.Contains(r.header.Get("Cache-Status"), "fwd=miss") {
		t.Errorf("GET after the purge of https://bücher.example%s: Cache-Status %q, want a miss", path, r.header.Get("Cache-Status"))
	}

	// net/http's client would send the A-label: write the UTF-8 Host by hand.
	c, err := net.Dial("tcp", s.edge.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: bücher.example\r\nConnection: close\r\n\r\n")
	codes, _, _ := readAnswers(t, c)
	// 400: not a valid Host field value (RFC 3986's reg-name is ASCII); never served.
	if !slices.Equal(codes, []int{http.StatusBadRequest}) {
		t.Errorf("GET with Host bücher.example (UTF-8) answered %v, want [400]: clients send A-labels", codes)
	}
}

// TestSetHostsInternationalised: hosts set at run time (the config bucket's, merged with the
// file's) are converted as the file's are: a U-label is served under its A-label, and a name
// refused once converted is named as it was given.
func TestSetHostsInternationalised(t *testing.T) {
	const aLabel = "xn--bcher-kva.example"
	s := newSingle(t, nil)
	if err := s.edge.SetHosts([]wire.HostConfig{{Host: "Bücher.example", Origin: "http://" + s.originAddr}}); err != nil {
		t.Fatalf("SetHosts(Bücher.example) = %v", err)
	}
	if r := do(t, s.client, http.MethodGet, s.edge.Addr(), aLabel, "/a"); r.status != http.StatusOK {
		t.Errorf("GET %s/a = %d %q, want 200", aLabel, r.status, r.body)
	}
	err := s.edge.SetHosts([]wire.HostConfig{{Host: "bücher.example.", Origin: "http://" + s.originAddr}})
	if want := `"bücher.example.": "xn--bcher-kva.example." is not a valid hostname`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("SetHosts(bücher.example.) = %v, want an error containing %s", err, want)
	}
	// One name twice (as Config.Validate refuses it): before, the later entry won silently.
	err = s.edge.SetHosts([]wire.HostConfig{{Host: aLabel, Origin: "http://" + s.originAddr}, {Host: "BÜCHER.example", Origin: "http://127.0.0.1:1"}})
	if want := `hosts[1].host: "BÜCHER.example" (xn--bcher-kva.example) is listed twice`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("SetHosts with one name twice = %v, want an error containing %s", err, want)
	}
	if r := do(t, s.client, http.MethodGet, s.edge.Addr(), aLabel, "/a"); r.status != http.StatusOK {
		t.Errorf("after a refused SetHosts, GET %s/a = %d %q, want 200 from the hosts before", aLabel, r.status, r.body)
	}
}
