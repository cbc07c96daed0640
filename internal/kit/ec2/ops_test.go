package ec2

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
)

// ec2Error answers an EC2 Query API error as EC2 does.
func ec2Error(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>00000000-0000-4000-8000-000000000000</RequestID></Response>`, code, msg)
}

// intercept calls fn for every EC2 request with its parsed form; fn
// returns true when it answered the request itself.
func intercept(fn func(w http.ResponseWriter, form url.Values) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			form, _ := url.ParseQuery(string(b))
			if fn(w, form) {
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func (l *lab) admin() *ec2.Client {
	akid, secret := l.world.AdminCredentials()
	c, err := awsapi.New(context.Background(), awsapi.Settings{Region: l.world.Region(), Endpoints: awsapi.Endpoints{EC2: l.url},
		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, "")})
	if err != nil {
		l.t.Fatal(err)
	}
	return c.EC2
}

func ready(t *testing.T, in kit.Instance) kit.Readiness {
	t.Helper()
	r := in.(kit.ReadinessProber).Ready(context.Background())
	t.Logf("readiness: %+v", r)
	return r
}

// ReplaceRoute on a route that does not exist: AWS answers
// InvalidParameterValue ("There is no route defined for ... Use CreateRoute
// instead."), other endpoints InvalidRoute.NotFound. Either way the
// readiness dry run is no missing permission; another InvalidParameterValue
// is a real problem.
func TestReadinessReplaceRouteOnAMissingRoute(t *testing.T) {
	for _, tc := range []struct {
		name      string
		code, msg string // "": the simulator's own answer (AWS's)
		ready     bool
	}{
		{"aws", "", "", true},
		{"InvalidRoute.NotFound", "InvalidRoute.NotFound", "The route identified by 10.99.0.10/32 does not exist.", true},
		{"another InvalidParameterValue", "InvalidParameterValue", "The destination CIDR block overlaps a local route.", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var answered atomic.Int32
			l := newLabWith(t, sim.DefaultWorld([]string{"node1", "node2"}), intercept(func(w http.ResponseWriter, f url.Values) bool {
				if tc.code == "" || f.Get("Action") != "ReplaceRoute" {
					return false
				}
				answered.Add(1)
				ec2Error(w, tc.code, tc.msg)
				return true
			}))
			if _, ok := l.world.Route(l.rtb, "10.99.0.10/32"); ok {
				t.Fatal("the route exists already")
			}
			r := ready(t, l.instance("node2", l.routeParams(), 1))
			if r.Ready != tc.ready || len(r.Missing) != 0 || r.Unknown {
				t.Fatalf("readiness %+v, want ready=%v and nothing missing", r, tc.ready)
			}
			if !tc.ready && (!strings.Contains(r.Reason, "ec2:ReplaceRoute dry run") || !strings.Contains(r.Reason, tc.msg)) {
				t.Fatalf("reason %q", r.Reason)
			}
			if tc.code != "" && answered.Load() == 0 {
				t.Fatal("the ReplaceRoute dry run was never sent")
			}
		})
	}
}

// A route deleted between restore's DescribeRouteTables and its
// ReplaceRoute: restore falls back to CreateRoute, whichever form the
// endpoint's "no such route" answer takes.
func TestRestoreFallsBackToCreateRoute(t *testing.T) {
	for _, oldForm := range []bool{false, true} {
		t.Run(fmt.Sprintf("InvalidRoute.NotFound=%v", oldForm), func(t *testing.T) {
			var l *lab
			var replaces atomic.Int32
			l = newLabWith(t, sim.DefaultWorld([]string{"node1", "node2"}), intercept(func(w http.ResponseWriter, f url.Values) bool {
				if f.Get("Action") != "ReplaceRoute" || f.Get("DryRun") == "true" || replaces.Add(1) != 1 {
					return false
				}
				// Someone deletes the route just before the replace.
				if _, err := l.admin().DeleteRoute(context.Background(), &ec2.DeleteRouteInput{RouteTableId: aws.String(l.rtb), DestinationCidrBlock: aws.String("10.99.0.10/32")}); err != nil {
					t.Errorf("delete the route: %v", err)
				}
				if oldForm {
					ec2Error(w, "InvalidRoute.NotFound", "The route identified by 10.99.0.10/32 does not exist.")
					return true
				}
				return false // the simulator answers as AWS does
			}))
			ctx := context.Background()
			if err := l.instance("node1", l.routeParams(), 1).Restore(ctx); err != nil {
				t.Fatal(err)
			}
			n2 := l.instance("node2", l.routeParams(), 1)
			if err := n2.Restore(ctx); err != nil {
				t.Fatalf("restore with the route deleted under it: %v", err)
			}
			if replaces.Load() != 1 {
				t.Fatalf("%d ReplaceRoute calls, want 1", replaces.Load())
			}
			if r, ok := l.world.Route(l.rtb, "10.99.0.10/32"); !ok || r.NetworkInterfaceID != l.eni["node2"] {
				t.Fatalf("route after the fallback: %+v %v", r, ok)
			}
			check(t, n2, kit.Healthy)
		})
	}
}

// An endpoint that ignores DryRun (answers a mutating dry run with
// success, and acts) is caught: the readiness probe fails loudly, never
// READY. When it ignores DryRun everywhere, the read-only canaries catch it
// before any mutating dry run is sent.
func TestReadinessWhenTheEndpointIgnoresDryRun(t *testing.T) {
	const want = "the endpoint answered a DryRun request with success: it ignores DryRun, so readiness cannot be proven and the call may have acted"
	t.Run("everywhere", func(t *testing.T) {
		l := newLab(t)
		l.srv.SetFaults(sim.Faults{IgnoreDryRun: true})
		for _, p := range []map[string]string{l.routeParams(), {ParamMode: ModeEIP, ParamAllocationID: l.alloc}} {
			in := l.instance("node2", p, 1)
			before, _ := json.Marshal(l.world.State())
			r := ready(t, in)
			if r.Ready || r.Unknown || len(r.Missing) != 0 || !strings.Contains(r.Reason, want) || !strings.Contains(r.Reason, "the mutating dry runs were not sent") {
				t.Fatalf("%s mode: readiness %+v", p[ParamMode], r)
			}
			if after, _ := json.Marshal(l.world.State()); !bytes.Equal(before, after) {
				t.Fatalf("%s mode: the probe changed the world", p[ParamMode])
			}
		}
	})
	t.Run("ReplaceRoute only", func(t *testing.T) {
		l := newLab(t)
		ctx := context.Background()
		if err := l.instance("node1", l.routeParams(), 1).Restore(ctx); err != nil {
			t.Fatal(err)
		}
		l.srv.SetFaults(sim.Faults{IgnoreDryRun: true, Actions: []string{"ec2:ReplaceRoute"}})
		r := ready(t, l.instance("node2", l.routeParams(), 1))
		if r.Ready || r.Unknown || len(r.Missing) != 0 || !strings.Contains(r.Reason, "ec2:ReplaceRoute dry run on arn:aws:ec2:us-east-1:*:route-table/"+l.rtb+": "+want) {
			t.Fatalf("readiness %+v", r)
		}
		// The broken endpoint did move the route: what the reason warns of.
		if ro, _ := l.world.Route(l.rtb, "10.99.0.10/32"); ro.NetworkInterfaceID != l.eni["node2"] {
			t.Errorf("the IgnoreDryRun fault did not act (route %+v): the test proves less than it says", ro)
		}
		l.srv.SetFaults(sim.Faults{})
		if r := ready(t, l.instance("node2", l.routeParams(), 1)); !r.Ready {
			t.Fatalf("readiness on a sound endpoint: %+v", r)
		}
	})
}

// worldWithOtherVPC is the default world plus a second VPC with its own
// route table, which the nodes' interfaces are not in.
func worldWithOtherVPC(t *testing.T) (*sim.World, string, string) {
	t.Helper()
	st := sim.DefaultWorld([]string{"node1", "node2"}).State()
	st.VPCs = append(st.VPCs, sim.VPC{ID: "vpc-0other00000000001", CidrBlock: "10.1.0.0/16"})
	st.RouteTables = append(st.RouteTables, sim.RouteTable{ID: "rtb-0other00000000001", VpcID: "vpc-0other00000000001", Main: true,
		Routes: []sim.Route{{DestinationCidrBlock: "10.1.0.0/16", GatewayID: "local"}}})
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sim.ParseWorld(b)
	if err != nil {
		t.Fatal(err)
	}
	return w, "rtb-0other00000000001", "vpc-0other00000000001"
}

// 0.2.0: a route table of another VPC than the interface's is NOT READY
// with both VPCs named, and restore refuses it in plain words instead of
// failing on an opaque CreateRoute error at failover time.
func TestRouteTableInAnotherVPC(t *testing.T) {
	w, other, otherVPC := worldWithOtherVPC(t)
	l := newLabWith(t, w, nil)
	st := w.State()
	vpc := st.RouteTables[0].VpcID
	p := l.routeParams()
	p[ParamRouteTables] = l.rtb + "," + other
	n1 := l.instance("node1", p, 1)
	r := ready(t, n1)
	if r.Ready || r.Unknown || len(r.Missing) != 0 {
		t.Fatalf("readiness %+v, want NOT READY", r)
	}
	for _, s := range []string{"route table " + other + " is in VPC " + otherVPC, "network interface " + l.eni["node1"] + " is in VPC " + vpc} {
		if !strings.Contains(r.Reason, s) {
			t.Errorf("reason %q does not say %q", r.Reason, s)
		}
	}
	if strings.Contains(r.Reason, "CreateRoute") {
		t.Errorf("reason repeats the mismatch as a CreateRoute failure: %q", r.Reason)
	}
	err := n1.Restore(context.Background())
	if err == nil || !strings.Contains(err.Error(), otherVPC) || !strings.Contains(err.Error(), vpc) {
		t.Fatalf("restore: %v", err)
	}
	// The table of the interface's own VPC is fine.
	if r := ready(t, l.instance("node1", l.routeParams(), 1)); !r.Ready {
		t.Fatalf("readiness with the right table: %+v", r)
	}
}

// 0.2.0 needs ec2:DescribeNetworkInterfaces: a role without it is NOT READY
// with it named, and restore fails naming it.
func TestReadinessNamesDescribeNetworkInterfaces(t *testing.T) {
	l := newLab(t)
	var allowed []string
	for _, a := range sim.PlaceholderActions {
		if a != "ec2:DescribeNetworkInterfaces" {
			allowed = append(allowed, a)
		}
	}
	doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["` + strings.Join(allowed, `","`) + `"],"Resource":"*"}]}`
	if err := l.world.PutRolePolicy("lifeboat-node2", sim.PlaceholderPolicyName, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	n2 := l.instance("node2", l.routeParams(), 1)
	r := ready(t, n2)
	if r.Ready || !slices.Equal(r.Missing, []string{"ec2:DescribeNetworkInterfaces"}) || !strings.Contains(r.Reason, "node2 lacks ec2:DescribeNetworkInterfaces") {
		t.Fatalf("readiness without ec2:DescribeNetworkInterfaces: %+v", r)
	}
	// The refusal as data: action, resource, the code EC2 answered; and
	// nothing else in the way.
	if len(r.Gaps) != 1 || r.Gaps[0].Action != "ec2:DescribeNetworkInterfaces" || r.Gaps[0].Resource != "*" ||
		r.Gaps[0].Code != "UnauthorizedOperation" || !strings.Contains(r.Reason, r.Gaps[0].Reason) || len(r.Problems) != 0 {
		t.Fatalf("gaps %+v problems %q", r.Gaps, r.Problems)
	}
	err := n2.Restore(context.Background())
	if err == nil || !strings.Contains(err.Error(), "node2 lacks ec2:DescribeNetworkInterfaces") {
		t.Fatalf("restore: %v", err)
	}
	// eip mode does not need it
	if r := ready(t, l.instance("node2", map[string]string{ParamMode: ModeEIP, ParamAllocationID: l.alloc}, 1)); !r.Ready {
		t.Fatalf("eip readiness: %+v", r)
	}
}

func TestDescribeNetworkInterfacesIsDeclared(t *testing.T) {
	k := &Kit{}
	p := map[string]string{ParamMode: ModeRoute, ParamCIDR: "10.0.0.1/32", ParamRouteTables: "rtb-1"}
	if !slices.Contains(k.Permissions(p)[kit.OpRestore], "ec2:DescribeNetworkInterfaces") {
		t.Errorf("route restore permissions: %v", k.Permissions(p)[kit.OpRestore])
	}
	if slices.Contains(k.Permissions(map[string]string{ParamMode: ModeEIP})[kit.OpRestore], "ec2:DescribeNetworkInterfaces") {
		t.Error("eip mode does not use ec2:DescribeNetworkInterfaces")
	}
	found := false
	for _, st := range k.Policy(p, "us-east-1", "123456789012") {
		if slices.Contains(st.Actions, "ec2:DescribeNetworkInterfaces") {
			found = true
			if !slices.Equal(st.Resources, []string{"*"}) {
				t.Errorf("ec2:DescribeNetworkInterfaces on %v, want * (no resource-level permissions)", st.Resources)
			}
		}
	}
	if !found {
		t.Error("ec2:DescribeNetworkInterfaces missing from the policy")
	}
	if v := (&Kit{}).FirstNeeded("ec2:DescribeNetworkInterfaces"); v != "0.2.0" {
		t.Errorf("FirstNeeded = %q, want 0.2.0", v)
	}
}

// The step table is the one list of the kit's calls: with every action
// refused, readiness names exactly the actions whose probes the table
// lists (and doctor repeats), in route and in eip mode. (Of CreateRoute
// and ReplaceRoute, EC2 lets only the one that applies be proven: it checks
// whether the route exists before it looks at DryRun.)
func TestReadinessProbesExactlyTheSteps(t *testing.T) {
	l := newLab(t)
	deny := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:GetCallerIdentity"],"Resource":"*"}]}`
	if err := l.world.PutRolePolicy("lifeboat-node2", sim.PlaceholderPolicyName, []byte(deny)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []map[string]string{l.routeParams(), {ParamMode: ModeEIP, ParamAllocationID: l.alloc}} {
		r := ready(t, l.instance("node2", p, 1))
		got := map[string]bool{}
		for _, a := range r.Missing {
			got[a] = true
		}
		want := map[string]bool{}
		for _, pc := range ProbeCommands(p, "eni-x") {
			want[pc.Action] = true
		}
		if got["ec2:CreateRoute"] != got["ec2:ReplaceRoute"] {
			got["ec2:CreateRoute"], got["ec2:ReplaceRoute"] = want["ec2:CreateRoute"], want["ec2:ReplaceRoute"]
		}
		if r.Ready || !maps.Equal(got, want) {
			t.Fatalf("%s mode: readiness refused %v, the step table probes %v", p[ParamMode], r.Missing, want)
		}
		// and every probed action is one an operation needs
		need := map[string]bool{}
		for _, acts := range (&Kit{}).Permissions(p) {
			for _, a := range acts {
				need[a] = true
			}
		}
		for a := range want {
			if !need[a] {
				t.Errorf("%s is probed but no operation needs it", a)
			}
		}
	}
}
