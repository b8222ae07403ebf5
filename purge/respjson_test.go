package purge

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// sampleResponse is a response with every field set somewhere, in the shapes the tracker builds.
func sampleResponse(id string, seq uint64, f float64, at time.Time, nilLists bool) Response {
	at2 := at.Add(1234567 * time.Nanosecond)
	rc := Receipt{ID: id + "-url", Seq: seq, Host: "a.example", Kind: KindURL, Soft: seq%2 == 1, IssuedAt: at,
		Complete: true, CompletedAt: &at2, DurationMs: f,
		PoPs: []PoPReceipt{
			{PoP: "ams", Complete: true, AckedAt: &at2, LatencyMs: f, Nodes: []NodeAck{
				{Node: "n1", Acked: true, Status: NodeAcked, AckedAt: &at2, AppliedAt: &at, Hits: 3, LatencyMs: f},
				{Node: id, Acked: true, Status: NodeAcked, AckedAt: &at, AppliedAt: &at2, Hits: -1, Unexpected: true},
			}},
			{PoP: "fra", Nodes: []NodeAck{{Node: "n1", Status: NodePending}, {Node: "n2", Status: NodeGone}}},
		},
		Pending: []NodeRef{{PoP: "fra", Node: "n1"}}, Unreachable: []NodeRef{}, Gone: []NodeRef{{PoP: "fra", Node: id}}}
	if nilLists {
		rc.PoPs, rc.Pending, rc.Unreachable, rc.Gone = nil, nil, nil, []NodeRef{}
	}
	return NewResponse(id, []Receipt{rc, {ID: id + "-key"}})
}

func TestResponseJSON(t *testing.T) {
	at := time.Date(2026, 12, 2, 4, 5, 6, 123456789, time.UTC)
	for _, r := range []Response{
		sampleResponse("01KAPZ3W6N0000000000000000", 41, 1.234, at, false),
		sampleResponse("x", 0, 0, at.In(time.FixedZone("", 5*3600+1800)), true),
		sampleResponse(`q"<é>`, 1, 1e-7, time.Time{}, false),      // encoding/json's way
		sampleResponse("y", 2, 2, at.AddDate(-3000, 0, 0), false), // year 0 is still fine
		sampleResponse("z", 3, 3, at.AddDate(10000, 0, 0), false), // not RFC 3339: an error either way
		sampleResponse("w", 4, math.Inf(1), at, false),            // not JSON: an error either way
		NewResponse("empty", nil),
	} {
		want, wantErr := json.Marshal(r)
		got, err := r.AppendJSON([]byte("prefix"))
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("AppendJSON(%s) error = %v; encoding/json's = %v", r.ID, err, wantErr)
		}
		if err == nil && !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("AppendJSON(%s) =\n%s\nencoding/json writes\nprefix%s", r.ID, got, want)
		}
	}
}

func TestResponseJSONFastPath(t *testing.T) {
	w := respWriter{}
	w.response(sampleResponse("01KAPZ3W6N0000000000000000", 41, 1.234, time.Now(), false))
	if w.bad {
		t.Fatal("a usual response fell back to encoding/json")
	}
}

// FuzzResponseJSON: AppendJSON writes what encoding/json writes.
func FuzzResponseJSON(f *testing.F) {
	f.Add("01KAPZ3W6N0000000000000000", uint64(41), 1.234, int64(1764648306123456789), 0, false)
	f.Add("q\"<", uint64(0), 1e-7, int64(-62135596800000000), 3600*25, true)
	f.Fuzz(func(t *testing.T, id string, seq uint64, ms float64, ns int64, off int, nilLists bool) {
		at := time.Unix(0, ns).In(time.FixedZone("", off))
		r := sampleResponse(id, seq, ms, at, nilLists)
		want, wantErr := json.Marshal(r)
		got, err := r.AppendJSON(nil)
		if (err != nil) != (wantErr != nil) || err == nil && !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON = %s, %v; encoding/json writes %s, %v", got, err, want, wantErr)
		}
	})
}
