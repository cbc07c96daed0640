package agent

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/sim/policy"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
)

func TestLeastPrivilege(t *testing.T) {
	hs := []spec.Hierarchy{
		{Name: "db", Nodes: []string{"n1", "n2"}, Resources: []spec.Resource{
			{Name: "vip", Type: "ec2", Params: map[string]string{"mode": "route", "cidr": "10.1.0.10/32", "route_tables": "rtb-a,rtb-b"}},
			{Name: "eip", Type: "ec2", Params: map[string]string{"mode": "eip", "allocation_id": "eipalloc-1"}},
			{Name: "app", Type: "app", Params: map[string]string{"restore": "x", "remove": "y", "quickcheck": "z"}},
		}},
	}
	doc := LeastPrivilege(kits.Builtin(), hs, "us-east-1", "123456789012")
	b, _ := json.Marshal(doc)
	parsed, err := policy.Parse(b)
	if err != nil {
		t.Fatalf("the policy does not parse as IAM would: %v\n%s", err, b)
	}
	allow := func(action, resource string) bool {
		return policy.Evaluate([]*policy.Document{parsed}, policy.Request{Action: action, Resource: resource}) == policy.Allow
	}
	rtbA := "arn:aws:ec2:us-east-1:123456789012:route-table/rtb-a"
	for _, tc := range []struct {
		action, resource string
		want             bool
	}{
		{"ec2:ReplaceRoute", rtbA, true},
		{"ec2:CreateRoute", "arn:aws:ec2:us-east-1:123456789012:route-table/rtb-b", true},
		{"ec2:ReplaceRoute", "arn:aws:ec2:us-east-1:123456789012:route-table/rtb-other", false},
		{"ec2:ModifyNetworkInterfaceAttribute", "arn:aws:ec2:us-east-1:123456789012:network-interface/eni-1", true},
		{"ec2:DescribeRouteTables", "*", true},
		{"ec2:DescribeNetworkInterfaces", "*", true},
		{"ec2:AssociateAddress", "arn:aws:ec2:us-east-1:123456789012:elastic-ip/eipalloc-1", true},
		{"ec2:AssociateAddress", "arn:aws:ec2:us-east-1:123456789012:elastic-ip/eipalloc-2", false},
		{"ec2:DisassociateAddress", "arn:aws:ec2:us-east-1:123456789012:elastic-ip/eipalloc-1", false}, // not configured to
		{"sts:DecodeAuthorizationMessage", "*", true},
		{"ec2:DeleteRoute", rtbA, false},
		{"ec2:TerminateInstances", "*", false},
	} {
		if got := allow(tc.action, tc.resource); got != tc.want {
			t.Errorf("%s on %s: allowed=%v, want %v\n%s", tc.action, tc.resource, got, tc.want, b)
		}
	}
	// No cloud resources: an empty policy, no stray permissions.
	empty := LeastPrivilege(kits.Builtin(), []spec.Hierarchy{{Name: "a", Resources: hs[0].Resources[2:]}}, "*", "*")
	if len(empty.Statement) != 0 {
		t.Fatalf("app-only hierarchy needs no AWS permissions: %+v", empty)
	}
	for _, st := range doc.Statement {
		if slices.Contains(st.Action, "*") || strings.Contains(strings.Join(st.Action, ","), "ec2:*") {
			t.Fatalf("wildcard action in %+v", st)
		}
	}
}

func TestSince(t *testing.T) {
	if !upgrade.Newer("0.2.0", "0.1.9") || upgrade.Newer("0.1.0", "0.1.0") || !upgrade.Newer("1.0", "0.9.9") || upgrade.Newer("0.1.0-dev", "0.1.0") {
		t.Fatal("upgrade.Newer")
	}
	doc := PolicyDocument{Version: "2012-10-17", Statement: []PolicyStatement{{Sid: "a", Effect: "Allow", Action: []string{"ec2:ReplaceRoute", "ec2:NewThing"}, Resource: []string{"*"}}}}
	kr, _ := kits.Builtin().With(historyKit{"ec2:NewThing": "0.3.0"})
	got := Since(kr, doc, "0.2.0")
	if len(got.Statement) != 1 || len(got.Statement[0].Action) != 1 || got.Statement[0].Action[0] != "ec2:NewThing" {
		t.Fatalf("Since 0.2.0: %+v", got)
	}
	if got := Since(kr, doc, "0.3.0"); len(got.Statement) != 0 {
		t.Fatalf("Since 0.3.0: %+v", got)
	}
}

// What an upgrade from 0.1.0 adds to the roles: exactly the one action
// 0.2.0 needs (lifeboat iam-policy --since 0.1.0).
func TestSinceFirstRelease(t *testing.T) {
	hs := []spec.Hierarchy{
		{Name: "db", Nodes: []string{"n1", "n2"}, Resources: []spec.Resource{
			{Name: "vip", Type: "ec2", Params: map[string]string{"mode": "route", "cidr": "10.1.0.10/32", "route_tables": "rtb-a,rtb-b"}},
			{Name: "eip", Type: "ec2", Params: map[string]string{"mode": "eip", "allocation_id": "eipalloc-1", "disassociate_on_remove": "true"}},
		}},
	}
	got := Since(kits.Builtin(), LeastPrivilege(kits.Builtin(), hs, "us-east-1", "123456789012"), "0.1.0")
	var acts []string
	for _, st := range got.Statement {
		acts = append(acts, st.Action...)
		if slices.Contains(st.Action, "ec2:DescribeNetworkInterfaces") && !slices.Equal(st.Resource, []string{"*"}) {
			t.Errorf("ec2:DescribeNetworkInterfaces on %v, want *", st.Resource)
		}
	}
	if !slices.Equal(acts, []string{"ec2:DescribeNetworkInterfaces"}) {
		t.Fatalf("--since 0.1.0 = %v, want exactly ec2:DescribeNetworkInterfaces", acts)
	}
	if got := Since(kits.Builtin(), LeastPrivilege(kits.Builtin(), hs, "us-east-1", "123456789012"), "0.2.0"); len(got.Statement) != 0 {
		t.Fatalf("--since 0.2.0: %+v, want nothing", got)
	}
}

// historyKit is a kit that only records when actions were first needed.
type historyKit map[string]string

func (historyKit) Type() string                                     { return "history-test" }
func (historyKit) Validate(map[string]string) []spec.Problem        { return nil }
func (historyKit) New(spec.Resource, kit.Env) (kit.Instance, error) { return nil, nil }
func (h historyKit) FirstNeeded(action string) string               { return h[action] }
