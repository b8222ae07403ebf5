package control

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/wire"
)

// TestHostAnswersForFileHosts: GET and DELETE /v1/hosts/{host} of a host that has no config
// in the bucket say so, and, when live nodes serve it from their config files (their
// registrations list it), name them and say that the API can neither read nor delete those
// configs; for a host nobody serves they say that too. Before, both answered "host X is not
// configured" for a host the fleet was serving.
func TestHostAnswersForFileHosts(t *testing.T) {
	const (
		fileHost = "file.example.com"
		oneHost  = "one.example.com"
	)
	ts := startServer(t, Config{}, pastStartGrace)
	runRegistrar(t, ts.NATSURL(), wire.Node{PoP: "ams", ID: "n1", Hosts: []string{fileHost, oneHost}}, 100*time.Millisecond)
	runRegistrar(t, ts.NATSURL(), wire.Node{PoP: "fra", ID: "n1", Hosts: []string{fileHost}}, 100*time.Millisecond)
	wait.For(t, 10*time.Second, "both registrations in control's view", func() bool {
		return len(ts.Fleet().Nodes()) == 2
	})
	for _, tt := range []struct {
		name, host, want string
	}{
		{"served from two nodes' files", fileHost, "host file.example.com has no config in the config bucket; live nodes ams/n1, fra/n1 serve it from their config files, which the API can neither read nor delete"},
		{"served from one node's file", oneHost, "host one.example.com has no config in the config bucket; live node ams/n1 serves it from its config file, which the API can neither read nor delete"},
		{"served by no node", "nowhere.example.com", "host nowhere.example.com has no config in the config bucket, and no live node serves it from its config file"},
	} {
		for _, method := range []string{"GET", "DELETE"} {
			t.Run(tt.name+"/"+method, func(t *testing.T) {
				code, b := ts.do(t, method, "/v1/hosts/"+tt.host, tokAdmin, nil)
				var e APIError
				if err := json.Unmarshal(b, &e); err != nil {
					t.Fatalf("decode %s: %v", b, err)
				}
				if code != http.StatusNotFound || e.Field != "host" || e.Error != tt.want {
					t.Errorf("%s /v1/hosts/%s = %d %+v, want 404, field host, %q", method, tt.host, code, e, tt.want)
				}
			})
		}
	}
	// Nothing was deleted: the nodes still register the host.
	if !slices.ContainsFunc(ts.Fleet().Nodes(), func(n wire.Node) bool { return slices.Contains(n.Hosts, fileHost) }) {
		t.Error("no live node registers file.example.com after the DELETEs")
	}
}
