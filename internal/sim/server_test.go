package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

// TestAdminActions runs every EC2 action as the admin through the real SDK
// and checks each change in later Describe calls.
func TestAdminActions(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	in1, in2 := e.instance("node1"), e.instance("node2")
	eni1, eni2, rtb, eip := e.eni("node1"), e.eni("node2"), e.rtb(), e.eip()

	di := must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{in1.ID}}))
	if len(di.Reservations) != 1 || len(di.Reservations[0].Instances) != 1 {
		t.Fatalf("DescribeInstances: %+v", di.Reservations)
	}
	inst := di.Reservations[0].Instances[0]
	if aws.ToString(inst.InstanceId) != in1.ID || aws.ToString(inst.PrivateIpAddress) != "10.0.1.10" ||
		inst.State.Name != types.InstanceStateNameRunning || aws.ToString(inst.Placement.AvailabilityZone) != "us-east-1a" ||
		!strings.HasSuffix(aws.ToString(inst.IamInstanceProfile.Arn), ":instance-profile/lifeboat-node1") ||
		len(inst.NetworkInterfaces) != 1 || aws.ToString(inst.NetworkInterfaces[0].NetworkInterfaceId) != eni1 ||
		aws.ToInt32(inst.NetworkInterfaces[0].Attachment.DeviceIndex) != 0 || inst.LaunchTime == nil ||
		aws.ToString(inst.Tags[0].Value) != "node1" || !aws.ToBool(inst.SourceDestCheck) {
		t.Fatalf("instance: %+v", inst)
	}
	di = must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("instance-id"), Values: []string{in2.ID, "i-nope"}}}}))
	if len(di.Reservations) != 1 || aws.ToString(di.Reservations[0].Instances[0].InstanceId) != in2.ID {
		t.Fatalf("DescribeInstances by filter: %+v", di.Reservations)
	}
	di = must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("tag:Name"), Values: []string{"node*"}}}}))
	if len(di.Reservations) != 2 {
		t.Fatalf("tag filter: %d reservations", len(di.Reservations))
	}

	dn := must[*ec2.DescribeNetworkInterfacesOutput](t)(c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{in2.ID}}}}))
	if len(dn.NetworkInterfaces) != 1 || aws.ToString(dn.NetworkInterfaces[0].NetworkInterfaceId) != eni2 ||
		aws.ToString(dn.NetworkInterfaces[0].Attachment.InstanceId) != in2.ID || dn.NetworkInterfaces[0].MacAddress == nil ||
		dn.NetworkInterfaces[0].Status != types.NetworkInterfaceStatusInUse {
		t.Fatalf("DescribeNetworkInterfaces: %+v", dn.NetworkInterfaces)
	}
	dn = must[*ec2.DescribeNetworkInterfacesOutput](t)(c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni1}}))
	if len(dn.NetworkInterfaces) != 1 || aws.ToString(dn.NetworkInterfaces[0].PrivateIpAddress) != "10.0.1.10" {
		t.Fatalf("DescribeNetworkInterfaces by id: %+v", dn.NetworkInterfaces)
	}

	routes := func() map[string]types.Route {
		t.Helper()
		out := must[*ec2.DescribeRouteTablesOutput](t)(c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{rtb}}))
		if len(out.RouteTables) != 1 || aws.ToString(out.RouteTables[0].RouteTableId) != rtb {
			t.Fatalf("DescribeRouteTables: %+v", out.RouteTables)
		}
		m := map[string]types.Route{}
		for _, r := range out.RouteTables[0].Routes {
			m[aws.ToString(r.DestinationCidrBlock)] = r
		}
		return m
	}
	if r := routes()["10.0.0.0/16"]; aws.ToString(r.GatewayId) != "local" || r.State != types.RouteStateActive || r.Origin != types.RouteOriginCreateRouteTable {
		t.Fatalf("local route: %+v", r)
	}
	const vip = "10.99.0.10/32"
	must[*ec2.CreateRouteOutput](t)(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni1}))
	if r := routes()[vip]; aws.ToString(r.NetworkInterfaceId) != eni1 || aws.ToString(r.InstanceId) != in1.ID || r.Origin != types.RouteOriginCreateRoute {
		t.Fatalf("created route: %+v", r)
	}
	_, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni2})
	wantErr(t, err, "RouteAlreadyExists", 400, vip)
	must[*ec2.ReplaceRouteOutput](t)(c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), InstanceId: &in2.ID}))
	if r := routes()[vip]; aws.ToString(r.NetworkInterfaceId) != eni2 || aws.ToString(r.InstanceId) != in2.ID {
		t.Fatalf("replaced route: %+v", r)
	}
	rt := must[*ec2.DescribeRouteTablesOutput](t)(c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{
		Filters: []types.Filter{{Name: aws.String("route.destination-cidr-block"), Values: []string{vip}}}}))
	if len(rt.RouteTables) != 1 {
		t.Fatalf("route filter: %d tables", len(rt.RouteTables))
	}
	must[*ec2.DeleteRouteOutput](t)(c.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip)}))
	if _, ok := routes()[vip]; ok {
		t.Fatal("route still there after DeleteRoute")
	}
	// ReplaceRoute on a route that does not exist: InvalidParameterValue,
	// as AWS answers (DeleteRoute answers InvalidRoute.NotFound).
	_, err = c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni1})
	wantErr(t, err, "InvalidParameterValue", 400, "There is no route defined for '"+vip+"' in the route table. Use CreateRoute instead.")
	_, err = c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: aws.Bool(true), RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni1})
	wantErr(t, err, "InvalidParameterValue", 400, "Use CreateRoute instead.")
	_, err = c.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip)})
	wantErr(t, err, "InvalidRoute.NotFound", 400, vip)
	_, err = c.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.0.0.0/16")})
	wantErr(t, err, "InvalidParameterValue", 400, "local route")

	al := must[*ec2.AllocateAddressOutput](t)(c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc}))
	if al.Domain != types.DomainTypeVpc || aws.ToString(al.PublicIp) == "" || aws.ToString(al.AllocationId) == eip {
		t.Fatalf("AllocateAddress: %+v", al)
	}
	da := must[*ec2.DescribeAddressesOutput](t)(c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{}))
	if len(da.Addresses) != 2 {
		t.Fatalf("DescribeAddresses: %d", len(da.Addresses))
	}
	as := must[*ec2.AssociateAddressOutput](t)(c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: &eip, InstanceId: &in1.ID}))
	da = must[*ec2.DescribeAddressesOutput](t)(c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{eip}}))
	if a := da.Addresses[0]; aws.ToString(a.AssociationId) != aws.ToString(as.AssociationId) || aws.ToString(a.InstanceId) != in1.ID ||
		aws.ToString(a.NetworkInterfaceId) != eni1 || aws.ToString(a.PrivateIpAddress) != "10.0.1.10" {
		t.Fatalf("associated address: %+v", a)
	}
	pub := aws.ToString(da.Addresses[0].PublicIp)
	di = must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{in1.ID}}))
	if got := aws.ToString(di.Reservations[0].Instances[0].PublicIpAddress); got != pub {
		t.Fatalf("instance public IP %q, want %q", got, pub)
	}
	_, err = c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: &eip, NetworkInterfaceId: &eni2})
	wantErr(t, err, "Resource.AlreadyAssociated", 400, eip)
	as = must[*ec2.AssociateAddressOutput](t)(c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: &eip, NetworkInterfaceId: &eni2, AllowReassociation: aws.Bool(true)}))
	da = must[*ec2.DescribeAddressesOutput](t)(c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{PublicIps: []string{pub}}))
	if a := da.Addresses[0]; aws.ToString(a.InstanceId) != in2.ID || aws.ToString(a.NetworkInterfaceId) != eni2 {
		t.Fatalf("reassociated address: %+v", a)
	}
	must[*ec2.DisassociateAddressOutput](t)(c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: as.AssociationId}))
	da = must[*ec2.DescribeAddressesOutput](t)(c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{eip}}))
	if a := da.Addresses[0]; a.AssociationId != nil || a.InstanceId != nil {
		t.Fatalf("disassociated address: %+v", a)
	}
	_, err = c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: as.AssociationId})
	wantErr(t, err, "InvalidAssociationID.NotFound", 400, "")

	sdc := func() bool {
		t.Helper()
		out := must[*ec2.DescribeNetworkInterfaceAttributeOutput](t)(c.DescribeNetworkInterfaceAttribute(ctx, &ec2.DescribeNetworkInterfaceAttributeInput{
			NetworkInterfaceId: &eni1, Attribute: types.NetworkInterfaceAttributeSourceDestCheck}))
		if aws.ToString(out.NetworkInterfaceId) != eni1 || out.SourceDestCheck == nil {
			t.Fatalf("DescribeNetworkInterfaceAttribute: %+v", out)
		}
		return aws.ToBool(out.SourceDestCheck.Value)
	}
	if !sdc() {
		t.Fatal("source/dest check should start true")
	}
	must[*ec2.ModifyNetworkInterfaceAttributeOutput](t)(c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: &eni1, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}}))
	if sdc() {
		t.Fatal("source/dest check still true after ModifyNetworkInterfaceAttribute")
	}
	if n, _ := e.w.NetworkInterface(eni1); *n.SourceDestCheck {
		t.Fatal("world not changed")
	}
}

// TestDryRun: every action answers DryRunOperation (412) for an allowed
// caller and changes nothing.
func TestDryRun(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	in1, eni1, rtb, eip := e.instance("node1"), e.eni("node1"), e.rtb(), e.eip()
	yes := aws.Bool(true)
	before, _ := json.Marshal(e.w.State())
	calls := map[string]func() error{
		"DescribeInstances": func() error {
			_, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{DryRun: yes})
			return err
		},
		"DescribeNetworkInterfaces": func() error {
			_, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{DryRun: yes})
			return err
		},
		"DescribeRouteTables": func() error {
			_, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{DryRun: yes})
			return err
		},
		"CreateRoute": func() error {
			_, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.9.9.9/32"), NetworkInterfaceId: &eni1})
			return err
		},
		"ReplaceRoute": func() error {
			_, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.0.0.0/16"), GatewayId: aws.String("igw-1")})
			return err
		},
		"DescribeAddresses": func() error {
			_, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{DryRun: yes})
			return err
		},
		"AllocateAddress": func() error {
			_, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{DryRun: yes})
			return err
		},
		"AssociateAddress": func() error {
			_, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{DryRun: yes, AllocationId: &eip, InstanceId: &in1.ID})
			return err
		},
		"DescribeNetworkInterfaceAttribute": func() error {
			_, err := c.DescribeNetworkInterfaceAttribute(ctx, &ec2.DescribeNetworkInterfaceAttributeInput{DryRun: yes, NetworkInterfaceId: &eni1, Attribute: types.NetworkInterfaceAttributeSourceDestCheck})
			return err
		},
		"ModifyNetworkInterfaceAttribute": func() error {
			_, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{DryRun: yes, NetworkInterfaceId: &eni1, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			if name == "ReplaceRoute" { // the local route cannot be replaced: validation comes first
				wantErr(t, err, "InvalidParameterValue", 400, "local route")
				return
			}
			wantErr(t, err, "DryRunOperation", http.StatusPreconditionFailed, "Request would have succeeded, but DryRun flag is set.")
		})
	}
	after, _ := json.Marshal(e.w.State())
	if string(before) != string(after) {
		t.Fatalf("DryRun changed the world:\n%s\n%s", before, after)
	}
	// DeleteRoute and DisassociateAddress need something to delete.
	must[*ec2.CreateRouteOutput](t)(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.9.9.9/32"), NetworkInterfaceId: &eni1}))
	_, err := c.DeleteRoute(ctx, &ec2.DeleteRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.9.9.9/32")})
	wantErr(t, err, "DryRunOperation", 412, "")
	_, err = c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{DryRun: yes, RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.9.9.9/32"), NetworkInterfaceId: &eni1})
	wantErr(t, err, "DryRunOperation", 412, "")
	as := must[*ec2.AssociateAddressOutput](t)(c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: &eip, InstanceId: &in1.ID}))
	_, err = c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{DryRun: yes, AssociationId: as.AssociationId})
	wantErr(t, err, "DryRunOperation", 412, "")
	if _, ok := e.w.Route(rtb, "10.9.9.9/32"); !ok {
		t.Fatal("DryRun DeleteRoute deleted the route")
	}
	if a, _ := e.w.Address(eip); a.AssociationID != aws.ToString(as.AssociationId) {
		t.Fatal("DryRun DisassociateAddress disassociated")
	}
}

var encodedRe = regexp.MustCompile(`Encoded authorization failure message: (\S+)`)

func decoded(t *testing.T, c *sts.Client, err error) map[string]any {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("not an API error: %v", err)
	}
	m := encodedRe.FindStringSubmatch(ae.ErrorMessage())
	if m == nil {
		t.Fatalf("no encoded message in %q", ae.ErrorMessage())
	}
	out := must[*sts.DecodeAuthorizationMessageOutput](t)(c.DecodeAuthorizationMessage(ctx, &sts.DecodeAuthorizationMessageInput{EncodedMessage: &m[1]}))
	var msg map[string]any
	if err := json.Unmarshal([]byte(aws.ToString(out.DecodedMessage)), &msg); err != nil {
		t.Fatalf("decoded message is not JSON: %v\n%s", err, aws.ToString(out.DecodedMessage))
	}
	return msg
}

// TestUnauthorized: the support case from DESIGN.md. A role without
// ec2:ModifyNetworkInterfaceAttribute gets UnauthorizedOperation (also on
// DryRun) and the decoded message names the action, resource and role.
func TestUnauthorized(t *testing.T) {
	e := newEnv(t)
	var actions []string
	for _, a := range PlaceholderActions {
		if a != "ec2:ModifyNetworkInterfaceAttribute" {
			actions = append(actions, a)
		}
	}
	doc := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":%s,"Resource":"*"}]}`, must[[]byte](t)(json.Marshal(actions)))
	if err := e.w.PutRolePolicy("lifeboat-node1", PlaceholderPolicyName, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	cfg := e.roleCfg("node1")
	c := ec2.NewFromConfig(cfg)
	eni1 := e.eni("node1")
	in := &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &eni1, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}}
	_, err := c.ModifyNetworkInterfaceAttribute(ctx, in)
	wantErr(t, err, "UnauthorizedOperation", http.StatusForbidden, "You are not authorized to perform this operation. Encoded authorization failure message: ")
	in.DryRun = aws.Bool(true)
	_, dryErr := c.ModifyNetworkInterfaceAttribute(ctx, in)
	wantErr(t, dryErr, "UnauthorizedOperation", http.StatusForbidden, "Encoded authorization failure message: ")
	// The describe half of the pair is still allowed.
	must[*ec2.DescribeNetworkInterfaceAttributeOutput](t)(c.DescribeNetworkInterfaceAttribute(ctx, &ec2.DescribeNetworkInterfaceAttributeInput{NetworkInterfaceId: &eni1, Attribute: types.NetworkInterfaceAttributeSourceDestCheck}))

	msg := decoded(t, e.adminSTS(), err)
	mctx := msg["context"].(map[string]any)
	wantARN := "arn:aws:ec2:us-east-1:123456789012:network-interface/" + eni1
	if msg["allowed"] != false || msg["explicitDeny"] != false || mctx["action"] != "ec2:ModifyNetworkInterfaceAttribute" || mctx["resource"] != wantARN {
		t.Fatalf("decoded message: %v", msg)
	}
	p := mctx["principal"].(map[string]any)
	if want := "arn:aws:sts::123456789012:assumed-role/lifeboat-node1/" + e.instance("node1").ID; p["arn"] != want {
		t.Fatalf("principal arn %v, want %s", p["arn"], want)
	}
	if n, _ := e.w.NetworkInterface(eni1); !*n.SourceDestCheck {
		t.Fatal("denied call changed the world")
	}

	// The role may not decode (the placeholder policy has no sts actions)…
	rs := sts.NewFromConfig(cfg)
	enc := encodedRe.FindStringSubmatch(err.Error())[1]
	_, derr := rs.DecodeAuthorizationMessage(ctx, &sts.DecodeAuthorizationMessageInput{EncodedMessage: &enc})
	wantErr(t, derr, "AccessDenied", http.StatusForbidden, "sts:DecodeAuthorizationMessage")
	// …until it is allowed to.
	if err := e.w.PutRolePolicy("lifeboat-node1", "decode", []byte(`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"sts:DecodeAuthorizationMessage","Resource":"*"}}`)); err != nil {
		t.Fatal(err)
	}
	if m := decoded(t, rs, dryErr); m["context"].(map[string]any)["action"] != "ec2:ModifyNetworkInterfaceAttribute" {
		t.Fatalf("role-decoded message: %v", m)
	}
	_, derr = rs.DecodeAuthorizationMessage(ctx, &sts.DecodeAuthorizationMessageInput{EncodedMessage: aws.String("bm90LWEtbWVzc2FnZQ")})
	wantErr(t, derr, "InvalidAuthorizationMessageException", 400, "")

	// Granting the action fixes it, without new credentials.
	if err := e.w.PutRolePolicy("lifeboat-node1", "sdc", []byte(`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ec2:ModifyNetworkInterfaceAttribute","Resource":"arn:aws:ec2:*:*:network-interface/*"}}`)); err != nil {
		t.Fatal(err)
	}
	_, err = c.ModifyNetworkInterfaceAttribute(ctx, in)
	wantErr(t, err, "DryRunOperation", 412, "")
}

// TestExplicitDenyWins: a Deny on one route table beats Allow "*".
func TestExplicitDenyWins(t *testing.T) {
	e := newEnv(t)
	rtb, eni1 := e.rtb(), e.eni("node1")
	doc := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"ec2:*","Resource":"*"},
		{"Sid":"NoRouteChanges","Effect":"Deny","Action":["ec2:ReplaceRoute","ec2:DeleteRoute"],"Resource":"arn:aws:ec2:us-east-1:123456789012:route-table/%s"}]}`, rtb)
	if err := e.w.PutRolePolicy("lifeboat-node1", PlaceholderPolicyName, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	c := ec2.NewFromConfig(e.roleCfg("node1"))
	must[*ec2.CreateRouteOutput](t)(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.9.0.1/32"), NetworkInterfaceId: &eni1}))
	_, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.9.0.1/32"), NetworkInterfaceId: &eni1})
	wantErr(t, err, "UnauthorizedOperation", 403, "")
	msg := decoded(t, e.adminSTS(), err)
	if msg["explicitDeny"] != true {
		t.Fatalf("explicitDeny: %v", msg)
	}
	items := msg["matchedStatements"].(map[string]any)["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["statementId"] != "NoRouteChanges" || items[0].(map[string]any)["policyName"] != PlaceholderPolicyName {
		t.Fatalf("matchedStatements: %v", items)
	}
}

func TestGetCallerIdentity(t *testing.T) {
	e := newEnv(t)
	admin := must[*sts.GetCallerIdentityOutput](t)(e.adminSTS().GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}))
	if aws.ToString(admin.Account) != DefaultAccountID || aws.ToString(admin.Arn) != "arn:aws:iam::123456789012:user/admin" || !strings.HasPrefix(aws.ToString(admin.UserId), "AIDA") {
		t.Fatalf("admin identity: %+v", admin)
	}
	in := e.instance("node2")
	role := must[*sts.GetCallerIdentityOutput](t)(sts.NewFromConfig(e.roleCfg("node2")).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}))
	if aws.ToString(role.Arn) != "arn:aws:sts::123456789012:assumed-role/lifeboat-node2/"+in.ID ||
		!strings.HasPrefix(aws.ToString(role.UserId), "AROA") || !strings.HasSuffix(aws.ToString(role.UserId), ":"+in.ID) {
		t.Fatalf("role identity: %+v", role)
	}
	cred, err := e.w.IssueInstanceCredentials(in.ID, time.Hour)
	if err != nil || cred.Role != "lifeboat-node2" || cred.SessionName != in.ID || cred.SessionToken == "" {
		t.Fatalf("IssueInstanceCredentials: %+v %v", cred, err)
	}
}

func TestAuthFailures(t *testing.T) {
	e := newEnv(t)
	akid, secret := e.w.AdminCredentials()
	_, err := ec2.NewFromConfig(e.cfg(akid, secret+"x", "")).DescribeInstances(ctx, nil)
	wantErr(t, err, "AuthFailure", http.StatusUnauthorized, "AWS was not able to validate the provided access credentials")
	_, err = ec2.NewFromConfig(e.cfg("AKIANOTAKEY000000000", secret, "")).DescribeInstances(ctx, nil)
	wantErr(t, err, "AuthFailure", 401, "")
	_, err = sts.NewFromConfig(e.cfg(akid, secret+"x", "")).GetCallerIdentity(ctx, nil)
	wantErr(t, err, "SignatureDoesNotMatch", 403, "")
	wrongRegion := e.cfg(akid, secret, "")
	wrongRegion.Region = "eu-west-1"
	_, err = ec2.NewFromConfig(wrongRegion).DescribeInstances(ctx, nil)
	wantErr(t, err, "AuthFailure", 401, "eu-west-1")

	// Temporary credentials expire on the simulator's clock…
	rid, rsecret, token, exp := e.w.IssueRoleCredentials("lifeboat-node1", time.Minute)
	role := ec2.NewFromConfig(e.cfg(rid, rsecret, token))
	must[*ec2.DescribeInstancesOutput](t)(role.DescribeInstances(ctx, nil))
	if d := time.Until(exp); d <= 0 || d > time.Minute+time.Second {
		t.Fatalf("expiry %v from now", d)
	}
	e.advance(2 * time.Minute)
	_, err = role.DescribeInstances(ctx, nil)
	wantErr(t, err, "ExpiredToken", 400, "expired")
	_, err = sts.NewFromConfig(e.cfg(rid, rsecret, token)).GetCallerIdentity(ctx, nil)
	wantErr(t, err, "ExpiredToken", 400, "")
	// …and all at once with the ExpireCredentials fault; static keys go on.
	c := ec2.NewFromConfig(e.roleCfg("node2"))
	must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, nil))
	e.srv.SetFaults(Faults{ExpireCredentials: true})
	_, err = c.DescribeInstances(ctx, nil)
	wantErr(t, err, "ExpiredToken", 400, "")
	must[*ec2.DescribeInstancesOutput](t)(e.adminEC2().DescribeInstances(ctx, nil))
	// A wrong session token.
	rid, rsecret, _, _ = e.w.IssueRoleCredentials("lifeboat-node1", time.Hour)
	_, err = ec2.NewFromConfig(e.cfg(rid, rsecret, "bogus")).DescribeInstances(ctx, nil)
	wantErr(t, err, "AuthFailure", 401, "")
}

// TestNotFound: unknown and malformed ids answer EC2's codes.
func TestNotFound(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	rtb, eni1 := e.rtb(), e.eni("node1")
	cases := []struct {
		name string
		call func() error
		code string
	}{
		{"route table", func() error {
			_, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{"rtb-0123456789abcdef0"}})
			return err
		}, "InvalidRouteTableID.NotFound"},
		{"malformed route table", func() error {
			_, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String("table1"), DestinationCidrBlock: aws.String("10.1.1.1/32"), NetworkInterfaceId: &eni1})
			return err
		}, "InvalidRouteTableID.Malformed"},
		{"interface", func() error {
			_, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.1.1.1/32"), NetworkInterfaceId: aws.String("eni-0123456789abcdef0")})
			return err
		}, "InvalidNetworkInterfaceID.NotFound"},
		{"instance", func() error {
			_, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
			return err
		}, "InvalidInstanceID.NotFound"},
		{"allocation", func() error {
			_, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String("eipalloc-0123456789abcdef0"), NetworkInterfaceId: &eni1})
			return err
		}, "InvalidAllocationID.NotFound"},
		{"association", func() error {
			_, err := c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String("eipassoc-0123456789abcdef0")})
			return err
		}, "InvalidAssociationID.NotFound"},
		{"attribute interface", func() error {
			_, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String("eni-0123456789abcdef0"), SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}})
			return err
		}, "InvalidNetworkInterfaceID.NotFound"},
		{"missing parameter", func() error {
			_, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, NetworkInterfaceId: &eni1})
			return err
		}, "MissingParameter"},
		{"bad cidr", func() error {
			_, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.1.1.1/8"), NetworkInterfaceId: &eni1})
			return err
		}, "InvalidParameterValue"},
		{"bad filter", func() error {
			_, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: []types.Filter{{Name: aws.String("colour"), Values: []string{"x"}}}})
			return err
		}, "InvalidParameterValue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.call(), tc.code, 400, "") })
	}
}

// TestMultipleInterfaces: routes must target the ENI on instances with
// several (resource-agents PR #1320).
func TestMultipleInterfaces(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	in, rtb := e.instance("node1"), e.rtb()
	second, err := e.w.AddNetworkInterface(in.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.8.0.1/32"), InstanceId: &in.ID})
	wantErr(t, err, "InvalidInstanceID", 400, "There are multiple interfaces attached to instance")
	must[*ec2.CreateRouteOutput](t)(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.8.0.1/32"), NetworkInterfaceId: &second}))
	if r, _ := e.w.Route(rtb, "10.8.0.1/32"); r.NetworkInterfaceID != second || r.InstanceID != in.ID {
		t.Fatalf("route: %+v", r)
	}
	di := must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{in.ID}}))
	if n := len(di.Reservations[0].Instances[0].NetworkInterfaces); n != 2 {
		t.Fatalf("%d interfaces", n)
	}
}

// TestConcurrentCalls exercises the world's lock under -race.
func TestConcurrentCalls(t *testing.T) {
	e := newEnv(t)
	c := e.adminEC2()
	rtb, eni1, eni2 := e.rtb(), e.eni("node1"), e.eni("node2")
	must[*ec2.CreateRouteOutput](t)(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.7.0.1/32"), NetworkInterfaceId: &eni1}))
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(2)
		target := []string{eni1, eni2}[i%2]
		go func() {
			defer wg.Done()
			_, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String("10.7.0.1/32"), NetworkInterfaceId: &target})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
