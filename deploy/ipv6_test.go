package deploy

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// tfOutput returns the expression of the output block name in the Terraform file at path.
func tfOutput(t *testing.T, path, name string) hclsyntax.Expression {
	t.Helper()
	file, diags := hclparse.NewParser().ParseHCLFile(path)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for _, b := range file.Body.(*hclsyntax.Body).Blocks {
		if b.Type == "output" && len(b.Labels) == 1 && b.Labels[0] == name && b.Body.Attributes["value"] != nil {
			return b.Body.Attributes["value"].Expr
		}
	}
	t.Fatalf("%s has no output %q", path, name)
	return nil
}

// TestTerraformSetsIPv6: the routing DNS hands out every node's fleet ipv6 in AAAA answers
// (and a control VM's as NS glue), so the Terraform example must create each instance with
// the ipv6 its fleet entry gives, refuse at plan one whose region's subnet has no IPv6 range
// to take it from, and output the addresses. Before, the instances had no IPv6 at all: every
// client that prefers IPv6 was sent to an address no VM had.
func TestTerraformSetsIPv6(t *testing.T) {
	f := loadExample(t)
	f.PoPs[2].Nodes[0].IPv6 = "" // nrt-edge-1: a VM without one
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vms := vmsAsModuleSees(t, files)

	vm := regionModule(t, "aws_instance")
	addrs := vm.Body.Attributes["ipv6_addresses"]
	if addrs == nil {
		t.Fatal("aws_instance sets no ipv6_addresses: the fleet's ipv6 addresses, which DNS announces, will not exist on the VMs")
	}
	preconditions := instancePreconditions(t)

	subnets := []struct {
		name     string
		id       cty.Value // var.subnet_id
		data     cty.Value // data.aws_subnet.vm
		hasRange bool
	}{
		// One region's subnets, as the example fleet's addresses need them (TestExampleRegionsFitOneSubnet).
		{"subnet with an IPv6 range", cty.StringVal("subnet-0123"), awsSubnet("10.0.0.0/8", "2001:db8:100::/64"), true},
		{"subnet with another IPv6 range", cty.StringVal("subnet-0123"), awsSubnet("10.0.0.0/8", "2001:db8:101::/64"), false},
		{"subnet without an IPv6 range", cty.StringVal("subnet-0123"), awsSubnet("10.0.0.0/8", ""), false},
		{"no subnet (default VPC)", cty.NullVal(cty.String), cty.EmptyTupleVal, false},
	}
	want := map[string]string{"ctl-1": "2001:db8:100::11", "fra-edge-1": "2001:db8:100::101", "nrt-edge-1": ""}
	for name, addr := range want {
		values, ok := vms[name]
		if !ok {
			t.Fatalf("vms.json lists no %s", name)
		}
		for _, value := range values {
			for _, sn := range subnets {
				ctx := instanceContext(name, value, sn.id, sn.data)
				got, diags := addrs.Expr.Value(ctx)
				switch {
				case diags.HasErrors():
					t.Errorf("%s: ipv6_addresses: %v", name, diags)
				case addr == "" && !got.IsNull():
					t.Errorf("%s has no ipv6, but ipv6_addresses = %#v", name, got)
				case addr != "" && (got.IsNull() || !got.CanIterateElements() || got.LengthInt() != 1 ||
					got.Index(cty.NumberIntVal(0)).AsString() != addr):
					t.Errorf("%s: ipv6_addresses = %#v, want [%s] (its ipv6)", name, got, addr)
				}

				refused := refusals(t, preconditions, ctx)
				saysIPv6 := strings.Contains(strings.Join(refused, "\n"), "ipv6 "+addr)
				switch {
				case addr != "" && !sn.hasRange && !saysIPv6:
					t.Errorf("%s (ipv6 %s), %s: plan refuses %q; want its ipv6 named: AWS has no address to give it", name, addr, sn.name, refused)
				case addr == "" && len(refused) > 0, addr != "" && sn.hasRange && saysIPv6:
					t.Errorf("%s (ipv6 %q), %s: plan refuses %q", name, addr, sn.name, refused)
				}
			}
		}
	}

	// The operator checks the addresses against the fleet file: each region's, and all of them.
	out := tfOutput(t, filepath.Join("terraform", "region", "main.tf"), "public_ipv6")
	instances := cty.ObjectVal(map[string]cty.Value{
		"fra-edge-1": cty.ObjectVal(map[string]cty.Value{"ipv6_addresses": cty.ListVal([]cty.Value{cty.StringVal("2001:db8:100::101")})}),
		"fra-edge-2": cty.ObjectVal(map[string]cty.Value{"ipv6_addresses": cty.ListValEmpty(cty.String)}),
	})
	got, diags := out.Value(&hcl.EvalContext{
		Variables: map[string]cty.Value{"aws_instance": cty.ObjectVal(map[string]cty.Value{"vm": instances})},
		Functions: tfFunctions,
	})
	if diags.HasErrors() {
		t.Fatalf("output public_ipv6: %v", diags)
	}
	if a := got.GetAttr("fra-edge-1"); a.IsNull() || a.AsString() != "2001:db8:100::101" {
		t.Errorf("output public_ipv6[fra-edge-1] = %#v, want 2001:db8:100::101", a)
	}
	if a := got.GetAttr("fra-edge-2"); !a.IsNull() {
		t.Errorf("output public_ipv6[fra-edge-2] = %#v, want null (no IPv6)", a)
	}
	root := tfOutput(t, filepath.Join("terraform", "main.tf"), "public_ipv6")
	merged := map[string]bool{}
	for _, tr := range root.Variables() {
		if len(tr) == 3 && tr.RootName() == "module" {
			merged[tr[1].(hcl.TraverseAttr).Name+"."+tr[2].(hcl.TraverseAttr).Name] = true
		}
	}
	for _, m := range rootModules(t) {
		if !merged[m.Labels[0]+".public_ipv6"] {
			t.Errorf("output public_ipv6 of terraform/main.tf leaves out module %s", m.Labels[0])
		}
	}
}
