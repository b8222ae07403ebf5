package purge

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzRequest decodes a POST /v1/purge body and turns it into messages, as the control API will.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"host":"www.example.com","urls":["/a?b=1","https://www.example.com/c"],"soft":true}`))
	f.Add([]byte(`{"host":"www.example.com","prefixes":["/static/"],"keys":["k1","k2"]}`))
	f.Add([]byte(`{"host":"www.example.com","all":true}`))
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		var r Request
		if err := json.Unmarshal(body, &r); err != nil {
			return
		}
		msgs, err := r.Messages("fuzz", now)
		if err != nil {
			return
		}
		total := 0
		for _, m := range msgs {
			total += len(m.Values)
			n, err := m.Normalize()
			if err != nil {
				t.Fatalf("message %+v from Messages does not validate: %v", m, err)
			}
			for i := range m.Values {
				if n.Values[i] != m.Values[i] {
					t.Fatalf("normalising twice changed %q to %q", m.Values[i], n.Values[i])
				}
			}
			data, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			back, err := DecodeMessage(data)
			if err != nil || back.ID != m.ID || len(back.Values) != len(m.Values) {
				t.Fatalf("DecodeMessage(Marshal(%+v)) = %+v, %v; want the same message", m, back, err)
			}
		}
		if total > MaxValues {
			t.Fatalf("Messages accepted %d values, more than %d", total, MaxValues)
		}
	})
}

// FuzzDecodeMessage parses what a node reads from the stream.
func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"id":"01K","host":"a.example","kind":"url","values":["http://a.example/x?y"],"issued_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"id":"01K","host":"a.example","kind":"all"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded message %+v does not validate: %v", m, err)
		}
	})
}

// FuzzNormalizeURL checks that a normalised URL is a fixed point and stays path-absolute.
func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []string{"/a/b?c=1", "https://a.example/x#y", "/caf\u00e9", "//a.example/x", "/a%2Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := NormalizeURL("a.example", raw)
		if err != nil {
			return
		}
		if got == "" || got[0] != '/' || (len(got) > 1 && got[1] == '/') {
			t.Fatalf("NormalizeURL(%q) = %q, want a path starting with a single /", raw, got)
		}
		again, err := NormalizeURL("a.example", got)
		if err != nil || again != got {
			t.Fatalf("NormalizeURL(%q) = %q, %v; want %q again", got, again, err, got)
		}
	})
}

// FuzzNormalizePrefix checks that a normalised prefix is a fixed point and matches itself.
func FuzzNormalizePrefix(f *testing.F) {
	for _, s := range []string{"/a/", "/", "/caf\u00e9//", "/a?b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := NormalizePrefix(raw)
		if err != nil {
			return
		}
		again, err := NormalizePrefix(got)
		if err != nil || again != got {
			t.Fatalf("NormalizePrefix(%q) = %q, %v; want %q again", got, again, err, got)
		}
		if !PrefixMatches(got, got) || !PrefixMatches(got, got+"/x") {
			t.Fatalf("PrefixMatches(%q, itself or below) = false, want true", got)
		}
	})
}
