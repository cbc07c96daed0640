package sim

import (
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// TestRouteHook: RouteHook hears every route CreateRoute or ReplaceRoute
// changed, with the target's network interface, before the caller gets its
// answer and outside the world's lock; failed calls and dry runs are not
// reported.
func TestRouteHook(t *testing.T) {
	type call struct{ table, dest, eni string }
	var (
		mu    sync.Mutex
		calls []call
	)
	w := DefaultWorld([]string{"node1", "node2"})
	srv := New(w, Options{RouteHook: func(table, dest, eni string) {
		// Reading the world here would deadlock if the hook ran under
		// its lock; the route is already changed.
		if r, ok := w.Route(table, dest); !ok || r.NetworkInterfaceID != eni {
			t.Errorf("hook for %s -> %q ran before the change: %+v", dest, eni, r)
		}
		mu.Lock()
		calls = append(calls, call{table, dest, eni})
		mu.Unlock()
	}})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	akid, secret := w.AdminCredentials()
	e := &env{t: t, w: w, srv: srv, url: ts.URL}
	c := ec2.NewFromConfig(e.cfg(akid, secret, ""))
	rtb, eni1, eni2 := e.rtb(), e.eni("node1"), e.eni("node2")
	in2 := e.instance("node2")
	const vip = "10.99.0.10/32"
	seen := func() []call {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}

	if _, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni1, DryRun: aws.Bool(true)}); apiCode(err) != "DryRunOperation" {
		t.Fatalf("dry run: %v", err)
	}
	must[*ec2.CreateRouteOutput](t)(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni1}))
	if _, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), NetworkInterfaceId: &eni2}); apiCode(err) != "RouteAlreadyExists" {
		t.Fatalf("second CreateRoute: %v", err)
	}
	must[*ec2.ReplaceRouteOutput](t)(c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), InstanceId: &in2.ID}))
	must[*ec2.ReplaceRouteOutput](t)(c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip), GatewayId: aws.String("igw-1")}))
	must[*ec2.DeleteRouteOutput](t)(c.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: &rtb, DestinationCidrBlock: aws.String(vip)}))

	want := []call{{rtb, vip, eni1}, {rtb, vip, eni2}, {rtb, vip, ""}}
	if got := seen(); !slices.Equal(got, want) {
		t.Fatalf("hook calls\n got %+v\nwant %+v", got, want)
	}
}
