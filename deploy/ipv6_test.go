package deploy

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
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
	vms := map[string]cty.Value{}
	for it := renderedJSON(t, files, "vms.json").ElementIterator(); it.Next(); {
		_, vm := it.Element()
		vms[vm.GetAttr("name").AsString()] = vm
	}

	vm := regionModule(t, "aws_instance")
	addrs := vm.Body.Attributes["ipv6_addresses"]
	if addrs == nil {
		t.Fatal("aws_instance sets no ipv6_addresses: the fleet's ipv6 addresses, which DNS announces, will not exist on the VMs")
	}
	type precondition struct{ condition, message hclsyntax.Expression }
	var preconditions []precondition
	for _, b := range vm.Body.Blocks {
		if b.Type != "lifecycle" {
			continue
		}
		for _, p := range b.Body.Blocks {
			if p.Type == "precondition" {
				preconditions = append(preconditions, precondition{p.Body.Attributes["condition"].Expr, p.Body.Attributes["error_message"].Expr})
			}
		}
	}

	subnet := func(ipv6CIDR string) cty.Value {
		return cty.TupleVal([]cty.Value{cty.ObjectVal(map[string]cty.Value{
			"vpc_id": cty.StringVal("vpc-0123"), "ipv6_cidr_block": cty.StringVal(ipv6CIDR)})})
	}
	subnets := []struct {
		name     string
		id       cty.Value // var.subnet_id
		data     cty.Value // data.aws_subnet.vm
		hasRange bool
	}{
		{"subnet with an IPv6 range", cty.StringVal("subnet-0123"), subnet("2001:db8:100::/64"), true},
		{"subnet without an IPv6 range", cty.StringVal("subnet-0123"), subnet(""), false},
		{"no subnet (default VPC)", cty.NullVal(cty.String), cty.EmptyTupleVal, false},
	}
	want := map[string]string{"ctl-3": "2001:db8:300::13", "fra-edge-1": "2001:db8:100::101", "nrt-edge-1": ""}
	for name, addr := range want {
		v, ok := vms[name]
		if !ok {
			t.Fatalf("vms.json lists no %s", name)
		}
		// The module receives vms as map(any): objects whose attributes differ become maps of
		// strings. The expressions must work on both.
		asMap, err := convert.Convert(v, cty.Map(cty.String))
		if err != nil {
			t.Fatal(err)
		}
		for _, value := range []cty.Value{v, asMap} {
			for _, sn := range subnets {
				ctx := &hcl.EvalContext{
					Variables: map[string]cty.Value{
						"each": cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(name), "value": value}),
						"var":  cty.ObjectVal(map[string]cty.Value{"subnet_id": sn.id}),
						"data": cty.ObjectVal(map[string]cty.Value{"aws_subnet": cty.ObjectVal(map[string]cty.Value{"vm": sn.data})}),
					},
					Functions: tfFunctions,
				}
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

				var refused []string
				for _, p := range preconditions {
					ok, diags := p.condition.Value(ctx)
					if diags.HasErrors() {
						t.Fatalf("%s, %s: precondition: %v", name, sn.name, diags)
					}
					if ok.False() {
						msg, diags := p.message.Value(ctx)
						if diags.HasErrors() {
							t.Fatalf("%s, %s: error_message: %v", name, sn.name, diags)
						}
						refused = append(refused, msg.AsString())
					}
				}
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
