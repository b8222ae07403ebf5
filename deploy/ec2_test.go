package deploy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// base64gzipSize is the size of what Terraform's base64gzip(b) decodes to: the gzip stream
// (Go's compress/gzip at its default level, flushed then closed, as Terraform does), which is
// the "raw form" EC2 limits.
func base64gzipSize(t *testing.T, b []byte) int {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Len()
}

// withEdgePoPs adds n PoPs of one edge VM each to the example fleet, as a fleet file.
func withEdgePoPs(t *testing.T, n int) []byte {
	t.Helper()
	example, err := os.ReadFile(filepath.Join("testdata", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pops strings.Builder
	for i := range n {
		fmt.Fprintf(&pops, "  - id: x%03d\n    region: eu-central-1\n    lat: 50\n    lon: 8\n    nodes:\n"+
			"      - id: edge-1\n        ipv4: 198.18.%d.%d\n        private_ipv4: 10.9.%d.%d\n",
			i, i/250, i%250+1, i/250, i%250+1)
	}
	s := strings.Replace(string(example), "\nhosts:\n", "\n"+pops.String()+"\nhosts:\n", 1)
	if !strings.Contains(s, "x000") {
		t.Fatal("example fleet has no hosts: section to add PoPs before")
	}
	return []byte(s)
}

// TestUserDataFitsEC2: EC2 takes at most 16 KiB of user data "in raw form, before it is
// base64-encoded" (AWS EC2 User Guide, "Work with instance user data"); the Terraform example
// sends base64gzip(user-data), so the gzip stream is what must fit. Every control VM's user
// data carries nats.conf, which lists every edge VM's leaf key with its permissions, so a
// large fleet outgrows it: render (and validate) must refuse it by name and size, while a
// realistic fleet (3 control VMs, 40 edge VMs) must still fit.
func TestUserDataFitsEC2(t *testing.T) {
	realistic, err := Parse(withEdgePoPs(t, 36)) // 4 edge VMs in the example + 36
	if err != nil {
		t.Fatal(err)
	}
	files, err := Render(realistic, RenderOptions{})
	if err != nil {
		t.Fatalf("3 control + 40 edge VMs: %v", err)
	}
	for _, vm := range realistic.VMs() {
		if n := base64gzipSize(t, files[vm.UserData]); n > 16384 {
			t.Errorf("%s: %d bytes gzipped, over EC2's 16384", vm.Name, n)
		}
	}

	big := withEdgePoPs(t, 200)
	f, err := Parse(big)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(f, RenderOptions{})
	if err == nil {
		t.Fatal("a fleet of 204 edge VMs rendered: every control VM's gzipped user data is over EC2's 16 KiB, and nothing said so")
	}
	for _, want := range []string{"ctl-1", "ctl-2", "ctl-3", "gzipped", "16384"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("render error %q does not name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "fra-edge-1") {
		t.Errorf("render error %q names an edge VM whose user data fits", err)
	}

	// validate runs the same check, writing nothing.
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := NewCommand()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"validate", path})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "ctl-1") {
		t.Errorf("deploy validate of the oversized fleet = %v, want the user-data size of ctl-1", err)
	}
}

// regionModule parses terraform/region/main.tf and returns its resource block of type typ.
func regionModule(t *testing.T, typ string) *hclsyntax.Block {
	t.Helper()
	file, diags := hclparse.NewParser().ParseHCLFile(filepath.Join("terraform", "region", "main.tf"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for _, b := range file.Body.(*hclsyntax.Body).Blocks {
		if b.Type == "resource" && len(b.Labels) == 2 && b.Labels[0] == typ {
			return b
		}
	}
	t.Fatalf("terraform/region/main.tf has no %s", typ)
	return nil
}

// rootModules parses terraform/main.tf and returns its module blocks (one per region).
func rootModules(t *testing.T) []*hclsyntax.Block {
	t.Helper()
	file, diags := hclparse.NewParser().ParseHCLFile(filepath.Join("terraform", "main.tf"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var mods []*hclsyntax.Block
	for _, b := range file.Body.(*hclsyntax.Body).Blocks {
		if b.Type == "module" {
			mods = append(mods, b)
		}
	}
	if len(mods) == 0 {
		t.Fatal("terraform/main.tf has no module blocks")
	}
	return mods
}

// tfFunctions are the Terraform functions the tests' expressions may call: try, can and those
// of cty's stdlib are the very functions Terraform uses; the others are written here, for
// the arguments the example passes (TestLongTerraformAgrees checks them against terraform).
var tfFunctions = map[string]function.Function{
	"alltrue":     tfAllTrue,
	"can":         tryfunc.CanFunc,
	"cidrhost":    tfCIDRHost,
	"cidrsubnet":  tfCIDRSubnet,
	"coalesce":    tfCoalesce,
	"contains":    stdlib.ContainsFunc,
	"jsonencode":  stdlib.JSONEncodeFunc,
	"join":        stdlib.JoinFunc,
	"length":      stdlib.LengthFunc,
	"split":       stdlib.SplitFunc,
	"strcontains": tfStrContains,
	"try":         tryfunc.TryFunc,
}

// renderedJSON renders f and decodes one of its JSON files as Terraform's jsondecode does.
func renderedJSON(t *testing.T, files map[string][]byte, name string) cty.Value {
	t.Helper()
	b, ok := files[name]
	if !ok {
		t.Fatalf("render wrote no %s", name)
	}
	ty, err := ctyjson.ImpliedType(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	v, err := ctyjson.Unmarshal(b, ty)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// TestTerraformSetsPrivateIPs: a fleet's private_ipv4 is where the edge's and DNS's admin
// listeners bind and where a PoP's peers fetch from. An instance that does not have the
// address fails to bind it, so the Terraform example must create each instance with the
// private address its fleet entry gives (in a subnet that contains it), and let AWS pick one
// only for a VM without.
func TestTerraformSetsPrivateIPs(t *testing.T) {
	f := loadExample(t)
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vms := map[string]cty.Value{}
	for it := renderedJSON(t, files, "vms.json").ElementIterator(); it.Next(); {
		_, vm := it.Element()
		vms[vm.GetAttr("name").AsString()] = vm
	}
	vm := regionModule(t, "aws_instance")
	pip := vm.Body.Attributes["private_ip"]
	if pip == nil {
		t.Fatal("aws_instance sets no private_ip: the fleet's private_ipv4 addresses (admin listeners, PoP peers) will not exist on the VMs")
	}
	if vm.Body.Attributes["subnet_id"] == nil {
		t.Error("aws_instance sets private_ip but no subnet_id: the default subnet cannot hold the fleet's addresses")
	}
	for _, b := range rootModules(t) {
		if b.Body.Attributes["subnet_id"] == nil {
			t.Errorf("module %s is not given subnet_id: its VMs cannot get their private addresses", b.Labels[0])
		}
	}
	want := map[string]string{"ctl-1": "10.1.0.10", "fra-edge-1": "10.1.0.11", "iad-edge-1": "10.2.0.21", "nrt-edge-1": ""}
	for name, addr := range want {
		v, ok := vms[name]
		if !ok {
			t.Fatalf("vms.json lists no %s", name)
		}
		// The module receives vms as map(any): objects whose attributes differ become maps of
		// strings. The expression must work on both.
		asMap, err := convert.Convert(v, cty.Map(cty.String))
		if err != nil {
			t.Fatal(err)
		}
		for _, value := range []cty.Value{v, asMap} {
			ctx := &hcl.EvalContext{
				Variables: map[string]cty.Value{
					"each": cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(name), "value": value}),
					"var":  cty.ObjectVal(map[string]cty.Value{"subnet_id": cty.StringVal("subnet-0123")}),
				},
				Functions: tfFunctions,
			}
			got, diags := pip.Expr.Value(ctx)
			switch {
			case diags.HasErrors():
				t.Errorf("%s: private_ip: %v", name, diags)
			case addr == "" && !got.IsNull():
				t.Errorf("%s has no private_ipv4, but private_ip = %#v", name, got)
			case addr != "" && (got.IsNull() || got.Type() != cty.String || got.AsString() != addr):
				t.Errorf("%s: private_ip = %#v, want %s (its private_ipv4)", name, got, addr)
			}
		}
	}
}

// ingressRule is one evaluated ingress block of the security group.
type ingressRule struct {
	proto    string
	from, to int
	cidrs    []string // IPv4 and IPv6 sources
}

// securityGroupIngress evaluates every ingress block (static and dynamic) of the region
// module's security group with the module variables vars.
func securityGroupIngress(t *testing.T, vars map[string]cty.Value) []ingressRule {
	t.Helper()
	sg := regionModule(t, "aws_security_group")
	eval := func(ctx *hcl.EvalContext, body *hclsyntax.Body) ingressRule {
		var r ingressRule
		get := func(name string) cty.Value {
			a := body.Attributes[name]
			if a == nil {
				t.Fatalf("an ingress rule has no %s", name)
			}
			v, diags := a.Expr.Value(ctx)
			if diags.HasErrors() {
				t.Fatalf("ingress %s: %v", name, diags)
			}
			return v
		}
		r.proto = get("protocol").AsString()
		from, _ := get("from_port").AsBigFloat().Int64()
		to, _ := get("to_port").AsBigFloat().Int64()
		r.from, r.to = int(from), int(to)
		// AWS refuses an IPv6 block in cidr_blocks and an IPv4 one in ipv6_cidr_blocks, when
		// it creates the rule: halfway through an apply.
		blocks := func(attr string, want6 bool) {
			if body.Attributes[attr] == nil {
				return
			}
			for it := get(attr).ElementIterator(); it.Next(); {
				_, c := it.Element()
				p, err := netip.ParsePrefix(c.AsString())
				if err != nil || p.Addr().Is6() != want6 || p != p.Masked() {
					t.Errorf("ingress %s/%d: %s holds %q, which AWS refuses there", r.proto, r.from, attr, c.AsString())
				}
				r.cidrs = append(r.cidrs, c.AsString())
			}
		}
		blocks("cidr_blocks", false)
		blocks("ipv6_cidr_blocks", true)
		return r
	}
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(vars)}, Functions: tfFunctions}
	var rules []ingressRule
	for _, b := range sg.Body.Blocks {
		switch {
		case b.Type == "ingress":
			rules = append(rules, eval(ctx, b.Body))
		case b.Type == "dynamic" && len(b.Labels) == 1 && b.Labels[0] == "ingress":
			each, diags := b.Body.Attributes["for_each"].Expr.Value(ctx)
			if diags.HasErrors() {
				t.Fatalf("dynamic ingress for_each: %v", diags)
			}
			var content *hclsyntax.Body
			for _, c := range b.Body.Blocks {
				if c.Type == "content" {
					content = c.Body
				}
			}
			for it := each.ElementIterator(); it.Next(); {
				k, v := it.Element()
				child := ctx.NewChild()
				child.Variables = map[string]cty.Value{"ingress": cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})}
				rules = append(rules, eval(child, content))
			}
		}
	}
	return rules
}

// TestTerraformOpensOnlyFleetPorts: the security group opens to other VMs of the fleet the
// ports they use (NATS routes between control VMs, leaf connections from edges), as the fleet
// file sets them, and nothing else: a port range from the route to the leaf port also opened
// the control API (7070) and everything between to every fleet address.
func TestTerraformOpensOnlyFleetPorts(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*Fleet)
	}{
		{"default ports", func(*Fleet) {}},
		{"ports of the fleet file", func(f *Fleet) {
			f.NATS.ClusterPort, f.NATS.LeafPort, f.Control.APIPort = 16222, 17422, 17070
			f.Edge.HTTPPort, f.DNS.Port, f.Edge.AdminPort, f.DNS.AdminPort = 8080, 5353, 19080, 19153
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := loadExample(t)
			tt.edit(f)
			if errs := f.validate(); len(errs) > 0 {
				t.Fatal(errs.Err())
			}
			files, err := Render(f, RenderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			const control, edge, admin, admin6, world = "192.0.2.1/32", "192.0.2.2/32", "198.51.100.0/24", "2001:db8:ad::/48", "0.0.0.0/0"
			list := func(s ...string) cty.Value {
				var vs []cty.Value
				for _, x := range s {
					vs = append(vs, cty.StringVal(x))
				}
				return cty.ListVal(vs)
			}
			rules := securityGroupIngress(t, map[string]cty.Value{
				"ports":         renderedJSON(t, files, "ports.json"),
				"control_cidrs": list(control),
				"edge_cidrs":    list(edge),
				"fleet_cidrs":   list(control, edge),
				"admin_cidrs":   list(admin, admin6),
			})
			opened := map[string][]string{} // source -> "proto/port"
			for _, r := range rules {
				if r.from != r.to {
					t.Errorf("ingress %s %d-%d from %v opens a port range: every port between is open too", r.proto, r.from, r.to, r.cidrs)
				}
				port := fmt.Sprintf("%s/%d", r.proto, r.from)
				if r.from != r.to {
					port += fmt.Sprintf("-%d", r.to)
				}
				for _, c := range r.cidrs {
					opened[c] = append(opened[c], port)
				}
			}
			check := func(source, what string, want ...string) {
				got := opened[source]
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s may reach %v, want exactly %v", what, got, want)
				}
			}
			check(control, "other control VMs", fmt.Sprintf("tcp/%d", f.NATS.ClusterPort))
			check(edge, "edge VMs", fmt.Sprintf("tcp/%d", f.NATS.LeafPort))
			for _, a := range []string{admin, admin6} {
				check(a, "admin_cidrs "+a, "tcp/22", fmt.Sprintf("tcp/%d", f.Control.APIPort),
					fmt.Sprintf("tcp/%d", f.Edge.AdminPort), fmt.Sprintf("tcp/%d", f.DNS.AdminPort))
			}
			check(world, "the internet", fmt.Sprintf("tcp/%d", f.Edge.HTTPPort), fmt.Sprintf("tcp/%d", f.DNS.Port),
				fmt.Sprintf("udp/%d", f.DNS.Port))
			// The fleet's ipv6 addresses are announced in AAAA answers and NS glue.
			check("::/0", "the internet over IPv6", fmt.Sprintf("tcp/%d", f.Edge.HTTPPort), fmt.Sprintf("tcp/%d", f.DNS.Port),
				fmt.Sprintf("udp/%d", f.DNS.Port))
		})
	}
	// The root module passes the rendered ports and the two address lists to every region.
	for _, b := range rootModules(t) {
		for _, a := range []string{"ports", "control_cidrs", "edge_cidrs"} {
			if b.Body.Attributes[a] == nil {
				t.Errorf("module %s is not given %s", b.Labels[0], a)
			}
		}
	}
	var ports map[string]int
	files, err := Render(loadExample(t), RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(files["ports.json"], &ports); err != nil || ports["nats_cluster"] != DefaultClusterPort {
		t.Errorf("ports.json = %s (%v), want the NATS cluster port %d among others", files["ports.json"], err, DefaultClusterPort)
	}
}
