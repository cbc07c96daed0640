package ec2

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// direct makes a probe's calls itself (no kit.Env.Probes: doctor, tests).
type direct struct{}

func (direct) Call(ctx context.Context, _ kit.ProbeKey, call func(context.Context) (any, error)) kit.ProbeAnswer {
	at := time.Now()
	v, err := call(ctx)
	return kit.ProbeAnswer{Value: v, Err: err, At: at}
}

// table is what readiness reads of a route table: its VPC and the
// destinations it has routes for.
type table struct {
	vpc    string
	routes map[string]bool
}

// Ready proves, without changing anything, that this node could restore the
// resource: every mutating call with DryRun=true against the real resources,
// and (route mode) that the interface is in each route table's VPC.
//
// A dry run proves a permission only when it answers DryRunOperation. An
// endpoint that ignores DryRun answers with success and carries the call
// out: the read-only dry runs go first, as canaries, so that such an
// endpoint is caught before any mutating call is sent to it; a mutating dry
// run that still comes back with success fails the probe just as loudly.
//
// The calls go through kit.Env.Probes, which shares each answer with the
// probes of other hierarchies that make the same call: keyed by the action,
// the resource's ARN (route table, interface, Elastic IP) and whatever
// else EC2 judges the request by. A refusal is decoded once, inside the
// shared call, so every hierarchy gets the same plain words. For
// CreateRoute and ReplaceRoute, EC2 checks whether the route exists before
// it looks at DryRun: their answers are shared only between hierarchies
// whose destination is in the same state in that table (present or
// absent, as the shared DescribeRouteTables saw it), so a dry run on the
// table proves the permission for every hierarchy routed through it.
func (in *instance) Ready(ctx context.Context) kit.Readiness {
	c, err := in.clients(ctx)
	if err != nil {
		return kit.Readiness{Reason: err.Error()}
	}
	eni, err := in.eni(ctx, c)
	if err != nil {
		return kit.Readiness{Reason: err.Error()}
	}
	calls := in.env.Probes
	if calls == nil {
		calls = direct{}
	}
	// call makes one shared call of action on resource (an ARN, or "*" for
	// the Describe calls, which take no resource-level permission: detail
	// then names what they read); a refusal comes back explained. The keys
	// need no region or account: one node's calls all go to one.
	call := func(action, resource, detail string, fn func(context.Context) (any, error)) kit.ProbeAnswer {
		return calls.Call(ctx, kit.ProbeKey{Action: action, Resource: resource, Detail: detail}, func(ctx context.Context) (any, error) {
			var v any
			err := c.Call(ctx, func(ctx context.Context) error {
				var err error
				v, err = fn(ctx)
				return err
			})
			if f := awsapi.Classify(err); f != nil && f.Kind == awsapi.KindUnauthorized {
				err = in.explain(ctx, c, action, resource, err)
			}
			return v, err
		})
	}
	rtbs := list(in.p[ParamRouteTables])
	alloc := in.p[ParamAllocationID]
	r := kit.Readiness{Ready: true}
	var reasons []string
	seen := map[string]bool{}
	// judge records the answer a to what, a call of action on resource:
	// f (a's error, classified as its kind of call wants) nil is fine, an
	// API that cannot answer leaves it unknown, anything else makes the
	// node NOT READY.
	judge := func(action, what, resource string, f *awsapi.Failure, a kit.ProbeAnswer) {
		switch {
		case f == nil:
			return
		case f.Kind == awsapi.KindUnauthorized:
			if !seen[action] {
				seen[action] = true
				r.Missing = append(r.Missing, action)
			}
			g := kit.Gap{Action: action, Resource: resource, Code: f.Code, Reason: a.Err.Error()}
			var dec *awsapi.Failure
			if errors.As(a.Err, &dec) && dec.Action == action && dec.Resource != "" {
				g.Resource = dec.Resource
			}
			r.Gaps = append(r.Gaps, g)
			reasons = append(reasons, g.Reason)
		case f.Kind == awsapi.KindThrottled || f.Kind == awsapi.KindUnavailable:
			r.Unknown = true
			reasons = append(reasons, fmt.Sprintf("%s could not tell: %v", what, f))
			return
		case f.Kind == awsapi.KindDryRunIgnored:
			if !a.Shared {
				in.env.Logger.Error("the EC2 endpoint ignores DryRun: readiness cannot be proven, and the probe may have changed something", "action", action, "resource", resource)
			}
			reasons = append(reasons, fmt.Sprintf("%s on %s: %s", what, resource, f.Message))
		default:
			reasons = append(reasons, fmt.Sprintf("%s: %v", what, f))
		}
		r.Ready = false
	}
	dryRun := func(action, resource, detail string, fn func(context.Context) (any, error)) *awsapi.Failure {
		a := call(action, resource, detail, fn)
		f := awsapi.DryRunResult(a.Err)
		judge(action, action+" dry run", resource, f, a)
		return f
	}
	eniARN := in.arn(c, "network-interface", eni)

	// The read-only dry runs, the canaries.
	ignored := false
	canary := func(f *awsapi.Failure) {
		if f != nil && f.Kind == awsapi.KindDryRunIgnored {
			ignored = true
		}
	}
	if in.p[ParamMode] == ModeEIP {
		canary(dryRun("ec2:DescribeAddresses", "*", "dry run of "+alloc, func(ctx context.Context) (any, error) {
			return c.EC2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{DryRun: aws.Bool(true), AllocationIds: []string{alloc}})
		}))
	} else {
		for _, rtb := range rtbs {
			canary(dryRun("ec2:DescribeRouteTables", "*", "dry run of "+rtb, func(ctx context.Context) (any, error) {
				return c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{DryRun: aws.Bool(true), RouteTableIds: []string{rtb}})
			}))
		}
		canary(dryRun("ec2:DescribeNetworkInterfaceAttribute", "*", "dry run of sourceDestCheck of "+eni, func(ctx context.Context) (any, error) {
			return c.EC2.DescribeNetworkInterfaceAttribute(ctx, &ec2.DescribeNetworkInterfaceAttributeInput{DryRun: aws.Bool(true), NetworkInterfaceId: aws.String(eni), Attribute: types.NetworkInterfaceAttributeSourceDestCheck})
		}))
	}
	if ignored {
		// Sending the mutating dry runs to this endpoint would act.
		reasons = append(reasons, "the mutating dry runs were not sent")
		return in.readiness(r, reasons)
	}

	if in.p[ParamMode] == ModeEIP {
		dryRun("ec2:AssociateAddress", in.arn(c, "elastic-ip", alloc), "to "+eni, func(ctx context.Context) (any, error) {
			return c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{DryRun: aws.Bool(true), AllocationId: aws.String(alloc), NetworkInterfaceId: aws.String(eni), AllowReassociation: aws.Bool(true)})
		})
		return in.readiness(r, reasons)
	}

	// Route mode: the interface must be in each route table's VPC.
	tables := map[string]table{}
	mismatched := map[string]bool{}
	a := call("ec2:DescribeNetworkInterfaces", "*", eni, func(ctx context.Context) (any, error) {
		return in.eniVPC(ctx, c, eni)
	})
	if f := awsapi.Classify(a.Err); f != nil {
		judge("ec2:DescribeNetworkInterfaces", "ec2:DescribeNetworkInterfaces of "+eni, "*", f, a)
	} else {
		vpc, _ := a.Value.(string)
		for _, rtb := range rtbs {
			ta := call("ec2:DescribeRouteTables", "*", rtb, func(ctx context.Context) (any, error) {
				return describeTable(ctx, c, rtb)
			})
			t, _ := ta.Value.(table)
			switch f := awsapi.Classify(ta.Err); {
			case f != nil && f.Kind == awsapi.KindUnauthorized && seen["ec2:DescribeRouteTables"]:
				// its dry run said so already
			case f != nil:
				judge("ec2:DescribeRouteTables", "ec2:DescribeRouteTables", "*", f, ta)
			case t.vpc != vpc:
				mismatched[rtb] = true
				r.Ready = false
				reasons = append(reasons, vpcMismatch(rtb, t.vpc, eni, vpc))
			default:
				tables[rtb] = t
			}
		}
	}

	cidr := in.p[ParamCIDR]
	for _, rtb := range rtbs {
		if mismatched[rtb] {
			continue // the dry runs would only fail on the mismatch
		}
		// Whether the route exists decides EC2's answer before DryRun:
		// share only within the same state (unknown: this destination
		// alone).
		state := "destination " + cidr
		if t, ok := tables[rtb]; ok {
			state = "destination absent"
			if t.routes[cidr] {
				state = "destination present"
			}
		}
		detail := "to " + eni + ", " + state
		arn := in.arn(c, "route-table", rtb)
		for _, action := range []string{"ec2:CreateRoute", "ec2:ReplaceRoute"} {
			a := call(action, arn, detail, func(ctx context.Context) (any, error) {
				if action == "ec2:CreateRoute" {
					return c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{DryRun: aws.Bool(true), RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr), NetworkInterfaceId: aws.String(eni)})
				}
				return c.EC2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: aws.Bool(true), RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr), NetworkInterfaceId: aws.String(eni)})
			})
			f := awsapi.DryRunResult(a.Err)
			if action == "ec2:ReplaceRoute" && routeMissing(f) || action == "ec2:CreateRoute" && f != nil && f.Code == "RouteAlreadyExists" {
				// EC2 checks the route's existence before DryRun:
				// restore uses whichever of the two applies, and that
				// one's dry run proves its permission.
				continue
			}
			judge(action, action+" dry run", arn, f, a)
		}
	}
	dryRun("ec2:ModifyNetworkInterfaceAttribute", eniARN, "sourceDestCheck=false", func(ctx context.Context) (any, error) {
		return c.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{DryRun: aws.Bool(true), NetworkInterfaceId: aws.String(eni), SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}})
	})
	return in.readiness(r, reasons)
}

// describeTable reads a route table's VPC and destinations
// (ec2:DescribeRouteTables). Errors come back as the SDK gave them.
func describeTable(ctx context.Context, c *awsapi.Clients, rtb string) (table, error) {
	out, err := c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{rtb}})
	if err != nil {
		return table{}, err
	}
	for _, rt := range out.RouteTables {
		if aws.ToString(rt.RouteTableId) != rtb || aws.ToString(rt.VpcId) == "" {
			continue
		}
		t := table{vpc: aws.ToString(rt.VpcId), routes: map[string]bool{}}
		for _, x := range rt.Routes {
			t.routes[aws.ToString(x.DestinationCidrBlock)] = true
		}
		return t, nil
	}
	return table{}, fmt.Errorf("route table %s not found, or its VPC missing from the answer", rtb)
}

// readiness finishes a Ready answer: a definite answer wins over an
// unknown one.
func (in *instance) readiness(r kit.Readiness, reasons []string) kit.Readiness {
	if !r.Ready {
		r.Unknown = false
	}
	r.Reason = strings.Join(reasons, "; ")
	// Problems: the reasons that are not a refused call (those are Gaps).
	gap := map[string]bool{}
	for _, g := range r.Gaps {
		gap[g.Reason] = true
	}
	for _, x := range reasons {
		if !gap[x] {
			r.Problems = append(r.Problems, x)
		}
	}
	return r
}
