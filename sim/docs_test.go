package sim

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestDocsCoverTheSchema keeps docs/sim.md in step with the code: every scenario field, event
// kind, invariant and plot id must be documented there.
func TestDocsCoverTheSchema(t *testing.T) {
	data, err := os.ReadFile("../docs/sim.md")
	if err != nil {
		t.Fatalf("read docs/sim.md: %v", err)
	}
	doc := string(data)
	var names []string
	var fields func(reflect.Type)
	fields = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			names = append(names, name)
			fields(f.Type)
		}
	}
	fields(reflect.TypeOf(Scenario{}))
	names = append(names, EventKinds...)
	names = append(names, InvStaleAfterPurge, InvRoutedToDown, InvOriginPerObject, InvOutageErrors, InvPurgeAcked)
	names = append(names, PlotLatencyCDF, PlotHitRatio, PlotOrigin, PlotPurge, PlotRouting, PlotSaturation, PlotShed, PlotLatencyGain)
	for _, n := range names {
		if !strings.Contains(doc, "`"+n+"`") {
			t.Errorf("docs/sim.md does not mention `%s`", n)
		}
	}
}
