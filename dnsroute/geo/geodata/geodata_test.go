package geodata

import (
	"bytes"
	"testing"
)

func TestWriteIsDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	if err := Write(&a); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b); err != nil {
		t.Fatal(err)
	}
	if a.Len() < 1000 || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("two writes differ or are tiny: %d and %d bytes", a.Len(), b.Len())
	}
}

func TestCities(t *testing.T) {
	continents := map[string]int{}
	v4, v6 := map[string]string{}, map[string]string{}
	for _, c := range Cities {
		continents[c.Continent]++
		if other, ok := v4[c.V4.String()]; ok {
			t.Errorf("%s and %s share %s", c.Name, other, c.V4)
		}
		if other, ok := v6[c.V6.String()]; ok {
			t.Errorf("%s and %s share %s", c.Name, other, c.V6)
		}
		v4[c.V4.String()], v6[c.V6.String()] = c.Name, c.Name
		if !c.V4.Addr().Is4() || !c.V6.Addr().Is6() || c.Lat < -90 || c.Lat > 90 || c.Lon < -180 || c.Lon > 180 || c.Population <= 0 {
			t.Errorf("bad city %+v", c)
		}
	}
	if len(continents) < 6 || len(Cities) < 36 {
		t.Errorf("%d cities on %d continents (%v), want >= 36 on >= 6", len(Cities), len(continents), continents)
	}
	for _, name := range []string{"London", "Tokyo", "Sao Paulo", "Sydney", "Ashburn", "Auckland"} {
		if _, ok := Lookup(name); !ok {
			t.Errorf("Lookup(%q) found nothing", name)
		}
	}
}
