package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/meridian-cdn/meridian/control"
	"github.com/meridian-cdn/meridian/dnsroute/geo/geodata"
	"github.com/meridian-cdn/meridian/edge"
	"github.com/meridian-cdn/meridian/internal/wait"
	"github.com/meridian-cdn/meridian/purge"
)

const testToken = "deploy-test-token-0123456789abcdef"

// localFleet is the example fleet with every address moved to loopback: control VM i on
// 127.0.91.i, edge VM k on 127.0.92.k, every port one that is free. The TLS files stay: the test
// writes a CA and a certificate for those addresses where the rendered configs expect them.
func localFleet(t *testing.T) (*Fleet, map[string]string) {
	t.Helper()
	f := loadExample(t)
	ports := freePorts(t, 9)
	f.NATS.ClientPort, f.NATS.ClusterPort, f.NATS.LeafPort, f.NATS.MonitorPort = ports[0], ports[1], ports[2], ports[3]
	f.Control.APIPort, f.DNS.Port, f.DNS.AdminPort = ports[4], ports[5], ports[6]
	f.Edge.HTTPPort, f.Edge.AdminPort = ports[7], ports[8]
	bind := map[string]string{}
	for i := range f.Control.Nodes {
		c := &f.Control.Nodes[i]
		c.IPv4 = fmt.Sprintf("127.0.91.%d", i+1)
		bind[c.Name] = c.IPv4
	}
	k := 0
	for i := range f.PoPs {
		p := &f.PoPs[i]
		for j := range p.Nodes {
			k++
			n := &p.Nodes[j]
			n.IPv4 = fmt.Sprintf("127.0.92.%d", k)
			n.PrivateIPv4 = ""
			bind[p.VMName(*n)] = n.IPv4
		}
	}
	return f, bind
}

// freePorts finds n ports free for TCP and UDP on every address.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var hold []io.Closer
	defer func() {
		for _, c := range hold {
			c.Close()
		}
	}()
	for len(out) < n {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		hold = append(hold, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		hold = append(hold, pc)
		out = append(out, port)
	}
	return out
}

func TestRenderedFleetRunsLocally(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole fleet")
	}
	f, bind := localFleet(t)
	files, err := Render(f, RenderOptions{BindHost: func(vm string) string { return bind[vm] }})
	if err != nil {
		t.Fatalf("Render = %v", err)
	}
	root := t.TempDir()
	vms := f.VMs()
	writeVMs(t, root, files, vms)
	ips := make([]string, 0, len(bind))
	for _, ip := range bind {
		ips = append(ips, ip)
	}
	for _, vm := range vms {
		vmRoot := filepath.Join(root, vm.Name)
		writeTLS(t, vmRoot, f.NATS.TLS, ips)
		if vm.Role == RoleControl {
			// The API's certificate: the same test CA's, valid for every fleet address.
			writeTLS(t, vmRoot, TLSFiles{CertFile: f.Control.TLSCert, KeyFile: f.Control.TLSKey, CAFile: f.NATS.TLS.CAFile}, ips)
			putFile(t, vmRoot+f.Control.TokensFile, fmt.Sprintf("- name: ops\n  token: %s\n  scopes: [read, config, purge]\n", testToken))
			if err := os.MkdirAll(filepath.Dir(vmRoot+f.DNS.MMDB), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := geodata.WriteFile(vmRoot + f.DNS.MMDB); err != nil {
				t.Fatal(err)
			}
		}
	}

	// NATS first: the cluster on the control VMs, a leaf node on every edge VM.
	servers := map[string]*server.Server{}
	for _, vm := range vms {
		servers[vm.Name] = startNATS(t, filepath.Join(root, vm.Name)+EtcDir+"/nats.conf")
	}
	var controls []string
	for _, vm := range vms {
		if vm.Role == RoleControl {
			controls = append(controls, vm.Name)
		}
	}
	wait.For(t, 20*time.Second, "the three NATS servers to route to each other", func() bool {
		for _, name := range controls {
			rz, err := servers[name].Routez(nil)
			if err != nil {
				return false
			}
			peers := map[string]bool{}
			for _, r := range rz.Routes {
				peers[r.RemoteName] = true
			}
			if len(peers) != len(controls)-1 {
				return false
			}
		}
		return true
	})
	// Nobody is anonymous: the cluster's and the leaf servers' client ports refuse a client
	// without credentials (routes and leaf links authenticated above, or they would not form).
	for _, vm := range vms {
		url := "nats://" + net.JoinHostPort(bind[vm.Name], strconv.Itoa(f.NATS.ClientPort))
		if nc, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Errorf("%s: anonymous client connected to %s", vm.Name, url)
		}
	}
	wait.For(t, 20*time.Second, "every leaf node to connect to the cluster", func() bool {
		for _, vm := range vms {
			if vm.Role == RoleEdge && servers[vm.Name].NumLeafNodes() != 1 {
				return false
			}
		}
		return true
	})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	run := func(what string, fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("%s stopped: %v", what, err)
			}
		})
	}

	// Control planes, from the flags their units start them with. Like systemd
	// (Restart=on-failure) the test restarts one that exits. They start one after the other:
	// three controls creating the same R3 buckets at once can lose the replies and time out
	// (see the report; control should retry with short per-attempt timeouts).
	api := func(name string) string {
		return "https://" + net.JoinHostPort(bind[name], strconv.Itoa(f.Control.APIPort))
	}
	for _, name := range controls {
		// ExecStartPre: wait for the local NATS server's JetStream health.
		env := envFile(t, filepath.Join(root, name)+EtcDir+"/control.env")
		wait.For(t, 30*time.Second, name+" NATS JetStream healthy", func() bool {
			resp, err := http.Get(env["MERIDIAN_NATS_HEALTHZ"])
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	for _, name := range controls {
		argv := execStart(t, filepath.Join(root, name)+UnitDir+"/meridian-control.service")
		if argv[1] != "control" {
			t.Fatalf("%s: meridian-control.service runs %q, want control", name, argv[1])
		}
		run(name+" control", func(ctx context.Context) error {
			for {
				cmd := control.NewCommand()
				cmd.SetArgs(argv[2:])
				cmd.SetOut(io.Discard)
				cmd.SetErr(io.Discard)
				err := cmd.ExecuteContext(ctx)
				if ctx.Err() != nil {
					return nil
				}
				t.Logf("%s control exited (%v); restarting like systemd", name, err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(2 * time.Second):
				}
			}
		})
		wait.For(t, 40*time.Second, name+" control /healthz ok", func() bool {
			code, body := call(t, "GET", api(name)+"/healthz", nil)
			return code == 200 && strings.Contains(string(body), `"ok"`)
		})
	}

	// Edges, from the config file their units name.
	var edges []*edge.Node
	for _, vm := range vms {
		if vm.Role != RoleEdge {
			continue
		}
		argv := execStart(t, filepath.Join(root, vm.Name)+UnitDir+"/meridian-edge.service")
		if len(argv) != 4 || argv[1] != "edge" || argv[2] != "--config" {
			t.Fatalf("%s: meridian-edge.service runs %q, want edge --config FILE", vm.Name, argv)
		}
		cfg, err := edge.LoadConfig(argv[3])
		if err != nil {
			t.Fatalf("%s: %v", vm.Name, err)
		}
		if os.Getenv("MERIDIAN_DEPLOY_LOG") != "" {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("vm", vm.Name)
		}
		n, err := edge.New(cfg)
		if err != nil {
			t.Fatalf("%s: edge.New = %v", vm.Name, err)
		}
		edges = append(edges, n)
		run(vm.Name+" edge", n.Run)
	}
	for i, n := range edges {
		select {
		case <-n.FleetReady():
		case <-time.After(40 * time.Second):
			t.Fatalf("edge %d did not join the fleet through its leaf node", i)
		}
	}

	// Every control sees every edge: registration went leaf -> cluster -> JetStream KV.
	wantPoPs := map[string][]string{}
	for _, p := range f.PoPs {
		for _, n := range p.Nodes {
			wantPoPs[p.ID] = append(wantPoPs[p.ID], n.IPv4)
		}
	}
	for _, name := range controls {
		var got map[string][]string
		ok := waitForOK(40*time.Second, func() bool {
			got = popsOf(t, api(name))
			return reflect.DeepEqual(got, wantPoPs)
		})
		if !ok {
			t.Fatalf("%s GET /v1/pops = %v, want %v", name, got, wantPoPs)
		}
	}

	// DNS on every control VM answers with the nearest PoP's addresses.
	for _, name := range controls {
		startDNS(t, ctx, &wg, filepath.Join(root, name), bind[name])
	}
	cases := []struct{ city, pop string }{{"Frankfurt", "fra"}, {"Ashburn", "iad"}, {"Tokyo", "nrt"}}
	for _, name := range controls {
		addr := net.JoinHostPort(bind[name], strconv.Itoa(f.DNS.Port))
		for _, c := range cases {
			var got []string
			ok := waitForOK(20*time.Second, func() bool {
				got = resolveA(t, addr, "www."+f.DNS.Zone, c.city)
				return len(got) > 0 && subset(got, wantPoPs[c.pop])
			})
			if !ok {
				t.Errorf("%s: A www.%s from %s = %v, want addresses of %s %v", name, f.DNS.Zone, c.city, got, c.pop, wantPoPs[c.pop])
			}
		}
	}

	// The operator loads the rendered hosts into the config bucket, then purges at one control;
	// every edge in every PoP acks.
	for p, b := range files {
		if host, ok := strings.CutPrefix(p, "hosts/"); ok {
			host = strings.TrimSuffix(host, ".json")
			if code, body := call(t, "PUT", api(controls[0])+"/v1/hosts/"+host, b); code != 200 && code != 201 && code != 204 {
				t.Fatalf("PUT /v1/hosts/%s = %d %s", host, code, body)
			}
		}
	}
	var resp purge.Response
	var code int
	var body []byte
	ok := waitForOK(30*time.Second, func() bool {
		code, body = call(t, "POST", api(controls[1])+"/v1/purge?wait=5s", []byte(`{"host":"www.example.com","all":true}`))
		resp = purge.Response{}
		_ = json.Unmarshal(body, &resp)
		return code == 200 && resp.Complete
	})
	if !ok {
		t.Fatalf("POST /v1/purge?wait=5s at %s = %d %s, want 200 and complete", controls[1], code, body)
	}
	acked := map[string]int{}
	for _, rc := range resp.Purges {
		for _, pr := range rc.PoPs {
			acked[pr.PoP] += len(pr.Nodes)
		}
	}
	for pop, ips := range wantPoPs {
		if acked[pop] != len(ips) {
			t.Errorf("purge receipt: PoP %s acked by %d nodes, want %d (receipt %s)", pop, acked[pop], len(ips), body)
		}
	}
}
