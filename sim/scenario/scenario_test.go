package scenario

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/wan"
	"github.com/meridian-cdn/meridian/wire"
)

func TestWorldYAMLIsDefault(t *testing.T) {
	got, err := Load(filepath.Join("testdata", "world.yaml"))
	if err != nil {
		t.Fatalf("Load(world.yaml): %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Load(world.yaml) = %+v\nwant Default() = %+v", got, want)
	}
}

func TestDefaultScenarioShape(t *testing.T) {
	s := Default()
	if got := len(s.PoPs); got != 12 {
		t.Errorf("len(PoPs) = %d, want 12", got)
	}
	regions := map[string]bool{}
	for _, p := range s.PoPs {
		regions[p.Region] = true
		if p.Nodes != 2 {
			t.Errorf("PoP %s has %d nodes, want 2", p.ID, p.Nodes)
		}
	}
	if len(regions) != 6 {
		t.Errorf("PoPs cover %d regions, want 6 continents", len(regions))
	}
	if got := s.Shield(); got != "iad" {
		t.Errorf("Shield() = %q, want iad", got)
	}
	if n := len(s.Clients.Cities); n < 35 || n > 50 {
		t.Errorf("%d client cities, want about 40", n)
	}
	kinds := map[string]bool{}
	for _, e := range s.Events {
		kinds[e.Kind] = true
	}
	for _, k := range []string{EventDrain, EventOriginFail, EventPurgeStorm, EventCutNATS, EventFlashCrowd} {
		if !kinds[k] {
			t.Errorf("default timeline has no %s event", k)
		}
	}
}

func TestSmallScenario(t *testing.T) {
	s := Small()
	if len(s.PoPs) != 3 || s.Duration != 15*time.Second {
		t.Errorf("Small() has %d PoPs over %v, want 3 over 15s", len(s.PoPs), s.Duration)
	}
	// Small must be valid: round-trip it through the validator.
	if err := s.validate(); len(err) > 0 {
		t.Errorf("Small() is invalid: %v", err)
	}
}

func TestParseDefaults(t *testing.T) {
	s, err := Parse([]byte("pops:\n  - {id: ams, lat: 52.3, lon: 4.76}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"name", s.Name, "scenario"},
		{"duration", s.Duration, 60 * time.Second},
		{"pops[0].nodes", s.PoPs[0].Nodes, 2},
		{"pops[0].city", s.PoPs[0].City, "ams"},
		{"origin", s.Origin, DefaultOrigin},
		{"clients.cities", len(s.Clients.Cities), len(DefaultCities())},
		{"clients.concurrency", s.Clients.Concurrency, 64},
		{"clients.dns_ttl", s.Clients.DNSTTL, 30 * time.Second},
		{"workload.objects", s.Workload.Objects, 20000},
		{"workload.zipf_alpha", s.Workload.ZipfAlpha, 0.9},
		{"workload.sizes", s.Workload.Sizes, DefaultSizes()},
		{"workload.ttl", s.Workload.TTL, 60 * time.Second},
		{"wan", s.WAN.Model(), wan.Model{KmPerMs: 200, HopOverheadMs: 2, Enabled: true}},
		{"check.grace", s.Check.Grace, 5 * time.Second},
		{"check.max_origin_per_object", s.Check.MaxOriginPerObject, 1.05},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
			}
		})
	}
}

func TestParseEventDefaultsAndWANOff(t *testing.T) {
	s, err := Parse([]byte(`
pops: [{id: a, lat: 1, lon: 1}]
wan: {enabled: false}
events:
  - {at: 1s, kind: purge-storm}
  - {at: 2s, kind: flash-crowd, duration: 1s}
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := s.Events[0].Count; got != 100 {
		t.Errorf("purge-storm count = %d, want 100", got)
	}
	if got := s.Events[1].Share; got != 0.5 {
		t.Errorf("flash-crowd share = %v, want 0.5", got)
	}
	if s.WAN.Model().Enabled {
		t.Errorf("wan.enabled: false gave an enabled model")
	}
}

// TestParseErrors checks that each mistake is reported once, with its line, column and field
// path (decoding problems in yaml's words, validation problems in ours).
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		file string // in testdata/bad
		// want holds, per error, the start of its line: position and field, then problem.
		want []string
	}{
		{"unknown event kind", "bad_kind.yaml", []string{`scenario:7:5: events[1].kind: "explode" is not one of drain, undrain, kill, origin-fail, origin-slow, purge-storm, cut-nats, flash-crowd`}},
		{"unknown field", "unknown_field.yaml", []string{`scenario:4:5: pops[0].shiled: unknown field "shiled"`}},
		{"wrong scalar types", "bad_types.yaml", []string{
			"scenario:1:11: duration: cannot unmarshal !!str `sixty` into time.Duration",
			"scenario:3:",
			"scenario:5:16: clients.concurrency: cannot unmarshal !!str `many` into int",
		}},
		{"semantic mistakes", "bad_values.yaml", []string{
			`scenario:3:13: pops[0].lat: must be between -90 and 90, got 91`,
			`scenario:4:6: pops[1].id: "a" is already the id of pops[0]`,
			`scenario:5:6: pops[2].id: "Bad ID" must be 1-32 lowercase letters`,
			`scenario:8:3: workload.zipf_alpha: must be between 0 and 10, got -1`,
			`scenario:11:27: events[0].pop: "nowhere" is not a PoP of this scenario`,
			`scenario:12:5: events[1].duration: required for origin-fail`,
			`scenario:13:6: events[2].at: 2m0s is outside the run (0 to 1m0s)`,
			`scenario:14:5: events[3].pop: required for drain`,
		}},
		{"shapes", "bad_shapes.yaml", []string{
			"scenario:1:",
			"scenario:3:11: workload: cannot unmarshal !!str `lots` into scenario.WorkloadSpec",
		}},
		{"infinities and NaN", "bad_numbers.yaml", []string{
			`scenario:3:3: clients.rate: must be a finite number, not negative, got +Inf`,
			`scenario:4:38: clients.cities[0].population: must be a finite number greater than 0, got +Inf`,
			`scenario:5:7: wan.km_per_ms: must be a finite number greater than 0, got NaN`,
		}},
		{"repeated field", "repeated.yaml", []string{`scenario:3:11: duration: mapping key "duration" already defined at line 1`}},
		{"syntax", "syntax.yaml", []string{`scenario:2: `}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "bad", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(data)
			if err == nil {
				t.Fatalf("Parse(%s) = nil error, want %d errors", tt.file, len(tt.want))
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("Parse(%s) gave %d errors, want %d:\n%v", tt.file, len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if i < len(lines) && !strings.HasPrefix(lines[i], w) {
					t.Errorf("Parse(%s) error %d is\n%s\nwant it to start %q", tt.file, i, lines[i], w)
				}
			}
			var fes wire.FieldErrors
			if !errors.As(err, &fes) || len(fes) != len(tt.want) {
				t.Fatalf("Parse(%s) error is %T, want wire.FieldErrors of %d", tt.file, err, len(tt.want))
			}
			for _, fe := range fes {
				if fe.File != "scenario" || fe.Line == 0 {
					t.Errorf("Parse(%s): %q has file %q and line %d, want scenario and a line", tt.file, fe, fe.File, fe.Line)
				}
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join("testdata", "bad", "bad_kind.yaml")
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":7:5: events[1].kind") {
		t.Errorf("Load(%s) error = %v, want it to start %q", path, err, path+":7:5: events[1].kind")
	}
	if _, err := Load(filepath.Join("testdata", "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want os.ErrNotExist", err)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n"} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) = nil error, want one", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"world.yaml", "bad/bad_kind.yaml", "bad/bad_values.yaml", "bad/bad_types.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if (s == nil) == (err == nil) {
			t.Fatalf("Parse = %v, %v: want exactly one of scenario and error", s, err)
		}
		if s != nil && (len(s.PoPs) == 0 || s.Duration <= 0) {
			t.Fatalf("Parse accepted a scenario without PoPs or duration: %+v", s)
		}
	})
}
