// Package ec2 is the kit for AWS network resources that follow a hierarchy:
//
//   - route mode: a destination CIDR (the virtual IP, usually a /32) in one
//     or more VPC route tables points at this node's network interface, and
//     that interface's source/destination check is off (the interface must
//     be in each route table's VPC: readiness and restore check it);
//   - eip mode: an Elastic IP is associated with this node's interface (and
//     private IP).
//
// Every call goes through internal/awsapi (the SDK inside the agent, with
// the agent's own proxy, endpoints and timeouts). Checks observe, recovery
// acts: QuickCheck never changes anything, and a check that cannot get an
// answer (timeout, throttling, 5xx, a missing permission) is Unknown, not
// Failed: only a definite mismatch starts local recovery.
package ec2

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Modes.
const (
	ModeRoute = "route"
	ModeEIP   = "eip"
)

// Params.
const (
	ParamMode                 = "mode"
	ParamCIDR                 = "cidr"
	ParamRouteTables          = "route_tables"
	ParamENI                  = "eni"
	ParamAllocationID         = "allocation_id"
	ParamPrivateIP            = "private_ip"
	ParamDisassociateOnRemove = "disassociate_on_remove"
)

// Kit is the ec2 resource type. The node's AWS clients come with each
// resource's kit.Env.
type Kit struct{}

var (
	_ kit.Kit                = (*Kit)(nil)
	_ kit.PermissionDeclarer = (*Kit)(nil)
	_ kit.PolicyDeclarer     = (*Kit)(nil)
	_ kit.ProbeExplainer     = (*Kit)(nil)
	_ kit.Router             = (*Kit)(nil)
	_ kit.Instance           = (*instance)(nil)
	_ kit.ReadinessProber    = (*instance)(nil)
)

// Type implements kit.Kit.
func (*Kit) Type() string { return "ec2" }

// ProbeCommands implements kit.ProbeExplainer: the readiness probe's calls
// on the resource's interface (its eni parameter, else primary's).
func (*Kit) ProbeCommands(p map[string]string, primary func() string) []kit.ProbeCommand {
	eni := p[ParamENI]
	if eni == "" {
		eni = primary()
	}
	return ProbeCommands(p, eni)
}

// Routed implements kit.Router: the CIDR of a resource in route mode.
func (*Kit) Routed(p map[string]string) (netip.Prefix, bool) {
	if p[ParamMode] != ModeRoute {
		return netip.Prefix{}, false
	}
	pfx, err := netip.ParsePrefix(strings.TrimSpace(p[ParamCIDR]))
	return pfx, err == nil
}

// Validate implements kit.Kit.
func (*Kit) Validate(p map[string]string) []spec.Problem {
	var ps []spec.Problem
	add := func(f, format string, args ...any) {
		ps = append(ps, spec.Problem{Field: f, Message: fmt.Sprintf(format, args...)})
	}
	known := map[string]bool{ParamMode: true, ParamENI: true}
	switch p[ParamMode] {
	case ModeRoute:
		known[ParamCIDR], known[ParamRouteTables] = true, true
		if pfx, err := netip.ParsePrefix(p[ParamCIDR]); err != nil {
			add(ParamCIDR, "%q is not a CIDR such as 10.1.0.10/32 (the virtual IP)", p[ParamCIDR])
		} else if !pfx.Addr().Is4() {
			add(ParamCIDR, "only IPv4 destinations are supported")
		}
		if len(list(p[ParamRouteTables])) == 0 {
			add(ParamRouteTables, "name one or more route tables, comma-separated (rtb-...)")
		}
		for _, r := range list(p[ParamRouteTables]) {
			if !strings.HasPrefix(r, "rtb-") {
				add(ParamRouteTables, "%q is not a route table id (rtb-...)", r)
			}
		}
	case ModeEIP:
		known[ParamAllocationID], known[ParamPrivateIP], known[ParamDisassociateOnRemove] = true, true, true
		if !strings.HasPrefix(p[ParamAllocationID], "eipalloc-") {
			add(ParamAllocationID, "the Elastic IP's allocation id (eipalloc-...) is required")
		}
		if ip := p[ParamPrivateIP]; ip != "" {
			if _, err := netip.ParseAddr(ip); err != nil {
				add(ParamPrivateIP, "%q is not an IP address", ip)
			}
		}
		switch p[ParamDisassociateOnRemove] {
		case "", "true", "false":
		default:
			add(ParamDisassociateOnRemove, "must be true or false")
		}
	default:
		add(ParamMode, "%q is not a mode: use %q (route table) or %q (Elastic IP)", p[ParamMode], ModeRoute, ModeEIP)
	}
	if e := p[ParamENI]; e != "" && !strings.HasPrefix(e, "eni-") {
		add(ParamENI, "%q is not a network interface id (eni-...)", e)
	}
	var keys []string
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !known[k] && p[ParamMode] != "" {
			add(k, "unknown parameter for mode %s", p[ParamMode])
		}
	}
	return ps
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// New implements kit.Kit.
func (k *Kit) New(res spec.Resource, env kit.Env) (kit.Instance, error) {
	if ps := k.Validate(res.Params); len(ps) > 0 {
		return nil, fmt.Errorf("resource %s: %v", res.Name, ps[0])
	}
	if env.AWS == nil {
		return nil, fmt.Errorf("resource %s: this agent has no AWS access configured", res.Name)
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	return &instance{k: k, res: res, env: env, p: res.Params}, nil
}

type instance struct {
	k   *Kit
	res spec.Resource
	env kit.Env
	p   map[string]string
	// changedAt: when this instance last finished changing what it
	// checks (a restore or recover); its checks read nothing older.
	changedAt atomic.Int64
}

func (in *instance) clients(ctx context.Context) (*awsapi.Clients, error) {
	c, err := in.env.AWS(ctx)
	if err != nil {
		return nil, fmt.Errorf("AWS clients for %s: %w", in.env.Node, err)
	}
	return c, nil
}

// eni returns the configured interface or this instance's primary one from
// the instance metadata service.
func (in *instance) eni(ctx context.Context, c *awsapi.Clients) (string, error) {
	if e := in.p[ParamENI]; e != "" {
		return e, nil
	}
	mac, err := c.StaticMetadata(ctx, "mac")
	if err != nil {
		return "", fmt.Errorf("find this node's network interface from instance metadata: %w (or set the eni parameter)", err)
	}
	id, err := c.StaticMetadata(ctx, "network/interfaces/macs/"+mac+"/interface-id")
	if err != nil {
		return "", fmt.Errorf("find the interface id of MAC %s from instance metadata: %w", mac, err)
	}
	return id, nil
}

func (in *instance) arn(c *awsapi.Clients, kind, id string) string {
	return fmt.Sprintf("arn:aws:ec2:%s:*:%s/%s", c.Config.Region, kind, id)
}

// explain turns an AWS error into plain words naming node and action.
func (in *instance) explain(ctx context.Context, c *awsapi.Clients, action, resource string, err error) error {
	return c.Explain(ctx, in.env.Node, action, resource, err)
}
