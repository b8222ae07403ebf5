package scenario

import (
	"time"
)

// DefaultOrigin is Ashburn, Virginia: us-east.
var DefaultOrigin = OriginSpec{City: "Ashburn", Lat: 39.04, Lon: -77.49}

// DefaultSizes is the size mix used when a scenario gives none: mostly small objects, a few
// large ones, like a web page's assets.
func DefaultSizes() []SizeClass {
	return []SizeClass{{Bytes: 1 << 10, Weight: 40}, {Bytes: 8 << 10, Weight: 35}, {Bytes: 64 << 10, Weight: 20}, {Bytes: 512 << 10, Weight: 5}}
}

// DefaultCities returns 44 large cities on six continents with their metropolitan population
// in millions (rounded; enough to weigh traffic).
func DefaultCities() []City {
	return []City{
		{"New York", 40.71, -74.01, 19.5, "north-america"},
		{"Los Angeles", 34.05, -118.24, 12.9, "north-america"},
		{"Chicago", 41.88, -87.63, 9.4, "north-america"},
		{"Toronto", 43.65, -79.38, 6.4, "north-america"},
		{"Mexico City", 19.43, -99.13, 21.8, "north-america"},
		{"Houston", 29.76, -95.37, 7.3, "north-america"},
		{"Miami", 25.76, -80.19, 6.1, "north-america"},
		{"San Francisco", 37.77, -122.42, 4.7, "north-america"},
		{"Atlanta", 33.75, -84.39, 6.2, "north-america"},
		{"Seattle", 47.61, -122.33, 4, "north-america"},
		{"Sao Paulo", -23.55, -46.63, 22.4, "south-america"},
		{"Buenos Aires", -34.6, -58.38, 15.5, "south-america"},
		{"Rio de Janeiro", -22.91, -43.17, 13.6, "south-america"},
		{"Bogota", 4.71, -74.07, 11.3, "south-america"},
		{"Lima", -12.05, -77.04, 11, "south-america"},
		{"Santiago", -33.45, -70.67, 6.9, "south-america"},
		{"London", 51.51, -0.13, 9.6, "europe"},
		{"Paris", 48.86, 2.35, 11.1, "europe"},
		{"Berlin", 52.52, 13.4, 3.6, "europe"},
		{"Madrid", 40.42, -3.7, 6.7, "europe"},
		{"Moscow", 55.76, 37.62, 12.6, "europe"},
		{"Istanbul", 41.01, 28.98, 15.6, "europe"},
		{"Rome", 41.9, 12.5, 4.3, "europe"},
		{"Stockholm", 59.33, 18.07, 1.7, "europe"},
		{"Lagos", 6.52, 3.38, 15.4, "africa"},
		{"Cairo", 30.04, 31.24, 21.8, "africa"},
		{"Johannesburg", -26.2, 28.05, 6.2, "africa"},
		{"Nairobi", -1.29, 36.82, 5.1, "africa"},
		{"Kinshasa", -4.44, 15.27, 16.3, "africa"},
		{"Casablanca", 33.57, -7.59, 3.8, "africa"},
		{"Tokyo", 35.68, 139.69, 37.2, "asia"},
		{"Delhi", 28.7, 77.1, 32.9, "asia"},
		{"Shanghai", 31.23, 121.47, 29.2, "asia"},
		{"Mumbai", 19.08, 72.88, 21.3, "asia"},
		{"Beijing", 39.9, 116.41, 21.8, "asia"},
		{"Dhaka", 23.81, 90.41, 23.2, "asia"},
		{"Jakarta", -6.21, 106.85, 11.2, "asia"},
		{"Manila", 14.6, 120.98, 14.7, "asia"},
		{"Seoul", 37.57, 126.98, 10, "asia"},
		{"Singapore", 1.35, 103.82, 6, "asia"},
		{"Bangkok", 13.76, 100.5, 11, "asia"},
		{"Sydney", -33.87, 151.21, 5.4, "oceania"},
		{"Melbourne", -37.81, 144.96, 5.2, "oceania"},
		{"Auckland", -36.85, 174.76, 1.7, "oceania"},
	}
}

// Default returns the built-in "world" scenario (also in testdata/world.yaml): 12 PoPs on six
// continents with two edges each, the origin in Ashburn behind an Ashburn shield PoP, clients
// in DefaultCities, and a one-minute timeline with a drain, an origin outage, a purge storm, a
// NATS cut and a flash crowd.
func Default() *Scenario {
	s := &Scenario{
		Name:     "world",
		Seed:     1,
		Duration: 60 * time.Second,
		Warmup:   5 * time.Second,
		PoPs: []PoPSpec{
			{ID: "iad", City: "Ashburn", Lat: 39.04, Lon: -77.49, Region: "north-america", Shield: true},
			{ID: "lax", City: "Los Angeles", Lat: 33.94, Lon: -118.41, Region: "north-america"},
			{ID: "gru", City: "Sao Paulo", Lat: -23.43, Lon: -46.47, Region: "south-america"},
			{ID: "bog", City: "Bogota", Lat: 4.7, Lon: -74.15, Region: "south-america"},
			{ID: "lhr", City: "London", Lat: 51.47, Lon: -0.45, Region: "europe"},
			{ID: "fra", City: "Frankfurt", Lat: 50.04, Lon: 8.56, Region: "europe"},
			{ID: "jnb", City: "Johannesburg", Lat: -26.14, Lon: 28.25, Region: "africa"},
			{ID: "los", City: "Lagos", Lat: 6.58, Lon: 3.32, Region: "africa"},
			{ID: "bom", City: "Mumbai", Lat: 19.09, Lon: 72.87, Region: "asia", CPUBudget: 0.08},
			{ID: "sin", City: "Singapore", Lat: 1.36, Lon: 103.99, Region: "asia"},
			{ID: "nrt", City: "Tokyo", Lat: 35.77, Lon: 140.39, Region: "asia"},
			{ID: "syd", City: "Sydney", Lat: -33.95, Lon: 151.18, Region: "oceania"},
		},
		Origin:   DefaultOrigin,
		Clients:  ClientSpec{Concurrency: 64, DNSTTL: 10 * time.Second, RUM: RUMSpec{Enabled: true}},
		Workload: WorkloadSpec{Objects: 20000, ZipfAlpha: 0.9, TTL: 60 * time.Second, SWR: 10 * time.Second, SIE: 5 * time.Minute},
		// South America reaches its own PoPs through Miami: the tromboning region.
		WAN: WANSpec{Paths: []WANPath{
			{From: "south-america", To: "gru", Via: Place{Name: "Miami", Lat: 25.76, Lon: -80.19}},
			{From: "south-america", To: "bog", Via: Place{Name: "Miami", Lat: 25.76, Lon: -80.19}},
		}},
		Events: []Event{
			{At: 8 * time.Second, Kind: EventDrain, PoP: "fra"},
			{At: 15 * time.Second, Kind: EventOriginFail, Duration: 10 * time.Second},
			{At: 26 * time.Second, Kind: EventFlashCrowd, Duration: 30 * time.Second, Share: 0.3, City: "Mumbai"},
			{At: 28 * time.Second, Kind: EventPurgeStorm, Count: 100},
			{At: 34 * time.Second, Kind: EventCutNATS, PoP: "nrt", Duration: 10 * time.Second},
			{At: 40 * time.Second, Kind: EventUndrain, PoP: "fra"},
			{At: 47 * time.Second, Kind: EventFlashCrowd, Duration: 10 * time.Second, Share: 0.3},
		},
	}
	s.setDefaults()
	return s
}

// Small returns a 3-PoP, 15-second scenario (after a 3-second warm-up) with every event kind
// but kill and origin-slow, and clients that report beacons (RUM), for tests.
func Small() *Scenario {
	s := &Scenario{
		Name:     "small",
		Seed:     7,
		Duration: 15 * time.Second,
		Warmup:   3 * time.Second,
		PoPs: []PoPSpec{
			{ID: "iad", City: "Ashburn", Lat: 39.04, Lon: -77.49, Region: "north-america", Shield: true},
			{ID: "lhr", City: "London", Lat: 51.47, Lon: -0.45, Region: "europe"},
			{ID: "sin", City: "Singapore", Lat: 1.36, Lon: 103.99, Region: "asia"},
		},
		Origin: DefaultOrigin,
		Clients: ClientSpec{
			Cities: []City{
				{"New York", 40.71, -74.01, 19.5, "north-america"},
				{"Chicago", 41.88, -87.63, 9.4, "north-america"},
				{"London", 51.51, -0.13, 9.6, "europe"},
				{"Paris", 48.86, 2.35, 11.1, "europe"},
				{"Singapore", 1.35, 103.82, 6, "asia"},
				{"Tokyo", 35.68, 139.69, 37.2, "asia"},
			},
			Concurrency: 32,
			DNSTTL:      2 * time.Second,
			RUM:         RUMSpec{Enabled: true, Every: 3 * time.Second},
		},
		Workload: WorkloadSpec{Objects: 1000, ZipfAlpha: 0.9, TTL: 30 * time.Second, SWR: 5 * time.Second, SIE: time.Minute},
		// The same order as the world scenario's timeline, compressed.
		Events: []Event{
			{At: 2 * time.Second, Kind: EventDrain, PoP: "lhr"},
			{At: 4 * time.Second, Kind: EventOriginFail, Duration: 3 * time.Second},
			{At: 7500 * time.Millisecond, Kind: EventPurgeStorm, Count: 20},
			{At: 9 * time.Second, Kind: EventCutNATS, PoP: "sin", Duration: 3 * time.Second},
			{At: 10 * time.Second, Kind: EventUndrain, PoP: "lhr"},
			{At: 12 * time.Second, Kind: EventFlashCrowd, Duration: 2500 * time.Millisecond, Share: 0.5},
		},
		Check: CheckSpec{Grace: 2 * time.Second},
	}
	s.setDefaults()
	return s
}
