package edge

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// revalCodingOrigin answers a text body with Cache-Control: no-cache (every use of a copy is a
// revalidation) and ?etag=; with ?gz=1 it gzips the body itself for a request that asks for
// gzip (with Vary: Accept-Encoding), and with ?claim=1 it also sends the fleet's edge-coded
// field, which no origin may set. It answers 304 to an If-None-Match that is exactly its tag,
// and records each path's last If-None-Match.
type revalCodingOrigin struct {
	mu  sync.Mutex        // protects inm
	inm map[string]string // path -> last If-None-Match
}

func (o *revalCodingOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o.mu.Lock()
	o.inm[r.URL.Path] = r.Header.Get("If-None-Match")
	o.mu.Unlock()
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", "text/plain")
	etag := q.Get("etag")
	h.Set("ETag", etag)
	gz := q.Get("gz") == "1" && r.Header.Get("Accept-Encoding") == "gzip"
	if q.Get("gz") == "1" {
		h.Set("Vary", "Accept-Encoding")
	}
	if gz {
		h.Set("Content-Encoding", "gzip")
		if q.Get("claim") == "1" {
			h.Set(edgeCodedHeader, "gzip")
		}
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := []byte(codingBody(""))
	if gz {
		body = gzipOf(body)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func (o *revalCodingOrigin) lastINM(path string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.inm[path]
}

// TestPeerCopyEdgeCoded: a node that holds a copy filled through a peer knows whether an edge
// encoded it from what the peer says (Meridian-Edge-Coded on a verified fill's answer), not
// from a guess by the ETag's suffix. Once the peer is gone and the node revalidates its copy
// with the origin itself, it sends the origin's own tag: the tag without the edge's suffix for
// a variant the peer gzipped, and the tag as it is for the origin's own gzip answer whose tag
// happens to end in "-gzip" (Apache's mod_deflate tags so), which the suffix guess took for the
// edge's and cut to a tag the origin never gave (a full fetch instead of a 304). The field
// never reaches a client, and an origin that sends it is not believed. Two real edges of a
// fleet on an embedded NATS, whose peer keyring signs the fills.
func TestPeerCopyEdgeCoded(t *testing.T) {
	url, _, _ := startNATS(t)
	o := &revalCodingOrigin{inm: map[string]string{}}
	originAddr := startHTTP(t, "127.0.0.10", o)
	mk := func(i int) Config {
		name := fmt.Sprintf("n%d", i)
		return Config{PoP: "f1", Node: name, Logger: testLogger(t),
			Fleet: FleetConfig{NATS: url, Creds: edgeCreds(t, url, "f1", name), Heartbeat: 100 * time.Millisecond, TTL: time.Minute},
			Hosts: []wire.HostConfig{{Host: testHost, Origin: "http://" + originAddr}}}
	}
	asker, _ := startEdge(t, listen(t, "127.0.3.10"), mk(0))
	owner, stopOwner := startEdge(t, listen(t, "127.0.3.11"), mk(1))
	for _, n := range []*Node{asker, owner} {
		<-n.FleetReady()
	}
	wait.For(t, 10*time.Second, "the asker's peer set", func() bool { return len(asker.tiers.Load().peers) == 2 })
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}} // no gzip of its own, no decoding
	t.Cleanup(c.CloseIdleConnections)

	cases := []struct {
		name     string
		params   []string
		wantETag string // what the client gets, filled and revalidated
		wantINM  string // what the asker sends the origin
	}{
		{"owner gzipped", []string{"etag", `"v1"`}, edgeTag(`"v1"`, "gzip"), `"v1"`},
		{"owner gzipped a tag ending in -gzip", []string{"etag", `"v1-gzip"`}, edgeTag(`"v1-gzip"`, "gzip"), `"v1-gzip"`},
		{"origin gzipped, tagged -gzip", []string{"gz", "1", "etag", `"v1-gzip"`}, `"v1-gzip"`, `"v1-gzip"`},
		{"origin gzipped, claiming the edge did", []string{"gz", "1", "claim", "1", "etag", `"v1-gzip"`}, `"v1-gzip"`, `"v1-gzip"`},
	}
	paths := make([]string, len(cases))
	check := func(t *testing.T, r resp, wantETag string) {
		t.Helper()
		if r.status != http.StatusOK || r.header.Get("Content-Encoding") != "gzip" || r.header.Get("ETag") != wantETag {
			t.Errorf("%d, Content-Encoding %q, ETag %s (Cache-Status %q); want 200, gzip, %s", r.status,
				r.header.Get("Content-Encoding"), r.header.Get("ETag"), r.header.Get("Cache-Status"), wantETag)
		}
		if got := decodeBody(t, "gzip", []byte(r.body)); string(got) != codingBody("") {
			t.Errorf("decoded body differs from the origin's")
		}
		if v := r.header.Get(edgeCodedHeader); v != "" {
			t.Errorf("a client got the fleet-only field %s: %q", edgeCodedHeader, v)
		}
	}
	for i, tc := range cases {
		t.Run("fill/"+tc.name, func(t *testing.T) {
			paths[i] = ownedBy(asker, owner.cfg.Node, "/peercoded/", tc.params...)
			r := do(t, c, http.MethodGet, asker.Addr(), testHost, paths[i], "Accept-Encoding", "gzip")
			wantCacheStatus(t, r, "f1-n0; fwd=miss", "stored", "detail=peer")
			check(t, r, tc.wantETag)
		})
	}
	stopOwner() // the asker revalidates with the origin itself from now on
	for i, tc := range cases {
		t.Run("revalidate/"+tc.name, func(t *testing.T) {
			r := do(t, c, http.MethodGet, asker.Addr(), testHost, paths[i], "Accept-Encoding", "gzip")
			path, _, _ := strings.Cut(paths[i], "?")
			if got := o.lastINM(path); got != tc.wantINM {
				t.Errorf("the origin got If-None-Match %s, want its own tag %s", got, tc.wantINM)
			}
			wantCacheStatus(t, r, "f1-n0; fwd=stale; fwd-status=304", "detail=origin")
			check(t, r, tc.wantETag)
		})
	}
}

// TestOriginEdgeCodedNeverReachesClients: the fleet's edge-coded and keys fields are the
// fleet's alone. An origin that sends them (by mistake or to be believed) has them dropped from
// every answer a client gets: stored, streamed uncached and passed through, as its
// Meridian-Fill is.
func TestOriginEdgeCodedNeverReachesClients(t *testing.T) {
	n, c := echoEdge(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(edgeCodedHeader, "gzip")
		w.Header().Set(fleetKeysHeader, "k1")
		w.Header().Set(hopHeader, hopTrustedValue)
		w.Header().Set("Cache-Control", r.URL.Query().Get("cc"))
		io.WriteString(w, "body")
	}, nil, nil)
	for _, tc := range []struct {
		name, method, path string
	}{
		{"stored", http.MethodGet, "/coded?cc=max-age%3D60"},
		{"not stored", http.MethodGet, "/coded?cc=no-store"},
		{"passed through", http.MethodPost, "/coded?cc=max-age%3D60"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, c, tc.method, n.Addr(), testHost, tc.path)
			if r.status != http.StatusOK || r.body != "body" {
				t.Fatalf("%s %s: %d %q", tc.method, tc.path, r.status, r.body)
			}
			for _, k := range []string{edgeCodedHeader, fleetKeysHeader, hopHeader} {
				if v := r.header.Get(k); v != "" {
					t.Errorf("%s %s: the client got the origin's fleet-only field %s: %q", tc.method, tc.path, k, v)
				}
			}
		})
	}
}
