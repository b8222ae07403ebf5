package origin

import (
	"net/url"
	"testing"
)

// FuzzParseParams checks that any query either parses into values within the documented bounds
// that can be sent as headers, or is refused with an error; never a panic.
func FuzzParseParams(f *testing.F) {
	for _, s := range []string{
		"", "size=10", "size=-1", "cc=max-age%3D60&sk=a+b", "vary=Accept,X-A", "vary=a%20b",
		"expires=-30&lm=5", "etag=0", "status=503&delay=1s&stall=2ms", "ct=%0A", "size=67108865", "size=1073741824&norange=1", "norange=2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		p, err := ParseParams(q)
		if err != nil {
			return
		}
		if p.Size < 0 || p.Size > MaxSize {
			t.Errorf("ParseParams(%q).Size = %d, want 0..%d", raw, p.Size, MaxSize)
		}
		if p.Status < 200 || p.Status > 599 {
			t.Errorf("ParseParams(%q).Status = %d, want 200..599", raw, p.Status)
		}
		if p.Delay < 0 || p.Delay > maxWait || p.Stall < 0 || p.Stall > maxWait {
			t.Errorf("ParseParams(%q) delay %v stall %v, want 0..%v", raw, p.Delay, p.Stall, maxWait)
		}
		for _, v := range []string{p.CacheControl, p.CDNCacheControl, p.SurrogateControl, p.SurrogateKeys,
			p.CacheTag, p.CacheGroups, p.ContentType, p.Location} {
			if !validHeaderValue(v) {
				t.Errorf("ParseParams(%q) accepted header value %q", raw, v)
			}
		}
		for _, v := range p.Vary {
			if !validToken(v) {
				t.Errorf("ParseParams(%q) accepted Vary field %q", raw, v)
			}
		}
	})
}

// FuzzParseFault checks that POST /_fault bodies either parse into a valid fault or are refused.
func FuzzParseFault(f *testing.F) {
	for _, s := range []string{
		`{"path":"/x","status":503}`, `{"path":"","delay":"2s","stall":"1s"}`, `{"drop":true}`,
		`{"truncate":true,"path":"/a/b"}`, `{"path":"x"}`, `{}{}`, `[]`, `{"delay":"-1s"}`,
		`{"path":"/big","bump_after":1048576}`, `{"bump_after":1}`, `{"path":"/x","bump_after":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path, fault, err := ParseFault(data)
		if err != nil {
			return
		}
		if path != "" && (path[0] != '/' || isControlPath(path)) {
			t.Errorf("ParseFault(%q) path = %q, want empty or an object path", data, path)
		}
		if fault.Status != 0 && (fault.Status < 200 || fault.Status > 599) {
			t.Errorf("ParseFault(%q) status = %d", data, fault.Status)
		}
		if fault.BumpAfter < 0 || fault.BumpAfter > 0 && path == "" {
			t.Errorf("ParseFault(%q) bump_after = %d for path %q, want 0, or positive with a path", data, fault.BumpAfter, path)
		}
		if fault.Delay < 0 || fault.Delay > maxWait || fault.Stall < 0 || fault.Stall > maxWait {
			t.Errorf("ParseFault(%q) delay %v stall %v, want 0..%v", data, fault.Delay, fault.Stall, maxWait)
		}
	})
}
