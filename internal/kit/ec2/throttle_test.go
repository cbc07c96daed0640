package ec2

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// routes builds n route-mode instances on node, each its own /32 in the
// lab's table, sharing one set of clients (as a node's agent does).
func (l *lab) routes(node string, n int, pace *awsapi.Pace) []kit.Instance {
	l.t.Helper()
	akid, secret, token, _ := l.world.IssueRoleCredentials("lifeboat-"+node, time.Hour)
	s := awsapi.Settings{Region: l.world.Region(), Endpoints: awsapi.Endpoints{EC2: l.url, STS: l.url},
		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, token), CallTimeout: 5 * time.Second, Pace: pace}
	c, err := awsapi.New(context.Background(), s)
	if err != nil {
		l.t.Fatal(err)
	}
	provider := func(context.Context) (*awsapi.Clients, error) { return c, nil }
	var out []kit.Instance
	for i := range n {
		p := map[string]string{ParamENI: l.eni[node], ParamMode: ModeRoute, ParamCIDR: fmt.Sprintf("10.99.%d.%d/32", i/250, i%250+1), ParamRouteTables: l.rtb}
		inst, err := (&Kit{}).New(spec.Resource{Name: "vip", Type: "ec2", Params: p}, kit.Env{Node: node, Hierarchy: fmt.Sprintf("h%d", i), AWS: provider})
		if err != nil {
			l.t.Fatal(err)
		}
		out = append(out, inst)
	}
	return out
}

// A burst of restores beyond EC2's request-rate buckets waits for tokens:
// every restore succeeds within an action's timeout, none is given up, and
// every route points at the node. Once with the node's pacer sized like
// the account's buckets, once with a pacer that believes in a bigger
// bucket than the account has (other nodes share it): AWS throttles, the
// pacer empties and the throttled calls are retried, not failed.
func TestBurstBeyondTheBucketsWaitsForTokens(t *testing.T) {
	const n = 30
	small := sim.RateLimits{Mutating: sim.Bucket{Capacity: 5, Refill: 20}, NonMutating: sim.Bucket{Capacity: 10, Refill: 50}}
	for _, tc := range []struct {
		name string
		pace awsapi.Pace
	}{
		{"pacer matches the account", awsapi.Pace{Mutating: awsapi.Bucket{Capacity: 5, Refill: 20}, Describe: awsapi.Bucket{Capacity: 10, Refill: 50}}},
		{"pacer believes in a bigger bucket", awsapi.Pace{Mutating: awsapi.Bucket{Capacity: 200, Refill: 20}, Describe: awsapi.Bucket{Capacity: 100, Refill: 50}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			l.srv.SetFaults(sim.Faults{RateLimits: &small})
			insts := l.routes("node1", n, &tc.pace)
			var wg sync.WaitGroup
			errs := make([]error, n)
			assigned := time.Now() // all assigned in one commit
			for i, in := range insts {
				wg.Go(func() {
					// The engine's default action timeout.
					ctx, cancel := context.WithTimeout(kit.WithAssignedAt(context.Background(), assigned), spec.DefaultActionTimeout)
					defer cancel()
					errs[i] = in.Restore(ctx)
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("restore %d given up: %v", i, err)
				}
			}
			st := l.srv.RateLimitStats()
			t.Logf("admitted %v, throttled %v", st.Admitted, st.Throttled)
			replaced := st.Admitted["CreateRoute"] + st.Admitted["ReplaceRoute"]
			if replaced < n {
				t.Errorf("%d routes created or replaced, want %d", replaced, n)
			}
			for i := range n {
				cidr := fmt.Sprintf("10.99.%d.%d/32", i/250, i%250+1)
				if r, ok := l.world.Route(l.rtb, cidr); !ok || r.NetworkInterfaceID != l.eni["node1"] {
					t.Errorf("route %s: %+v (found %v), want it at node1's %s", cidr, r, ok, l.eni["node1"])
				}
			}
			// The restores of one takeover read the table and the
			// interface once: every read sent after the assignment will do.
			for _, a := range []string{"DescribeRouteTables", "DescribeNetworkInterfaces"} {
				if d := st.Admitted[a] + st.Throttled[a]; d != 1 {
					t.Errorf("%d %s for %d restores assigned together, want 1 shared", d, a, n)
				}
			}
			if tc.pace.Mutating.Capacity > small.Mutating.Capacity && st.Throttled["CreateRoute"] == 0 {
				t.Errorf("the account's bucket never throttled CreateRoute: the test proves nothing")
			}
		})
	}
}

// A restore still throttled when its time runs out says so
// (kit.ErrThrottled), for the engine to try again rather than fail the
// hierarchy over; an API that fails otherwise does not.
func TestRestoreThrottledUntilItsTimeoutSaysSo(t *testing.T) {
	l := newLab(t)
	in := l.instance("node1", l.routeParams(), 1) // no retries inside the SDK
	for _, tc := range []struct {
		faults    sim.Faults
		throttled bool
	}{
		{sim.Faults{ThrottleRate: 1}, true},
		{sim.Faults{ErrorRate: 1}, false},
	} {
		l.srv.SetFaults(tc.faults)
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		err := in.Restore(ctx)
		cancel()
		if err == nil || errors.Is(err, kit.ErrThrottled) != tc.throttled {
			t.Errorf("faults %+v: restore error %v, want kit.ErrThrottled: %v", tc.faults, err, tc.throttled)
		}
	}
}

// Checks on one node share reads up to a second old: a thousand routes
// checked every few seconds cost one table read a second, not one each.
func TestChecksShareRecentReads(t *testing.T) {
	l := newLab(t)
	insts := l.routes("node1", 20, nil)
	for _, in := range insts {
		if err := in.Restore(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Counting calls: rate limits the checks never reach.
	l.srv.SetFaults(sim.Faults{RateLimits: &sim.RateLimits{NonMutating: sim.Bucket{Capacity: 1000, Refill: 1000}}})
	for _, in := range insts {
		if h, err := in.QuickCheck(context.Background()); h != kit.Healthy {
			t.Fatalf("check: %s %v", h, err)
		}
	}
	st := l.srv.RateLimitStats()
	if n := st.Admitted["DescribeRouteTables"]; n < 1 || n > 2 {
		t.Errorf("%d DescribeRouteTables for 20 checks within a second, want 1 (2 if a second passed)", n)
	}
}
