package netlab

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/lifeboat-ha/lifeboat/internal/sim"
)

// The router sends a virtual IP to whichever node the simulator's route
// table names, from the moment CreateRoute or ReplaceRoute returns.
func TestRouterFollowsSim(t *testing.T) {
	l := newLab(t, Options{Nodes: 2, Router: true})
	serveAll(t, l)

	w := sim.DefaultWorld(l.Nodes())
	eni := map[string]string{} // node -> its interface
	enis := map[string]string{}
	for _, n := range l.Nodes() {
		in, ok := w.InstanceByName(n)
		if !ok {
			t.Fatalf("no instance for %s", n)
		}
		eni[n] = w.InstanceNetworkInterfaces(in.ID)[0]
		enis[eni[n]] = n
	}
	hook, err := l.MirrorRoutes(enis)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(sim.New(w, sim.Options{RouteHook: hook}).Handler())
	t.Cleanup(ts.Close)
	akid, secret := w.AdminCredentials()
	c := ec2.NewFromConfig(aws.Config{
		Region:           sim.DefaultRegion,
		Credentials:      credentials.NewStaticCredentialsProvider(akid, secret, ""),
		BaseEndpoint:     aws.String(ts.URL),
		RetryMaxAttempts: 1,
	})
	ctx := context.Background()
	rtb := w.State().RouteTables[0].ID
	cidr := l.VIPPrefix(1)
	vip := l.VIP(1) + ":" + port

	// The client reaches the nodes through the router.
	for _, n := range l.Nodes() {
		reach(t, l, Client, l.at(n), n)
	}
	// Both nodes hold the virtual IP: only the route decides who answers.
	for _, n := range l.Nodes() {
		if err := l.AddAddr(n, cidr); err != nil {
			t.Fatal(err)
		}
	}
	reach(t, l, Client, vip, "")
	routeTo := func(want string, wantOK bool) {
		t.Helper()
		got, ok, err := l.RouterRoute(cidr)
		if err != nil || got != want || ok != wantOK {
			t.Fatalf("router route for %s: %q, %v, %v; want %q, %v", cidr, got, ok, err, want, wantOK)
		}
	}
	routeTo("", false)

	if _, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: &cidr, NetworkInterfaceId: aws.String(eni["node1"])}); err != nil {
		t.Fatal(err)
	}
	routeTo("node1", true)
	reach(t, l, Client, vip, "node1")

	if _, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &rtb, DestinationCidrBlock: &cidr, NetworkInterfaceId: aws.String(eni["node2"])}); err != nil {
		t.Fatal(err)
	}
	routeTo("node2", true)
	reach(t, l, Client, vip, "node2")

	if _, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &rtb, DestinationCidrBlock: &cidr, GatewayId: aws.String("igw-1")}); err != nil {
		t.Fatal(err)
	}
	routeTo("", true)
	reach(t, l, Client, vip, "")

	flat := newLab(t, Options{Nodes: 1})
	if _, err := flat.MirrorRoutes(nil); err == nil {
		t.Fatal("MirrorRoutes on a lab without a router succeeded")
	}
}
