package purge

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meridian-cdn/meridian/internal/idnhost"
	"github.com/meridian-cdn/meridian/wire"
)

// Request is the body of POST /v1/purge.
type Request struct {
	Host     string   `json:"host"`
	URLs     []string `json:"urls,omitempty"`
	Prefixes []string `json:"prefixes,omitempty"`
	Keys     []string `json:"keys,omitempty"`
	All      bool     `json:"all,omitempty"`
	Soft     bool     `json:"soft,omitempty"`
}

// Messages validates r and turns it into one message per kind present (urls, prefixes, keys,
// all), stamped with issuer and now. The host may be given in Unicode (Hostname): messages
// carry its ASCII form, which edges key on. The messages share one new id with the kind as suffix
// ("<id>-url", "<id>-key"), so RequestID recovers the request. Errors are *wire.FieldError
// naming the JSON field ("urls[3]", "host"); whether the host is configured is for the caller.
func (r Request) Messages(issuer string, now time.Time) ([]Message, error) {
	host, err := Hostname(r.Host)
	if err != nil {
		return nil, &wire.FieldError{Field: "host", Err: err}
	}
	total := len(r.URLs) + len(r.Prefixes) + len(r.Keys)
	switch {
	case r.All && total > 0:
		return nil, &wire.FieldError{Field: "all", Err: errors.New("cannot be combined with urls, prefixes or keys")}
	case !r.All && total == 0:
		return nil, &wire.FieldError{Field: "urls", Err: errors.New("nothing to purge: give urls, prefixes, keys or all")}
	case total > MaxValues:
		return nil, &wire.FieldError{Field: fieldOver(r), Err: fmt.Errorf("request has %d values, at most %d are allowed", total, MaxValues)}
	}
	id := NewID()
	var out []Message
	for i, v := range r.URLs {
		if err := checkSchemeRelative(host, v); err != nil {
			return nil, &wire.FieldError{Field: fmt.Sprintf("urls[%d]", i), Err: err}
		}
	}
	add := func(kind Kind, field string, values []string) error {
		v, err := normalizeValues(host, kind, values, field)
		if err != nil {
			return err
		}
		out = append(out, Message{
			ID: id + "-" + string(kind), Host: host, Kind: kind, Values: v,
			Soft: r.Soft, IssuedAt: now, Issuer: issuer,
		})
		return nil
	}
	if r.All {
		if err := add(KindAll, "all", nil); err != nil {
			return nil, err
		}
		return out, nil
	}
	for _, k := range []struct {
		kind   Kind
		field  string
		values []string
	}{{KindURL, "urls", r.URLs}, {KindPrefix, "prefixes", r.Prefixes}, {KindKey, "keys", r.Keys}} {
		if len(k.values) == 0 {
			continue
		}
		if err := add(k.kind, k.field, k.values); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Hostname returns the host a purge names in the form messages carry and edges key on: lower
// case, without the trailing dot of a fully qualified name, and with Unicode labels converted
// to their ASCII (xn--) form, as clients send them in Host ("bücher.example" ->
// "xn--bcher-kva.example"; idnhost.ToASCII). It refuses what is not a valid hostname then.
func Hostname(h string) (string, error) {
	a, err := idnhost.ToASCII(h)
	if err != nil {
		return "", err
	}
	a = strings.TrimSuffix(a, ".")
	if err := wire.ValidateHostname(a); err != nil {
		return "", err
	}
	return a, nil
}

// fieldOver names the field at which the request crossed MaxValues.
func fieldOver(r Request) string {
	switch {
	case len(r.URLs) > MaxValues:
		return "urls"
	case len(r.URLs)+len(r.Prefixes) > MaxValues:
		return "prefixes"
	default:
		return "keys"
	}
}

// RequestID returns the request part of a message id made by Request.Messages (the id itself
// for other ids).
func RequestID(messageID string) string {
	for _, k := range []Kind{KindURL, KindPrefix, KindKey, KindAll} {
		if s, ok := strings.CutSuffix(messageID, "-"+string(k)); ok {
			return s
		}
	}
	return messageID
}

// Response is the body of POST /v1/purge and GET /v1/purges/{id}: the receipts of a request's
// messages, with the request complete once they all are.
type Response struct {
	ID          string     `json:"id"`
	Complete    bool       `json:"complete"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// DurationMs is from issue to the last ack of any of the request's purges.
	DurationMs float64   `json:"duration_ms"`
	Purges     []Receipt `json:"purges"`
}

// NewResponse combines the receipts of one request.
func NewResponse(id string, receipts []Receipt) Response {
	r := Response{ID: id, Complete: len(receipts) > 0, Purges: receipts}
	if r.Purges == nil {
		r.Purges = []Receipt{}
	}
	for _, rc := range receipts {
		r.DurationMs = max(r.DurationMs, rc.DurationMs)
		if !rc.Complete {
			r.Complete = false
			continue
		}
		if rc.CompletedAt != nil && (r.CompletedAt == nil || rc.CompletedAt.After(*r.CompletedAt)) {
			at := *rc.CompletedAt
			r.CompletedAt = &at
		}
	}
	if !r.Complete {
		r.CompletedAt = nil
	}
	return r
}
