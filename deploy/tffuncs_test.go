package deploy

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// Terraform's own functions live in its internal packages, which cannot be imported: these
// are written after its documentation, for the arguments the example passes, and
// TestLongTerraformAgrees compares them with terraform itself.

// tfAllTrue is alltrue(list): whether every element is true (true for an empty list).
var tfAllTrue = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
	Type:   function.StaticReturnType(cty.Bool),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		for it := args[0].ElementIterator(); it.Next(); {
			if _, v := it.Element(); v.IsNull() || v.False() {
				return cty.False, nil
			}
		}
		return cty.True, nil
	},
})

// tfStrContains is strcontains(s, substr).
var tfStrContains = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}, {Name: "substr", Type: cty.String}},
	Type:   function.StaticReturnType(cty.Bool),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.BoolVal(strings.Contains(args[0].AsString(), args[1].AsString())), nil
	},
})

// tfCoalesce is coalesce(vals...) for strings: the first argument neither null nor empty
// (Terraform's skips "" too, unlike cty's), an error when there is none.
var tfCoalesce = function.New(&function.Spec{
	VarParam: &function.Parameter{Name: "vals", Type: cty.String, AllowNull: true},
	Type:     function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		for _, v := range args {
			if !v.IsNull() && v.AsString() != "" {
				return v, nil
			}
		}
		return cty.NilVal, errors.New("no non-null, non-empty-string arguments")
	},
})

// parseTFCIDR parses prefix as Terraform's CIDR functions do (Go's net.ParseCIDR, whose
// network form Terraform returns).
func parseTFCIDR(prefix string) (*net.IPNet, error) {
	_, n, err := net.ParseCIDR(prefix)
	if err != nil {
		return nil, fmt.Errorf("invalid CIDR expression: %w", err)
	}
	return n, nil
}

// tfCIDRSubnet is cidrsubnet(prefix, newbits, netnum) for newbits 0 and netnum 0 alone: the
// prefix in its network form.
var tfCIDRSubnet = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "newbits", Type: cty.Number}, {Name: "netnum", Type: cty.Number}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		if !args[1].RawEquals(cty.Zero) || !args[2].RawEquals(cty.Zero) {
			return cty.NilVal, errors.New("the tests' cidrsubnet takes newbits 0 and netnum 0 only")
		}
		n, err := parseTFCIDR(args[0].AsString())
		if err != nil {
			return cty.NilVal, err
		}
		return cty.StringVal(n.String()), nil
	},
})

// tfCIDRHost is cidrhost(prefix, hostnum) for hostnum 0 alone: the network address.
var tfCIDRHost = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "hostnum", Type: cty.Number}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		if !args[1].RawEquals(cty.Zero) {
			return cty.NilVal, errors.New("the tests' cidrhost takes hostnum 0 only")
		}
		n, err := parseTFCIDR(args[0].AsString())
		if err != nil {
			return cty.NilVal, err
		}
		return cty.StringVal(n.IP.String()), nil
	},
})
