package fleet_test

import (
	"encoding/json"
	"testing"

	"github.com/meridian-cdn/meridian/fleet"
)

// FuzzDecodeHostConfig checks that any bucket value either decodes to a valid config that
// survives a round trip, or is refused; never a panic.
func FuzzDecodeHostConfig(f *testing.F) {
	f.Add([]byte(`{"host":"www.example.com","origin":"http://127.0.0.1:8080"}`))
	f.Add([]byte(`{"host":"a.b","origin":"https://o","cache":{"keep_params":["x"],"max_object_bytes":-1}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		hc, err := fleet.DecodeHostConfig(b)
		if err != nil {
			return
		}
		if err := hc.Validate(); err != nil {
			t.Fatalf("DecodeHostConfig accepted an invalid config: %v", err)
		}
		again, err := json.Marshal(hc)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := fleet.DecodeHostConfig(again); err != nil {
			t.Fatalf("round trip of %s failed: %v", again, err)
		}
	})
}
