package ec2

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// lab is an in-process simulator and, per node, the kit as that node sees
// AWS: its own instance role's temporary credentials and its own ENI.
type lab struct {
	t     *testing.T
	srv   *sim.Server
	world *sim.World
	url   string
	eni   map[string]string
	rtb   string
	alloc string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	return newLabWith(t, sim.DefaultWorld([]string{"node1", "node2"}), nil)
}

// newLabWith serves world w, through wrap when it is not nil (an endpoint
// that answers differently from the simulator).
func newLabWith(t *testing.T, w *sim.World, wrap func(http.Handler) http.Handler) *lab {
	t.Helper()
	srv := sim.New(w, sim.Options{})
	h := srv.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	l := &lab{t: t, srv: srv, world: w, url: hs.URL, eni: map[string]string{}}
	st := w.State()
	byInstance := map[string]string{}
	for _, n := range st.NetworkInterfaces {
		if n.Attachment != nil && n.Attachment.DeviceIndex == 0 {
			byInstance[n.Attachment.InstanceID] = n.ID
		}
	}
	for _, i := range st.Instances {
		l.eni[i.Name] = byInstance[i.ID]
	}
	l.rtb = st.RouteTables[0].ID
	l.alloc = st.Addresses[0].AllocationID
	return l
}

// instance builds node's instance of a resource with params.
func (l *lab) instance(node string, params map[string]string, attempts int) kit.Instance {
	l.t.Helper()
	akid, secret, token, _ := l.world.IssueRoleCredentials("lifeboat-"+node, time.Hour)
	s := awsapi.Settings{Region: l.world.Region(), Endpoints: awsapi.Endpoints{EC2: l.url, STS: l.url},
		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, token), CallTimeout: 2 * time.Second, MaxAttempts: attempts}
	k := &Kit{}
	provider := func(ctx context.Context) (*awsapi.Clients, error) { return awsapi.New(ctx, s) }
	p := map[string]string{ParamENI: l.eni[node]}
	for k, v := range params {
		p[k] = v
	}
	inst, err := k.New(spec.Resource{Name: "vip", Type: "ec2", Params: p}, kit.Env{Node: node, Hierarchy: "h", AWS: provider})
	if err != nil {
		l.t.Fatal(err)
	}
	return inst
}

func (l *lab) routeParams() map[string]string {
	return map[string]string{ParamMode: ModeRoute, ParamCIDR: "10.99.0.10/32", ParamRouteTables: l.rtb}
}

func check(t *testing.T, in kit.Instance, want kit.Health) error {
	t.Helper()
	h, err := in.QuickCheck(context.Background())
	if h != want {
		t.Fatalf("QuickCheck = %s (%v), want %s", h, err, want)
	}
	return err
}

func TestRouteModeFollowsTheOwner(t *testing.T) {
	l := newLab(t)
	n1, n2 := l.instance("node1", l.routeParams(), 0), l.instance("node2", l.routeParams(), 0)
	ctx := context.Background()
	if err := check(t, n1, kit.Failed); !strings.Contains(err.Error(), "has no route for 10.99.0.10/32") {
		t.Fatalf("check before restore: %v", err)
	}
	if err := n1.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	check(t, n1, kit.Healthy)
	if r, _ := l.world.Route(l.rtb, "10.99.0.10/32"); r.NetworkInterfaceID != l.eni["node1"] {
		t.Fatalf("route points at %q", r.NetworkInterfaceID)
	}
	if e, _ := l.world.NetworkInterface(l.eni["node1"]); e.SourceDestCheck == nil || *e.SourceDestCheck {
		t.Fatal("source/dest check still on after restore")
	}
	// node2 takes over: ReplaceRoute; node1's check now sees a definite mismatch.
	if err := n2.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	check(t, n2, kit.Healthy)
	if err := check(t, n1, kit.Failed); !strings.Contains(err.Error(), "points at \""+l.eni["node2"]) {
		t.Fatalf("node1 check after takeover: %v", err)
	}
	// Restore is idempotent; Remove leaves the route to the next owner.
	if err := n2.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n2.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if r, ok := l.world.Route(l.rtb, "10.99.0.10/32"); !ok || r.NetworkInterfaceID != l.eni["node2"] {
		t.Fatalf("remove changed the route: %+v %v", r, ok)
	}
	// Someone turns the source/dest check back on: a definite failure, and
	// recovery repairs it.
	if _, err := l.srvCall(t, "node2"); err != nil {
		t.Fatal(err)
	}
	if err := check(t, n2, kit.Failed); !strings.Contains(err.Error(), "source/destination check is back on") {
		t.Fatalf("check with source/dest on: %v", err)
	}
	if err := n2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	check(t, n2, kit.Healthy)
}

// srvCall turns node's source/destination check back on as the admin would.
func (l *lab) srvCall(t *testing.T, node string) (struct{}, error) {
	t.Helper()
	akid, secret := l.world.AdminCredentials()
	s := awsapi.Settings{Region: l.world.Region(), Endpoints: awsapi.Endpoints{EC2: l.url}, Credentials: credentials.NewStaticCredentialsProvider(akid, secret, "")}
	c, err := awsapi.New(context.Background(), s)
	if err != nil {
		return struct{}{}, err
	}
	_, err = c.EC2.ModifyNetworkInterfaceAttribute(context.Background(), modifySDC(l.eni[node], true))
	return struct{}{}, err
}

// A cloud API that throttles or fails during a check gives Unknown, never
// Failed: the resource stays in service.
func TestCheckUnknownWhenTheAPICannotAnswer(t *testing.T) {
	l := newLab(t)
	n1 := l.instance("node1", l.routeParams(), 1)
	if err := n1.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []sim.Faults{{ThrottleRate: 1}, {ErrorRate: 1}} {
		l.srv.SetFaults(f)
		if err := check(t, n1, kit.Unknown); err == nil {
			t.Fatalf("fault %+v: no error with Unknown", f)
		}
		// nor is readiness decided by an API that cannot answer
		if r := n1.(kit.ReadinessProber).Ready(context.Background()); !r.Unknown || !r.Ready || len(r.Missing) > 0 {
			t.Fatalf("fault %+v: readiness %+v, want unknown", f, r)
		}
	}
	l.srv.SetFaults(sim.Faults{})
	check(t, n1, kit.Healthy)
}

// Readiness by dry run: a role without ec2:ModifyNetworkInterfaceAttribute
// is NOT READY with the action named; with it back, READY.
func TestReadinessNamesTheMissingAction(t *testing.T) {
	l := newLab(t)
	n2 := l.instance("node2", l.routeParams(), 0)
	ctx := context.Background()
	if r := n2.(kit.ReadinessProber).Ready(ctx); !r.Ready {
		t.Fatalf("node2 not ready with the full policy: %+v", r)
	}
	var allowed []string
	for _, a := range sim.PlaceholderActions {
		if a != "ec2:ModifyNetworkInterfaceAttribute" {
			allowed = append(allowed, a)
		}
	}
	doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["` + strings.Join(allowed, `","`) + `"],"Resource":"*"}]}`
	if err := l.world.PutRolePolicy("lifeboat-node2", sim.PlaceholderPolicyName, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	r := n2.(kit.ReadinessProber).Ready(ctx)
	if r.Ready || !slices.Equal(r.Missing, []string{"ec2:ModifyNetworkInterfaceAttribute"}) || !strings.Contains(r.Reason, "node2 lacks ec2:ModifyNetworkInterfaceAttribute") {
		t.Fatalf("readiness without the permission: %+v", r)
	}
	// Nothing changed: dry runs only.
	if _, ok := l.world.Route(l.rtb, "10.99.0.10/32"); ok {
		t.Fatal("a readiness probe created the route")
	}
	// And restore fails with the same plain words.
	err := n2.Restore(ctx)
	if err == nil || !strings.Contains(err.Error(), "node2 lacks ec2:ModifyNetworkInterfaceAttribute") {
		t.Fatalf("restore without the permission: %v", err)
	}
}

func TestElasticIPMode(t *testing.T) {
	l := newLab(t)
	p := map[string]string{ParamMode: ModeEIP, ParamAllocationID: l.alloc, ParamDisassociateOnRemove: "true"}
	n1, n2 := l.instance("node1", p, 0), l.instance("node2", p, 0)
	ctx := context.Background()
	if err := n1.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	check(t, n1, kit.Healthy)
	if err := n2.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	check(t, n2, kit.Healthy)
	check(t, n1, kit.Failed)
	// node1's remove must not take the address from node2.
	if err := n1.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if a, _ := l.world.Address(l.alloc); a.NetworkInterfaceID != l.eni["node2"] {
		t.Fatalf("node1's remove moved the address: %+v", a)
	}
	if err := n2.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if a, _ := l.world.Address(l.alloc); a.AssociationID != "" {
		t.Fatalf("still associated after remove: %+v", a)
	}
}

func TestValidateAndPermissions(t *testing.T) {
	k := &Kit{}
	for _, tc := range []struct {
		p    map[string]string
		want string
	}{
		{map[string]string{}, "mode"},
		{map[string]string{"mode": "route", "cidr": "10.0.0.1", "route_tables": "rtb-1"}, "cidr"},
		{map[string]string{"mode": "route", "cidr": "10.0.0.1/32"}, "route_tables"},
		{map[string]string{"mode": "route", "cidr": "10.0.0.1/32", "route_tables": "table1"}, "route_tables"},
		{map[string]string{"mode": "eip"}, "allocation_id"},
		{map[string]string{"mode": "eip", "allocation_id": "eipalloc-1", "colour": "red"}, "colour"},
		{map[string]string{"mode": "route", "cidr": "10.0.0.1/32", "route_tables": "rtb-1", "eni": "i-1"}, "eni"},
	} {
		ps := k.Validate(tc.p)
		if len(ps) == 0 || ps[0].Field != tc.want {
			t.Errorf("Validate(%v) = %v, want a problem with %s", tc.p, ps, tc.want)
		}
	}
	if ps := k.Validate(map[string]string{"mode": "route", "cidr": "10.0.0.1/32", "route_tables": "rtb-1, rtb-2"}); len(ps) != 0 {
		t.Errorf("valid route params: %v", ps)
	}
	perms := k.Permissions(map[string]string{"mode": "route"})
	if !slices.Contains(perms[kit.OpRestore], "ec2:ModifyNetworkInterfaceAttribute") || slices.Contains(perms[kit.OpQuickCheck], "ec2:ReplaceRoute") {
		t.Errorf("route permissions: %v", perms)
	}
	if eip := k.Permissions(map[string]string{"mode": "eip"}); slices.Contains(eip[kit.OpRemove], "ec2:DisassociateAddress") {
		t.Errorf("eip without disassociate_on_remove needs no DisassociateAddress: %v", eip)
	}
	_ = aws.String
}

// A restore through an API that keeps throttling and failing, beyond the
// SDK's retries (here: none), still completes: the kit retries with backoff.
func TestRestoreRetriesThroughThrottling(t *testing.T) {
	l := newLab(t)
	n1 := l.instance("node1", l.routeParams(), 1)
	l.srv.SetFaults(sim.Faults{ThrottleRate: 0.25, ErrorRate: 0.1, Seed: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The faults do bite a single pass of the restore steps...
	failed := 0
	for i := 0; i < 10; i++ {
		if n1.(*instance).restoreOnce(ctx) != nil {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("the injected faults never failed a restore pass; the test proves nothing")
	}
	// ...and Restore rides them out.
	if err := n1.Restore(ctx); err != nil {
		t.Fatalf("restore under faults: %v", err)
	}
	l.srv.SetFaults(sim.Faults{})
	check(t, n1, kit.Healthy)
	// A definite error is not retried: it comes back at once.
	p := l.routeParams()
	p[ParamRouteTables] = "rtb-0000000000000dead"
	bad := l.instance("node1", p, 1)
	start := time.Now()
	if err := bad.Restore(ctx); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("restore of an unknown route table: %v after %s", err, time.Since(start))
	}
}
