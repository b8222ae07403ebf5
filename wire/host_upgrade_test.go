package wire

import "testing"

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
