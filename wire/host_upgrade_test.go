package wire

import (
	"errors"
	"math"
	"testing"
)

// TestStoredHostConfigsStillValid: host configs an earlier control stored in the config
// bucket, which worked (net/http punycodes a non-ASCII Host; request_headers.set is applied
// after hop-by-hop fields are removed, so it reached the origin), must still pass Validate: an
// edge started after the upgrade skips a host whose stored config fails it
// (fleet.ConfigView.decodeHost), and then answers that site 421/404. A config written now is
// held to ValidateNew, which refuses the ones the later rules are about. Found by a review
// helper: the rules were first added to Validate.
func TestStoredHostConfigsStillValid(t *testing.T) {
	base := HostConfig{Host: "www.example.com", Origin: "http://origin.example"}
	for _, tc := range []struct {
		name    string
		edit    func(*HostConfig)
		wantNew bool // ValidateNew accepts it
	}{
		{"IDN origin_host", func(h *HostConfig) { h.OriginHost = "bücher.example" }, true},
		{"proxy-authorization set", func(h *HostConfig) {
			h.RequestHeaders.Set = map[string]string{"Proxy-Authorization": "Basic dTpw"}
		}, false},
		{"keep-alive set on answers", func(h *HostConfig) { h.ResponseHeaders.Set = map[string]string{"Keep-Alive": "timeout=5"} }, false},
		{"a name twice in two cases", func(h *HostConfig) { h.ResponseHeaders.Set = map[string]string{"X-Env": "a", "x-env": "b"} }, false},
		{"origin_host with a space", func(h *HostConfig) { h.OriginHost = "a b" }, false},
		{"IDN origin", func(h *HostConfig) { h.Origin = "http://bücher.example" }, false},
		{"IDN origin, ASCII form", func(h *HostConfig) { h.Origin = "http://xn--bcher-kva.example" }, true},
		{"origin port out of range", func(h *HostConfig) { h.Origin = "http://origin.example:99999" }, false},
		{"origin port empty", func(h *HostConfig) { h.Origin = "http://origin.example:/" }, true},
		{"origin with a path", func(h *HostConfig) { h.Origin = "http://origin.example/static" }, true},
		{"origin with a query", func(h *HostConfig) { h.Origin = "http://origin.example/a?b=1" }, false},
		{"origin with a fragment", func(h *HostConfig) { h.Origin = "http://origin.example/a#top" }, false},
		{"keep_params an empty name", func(h *HostConfig) { h.Cache.KeepParams = []string{"id", ""} }, false},
		{"keep_params a name with a space", func(h *HostConfig) { h.Cache.KeepParams = []string{"a b"} }, false},
		{"keep_params a name with =", func(h *HostConfig) { h.Cache.KeepParams = []string{"id=1"} }, false},
		{"keep_params encoded names", func(h *HostConfig) { h.Cache.KeepParams = []string{"id", "%E2%82%AC", "utm_source"} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := base
			tc.edit(&h)
			if err := h.Validate(); err != nil {
				t.Errorf("a config stored by the previous version is now refused: %v", err)
			}
			if err := h.ValidateNew(); (err == nil) != tc.wantNew {
				t.Errorf("ValidateNew = %v, want accepted %v", err, tc.wantNew)
			}
		})
	}
}

// TestRoutingPolicyWeights: a weight is a finite number at least 0 (a YAML file can write .nan
// and .inf, which every comparison would pass); a policy written through the API names PoPs
// by valid ids, while one already stored with another name keeps passing Validate.
func TestRoutingPolicyWeights(t *testing.T) {
	for _, tc := range []struct {
		name            string
		weights         map[string]float64
		wantOK, wantNew bool
	}{
		{"valid", map[string]float64{"lon": 2, "iad": 0}, true, true},
		{"negative", map[string]float64{"lon": -1}, false, false},
		{"NaN", map[string]float64{"lon": math.NaN()}, false, false},
		{"+Inf", map[string]float64{"lon": math.Inf(1)}, false, false},
		{"empty PoP id", map[string]float64{"": 1}, true, false},
		{"PoP id with a space", map[string]float64{"NOT A POP": 1}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := RoutingPolicy{Policy: "weighted", Weights: tc.weights}
			if err := p.Validate(); (err == nil) != tc.wantOK {
				t.Errorf("Validate = %v, want accepted %v", err, tc.wantOK)
			}
			if err := p.ValidateNew(); (err == nil) != tc.wantNew {
				t.Errorf("ValidateNew = %v, want accepted %v", err, tc.wantNew)
			}
		})
	}
}

// TestRoutingPolicyLoadHysteresis: load_hysteresis is at most 0.5 and a number (NaN would
// hold every compared load for good); negative turns it off and is accepted.
func TestRoutingPolicyLoadHysteresis(t *testing.T) {
	for _, tc := range []struct {
		name   string
		h      float64
		wantOK bool
	}{
		{"default", 0, true},
		{"set", 0.1, true},
		{"off", -1, true},
		{"at most", 0.5, true},
		{"too wide", 0.6, false},
		{"NaN", math.NaN(), false},
		{"+Inf", math.Inf(1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := RoutingPolicy{Policy: "least-loaded", LoadHysteresis: tc.h}
			if err := p.Validate(); (err == nil) != tc.wantOK {
				t.Errorf("Validate(load_hysteresis %g) = %v, want accepted %v", tc.h, err, tc.wantOK)
			}
		})
	}
}

// TestRoutingPolicyNaN: every number of a policy is refused as NaN, which a YAML file can write
// (.nan) and every comparison of a bound passes. A NaN low_watermark let an overloaded PoP
// shed 95 % for good (no fall is ever judged due), a NaN high_watermark turned shedding off,
// a NaN explore read as none. No policy stored in the config bucket holds one: JSON has no
// NaN.
func TestRoutingPolicyNaN(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		field string
		p     RoutingPolicy
	}{
		{"explore", RoutingPolicy{Policy: "latency", Explore: nan}},
		{"radius_km", RoutingPolicy{Policy: "least-loaded", RadiusKm: nan}},
		{"load_hysteresis", RoutingPolicy{Policy: "least-loaded", LoadHysteresis: nan}},
		{"low_watermark", RoutingPolicy{LowWatermark: nan}},
		{"high_watermark", RoutingPolicy{HighWatermark: nan}},
	} {
		t.Run(tc.field, func(t *testing.T) {
			err := tc.p.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("Validate(%s NaN) = %v, want a FieldError on %s", tc.field, err, tc.field)
			}
		})
	}
}
