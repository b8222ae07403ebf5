package control

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestPurgeHostFromEdgeFile: a host set only in an edge's YAML (never PUT into the config
// bucket) is purged like a configured one while a live node registers it (wire.Node.Hosts),
// by either of its names; a token's host scope still applies; a host no live node serves and
// the bucket lacks is refused, with a message that does not repeat its field's name, and so is
// the file host once the only node that served it has left. Before, every purge of a file
// host was refused: "host file.example.com is not configured".
func TestPurgeHostFromEdgeFile(t *testing.T) {
	const (
		tokAll   = "file-hosts-all-secret-0123456789"
		tokShop  = "file-hosts-shop-secret-0123456789"
		fileHost = "file.example.com"
	)
	ts := startServer(t, Config{PurgeRate: -1, Tokens: []Token{
		{Name: "all", Token: tokAll, Scopes: []string{ScopePurge}},
		{Name: "shop", Token: tokShop, Scopes: []string{ScopePurge}, Hosts: []string{"shop.example.net"}},
	}}, pastStartGrace)
	_, originAddr := startOrigin(t, "127.0.6.40")
	_, stop := startEdgeMod(t, "127.0.6.41", "ams", "n1", ts.NATSURL(), 100*time.Millisecond, func(c *edge.Config) {
		c.Hosts = []wire.HostConfig{
			{Host: fileHost, Origin: "http://" + originAddr},
			{Host: "bücher.example", Origin: "http://" + originAddr}, // registered as hostIDN
		}
	})
	startEdge(t, "127.0.6.42", "fra", "n1", ts.NATSURL()) // no file hosts
	registered := func() []string {
		for _, n := range ts.Fleet().Nodes() {
			if n.PoP == "ams" && n.ID == "n1" {
				return n.Hosts
			}
		}
		return nil
	}
	wait.For(t, 10*time.Second, "control's view to hold ams/n1's file hosts", func() bool { return len(registered()) > 0 })
	if got, want := registered(), []string{fileHost, hostIDN}; !slices.Equal(got, want) {
		t.Fatalf("ams/n1 registered hosts %q, want %q (A-labels, sorted)", got, want)
	}

	for _, tt := range []struct {
		name, token, body string
		want              int
		msg               string // the refusal's error, if any
	}{
		{"in an edge's file", tokAll, `{"host":"file.example.com","all":true}`, http.StatusAccepted, ""},
		{"in an edge's file, named in Unicode", tokAll, `{"host":"bücher.example","keys":["k"]}`, http.StatusAccepted, ""},
		{"in an edge's file, outside the token's hosts", tokShop, `{"host":"file.example.com","all":true}`, http.StatusForbidden, ""},
		{"served by no node", tokAll, `{"host":"nowhere.example.com","all":true}`, http.StatusBadRequest,
			"nowhere.example.com is not configured: not in the config bucket, nor in the config file of any live node"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, b := postPurge(t, ts, tt.token, "", []byte(tt.body))
			if code != tt.want {
				t.Fatalf("POST /v1/purge %s = %d %s, want %d", tt.body, code, b, tt.want)
			}
			if tt.msg != "" {
				var e APIError
				if err := json.Unmarshal(b, &e); err != nil {
					t.Fatalf("decode refusal %s: %v", b, err)
				}
				if e.Field != "host" || e.Error != tt.msg {
					t.Errorf("refusal field %q, error %q; want %q, %q", e.Field, e.Error, "host", tt.msg)
				}
			}
		})
	}

	// The node that served it leaves (a clean stop deletes its key): nobody serves the host.
	stop()
	wait.For(t, 10*time.Second, "control's view to drop ams/n1", func() bool { return registered() == nil })
	code, _, b := postPurge(t, ts, tokAll, "", []byte(`{"host":"file.example.com","all":true}`))
	if code != http.StatusBadRequest || !strings.Contains(string(b), "file.example.com is not configured") {
		t.Errorf("purge of a file host after its only node left = %d %s, want 400 not configured", code, b)
	}
}
