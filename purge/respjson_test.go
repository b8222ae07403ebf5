package purge

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// randResponse builds a response with the shapes the tracker makes and the odd values it
// could hold: nil and empty slices, absent times, strings that need escaping, times and
// floats encoding/json writes in another notation or refuses.
func randResponse(r *rand.Rand) Response {
	strs := []string{"", "p1", "lon", "n1", "www.example.com", `a"b`, `back\slash`, "<tag>&", "é", "\u2028", "\x01", "ctl-0123456789abcdef"}
	str := func() string {
		if r.IntN(6) == 0 {
			return strs[r.IntN(len(strs))]
		}
		return strs[1+r.IntN(4)]
	}
	floats := []float64{0, 1, 0.125, 1.37, 12345.678, 1e-7, 3e21, -2.5, 1e20, 1e-6}
	flt := func() float64 {
		if r.IntN(5) == 0 {
			return floats[r.IntN(len(floats))]
		}
		return float64(r.IntN(100000)) / 1000
	}
	base := time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)
	tm := func() time.Time {
		switch r.IntN(12) {
		case 0:
			return time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
		case 1:
			return base.In(time.FixedZone("x", 3600))
		case 2:
			return time.Time{}
		case 3:
			return base.In(time.FixedZone("far", 25*3600)) // MarshalJSON refuses it
		}
		return base.Add(time.Duration(r.Int64N(int64(time.Hour))))
	}
	ptm := func() *time.Time {
		if r.IntN(3) == 0 {
			return nil
		}
		t := tm()
		return &t
	}
	refs := func() []NodeRef {
		switch r.IntN(4) {
		case 0:
			return nil
		case 1:
			return []NodeRef{}
		}
		out := make([]NodeRef, 1+r.IntN(3))
		for i := range out {
			out[i] = NodeRef{PoP: str(), Node: str()}
		}
		return out
	}
	resp := Response{ID: str(), Complete: r.IntN(2) == 0, CompletedAt: ptm(), DurationMs: flt()}
	if r.IntN(8) != 0 {
		resp.Purges = make([]Receipt, r.IntN(3))
	}
	for i := range resp.Purges {
		rc := Receipt{ID: str(), Host: str(), Kind: Kind(str()), Soft: r.IntN(2) == 0, IssuedAt: tm(),
			Complete: r.IntN(2) == 0, CompletedAt: ptm(), AwaitingRegistrationsUntil: ptm(), DurationMs: flt(),
			Pending: refs(), Unreachable: refs(), Gone: refs()}
		if r.IntN(2) == 0 {
			rc.Seq = r.Uint64N(1 << 40)
		}
		if r.IntN(8) != 0 {
			rc.PoPs = make([]PoPReceipt, r.IntN(4))
		}
		for j := range rc.PoPs {
			p := PoPReceipt{PoP: str(), Complete: r.IntN(2) == 0, AckedAt: ptm()}
			if r.IntN(2) == 0 {
				p.LatencyMs = flt()
			}
			if r.IntN(8) != 0 {
				p.Nodes = make([]NodeAck, r.IntN(4))
			}
			for k := range p.Nodes {
				n := NodeAck{Node: str(), Acked: r.IntN(2) == 0, Status: str(), AckedAt: ptm(), AppliedAt: ptm(),
					Hits: r.IntN(1000) - 10, Unexpected: r.IntN(4) == 0, Joined: r.IntN(4) == 0}
				if r.IntN(2) == 0 {
					n.LatencyMs = flt()
				}
				p.Nodes[k] = n
			}
			rc.PoPs[j] = p
		}
		resp.Purges[i] = rc
	}
	return resp
}

// AppendResponse writes what json.Marshal writes, byte for byte, and fails where it fails.
func TestAppendResponseMatchesMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 2))
	fast := 0
	for i := range 20000 {
		resp := randResponse(r)
		want, wantErr := json.Marshal(resp)
		got, err := AppendResponse([]byte("prefix:"), resp)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("case %d: error %v, json.Marshal's %v", i, err, wantErr)
		}
		if err != nil {
			continue
		}
		if !bytes.Equal(got, append([]byte("prefix:"), want...)) {
			t.Fatalf("case %d:\n got %s\nwant prefix:%s", i, got, want)
		}
		e := respEncoder{}
		if e.response(resp); e.ok() {
			fast++
		}
	}
	// Most cases must take the hand-written path, or the test proves nothing about it.
	if fast < 2000 {
		t.Fatalf("only %d of 20000 cases were written by hand", fast)
	}
}

// A receipt as the tracker builds it is written without encoding/json.
func TestAppendResponseTrackerShape(t *testing.T) {
	at := time.Date(2026, 12, 2, 13, 0, 0, 123456789, time.UTC)
	resp := NewResponse("req-1", []Receipt{{ID: "p1", Seq: 7, Host: "www.example.com", Kind: KindKey, IssuedAt: at,
		Complete: true, CompletedAt: &at, DurationMs: 1.234,
		PoPs:    []PoPReceipt{{PoP: "lon", Complete: true, AckedAt: &at, LatencyMs: 1.2, Nodes: []NodeAck{{Node: "n1", Acked: true, Status: NodeAcked, AckedAt: &at, AppliedAt: &at, Hits: 3, LatencyMs: 1.2}}}},
		Pending: []NodeRef{}, Unreachable: []NodeRef{}}})
	e := respEncoder{}
	if e.response(resp); !e.ok() {
		t.Fatal("a tracker-shaped response went to encoding/json")
	}
	want, _ := json.Marshal(resp)
	if !bytes.Equal(e.b, want) {
		t.Fatalf("got %s\nwant %s", e.b, want)
	}
	if _, err := AppendResponse(nil, Response{DurationMs: math.NaN()}); err == nil {
		t.Fatal("NaN encoded without an error")
	}
}
