package scenario

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/internal/yamlconf"
	"github.com/meridian-cdn/meridian/wire"
)

// Validate checks a scenario built or changed in code (Parse and Load validate already),
// after applying the defaults to its zero fields.
// The error is a wire.FieldErrors naming each field at fault (with no position: there is
// no file).
func (s *Scenario) Validate() error {
	s.setDefaults()
	return s.validate().Err()
}

// Load reads and validates a scenario file. Every mistake is reported, each as a
// *wire.FieldError naming the file, line, column and field.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	return parse(path, data)
}

// Parse validates a scenario in YAML and applies the defaults. Unknown fields are errors; the
// error is a wire.FieldErrors holding every mistake, each a *wire.FieldError with its line,
// column and field path, in file order.
func Parse(data []byte) (*Scenario, error) { return parse("scenario", data) }

func parse(file string, data []byte) (*Scenario, error) {
	if len(data) > maxScenarioBytes {
		return nil, wire.FieldErrors{{File: file,
			Err: fmt.Errorf("file is %d bytes, more than the %d a scenario may have", len(data), maxScenarioBytes)}}
	}
	var s Scenario
	doc, probs := yamlconf.Decode(data, &s)
	if len(probs) > 0 {
		// What did not decode cannot be validated: report the decoding problems alone.
		errs := make(wire.FieldErrors, 0, len(probs))
		for _, p := range probs {
			errs = append(errs, &wire.FieldError{File: file, Line: p.Line, Column: p.Column, Field: p.Field, Err: errors.New(p.Msg)})
		}
		return nil, errs
	}
	if reflect.ValueOf(s).IsZero() {
		return nil, wire.FieldErrors{{File: file, Err: errors.New("empty scenario")}}
	}
	s.setDefaults()
	if errs := s.validate(); len(errs) > 0 {
		errs.Locate(file, doc.Position)
		errs.SortByPosition() // as the other configurations' (wire.DocumentErrors)
		return nil, errs
	}
	return &s, nil
}

var popIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// validate checks the meaning of a decoded scenario with its defaults applied.
func (s *Scenario) validate() wire.FieldErrors {
	var p validator
	if s.Duration < 0 {
		p.fieldf("duration", "must be positive, got %v", s.Duration)
	}
	if s.Warmup < 0 {
		p.fieldf("warmup", "must not be negative, got %v", s.Warmup)
	}
	if len(s.PoPs) == 0 {
		p.fieldf("pops", "at least one PoP is required")
	}
	ids := map[string]int{}
	shields := 0
	for i, pop := range s.PoPs {
		f := fmt.Sprintf("pops[%d]", i)
		switch {
		case pop.ID == "":
			p.fieldf(f+".id", "required")
		case !popIDRE.MatchString(pop.ID):
			p.fieldf(f+".id", "%q must be 1-32 lowercase letters, digits or '-'", pop.ID)
		default:
			if j, dup := ids[pop.ID]; dup {
				p.fieldf(f+".id", "%q is already the id of pops[%d]", pop.ID, j)
			}
			ids[pop.ID] = i
		}
		p.checkLatLon(f, pop.Lat, pop.Lon)
		if pop.Nodes < 0 || pop.Nodes > 64 {
			p.fieldf(f+".nodes", "must be between 1 and 64, got %d", pop.Nodes)
		}
		if pop.Shield {
			shields++
			if shields > 1 {
				p.fieldf(f+".shield", "only one PoP may be the shield")
			}
		}
	}
	p.checkLatLon("origin", s.Origin.Lat, s.Origin.Lon)
	c := s.Clients
	if len(c.Cities) == 0 {
		p.fieldf("clients.cities", "at least one city is required (leave the field out for the built-in list)")
	}
	names := map[string]int{}
	for i, city := range c.Cities {
		f := fmt.Sprintf("clients.cities[%d]", i)
		if city.Name == "" {
			p.fieldf(f+".name", "required")
		} else if j, dup := names[city.Name]; dup {
			p.fieldf(f+".name", "%q is already the name of clients.cities[%d]", city.Name, j)
		} else {
			names[city.Name] = i
		}
		p.checkLatLon(f, city.Lat, city.Lon)
		if !(city.Population > 0) || math.IsInf(city.Population, 0) {
			p.fieldf(f+".population", "must be a finite number greater than 0, got %v", city.Population)
		}
	}
	if c.Concurrency < 0 {
		p.fieldf("clients.concurrency", "must not be negative, got %d", c.Concurrency)
	}
	if !(c.Rate >= 0) || math.IsInf(c.Rate, 0) {
		p.fieldf("clients.rate", "must be a finite number, not negative, got %v", c.Rate)
	}
	if c.DNSTTL < 0 {
		p.fieldf("clients.dns_ttl", "must not be negative, got %v", c.DNSTTL)
	}
	w := s.Workload
	if w.Objects < 0 {
		p.fieldf("workload.objects", "must not be negative, got %d", w.Objects)
	}
	if w.Objects > 10_000_000 {
		p.fieldf("workload.objects", "at most 10000000, got %d", w.Objects)
	}
	if !(w.ZipfAlpha >= 0 && w.ZipfAlpha <= 10) {
		p.fieldf("workload.zipf_alpha", "must be between 0 and 10, got %v", w.ZipfAlpha)
	}
	if len(w.Sizes) == 0 {
		p.fieldf("workload.sizes", "at least one size class is required (leave the field out for the default mix)")
	}
	for i, sz := range w.Sizes {
		f := fmt.Sprintf("workload.sizes[%d]", i)
		if sz.Bytes <= 0 {
			p.fieldf(f+".bytes", "must be greater than 0, got %d", sz.Bytes)
		}
		if !(sz.Weight > 0) || math.IsInf(sz.Weight, 0) {
			p.fieldf(f+".weight", "must be a finite number greater than 0, got %v", sz.Weight)
		}
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"workload.ttl", w.TTL}, {"workload.swr", w.SWR}, {"workload.sie", w.SIE}} {
		if d.d < 0 {
			p.fieldf(d.name, "must not be negative, got %v", d.d)
		}
	}
	if !(s.WAN.KmPerMs > 0) || math.IsInf(s.WAN.KmPerMs, 0) {
		p.fieldf("wan.km_per_ms", "must be a finite number greater than 0, got %v", s.WAN.KmPerMs)
	}
	if !(s.WAN.HopOverheadMs >= 0 && s.WAN.HopOverheadMs <= 10000) {
		p.fieldf("wan.hop_overhead_ms", "must be between 0 and 10000, got %v", s.WAN.HopOverheadMs)
	}
	for i, e := range s.Events {
		p.validateEvent(s, fmt.Sprintf("events[%d]", i), e, ids)
		if e.City != "" {
			if _, ok := names[e.City]; !ok || e.Kind != EventFlashCrowd {
				p.fieldf(fmt.Sprintf("events[%d].city", i), "%q must be a client city, on a flash-crowd", e.City)
			}
		}
	}
	p.validateMeasured(s, ids, names)
	if s.Check.Grace < 0 {
		p.fieldf("check.grace", "must not be negative, got %v", s.Check.Grace)
	}
	if !(s.Check.MaxOriginPerObject >= 1) {
		p.fieldf("check.max_origin_per_object", "must be at least 1, got %v", s.Check.MaxOriginPerObject)
	}
	if s.Check.MaxStaleAfterPurge < 0 {
		p.fieldf("check.max_stale_after_purge", "must not be negative, got %d", s.Check.MaxStaleAfterPurge)
	}
	if s.Check.MaxOutageErrors < 0 {
		p.fieldf("check.max_outage_errors", "must not be negative, got %d", s.Check.MaxOutageErrors)
	}
	return p.errs
}

// validator collects the problems of a scenario.
type validator struct{ errs wire.FieldErrors }

func (p *validator) fieldf(field, format string, args ...any) { p.errs.Add(field, format, args...) }

func (p *validator) checkLatLon(field string, lat, lon float64) {
	if !(lat >= -90 && lat <= 90) {
		p.fieldf(field+".lat", "must be between -90 and 90, got %v", lat)
	}
	if !(lon >= -180 && lon <= 180) {
		p.fieldf(field+".lon", "must be between -180 and 180, got %v", lon)
	}
}

func (p *validator) validateEvent(s *Scenario, f string, e Event, pops map[string]int) {
	known := false
	for _, k := range EventKinds {
		known = known || e.Kind == k
	}
	if !known {
		if e.Kind == "" {
			p.fieldf(f+".kind", "required: one of %s", strings.Join(EventKinds, ", "))
		} else {
			p.fieldf(f+".kind", "%q is not one of %s", e.Kind, strings.Join(EventKinds, ", "))
		}
		return
	}
	if e.At < 0 || e.At > s.Duration {
		p.fieldf(f+".at", "%v is outside the run (0 to %v)", e.At, s.Duration)
	}
	if e.Duration < 0 {
		p.fieldf(f+".duration", "must not be negative, got %v", e.Duration)
	}
	needsPoP := e.Kind == EventDrain || e.Kind == EventUndrain || e.Kind == EventKill || e.Kind == EventCutNATS
	switch {
	case needsPoP && e.PoP == "":
		p.fieldf(f+".pop", "required for %s", e.Kind)
	case needsPoP:
		if _, ok := pops[e.PoP]; !ok {
			p.fieldf(f+".pop", "%q is not a PoP of this scenario", e.PoP)
		}
	case e.PoP != "":
		p.fieldf(f+".pop", "%s does not take a pop", e.Kind)
	}
	switch e.Kind {
	case EventOriginFail, EventOriginSlow, EventCutNATS, EventFlashCrowd:
		if e.Duration == 0 {
			p.fieldf(f+".duration", "required for %s", e.Kind)
		}
	case EventDrain, EventUndrain, EventPurgeStorm:
		// Silently ignored, a drain's duration would leave the PoP drained to the end.
		if e.Duration != 0 {
			p.fieldf(f+".duration", "%s does not take a duration (only kill, origin-fail, origin-slow, cut-nats and flash-crowd do)", e.Kind)
		}
	}
	if e.Kind == EventOriginSlow && e.Delay <= 0 {
		p.fieldf(f+".delay", "required for %s and must be positive", e.Kind)
	}
	if e.Kind != EventOriginSlow && e.Delay != 0 {
		p.fieldf(f+".delay", "only origin-slow takes a delay")
	}
	if e.Kind == EventPurgeStorm && (e.Count < 0 || e.Count > 100000) {
		p.fieldf(f+".count", "must be between 1 and 100000, got %d", e.Count)
	}
	if e.Kind != EventPurgeStorm && e.Count != 0 {
		p.fieldf(f+".count", "only purge-storm takes a count")
	}
	if e.Kind == EventFlashCrowd && !(e.Share > 0 && e.Share <= 1) {
		p.fieldf(f+".share", "must be in (0, 1], got %v", e.Share)
	}
	if e.Kind != EventFlashCrowd && e.Share != 0 {
		p.fieldf(f+".share", "only flash-crowd takes a share")
	}
}
