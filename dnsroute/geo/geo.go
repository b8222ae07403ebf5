// Package geo turns an IP address into a location through a MaxMind City database, measures
// great-circle distances, and ranks points of presence for a client by distance, health and
// load.
package geo

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
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
	r    atomic.Pointer[reader]

	mu      sync.Mutex // guards modTime and size, the file state of the loaded copy
	modTime time.Time
	size    int64
}

// reader is one loaded copy of the database with the locations decoded from it so far, by
// record offset: a City database has a few hundred thousand distinct records behind millions
// of networks, so after a warm-up a lookup is a tree walk and no decoding.
type reader struct {
	r    *maxminddb.Reader
	locs sync.Map // uintptr -> Location (without Network)
	n    atomic.Int64
}

// maxCachedLocations bounds reader.locs; past it, records are decoded on every lookup.
const maxCachedLocations = 1 << 19

func newReader(b []byte) (*reader, error) {
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, err
	}
	if r.Metadata.IPVersion != 6 && r.Metadata.IPVersion != 4 {
		return nil, fmt.Errorf("ip version %d", r.Metadata.IPVersion)
	}
	return &reader{r: r}, nil
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
	r, err := newReader(b)
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
	r, err := newReader(b)
	if err != nil {
		return false, fmt.Errorf("parse mmdb %s: %w", db.path, err)
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
	res := r.r.Lookup(addr)
	if err := res.Err(); err != nil {
		return Location{}, fmt.Errorf("lookup %s: %w", addr, err)
	}
	network := res.Prefix()
	if !network.IsValid() {
		network = netip.PrefixFrom(addr, addr.BitLen())
	}
	if !res.Found() {
		return Location{Network: network}, nil
	}
	off := res.Offset()
	if v, ok := r.locs.Load(off); ok {
		loc := v.(Location)
		loc.Network = network
		return loc, nil
	}
	var rec cityRecord
	if err := res.Decode(&rec); err != nil {
		return Location{}, fmt.Errorf("lookup %s: %w", addr, err)
	}
	var loc Location
	if rec.Location.Latitude != 0 || rec.Location.Longitude != 0 {
		loc = Location{Found: true, City: rec.City.Names.En, Country: rec.Country.IsoCode, Continent: rec.Continent.Code,
			Lat: rec.Location.Latitude, Lon: rec.Location.Longitude}
	}
	if r.n.Load() < maxCachedLocations {
		if _, loaded := r.locs.LoadOrStore(off, loc); !loaded {
			r.n.Add(1)
		}
	}
	loc.Network = network
	return loc, nil
}

// cityRecord is the part of a City database record a location needs. Decoding only these
// fields, rather than every name in every language (geoip2.City), is most of the cost of a
// lookup on a full GeoLite2-City.
type cityRecord struct {
	City struct {
		Names struct {
			En string `maxminddb:"en"`
		} `maxminddb:"names"`
	} `maxminddb:"city"`
	Country struct {
		IsoCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	Continent struct {
		Code string `maxminddb:"code"`
	} `maxminddb:"continent"`
	Location struct {
		Latitude  float64 `maxminddb:"latitude"`
		Longitude float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
}
