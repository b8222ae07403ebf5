package purge

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// AppendJSON appends r as json.Marshal writes it, byte for byte (TestResponseJSON and
// FuzzResponseJSON hold the two equal). The answer to POST /v1/purge?wait carries every node's
// receipt, and encoding it by reflection took more CPU than the rest of the API handler: this
// writes the usual receipt (plain ASCII names, times within years 0-9999, millisecond figures
// written without exponent) directly and hands anything else to encoding/json.
func (r Response) AppendJSON(b []byte) ([]byte, error) {
	w := respWriter{b: b}
	w.response(r)
	if !w.bad {
		return w.b, nil
	}
	data, err := json.Marshal(r)
	if err != nil {
		return b, fmt.Errorf("encode purge response %s: %w", r.ID, err)
	}
	return append(b, data...), nil
}

// respWriter appends JSON to b; bad sticks once a value needs encoding/json.
type respWriter struct {
	b   []byte
	bad bool
}

func (w *respWriter) raw(s string) { w.b = append(w.b, s...) }

func (w *respWriter) str(s string) {
	if !plainJSON(s) {
		w.bad = true
		return
	}
	w.b = append(w.b, '"')
	w.b = append(w.b, s...)
	w.b = append(w.b, '"')
}

func (w *respWriter) bool(v bool) { w.b = strconv.AppendBool(w.b, v) }

func (w *respWriter) time(t time.Time) {
	// encoding/json refuses what RFC 3339 cannot write: such a year or zone offset.
	if _, off := t.Zone(); t.Year() < 0 || t.Year() > 9999 || off <= -24*3600 || off >= 24*3600 {
		w.bad = true
		return
	}
	w.b = append(w.b, '"')
	w.b = t.AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

// float writes f as encoding/json does when that is without exponent.
func (w *respWriter) float(f float64) {
	if abs := math.Abs(f); math.IsNaN(f) || math.IsInf(f, 0) || abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		w.bad = true
		return
	}
	w.b = strconv.AppendFloat(w.b, f, 'f', -1, 64)
}

func (w *respWriter) response(r Response) {
	w.raw(`{"id":`)
	w.str(r.ID)
	w.raw(`,"complete":`)
	w.bool(r.Complete)
	if r.CompletedAt != nil {
		w.raw(`,"completed_at":`)
		w.time(*r.CompletedAt)
	}
	w.raw(`,"duration_ms":`)
	w.float(r.DurationMs)
	w.raw(`,"purges":`)
	list(w, r.Purges, (*respWriter).receipt)
	w.raw(`}`)
}

// list writes a slice as encoding/json does: null when nil.
func list[T any](w *respWriter, items []T, write func(*respWriter, T)) {
	if items == nil {
		w.raw(`null`)
		return
	}
	w.raw(`[`)
	for i, it := range items {
		if i > 0 {
			w.raw(`,`)
		}
		write(w, it)
	}
	w.raw(`]`)
}

func (w *respWriter) receipt(r Receipt) {
	w.raw(`{"id":`)
	w.str(r.ID)
	if r.Seq != 0 {
		w.raw(`,"seq":`)
		w.b = strconv.AppendUint(w.b, r.Seq, 10)
	}
	w.raw(`,"host":`)
	w.str(r.Host)
	w.raw(`,"kind":`)
	w.str(string(r.Kind))
	if r.Soft {
		w.raw(`,"soft":true`)
	}
	w.raw(`,"issued_at":`)
	w.time(r.IssuedAt)
	w.raw(`,"complete":`)
	w.bool(r.Complete)
	if r.CompletedAt != nil {
		w.raw(`,"completed_at":`)
		w.time(*r.CompletedAt)
	}
	w.raw(`,"duration_ms":`)
	w.float(r.DurationMs)
	w.raw(`,"pops":`)
	list(w, r.PoPs, (*respWriter).pop)
	w.raw(`,"pending":`)
	list(w, r.Pending, (*respWriter).ref)
	w.raw(`,"unreachable":`)
	list(w, r.Unreachable, (*respWriter).ref)
	if len(r.Gone) > 0 {
		w.raw(`,"gone":`)
		list(w, r.Gone, (*respWriter).ref)
	}
	w.raw(`}`)
}

func (w *respWriter) pop(p PoPReceipt) {
	w.raw(`{"pop":`)
	w.str(p.PoP)
	w.raw(`,"complete":`)
	w.bool(p.Complete)
	if p.AckedAt != nil {
		w.raw(`,"acked_at":`)
		w.time(*p.AckedAt)
	}
	if p.LatencyMs != 0 {
		w.raw(`,"latency_ms":`)
		w.float(p.LatencyMs)
	}
	w.raw(`,"nodes":`)
	list(w, p.Nodes, (*respWriter).node)
	w.raw(`}`)
}

func (w *respWriter) node(n NodeAck) {
	w.raw(`{"node":`)
	w.str(n.Node)
	w.raw(`,"acked":`)
	w.bool(n.Acked)
	w.raw(`,"status":`)
	w.str(n.Status)
	if n.AckedAt != nil {
		w.raw(`,"acked_at":`)
		w.time(*n.AckedAt)
	}
	if n.AppliedAt != nil {
		w.raw(`,"applied_at":`)
		w.time(*n.AppliedAt)
	}
	w.raw(`,"hits":`)
	w.b = strconv.AppendInt(w.b, int64(n.Hits), 10)
	if n.LatencyMs != 0 {
		w.raw(`,"latency_ms":`)
		w.float(n.LatencyMs)
	}
	if n.Unexpected {
		w.raw(`,"unexpected":true`)
	}
	w.raw(`}`)
}

func (w *respWriter) ref(r NodeRef) {
	w.raw(`{"pop":`)
	w.str(r.PoP)
	w.raw(`,"node":`)
	w.str(r.Node)
	w.raw(`}`)
}
