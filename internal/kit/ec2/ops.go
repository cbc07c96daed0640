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

// Restore brings the resource into service on this node. An AWS API that
// throttles or answers 5xx beyond the SDK's own retries is retried here,
// with backoff, until the action's timeout: every step is idempotent, and
// a slow API is no reason to give the hierarchy up on this node.
func (in *instance) Restore(ctx context.Context) error {
	wait := 200 * time.Millisecond
	for {
		err := in.restoreOnce(ctx)
		f := awsapi.Classify(err)
		if f == nil || (f.Kind != awsapi.KindThrottled && f.Kind != awsapi.KindUnavailable) {
			return err
		}
		in.env.Logger.Warn("restore: AWS could not answer, retrying", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func (in *instance) restoreOnce(ctx context.Context) error {
	c, err := in.clients(ctx)
	if err != nil {
		return err
	}
	eni, err := in.eni(ctx, c)
	if err != nil {
		return err
	}
	if in.p[ParamMode] == ModeEIP {
		return in.associate(ctx, c, eni)
	}
	for _, rtb := range list(in.p[ParamRouteTables]) {
		if err := in.pointRoute(ctx, c, rtb, eni); err != nil {
			return err
		}
	}
	return in.sourceDestOff(ctx, c, eni)
}

// Recover re-applies what Restore does (both are idempotent).
func (in *instance) Recover(ctx context.Context) error { return in.Restore(ctx) }

// Remove: a route needs no removal (the next owner replaces it); an
// Elastic IP is disassociated only when configured to, and only while it is
// still associated with this node.
func (in *instance) Remove(ctx context.Context) error {
	if in.p[ParamMode] != ModeEIP || in.p[ParamDisassociateOnRemove] != "true" {
		return nil
	}
	c, err := in.clients(ctx)
	if err != nil {
		return err
	}
	eni, err := in.eni(ctx, c)
	if err != nil {
		return err
	}
	addr, err := in.address(ctx, c)
	if err != nil {
		return err
	}
	if aws.ToString(addr.NetworkInterfaceId) != eni || addr.AssociationId == nil {
		return nil
	}
	alloc := in.p[ParamAllocationID]
	// The association is shared with the next owner: once this node's
	// lease has run out, the next owner may already hold the address, and
	// the association id seen above may be its own. Disassociate only
	// under the lease.
	lctx, cancel, err := kit.UnderLease(ctx)
	if err != nil {
		in.env.Logger.Warn("leaving the Elastic IP associated: this node no longer holds its lease, the next owner re-associates it", "allocation_id", alloc, "error", err)
		return nil
	}
	defer cancel()
	err = c.Call(lctx, func(ctx context.Context) error {
		_, err := c.EC2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: addr.AssociationId})
		return err
	})
	if err != nil {
		return fmt.Errorf("disassociate %s from %s: %w", alloc, eni, in.explain(ctx, c, "ec2:DisassociateAddress", in.arn(c, "elastic-ip", alloc), err))
	}
	return nil
}

// QuickCheck observes: the route points here and the source/destination
// check is off, or the Elastic IP is associated here.
func (in *instance) QuickCheck(ctx context.Context) (kit.Health, error) {
	c, err := in.clients(ctx)
	if err != nil {
		return kit.Unknown, err
	}
	eni, err := in.eni(ctx, c)
	if err != nil {
		return kit.Unknown, err
	}
	if in.p[ParamMode] == ModeEIP {
		addr, err := in.address(ctx, c)
		if err != nil {
			return unknownOr(err)
		}
		if got := aws.ToString(addr.NetworkInterfaceId); got != eni {
			return kit.Failed, fmt.Errorf("Elastic IP %s is associated with %q, not this node's %s", in.p[ParamAllocationID], got, eni)
		}
		if ip := in.p[ParamPrivateIP]; ip != "" && aws.ToString(addr.PrivateIpAddress) != ip {
			return kit.Failed, fmt.Errorf("Elastic IP %s maps to %s, not %s", in.p[ParamAllocationID], aws.ToString(addr.PrivateIpAddress), ip)
		}
		return kit.Healthy, nil
	}
	cidr := in.p[ParamCIDR]
	for _, rtb := range list(in.p[ParamRouteTables]) {
		r, err := in.route(ctx, c, rtb)
		if err != nil {
			return unknownOr(err)
		}
		if r == nil {
			return kit.Failed, fmt.Errorf("route table %s has no route for %s", rtb, cidr)
		}
		if got := aws.ToString(r.NetworkInterfaceId); got != eni {
			return kit.Failed, fmt.Errorf("route %s in %s points at %q, not this node's %s", cidr, rtb, got, eni)
		}
	}
	on, err := in.sourceDestCheck(ctx, c, eni)
	if err != nil {
		return unknownOr(err)
	}
	if on {
		return kit.Failed, fmt.Errorf("source/destination check is back on for %s", eni)
	}
	return kit.Healthy, nil
}

// unknownOr maps an error during a check: the check could not tell.
func unknownOr(err error) (kit.Health, error) {
	return kit.Unknown, err
}

// Ready proves, without changing anything, that this node could restore the
// resource: every mutating call with DryRun=true against the real resources.
func (in *instance) Ready(ctx context.Context) kit.Readiness {
	c, err := in.clients(ctx)
	if err != nil {
		return kit.Readiness{Reason: err.Error()}
	}
	eni, err := in.eni(ctx, c)
	if err != nil {
		return kit.Readiness{Reason: err.Error()}
	}
	type probe struct {
		action, resource string
		call             func(context.Context) error
	}
	var probes []probe
	if in.p[ParamMode] == ModeEIP {
		alloc := in.p[ParamAllocationID]
		probes = append(probes, probe{"ec2:AssociateAddress", in.arn(c, "elastic-ip", alloc), func(ctx context.Context) error {
			_, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{DryRun: aws.Bool(true), AllocationId: aws.String(alloc), NetworkInterfaceId: aws.String(eni), AllowReassociation: aws.Bool(true)})
			return err
		}})
	} else {
		cidr := in.p[ParamCIDR]
		for _, rtb := range list(in.p[ParamRouteTables]) {
			probes = append(probes,
				probe{"ec2:CreateRoute", in.arn(c, "route-table", rtb), func(ctx context.Context) error {
					_, err := c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{DryRun: aws.Bool(true), RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr), NetworkInterfaceId: aws.String(eni)})
					return err
				}},
				probe{"ec2:ReplaceRoute", in.arn(c, "route-table", rtb), func(ctx context.Context) error {
					_, err := c.EC2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: aws.Bool(true), RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr), NetworkInterfaceId: aws.String(eni)})
					return err
				}},
				probe{"ec2:DescribeRouteTables", "*", func(ctx context.Context) error {
					_, err := c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{DryRun: aws.Bool(true), RouteTableIds: []string{rtb}})
					return err
				}})
		}
		probes = append(probes,
			probe{"ec2:ModifyNetworkInterfaceAttribute", in.arn(c, "network-interface", eni), func(ctx context.Context) error {
				_, err := c.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{DryRun: aws.Bool(true), NetworkInterfaceId: aws.String(eni), SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}})
				return err
			}},
			probe{"ec2:DescribeNetworkInterfaceAttribute", "*", func(ctx context.Context) error {
				_, err := c.EC2.DescribeNetworkInterfaceAttribute(ctx, &ec2.DescribeNetworkInterfaceAttributeInput{DryRun: aws.Bool(true), NetworkInterfaceId: aws.String(eni), Attribute: types.NetworkInterfaceAttributeSourceDestCheck})
				return err
			}})
	}
	r := kit.Readiness{Ready: true}
	var reasons []string
	seen := map[string]bool{}
	for _, p := range probes {
		err := c.Call(ctx, p.call)
		f := awsapi.Classify(err)
		switch {
		case f == nil || f.Kind == awsapi.KindDryRunOK:
			continue
		case p.action == "ec2:ReplaceRoute" && f.Code == "InvalidRoute.NotFound",
			p.action == "ec2:CreateRoute" && f.Code == "RouteAlreadyExists":
			// EC2 checks the route's existence before DryRun: restore
			// uses whichever of the two applies, and that one's dry run
			// proves its permission.
			continue
		case f.Kind == awsapi.KindUnauthorized:
			if !seen[p.action] {
				seen[p.action] = true
				r.Missing = append(r.Missing, p.action)
			}
			reasons = append(reasons, in.explain(ctx, c, p.action, p.resource, err).Error())
		case f.Kind == awsapi.KindThrottled || f.Kind == awsapi.KindUnavailable:
			r.Unknown = true
			reasons = append(reasons, fmt.Sprintf("%s dry run could not tell: %v", p.action, f))
			continue
		default:
			reasons = append(reasons, fmt.Sprintf("%s dry run: %v", p.action, f))
		}
		r.Ready = false
	}
	if !r.Ready {
		r.Unknown = false // a definite answer wins
	}
	r.Reason = strings.Join(reasons, "; ")
	return r
}

func (in *instance) route(ctx context.Context, c *awsapi.Clients, rtb string) (*types.Route, error) {
	var out *ec2.DescribeRouteTablesOutput
	err := c.Call(ctx, func(ctx context.Context) error {
		var err error
		out, err = c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{rtb}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("describe route table %s: %w", rtb, in.explain(ctx, c, "ec2:DescribeRouteTables", "*", err))
	}
	if len(out.RouteTables) == 0 {
		return nil, fmt.Errorf("route table %s not found", rtb)
	}
	for _, r := range out.RouteTables[0].Routes {
		if aws.ToString(r.DestinationCidrBlock) == in.p[ParamCIDR] {
			return &r, nil
		}
	}
	return nil, nil
}

// pointRoute makes the CIDR in rtb point at eni.
func (in *instance) pointRoute(ctx context.Context, c *awsapi.Clients, rtb, eni string) error {
	cidr := in.p[ParamCIDR]
	r, err := in.route(ctx, c, rtb)
	if err != nil {
		return err
	}
	if r != nil && aws.ToString(r.NetworkInterfaceId) == eni {
		return nil
	}
	action := "ec2:ReplaceRoute"
	err = c.Call(ctx, func(ctx context.Context) error {
		if r == nil {
			action = "ec2:CreateRoute"
			_, err := c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr), NetworkInterfaceId: aws.String(eni)})
			var f *awsapi.Failure
			if f = awsapi.Classify(err); f == nil || f.Code != "RouteAlreadyExists" {
				return err
			}
			// created meanwhile by another node: replace it
			action = "ec2:ReplaceRoute"
		}
		_, err := c.EC2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr), NetworkInterfaceId: aws.String(eni)})
		return err
	})
	if err != nil {
		return fmt.Errorf("point %s in %s at %s: %w", cidr, rtb, eni, in.explain(ctx, c, action, in.arn(c, "route-table", rtb), err))
	}
	return nil
}

func (in *instance) sourceDestCheck(ctx context.Context, c *awsapi.Clients, eni string) (bool, error) {
	var out *ec2.DescribeNetworkInterfaceAttributeOutput
	err := c.Call(ctx, func(ctx context.Context) error {
		var err error
		out, err = c.EC2.DescribeNetworkInterfaceAttribute(ctx, &ec2.DescribeNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(eni), Attribute: types.NetworkInterfaceAttributeSourceDestCheck})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read source/destination check of %s: %w", eni, in.explain(ctx, c, "ec2:DescribeNetworkInterfaceAttribute", "*", err))
	}
	if out.SourceDestCheck == nil {
		return false, errors.New("source/destination check missing from the answer")
	}
	return aws.ToBool(out.SourceDestCheck.Value), nil
}

// sourceDestOff turns the interface's source/destination check off, which
// routing a virtual IP to it needs.
func (in *instance) sourceDestOff(ctx context.Context, c *awsapi.Clients, eni string) error {
	on, err := in.sourceDestCheck(ctx, c, eni)
	if err != nil {
		return err
	}
	if !on {
		return nil
	}
	err = c.Call(ctx, func(ctx context.Context) error {
		_, err := c.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(eni), SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}})
		return err
	})
	if err != nil {
		return fmt.Errorf("turn off source/destination check of %s: %w", eni, in.explain(ctx, c, "ec2:ModifyNetworkInterfaceAttribute", in.arn(c, "network-interface", eni), err))
	}
	return nil
}

func (in *instance) address(ctx context.Context, c *awsapi.Clients) (*types.Address, error) {
	alloc := in.p[ParamAllocationID]
	var out *ec2.DescribeAddressesOutput
	err := c.Call(ctx, func(ctx context.Context) error {
		var err error
		out, err = c.EC2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{alloc}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("describe Elastic IP %s: %w", alloc, in.explain(ctx, c, "ec2:DescribeAddresses", "*", err))
	}
	if len(out.Addresses) == 0 {
		return nil, fmt.Errorf("Elastic IP %s not found", alloc)
	}
	return &out.Addresses[0], nil
}

// associate points the Elastic IP at eni (taking it from another node).
func (in *instance) associate(ctx context.Context, c *awsapi.Clients, eni string) error {
	alloc := in.p[ParamAllocationID]
	addr, err := in.address(ctx, c)
	if err != nil {
		return err
	}
	ip := in.p[ParamPrivateIP]
	if aws.ToString(addr.NetworkInterfaceId) == eni && (ip == "" || aws.ToString(addr.PrivateIpAddress) == ip) {
		return nil
	}
	in0 := &ec2.AssociateAddressInput{AllocationId: aws.String(alloc), NetworkInterfaceId: aws.String(eni), AllowReassociation: aws.Bool(true)}
	if ip != "" {
		in0.PrivateIpAddress = aws.String(ip)
	}
	err = c.Call(ctx, func(ctx context.Context) error {
		_, err := c.EC2.AssociateAddress(ctx, in0)
		return err
	})
	if err != nil {
		return fmt.Errorf("associate %s with %s: %w", alloc, eni, in.explain(ctx, c, "ec2:AssociateAddress", in.arn(c, "elastic-ip", alloc), err))
	}
	return nil
}

func modifySDC(eni string, on bool) *ec2.ModifyNetworkInterfaceAttributeInput {
	return &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(eni), SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(on)}}
}
