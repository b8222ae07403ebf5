package httpcache

import (
	"testing"
	"time"
)

func TestStatusString(t *testing.T) {
	tests := []struct {
		name string
		s    Status
		want string
	}{
		{"hit with ttl", Status{Cache: "meridian-lon-1", Hit: true, TTL: 118*time.Second + 900*time.Millisecond, HasTTL: true},
			"meridian-lon-1; hit; ttl=118"},
		{"miss stored collapsed", Status{Cache: "meridian-lon-1", Fwd: "miss", FwdStatus: 200, Stored: true, Collapsed: true, Detail: "origin"},
			"meridian-lon-1; fwd=miss; fwd-status=200; stored; collapsed; detail=origin"},
		{"stale negative ttl", Status{Cache: "meridian-lon-1", Hit: true, TTL: -30 * time.Second, HasTTL: true, Detail: "stale-if-error"},
			"meridian-lon-1; hit; ttl=-30; detail=stale-if-error"},
		{"hit never says fwd (stale-while-revalidate)", Status{Cache: "c", Hit: true, Fwd: "stale", TTL: -5 * time.Second, HasTTL: true, Detail: "stale-while-revalidate"},
			"c; hit; ttl=-5; detail=stale-while-revalidate"},
		{"zero ttl emitted when HasTTL", Status{Cache: "c", Hit: true, HasTTL: true}, "c; hit; ttl=0"},
		{"ttl omitted without HasTTL", Status{Cache: "c", Hit: true, TTL: time.Minute}, "c; hit"},
		{"fwd-status without fwd", Status{Cache: "c", FwdStatus: 304}, "c; fwd-status=304"},
		{"key as string", Status{Cache: "c", Fwd: "uri-miss", Key: `example.com/a?q="x"`},
			`c; fwd=uri-miss; key="example.com/a?q=\"x\""`},
		{"key with non-ascii", Status{Cache: "c", Key: "h/caf\xc3\xa9"}, `c; key="h/caf%C3%A9"`},
		{"cache name not a token", Status{Cache: "Meridian Edge 1", Hit: true}, `"Meridian Edge 1"; hit`},
		{"cache name starting with digit", Status{Cache: "1edge"}, `"1edge"`},
		{"empty cache name", Status{Hit: true}, `""; hit`},
		{"detail as string", Status{Cache: "c", Detail: "peer 10.0.0.1"}, `c; detail="peer 10.0.0.1"`},
		{"invalid fwd omitted", Status{Cache: "c", Fwd: "not a token"}, "c"},
		{"protocol", Status{Cache: "c", Hit: true, Proto: "h3"}, "c; hit; proto=h3"},
		{"protocol http/1.1", Status{Cache: "c", Hit: true, Proto: "http/1.1"}, "c; hit; proto=http/1.1"},
		{"huge ttl clamped", Status{Cache: "c", TTL: time.Duration(1<<63 - 1), HasTTL: true}, "c; ttl=9223372036"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.String(); got != tt.want {
				t.Errorf("%+v.String() = %q, want %q", tt.s, got, tt.want)
			}
			// Every serialisation is a valid Structured Fields list.
			if _, ok := ParseStringList([]string{tt.s.String()}); !ok {
				t.Errorf("%q is not a valid Structured Fields list", tt.s.String())
			}
		})
	}
}

func TestAppendStatus(t *testing.T) {
	s := Status{Cache: "meridian-lon-1", Hit: true, TTL: time.Minute, HasTTL: true}
	tests := []struct {
		name, upstream, want string
	}{
		{"no upstream", "", "meridian-lon-1; hit; ttl=60"},
		{"blank upstream", "  ", "meridian-lon-1; hit; ttl=60"},
		{"after origin cache", "OriginCache; fwd=uri-miss; stored", "OriginCache; fwd=uri-miss; stored, meridian-lon-1; hit; ttl=60"},
		{"trailing comma trimmed", "shield; hit,", "shield; hit, meridian-lon-1; hit; ttl=60"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AppendStatus(tt.upstream, s); got != tt.want {
				t.Errorf("AppendStatus(%q) = %q, want %q", tt.upstream, got, tt.want)
			}
		})
	}
}
