package purge

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Ack is one node's acknowledgement of one purge, sent on AckSubject after the purge took effect
// on that node.
type Ack struct {
	ID   string `json:"id"`
	Seq  uint64 `json:"seq"`
	PoP  string `json:"pop"`
	Node string `json:"node"`
	// AppliedAt is the node's own clock when the purge had taken effect.
	AppliedAt time.Time `json:"applied_at"`
	// Hits is how many stored objects the purge matched, as far as the node could tell.
	Hits int `json:"hits"`
	// Through, when not 0, makes this a join ack (ID empty): a node process that joined the
	// stream at sequence Through, holding nothing older, says every purge up to it is in
	// effect there though it applied none of them. It is how a node restarted under the same
	// id acks the purges published while it was down (Subscriber.Run, Tracker).
	Through uint64 `json:"through,omitempty"`
	// Asked marks a Through ack that answers the tracker's question (Tracker.Run): the node
	// applied every purge up to Through, and its acks of some may have been lost on the way.
	Asked bool `json:"asked,omitempty"`
	// After, in an answer (Asked), is the last purge the node gave up on (a gap: expired, an
	// undecodable one, a recreated stream): it applied those up to After never, so the answer
	// covers only the purges above it. 0: none since it joined.
	After uint64 `json:"after,omitempty"`
}

// decodeAck decodes an ack. The tracker decodes every node's ack of every purge on one
// goroutine, so this is on the way to the last ack of each purge: an ack in the shape the
// Subscriber sends is read without reflection, anything else through encoding/json, with the
// same result (FuzzDecodeAck).
func decodeAck(data []byte) (Ack, error) {
	if a, ok := decodeAckFast(data); ok {
		return a, nil
	}
	return unmarshalAck(data)
}

// unmarshalAck is decodeAck's way for anything the fast path does not read.
func unmarshalAck(data []byte) (Ack, error) {
	var a Ack
	if err := json.Unmarshal(data, &a); err != nil {
		return Ack{}, fmt.Errorf("decode purge ack: %w", err)
	}
	return a, nil
}

// decodeAckFast reads exactly what json.Marshal makes of an Ack with plain ASCII strings; ok is
// false for anything else.
func decodeAckFast(b []byte) (a Ack, ok bool) { return decodeAckText(string(b)) }

// decodeOwnedAck is decodeAck for a b nothing writes to again (see ownedString): the fast path
// reads it without a copy.
func decodeOwnedAck(b []byte) (Ack, error) {
	if a, ok := decodeAckText(ownedString(b)); ok {
		return a, nil
	}
	return unmarshalAck(b)
}

// decodeAckText is decodeAckFast on the ack as a string; the strings of the Ack share its
// memory.
func decodeAckText(s string) (a Ack, ok bool) {
	p := jsonParser{s: s}
	a.ID = p.field(`{"id":`)
	a.Seq = p.uint(`,"seq":`)
	a.PoP = p.field(`,"pop":`)
	a.Node = p.field(`,"node":`)
	applied := p.field(`,"applied_at":`)
	hits := p.uint(`,"hits":`)
	p.lit(`}`)
	if p.bad || len(p.s) != 0 || hits > math.MaxInt32 {
		return Ack{}, false
	}
	if err := a.AppliedAt.UnmarshalText([]byte(applied)); err != nil {
		return Ack{}, false
	}
	a.Hits = int(hits)
	return a, true
}

// encodeAck encodes a as json.Marshal does (see appendAck).
func encodeAck(a Ack) ([]byte, error) { return appendAck(nil, a) }

// appendAck appends a to b as json.Marshal writes it: by hand when its strings are plain ASCII
// (every node encodes an ack per purge, and the build machine has two cores for twenty nodes),
// through encoding/json otherwise. The Subscriber reuses b from ack to ack.
func appendAck(b []byte, a Ack) ([]byte, error) {
	if a.Through != 0 || !plainJSON(a.ID) || !plainJSON(a.PoP) || !plainJSON(a.Node) || !plainTime(a.AppliedAt) {
		data, err := json.Marshal(a)
		return append(b, data...), err
	}
	b = append(b, `{"id":"`...)
	b = append(b, a.ID...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, a.Seq, 10)
	b = append(b, `,"pop":"`...)
	b = append(b, a.PoP...)
	b = append(b, `","node":"`...)
	b = append(b, a.Node...)
	b = append(b, `","applied_at":"`...)
	b = a.AppliedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","hits":`...)
	b = strconv.AppendInt(b, int64(a.Hits), 10)
	return append(b, '}'), nil
}

// plainJSON reports whether encoding/json writes s as it is, between quotes.
func plainJSON(s string) bool {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
