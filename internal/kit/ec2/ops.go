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
// a slow API is no reason to give the hierarchy up on this node. Still
// throttled at the timeout, the error says so (kit.ErrThrottled): the
// engine tries again rather than fail the hierarchy over, since every node
// shares the account's request limits.
func (in *instance) Restore(ctx context.Context) error {
	wait := 200 * time.Millisecond
	// throttled: the last answer AWS gave was "slow down" (an attempt cut
	// short by the timeout answers nothing).
	throttled := false
	defer func() { in.changedAt.Store(time.Now().UnixNano()) }()
	for {
		err := in.restoreOnce(ctx)
		f := awsapi.Classify(err)
		if f == nil || (f.Kind != awsapi.KindThrottled && f.Kind != awsapi.KindUnavailable) {
			return err
		}
		if f.Kind == awsapi.KindThrottled {
			throttled = true
		} else if ctx.Err() == nil {
			throttled = false
		}
		if ctx.Err() != nil {
			if throttled {
				return fmt.Errorf("%w: %w", kit.ErrThrottled, err)
			}
			return err
		}
		in.env.Logger.Warn("restore: AWS could not answer, retrying", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			if throttled {
				return fmt.Errorf("%w: %w", kit.ErrThrottled, err)
			}
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
	// A route can only point at an interface of the table's own VPC: say
	// so in plain words rather than let CreateRoute/ReplaceRoute fail.
	vpc, err := in.eniVPC(ctx, c, eni)
	if err != nil {
		return fmt.Errorf("find the VPC of %s: %w", eni, in.explain(ctx, c, "ec2:DescribeNetworkInterfaces", "*", err))
	}
	for _, rtb := range list(in.p[ParamRouteTables]) {
		if err := in.pointRoute(ctx, c, rtb, eni, vpc); err != nil {
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
//
// A check may use reads of the route table and the interface up to
// checkReadAge old, shared by every check on this node: 1,000 routes in a
// table checked every 10 s would otherwise mean 100 DescribeRouteTables a
// second, each answering with the whole table (five times EC2's describe
// refill rate, and on a test machine enough XML to starve the agents). A
// route moved away is noticed at most that much later.
func (in *instance) QuickCheck(ctx context.Context) (kit.Health, error) {
	since := time.Now().Add(-checkReadAge)
	if t := time.Unix(0, in.changedAt.Load()); t.After(since) {
		since = t // not a read from before this node's own change
	}
	ctx = awsapi.WithReadsSince(ctx, since)
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
		r, _, err := in.route(ctx, c, rtb)
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

// checkReadAge is how old a read a check may use (see QuickCheck).
const checkReadAge = time.Second

// unknownOr maps an error during a check: the check could not tell.
func unknownOr(err error) (kit.Health, error) {
	return kit.Unknown, err
}

// routeMissing reports whether f is EC2's answer to ReplaceRoute for a
// route that does not exist: AWS answers InvalidParameterValue "There is no
// route defined for '10.0.0.5/32' in the route table. Use CreateRoute
// instead."; some emulators (and older simulators) InvalidRoute.NotFound.
func routeMissing(f *awsapi.Failure) bool {
	if f == nil {
		return false
	}
	switch f.Code {
	case "InvalidRoute.NotFound":
		return true
	case "InvalidParameterValue":
		m := strings.ToLower(f.Message)
		return strings.Contains(m, "no route defined") || strings.Contains(m, "use createroute")
	}
	return false
}

// vpcMismatch says that a route in rtb cannot point at eni.
func vpcMismatch(rtb, rtbVPC, eni, eniVPC string) string {
	return fmt.Sprintf("route table %s is in VPC %s but network interface %s is in VPC %s: a route there cannot point at this node's interface (name route tables of %s, or the eni of an interface in %s)",
		rtb, rtbVPC, eni, eniVPC, eniVPC, rtbVPC)
}

// eniVPC returns the VPC of a network interface (ec2:DescribeNetworkInterfaces).
// Errors come back as the SDK gave them.
func (in *instance) eniVPC(ctx context.Context, c *awsapi.Clients, eni string) (string, error) {
	v, err := c.Shared(ctx, "DescribeNetworkInterfaces "+eni, func(ctx context.Context) (any, error) {
		var out *ec2.DescribeNetworkInterfacesOutput
		err := c.Call(ctx, func(ctx context.Context) error {
			var err error
			out, err = c.EC2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
			return err
		})
		return out, err
	})
	if err != nil {
		return "", err
	}
	out := v.(*ec2.DescribeNetworkInterfacesOutput)
	for _, n := range out.NetworkInterfaces {
		if aws.ToString(n.NetworkInterfaceId) == eni && aws.ToString(n.VpcId) != "" {
			return aws.ToString(n.VpcId), nil
		}
	}
	return "", fmt.Errorf("network interface %s not found, or its VPC missing from the answer", eni)
}

// route returns the route for the CIDR in rtb (nil: none) and the table's
// VPC.
//
// Every hierarchy on this node whose route is in rtb reads the same table:
// they share one DescribeRouteTables (awsapi.Clients.Shared), so a node
// that checks or takes over 1,000 routes of one table sends one call at a
// time, each answering every caller that asked before it was sent.
func (in *instance) route(ctx context.Context, c *awsapi.Clients, rtb string) (*types.Route, string, error) {
	v, err := c.Shared(ctx, "DescribeRouteTables "+rtb, func(ctx context.Context) (any, error) {
		var out *ec2.DescribeRouteTablesOutput
		err := c.Call(ctx, func(ctx context.Context) error {
			var err error
			out, err = c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{rtb}})
			return err
		})
		return out, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("describe route table %s: %w", rtb, in.explain(ctx, c, "ec2:DescribeRouteTables", "*", err))
	}
	out := v.(*ec2.DescribeRouteTablesOutput)
	if len(out.RouteTables) == 0 {
		return nil, "", fmt.Errorf("route table %s not found", rtb)
	}
	vpc := aws.ToString(out.RouteTables[0].VpcId)
	for _, r := range out.RouteTables[0].Routes {
		if aws.ToString(r.DestinationCidrBlock) == in.p[ParamCIDR] {
			return &r, vpc, nil
		}
	}
	return nil, vpc, nil
}

// pointRoute makes the CIDR in rtb point at eni, an interface in VPC vpc.
func (in *instance) pointRoute(ctx context.Context, c *awsapi.Clients, rtb, eni, vpc string) error {
	cidr := in.p[ParamCIDR]
	r, tableVPC, err := in.route(ctx, c, rtb)
	if err != nil {
		return err
	}
	if r != nil && aws.ToString(r.NetworkInterfaceId) == eni {
		return nil
	}
	if tableVPC != vpc {
		return errors.New(vpcMismatch(rtb, tableVPC, eni, vpc))
	}
	create := func(ctx context.Context) error {
		_, err := c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr), NetworkInterfaceId: aws.String(eni)})
		return err
	}
	replace := func(ctx context.Context) error {
		_, err := c.EC2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr), NetworkInterfaceId: aws.String(eni)})
		return err
	}
	var action string
	err = c.Call(ctx, func(ctx context.Context) error {
		if r == nil {
			action = "ec2:CreateRoute"
			err := create(ctx)
			if f := awsapi.Classify(err); f == nil || f.Code != "RouteAlreadyExists" {
				return err
			}
			// created meanwhile by another node: replace it
			action = "ec2:ReplaceRoute"
			return replace(ctx)
		}
		action = "ec2:ReplaceRoute"
		err := replace(ctx)
		if !routeMissing(awsapi.Classify(err)) {
			return err
		}
		// deleted meanwhile: create it
		action = "ec2:CreateRoute"
		return create(ctx)
	})
	if err != nil {
		return fmt.Errorf("point %s in %s at %s: %w", cidr, rtb, eni, in.explain(ctx, c, action, in.arn(c, "route-table", rtb), err))
	}
	return nil
}

func sdcKey(eni string) string { return "DescribeNetworkInterfaceAttribute sourceDestCheck " + eni }

func (in *instance) sourceDestCheck(ctx context.Context, c *awsapi.Clients, eni string) (bool, error) {
	v, err := c.Shared(ctx, sdcKey(eni), func(ctx context.Context) (any, error) {
		var out *ec2.DescribeNetworkInterfaceAttributeOutput
		err := c.Call(ctx, func(ctx context.Context) error {
			var err error
			out, err = c.EC2.DescribeNetworkInterfaceAttribute(ctx, &ec2.DescribeNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(eni), Attribute: types.NetworkInterfaceAttributeSourceDestCheck})
			return err
		})
		return out, err
	})
	if err != nil {
		return false, fmt.Errorf("read source/destination check of %s: %w", eni, in.explain(ctx, c, "ec2:DescribeNetworkInterfaceAttribute", "*", err))
	}
	out := v.(*ec2.DescribeNetworkInterfaceAttributeOutput)
	if out.SourceDestCheck == nil {
		return false, errors.New("source/destination check missing from the answer")
	}
	return aws.ToBool(out.SourceDestCheck.Value), nil
}

// sourceDestOff turns the interface's source/destination check off, which
// routing a virtual IP to it needs.
// The read is shared; the change is not (a shared call runs without its
// callers' lease deadline, which a change must keep): restores that read
// "on" together each turn it off, once, on the first takeover.
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
	// The shared read said "on": the restores after this one read again.
	c.Forget(sdcKey(eni))
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
