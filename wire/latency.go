package wire

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// LatencyBucket is the KV bucket of real-user measurements: per client network, the RTTs
// clients measured to PoPs by fetching their beacons (see LatencyRecord). Keys expire, so the
// map forgets networks that stopped reporting.
const LatencyBucket = "latency"

// Beacon paths every edge answers itself, for any configured host: a GET of BeaconPath is the
// tiny object a client times, a POST of BeaconPath reports the RTTs it measured (BeaconReport).
const BeaconPath = "/.well-known/meridian/beacon"

// Bounds of a beacon report: more PoPs or larger RTTs than this are refused.
const (
	MaxBeaconPoPs  = 8
	MaxBeaconRTTMs = 5000.0
)

// BeaconReport is what a client POSTs to BeaconPath: the RTT in milliseconds it measured to
// each PoP's beacon. The client's network is never in the body; the edge takes it from the
// connection.
type BeaconReport struct {
	RTTMs map[string]float64 `json:"rtt_ms"`
}

// Validate checks the report against the PoPs known to the fleet (known nil: any valid id).
func (r BeaconReport) Validate(known func(pop string) bool) error {
	if len(r.RTTMs) == 0 {
		return errors.New("no measurements")
	}
	if len(r.RTTMs) > MaxBeaconPoPs {
		return fmt.Errorf("%d PoPs measured, at most %d", len(r.RTTMs), MaxBeaconPoPs)
	}
	for pop, ms := range r.RTTMs {
		if err := ValidatePoPID(pop); err != nil {
			return err
		}
		if known != nil && !known(pop) {
			return fmt.Errorf("PoP %q is not in the fleet", pop)
		}
		if !(ms > 0 && ms <= MaxBeaconRTTMs) {
			return fmt.Errorf("rtt to %s of %v ms is outside (0, %v]", pop, ms, MaxBeaconRTTMs)
		}
	}
	return nil
}

// LatencyRecord is the value under LatencyKey: what one edge node measured for one client
// network, smoothed (an exponentially weighted moving average per PoP). It has two sources:
// beacon reports, in which clients give their RTT to several PoPs, and the node's own
// measurements of its clients' connections (the kernel's smoothed TCP RTT, QUIC's), which are
// for the node's own PoP only (the key's first part).
type LatencyRecord struct {
	// Network is the client network: a /24 (IPv4) or /48 (IPv6).
	Network netip.Prefix `json:"network"`
	// RTTMs is the smoothed RTT in milliseconds per PoP id.
	RTTMs map[string]float64 `json:"rtt_ms"`
	// Samples is how many measurements went into the averages: beacon reports plus
	// EdgeSamples.
	Samples int `json:"samples"`
	// EdgeSamples is how many of Samples the edge node measured itself on client connections;
	// they all went into the figure of the node's own PoP. Samples - EdgeSamples are beacon
	// reports.
	EdgeSamples int `json:"edge_samples,omitempty"`
	// At is when the last measurement arrived.
	At time.Time `json:"at"`
}

// BeaconSamples is how many of the record's samples are beacon reports from clients.
func (r LatencyRecord) BeaconSamples() int { return max(0, r.Samples-r.EdgeSamples) }

// ClientNetwork is the network a client address is aggregated under: its /24 (IPv4, also
// IPv4-mapped) or /48 (IPv6).
func ClientNetwork(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.WithZone("").Prefix(bits)
	return p
}

// LatencyKey is the key of one edge node's record for one client network in the latency
// bucket: "<pop>.<node>.<network>", the network written with dashes ("100-64-3-0-24",
// "2001-db8-1---48") because KV keys allow neither ':' nor '/'. The reporting node's own pop
// and node lead the key so that NATS permissions can let a node write only its own records.
func LatencyKey(pop, node string, network netip.Prefix) string {
	s := strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(network.String())
	return pop + "." + node + "." + s
}
