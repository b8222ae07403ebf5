package purge

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// AppendResponse appends r as json.Marshal writes it. The purge API answers every purge with
// every node's receipt, and through encoding/json's reflection that was about a twelfth of
// the CPU of a purge at a sustained rate; this writes the common case by hand and hands
// anything unusual (a string that needs escaping, a time or float json writes differently or
// refuses) to encoding/json, with the same result (TestAppendResponseMatchesMarshal).
func AppendResponse(dst []byte, r Response) ([]byte, error) {
	e := respEncoder{b: dst}
	e.response(r)
	if e.ok() {
		return e.b, nil
	}
	data, err := json.Marshal(r)
	return append(dst, data...), err
}

// respEncoder appends JSON and notes when a value needs encoding/json after all.
type respEncoder struct {
	b   []byte
	odd bool
}

func (e *respEncoder) ok() bool { return !e.odd }

func (e *respEncoder) raw(s string) { e.b = append(e.b, s...) }

func (e *respEncoder) str(s string) {
	if !plainJSON(s) {
		e.odd = true
		return
	}
	e.b = append(e.b, '"')
	e.b = append(e.b, s...)
	e.b = append(e.b, '"')
}

func (e *respEncoder) boolean(v bool) { e.b = strconv.AppendBool(e.b, v) }

func (e *respEncoder) time(t time.Time) {
	if !plainTime(t) {
		e.odd = true
		return
	}
	e.b = append(e.b, '"')
	e.b = t.AppendFormat(e.b, time.RFC3339Nano)
	e.b = append(e.b, '"')
}

// optTime writes key and t, or nothing for a nil t (an omitempty pointer).
func (e *respEncoder) optTime(key string, t *time.Time) {
	if t != nil {
		e.raw(key)
		e.time(*t)
	}
}

// plainTime reports whether t.MarshalJSON writes t as RFC 3339 with nanoseconds: it refuses
// years outside [0, 9999] and zone offsets of a day or more.
func plainTime(t time.Time) bool {
	_, off := t.Zone()
	y := t.Year()
	return y >= 0 && y <= 9999 && off > -24*3600 && off < 24*3600
}

// float writes f as encoding/json does for values it writes in plain decimal notation.
func (e *respEncoder) float(f float64) {
	if a := math.Abs(f); math.IsNaN(f) || math.IsInf(f, 0) || (a != 0 && (a < 1e-6 || a >= 1e21)) {
		e.odd = true
		return
	}
	e.b = strconv.AppendFloat(e.b, f, 'f', -1, 64)
}

// list writes xs as a JSON array, or null for a nil slice, as encoding/json does.
func list[T any](e *respEncoder, xs []T, item func(T)) {
	if xs == nil {
		e.raw(`null`)
		return
	}
	e.raw(`[`)
	for i, x := range xs {
		if i > 0 {
			e.raw(`,`)
		}
		item(x)
	}
	e.raw(`]`)
}

func (e *respEncoder) response(r Response) {
	e.raw(`{"id":`)
	e.str(r.ID)
	e.raw(`,"complete":`)
	e.boolean(r.Complete)
	e.optTime(`,"completed_at":`, r.CompletedAt)
	e.raw(`,"duration_ms":`)
	e.float(r.DurationMs)
	e.raw(`,"purges":`)
	list(e, r.Purges, e.receipt)
	e.raw(`}`)
}

func (e *respEncoder) receipt(r Receipt) {
	e.raw(`{"id":`)
	e.str(r.ID)
	if r.Seq != 0 {
		e.raw(`,"seq":`)
		e.b = strconv.AppendUint(e.b, r.Seq, 10)
	}
	e.raw(`,"host":`)
	e.str(r.Host)
	e.raw(`,"kind":`)
	e.str(string(r.Kind))
	if r.Soft {
		e.raw(`,"soft":true`)
	}
	e.raw(`,"issued_at":`)
	e.time(r.IssuedAt)
	e.raw(`,"complete":`)
	e.boolean(r.Complete)
	e.optTime(`,"completed_at":`, r.CompletedAt)
	e.optTime(`,"awaiting_registrations_until":`, r.AwaitingRegistrationsUntil)
	e.raw(`,"duration_ms":`)
	e.float(r.DurationMs)
	e.raw(`,"pops":`)
	list(e, r.PoPs, e.pop)
	e.raw(`,"pending":`)
	list(e, r.Pending, e.ref)
	e.raw(`,"unreachable":`)
	list(e, r.Unreachable, e.ref)
	if len(r.Gone) > 0 {
		e.raw(`,"gone":`)
		list(e, r.Gone, e.ref)
	}
	e.raw(`}`)
}

func (e *respEncoder) pop(p PoPReceipt) {
	e.raw(`{"pop":`)
	e.str(p.PoP)
	e.raw(`,"complete":`)
	e.boolean(p.Complete)
	e.optTime(`,"acked_at":`, p.AckedAt)
	if p.LatencyMs != 0 {
		e.raw(`,"latency_ms":`)
		e.float(p.LatencyMs)
	}
	e.raw(`,"nodes":`)
	list(e, p.Nodes, e.node)
	e.raw(`}`)
}

func (e *respEncoder) node(n NodeAck) {
	e.raw(`{"node":`)
	e.str(n.Node)
	e.raw(`,"acked":`)
	e.boolean(n.Acked)
	e.raw(`,"status":`)
	e.str(n.Status)
	e.optTime(`,"acked_at":`, n.AckedAt)
	e.optTime(`,"applied_at":`, n.AppliedAt)
	e.raw(`,"hits":`)
	e.b = strconv.AppendInt(e.b, int64(n.Hits), 10)
	if n.LatencyMs != 0 {
		e.raw(`,"latency_ms":`)
		e.float(n.LatencyMs)
	}
	if n.Unexpected {
		e.raw(`,"unexpected":true`)
	}
	if n.Joined {
		e.raw(`,"joined":true`)
	}
	e.raw(`}`)
}

func (e *respEncoder) ref(r NodeRef) {
	e.raw(`{"pop":`)
	e.str(r.PoP)
	e.raw(`,"node":`)
	e.str(r.Node)
	e.raw(`}`)
}
