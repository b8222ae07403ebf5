// Package geodata generates the deterministic GeoLite2-City-format test database.
//
// Tests and the simulator use it instead of a downloaded GeoLite2-City.mmdb: every city in
// Cities owns one IPv4 /16 from 100.64.0.0/10 (shared address space, never routed on the
// Internet; here the addresses only travel inside DNS payloads) and one IPv6 /48 from the
// documentation prefix 2001:db8::/32.
package geodata

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// City is one city of the test database.
type City struct {
	Name, Country, Continent string // English name, ISO 3166-1 code, continent code (EU, AS, ...)
	Lat, Lon                 float64
	Population               int // metro population, for workload weighting
	V4, V6                   netip.Prefix
}

// buildEpoch is fixed so that the same code always writes the same bytes.
const buildEpoch = 1700000000

// Cities is the city table of the test database, on six continents.
var Cities = func() []City {
	rows := []struct {
		name, country, continent string
		lat, lon                 float64
		pop                      int
	}{
		{"London", "GB", "EU", 51.5074, -0.1278, 9_500_000},
		{"Frankfurt", "DE", "EU", 50.1109, 8.6821, 2_300_000},
		{"Paris", "FR", "EU", 48.8566, 2.3522, 11_000_000},
		{"Madrid", "ES", "EU", 40.4168, -3.7038, 6_700_000},
		{"Stockholm", "SE", "EU", 59.3293, 18.0686, 1_600_000},
		{"Moscow", "RU", "EU", 55.7558, 37.6173, 12_600_000},
		{"Istanbul", "TR", "EU", 41.0082, 28.9784, 15_600_000},
		{"Amsterdam", "NL", "EU", 52.3676, 4.9041, 2_500_000},
		{"Tokyo", "JP", "AS", 35.6762, 139.6503, 37_000_000},
		{"Seoul", "KR", "AS", 37.5665, 126.9780, 25_000_000},
		{"Hong Kong", "HK", "AS", 22.3193, 114.1694, 7_500_000},
		{"Singapore", "SG", "AS", 1.3521, 103.8198, 5_900_000},
		{"Jakarta", "ID", "AS", -6.2088, 106.8456, 33_000_000},
		{"Mumbai", "IN", "AS", 19.0760, 72.8777, 21_000_000},
		{"Dubai", "AE", "AS", 25.2048, 55.2708, 3_500_000},
		{"Delhi", "IN", "AS", 28.7041, 77.1025, 32_000_000},
		{"New York", "US", "NA", 40.7128, -74.0060, 19_000_000},
		{"Ashburn", "US", "NA", 39.0438, -77.4874, 50_000},
		{"Chicago", "US", "NA", 41.8781, -87.6298, 9_500_000},
		{"Los Angeles", "US", "NA", 34.0522, -118.2437, 13_000_000},
		{"Dallas", "US", "NA", 32.7767, -96.7970, 7_600_000},
		{"Seattle", "US", "NA", 47.6062, -122.3321, 4_000_000},
		{"Toronto", "CA", "NA", 43.6532, -79.3832, 6_200_000},
		{"Mexico City", "MX", "NA", 19.4326, -99.1332, 21_800_000},
		{"Sao Paulo", "BR", "SA", -23.5505, -46.6333, 22_000_000},
		{"Buenos Aires", "AR", "SA", -34.6037, -58.3816, 15_300_000},
		{"Santiago", "CL", "SA", -33.4489, -70.6693, 6_900_000},
		{"Lima", "PE", "SA", -12.0464, -77.0428, 10_700_000},
		{"Bogota", "CO", "SA", 4.7110, -74.0721, 11_000_000},
		{"Johannesburg", "ZA", "AF", -26.2041, 28.0473, 6_000_000},
		{"Lagos", "NG", "AF", 6.5244, 3.3792, 15_000_000},
		{"Cairo", "EG", "AF", 30.0444, 31.2357, 21_000_000},
		{"Nairobi", "KE", "AF", -1.2921, 36.8219, 5_000_000},
		{"Casablanca", "MA", "AF", 33.5731, -7.5898, 3_700_000},
		{"Sydney", "AU", "OC", -33.8688, 151.2093, 5_300_000},
		{"Melbourne", "AU", "OC", -37.8136, 144.9631, 5_100_000},
		{"Perth", "AU", "OC", -31.9505, 115.8605, 2_100_000},
		{"Auckland", "NZ", "OC", -36.8485, 174.7633, 1_700_000},
	}
	out := make([]City, len(rows))
	for i, r := range rows {
		out[i] = City{
			Name: r.name, Country: r.country, Continent: r.continent,
			Lat: r.lat, Lon: r.lon, Population: r.pop,
			V4: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i), 0, 0}), 16),
			V6: netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i + 1)}), 48),
		}
	}
	return out
}()

// Lookup returns the city with the given name from Cities.
func Lookup(name string) (City, bool) {
	for _, c := range Cities {
		if c.Name == name {
			return c, true
		}
	}
	return City{}, false
}

// Write writes the test database for Cities to w.
func Write(w io.Writer) error { return WriteCities(w, Cities) }

// WriteFile writes the test database for Cities to path.
func WriteFile(path string) error {
	var buf bytes.Buffer
	if err := Write(&buf); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write test mmdb: %w", err)
	}
	return nil
}

// WriteCities writes a GeoLite2-City-format database with the given cities to w. Prefixes may be
// anywhere, including reserved ranges such as 127.0.0.0/8 (tests map loopback sources to cities).
func WriteCities(w io.Writer, cities []City) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "GeoLite2-City",
		Description:             map[string]string{"en": "Meridian deterministic test database"},
		Languages:               []string{"en"},
		IPVersion:               6,
		RecordSize:              28,
		BuildEpoch:              buildEpoch,
		IncludeReservedNetworks: true,
	})
	if err != nil {
		return fmt.Errorf("create mmdb tree: %w", err)
	}
	for i, c := range cities {
		rec := record(i, c)
		for _, p := range []netip.Prefix{c.V4, c.V6} {
			if !p.IsValid() {
				continue
			}
			n := &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
			if err := tree.Insert(n, rec); err != nil {
				return fmt.Errorf("insert %s for %s: %w", p, c.Name, err)
			}
		}
	}
	if _, err := tree.WriteTo(w); err != nil {
		return fmt.Errorf("write mmdb: %w", err)
	}
	return nil
}

// record builds the GeoLite2-City record of a city; geoname ids are made up but stable.
func record(i int, c City) mmdbtype.Map {
	names := func(s string) mmdbtype.Map { return mmdbtype.Map{"en": mmdbtype.String(s)} }
	return mmdbtype.Map{
		"city": mmdbtype.Map{
			"geoname_id": mmdbtype.Uint32(1000 + i),
			"names":      names(c.Name),
		},
		"continent": mmdbtype.Map{
			"code":  mmdbtype.String(c.Continent),
			"names": names(continentNames[c.Continent]),
		},
		"country": mmdbtype.Map{
			"iso_code": mmdbtype.String(c.Country),
			"names":    names(c.Country),
		},
		"location": mmdbtype.Map{
			"latitude":        mmdbtype.Float64(c.Lat),
			"longitude":       mmdbtype.Float64(c.Lon),
			"accuracy_radius": mmdbtype.Uint16(20),
		},
	}
}

var continentNames = map[string]string{
	"AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe",
	"NA": "North America", "OC": "Oceania", "SA": "South America",
}
