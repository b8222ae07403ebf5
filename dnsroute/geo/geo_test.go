package geo_test

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/dnsroute/geo"
	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
)

func TestDistanceKm(t *testing.T) {
	tests := []struct {
		name                   string
		lat1, lon1, lat2, lon2 float64
		want, tol              float64
	}{
		{"same point", 51.5, -0.12, 51.5, -0.12, 0, 0.001},
		{"London-Paris", 51.5074, -0.1278, 48.8566, 2.3522, 344, 5},
		{"London-Tokyo", 51.5074, -0.1278, 35.6762, 139.6503, 9560, 30},
		{"Sydney-Sao Paulo", -33.8688, 151.2093, -23.5505, -46.6333, 13370, 60},
		{"antipodes", 0, 0, 0, 180, math.Pi * geo.EarthRadiusKm, 1},
		{"across the date line", 0, 179.5, 0, -179.5, 111.2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := geo.DistanceKm(tt.lat1, tt.lon1, tt.lat2, tt.lon2)
			if math.Abs(got-tt.want) > tt.tol {
				t.Errorf("DistanceKm = %.1f, want %.1f±%.1f", got, tt.want, tt.tol)
			}
		})
	}
}

func testDB(t *testing.T) *geo.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "city.mmdb")
	if err := geodata.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	db, err := geo.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestLookupEveryCity(t *testing.T) {
	db := testDB(t)
	for _, c := range geodata.Cities {
		t.Run(c.Name, func(t *testing.T) {
			for _, p := range []netip.Prefix{c.V4, c.V6} {
				loc, err := db.Lookup(p.Addr().Next())
				if err != nil {
					t.Fatal(err)
				}
				if !loc.Found || loc.City != c.Name || loc.Country != c.Country || loc.Continent != c.Continent || loc.Lat != c.Lat || loc.Lon != c.Lon {
					t.Errorf("Lookup(%s) = %+v, want %s %s (%v, %v)", p.Addr().Next(), loc, c.Name, c.Country, c.Lat, c.Lon)
				}
				if loc.Network != p {
					t.Errorf("Lookup(%s).Network = %s, want %s", p.Addr().Next(), loc.Network, p)
				}
			}
		})
	}
}

func TestLookupUnknown(t *testing.T) {
	db := testDB(t)
	for _, a := range []string{"203.0.113.7", "8.8.8.8", "2001:db9::1", "::ffff:203.0.113.7"} {
		loc, err := db.Lookup(netip.MustParseAddr(a))
		if err != nil {
			t.Fatal(err)
		}
		if loc.Found || !loc.Network.IsValid() || !loc.Network.Contains(netip.MustParseAddr(a).Unmap()) {
			t.Errorf("Lookup(%s) = %+v, want not found within a network holding it", a, loc)
		}
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "city.mmdb")
	if err := geodata.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	db, err := geo.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := db.Reload(); ok || err != nil {
		t.Errorf("Reload(unchanged) = %v, %v; want false, nil", ok, err)
	}
	// A lookup before the reload, so that the old copy has the location remembered.
	if loc, _ := db.Lookup(geodata.Cities[0].V4.Addr()); loc.City != geodata.Cities[0].Name {
		t.Fatalf("before reload City = %q, want %s", loc.City, geodata.Cities[0].Name)
	}
	one := []geodata.City{geodata.Cities[0]}
	one[0].Name = "Renamed"
	var buf bytes.Buffer
	if err := geodata.WriteCities(&buf, one); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := db.Reload(); !ok || err != nil {
		t.Fatalf("Reload(changed) = %v, %v; want true, nil", ok, err)
	}
	if loc, _ := db.Lookup(one[0].V4.Addr()); loc.City != "Renamed" {
		t.Errorf("after reload City = %q, want Renamed", loc.City)
	}
	if _, err := geo.Open(filepath.Join(dir, "missing.mmdb")); err == nil {
		t.Error("Open(missing) = nil error")
	}
}

func TestRankAndChoose(t *testing.T) {
	london := [2]float64{51.5074, -0.1278}
	cands := []geo.Candidate{
		{ID: "syd", Lat: -33.87, Lon: 151.21, Usable: true, Weight: 1},
		{ID: "fra", Lat: 50.11, Lon: 8.68, Usable: true, Utilisation: 0.2},
		{ID: "lhr", Lat: 51.51, Lon: -0.13, Usable: true, Utilisation: 0.5},
		{ID: "ams", Lat: 52.37, Lon: 4.90, Usable: false},
	}
	ranked := geo.Rank(london[0], london[1], cands)
	var order []string
	for _, r := range ranked {
		order = append(order, r.ID)
	}
	if got, want := order, []string{"lhr", "ams", "fra", "syd"}; !slices.Equal(got, want) {
		t.Fatalf("Rank order = %v, want %v", got, want)
	}
	none := func(string) float64 { return 0 }
	half := func(id string) float64 {
		if id == "lhr" {
			return 0.5
		}
		return 0
	}
	tests := []struct {
		name      string
		p         geo.Policy
		shed      func(string) float64
		h         float64
		want      string
		perClient bool
	}{
		{"nearest", geo.Policy{}, none, 0.3, "lhr", false},
		{"nearest skips unusable", geo.Policy{}, none, 0.9, "lhr", false},
		{"shed client", geo.Policy{}, half, 0.2, "fra", true},
		{"kept client", geo.Policy{}, half, 0.7, "lhr", true},
		{"least-loaded in radius", geo.Policy{Name: geo.LeastLoaded, RadiusKm: 1500}, none, 0, "fra", false},
		{"least-loaded small radius", geo.Policy{Name: geo.LeastLoaded, RadiusKm: 50}, none, 0, "lhr", false},
		{"weighted", geo.Policy{Name: geo.Weighted}, none, 0.99, "syd", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := geo.Choose(tt.p, ranked, tt.shed, tt.h)
			if c.Index < 0 || ranked[c.Index].ID != tt.want || c.PerClient != tt.perClient {
				t.Errorf("Choose = index %d perClient %v (%s), want %s perClient %v", c.Index, c.PerClient, c.Reason, tt.want, tt.perClient)
			}
		})
	}
	for i := range cands {
		cands[i].Usable = false
	}
	if c := geo.Choose(geo.Policy{}, geo.Rank(0, 0, cands), none, 0.5); c.Index != -1 {
		t.Errorf("Choose(no usable) = %d, want -1", c.Index)
	}
}

// TestShedderClosedLoop: when the utilisation answers the shedding (demand × kept share, seen
// one step late as DNS caches delay it), the fraction settles with the PoP under the high
// watermark and changes direction at most twice, for any demand.
func TestShedderClosedLoop(t *testing.T) {
	for _, demand := range []float64{0.5, 0.9, 1.2, 2, 5} {
		t.Run(fmt.Sprint(demand), func(t *testing.T) {
			now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			// One step is one second; answers live 1.5 s.
			s := geo.Shedder{Lag: 1500 * time.Millisecond, Now: func() time.Time { return now }}
			frac, prev, turns, dir := 0.0, 0.0, 0, 0
			for range 60 {
				now = now.Add(time.Second)
				util := demand * (1 - prev) // the previous step's fraction: DNS TTL lag
				prev = frac
				frac = s.Update("p", util, 0.8, 1.0)
				if d := cmpSign(frac - prev); d != 0 {
					if dir != 0 && d != dir {
						turns++
					}
					dir = d
				}
			}
			if util := demand * (1 - frac); util > 1.0 {
				t.Errorf("demand %.1f: settled utilisation %.2f (fraction %.2f), want <= 1.0", demand, util, frac)
			}
			if turns > 2 {
				t.Errorf("demand %.1f: fraction changed direction %d times, want at most 2", demand, turns)
			}
		})
	}
}

func cmpSign(x float64) int {
	switch {
	case x > 0.01: // smaller steps vanish in the DNS state's 5 % quantum
		return 1
	case x < -0.01:
		return -1
	}
	return 0
}

func BenchmarkLookup(b *testing.B) {
	var buf bytes.Buffer
	if err := geodata.Write(&buf); err != nil {
		b.Fatal(err)
	}
	db, err := geo.FromBytes(buf.Bytes())
	if err != nil {
		b.Fatal(err)
	}
	a := geodata.Cities[3].V4.Addr().Next()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := db.Lookup(a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupFile measures lookups spread over a real-sized database, such as the one
// bench/dns.sh generates or a GeoLite2-City.mmdb, named by MERIDIAN_BENCH_MMDB (skipped
// without it). Addresses are spread over 1.0.0.0-46.0.0.0, where the bench's database has
// its networks.
func BenchmarkLookupFile(b *testing.B) {
	path := os.Getenv("MERIDIAN_BENCH_MMDB")
	if path == "" {
		b.Skip("MERIDIAN_BENCH_MMDB names no database")
	}
	db, err := geo.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	addrs := make([]netip.Addr, 4096)
	for i := range addrs {
		v := uint32(1<<24) + uint32(i)*(45<<24/4096)
		addrs[i] = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		loc, err := db.Lookup(addrs[i%len(addrs)])
		if err != nil || !loc.Found {
			b.Fatalf("Lookup(%s) = %+v, %v; want a location", addrs[i%len(addrs)], loc, err)
		}
		i++
	}
}
