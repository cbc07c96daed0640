package sim

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// TestDescribeNetworkInterfacesVpcAndIAM: the answer carries the
// interface's VPC (the one its route tables are in), and the call is
// authorized against the caller's policies like every other.
func TestDescribeNetworkInterfacesVpcAndIAM(t *testing.T) {
	e := newEnv(t)
	eni := e.eni("node1")
	rt, _ := e.w.RouteTable(e.rtb())
	ro := ec2.NewFromConfig(e.roleCfg("node1"))
	out := must[*ec2.DescribeNetworkInterfacesOutput](t)(ro.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}}))
	if len(out.NetworkInterfaces) != 1 || aws.ToString(out.NetworkInterfaces[0].VpcId) == "" || aws.ToString(out.NetworkInterfaces[0].VpcId) != rt.VpcID {
		t.Fatalf("DescribeNetworkInterfaces: %+v, want VpcId %s", out.NetworkInterfaces, rt.VpcID)
	}
	_, err := ro.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{DryRun: aws.Bool(true), NetworkInterfaceIds: []string{eni}})
	wantErr(t, err, "DryRunOperation", 412, "")
	if err := e.w.PutRolePolicy("lifeboat-node1", PlaceholderPolicyName, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeRouteTables","Resource":"*"}]}`)); err != nil {
		t.Fatal(err)
	}
	_, err = ro.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
	wantErr(t, err, "UnauthorizedOperation", 403, "Encoded authorization failure message")
}
