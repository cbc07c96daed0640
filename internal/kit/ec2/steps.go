package ec2

import (
	"fmt"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// step is one AWS call the kit makes, as data. The permissions each
// operation needs, the least-privilege statements, the version that first
// needed each action and the commands that repeat readiness's probes by hand
// (doctor) are all derived from steps; readiness and restore make the
// calls, and a test proves readiness probes exactly the steps that have a
// command.
type step struct {
	action string
	// since is the lifeboat version that first needed the action.
	since string
	mode  string
	// ops are the operations that need it.
	ops []string
	// on is what the action is authorized on: onAny (Describe* calls take
	// no resource-level permission), onRouteTable, onInterface, or
	// onAssociation (AssociateAddress: the address, the interface and its
	// instance).
	on string
	// when, if set, says whether a resource's parameters need the step.
	when func(p map[string]string) bool
	// cli is the AWS CLI command (after "aws ec2") that repeats
	// readiness's probe of this step for route table rtb ("" when the step
	// is not per table); nil: readiness does not probe it.
	cli func(p map[string]string, eni, rtb string) []string
	// perTable: one call per route table.
	perTable bool
}

// What an action is authorized on.
const (
	onAny         = "*"
	onRouteTable  = "route-table"
	onInterface   = "network-interface"
	onAssociation = "association"
)

var (
	restoreOps = []string{kit.OpRestore, kit.OpRecover}
	watchOps   = []string{kit.OpRestore, kit.OpRecover, kit.OpQuickCheck}
)

// steps, in the order readiness probes them: read-only canaries first,
// then the mutating dry runs.
var steps = []step{
	// route mode
	{action: "ec2:DescribeRouteTables", since: "0.1.0", mode: ModeRoute, ops: watchOps, on: onAny, perTable: true,
		cli: func(p map[string]string, eni, rtb string) []string {
			return []string{"describe-route-tables", "--route-table-ids", rtb, "--dry-run"}
		}},
	{action: "ec2:DescribeNetworkInterfaceAttribute", since: "0.1.0", mode: ModeRoute, ops: watchOps, on: onAny,
		cli: func(p map[string]string, eni, rtb string) []string {
			return []string{"describe-network-interface-attribute", "--network-interface-id", eni, "--attribute", "sourceDestCheck", "--dry-run"}
		}},
	// 0.2.0: readiness and restore check that the interface is in the
	// route tables' VPC.
	{action: "ec2:DescribeNetworkInterfaces", since: "0.2.0", mode: ModeRoute, ops: restoreOps, on: onAny,
		cli: func(p map[string]string, eni, rtb string) []string {
			return []string{"describe-network-interfaces", "--network-interface-ids", eni}
		}},
	{action: "ec2:CreateRoute", since: "0.1.0", mode: ModeRoute, ops: restoreOps, on: onRouteTable, perTable: true,
		cli: func(p map[string]string, eni, rtb string) []string {
			return []string{"create-route", "--route-table-id", rtb, "--destination-cidr-block", p[ParamCIDR], "--network-interface-id", eni, "--dry-run"}
		}},
	{action: "ec2:ReplaceRoute", since: "0.1.0", mode: ModeRoute, ops: restoreOps, on: onRouteTable, perTable: true,
		cli: func(p map[string]string, eni, rtb string) []string {
			return []string{"replace-route", "--route-table-id", rtb, "--destination-cidr-block", p[ParamCIDR], "--network-interface-id", eni, "--dry-run"}
		}},
	{action: "ec2:ModifyNetworkInterfaceAttribute", since: "0.1.0", mode: ModeRoute, ops: restoreOps, on: onInterface,
		cli: func(p map[string]string, eni, rtb string) []string {
			return []string{"modify-network-interface-attribute", "--network-interface-id", eni, "--no-source-dest-check", "--dry-run"}
		}},
	// eip mode
	{action: "ec2:DescribeAddresses", since: "0.1.0", mode: ModeEIP, ops: append([]string{kit.OpRemove}, watchOps...), on: onAny,
		cli: func(p map[string]string, eni, rtb string) []string {
			return []string{"describe-addresses", "--allocation-ids", p[ParamAllocationID], "--dry-run"}
		}},
	{action: "ec2:AssociateAddress", since: "0.1.0", mode: ModeEIP, ops: restoreOps, on: onAssociation,
		cli: func(p map[string]string, eni, rtb string) []string {
			args := []string{"associate-address", "--allocation-id", p[ParamAllocationID], "--network-interface-id", eni}
			if ip := p[ParamPrivateIP]; ip != "" {
				args = append(args, "--private-ip-address", ip)
			}
			return append(args, "--allow-reassociation", "--dry-run")
		}},
	{action: "ec2:DisassociateAddress", since: "0.1.0", mode: ModeEIP, ops: []string{kit.OpRemove}, on: onAssociation,
		when: func(p map[string]string) bool { return p[ParamDisassociateOnRemove] == "true" }},
}

// decodeAction is not a step of any operation: the kit uses it, when the
// role allows it, to name the action and resource of a refusal.
const decodeAction = "sts:DecodeAuthorizationMessage"

// FirstNeeded implements kit.History: the version that first needed
// action.
func (*Kit) FirstNeeded(action string) string {
	for _, s := range steps {
		if s.action == action {
			return s.since
		}
	}
	if action == decodeAction {
		return "0.1.0"
	}
	return ""
}

// stepsFor lists the steps a resource's parameters need.
func stepsFor(p map[string]string) []step {
	mode := p[ParamMode]
	if mode != ModeEIP {
		mode = ModeRoute
	}
	var out []step
	for _, s := range steps {
		if s.mode == mode && (s.when == nil || s.when(p)) {
			out = append(out, s)
		}
	}
	return out
}

// Permissions implements kit.PermissionDeclarer.
func (*Kit) Permissions(p map[string]string) map[string][]string {
	out := map[string][]string{kit.OpRestore: {}, kit.OpRecover: {}, kit.OpRemove: {}, kit.OpQuickCheck: {}}
	for _, s := range stepsFor(p) {
		for _, op := range s.ops {
			out[op] = append(out[op], s.action)
		}
	}
	return out
}

// Policy implements kit.PolicyDeclarer: the least-privilege statements for
// one resource, with resource ARNs where EC2 supports them.
func (k *Kit) Policy(p map[string]string, region, account string) []kit.Statement {
	arn := func(kind, id string) string { return fmt.Sprintf("arn:aws:ec2:%s:%s:%s/%s", region, account, kind, id) }
	eni := arn("network-interface", "*")
	if e := p[ParamENI]; e != "" {
		eni = arn("network-interface", e)
	}
	var rtbs []string
	for _, r := range list(p[ParamRouteTables]) {
		rtbs = append(rtbs, arn("route-table", r))
	}
	on := map[string][]string{
		onAny:        {"*"},
		onRouteTable: rtbs,
		onInterface:  {eni},
		// AssociateAddress is authorized on the address, the interface
		// and the instance it belongs to.
		onAssociation: {arn("elastic-ip", p[ParamAllocationID]), eni, arn("instance", "*")},
	}
	var out []kit.Statement
	index := map[string]int{}
	for _, s := range stepsFor(p) {
		i, ok := index[s.on]
		if !ok {
			i = len(out)
			index[s.on] = i
			out = append(out, kit.Statement{Resources: on[s.on]})
		}
		out[i].Actions = append(out[i].Actions, s.action)
	}
	return out
}

// ProbeCommands lists readiness's probes of a resource as AWS CLI
// commands (eni: the interface the node would use), in the order the probe
// makes them, so that an operator can repeat them by hand.
func ProbeCommands(p map[string]string, eni string) []kit.ProbeCommand {
	var out []kit.ProbeCommand
	ss := stepsFor(p)
	add := func(s step, rtb string) {
		out = append(out, kit.ProbeCommand{Action: s.action, Service: "ec2", Args: s.cli(p, eni, rtb)})
	}
	// The read-only table lookups first, then everything else in order,
	// the per-table writes table by table.
	for i := 0; i < len(ss); {
		s := ss[i]
		if s.cli == nil {
			i++
			continue
		}
		if !s.perTable {
			add(s, "")
			i++
			continue
		}
		// a run of per-table steps: table by table
		j := i
		for j < len(ss) && ss[j].perTable && ss[j].cli != nil {
			j++
		}
		for _, rtb := range list(p[ParamRouteTables]) {
			for _, t := range ss[i:j] {
				add(t, rtb)
			}
		}
		i = j
	}
	return out
}
