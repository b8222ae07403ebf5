package origin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is a failure the origin injects into GET and HEAD answers for a path (or every path).
type Fault struct {
	Status   int           // answer with this status instead of the requested one; 0 keeps it
	Delay    time.Duration // added to the delay before headers
	Stall    time.Duration // pause after half the body (replaces stall=)
	Drop     bool          // close the connection without a response
	Truncate bool          // declare the full Content-Length, send half the body, close
	// BumpAfter, if positive, bumps the path's version once, after that many more body bytes
	// of it have been sent (over every response, ranges included): the response in progress
	// goes on with the old version, later ones get the new. It counts down as bytes are sent
	// and is cleared when it fires. Until then the fault is never forgotten (see SetFault).
	// Alone, it is not a fault of the path's own: the path gets the global fault with it.
	// Ignored in the global fault (path "").
	BumpAfter int64
}

// faultJSON is a Fault as POST /_fault carries it.
type faultJSON struct {
	Path      string `json:"path"`
	Status    int    `json:"status,omitempty"`
	Delay     string `json:"delay,omitempty"`
	Stall     string `json:"stall,omitempty"`
	Drop      bool   `json:"drop,omitempty"`
	Truncate  bool   `json:"truncate,omitempty"`
	BumpAfter int64  `json:"bump_after,omitempty"`
}

// ParseFault decodes the JSON body of POST /_fault into the path it applies to ("" for every
// path) and the fault.
func ParseFault(data []byte) (string, Fault, error) {
	var j faultJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return "", Fault{}, fmt.Errorf("parse fault: %w", err)
	}
	if dec.More() {
		return "", Fault{}, errors.New("parse fault: trailing data after the object")
	}
	if j.Path != "" && (!strings.HasPrefix(j.Path, "/") || isControlPath(j.Path)) {
		return "", Fault{}, fmt.Errorf("parse fault: path %q is not an object path", j.Path)
	}
	f := Fault{Status: j.Status, Drop: j.Drop, Truncate: j.Truncate, BumpAfter: j.BumpAfter}
	if f.Status != 0 && (f.Status < 200 || f.Status > 599) {
		return "", Fault{}, fmt.Errorf("parse fault: status %d is not from 200 to 599", f.Status)
	}
	if f.BumpAfter < 0 || f.BumpAfter > 0 && j.Path == "" {
		return "", Fault{}, fmt.Errorf("parse fault: bump_after %d needs a path and a non-negative count", f.BumpAfter)
	}
	for _, d := range []struct {
		name, v string
		dst     *time.Duration
	}{{"delay", j.Delay, &f.Delay}, {"stall", j.Stall, &f.Stall}} {
		if d.v == "" {
			continue
		}
		var err error
		if *d.dst, err = time.ParseDuration(d.v); err != nil || *d.dst < 0 || *d.dst > maxWait {
			return "", Fault{}, fmt.Errorf("parse fault: %s %q is not a Go duration from 0 to %v", d.name, d.v, maxWait)
		}
	}
	return j.Path, f, nil
}

// errBumpsFull refuses a BumpAfter fault when as many as the bound are waiting to fire.
var errBumpsFull = errors.New("too many bump_after faults waiting to fire")

// SetFault injects f into answers for path, or for every path without a fault of its own if path
// is "", replacing the path's fault. A zero Fault removes the fault. Past Config.MaxPaths paths
// with faults, the least recently set or used one is forgotten (the global fault never is),
// but not one whose BumpAfter is still to fire: a change promised mid-fill must come. Those
// are at most MaxPaths (and 64 MiB of path names); past that a new one is refused with an
// error, and the path keeps the fault it had.
func (s *Server) SetFault(path string, f Fault) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.BumpAfter = max(f.BumpAfter, 0)
	if path == "" {
		f.BumpAfter = 0
		s.globalFault = f
		return nil
	}
	_, waiting := s.bumps[path]
	if f.BumpAfter > 0 && !waiting && (len(s.bumps) >= s.cfg.MaxPaths || s.bumpBytes+len(path) > maxStateBytes) {
		return fmt.Errorf("set fault for %s: %w (at most MaxPaths, %d, and %d bytes of paths)",
			path, errBumpsFull, s.cfg.MaxPaths, maxStateBytes)
	}
	if waiting {
		delete(s.bumps, path)
		s.bumpBytes -= len(path)
	}
	if e := s.faults.peek(path); e != nil {
		s.faults.remove(e)
	}
	switch {
	case f.BumpAfter > 0:
		s.bumps[path] = f
		s.bumpBytes += len(path)
	case f != (Fault{}):
		s.faults.add(path).val = f
	}
	return nil
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.clear()
	clear(s.bumps)
	s.bumpBytes = 0
	s.globalFault = Fault{}
}

// bumpRoom returns how many more body bytes of path may be sent before its BumpAfter fault
// fires, or 0 if it has none.
func (s *Server) bumpRoom(path string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bumps[path].BumpAfter
}

// sent counts n body bytes sent for path and, if metered, takes them off path's BumpAfter fault.
// It reports whether the fault fired: the caller then bumps the version.
func (s *Server) sent(path string, n int, metered bool) (bump bool) {
	if n <= 0 {
		return false
	}
	s.stats.addBytes(path, int64(n))
	if !metered {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.bumps[path]
	if !ok {
		return false
	}
	if f.BumpAfter -= int64(n); f.BumpAfter > 0 {
		s.bumps[path] = f
		return false
	}
	// Fired: what else the fault does goes on, and may be forgotten from now on.
	delete(s.bumps, path)
	s.bumpBytes -= len(path)
	if f.BumpAfter = 0; f != (Fault{}) {
		s.faults.add(path).val = f
	}
	return true
}

// fault returns the fault for path: its own, else the global one, else none. A BumpAfter still
// to fire is not a fault of its own: alone, it goes with the global fault, which the path gets
// anyway once the bump fires.
func (s *Server) fault(path string) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.bumps[path]; ok {
		if f != (Fault{BumpAfter: f.BumpAfter}) {
			return f
		}
		g := s.globalFault
		g.BumpAfter = f.BumpAfter
		return g
	}
	if e := s.faults.find(path); e != nil {
		return e.val
	}
	return s.globalFault
}

func (s *Server) serveFault(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		data, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, "read fault: "+err.Error(), http.StatusBadRequest)
			return
		}
		path, f, err := ParseFault(data)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := s.SetFault(path, f); err != nil {
			// The request is fine; the origin's state refuses it until a waiting bump_after
			// fires or is cleared.
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case http.MethodGet, http.MethodHead:
		s.mu.Lock()
		list := make([]faultJSON, 0, s.faults.len()+len(s.bumps)+1)
		if s.globalFault != (Fault{}) {
			list = append(list, toFaultJSON("", s.globalFault))
		}
		for p, f := range s.faults.all() {
			list = append(list, toFaultJSON(p, f))
		}
		for p, f := range s.bumps {
			list = append(list, toFaultJSON(p, f))
		}
		s.mu.Unlock()
		sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
		writeJSON(w, list)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func toFaultJSON(path string, f Fault) faultJSON {
	return faultJSON{Path: path, Status: f.Status, Delay: durString(f.Delay), Stall: durString(f.Stall),
		Drop: f.Drop, Truncate: f.Truncate, BumpAfter: f.BumpAfter}
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func (s *Server) serveBump(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	path := r.URL.Query().Get("path")
	if path != "" && (!strings.HasPrefix(path, "/") || isControlPath(path)) {
		http.Error(w, fmt.Sprintf("bump: path %q is not an object path", path), http.StatusBadRequest)
		return
	}
	v := s.Bump(path)
	writeJSON(w, map[string]any{"path": path, "version": v})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// stats counts object requests.
type stats struct {
	total    atomic.Int64
	inFlight atomic.Int64
	max      atomic.Int64 // highest inFlight seen since the last reset

	mu    sync.Mutex // guards paths
	paths *lru[string, pathStats]

	bytesTotal atomic.Int64
}

// pathStats is what stats keeps for one path. An entry may have bytes and no requests: it was
// forgotten, or the stats reset, while a response for it was being sent.
type pathStats struct {
	requests int64
	bytes    int64       // body bytes sent
	last     http.Header // the last request's headers
}

func (st *stats) init(maxPaths int) {
	st.paths = newLRU[string, pathStats](maxPaths, maxStateBytes, pathCost)
}

func (st *stats) addBytes(path string, n int64) {
	st.bytesTotal.Add(n)
	st.mu.Lock()
	st.paths.add(path).val.bytes += n
	st.mu.Unlock()
}

// headerCost estimates the memory h holds, for the stats' byte bound: its strings, and a
// string and slice header per field and a string header per value.
func headerCost(h http.Header) int {
	n := 48 // the map's own header
	for k, vs := range h {
		n += len(k) + 40
		for _, v := range vs {
			n += len(v) + 16
		}
	}
	return n
}

func (st *stats) begin(path string, h http.Header) {
	st.total.Add(1)
	n := st.inFlight.Add(1)
	for {
		m := st.max.Load()
		if n <= m || st.max.CompareAndSwap(m, n) {
			break
		}
	}
	h = h.Clone()
	cost := headerCost(h)
	st.mu.Lock()
	e := st.paths.add(path)
	e.val.requests++
	e.val.last = h
	st.paths.setCost(e, cost)
	st.mu.Unlock()
}

func (st *stats) end() { st.inFlight.Add(-1) }

// pathStats returns what the stats keep for path, zero if nothing (see Config.MaxPaths).
func (s *Server) pathStats(path string) pathStats {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	if e := s.stats.paths.peek(path); e != nil {
		return e.val
	}
	return pathStats{}
}

// Requests returns how many requests path has received since the last ResetStats (0 once the
// path is forgotten, see Config.MaxPaths).
func (s *Server) Requests(path string) int64 { return s.pathStats(path).requests }

// BytesSent returns how many body bytes of path (every status, ranges included; not headers)
// the origin has written since the last ResetStats (0 once the path is forgotten).
func (s *Server) BytesSent(path string) int64 { return s.pathStats(path).bytes }

// TotalBytesSent returns how many object body bytes the origin has written since the last
// ResetStats.
func (s *Server) TotalBytesSent() int64 { return s.stats.bytesTotal.Load() }

// Total returns how many object requests the origin has received since the last ResetStats.
func (s *Server) Total() int64 { return s.stats.total.Load() }

// InFlight returns how many object requests are being served now.
func (s *Server) InFlight() int64 { return s.stats.inFlight.Load() }

// MaxConcurrent returns the most object requests served at once since the last ResetStats.
func (s *Server) MaxConcurrent() int64 { return s.stats.max.Load() }

// LastHeader returns the headers of the last request for path, or nil if none came (or the
// path is forgotten).
func (s *Server) LastHeader(path string) http.Header { return s.pathStats(path).last.Clone() }

// ResetStats zeroes the request counts and sets the concurrency high-water mark to the requests
// in flight now. The Prometheus counters are not reset (counters only go up).
func (s *Server) ResetStats() {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	s.stats.total.Store(0)
	s.stats.bytesTotal.Store(0)
	s.stats.max.Store(s.stats.inFlight.Load())
	s.stats.paths.clear()
}

// StatsJSON is the body of GET /_stats.
type StatsJSON struct {
	Total         int64            `json:"total"`
	Paths         map[string]int64 `json:"paths"`
	MaxConcurrent int64            `json:"max_concurrent"`
	InFlight      int64            `json:"in_flight"`
	Bytes         map[string]int64 `json:"bytes"`       // body bytes sent per path
	BytesTotal    int64            `json:"bytes_total"` // body bytes sent for every path
}

func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.stats.mu.Lock()
	out := StatsJSON{
		Total:         s.stats.total.Load(),
		Paths:         make(map[string]int64, s.stats.paths.len()),
		MaxConcurrent: s.stats.max.Load(),
		InFlight:      s.stats.inFlight.Load(),
		Bytes:         make(map[string]int64, s.stats.paths.len()),
		BytesTotal:    s.stats.bytesTotal.Load(),
	}
	for p, ps := range s.stats.paths.all() {
		if ps.requests > 0 {
			out.Paths[p] = ps.requests
		}
		if ps.bytes > 0 {
			out.Bytes[p] = ps.bytes
		}
	}
	s.stats.mu.Unlock()
	writeJSON(w, out)
}
