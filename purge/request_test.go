package purge

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/wire"
)

func TestRequestMessages(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	keys := func(n int) []string { return values(n, func(i int) string { return fmt.Sprint("k", i) }) }
	type want struct {
		kind   Kind
		values []string
	}
	tests := []struct {
		name      string
		req       Request
		want      []want
		wantField string
	}{
		{"urls", Request{Host: "www.example.com", URLs: []string{"/a", "https://www.example.com/b?c"}},
			[]want{{KindURL, []string{"/a", "/b?c"}}}, ""},
		{"prefixes", Request{Host: "www.example.com", Prefixes: []string{"/static/"}},
			[]want{{KindPrefix, []string{"/static"}}}, ""},
		{"keys", Request{Host: "www.example.com", Keys: []string{"product-1"}},
			[]want{{KindKey, []string{"product-1"}}}, ""},
		{"all", Request{Host: "www.example.com", All: true}, []want{{KindAll, nil}}, ""},
		{"every list", Request{Host: "www.example.com", URLs: []string{"/a"}, Prefixes: []string{"/b"}, Keys: []string{"c"}},
			[]want{{KindURL, []string{"/a"}}, {KindPrefix, []string{"/b"}}, {KindKey, []string{"c"}}}, ""},
		{"host case and trailing dot", Request{Host: "WWW.Example.com.", All: true}, []want{{KindAll, nil}}, ""},
		{"1000 values in total", Request{Host: "a.example", Keys: keys(500), Prefixes: []string{"/"}, URLs: values(499, func(i int) string { return fmt.Sprint("/", i) })},
			[]want{{KindURL, nil}, {KindPrefix, nil}, {KindKey, nil}}, ""},
		{"1001 values in total", Request{Host: "a.example", Keys: keys(501), URLs: values(500, func(i int) string { return fmt.Sprint("/", i) })}, nil, "keys"},
		{"1001 urls", Request{Host: "a.example", URLs: values(1001, func(i int) string { return fmt.Sprint("/", i) })}, nil, "urls"},
		{"nothing", Request{Host: "a.example"}, nil, "urls"},
		{"all and urls", Request{Host: "a.example", All: true, URLs: []string{"/a"}}, nil, "all"},
		{"no host", Request{URLs: []string{"/a"}}, nil, "host"},
		{"bad host", Request{Host: "a_b.example", All: true}, nil, "host"},
		{"foreign url", Request{Host: "a.example", URLs: []string{"/ok", "https://b.example/x"}}, nil, "urls[1]"},
		// "//a" is a path; one that is also a scheme-relative URL of the host is ambiguous.
		{"urls starting with //", Request{Host: "a.example", URLs: []string{"//b.example/x", "//?q", "https://a.example//a.example/x"}},
			[]want{{KindURL, []string{"//b.example/x", "//?q", "//a.example/x"}}}, ""},
		{"scheme-relative url of the host", Request{Host: "a.example", URLs: []string{"/ok", "//A.example:8443/x"}}, nil, "urls[1]"},
		{"url too long once escaped", Request{Host: "a.example", URLs: []string{"/" + strings.Repeat("é", 1000)}}, nil, "urls[0]"},
		{"prefix too long once escaped", Request{Host: "a.example", Prefixes: []string{"/" + strings.Repeat("é", 1000)}}, nil, "prefixes[0]"},
		{"url at the bound once escaped", Request{Host: "a.example", URLs: []string{"/" + strings.Repeat("é", 341) + "a"}},
			[]want{{KindURL, []string{"/" + strings.Repeat("%C3%A9", 341) + "a"}}}, ""},
		{"bad prefix", Request{Host: "a.example", Prefixes: []string{"static"}}, nil, "prefixes[0]"},
		{"bad key", Request{Host: "a.example", Keys: []string{"a key"}}, nil, "keys[0]"},
		{"long value", Request{Host: "a.example", Keys: []string{strings.Repeat("x", 2049)}}, nil, "keys[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := tt.req.Messages("alice", now)
			if tt.wantField != "" {
				var fe *wire.FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Fatalf("Messages() error = %v, want a field error on %q", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("Messages() error = %v, want nil", err)
			}
			if len(msgs) != len(tt.want) {
				t.Fatalf("Messages() gave %d messages, want %d", len(msgs), len(tt.want))
			}
			reqID := RequestID(msgs[0].ID)
			for i, m := range msgs {
				w := tt.want[i]
				if m.Kind != w.kind || (w.values != nil && !slices.Equal(m.Values, w.values)) {
					t.Errorf("message %d = %s %q, want %s %q", i, m.Kind, m.Values, w.kind, w.values)
				}
				if m.Host != strings.ToLower(strings.TrimSuffix(tt.req.Host, ".")) || m.Issuer != "alice" || !m.IssuedAt.Equal(now) || m.Soft != tt.req.Soft {
					t.Errorf("message %d = %+v, want host, issuer alice, issued %v", i, m, now)
				}
				if m.ID != reqID+"-"+string(m.Kind) || RequestID(m.ID) != reqID {
					t.Errorf("message %d id %q, want %q plus -%s", i, m.ID, reqID, m.Kind)
				}
				if err := m.Validate(); err != nil {
					t.Errorf("message %d Validate() = %v, want nil", i, err)
				}
			}
		})
	}
}

func TestRequestSoft(t *testing.T) {
	msgs, err := Request{Host: "a.example", Keys: []string{"k"}, URLs: []string{"/u"}, Soft: true}.Messages("", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if !m.Soft {
			t.Errorf("message %s Soft = false, want true", m.Kind)
		}
	}
}

func TestNewResponse(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) *time.Time { x := t0.Add(time.Duration(ms) * time.Millisecond); return &x }
	tests := []struct {
		name         string
		receipts     []Receipt
		wantComplete bool
		wantAt       *time.Time
		wantMs       float64
	}{
		{"none", nil, false, nil, 0},
		{"all complete", []Receipt{{Complete: true, CompletedAt: at(3), DurationMs: 3}, {Complete: true, CompletedAt: at(5), DurationMs: 5}}, true, at(5), 5},
		{"one pending", []Receipt{{Complete: true, CompletedAt: at(3), DurationMs: 3}, {DurationMs: 4}}, false, nil, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResponse("req", tt.receipts)
			if r.Complete != tt.wantComplete || r.DurationMs != tt.wantMs || (r.CompletedAt == nil) != (tt.wantAt == nil) ||
				(r.CompletedAt != nil && !r.CompletedAt.Equal(*tt.wantAt)) || r.Purges == nil {
				t.Errorf("NewResponse() = complete %v at %v %v ms, want %v at %v %v ms", r.Complete, r.CompletedAt, r.DurationMs, tt.wantComplete, tt.wantAt, tt.wantMs)
			}
		})
	}
}

// A host named in Unicode (U-labels) is purged under its ASCII form (A-labels), which is what
// clients send in Host and what edges key on; a name IDNA refuses is a field error naming it.
func TestRequestMessagesInternationalisedHost(t *testing.T) {
	const aLabel = "xn--bcher-kva.example"
	tests := []struct {
		name      string
		req       Request
		wantHost  string
		wantURLs  []string
		wantField string
		wantIn    string // the error names the host as given (quoted, as %q spells it)
	}{
		{"u-label host", Request{Host: "bücher.example", All: true}, aLabel, nil, "", ""},
		{"upper case, trailing dot", Request{Host: "BÜCHER.Example.", All: true}, aLabel, nil, "", ""},
		{"fullwidth dot", Request{Host: "bücher\uff0eexample", All: true}, aLabel, nil, "", ""},
		{"a-label host", Request{Host: aLabel, All: true}, aLabel, nil, "", ""},
		{"u-label url, u-label host", Request{Host: "bücher.example", URLs: []string{"https://bücher.example/a?b"}}, aLabel, []string{"/a?b"}, "", ""},
		{"u-label url, a-label host", Request{Host: aLabel, URLs: []string{"https://BÜCHER.example:8443/a"}}, aLabel, []string{"/a"}, "", ""},
		{"escaped u-label url", Request{Host: aLabel, URLs: []string{"https://b%C3%BCcher.example./a"}}, aLabel, []string{"/a"}, "", ""},
		{"a-label url, u-label host", Request{Host: "bücher.example", URLs: []string{"http://xn--bcher-kva.example/a"}}, aLabel, []string{"/a"}, "", ""},
		{"u-label prefix and keys", Request{Host: "bücher.example", Prefixes: []string{"/p"}, Keys: []string{"k"}}, aLabel, nil, "", ""},
		{"other u-label url", Request{Host: "bücher.example", URLs: []string{"https://bucher.example/a"}}, "", nil, "urls[0]", "bucher.example"},
		{"disallowed code point", Request{Host: "b\u2028ücher.example", All: true}, "", nil, "host", `"b\u2028ücher.example"`},
		{"bidi rule", Request{Host: "a\u05d0.example", All: true}, "", nil, "host", "a\u05d0.example"},
		{"joiner", Request{Host: "a\u200db.example", All: true}, "", nil, "host", `"a\u200db.example"`},
		{"maps to an empty label", Request{Host: "\u00ad.example", All: true}, "", nil, "host", `"\u00ad.example" is not a valid internationalised hostname`},
		{"invalid url host", Request{Host: aLabel, URLs: []string{"https://a\u05d0.example/a"}}, "", nil, "urls[0]", "a\u05d0.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := tt.req.Messages("alice", time.Now())
			if tt.wantField != "" {
				var fe *wire.FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField || !strings.Contains(err.Error(), tt.wantIn) {
					t.Fatalf("Messages() error = %v, want a field error on %q naming %q", err, tt.wantField, tt.wantIn)
				}
				return
			}
			if err != nil {
				t.Fatalf("Messages() error = %v, want nil", err)
			}
			for _, m := range msgs {
				if m.Host != tt.wantHost {
					t.Errorf("message %s host = %q, want %q", m.Kind, m.Host, tt.wantHost)
				}
				if m.Kind == KindURL && !slices.Equal(m.Values, tt.wantURLs) {
					t.Errorf("message url values = %q, want %q", m.Values, tt.wantURLs)
				}
				if err := m.Validate(); err != nil {
					t.Errorf("message %s Validate() = %v, want nil", m.Kind, err)
				}
			}
		})
	}
}
