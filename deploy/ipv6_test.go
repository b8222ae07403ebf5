package deploy

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
		says     string // what a refusal says of the subnet
	}{
		// One region's subnets, as the example fleet's addresses need them (TestExampleRegionsFitOneSubnet).
		{"subnet with an IPv6 range", cty.StringVal("subnet-0123"), awsSubnet("10.0.0.0/8", "2001:db8:100::/64"), true, ""},
		{"subnet with another IPv6 range", cty.StringVal("subnet-0123"), awsSubnet("10.0.0.0/8", "2001:db8:101::/64"), false, "subnet-0123 has 2001:db8:101::/64"},
		{"subnet without an IPv6 range", cty.StringVal("subnet-0123"), awsSubnet("10.0.0.0/8", ""), false, "subnet-0123 has no IPv6 range"},
		// The provider sets ipv6_cidr_block only from an associated range: one that never had
		// any may be read as null, which a string template refuses to print (plan then failed
		// with "Invalid template interpolation value" instead of this refusal).
		{"subnet without an IPv6 range (null)", cty.StringVal("subnet-0123"), awsSubnetV6("10.0.0.0/8", cty.NullVal(cty.String)), false, "subnet-0123 has no IPv6 range"},
		{"no subnet (default VPC)", cty.NullVal(cty.String), cty.EmptyTupleVal, false, "none is set"},
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
				case addr != "" && !sn.hasRange && (!saysIPv6 || !strings.Contains(strings.Join(refused, "\n"), sn.says)):
					t.Errorf("%s (ipv6 %s), %s: plan refuses %q; want its ipv6 named, and %q: AWS has no address to give it", name, addr, sn.name, refused, sn.says)
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

// TestTerraformKeepsInstancesForIPv6: the AWS provider replaces an instance whose
// ipv6_addresses change (ForceNew), so once the example set them, every instance created
// before (whose fleet file already listed ipv6) was planned for replacement: control VMs and
// their JetStream data with them. The example must ignore changes to ipv6_addresses and
// instead refuse, at plan, an instance that lacks its fleet ipv6, naming the VM and the
// command that assigns the address in place; an instance that has it (however the fleet
// file writes it), or a VM without ipv6, passes. TestLongTerraformKeepsInstances runs this
// in terraform with the real provider.
func TestTerraformKeepsInstancesForIPv6(t *testing.T) {
	var ignored []string
	for _, b := range regionModule(t, "aws_instance").Body.Blocks {
		if b.Type != "lifecycle" || b.Body.Attributes["ignore_changes"] == nil {
			continue
		}
		exprs, diags := hcl.ExprList(b.Body.Attributes["ignore_changes"].Expr)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		for _, e := range exprs {
			tr, diags := hcl.AbsTraversalForExpr(e)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			ignored = append(ignored, tr.RootName())
		}
	}
	for _, a := range []string{"user_data_base64", "ipv6_addresses"} {
		if !slices.Contains(ignored, a) {
			t.Errorf("aws_instance ignores changes to %v, not %s: a change to it replaces running VMs", ignored, a)
		}
	}

	post := instanceChecks(t, "postcondition")
	list := func(addrs ...string) cty.Value {
		if len(addrs) == 0 {
			return cty.ListValEmpty(cty.String)
		}
		var vs []cty.Value
		for _, a := range addrs {
			vs = append(vs, cty.StringVal(a))
		}
		return cty.ListVal(vs)
	}
	const cmd = "aws ec2 assign-ipv6-addresses --region eu-central-1 --network-interface-id eni-0123 --ipv6-addresses "
	for _, tt := range []struct {
		name  string
		ipv6  string    // the fleet file's ("": none)
		has   cty.Value // self.ipv6_addresses
		wants []string  // what the refusal says (nil: none)
	}{
		{"created with it", "2001:db8:100::11", list("2001:db8:100::11"), nil},
		{"assigned in place beside another", "2001:db8:100::11", list("2001:db8:100::abc", "2001:db8:100::11"), nil},
		{"written otherwise in the fleet file", "2001:DB8:100:0::11", list("2001:db8:100::11"), nil},
		{"no ipv6 in the fleet file", "", list(), nil},
		{"no ipv6 in the fleet file, AWS gave one", "", list("2001:db8:100::abc"), nil},
		{"created before the example set it", "2001:db8:100::11", list(),
			[]string{"ctl-1 (i-0123)", "ipv6 2001:db8:100::11", "has none", cmd + "2001:db8:100::11", "-replace"}},
		{"null", "2001:db8:100::11", cty.NullVal(cty.List(cty.String)),
			[]string{"ctl-1 (i-0123)", "has none", cmd + "2001:db8:100::11"}},
		{"fleet ipv6 changed", "2001:db8:100::12", list("2001:db8:100::11"),
			[]string{"ctl-1 (i-0123)", "ipv6 2001:db8:100::12", "has 2001:db8:100::11", cmd + "2001:db8:100::12"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			attrs := map[string]cty.Value{"name": cty.StringVal("ctl-1"), "role": cty.StringVal("control"),
				"region": cty.StringVal("eu-central-1"), "ipv4": cty.StringVal("203.0.113.11")}
			if tt.ipv6 != "" {
				attrs["ipv6"] = cty.StringVal(tt.ipv6)
			}
			obj := cty.ObjectVal(attrs)
			asMap, err := convert.Convert(obj, cty.Map(cty.String))
			if err != nil {
				t.Fatal(err)
			}
			for _, value := range []cty.Value{obj, asMap} {
				ctx := instanceContext("ctl-1", value, cty.StringVal("subnet-0123"), awsSubnet("10.1.0.0/24", "2001:db8:100::/64"))
				ctx.Variables["self"] = cty.ObjectVal(map[string]cty.Value{"id": cty.StringVal("i-0123"),
					"primary_network_interface_id": cty.StringVal("eni-0123"), "ipv6_addresses": tt.has})
				refused := strings.Join(refusals(t, post, ctx), "\n")
				if tt.wants == nil && refused != "" {
					t.Errorf("plan refuses %q", refused)
				}
				if tt.wants != nil && refused == "" {
					t.Errorf("plan takes an instance with %#v for the fleet's ipv6 %s: DNS announces an address it lacks", tt.has, tt.ipv6)
				}
				for _, w := range tt.wants {
					if !strings.Contains(refused, w) {
						t.Errorf("plan refuses %q, which does not say %q", refused, w)
					}
				}
			}
		})
	}
}

// tfTestHeader starts each terraform test file of TestLongTerraformKeepsInstances: the real
// AWS provider, offline (fake credentials, nothing asked of AWS), the region module's
// variables, and every data source and resource but aws_instance overridden, so that the
// provider itself plans the instance, ForceNew and all.
const tfTestHeader = `
provider "aws" {
  region                      = "eu-central-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

variables {
  fleet_name    = "example"
  control_cidrs = ["203.0.113.11/32"]
  edge_cidrs    = []
  admin_cidrs   = []
  ssh_key_name  = null
  instance_type = { control = "t3.medium", edge = "c6i.large" }
  ports         = { http = 80, dns = 53, nats_cluster = 6222, nats_leaf = 7422, control_api = 7070, edge_admin = 9080, dns_admin = 9153 }
  subnet_id     = "subnet-0123"
}

override_data {
  target = data.aws_ami.debian
  values = { id = "ami-0123" }
}
override_data {
  target = data.aws_subnet.vm
  values = { vpc_id = "vpc-0123", cidr_block = "10.1.0.0/24", ipv6_cidr_block = "2001:db8:100::/64" }
}
override_resource {
  target = aws_security_group.meridian
  values = { id = "sg-0123" }
}
override_resource {
  target = aws_eip.vm
  values = { id = "eipalloc-0123" }
}
override_resource {
  target = aws_eip_association.vm
  values = { id = "eipassoc-0123" }
}
`

// tfTestVMs is the module's vms with ctl-1 alone, whose fleet ipv6 is ipv6 ("": none).
func tfTestVMs(ipv6 string) string {
	v6 := ""
	if ipv6 != "" {
		v6 = fmt.Sprintf("ipv6 = %q, ", ipv6)
	}
	return `{ "ctl-1" = { name = "ctl-1", role = "control", region = "eu-central-1", ipv4 = "203.0.113.11", ` + v6 +
		`private_ipv4 = "10.1.0.10", user_data = "ctl-1/user-data" } }`
}

// tfTestExisting makes the run's apply record ctl-1 as an instance that exists with the IPv6
// addresses addrs (an HCL list), as a refresh reads it.
func tfTestExisting(addrs string) string {
	return `
  override_resource {
    target = aws_instance.vm
    values = {
      id                           = "i-0123"
      ami                          = "ami-0123"
      subnet_id                    = "subnet-0123"
      private_ip                   = "10.1.0.10"
      primary_network_interface_id = "eni-0123"
      ipv6_addresses               = ` + addrs + `
    }
  }`
}

// TestLongTerraformKeepsInstances (MERIDIAN_LONG=1, with terraform and the AWS provider in a
// local provider mirror: MERIDIAN_TF_PLUGIN_DIR, /opt/tf-plugins when unset) runs terraform
// test on the region module with the real provider: an instance created before the example
// set ipv6_addresses is not replaced, and plan refuses it with the postcondition; replaced on
// purpose, or with the address assigned in place, it passes; a new instance is planned with
// its address; a subnet whose ipv6_cidr_block is null is refused by the precondition.
func TestLongTerraformKeepsInstances(t *testing.T) {
	tf := longTool(t, "terraform")
	mirror := cmp.Or(os.Getenv("MERIDIAN_TF_PLUGIN_DIR"), "/opt/tf-plugins")
	if _, err := os.Stat(filepath.Join(mirror, "registry.terraform.io", "hashicorp", "aws")); err != nil {
		t.Skipf("no AWS provider in the mirror %s (MERIDIAN_TF_PLUGIN_DIR): %v", mirror, err)
	}
	dir := t.TempDir()
	module, err := os.ReadFile(filepath.Join("terraform", "region", "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	putFileMode(t, filepath.Join(dir, "region", "main.tf"), string(module), 0o644)
	putFileMode(t, filepath.Join(dir, "rendered", "ctl-1", "user-data"), "#cloud-config\n", 0o644)
	putFileMode(t, filepath.Join(dir, "cli.tfrc"), fmt.Sprintf(`provider_installation {
  filesystem_mirror {
    path = %q
  }
}
`, mirror), 0o644)

	const addr = "2001:db8:100::11"
	files := map[string]string{
		// Before: ctl-1 created without IPv6, its fleet file listing one. Then ForceNew made
		// the plan replace it, and the postcondition would pass on the replacement: expect
		// the failure.
		"upgrade": `
run "applied_before" {
  variables { vms = ` + tfTestVMs("") + ` }` + tfTestExisting("[]") + `
}

run "upgrade" {
  command = plan
  plan_options { refresh = false }
  variables { vms = ` + tfTestVMs(addr) + ` }
  expect_failures = [aws_instance.vm]
}

run "replace_on_purpose" {
  command = plan
  plan_options {
    refresh = false
    replace = [aws_instance.vm["ctl-1"]]
  }
  variables { vms = ` + tfTestVMs(addr) + ` }
  assert {
    condition     = aws_instance.vm["ctl-1"].ipv6_addresses == tolist(["` + addr + `"])
    error_message = "the replacement is planned without its address"
  }
}
`,
		// After aws ec2 assign-ipv6-addresses: kept, the fleet file writing it either way.
		"assigned": `
run "assigned" {
  variables { vms = ` + tfTestVMs("") + ` }` + tfTestExisting(`["`+addr+`"]`) + `
}

run "plan" {
  command = plan
  plan_options { refresh = false }
  variables { vms = ` + tfTestVMs(addr) + ` }
  assert {
    condition     = aws_instance.vm["ctl-1"].id == "i-0123"
    error_message = "ctl-1 is replaced"
  }
}

run "plan_upper_case" {
  command = plan
  plan_options { refresh = false }
  variables { vms = ` + tfTestVMs("2001:DB8:100:0::11") + ` }
  assert {
    condition     = aws_instance.vm["ctl-1"].id == "i-0123"
    error_message = "ctl-1 is replaced"
  }
}
`,
		"fresh": `
run "with_ipv6" {
  command = plan
  variables { vms = ` + tfTestVMs(addr) + ` }
  assert {
    condition     = aws_instance.vm["ctl-1"].ipv6_addresses == tolist(["` + addr + `"])
    error_message = "ctl-1 is planned without its address"
  }
}

run "without_ipv6" {
  command = plan
  variables { vms = ` + tfTestVMs("") + ` }
}

run "subnet_ipv6_null" {
  command = plan
  variables { vms = ` + tfTestVMs(addr) + ` }
  override_data {
    target = data.aws_subnet.vm
    values = { vpc_id = "vpc-0123", cidr_block = "10.1.0.0/24", ipv6_cidr_block = null }
  }
  expect_failures = [aws_instance.vm]
}
`,
	}
	for name, runs := range files {
		putFileMode(t, filepath.Join(dir, "region", "tests", name+".tftest.hcl"), tfTestHeader+runs, 0o644)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(tf, args...)
		cmd.Dir = filepath.Join(dir, "region")
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+filepath.Join(dir, "cli.tfrc"), "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("terraform %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("init", "-backend=false", "-input=false", "-no-color")
	run("validate", "-no-color")
	out := run("test", "-no-color", "-var", "render_dir="+filepath.Join(dir, "rendered"))
	t.Log(out)
}
