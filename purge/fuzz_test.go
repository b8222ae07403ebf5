package purge

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
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
	for _, s := range []string{"/a/b?c=1", "https://a.example/x#y", "/caf\u00e9", "//a.example/x", "/a%2Fb", "https://a.example//x", "//?q"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := NormalizeURL("a.example", raw)
		if err != nil {
			return
		}
		if got == "" || got[0] != '/' {
			t.Fatalf("NormalizeURL(%q) = %q, want a path starting with /", raw, got)
		}
		again, err := NormalizeURL("a.example", got)
		if err != nil || again != got {
			t.Fatalf("NormalizeURL(%q) = %q, %v; want %q again", got, again, err, got)
		}
	})
}

// FuzzNormalizeURLPlain checks that the shortcut for URLs already in normal form returns what
// parsing them does.
func FuzzNormalizeURLPlain(f *testing.F) {
	for _, s := range []string{"/", "/?", "/a/b?c=1&d=2+3", "/a/../b.c~d_e-f?", "/a//b", "/a?b?c", "/a?b/c", "//a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if !plainURL(raw) {
			return
		}
		got, err := normalizeURLParsed("a.example", raw)
		if err != nil || got != raw {
			t.Fatalf("normalizeURLParsed(%q) = %q, %v; plainURL says it is %q already", raw, got, err, raw)
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

// FuzzDecodeAck: the tracker's ack decoder reads anything exactly as encoding/json does, and an
// ack as the Subscriber sends it takes the fast path.
func FuzzDecodeAck(f *testing.F) {
	at := time.Date(2026, 12, 2, 4, 5, 6, 123456789, time.UTC)
	for _, a := range []Ack{
		{ID: "01KAPZ3W6N0000000000000000-url", Seq: 41, PoP: "ams", Node: "n1", AppliedAt: at, Hits: 3},
		{ID: "x", PoP: "p", Node: "n", AppliedAt: at.In(time.FixedZone("", 3600))},
		{ID: `q"uote\`, Seq: 1, PoP: "é", Node: "n", Hits: -1},
	} {
		b, err := json.Marshal(a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"seq":1,"id":"x","pop":"p","node":"n","applied_at":"2026-12-02T04:05:06Z","hits":0}`))
	f.Add([]byte(`{"id":"x","seq":01,"pop":"p","node":"n","applied_at":"2026-12-02T04:05:06Z","hits":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var want Ack
		wantErr := json.Unmarshal(b, &want)
		got, err := decodeAck(b)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("decodeAck(%q) error = %v, encoding/json's = %v", b, err, wantErr)
		}
		if err == nil && (got.ID != want.ID || got.Seq != want.Seq || got.PoP != want.PoP || got.Node != want.Node ||
			got.Hits != want.Hits || !got.AppliedAt.Equal(want.AppliedAt)) {
			t.Fatalf("decodeAck(%q) = %+v, encoding/json reads %+v", b, got, want)
		}
		if err != nil {
			return
		}
		// Re-encoded, by hand as by encoding/json, a plain ack takes the fast path.
		enc, err := json.Marshal(want)
		if err != nil {
			return // a time encoding/json cannot write
		}
		if mine, err := encodeAck(want); err != nil || !bytes.Equal(mine, enc) {
			t.Fatalf("encodeAck(%+v) = %s, %v; encoding/json writes %s", want, mine, err, enc)
		}
		fast, ok := decodeAckFast(enc)
		plain := want.Hits >= 0 && plainJSON(want.ID) && plainJSON(want.PoP) && plainJSON(want.Node)
		if plain && want.AppliedAt.Year() >= 0 && want.AppliedAt.Year() <= 9999 && (!ok || !fast.AppliedAt.Equal(want.AppliedAt) || fast.ID != want.ID) {
			t.Fatalf("decodeAckFast(%s) = %+v, %v; want the fast path to read it", enc, fast, ok)
		}
	})
}

// FuzzDecodeMessageFast: what the nodes' fast message decoder accepts, encoding/json reads the
// same, and a message as Publish stores it takes the fast path.
func FuzzDecodeMessageFast(f *testing.F) {
	at := time.Date(2026, 12, 2, 4, 5, 6, 123456789, time.UTC)
	for _, m := range []Message{
		{ID: "01KAPZ3W6N0000000000000000-url", Host: "a.example", Kind: KindURL, Values: []string{"/a?b=1", "/c"}, IssuedAt: at, Issuer: "ci"},
		{ID: "x", Seq: 7, Host: "a.example", Kind: KindAll, Soft: true, IssuedAt: at.In(time.FixedZone("", 3600))},
		{ID: "y", Host: "a.example", Kind: KindKey, Values: []string{`k<&>"\`}},
	} {
		b, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"id":"x","host":"a.example","kind":"key","values":[],"issued_at":"2026-12-02T04:05:06Z"}`))
	f.Add([]byte(`{"id":"x","host":"a.example","kind":"key","soft":false,"issued_at":"2026-12-02T04:05:06Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, ok := decodeMessageFast(b); ok {
			var want Message
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatalf("decodeMessageFast(%q) read %+v, encoding/json fails: %v", b, got, err)
			}
			if !got.IssuedAt.Equal(want.IssuedAt) {
				t.Fatalf("decodeMessageFast(%q) issued at %v, encoding/json reads %v", b, got.IssuedAt, want.IssuedAt)
			}
			got.IssuedAt, want.IssuedAt = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decodeMessageFast(%q) = %+v, encoding/json reads %+v", b, got, want)
			}
		}
		var m Message
		if json.Unmarshal(b, &m) != nil || len(m.Values) == 0 && m.Kind != KindAll {
			return
		}
		enc, err := json.Marshal(m)
		if err != nil {
			return
		}
		plain := plainJSON(m.ID) && plainJSON(m.Host) && plainJSON(string(m.Kind)) && plainJSON(m.Issuer) &&
			m.IssuedAt.Year() >= 0 && m.IssuedAt.Year() <= 9999
		for _, v := range m.Values {
			plain = plain && plainJSON(v)
		}
		if _, ok := decodeMessageFast(enc); plain && !ok {
			t.Fatalf("decodeMessageFast(%s) fell back; want the fast path", enc)
		}
	})
}

// TestNormalizeURLPlainRandom: random paths and queries from the characters plainURL accepts
// (and a few it does not) normalise the same way with and without the shortcut.
func TestNormalizeURLPlainRandom(t *testing.T) {
	const chars = "abcXYZ019-._~/?=&+%#:@;! "
	r := rand.New(rand.NewPCG(1, 2))
	plain := 0
	for range 50000 {
		b := []byte{'/'}
		for n := r.IntN(12); n > 0; n-- {
			b = append(b, chars[r.IntN(len(chars))])
		}
		raw := string(b)
		want, werr := normalizeURLParsed("a.example", raw)
		got, gerr := NormalizeURL("a.example", raw)
		if got != want || (gerr == nil) != (werr == nil) {
			t.Fatalf("NormalizeURL(%q) = %q, %v; parsed %q, %v", raw, got, gerr, want, werr)
		}
		if plainURL(raw) {
			plain++
		}
	}
	if plain < 1000 {
		t.Errorf("only %d of the random URLs took the shortcut", plain)
	}
}
