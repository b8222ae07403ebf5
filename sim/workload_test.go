package sim

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/sim/scenario"
)

func TestZipfProbabilities(t *testing.T) {
	z := NewZipf(20000, 0.9)
	// P(k) is proportional to 1/(k+1)^alpha.
	for _, k := range []int{1, 9, 99, 19999} {
		got := z.P(0) / z.P(k)
		want := math.Pow(float64(k+1), 0.9)
		if math.Abs(got-want)/want > 1e-9 {
			t.Errorf("P(0)/P(%d) = %v, want %v", k, got, want)
		}
	}
	var sum float64
	for k := range 20000 {
		sum += z.P(k)
	}
	if math.Abs(sum-1) > 1e-9 {
		t.Errorf("sum of P = %v, want 1", sum)
	}
	tests := []struct {
		u    float64
		want int
	}{
		{0, 0},
		{z.cdf[0] / 2, 0},
		{z.cdf[0], 1}, // a boundary belongs to the next rank
		{0.999999999999, 19999},
	}
	for _, tt := range tests {
		if got := z.Rank(tt.u); got != tt.want {
			t.Errorf("Rank(%v) = %d, want %d", tt.u, got, tt.want)
		}
	}
}

func TestZipfSamplesFollowTheLaw(t *testing.T) {
	s := scenario.Small()
	s.Workload.Objects = 1000
	w := NewWorkload(s)
	g := w.Generator(1)
	const n = 200000
	counts := make([]int, w.Objects())
	for range n {
		id, _ := g.Object(0)
		counts[id]++
	}
	for _, k := range []int{0, 1, 10} {
		want := w.zipf.P(k) * n
		if got := float64(counts[k]); math.Abs(got-want) > 5*math.Sqrt(want) {
			t.Errorf("object %d drawn %v times in %d, want %.0f ± 5σ", k, got, n, want)
		}
	}
}

func TestGeneratorIsDeterministic(t *testing.T) {
	draw := func(seed, stream uint64) []Request {
		s := scenario.Default()
		s.Seed = seed
		g := NewWorkload(s).Generator(stream)
		var out []Request
		for i := range 500 {
			out = append(out, g.Next(time.Duration(i)*100*time.Millisecond))
		}
		return out
	}
	a, b := draw(1, 3), draw(1, 3)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed and stream gave different sequences")
	}
	if reflect.DeepEqual(a, draw(2, 3)) {
		t.Errorf("seeds 1 and 2 gave the same sequence")
	}
	if reflect.DeepEqual(a, draw(1, 4)) {
		t.Errorf("streams 3 and 4 gave the same sequence")
	}
}

// TestObjectsDoNotDependOnTiming: the flash crowd changes which object a request gets, but
// not the draws after it, so runs with different timings stay in step.
func TestObjectsDoNotDependOnTiming(t *testing.T) {
	s := scenario.Default()
	w := NewWorkload(s)
	g1, g2 := w.Generator(9), w.Generator(9)
	for i := range 1000 {
		a := g1.Next(0)                // before any flash crowd
		b := g2.Next(50 * time.Second) // inside the flash crowd
		// A crowd from one city moves its own requests there, and only those.
		if a.City != b.City && !(b.Flash && b.City == w.crowdCity(50*time.Second)) {
			t.Fatalf("request %d: city %d vs %d: the flash crowd shifted the stream", i, a.City, b.City)
		}
		if !b.Flash && a.Object != b.Object {
			t.Fatalf("request %d: object %d vs %d outside the crowd's share", i, a.Object, b.Object)
		}
	}
}

func TestFlashCrowd(t *testing.T) {
	s := scenario.Default() // flash crowd 47s..57s, share 0.3
	w := NewWorkload(s)
	g := w.Generator(1)
	flash := 0
	const n = 10000
	for range n {
		r := g.Next(50 * time.Second)
		if r.Flash {
			flash++
			if r.Object != w.FlashObject(0) || r.Object != s.Workload.Objects {
				t.Fatalf("flash request for object %d, want %d", r.Object, w.FlashObject(0))
			}
		}
	}
	if share := float64(flash) / n; math.Abs(share-0.3) > 0.03 {
		t.Errorf("flash share = %.3f, want 0.3", share)
	}
	for range n {
		if r := g.Next(20 * time.Second); r.Flash {
			t.Fatalf("flash request at 20s, outside the crowd")
		}
	}
}

func TestCityWeights(t *testing.T) {
	s := scenario.Small() // Tokyo 37.2 of 92.8 million
	g := NewWorkload(s).Generator(5)
	counts := map[string]int{}
	const n = 50000
	for range n {
		counts[s.Clients.Cities[g.City()].Name]++
	}
	var total float64
	for _, c := range s.Clients.Cities {
		total += c.Population
	}
	for _, c := range s.Clients.Cities {
		want := c.Population / total
		if got := float64(counts[c.Name]) / n; math.Abs(got-want) > 0.01 {
			t.Errorf("%s share = %.3f, want %.3f", c.Name, got, want)
		}
	}
}

func TestSizesFollowTheMix(t *testing.T) {
	s := scenario.Default()
	w := NewWorkload(s)
	counts := map[int]int{}
	for id := range w.Objects() {
		counts[w.Size(id)]++
	}
	for _, sz := range s.Workload.Sizes {
		want := sz.Weight / 100
		if got := float64(counts[sz.Bytes]) / float64(w.Objects()); math.Abs(got-want) > 0.02 {
			t.Errorf("share of %d-byte objects = %.3f, want %.2f", sz.Bytes, got, want)
		}
	}
	if a, b := w.Size(42), NewWorkload(scenario.Default()).Size(42); a != b {
		t.Errorf("Size(42) = %d then %d for the same seed", a, b)
	}
}

func TestObjectPath(t *testing.T) {
	tests := []struct {
		id, bytes     int
		ttl, swr, sie time.Duration
		want          string
	}{
		{7, 1024, time.Minute, 0, 0, "/obj/7?size=1024&cc=max-age%3D60&sk=o7&groups=%22g7%22"},
		{0, 8192, 30 * time.Second, 10 * time.Second, 5 * time.Minute, "/obj/0?size=8192&cc=max-age%3D30%2C+stale-while-revalidate%3D10%2C+stale-if-error%3D300&sk=o0&groups=%22g0%22"},
	}
	for _, tt := range tests {
		got := ObjectPath(tt.id, tt.bytes, tt.ttl, tt.swr, tt.sie)
		if got != tt.want {
			t.Errorf("ObjectPath(%d, %d, %v, %v, %v) = %q, want %q", tt.id, tt.bytes, tt.ttl, tt.swr, tt.sie, got, tt.want)
		}
		if id := ObjectID(got); id != tt.id {
			t.Errorf("ObjectID(%q) = %d, want %d", got, id, tt.id)
		}
	}
}

func TestObjectID(t *testing.T) {
	tests := []struct {
		path string
		want int
	}{
		{"/obj/12", 12},
		{"/obj/12?size=1", 12},
		{"/obj/0#frag", 0},
		{"/obj/", -1},
		{"/obj/-1", -1},
		{"/obj/012", -1},
		{"/obj/1x", -1},
		{"/other/1", -1},
		{"/obj/99999999999999999999999", -1},
	}
	for _, tt := range tests {
		if got := ObjectID(tt.path); got != tt.want {
			t.Errorf("ObjectID(%q) = %d, want %d", tt.path, got, tt.want)
		}
	}
}

func FuzzObjectID(f *testing.F) {
	for _, s := range []string{"/obj/1?size=2", "/obj/", "/obj/007", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		id := ObjectID(path)
		if id < -1 {
			t.Fatalf("ObjectID(%q) = %d", path, id)
		}
		if id >= 0 && ObjectID(ObjectPath(id, 1, time.Second, 0, 0)) != id {
			t.Fatalf("ObjectID does not round-trip %d", id)
		}
	})
}

func TestHotObjects(t *testing.T) {
	w := NewWorkload(scenario.Small())
	if got := w.HotObjects(3); !reflect.DeepEqual(got, []int{0, 1, 2}) {
		t.Errorf("HotObjects(3) = %v, want [0 1 2]", got)
	}
	if got := len(w.HotObjects(1 << 30)); got != w.Objects() {
		t.Errorf("len(HotObjects(huge)) = %d, want %d", got, w.Objects())
	}
}
