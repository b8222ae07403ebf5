package deploy

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// tfCheck is a Terraform condition and the message it gives when false: a variable's
// validation or a resource's precondition.
type tfCheck struct{ condition, message hclsyntax.Expression }

// tfVariableChecks returns the validations of variable name in terraform/variables.tf.
func tfVariableChecks(t *testing.T, name string) []tfCheck {
	t.Helper()
	file, diags := hclparse.NewParser().ParseHCLFile(filepath.Join("terraform", "variables.tf"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var checks []tfCheck
	for _, b := range file.Body.(*hclsyntax.Body).Blocks {
		if b.Type != "variable" || len(b.Labels) != 1 || b.Labels[0] != name {
			continue
		}
		for _, v := range b.Body.Blocks {
			if v.Type == "validation" {
				checks = append(checks, tfCheck{v.Body.Attributes["condition"].Expr, v.Body.Attributes["error_message"].Expr})
			}
		}
	}
	return checks
}

// instancePreconditions returns the preconditions of the region module's aws_instance.
func instancePreconditions(t *testing.T) []tfCheck {
	t.Helper()
	return instanceChecks(t, "precondition")
}

// instanceChecks returns the region module's aws_instance's lifecycle blocks of type kind
// (precondition, postcondition).
func instanceChecks(t *testing.T, kind string) []tfCheck {
	t.Helper()
	var checks []tfCheck
	for _, b := range regionModule(t, "aws_instance").Body.Blocks {
		if b.Type != "lifecycle" {
			continue
		}
		for _, p := range b.Body.Blocks {
			if p.Type == kind {
				checks = append(checks, tfCheck{p.Body.Attributes["condition"].Expr, p.Body.Attributes["error_message"].Expr})
			}
		}
	}
	return checks
}

// refusals evaluates checks in ctx and returns the messages of those that fail, as plan would
// print them.
func refusals(t *testing.T, checks []tfCheck, ctx *hcl.EvalContext) []string {
	t.Helper()
	var refused []string
	for _, c := range checks {
		ok, diags := c.condition.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("condition: %v", diags)
		}
		if ok.True() {
			continue
		}
		msg, diags := c.message.Value(ctx)
		if diags.HasErrors() {
			t.Fatalf("error_message: %v", diags)
		}
		refused = append(refused, msg.AsString())
	}
	return refused
}

// instanceContext is what an aws_instance's expressions see for VM vm (as vms.json lists it,
// or converted to a map of strings as map(any) makes it) in a region whose subnet_id is id
// and whose data.aws_subnet.vm is subnet.
func instanceContext(name string, vm, id, subnet cty.Value) *hcl.EvalContext {
	return &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"each": cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(name), "value": vm}),
			"var":  cty.ObjectVal(map[string]cty.Value{"subnet_id": id}),
			"data": cty.ObjectVal(map[string]cty.Value{"aws_subnet": cty.ObjectVal(map[string]cty.Value{"vm": subnet})}),
		},
		Functions: tfFunctions,
	}
}

// awsSubnet is data.aws_subnet.vm for a subnet with the IPv4 range v4 and the IPv6 range v6
// ("": none).
func awsSubnet(v4, v6 string) cty.Value {
	return awsSubnetV6(v4, cty.StringVal(v6))
}

// awsSubnetV6 is awsSubnet with ipv6_cidr_block v6, which may be null: the provider leaves
// the attribute unset for a subnet that never had an IPv6 range.
func awsSubnetV6(v4 string, v6 cty.Value) cty.Value {
	return cty.TupleVal([]cty.Value{cty.ObjectVal(map[string]cty.Value{
		"vpc_id": cty.StringVal("vpc-0123"), "cidr_block": cty.StringVal(v4), "ipv6_cidr_block": v6})})
}

// vmsAsModuleSees returns vms.json's VMs by name, each as it is and as a map of strings: the
// module takes vms as map(any), which makes objects whose attributes differ maps of strings.
// Expressions must work on both.
func vmsAsModuleSees(t *testing.T, files map[string][]byte) map[string][]cty.Value {
	t.Helper()
	vms := map[string][]cty.Value{}
	for it := renderedJSON(t, files, "vms.json").ElementIterator(); it.Next(); {
		_, vm := it.Element()
		asMap, err := convert.Convert(vm, cty.Map(cty.String))
		if err != nil {
			t.Fatal(err)
		}
		vms[vm.GetAttr("name").AsString()] = []cty.Value{vm, asMap}
	}
	return vms
}

// TestTerraformRefusesMalformedAdminCIDRs: admin_cidrs go into the security groups' rules,
// where the AWS provider takes only a block in its network form, and the region module sorts
// them by family by looking for ':'. Plan must refuse anything else, naming the variable and
// each bad block (and no good one); before, nothing checked them.
func TestTerraformRefusesMalformedAdminCIDRs(t *testing.T) {
	checks := tfVariableChecks(t, "admin_cidrs")
	if len(checks) == 0 {
		t.Fatal(`variable "admin_cidrs" has no validation`)
	}
	const good = "192.0.2.0/28" // listed before each case: never named
	for _, tt := range adminCIDRCases {
		t.Run(tt.name, func(t *testing.T) {
			ctx := &hcl.EvalContext{
				Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{
					"admin_cidrs": cty.ListVal([]cty.Value{cty.StringVal(good), cty.StringVal(tt.cidr)})})},
				Functions: tfFunctions,
			}
			refused := strings.Join(refusals(t, checks, ctx), "\n")
			switch {
			case tt.ok && refused != "":
				t.Errorf("admin_cidrs %q refused: %s", tt.cidr, refused)
			case !tt.ok && !strings.Contains(refused, strconv.Quote(tt.cidr)):
				t.Errorf("admin_cidrs %q: refusal %q; want it refused by name", tt.cidr, refused)
			case strings.Contains(refused, strconv.Quote(good)):
				t.Errorf("admin_cidrs %q: refusal %q names the good %s too", tt.cidr, refused, good)
			}
		})
	}
}

// adminCIDRCases are admin_cidrs blocks and whether plan takes them.
var adminCIDRCases = []struct {
	name, cidr string
	ok         bool
}{
	{"ipv4 network", "198.51.100.0/24", true},
	{"ipv4 host", "198.51.100.7/32", true},
	{"ipv4 everyone", "0.0.0.0/0", true},
	{"ipv6 network", "2001:db8:ad::/48", true},
	{"ipv6 host", "2001:db8::7/128", true},
	{"ipv6 everyone", "::/0", true},
	{"no prefix length", "198.51.100.7", false},
	{"ipv4 host bits", "198.51.100.7/24", false},
	{"ipv6 host bits", "2001:db8:ad::1/48", false},
	// The provider asks "did you mean 2001:db8:ad::/48?".
	{"ipv6 upper case", "2001:DB8:AD::/48", false},
	{"ipv6 leading zeros", "2001:0db8:ad::/48", false},
	{"ipv4-mapped", "::ffff:198.51.100.0/120", false},
	{"prefix too long", "198.51.100.0/33", false},
	{"space", " 198.51.100.0/24", false},
	{"empty", "", false},
	{"name", "admin.example.com/32", false},
}

// TestExampleRegionsFitOneSubnet: the Terraform example puts each region's VMs in the one
// subnet subnet_ids gives it, so the example fleet's private_ipv4 addresses of a region must
// fit one AWS subnet (a /16 at most) and its ipv6 addresses one (a /64); with such subnets
// plan takes every VM, and with a subnet that does not hold a VM's address it refuses that VM
// naming the address. Before, ctl-1 (10.0.0.11) and fra-edge-1 (10.1.0.11) shared
// eu-central-1: no subnet held both, and AWS refused one of them halfway through an apply.
func TestExampleRegionsFitOneSubnet(t *testing.T) {
	f := loadExample(t)
	files, err := Render(f, RenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := map[string]netip.Prefix{}, map[string]netip.Prefix{}
	fit := func(ranges map[string]netip.Prefix, bits int, vm VM, addr string) {
		if addr == "" {
			return
		}
		a := netip.MustParseAddr(addr)
		r, ok := ranges[vm.Region]
		if !ok {
			r = netip.PrefixFrom(a, bits).Masked()
			ranges[vm.Region] = r
		}
		if !r.Contains(a) {
			t.Errorf("%s (%s, %s): no subnet of %s holds it with the region's other VMs (%s): AWS subnets are /%d at most",
				vm.Name, vm.Region, addr, vm.Region, r, bits)
		}
	}
	for _, vm := range f.VMs() {
		fit(v4, 16, vm, vm.PrivateIPv4)
		fit(v6, 64, vm, vm.IPv6)
	}

	checks := instancePreconditions(t)
	vms := vmsAsModuleSees(t, files)
	other := awsSubnet("172.31.0.0/16", "2001:db8:ffff::/64")
	cidr := func(p netip.Prefix) string {
		if !p.IsValid() {
			return "" // no VM of the region has such an address
		}
		return p.String()
	}
	for _, vm := range f.VMs() {
		region := awsSubnet(cidr(v4[vm.Region]), cidr(v6[vm.Region]))
		for _, value := range vms[vm.Name] {
			if refused := refusals(t, checks, instanceContext(vm.Name, value, cty.StringVal("subnet-0123"), region)); len(refused) > 0 {
				t.Errorf("%s in its region's subnet: plan refuses %q", vm.Name, refused)
			}
			refused := strings.Join(refusals(t, checks, instanceContext(vm.Name, value, cty.StringVal("subnet-0123"), other)), "\n")
			for _, a := range []struct{ field, addr string }{{"private_ipv4", vm.PrivateIPv4}, {"ipv6", vm.IPv6}} {
				if a.addr != "" && !strings.Contains(refused, a.field+" "+a.addr) {
					t.Errorf("%s in a subnet without its %s %s: plan refuses %q; want that named", vm.Name, a.field, a.addr, refused)
				}
			}
		}
	}
}

// TestLongTerraformAgrees (MERIDIAN_LONG=1, with terraform installed) has terraform evaluate
// what the tests evaluate with functions of their own (tffuncs_test.go), and compares: the
// admin_cidrs validation on every case of adminCIDRCases, and each precondition of an
// instance on a subnet that holds its addresses and one that does not.
func TestLongTerraformAgrees(t *testing.T) {
	tf := longTool(t, "terraform")
	// No provider, no module: terraform console evaluates these expressions from the files
	// alone.
	dir := t.TempDir()
	vars, err := os.ReadFile(filepath.Join("terraform", "variables.tf"))
	if err != nil {
		t.Fatal(err)
	}
	putFileMode(t, filepath.Join(dir, "variables.tf"), string(vars), 0o644)
	console := func(t *testing.T, expr string, args ...string) string {
		t.Helper()
		cmd := exec.Command(tf, append([]string{"console"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+os.DevNull, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
		cmd.Stdin = strings.NewReader(expr + "\n")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("terraform console %q: %v\n%s", expr, err, out)
		}
		// The value is the last line; warnings (an invalid -var) come before it.
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return strings.TrimSpace(lines[len(lines)-1])
	}
	validation := tfVariableChecks(t, "admin_cidrs")[0].condition
	src := string(validation.Range().SliceBytes(vars))
	for _, tt := range adminCIDRCases {
		t.Run("admin_cidrs/"+tt.name, func(t *testing.T) {
			got := console(t, src, "-var", "admin_cidrs=["+strconv.Quote(tt.cidr)+"]")
			if want := strconv.FormatBool(tt.ok); got != want {
				t.Errorf("terraform: admin_cidrs %q validation = %s, want %s (as the tests compute)", tt.cidr, got, want)
			}
		})
	}

	// The functions the instance's messages and postcondition call, on what they pass.
	for _, expr := range []string{
		`coalesce(null, "no IPv6 range")`,
		`coalesce("", "no IPv6 range")`,
		`coalesce("2001:db8:100::/64", "no IPv6 range")`,
		`coalesce(try(join(", ", []), null), "none")`,
		`coalesce(try(join(", ", null), null), "none")`,
		`coalesce(try(join(", ", ["2001:db8:100::11", "2001:db8:100::12"]), null), "none")`,
		`cidrhost("2001:DB8:100:0::11/128", 0)`,
		`contains([for a in ["2001:db8:100::abc", "2001:db8:100::11"] : cidrhost("${a}/128", 0)], "2001:db8:100::11")`,
		`try(contains([for a in null : cidrhost("${a}/128", 0)], "2001:db8:100::11"), false)`,
	} {
		t.Run("function/"+expr, func(t *testing.T) {
			e, diags := hclsyntax.ParseExpression([]byte(expr), "expr", hcl.InitialPos)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			v, diags := e.Value(&hcl.EvalContext{Functions: tfFunctions})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			var want string
			switch v.Type() {
			case cty.Bool:
				want = strconv.FormatBool(v.True())
			default:
				want = strconv.Quote(v.AsString()) // console writes a string quoted
			}
			if got := console(t, expr); got != want {
				t.Errorf("terraform says %s, the tests %s", got, want)
			}
		})
	}

	region, err := os.ReadFile(filepath.Join("terraform", "region", "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	checks := instancePreconditions(t)
	for _, tt := range []struct {
		name, private, ipv6, v4, v6 string
	}{
		{"in the subnet", "10.1.0.11", "2001:db8:100::101", "10.1.0.0/24", "2001:db8:100::/64"},
		{"outside the subnet", "10.0.0.11", "2001:db8:101::1", "10.1.0.0/24", "2001:db8:100::/64"},
		{"subnet without ipv6", "10.1.0.11", "2001:db8:100::101", "10.1.0.0/24", ""},
		{"ipv6 subnet is a /56", "10.1.255.254", "2001:db8:100:ff::1", "10.1.0.0/16", "2001:db8:100::/56"},
	} {
		t.Run("precondition/"+tt.name, func(t *testing.T) {
			vm := cty.ObjectVal(map[string]cty.Value{"region": cty.StringVal("eu-central-1"),
				"private_ipv4": cty.StringVal(tt.private), "ipv6": cty.StringVal(tt.ipv6)})
			ctx := instanceContext("fra-edge-1", vm, cty.StringVal("subnet-0123"), awsSubnet(tt.v4, tt.v6))
			for i, c := range checks {
				want, diags := c.condition.Value(ctx)
				if diags.HasErrors() {
					t.Fatal(diags)
				}
				// The expression with each.value, var and data replaced by their values, as
				// terraform console reads it.
				expr := strings.NewReplacer(
					"each.value.private_ipv4", strconv.Quote(tt.private), "each.value.ipv6", strconv.Quote(tt.ipv6),
					"data.aws_subnet.vm[0].cidr_block", strconv.Quote(tt.v4), "data.aws_subnet.vm[0].ipv6_cidr_block", strconv.Quote(tt.v6),
				).Replace(string(c.condition.Range().SliceBytes(region)))
				expr = strings.Join(strings.Fields(expr), " ")
				if got := console(t, expr); got != strconv.FormatBool(want.True()) {
					t.Errorf("precondition %d: terraform says %s, the tests %v: %s", i, got, want.True(), expr)
				}
			}
		})
	}
}
