package control

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
	"github.com/meridian-cdn/meridian/wire"
)

// TestPurgeURLSpellings: a URL purge reaches the copy of every spelling of the URL that the
// edge keys alike, through the API and real edges: a path starting with "//" (the edge serves
// and stores it; the purge read it as a scheme-relative URL naming host "u"), percent-encodings
// in either case, and unreserved characters escaped or not (RFC 3986 §6.2.2.1, §6.2.2.2). "+"
// and "%20" in a query are different URLs to the edge (RFC 3986; only form decoding reads them
// alike), so each is purged by its own spelling, which reaches its own copy.
func TestPurgeURLSpellings(t *testing.T) {
	f := startPurgeFleet(t)
	const cc = "cc=max-age%3D600"
	for _, tt := range []struct {
		name   string
		urls   []string // what the purge names (host www.example.com)
		purged []string // what clients fetched: no fresh hit on any node afterwards
		kept   []string // still fresh hits
	}{
		{
			name:   "path starting with //",
			urls:   []string{"//u/dbl/a?" + cc},
			purged: []string{"//u/dbl/a?" + cc},
			kept:   []string{"/u/dbl/a?" + cc},
		},
		{
			name:   "absolute url whose path starts with //",
			urls:   []string{"https://www.example.com//u/dbl2/a?" + cc},
			purged: []string{"//u/dbl2/a?" + cc},
			kept:   []string{"/u/dbl2/a?" + cc},
		},
		{
			name:   "path of only //",
			urls:   []string{"//?" + cc + "&only"},
			purged: []string{"//?" + cc + "&only"},
			kept:   []string{"/?" + cc + "&only"},
		},
		{
			name:   "percent-encoding in lower case reaches upper case",
			urls:   []string{"/u/pc/a%2fb?k=%2f&" + cc},
			purged: []string{"/u/pc/a%2Fb?k=%2F&" + cc, "/u/pc/a%2fb?k=%2f&" + cc},
			kept:   []string{"/u/pc/a/b?k=%2F&" + cc},
		},
		{
			name:   "percent-encoding in upper case reaches lower case, absolute",
			urls:   []string{"https://www.example.com/u/pc2/a%2Fb?k=%2F&" + cc},
			purged: []string{"/u/pc2/a%2fb?k=%2f&" + cc},
		},
		{
			name:   "escaped unreserved characters reach their plain spelling",
			urls:   []string{"/u/%41b%7e?x=%41&" + cc},
			purged: []string{"/u/Ab~?x=A&" + cc, "/u/%41b%7E?x=%41&" + cc},
		},
		{
			name:   "plain unreserved characters reach their escaped spelling",
			urls:   []string{"/u/Cd~?x=C&" + cc},
			purged: []string{"/u/%43d%7E?x=%43&" + cc},
		},
		{
			name:   "+ in a query",
			urls:   []string{"/u/sp?q=a+b&" + cc},
			purged: []string{"/u/sp?q=a+b&" + cc},
		},
		{
			name:   "%20 in a query",
			urls:   []string{"/u/sp2?q=a%20b&" + cc},
			purged: []string{"/u/sp2?q=a%20b&" + cc},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range append(append([]string{}, tt.purged...), tt.kept...) {
				warm(t, f.nodes, hostA, p)
			}
			// The origin moves on, so that serving the old version would show; it versions
			// objects by their decoded path.
			want, bumped := map[string]string{}, map[string]string{}
			for _, p := range tt.purged {
				u, err := url.ParseRequestURI(p)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := bumped[u.Path]; !ok { // spellings of one path share its version
					bumped[u.Path] = fmt.Sprintf("@v%d:", f.origin.Bump(u.Path))
				}
				want[p] = bumped[u.Path]
			}
			body, _ := json.Marshal(purge.Request{Host: hostA, URLs: tt.urls})
			code, resp, b := postPurge(t, f.ts, tokPurger, "10s", body)
			f.checkComplete(t, code, resp, b)
			for _, n := range f.nodes {
				for _, p := range tt.purged {
					// (A node may hold the new version already: a peer filled it from it.)
					if r := get(t, n, hostA, p); !strings.Contains(r.body, want[p]) {
						t.Errorf("%s %s after the purge of %q: body %.40q (Cache-Status %q), want version %q", n.Name(), p, tt.urls, r.body, r.cs, want[p])
					}
				}
				for _, p := range tt.kept {
					if r := get(t, n, hostA, p); !isHit(r.cs) {
						t.Errorf("%s %s after the purge of %q: Cache-Status %q, want a hit", n.Name(), p, tt.urls, r.cs)
					}
				}
			}
		})
	}
}

// TestPurgeURLAcrossKeyOptionChanges: a host's key options (sort_query, keep_params,
// ignore_query) changed and changed back within a copy's TTL. A URL purge made in between
// names its URL under the options then in effect; the copies filled before the change are keyed
// under the others, and reachable again once the options come back. Each must be purged.
func TestPurgeURLAcrossKeyOptionChanges(t *testing.T) {
	f := startPurgeFleet(t)
	const cc = "cc=max-age%3D600"
	for _, tt := range []struct {
		name        string
		host        string
		first, then wire.CacheOptions
		path        string // what clients fetch and the purge names
	}{
		{"sort_query off, on, off", "sort.example.com", wire.CacheOptions{}, wire.CacheOptions{SortQuery: true}, "/o/s?b=2&a=1&" + cc},
		{"sort_query on, off, on", "sort2.example.com", wire.CacheOptions{SortQuery: true}, wire.CacheOptions{}, "/o/s?b=2&a=1&" + cc},
		{"keep_params set, cleared, set", "keep.example.com", wire.CacheOptions{KeepParams: []string{"a", "cc"}}, wire.CacheOptions{}, "/o/k?z=9&a=1&" + cc},
		{"keep_params widened and back", "keep2.example.com", wire.CacheOptions{KeepParams: []string{"a", "cc"}}, wire.CacheOptions{KeepParams: []string{"a", "cc", "z"}}, "/o/k?z=9&a=1&" + cc},
		// (On first, the origin would get no cc parameter and answer without freshness.)
		{"ignore_query off, on, off", "ignore.example.com", wire.CacheOptions{}, wire.CacheOptions{IgnoreQuery: true}, "/o/i?" + cc},
	} {
		t.Run(tt.name, func(t *testing.T) {
			setCache := func(c wire.CacheOptions) {
				t.Helper()
				body, _ := json.Marshal(wire.HostConfig{Host: tt.host, Origin: "http://" + f.originAddr, Cache: c})
				if code, b := f.ts.do(t, "PUT", "/v1/hosts/"+tt.host, tokConfigurer, body); code != http.StatusOK {
					t.Fatalf("PUT host %s = %d %s", tt.host, code, b)
				}
				for _, n := range f.nodes {
					wait.For(t, 10*time.Second, n.Name()+" applies the cache options of "+tt.host, func() bool {
						for _, h := range n.Hosts() {
							if h.Host == tt.host {
								return reflect.DeepEqual(h.Cache, c)
							}
						}
						return false
					})
				}
			}
			setCache(tt.first)
			warm(t, f.nodes, tt.host, tt.path)
			want := fmt.Sprintf("@v%d:", f.origin.Bump(strings.SplitN(tt.path, "?", 2)[0]))
			setCache(tt.then)
			body, _ := json.Marshal(purge.Request{Host: tt.host, URLs: []string{tt.path}})
			code, resp, b := postPurge(t, f.ts, tokPurger, "10s", body)
			f.checkComplete(t, code, resp, b)
			setCache(tt.first)
			for _, n := range f.nodes {
				if r := get(t, n, tt.host, tt.path); !strings.Contains(r.body, want) {
					t.Errorf("%s %s%s after the purge: body %.40q (Cache-Status %q), want version %q", n.Name(), tt.host, tt.path, r.body, r.cs, want)
				}
			}
		})
	}
}
