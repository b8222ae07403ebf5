package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/fleet"
	"github.com/meridian-cdn/meridian/internal/natsauth"
	"github.com/meridian-cdn/meridian/internal/natstest"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

func TestPurgeAPI(t *testing.T) {
	f := startPurgeFleet(t)
	ts, nodes := f.ts, f.nodes
	const long = "max-age=600"
	type object struct {
		host, path string
		hdr        []string
	}
	tests := []struct {
		name   string
		req    purge.Request
		purged []object // hard-purged: a miss on every node afterwards
		kept   []object // still a hit on every node
	}{
		{
			name: "url with its Vary variants",
			req:  purge.Request{Host: hostA, URLs: []string{objPath("/u/v", "cc", long, "vary", "Accept-Language")}},
			purged: []object{
				{hostA, objPath("/u/v", "cc", long, "vary", "Accept-Language"), []string{"Accept-Language", "en"}},
				{hostA, objPath("/u/v", "cc", long, "vary", "Accept-Language"), []string{"Accept-Language", "de"}},
			},
			kept: []object{
				{hostA, objPath("/u/v", "cc", long, "vary", "Accept-Language", "x", "1"), []string{"Accept-Language", "en"}},
				{hostB, objPath("/u/v", "cc", long, "vary", "Accept-Language"), []string{"Accept-Language", "en"}}, // other host
			},
		},
		{
			name:   "absolute url",
			req:    purge.Request{Host: hostA, URLs: []string{"https://www.example.com" + objPath("/u/abs", "cc", long)}},
			purged: []object{{hostA, objPath("/u/abs", "cc", long), nil}},
			kept:   []object{{hostB, objPath("/u/abs", "cc", long), nil}},
		},
		{
			// Fully qualified: the edge serves www.example.com. as www.example.com.
			name:   "absolute url, host with a trailing dot",
			req:    purge.Request{Host: hostA, URLs: []string{"https://www.example.com.:443" + objPath("/u/fqdn", "cc", long)}},
			purged: []object{{hostA, objPath("/u/fqdn", "cc", long), nil}},
			kept:   []object{{hostB, objPath("/u/fqdn", "cc", long), nil}},
		},
		{
			// As typed (or copied from an address bar): clients send the query's UTF-8
			// percent-encoded, as they do the path's.
			name:   "url with a non-ASCII query",
			req:    purge.Request{Host: hostA, URLs: []string{strings.Replace(objPath("/u/q", "cc", long, "q", "é"), "%C3%A9", "é", 1)}},
			purged: []object{{hostA, objPath("/u/q", "cc", long, "q", "é"), nil}},
			kept:   []object{{hostB, objPath("/u/q", "cc", long, "q", "é"), nil}},
		},
		{
			name:   "absolute url with a non-ASCII query",
			req:    purge.Request{Host: hostA, URLs: []string{"https://www.example.com" + strings.Replace(objPath("/u/qa", "cc", long, "q", "é"), "%C3%A9", "é", 1)}},
			purged: []object{{hostA, objPath("/u/qa", "cc", long, "q", "é"), nil}},
		},
		{
			name:   "prefix matches whole segments",
			req:    purge.Request{Host: hostA, Prefixes: []string{"/a"}},
			purged: []object{{hostA, objPath("/a", "cc", long), nil}, {hostA, objPath("/a/b/c", "cc", long), nil}},
			kept:   []object{{hostA, objPath("/ab", "cc", long), nil}, {hostB, objPath("/a/b/c", "cc", long), nil}},
		},
		{
			name: "keys from Surrogate-Key, Cache-Tag and Cache-Groups",
			req:  purge.Request{Host: hostA, Keys: []string{"blue", "t1", "g1"}},
			purged: []object{
				{hostA, objPath("/k/sk", "cc", long, "sk", "red blue"), nil},
				{hostA, objPath("/k/tag", "cc", long, "tag", "t0,t1"), nil},
				{hostA, objPath("/k/groups", "cc", long, "groups", `"g1", "g2"`), nil},
			},
			kept: []object{
				{hostA, objPath("/k/green", "cc", long, "sk", "green"), nil},
				{hostB, objPath("/k/sk", "cc", long, "sk", "red blue"), nil},
			},
		},
		// An internationalised host named in Unicode purges what clients fetched under its
		// ASCII form, the only one they send in Host.
		{
			name:   "absolute url with a unicode host",
			req:    purge.Request{Host: "bücher.example", URLs: []string{"https://bücher.example" + objPath("/u/idn", "cc", long)}},
			purged: []object{{hostIDN, objPath("/u/idn", "cc", long), nil}},
			kept:   []object{{hostA, objPath("/u/idn", "cc", long), nil}},
		},
		{
			name:   "absolute url with a unicode host, ascii host field",
			req:    purge.Request{Host: hostIDN, URLs: []string{"https://BÜCHER.example:8443" + objPath("/u/idn2", "cc", long)}},
			purged: []object{{hostIDN, objPath("/u/idn2", "cc", long), nil}},
		},
		{
			name:   "prefix of a unicode host",
			req:    purge.Request{Host: "Bücher.Example.", Prefixes: []string{"/p"}},
			purged: []object{{hostIDN, objPath("/p/1", "cc", long), nil}},
			kept:   []object{{hostIDN, objPath("/q/1", "cc", long), nil}, {hostA, objPath("/p/1", "cc", long), nil}},
		},
		{
			name:   "keys of a unicode host",
			req:    purge.Request{Host: "bücher.example", Keys: []string{"idn"}},
			purged: []object{{hostIDN, objPath("/k/idn", "cc", long, "sk", "idn"), nil}},
			kept:   []object{{hostA, objPath("/k/idn", "cc", long, "sk", "idn"), nil}},
		},
		{
			name:   "all of a unicode host",
			req:    purge.Request{Host: "bücher.example", All: true},
			purged: []object{{hostIDN, objPath("/all/idn", "cc", long), nil}},
			kept:   []object{{hostA, objPath("/all/idn", "cc", long), nil}},
		},
		{
			name:   "all of one host",
			req:    purge.Request{Host: hostC, All: true},
			purged: []object{{hostC, objPath("/x", "cc", long), nil}, {hostC, objPath("/y/z", "cc", long), nil}},
			kept:   []object{{hostA, objPath("/x", "cc", long), nil}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, o := range append(append([]object{}, tt.purged...), tt.kept...) {
				warm(t, nodes, o.host, o.path, o.hdr...)
			}
			// The origin moves on, so that serving the old version would show.
			version := map[string]int{}
			for _, o := range tt.purged {
				p, _, _ := strings.Cut(o.path, "?")
				if _, ok := version[p]; !ok {
					version[p] = f.origin.Bump(p)
				}
			}
			body, _ := json.Marshal(tt.req)
			code, resp, b := postPurge(t, ts, tokPurger, "10s", body)
			f.checkComplete(t, code, resp, b)
			// Rule 1 through the API: once the answer says acked, no node serves the old object.
			// (A node may hold the new one already: a peer in its PoP filled it.)
			for _, n := range nodes {
				for _, o := range tt.kept {
					if r := get(t, n, o.host, o.path, o.hdr...); !isHit(r.cs) {
						t.Errorf("%s %s%s %v not purged: Cache-Status %q, want a hit", n.Name(), o.host, o.path, o.hdr, r.cs)
					}
				}
				for _, o := range tt.purged {
					p, _, _ := strings.Cut(o.path, "?")
					want := fmt.Sprintf("@v%d:", version[p]) // the body repeats "<path>[|vary]@v<version>:"
					if r := get(t, n, o.host, o.path, o.hdr...); !strings.Contains(r.body, want) {
						t.Errorf("%s %s%s %v after purge: body %.40q (Cache-Status %q), want version %q", n.Name(), o.host, o.path, o.hdr, r.body, r.cs, want)
					}
				}
			}
		})
	}

	t.Run("soft versus hard", func(t *testing.T) {
		// The first node asked in each PoP shows the difference; the others may already
		// hold the new version that a peer in their PoP fetched for it.
		first := []*edge.Node{nodes[0], nodes[2]}
		swr := "max-age=600, stale-while-revalidate=60"
		for _, c := range []struct {
			name string
			soft bool
			want string
		}{{"/soft", true, "detail=stale-while-revalidate"}, {"/hard", false, "fwd=miss"}} {
			path := objPath(c.name, "cc", swr)
			warm(t, nodes, hostA, path)
			old := get(t, nodes[0], hostA, path).body[:12]
			f.origin.Bump(c.name)
			body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{path}, Soft: c.soft})
			code, resp, b := postPurge(t, ts, tokPurger, "10s", body)
			f.checkComplete(t, code, resp, b)
			if resp.Purges[0].Soft != c.soft {
				t.Errorf("receipt soft = %v, want %v", resp.Purges[0].Soft, c.soft)
			}
			for _, n := range first {
				if r := get(t, n, hostA, path); !strings.Contains(r.cs, c.want) {
					t.Errorf("%s %s after soft=%v purge: Cache-Status %q, want %q", n.Name(), c.name, c.soft, r.cs, c.want)
				}
			}
			for _, n := range nodes {
				if r := get(t, n, hostA, path); isHit(r.cs) && strings.HasPrefix(r.body, old) {
					t.Errorf("%s serves the old %s as a fresh hit after soft=%v purge (Cache-Status %q)", n.Name(), c.name, c.soft, r.cs)
				}
			}
		}
	})

	t.Run("receipt later", func(t *testing.T) {
		body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{"/later"}, Keys: []string{"later"}})
		code, posted, b := postPurge(t, ts, tokPurger, "10s", body)
		f.checkComplete(t, code, posted, b)
		code, b = ts.do(t, "GET", "/v1/purges/"+posted.ID, tokPurger, nil)
		var got purge.Response
		if err := json.Unmarshal(b, &got); code != http.StatusOK || err != nil {
			t.Fatalf("GET /v1/purges/%s = %d %s, want 200", posted.ID, code, b)
		}
		f.checkComplete(t, code, got, b)
		if got.ID != posted.ID || len(got.Purges) != 2 || got.Purges[0].Kind != purge.KindURL || got.Purges[1].Kind != purge.KindKey {
			t.Errorf("GET receipt id %q with %d purges, want %q with url and key", got.ID, len(got.Purges), posted.ID)
		}
		if !got.CompletedAt.Equal(*posted.CompletedAt) {
			t.Errorf("completed_at later = %v, at POST = %v", got.CompletedAt, posted.CompletedAt)
		}
		// A message id (with its kind) finds the request too.
		if code, _ := ts.do(t, "GET", "/v1/purges/"+posted.ID+"-key", tokPurger, nil); code != http.StatusOK {
			t.Errorf("GET by message id = %d, want 200", code)
		}
	})

	t.Run("no wait answers 202 at once", func(t *testing.T) {
		body, _ := json.Marshal(purge.Request{Host: hostA, Prefixes: []string{"/nowait"}})
		code, resp, b := postPurge(t, ts, tokPurger, "", body)
		if code != http.StatusAccepted || resp.ID == "" || len(resp.Purges) != 1 {
			t.Fatalf("POST without wait = %d %s, want 202 with a receipt", code, b)
		}
		if _, listed := ackedNodes(resp); len(listed) != len(f.names) {
			t.Errorf("receipt lists %d nodes, want all %d (pending ones too): %s", len(listed), len(f.names), b)
		}
		wait.For(t, 10*time.Second, "every node acked", func() bool {
			_, b := ts.do(t, "GET", "/v1/purges/"+resp.ID, tokPurger, nil)
			var r purge.Response
			return json.Unmarshal(b, &r) == nil && r.Complete
		})
	})

	t.Run("cli", func(t *testing.T) {
		cmd := purge.NewCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs([]string{"--api", ts.base, "--token", tokPurger, "--host", hostA, "--url", "/cli", "--key", "cli", "--wait", "10s"})
		if err := cmd.ExecuteContext(t.Context()); err != nil {
			t.Fatalf("meridian purge: %v\n%s", err, out.String())
		}
		got := out.String()
		if !strings.Contains(got, "complete in") {
			t.Errorf("output %q does not say complete", got)
		}
		for _, kind := range []string{"url", "key"} {
			for _, n := range f.names {
				pop, node, _ := strings.Cut(n, "/")
				if !containsRow(got, kind, pop, node) {
					t.Errorf("output lacks a %s row for %s:\n%s", kind, n, got)
				}
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		many := make([]string, purge.MaxValues+1)
		for i := range many {
			many[i] = fmt.Sprintf("/v%d", i)
		}
		manyBody, _ := json.Marshal(purge.Request{Host: hostA, URLs: many})
		// 700 URLs of 680 bytes fit the 1 MiB body but not one 1 MiB NATS message once
		// escaped ("é" becomes "%C3%A9"), each within the bound of 2,048 bytes even so.
		long := make([]string, 700)
		for i := range long {
			long[i] = fmt.Sprintf("/%d/%s", i, strings.Repeat("é", 339))
		}
		longBody, _ := json.Marshal(purge.Request{Host: hostA, URLs: long})
		big := []byte(`{"host":"www.example.com","keys":["` + strings.Repeat("k", DefaultMaxBodyBytes) + `"]}`)
		tests := []struct {
			name      string
			wait      string
			body      []byte
			wantCode  int
			wantField string
		}{
			{"unknown host", "", []byte(`{"host":"nowhere.example.com","all":true}`), 400, "host"},
			{"invalid host", "", []byte(`{"host":"bad host","all":true}`), 400, "host"},
			{"url of another host", "", []byte(`{"host":"www.example.com","urls":["https://other.example.com/x"]}`), 400, "urls[0]"},
			{"1,001 values", "", manyBody, 400, "urls"},
			{"too large for one NATS message", "", longBody, 400, "urls"},
			{"nothing to purge", "", []byte(`{"host":"www.example.com"}`), 400, "urls"},
			{"all with values", "", []byte(`{"host":"www.example.com","all":true,"keys":["k"]}`), 400, "all"},
			{"bad prefix", "", []byte(`{"host":"www.example.com","prefixes":["a/b"]}`), 400, "prefixes[0]"},
			// The edge answers 400 to a path with a dot segment and stores none: acked, such a
			// purge would match nothing, while the operator meant the path it resolves to.
			{"url with a dot segment", "", []byte(`{"host":"www.example.com","urls":["/ok","/a/./b"]}`), 400, "urls[1]"},
			{"url with a dot-dot segment", "", []byte(`{"host":"www.example.com","urls":["/a/../b"]}`), 400, "urls[0]"},
			{"url with an encoded dot-dot segment", "", []byte(`{"host":"www.example.com","urls":["/a/%2e%2E/b?x"]}`), 400, "urls[0]"},
			{"absolute url with a dot segment", "", []byte(`{"host":"www.example.com","urls":["https://www.example.com/a/."]}`), 400, "urls[0]"},
			{"prefix with a dot-dot segment", "", []byte(`{"host":"www.example.com","prefixes":["/static/.."]}`), 400, "prefixes[0]"},
			{"malformed json", "", []byte(`{"host":"www.example.com",`), 400, ""},
			{"unknown field", "", []byte(`{"host":"www.example.com","all":true,"everything":true}`), 400, "everything"},
			{"wrong type", "", []byte(`{"host":"www.example.com","urls":"/x"}`), 400, "urls"},
			{"empty body", "", nil, 400, ""},
			{"oversized body", "", big, 413, ""},
			{"bad wait", "soon", []byte(`{"host":"www.example.com","all":true}`), 400, "wait"},
			{"wait too long", "31s", []byte(`{"host":"www.example.com","all":true}`), 400, "wait"},
			{"negative wait", "-1s", []byte(`{"host":"www.example.com","all":true}`), 400, "wait"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, _, b := postPurge(t, ts, tokPurger, tt.wait, tt.body)
				var e APIError
				if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
					t.Fatalf("answer %q is not a JSON error: %v", b, err)
				}
				if code != tt.wantCode || e.Field != tt.wantField {
					t.Errorf("POST = %d field %q (%s), want %d field %q", code, e.Field, e.Error, tt.wantCode, tt.wantField)
				}
			})
		}
		// Names IDNA (UTS #46) refuses, each named in the error: a code point no hostname may
		// hold, a label mixing left-to-right and right-to-left letters (the bidi rule).
		for _, tt := range []struct {
			name, body, wantField, wantMsg string
		}{
			{"disallowed code point in a unicode host", `{"host":"b\u2028ücher.example","all":true}`, "host", `"b\u2028ücher.example" is not a valid internationalised hostname`},
			{"bidi rule broken in a unicode host", `{"host":"aא.example","all":true}`, "host", `"aא.example" is not a valid internationalised hostname`},
			{"url with an invalid unicode host", `{"host":"xn--bcher-kva.example","urls":["https://aא.example/x"]}`, "urls[0]", `"aא.example" is not a valid internationalised hostname`},
			{"url of another unicode host", `{"host":"bücher.example","urls":["https://bucher.example/x"]}`, "urls[0]", "does not belong to host xn--bcher-kva.example"},
			// Within the bound as given, over it as nodes get it (each "é" is "%C3%A9"): before,
			// 503 from the publish, naming "values[0]", after the request's other kinds were
			// published.
			{"url too long once percent-encoded", `{"host":"www.example.com","urls":["/` + strings.Repeat("é", 1000) + `"]}`, "urls[0]", "6001 bytes percent-encoded"},
			{"prefix too long once percent-encoded", `{"host":"www.example.com","urls":["/ok"],"prefixes":["/` + strings.Repeat("é", 1000) + `"]}`, "prefixes[0]", "6001 bytes percent-encoded"},
			// "//…" is a path, but this one also reads as a URL of the host: the operator says which.
			{"scheme-relative url of the host", `{"host":"www.example.com","urls":["//WWW.example.com/x"]}`, "urls[0]", "is ambiguous"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				code, _, b := postPurge(t, ts, tokPurger, "", []byte(tt.body))
				var e APIError
				if json.Unmarshal(b, &e) != nil || code != http.StatusBadRequest || e.Field != tt.wantField || !strings.Contains(e.Error, tt.wantMsg) {
					t.Errorf("POST %s = %d %s, want 400 field %q with %q", tt.body, code, b, tt.wantField, tt.wantMsg)
				}
			})
		}
	})

	t.Run("auth", func(t *testing.T) {
		body := []byte(`{"host":"www.example.com","all":true}`)
		tests := []struct {
			name, method, path, token string
			want                      int
		}{
			{"post without token", "POST", "/v1/purge", "", 401},
			{"post with read scope", "POST", "/v1/purge", tokReader, 403},
			{"post with config scope", "POST", "/v1/purge", tokConfigurer, 403},
			{"get without token", "GET", "/v1/purges/x", "", 401},
			{"get with read scope", "GET", "/v1/purges/x", tokReader, 403},
			{"get unknown id", "GET", "/v1/purges/01KAPZ3W6N8Q1V2R3S4T5V6W7X", tokPurger, 404},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var b []byte
				if tt.method == "POST" {
					b = body
				}
				code, got := ts.do(t, tt.method, tt.path, tt.token, b)
				var e APIError
				if code != tt.want || json.Unmarshal(got, &e) != nil || e.Error == "" {
					t.Errorf("%s %s = %d %s, want %d with a JSON error", tt.method, tt.path, code, got, tt.want)
				}
			})
		}
	})
}

// containsRow reports whether the CLI's table has a row with kind, pop and node, acked.
func containsRow(out, kind, pop, node string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// KIND SEQ POP POP-MS NODE ACK-MS HITS
		if len(f) == 7 && f[0] == kind && f[2] == pop && f[4] == node && f[5] != "pending" {
			return true
		}
	}
	return false
}

func TestPurgeRateLimit(t *testing.T) {
	// One request per 100 s refills nothing during the test: the third request is refused.
	ts := startServer(t, Config{PurgeRate: 0.01, PurgeBurst: 2})
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"}); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"host":"www.example.com","keys":["k"]}`)
	for i := range 2 {
		if code, _, b := postPurge(t, ts, tokPurger, "", body); code != http.StatusAccepted {
			t.Fatalf("purge %d within the burst = %d %s, want 202", i, code, b)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", ts.base+"/v1/purge", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tokPurger)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e APIError
	if resp.StatusCode != http.StatusTooManyRequests || json.Unmarshal(b, &e) != nil || e.Error == "" {
		t.Fatalf("third purge = %d %s, want 429 with a JSON error", resp.StatusCode, b)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 100 {
		t.Errorf("Retry-After = %q, want whole seconds from 1 to 100", resp.Header.Get("Retry-After"))
	}
	// The limit is per token: another token still purges.
	if code, _, b := postPurge(t, ts, tokAdmin, "", body); code != http.StatusAccepted {
		t.Errorf("purge with another token = %d %s, want 202", code, b)
	}
}

// TestPurgeOversizedIsRefusedWhole: a request whose message would be above NATS's max_payload
// only once json.Marshal escaped it ('<', '>' and '&' take six bytes each) is a 400 naming
// the field, and none of its messages is published, not even those before the oversized one:
// a client that retries would purge them again under a new id.
func TestPurgeOversizedIsRefusedWhole(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1})
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	// n values of s repeated to purge.MaxValueBytes: 250 are about 512 KB raw, 3 MB escaped.
	values := func(n int, s string) []string {
		v := make([]string, n)
		for i := range v {
			v[i] = strings.Repeat(s, purge.MaxValueBytes/len(s))
		}
		return v
	}
	query := values(250, "a&")
	for i := range query {
		query[i] = "/q?" + query[i][3:]
	}
	tests := []struct {
		name      string
		req       purge.Request
		wantCode  int
		wantField string
		wantMsgs  uint64 // messages the request adds to the stream
	}{
		{"keys of '<' after a url", purge.Request{Host: hostA, URLs: []string{"/a"}, Keys: values(250, "<")}, 400, "keys", 0},
		{"keys of '>' after urls and prefixes", purge.Request{Host: hostA, URLs: []string{"/a"}, Prefixes: []string{"/p"}, Keys: values(250, ">")}, 400, "keys", 0},
		{"urls with '&' in the query", purge.Request{Host: hostA, URLs: query, Keys: []string{"k"}}, 400, "urls", 0},
		{"escaped keys that fit", purge.Request{Host: hostA, URLs: []string{"/a"}, Keys: values(80, "<")}, 202, "", 2},
	}
	streamMsgs := func() uint64 {
		t.Helper()
		st, err := ts.JetStream().Stream(t.Context(), purge.StreamName(""))
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Msgs
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// As a client in any other language sends it: '<', '>' and '&' unescaped.
			var body bytes.Buffer
			enc := json.NewEncoder(&body)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(tt.req); err != nil {
				t.Fatal(err)
			}
			before := streamMsgs()
			code, b := ts.do(t, "POST", "/v1/purge", tokPurger, body.Bytes())
			var e APIError
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("answer %.200s is not JSON: %v", b, err)
			}
			if code != tt.wantCode || e.Field != tt.wantField {
				t.Errorf("POST %d-byte body = %d field %q (%.200s), want %d field %q", body.Len(), code, e.Field, e.Error, tt.wantCode, tt.wantField)
			}
			if got := streamMsgs() - before; got != tt.wantMsgs {
				t.Errorf("the request added %d messages to the stream, want %d", got, tt.wantMsgs)
			}
		})
	}
}

// TestMessageBoundCoversEncoding: messageBound, which spares ordinary purges an encoding to
// measure them, is never below what json.Marshal writes, whatever the strings hold.
func TestMessageBoundCoversEncoding(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	long := purge.Message{
		ID: strings.Repeat("<", 128), Seq: math.MaxUint64, Host: strings.Repeat("&", 253), Kind: purge.KindKey, Soft: true,
		IssuedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(23*3600+59*60))),
		Issuer:   "\"\\\x00\u2028<>&é",
	}
	tests := []struct {
		name string
		m    purge.Message
	}{
		{"every byte", purge.Message{ID: "x", Host: hostA, Kind: purge.KindKey, Values: []string{string(all)}}},
		{"escapes", purge.Message{ID: "x", Host: hostA, Kind: purge.KindURL, Values: []string{"/a?b&c<d>e", "\u2028\u2029", "\xff\xfe", `"\`, "\n\t"}}},
		{"longest fields", long},
		{"no values", purge.Message{ID: "x", Host: hostA, Kind: purge.KindAll, IssuedAt: time.Now()}},
	}
	for _, tt := range tests {
		data, err := json.Marshal(tt.m)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if b := messageBound(tt.m); b < len(data) {
			t.Errorf("%s: messageBound = %d, below the %d bytes json.Marshal writes", tt.name, b, len(data))
		}
	}
}

// TestPurgeWaitListsEveryLiveNode is rule 4: ?wait reports every live node and omits none. One
// edge is cut off from NATS (its registration stays live until the heartbeat TTL) and one node
// registers without consuming purges; both must be reported pending. When the cut edge comes
// back it replays the purge (rule 3), and the receipt read later shows its ack.
func TestPurgeWaitListsEveryLiveNode(t *testing.T) {
	ts := startServer(t, Config{PurgeRate: -1, HeartbeatTTL: 10 * time.Second})
	_, addr := startOrigin(t, "127.0.6.10")
	cut := natstest.NewCutter(t, "127.0.6.50", ts.NATSURL())
	aliasNATS(t, cut.URL(), ts.NATSURL())
	live := startEdge(t, "127.0.6.20", "ams", "n1", ts.NATSURL())
	away := startEdge(t, "127.0.6.21", "ams", "n2", cut.URL())
	runRegistrar(t, ts.NATSURL(), wire.Node{PoP: "fra", ID: "silent", HTTPAddr: "127.0.6.22:80"}, 200*time.Millisecond)
	wait.For(t, 10*time.Second, "three nodes in the control's fleet view", func() bool {
		return len(ts.Fleet().Nodes()) == 3
	})
	nodes := []*edge.Node{live, away}
	putHosts(t, ts, addr, nodes, hostA)
	path := objPath("/r4", "cc", "max-age=600")
	warm(t, nodes, hostA, path)

	cut.Cut()
	body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{path}})
	// The wait always runs out (two nodes cannot ack); it must be long enough for the live
	// node's ack on a busy machine.
	code, resp, b := postPurge(t, ts, tokPurger, "3s", body)
	if code != http.StatusAccepted || resp.Complete {
		t.Fatalf("purge with a node cut off = %d complete=%v, want 202 incomplete: %s", code, resp.Complete, b)
	}
	acked, listed := ackedNodes(resp)
	for n, wantAcked := range map[string]bool{"ams/n1": true, "ams/n2": false, "fra/silent": false} {
		if !listed[n] || acked[n] != wantAcked {
			t.Errorf("receipt: %s listed=%v acked=%v, want listed and acked=%v: %s", n, listed[n], acked[n], wantAcked, b)
		}
	}
	pending := map[string]bool{}
	for _, p := range resp.Purges[0].Pending {
		pending[p.PoP+"/"+p.Node] = true
	}
	if len(pending) != 2 || !pending["ams/n2"] || !pending["fra/silent"] {
		t.Errorf("pending = %v, want ams/n2 and fra/silent", resp.Purges[0].Pending)
	}
	for _, p := range resp.Purges[0].PoPs {
		if p.Complete {
			t.Errorf("PoP %s complete, want incomplete (each has a pending node)", p.PoP)
		}
	}

	cut.Restore()
	wait.For(t, 30*time.Second, "the cut edge's ack after it reconnected", func() bool {
		_, b := ts.do(t, "GET", "/v1/purges/"+resp.ID, tokPurger, nil)
		var r purge.Response
		if json.Unmarshal(b, &r) != nil {
			return false
		}
		acked, listed := ackedNodes(r)
		return acked["ams/n2"] && !acked["fra/silent"] && listed["fra/silent"] && !r.Complete
	})
	for _, n := range nodes {
		if r := get(t, n, hostA, path); isHit(r.cs) {
			t.Errorf("%s serves the purged object from cache after the purge (Cache-Status %q)", n.Name(), r.cs)
		}
	}
}

func TestParseWait(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"0s", 0, false},
		{"2s", 2 * time.Second, false},
		{"500ms", 500 * time.Millisecond, false},
		{"30s", MaxPurgeWait, false},
		{"30.001s", 0, true},
		{"-1ms", 0, true},
		{"2", 0, true},
		{"soon", 0, true},
		{"1h", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseWait(tt.in)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("parseWait(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// FuzzParseWait: the wait parameter comes from the query string; any value is either a
// duration within 0 to MaxPurgeWait or an error.
func FuzzParseWait(f *testing.F) {
	for _, s := range []string{"", "2s", "30s", "-1s", "1e9h", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseWait(s)
		if err != nil && d != 0 {
			t.Errorf("parseWait(%q) = %v with error %v, want 0", s, d, err)
		}
		if d < 0 || d > MaxPurgeWait {
			t.Errorf("parseWait(%q) = %v, outside 0 to %v", s, d, MaxPurgeWait)
		}
	})
}

// TestPurgeDurationMetric: every purge is timed to its last ack in
// meridian_control_purge_duration_seconds, whether or not the caller waited.
func TestPurgeDurationMetric(t *testing.T) {
	f := startPurgeFleet(t)
	body := []byte(`{"host":"www.example.com","keys":["metric"]}`)
	if code, _, b := postPurge(t, f.ts, tokPurger, "", body); code != http.StatusAccepted {
		t.Fatalf("purge = %d %s", code, b)
	}
	wait.For(t, 10*time.Second, "the purge timed in the metrics", func() bool {
		mfs, err := f.ts.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "meridian_control_purge_duration_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount() == 1
			}
		}
		return false
	})
}

// startRegistrar registers n through its own NATS connection, as an edge would (but acks no
// purge), until the returned stop is called, which makes it leave the registry, or the test
// ends.
func startRegistrar(t *testing.T, url string, n wire.Node) (stop func()) {
	t.Helper()
	_, js := connectAs(t, url, natsauth.Edge(n.PoP, n.ID))
	r, err := fleet.NewRegistrar(fleet.RegistrarConfig{JS: js, Node: n, Interval: 200 * time.Millisecond,
		Load: func() wire.LoadReport { return wire.LoadReport{Healthy: true} }})
	if err != nil {
		t.Fatalf("NewRegistrar: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// nodeStatuses maps "pop/node" to its status across a response's receipts (the first seen).
func nodeStatuses(resp purge.Response) map[string]string {
	out := map[string]string{}
	for _, rc := range resp.Purges {
		for _, p := range rc.PoPs {
			for _, n := range p.Nodes {
				if _, ok := out[p.PoP+"/"+n.Node]; !ok {
					out[p.PoP+"/"+n.Node] = n.Status
				}
			}
		}
	}
	return out
}

// twoNodeFleet is a control without a purge rate limit, serving hostA, with two nodes (ams/n1
// and fra/n1) registered in its fleet view; stopAms and stopFra stop each one's registrar. It
// starts past the grace, whose receipts are held until it ends.
func twoNodeFleet(t *testing.T) (ts *testServer, stopAms, stopFra func()) {
	t.Helper()
	ts = startServer(t, Config{PurgeRate: -1}, pastStartGrace)
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"}); err != nil {
		t.Fatalf("PutHost: %v", err)
	}
	stopAms = startRegistrar(t, ts.NATSURL(), wire.Node{PoP: "ams", ID: "n1"})
	stopFra = startRegistrar(t, ts.NATSURL(), wire.Node{PoP: "fra", ID: "n1"})
	wait.For(t, 10*time.Second, "two nodes in the control's fleet view", func() bool {
		return len(ts.Fleet().Nodes()) == 2
	})
	return ts, stopAms, stopFra
}

// TestPurgeReceiptReportsUnreachable: every node registered when a purge was issued stays in its
// receipt; one that left the registry without acking reads unreachable and keeps the purge
// incomplete until an operator declares it gone (DELETE /v1/purges/{id}/unreachable).
func TestPurgeReceiptReportsUnreachable(t *testing.T) {
	ts, stopAms, stopFra := twoNodeFleet(t)
	body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{"/a"}, Keys: []string{"k"}})
	code, resp, b := postPurge(t, ts, tokPurger, "50ms", body)
	if code != http.StatusAccepted || resp.Complete {
		t.Fatalf("purge = %d complete=%v %s, want 202 incomplete (the nodes do not ack)", code, resp.Complete, b)
	}
	if got, want := nodeStatuses(resp), map[string]string{"ams/n1": purge.NodePending, "fra/n1": purge.NodePending}; !maps.Equal(got, want) {
		t.Fatalf("statuses = %v, want %v", got, want)
	}
	receipt := func(t *testing.T) purge.Response {
		t.Helper()
		code, b := ts.do(t, "GET", "/v1/purges/"+resp.ID, tokPurger, nil)
		var r purge.Response
		if code != http.StatusOK || json.Unmarshal(b, &r) != nil {
			t.Fatalf("GET /v1/purges/%s = %d %s", resp.ID, code, b)
		}
		return r
	}

	stopAms()
	wait.For(t, 10*time.Second, "ams/n1 unreachable in the receipt", func() bool {
		return nodeStatuses(receipt(t))["ams/n1"] == purge.NodeUnreachable
	})
	r := receipt(t)
	if r.Complete || len(r.Purges) != 2 {
		t.Fatalf("receipt complete %v with %d parts, want incomplete with 2", r.Complete, len(r.Purges))
	}
	for _, rc := range r.Purges {
		if want := []purge.NodeRef{{PoP: "ams", Node: "n1"}}; !slices.Equal(rc.Unreachable, want) || len(rc.Pending) != 2 {
			t.Errorf("%s: unreachable %v pending %v, want ams/n1 unreachable and both pending", rc.Kind, rc.Unreachable, rc.Pending)
		}
	}

	refused := []struct {
		name, path string
		want       int
	}{
		{"registered node", "/v1/purges/" + resp.ID + "/unreachable?node=fra/n1", http.StatusConflict},
		{"node not in the receipt", "/v1/purges/" + resp.ID + "/unreachable?node=lhr/n1", http.StatusNotFound},
		{"malformed node", "/v1/purges/" + resp.ID + "/unreachable?node=n1", http.StatusBadRequest},
		{"unknown purge", "/v1/purges/nope/unreachable", http.StatusNotFound},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			code, b := ts.do(t, "DELETE", tt.path, tokPurger, nil)
			var e APIError
			if code != tt.want || json.Unmarshal(b, &e) != nil || e.Error == "" {
				t.Errorf("DELETE %s = %d %s, want %d with a JSON error", tt.path, code, b, tt.want)
			}
		})
	}

	code, b = ts.do(t, "DELETE", "/v1/purges/"+resp.ID+"/unreachable", tokPurger, nil)
	if err := json.Unmarshal(b, &r); code != http.StatusOK || err != nil {
		t.Fatalf("DELETE unreachable = %d %s, want 200 with the receipt", code, b)
	}
	if got, want := nodeStatuses(r), map[string]string{"ams/n1": purge.NodeGone, "fra/n1": purge.NodePending}; !maps.Equal(got, want) || r.Complete {
		t.Errorf("after declaring ams/n1 gone: statuses %v complete %v, want %v and incomplete", got, r.Complete, want)
	}

	stopFra()
	wait.For(t, 10*time.Second, "fra/n1 unreachable in the receipt", func() bool {
		return nodeStatuses(receipt(t))["fra/n1"] == purge.NodeUnreachable
	})
	code, b = ts.do(t, "DELETE", "/v1/purges/"+resp.ID+"/unreachable?node=fra/n1", tokPurger, nil)
	if err := json.Unmarshal(b, &r); code != http.StatusOK || err != nil || !r.Complete || r.CompletedAt == nil {
		t.Fatalf("DELETE unreachable?node=fra/n1 = %d %s, want 200 and complete", code, b)
	}
	for _, rc := range r.Purges {
		if len(rc.Gone) != 2 || len(rc.Pending) != 0 {
			t.Errorf("%s: gone %v pending %v, want both gone and none pending", rc.Kind, rc.Gone, rc.Pending)
		}
	}
	if r := receipt(t); !r.Complete {
		t.Errorf("GET after both declared gone: complete = false, want true")
	}
}

// TestAcksDroppedMetric: a message on a node's ack subject that is no ack (here one that is not
// JSON, as a JetStream status message aimed there would be) is dropped and counted in
// meridian_control_purge_acks_dropped_total.
func TestAcksDroppedMetric(t *testing.T) {
	ts := startServer(t, Config{})
	<-ts.Ready()
	nc, _ := connectAs(t, ts.NATSURL(), natsauth.Edge("ams", "n1"))
	for range 2 {
		if err := nc.Publish(purge.AckSubject("", "ams", "n1"), []byte("not an ack")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "two dropped acks counted", func() bool {
		mfs, err := ts.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "meridian_control_purge_acks_dropped_total" {
				return mf.GetMetric()[0].GetCounter().GetValue() == 2
			}
		}
		return false
	})
}

// TestMisspeltQueryParametersAreRefused: a query parameter a route does not take, one it takes
// once given twice, or a query that does not parse (a ';' between pairs, which net/http's
// parser drops with the pair) is 400 naming it, and nothing is done. Ignoring it did the request
// as if it had not been given: DELETE .../unreachable?nodes=ams/n2 (for ?node=) declared every
// unreachable node gone, and POST /v1/purge?Wait=5s answered at once.
func TestMisspeltQueryParametersAreRefused(t *testing.T) {
	ts, stopAms, stopFra := twoNodeFleet(t)
	body, _ := json.Marshal(purge.Request{Host: hostA, URLs: []string{"/a"}})
	code, resp, b := postPurge(t, ts, tokPurger, "", body)
	if code != http.StatusAccepted {
		t.Fatalf("purge = %d %s, want 202", code, b)
	}
	stopAms()
	stopFra()
	wait.For(t, 10*time.Second, "both nodes unreachable in the receipt", func() bool {
		_, b := ts.do(t, "GET", "/v1/purges/"+resp.ID, tokPurger, nil)
		var r purge.Response
		return json.Unmarshal(b, &r) == nil && maps.Equal(nodeStatuses(r),
			map[string]string{"ams/n1": purge.NodeUnreachable, "fra/n1": purge.NodeUnreachable})
	})

	refused := []struct{ method, path, field string }{
		{"DELETE", "/v1/purges/" + resp.ID + "/unreachable?nodes=ams/n1", "nodes"},
		{"DELETE", "/v1/purges/" + resp.ID + "/unreachable?Node=ams/n1", "Node"},
		{"DELETE", "/v1/purges/" + resp.ID + "/unreachable?node=ams/n1;node=fra/n1", ""},
		{"POST", "/v1/purge?Wait=5s", "Wait"},
		{"POST", "/v1/purge?wait=0s&wait=5s", "wait"},
		{"POST", "/v1/peer-keys/rotate?grace_period=1h", "grace_period"},
		{"POST", "/v1/peer-keys/rotate?grace=1h&grace=1s", "grace"},
	}
	for _, tt := range refused {
		var req []byte
		if tt.method == "POST" && strings.HasPrefix(tt.path, "/v1/purge?") {
			req = body
		}
		code, b := ts.do(t, tt.method, tt.path, tokAdmin, req)
		var e APIError
		if code != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Field != tt.field {
			t.Errorf("%s %s = %d %s, want 400 with field %q", tt.method, tt.path, code, b, tt.field)
		}
	}
	_, b = ts.do(t, "GET", "/v1/purges/"+resp.ID, tokPurger, nil)
	var r purge.Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if got, want := nodeStatuses(r), map[string]string{"ams/n1": purge.NodeUnreachable, "fra/n1": purge.NodeUnreachable}; !maps.Equal(got, want) {
		t.Errorf("after the refused requests: statuses %v, want %v (no node declared gone)", got, want)
	}
}

// TestRefusedPurgesSpendNoRateLimit: a purge refused before anything is published (bad JSON, a
// bad URL, a bad query, a host outside the token's or not configured, a wrong content type)
// takes nothing from the token's purge bucket: a client fixing its request is not then held
// back by the limit. The burst of published purges is still all the token gets.
func TestRefusedPurgesSpendNoRateLimit(t *testing.T) {
	const shop = "shop-purger-secret-0123456789"
	ts := startServer(t, Config{PurgeRate: 0.01, PurgeBurst: 2, Tokens: []Token{
		{Name: "shop-purger", Token: shop, Scopes: []string{ScopePurge}, Hosts: []string{hostA, "*.unconfigured.example"}},
	}}, pastStartGrace)
	if err := fleet.PutHost(t.Context(), ts.JetStream(), "", wire.HostConfig{Host: hostA, Origin: "http://127.0.0.1:8080"}); err != nil {
		t.Fatal(err)
	}
	good := `{"host":"www.example.com","keys":["k"]}`
	refused := []struct {
		name, query, contentType, body string
		want                           int
	}{
		{"invalid JSON", "", "application/json", `{"host":`, http.StatusBadRequest},
		{"unknown field", "", "application/json", `{"host":"www.example.com","keys":["k"],"ttl":1}`, http.StatusBadRequest},
		{"bad URL", "", "application/json", `{"host":"www.example.com","urls":["no-slash"]}`, http.StatusBadRequest},
		{"nothing to purge", "", "application/json", `{"host":"www.example.com"}`, http.StatusBadRequest},
		{"bad wait", "?wait=forever", "application/json", good, http.StatusBadRequest},
		{"unknown query parameter", "?Wait=2s", "application/json", good, http.StatusBadRequest},
		{"query that does not parse", "?wait=1s;x", "application/json", good, http.StatusBadRequest},
		{"host not configured", "", "application/json", `{"host":"a.unconfigured.example","all":true}`, http.StatusBadRequest},
		{"host outside the token's", "", "application/json", `{"host":"other.example.com","all":true}`, http.StatusForbidden},
		{"not JSON", "", "text/plain", good, http.StatusUnsupportedMediaType},
	}
	for round := range 2 { // more refusals than the burst
		for _, tt := range refused {
			req, err := http.NewRequestWithContext(t.Context(), "POST", ts.base+"/v1/purge"+tt.query, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+shop)
			req.Header.Set("Content-Type", tt.contentType)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("round %d, %s: %d %s, want %d", round, tt.name, resp.StatusCode, b, tt.want)
			}
		}
	}
	for i := range 2 {
		if code, _, b := postPurge(t, ts, shop, "", []byte(good)); code != http.StatusAccepted {
			t.Errorf("purge %d of the burst after %d refused ones = %d %s, want 202", i+1, 2*len(refused), code, b)
		}
	}
	if code, _, b := postPurge(t, ts, shop, "", []byte(good)); code != http.StatusTooManyRequests {
		t.Errorf("purge beyond the burst = %d %s, want 429", code, b)
	}
	// An empty bucket refuses before the request is read: no 400 tells a throttled client more.
	if code, _, b := postPurge(t, ts, shop, "", []byte(`{"host":`)); code != http.StatusTooManyRequests {
		t.Errorf("invalid purge with an empty bucket = %d %s, want 429", code, b)
	}
}

// TestPurgeLimiterUnlimited: a negative --purge-rate (New makes it +Inf) never refuses, check
// and take alike, however close together the requests come.
func TestPurgeLimiterUnlimited(t *testing.T) {
	l := newPurgeLimiter(math.Inf(1), DefaultPurgeBurst)
	if l.limit != rate.Inf {
		t.Errorf("newPurgeLimiter(+Inf).limit = %v, want rate.Inf", l.limit)
	}
	for i := range 10 * DefaultPurgeBurst {
		w := httptest.NewRecorder()
		if !l.check(w, "t") || !l.take(w, "t") {
			t.Fatalf("request %d refused: %d %s", i+1, w.Code, w.Body)
		}
	}
}

// TestPurgeLimiterConcurrentRefusalsSpendNothing: many requests of one token that all passed
// check race to take its last token: one gets it, the others get 429, and the refused ones
// leave the bucket as they found it. (Reserve then Cancel, in the order the reservations
// were made, restores only the last one's token: the bucket went into debt by the others.)
func TestPurgeLimiterConcurrentRefusalsSpendNothing(t *testing.T) {
	const requests = 64
	for round := range 20 {
		l := newPurgeLimiter(0.001, 1) // refills nothing while the test runs
		start := make(chan struct{})
		results := make(chan int, requests)
		var wg sync.WaitGroup
		for range requests {
			wg.Go(func() {
				<-start
				w := httptest.NewRecorder()
				l.take(w, "t")
				results <- w.Code
			})
		}
		close(start)
		wg.Wait()
		close(results)
		taken := 0
		for code := range results {
			if code == http.StatusOK {
				taken++
			}
		}
		if taken != 1 {
			t.Fatalf("round %d: %d of %d concurrent takes of a 1-token bucket succeeded, want 1", round, taken, requests)
		}
		if got := l.bucket("t").Tokens(); got < -0.01 {
			t.Fatalf("round %d: after 1 take and %d refusals the bucket holds %.2f tokens, want 0: the refusals spent some", round, requests-1, got)
		}
	}
}
