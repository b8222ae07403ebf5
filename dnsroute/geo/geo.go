// Package geo turns an IP address into a location through a MaxMind City database, measures
// great-circle distances, and ranks points of presence for a client by distance, health and
// load.
package geo

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/geoip2-golang"
	"github.com/oschwald/maxminddb-golang"
)

// Location is where an address was placed by the database.
type Location struct {
	// Found is false when the database has no location for the address.
	Found     bool
	City      string
	Country   string
	Continent string
	Lat, Lon  float64
	// Network is the database network that holds the address; an answer derived only from
	// the location is valid for all of it (the ECS scope).
	Network netip.Prefix
}

// DB is a MaxMind City database (GeoLite2-City or GeoIP2-City format) read into memory. It is
// safe for concurrent use; Reload swaps in a new copy of the file atomically.
type DB struct {
	path string
	r    atomic.Pointer[maxminddb.Reader]

	mu      sync.Mutex // guards modTime and size, the file state of the loaded copy
	modTime time.Time
	size    int64
}

// Open reads the City database at path.
func Open(path string) (*DB, error) {
	db := &DB{path: path}
	if _, err := db.Reload(); err != nil {
		return nil, err
	}
	return db, nil
}

// FromBytes uses b, a City database, as a DB that never reloads.
func FromBytes(b []byte) (*DB, error) {
	r, err := maxminddb.FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("read mmdb: %w", err)
	}
	db := &DB{}
	db.r.Store(r)
	return db, nil
}

// Path is the file the database was read from ("" for FromBytes).
func (db *DB) Path() string { return db.path }

// Reload reads the file again if its modification time or size changed since the last read,
// and reports whether it did. A file that fails to load leaves the old copy in use.
func (db *DB) Reload() (bool, error) {
	if db.path == "" {
		return false, nil
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	fi, err := os.Stat(db.path)
	if err != nil {
		return false, fmt.Errorf("stat mmdb: %w", err)
	}
	if db.r.Load() != nil && fi.ModTime().Equal(db.modTime) && fi.Size() == db.size {
		return false, nil
	}
	b, err := os.ReadFile(db.path)
	if err != nil {
		return false, fmt.Errorf("read mmdb: %w", err)
	}
	r, err := maxminddb.FromBytes(b)
	if err != nil {
		return false, fmt.Errorf("parse mmdb %s: %w", db.path, err)
	}
	if r.Metadata.IPVersion != 6 && r.Metadata.IPVersion != 4 {
		return false, fmt.Errorf("parse mmdb %s: ip version %d", db.path, r.Metadata.IPVersion)
	}
	db.r.Store(r)
	db.modTime, db.size = fi.ModTime(), fi.Size()
	return true, nil
}

// Lookup locates addr. An address the database does not know gives a Location with Found
// false and, where the database can say, the empty network around it.
func (db *DB) Lookup(addr netip.Addr) (Location, error) {
	r := db.r.Load()
	if r == nil {
		return Location{}, errors.New("lookup: no database loaded")
	}
	addr = addr.Unmap()
	var rec geoip2.City
	n, ok, err := r.LookupNetwork(net.IP(addr.AsSlice()), &rec)
	if err != nil {
		return Location{}, fmt.Errorf("lookup %s: %w", addr, err)
	}
	loc := Location{Network: toPrefix(n, addr)}
	if !ok || (rec.Location.Latitude == 0 && rec.Location.Longitude == 0) {
		return loc, nil
	}
	loc.Found = true
	loc.City = rec.City.Names["en"]
	loc.Country = rec.Country.IsoCode
	loc.Continent = rec.Continent.Code
	loc.Lat, loc.Lon = rec.Location.Latitude, rec.Location.Longitude
	return loc, nil
}

func toPrefix(n *net.IPNet, addr netip.Addr) netip.Prefix {
	if n == nil {
		return netip.PrefixFrom(addr, addr.BitLen())
	}
	ones, _ := n.Mask.Size()
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.PrefixFrom(addr, addr.BitLen())
	}
	a = a.Unmap()
	if a.Is4() && addr.Is4() && ones > 32 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones).Masked()
}
