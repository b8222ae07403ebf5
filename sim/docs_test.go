package sim

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/meridian-cdn/meridian/sim/report"
	"github.com/meridian-cdn/meridian/sim/scenario"
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
	fields(reflect.TypeOf(scenario.Scenario{}))
	names = append(names, scenario.EventKinds...)
	names = append(names, report.InvStaleAfterPurge, report.InvRoutedToDown, report.InvOriginPerObject, report.InvOutageErrors, report.InvPurgeAcked)
	names = append(names, report.PlotLatencyCDF, report.PlotHitRatio, report.PlotOrigin, report.PlotPurge, report.PlotRouting, report.PlotSaturation, report.PlotShed, report.PlotLatencyGain)
	for _, n := range names {
		if !strings.Contains(doc, "`"+n+"`") {
			t.Errorf("docs/sim.md does not mention `%s`", n)
		}
	}
}
