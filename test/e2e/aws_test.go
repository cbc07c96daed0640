package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// awsCluster starts the simulator in this process and three agents whose
// AWS access goes to it, each with its own instance metadata service.
func awsCluster(t *testing.T) (*demo.Cluster, *demo.SimEnv, spec.Hierarchy) {
	t.Helper()
	env, err := demo.StartSim(three)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := startCluster(t, demo.Options{ExtraConfig: "readiness_interval: 1s\n", NodeConfig: env.NodeConfig})
	app := flagHierarchy("db", three, spec.SwitchbackIntelligent, 1, "").Resources[0]
	h := env.VIPHierarchy("db", three, app)
	h.MonitorInterval = spec.Duration(200 * time.Millisecond)
	if err := env.GrantLeastPrivilege(three, []spec.Hierarchy{h}); err != nil {
		t.Fatal(err)
	}
	apply(t, c, h)
	return c, env, h
}

// The failure lifeboat exists to prevent (DESIGN.md): a standby's role
// loses a permission the failover needs. That standby turns NOT READY
// naming the action within one probe; killing the owner sends the
// hierarchy to the other, READY standby; the permission back makes it READY.
func TestMissingPermissionNotReadyAndSkipped(t *testing.T) {
	c, env, h := awsCluster(t)
	waitFor(t, c, "node2", 20*time.Second, "db online on node1", onlineOn("db", "node1"))
	if _, node := env.RouteTarget("10.0.100.10/32"); node != "node1" {
		t.Fatalf("VIP route points at %q, want node1", node)
	}
	waitFor(t, c, "node2", 10*time.Second, "every node READY", func(st api.Status) bool {
		r := hier(st, "db").Readiness
		return r["node1"].Ready && r["node2"].Ready && r["node3"].Ready
	})

	// Remove ec2:ModifyNetworkInterfaceAttribute from node2's role only.
	full := agent.LeastPrivilege(kits.Builtin(), []spec.Hierarchy{h}, env.World.Region(), env.World.AccountID())
	var cut agent.PolicyDocument
	b, _ := json.Marshal(full)
	_ = json.Unmarshal(b, &cut)
	for i := range cut.Statement {
		cut.Statement[i].Action = slices.DeleteFunc(cut.Statement[i].Action, func(a string) bool { return a == "ec2:ModifyNetworkInterfaceAttribute" })
	}
	var kept []agent.PolicyStatement
	for _, s := range cut.Statement {
		if len(s.Action) > 0 {
			kept = append(kept, s)
		}
	}
	cut.Statement = kept
	doc, _ := json.Marshal(cut)
	if err := env.World.PutRolePolicy(env.Role("node2"), "lifeboat", doc); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	st := waitFor(t, c, "node3", 10*time.Second, "node2 NOT READY", func(st api.Status) bool {
		r := hier(st, "db").Readiness["node2"]
		return !r.Ready && slices.Contains(r.Missing, "ec2:ModifyNetworkInterfaceAttribute")
	})
	t.Logf("node2 NOT READY %s after the permission was removed: %s", time.Since(removed).Round(time.Millisecond), hier(st, "db").Readiness["node2"].Reason)
	if r := hier(st, "db").Readiness["node2"]; !strings.Contains(r.Reason, "node2 lacks ec2:ModifyNetworkInterfaceAttribute") {
		t.Fatalf("reason does not name the node and action: %q", r.Reason)
	}
	out, _, _ := lifeboat(t, c, "node3", "status")
	if !strings.Contains(out, "node2 NOT READY (missing ec2:ModifyNetworkInterfaceAttribute)") {
		t.Fatalf("status does not show node2 NOT READY:\n%s", out)
	}
	// A switchover to it is refused with the reason.
	_, errOut, code := lifeboat(t, c, "node3", "switchover", "db", "--to", "node2")
	if code == 0 || !strings.Contains(errOut, "NOT READY") || !strings.Contains(errOut, "ec2:ModifyNetworkInterfaceAttribute") {
		t.Fatalf("switchover to a NOT READY node: exit %d: %s", code, errOut)
	}

	// Kill the owner: the hierarchy skips node2 (higher priority, NOT
	// READY) for node3.
	if err := c.Signal("node1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "node3", 20*time.Second, "db online on node3", onlineOn("db", "node3"))
	if _, node := env.RouteTarget("10.0.100.10/32"); node != "node3" {
		t.Fatalf("VIP route points at %q, want node3", node)
	}

	// Put the permission back: node2 is READY again.
	full2, _ := json.Marshal(full)
	if err := env.World.PutRolePolicy(env.Role("node2"), "lifeboat", full2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "node3", 10*time.Second, "node2 READY again", func(st api.Status) bool { return hier(st, "db").Readiness["node2"].Ready })
}

// Throttling and 5xx answers during a failover: the SDK retries with
// backoff and the failover still completes.
func TestFailoverThroughThrottlingAnd5xx(t *testing.T) {
	c, env, _ := awsCluster(t)
	waitFor(t, c, "node2", 20*time.Second, "db online on node1", onlineOn("db", "node1"))
	env.Server.SetFaults(sim.Faults{ThrottleEvery: 3, ErrorRate: 0.2, Seed: 7, Actions: []string{"ec2:*"}})
	// Every node proves its readiness now, under the faults: probes that
	// are throttled or get a 5xx cannot tell, and must not make a node
	// NOT READY.
	var refreshed api.Status
	if err := c.Client("node2").Do(t.Context(), "GET", "/v1/status?refresh=1", nil, &refreshed); err != nil {
		t.Fatal(err)
	}
	for n, r := range hier(refreshed, "db").Readiness {
		if !r.Ready {
			t.Fatalf("%s NOT READY under throttling and 5xx: %s", n, r.Reason)
		}
	}
	if err := c.Signal("node1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The failover completes on a surviving node (node2 by priority, or
	// node3 if node2's restore ran out of retries), and the route and the
	// Elastic IP follow the new owner.
	var owner string
	st := waitFor(t, c, "node3", 30*time.Second, "db online on a survivor", func(st api.Status) bool {
		h := hier(st, "db")
		return h.State == "online" && (h.Owner == "node2" || h.Owner == "node3")
	})
	owner = hier(st, "db").Owner
	env.Server.SetFaults(sim.Faults{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := demo.Wait(ctx, "route and EIP on the new owner", func() bool {
		_, node := env.RouteTarget("10.0.100.10/32")
		a, _ := env.World.Address(env.World.State().Addresses[0].AllocationID)
		inst, _ := env.World.InstanceByName(owner)
		return node == owner && a.NetworkInterfaceID == env.World.InstanceNetworkInterfaces(inst.ID)[0]
	}); err != nil {
		t.Fatal(err)
	}

}
