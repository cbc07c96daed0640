package agenttest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Harness is a running cluster of lifeboat agents, seen and driven from
// outside: in memory (MakeCluster, under testing/synctest) or as real
// processes (test/e2e). The scenarios below are written once against it.
type Harness interface {
	// Nodes are the cluster's nodes, node1..nodeN.
	Nodes() []string
	// Status asks node's API.
	Status(node string) (api.Status, error)
	// Apply creates or updates hierarchies through any running node.
	Apply(hs ...spec.Hierarchy) error
	// Service is a one-resource hierarchy whose resource the harness can
	// see from outside (Running), with the given priority list.
	Service(name string, nodes []string) spec.Hierarchy
	// Running lists the nodes where the hierarchy's resource is in
	// service right now, as seen from outside the agents. A dead machine
	// runs nothing.
	Running(hierarchy string) []string
	// DoubleOwners lists every moment the harness saw the resource
	// brought into service on one node while it served on another (a
	// node that resumes from a hang serves what it ran until its agent
	// takes it out: that is not a restore).
	DoubleOwners() []string
	// Kill stops node as a machine's death would: the agent gets no
	// chance to hand anything over, and what it ran is gone with it.
	Kill(node string)
	// Stop stops node's agent as SIGTERM does (its shutdown strategy,
	// switchover by default, hands its hierarchies over).
	Stop(node string)
	// Start starts a stopped or killed node again on its data directory,
	// with the version it last ran.
	Start(node string)
	// Upgrade starts a stopped node on the version under test (a
	// harness set up with Setup.Old starts every node on the previous
	// version).
	Upgrade(node string)
	// Isolate cuts every link to and from node; Heal restores every
	// link. A harness that cannot cut links returns ErrUnsupported.
	Isolate(node string) error
	// Cut drops everything between two nodes, both ways (the others
	// still reach both).
	Cut(a, b string) error
	// Hang stalls node as a frozen machine: its agent makes no progress
	// and answers nobody, and what it ran serves nobody (Running leaves
	// it out). Resume ends the stall: what it still runs serves again
	// until its agent takes it out.
	Hang(node string) error
	Resume(node string) error
	// Restores counts, per node, how often the hierarchy's resource was
	// brought into service there.
	Restores(hierarchy string) map[string]int
	// Break makes every resource on node fail its checks (broken true)
	// or work again.
	Break(node string, broken bool) error
	// Switchover asks for hierarchy to move to node.
	Switchover(hierarchy, to string) error
	// StartHierarchy is `lifeboat start NAME`: in service again, every
	// failure mark and the failover history cleared.
	StartHierarchy(hierarchy string) error
	// DecideFailover is `lifeboat failover confirm|block NAME`.
	DecideFailover(hierarchy, decision string) error
	// Post sends an operator's request (an API path and its JSON body)
	// through a running node and returns what the API refused, if it did.
	Post(path string, body any) error
	Heal() error
	// Eventually polls cond (every few milliseconds of the harness's
	// clock) until it holds, and fails the test with what cond last
	// saw when timeout passes.
	Eventually(timeout time.Duration, what string, cond func() (bool, string))
}

// Eventually polls cond every interval of the clock (fake time in a
// synctest bubble) until it holds, and fails t with what cond last saw
// when timeout passes. Harnesses implement their Eventually with it.
func Eventually(t testing.TB, timeout, every time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s; last seen: %s", what, timeout, seen)
		}
		time.Sleep(every)
	}
}

// ErrUnsupported: the harness cannot do this (the scenario is skipped).
var ErrUnsupported = errors.New("not supported by this harness")

// Setup is how a scenario wants its cluster started.
type Setup struct {
	// Old starts every node on the previous version (one that supports
	// feature level 1 only).
	Old bool
}

// Scenario is a failure or operations scenario written once and run on
// every harness.
type Scenario struct {
	Name  string
	Setup Setup
	Run   func(t testing.TB, h Harness)
}

// Scenarios is every shared scenario.
var Scenarios = []Scenario{
	{Name: "KillOwner", Run: killOwner},
	{Name: "LeaderLoss", Run: leaderLoss},
	{Name: "IsolateOwner", Run: isolateOwner},
	{Name: "OneLostLink", Run: oneLostLink},
	{Name: "HangOwner", Run: hangOwner},
	{Name: "MarksExpire", Run: marksExpire},
	{Name: "AntiFlap", Run: antiFlap},
	{Name: "ConfirmFailover", Run: confirmFailover},
	{Name: "MaintenanceRestart", Run: maintenanceRestart},
	{Name: "StandbyDrains", Run: standbyDrains},
	{Name: "RollingUpgrade", Setup: Setup{Old: true}, Run: rollingUpgrade},
}

// Timeouts of the scenarios: generous next to a failover (under a
// second at default timing) so that a loaded machine does not fail a
// process run.
const (
	formTimeout     = 30 * time.Second
	failoverTimeout = 10 * time.Second
	// healTimeout bounds how long the nodes of a healed partition take to
	// see each other alive again and agree: a few of the failure
	// detector's rounds (it took 15-28 s before members held failed were
	// joined again every second).
	healTimeout = 5 * time.Second
)

// hierarchyOf returns name's entry in st.
func hierarchyOf(st api.Status, name string) (api.HierarchyStatus, bool) {
	for _, h := range st.Hierarchies {
		if h.Name == name {
			return h, true
		}
	}
	return api.HierarchyStatus{}, false
}

// servedOn waits until the hierarchy runs on exactly node (seen from
// outside) and node's status says it is online there.
func servedOn(t testing.TB, h Harness, name, node string, timeout time.Duration) {
	t.Helper()
	defer took(t, time.Now(), name+" in service on "+node)
	h.Eventually(timeout, fmt.Sprintf("%s in service on %s only", name, node), func() (bool, string) {
		run := h.Running(name)
		st, err := h.Status(node)
		if err != nil {
			return false, fmt.Sprintf("running on %v; status of %s: %v", run, node, err)
		}
		hs, _ := hierarchyOf(st, name)
		ok := slices.Equal(run, []string{node}) && hs.Owner == node && hs.State == "online"
		return ok, fmt.Sprintf("running on %v; %s says owner %q, state %q", run, node, hs.Owner, hs.State)
	})
}

// agree waits until every node in nodes answers its status and they all
// see the same leader, feature level, every node alive and holding a
// lease (renewed with each of them) and the same owner and state of every
// hierarchy.
func agree(t testing.TB, h Harness, nodes []string, timeout time.Duration) api.Status {
	t.Helper()
	defer took(t, time.Now(), "all agree")
	var first api.Status
	h.Eventually(timeout, fmt.Sprintf("%v agree on the cluster's state", nodes), func() (bool, string) {
		var views []string
		for i, n := range nodes {
			st, err := h.Status(n)
			if err != nil {
				return false, fmt.Sprintf("status of %s: %v", n, err)
			}
			v := view(st)
			if i == 0 {
				first = st
			}
			for _, ns := range st.Nodes {
				if ns.State != "alive" {
					return false, fmt.Sprintf("%s sees %s %s", n, ns.Name, ns.State)
				}
				if ns.Gen == 0 || ns.Fenced || !ns.LeaseFresh {
					return false, fmt.Sprintf("%s sees %s without a fresh lease (generation %d, fenced %v)", n, ns.Name, ns.Gen, ns.Fenced)
				}
			}
			if st.Leader == "" {
				return false, n + " sees no leader"
			}
			views = append(views, n+": "+v)
			if v != view(first) {
				return false, strings.Join(views, "; ")
			}
		}
		return true, ""
	})
	return first
}

// took logs how long a wait took, on the harness's clock (fake time in
// memory).
func took(t testing.TB, start time.Time, what string) {
	t.Helper()
	t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
}

// view is what all nodes must agree on.
func view(st api.Status) string {
	var b strings.Builder
	// A version that predates feature levels reports none: level 1.
	fmt.Fprintf(&b, "leader %s level %d", st.Leader, max(st.FeatureLevel, 1))
	for _, h := range st.Hierarchies {
		fmt.Fprintf(&b, " %s=%s@%s", h.Name, h.State, h.Owner)
	}
	return b.String()
}

func noDoubleOwners(t testing.TB, h Harness) {
	t.Helper()
	if d := h.DoubleOwners(); len(d) > 0 {
		t.Errorf("a resource was in service on two nodes at once: %s", strings.Join(d, "; "))
	}
}

func without(nodes []string, not string) []string {
	var out []string
	for _, n := range nodes {
		if n != not {
			out = append(out, n)
		}
	}
	return out
}

// killOwner: the node running a service dies; the next node by priority
// takes it over, and the dead node, back, does not take it back
// (intelligent switchback) and agrees with the others.
func killOwner(t testing.TB, h Harness) {
	nodes := h.Nodes()
	agree(t, h, nodes, formTimeout)
	if err := h.Apply(h.Service("web", nodes)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "web", nodes[0], formTimeout)
	h.Kill(nodes[0])
	servedOn(t, h, "web", nodes[1], failoverTimeout)
	h.Start(nodes[0])
	agree(t, h, nodes, formTimeout)
	servedOn(t, h, "web", nodes[1], failoverTimeout)
	noDoubleOwners(t, h)
}

// leaderLoss: the raft leader dies (with the service when it ran it); a
// new leader is elected among the rest and the service runs on exactly
// one of them.
func leaderLoss(t testing.TB, h Harness) {
	nodes := h.Nodes()
	st := agree(t, h, nodes, formTimeout)
	leader := st.Leader
	// The service prefers a node that is not the leader, so that losing
	// the leader alone must not move it.
	prio := append(without(nodes, leader), leader)
	if err := h.Apply(h.Service("db", prio)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "db", prio[0], formTimeout)
	h.Kill(leader)
	rest := without(nodes, leader)
	h.Eventually(failoverTimeout, "a new leader among "+strings.Join(rest, ", "), func() (bool, string) {
		st, err := h.Status(rest[0])
		if err != nil {
			return false, err.Error()
		}
		return st.Leader != "" && st.Leader != leader, "leader " + st.Leader
	})
	servedOn(t, h, "db", prio[0], failoverTimeout)
	h.Start(leader)
	agree(t, h, nodes, formTimeout)
	servedOn(t, h, "db", prio[0], failoverTimeout)
	noDoubleOwners(t, h)
}

// isolateOwner: the owner loses every link (its process runs on); it
// must take the service out itself once its lease runs out, before the
// others bring it up, and after the heal everyone agrees.
func isolateOwner(t testing.TB, h Harness) {
	nodes := h.Nodes()
	agree(t, h, nodes, formTimeout)
	if err := h.Apply(h.Service("app", nodes)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "app", nodes[0], formTimeout)
	if err := h.Isolate(nodes[0]); errors.Is(err, ErrUnsupported) {
		t.Skip("this harness cannot cut links")
	} else if err != nil {
		t.Fatalf("isolate %s: %v", nodes[0], err)
	}
	servedOn(t, h, "app", nodes[1], failoverTimeout)
	if err := h.Heal(); err != nil {
		t.Fatalf("heal: %v", err)
	}
	agree(t, h, nodes, healTimeout)
	servedOn(t, h, "app", nodes[1], failoverTimeout)
	noDoubleOwners(t, h)
}

// oneLostLink: the link between the owner and one other node breaks.
// Each still reaches the third node, which keeps both alive (indirect
// probes) and renews both leases: nothing fails over, and the service
// stays where it is, through the cut and after the heal.
func oneLostLink(t testing.TB, h Harness) {
	nodes := h.Nodes()
	if len(nodes) < 3 {
		t.Skip("needs three nodes")
	}
	agree(t, h, nodes, formTimeout)
	if err := h.Apply(h.Service("lnk", nodes)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "lnk", nodes[0], formTimeout)
	before, err := h.Status(nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := hierarchyOf(before, "lnk")
	if err := h.Cut(nodes[0], nodes[1]); errors.Is(err, ErrUnsupported) {
		t.Skip("this harness cannot cut links")
	} else if err != nil {
		t.Fatalf("cut %s-%s: %v", nodes[0], nodes[1], err)
	}
	// Several leases and failure-detection rounds: a wrong suspicion
	// would have failed the owner over by then.
	watch := 5 * time.Second
	end := time.Now().Add(watch)
	for time.Now().Before(end) {
		if run := h.Running("lnk"); !slices.Equal(run, []string{nodes[0]}) {
			t.Fatalf("with one link lost the service moved: running on %v", run)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err := h.Status(nodes[2])
	if err != nil {
		t.Fatal(err)
	}
	now, _ := hierarchyOf(st, "lnk")
	if now.Owner != nodes[0] || now.Epoch != hs.Epoch {
		t.Fatalf("with one link lost, %s says owner %s epoch %d; before: %s epoch %d", nodes[2], now.Owner, now.Epoch, hs.Owner, hs.Epoch)
	}
	if err := h.Heal(); err != nil {
		t.Fatalf("heal: %v", err)
	}
	agree(t, h, nodes, healTimeout)
	servedOn(t, h, "lnk", nodes[0], failoverTimeout)
	noDoubleOwners(t, h)
}

// hangOwner: the owner hangs for longer than its lease (a frozen VM,
// SIGSTOP). The service comes back on the next node; the owner, resumed,
// finds its lease expired: it takes the service out at once, restores
// nothing (no action on stale authority), rejoins, and the service stays
// where it is.
func hangOwner(t testing.TB, h Harness) {
	nodes := h.Nodes()
	agree(t, h, nodes, formTimeout)
	if err := h.Apply(h.Service("hng", nodes)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "hng", nodes[0], formTimeout)
	before := h.Restores("hng")[nodes[0]]
	if err := h.Hang(nodes[0]); errors.Is(err, ErrUnsupported) {
		t.Skip("this harness cannot hang a node")
	} else if err != nil {
		t.Fatalf("hang %s: %v", nodes[0], err)
	}
	servedOn(t, h, "hng", nodes[1], failoverTimeout)
	if err := h.Resume(nodes[0]); err != nil {
		t.Fatalf("resume %s: %v", nodes[0], err)
	}
	start := time.Now()
	h.Eventually(failoverTimeout, nodes[0]+", resumed, takes hng out", func() (bool, string) {
		run := h.Running("hng")
		return slices.Equal(run, []string{nodes[1]}), fmt.Sprintf("running on %v", run)
	})
	took(t, start, nodes[0]+" took hng out after resuming")
	agree(t, h, nodes, healTimeout)
	servedOn(t, h, "hng", nodes[1], failoverTimeout)
	if after := h.Restores("hng")[nodes[0]]; after != before {
		t.Errorf("%s restored hng %d times after it resumed with an expired lease", nodes[0], after-before)
	}
	noDoubleOwners(t, h)
}

// marksExpire: the service failed on both standbys (each is marked) and
// then its owner dies. No node can take it: status says why, node by
// node, and when each mark expires. Once failure_timeout has passed since
// the marks, they expire and the service comes back on the first standby
// without anyone running `lifeboat start`. (Before marks expired, the
// service stayed down until an operator cleared them or the dead node
// came back.)
func marksExpire(t testing.TB, h Harness) {
	nodes := h.Nodes()
	if len(nodes) < 3 {
		t.Skip("needs three nodes")
	}
	const failureTimeout = 6 * time.Second
	agree(t, h, nodes, formTimeout)
	svc := h.Service("mrk", nodes)
	svc.FailureTimeout = spec.Duration(failureTimeout)
	if err := h.Apply(svc); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "mrk", nodes[0], formTimeout)
	// Both standbys break; a switchover to each fails there and brings
	// the service back to the owner, with the standby marked.
	for _, n := range nodes[1:] {
		if err := h.Break(n, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes[1:] {
		// It may answer success (restored, its first check not yet
		// run) or the failure: either way the check fails there next.
		err := h.Switchover("mrk", n)
		t.Logf("switchover to %s, which is broken: %v", n, err)
		h.Eventually(failoverTimeout, "mrk failed on "+n+" and back on "+nodes[0], func() (bool, string) {
			st, err := h.Status(nodes[0])
			if err != nil {
				return false, err.Error()
			}
			hs, _ := hierarchyOf(st, "mrk")
			return slices.Contains(hs.Failed, n) && hs.Owner == nodes[0] && hs.State == "online", fmt.Sprintf("%+v", hs)
		})
	}
	for _, n := range nodes[1:] {
		if err := h.Break(n, false); err != nil {
			t.Fatal(err)
		}
	}
	marked := time.Now()
	h.Kill(nodes[0])
	// Nowhere to go: the reason names each node.
	h.Eventually(failoverTimeout, "status explains why mrk runs nowhere", func() (bool, string) {
		st, err := h.Status(nodes[1])
		if err != nil {
			return false, err.Error()
		}
		hs, _ := hierarchyOf(st, "mrk")
		ok := hs.State == "failed" && strings.Contains(hs.Reason, nodes[1]+": the hierarchy failed there (the mark expires at") &&
			strings.Contains(hs.Reason, nodes[2]+": the hierarchy failed there") && len(hs.FailedUntil) == 2
		return ok, fmt.Sprintf("state %s, reason %q, failed until %v", hs.State, hs.Reason, hs.FailedUntil)
	})
	if run := h.Running("mrk"); len(run) != 0 {
		t.Fatalf("mrk runs on %v with every live node marked", run)
	}
	servedOn(t, h, "mrk", nodes[1], failureTimeout+failoverTimeout)
	if waited := time.Since(marked); waited < failureTimeout-2*time.Second {
		t.Errorf("mrk came back %s after the marks, before failure_timeout (%s) could have expired them", waited, failureTimeout)
	}
	h.Start(nodes[0])
	agree(t, h, nodes, formTimeout)
	servedOn(t, h, "mrk", nodes[1], failoverTimeout)
	noDoubleOwners(t, h)
}

// antiFlap: with max_failovers 2, the owner dies three times within the
// window: the third failover is blocked, the hierarchy stops and status
// says why; `lifeboat start` brings it back.
func antiFlap(t testing.TB, h Harness) {
	nodes := h.Nodes()
	if len(nodes) < 3 {
		t.Skip("needs three nodes")
	}
	agree(t, h, nodes, formTimeout)
	svc := h.Service("flp", nodes)
	svc.MaxFailovers = 2
	svc.FailoverWindow = spec.Duration(time.Hour)
	if err := h.Apply(svc); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "flp", nodes[0], formTimeout)
	// Two failovers: node1 dies (to node2), back; node2 dies (to node1,
	// first by priority), back.
	h.Kill(nodes[0])
	servedOn(t, h, "flp", nodes[1], failoverTimeout)
	h.Start(nodes[0])
	agree(t, h, nodes, formTimeout)
	h.Kill(nodes[1])
	servedOn(t, h, "flp", nodes[0], failoverTimeout)
	h.Start(nodes[1])
	agree(t, h, nodes, formTimeout)
	// The third is one too many.
	h.Kill(nodes[0])
	h.Eventually(failoverTimeout, "flp stopped by anti-flap", func() (bool, string) {
		st, err := h.Status(nodes[1])
		if err != nil {
			return false, err.Error()
		}
		hs, _ := hierarchyOf(st, "flp")
		return hs.State == "stopped" && strings.Contains(hs.Reason, "anti-flap"), fmt.Sprintf("state %s, reason %q", hs.State, hs.Reason)
	})
	if run := h.Running("flp"); len(run) != 0 {
		t.Fatalf("flp runs on %v after anti-flap stopped it", run)
	}
	if err := h.StartHierarchy("flp"); err != nil {
		t.Fatalf("start flp: %v", err)
	}
	servedOn(t, h, "flp", nodes[1], failoverTimeout)
	h.Start(nodes[0])
	agree(t, h, nodes, formTimeout)
	noDoubleOwners(t, h)
}

// confirmFailover: with confirm_failover, the owner's death takes the
// service out and nothing more until an operator confirms; with
// confirm_default block and a short confirm_timeout, nobody deciding
// leaves it stopped, and `lifeboat start` brings it back.
func confirmFailover(t testing.TB, h Harness) {
	nodes := h.Nodes()
	agree(t, h, nodes, formTimeout)
	svc := h.Service("cnf", nodes)
	svc.ConfirmFailover = true
	svc.ConfirmTimeout = spec.Duration(time.Hour)
	if err := h.Apply(svc); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "cnf", nodes[0], formTimeout)
	if err := h.DecideFailover("cnf", "confirm"); err == nil || !strings.Contains(err.Error(), "no failover is waiting") {
		t.Errorf("confirm with nothing waiting: %v, want a refusal", err)
	}
	h.Kill(nodes[0])
	awaiting := func(node string) {
		t.Helper()
		h.Eventually(failoverTimeout, "cnf awaiting confirmation", func() (bool, string) {
			st, err := h.Status(node)
			if err != nil {
				return false, err.Error()
			}
			hs, _ := hierarchyOf(st, "cnf")
			return hs.State == "awaiting-confirmation" && strings.Contains(hs.Reason, "lifeboat failover confirm cnf"), fmt.Sprintf("state %s, reason %q", hs.State, hs.Reason)
		})
	}
	awaiting(nodes[1])
	// Nothing happens without a decision.
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if run := h.Running("cnf"); len(run) != 0 {
			t.Fatalf("cnf runs on %v without a confirmation", run)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := h.DecideFailover("cnf", "confirm"); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	servedOn(t, h, "cnf", nodes[1], failoverTimeout)
	h.Start(nodes[0])
	agree(t, h, nodes, formTimeout)

	// Nobody decides, and the default is block.
	svc.ConfirmTimeout = spec.Duration(3 * time.Second)
	svc.ConfirmDefault = spec.ConfirmBlock
	if err := h.Apply(svc); err != nil {
		t.Fatalf("apply: %v", err)
	}
	h.Kill(nodes[1])
	awaiting(nodes[2])
	h.Eventually(failoverTimeout, "cnf blocked at confirm_timeout", func() (bool, string) {
		st, err := h.Status(nodes[2])
		if err != nil {
			return false, err.Error()
		}
		hs, _ := hierarchyOf(st, "cnf")
		return hs.State == "stopped" && strings.Contains(hs.Reason, "confirm_default block"), fmt.Sprintf("state %s, reason %q", hs.State, hs.Reason)
	})
	if run := h.Running("cnf"); len(run) != 0 {
		t.Fatalf("cnf runs on %v after the failover was blocked", run)
	}
	if err := h.StartHierarchy("cnf"); err != nil {
		t.Fatalf("start cnf: %v", err)
	}
	servedOn(t, h, "cnf", nodes[0], failoverTimeout)
	h.Start(nodes[1])
	agree(t, h, nodes, formTimeout)
	noDoubleOwners(t, h)
}

// hierarchyIs waits until node's status shows hierarchy name in state
// st (and, when owner is set, owned by owner).
func hierarchyIs(t testing.TB, h Harness, node, name, st, owner string, timeout time.Duration) api.HierarchyStatus {
	t.Helper()
	var out api.HierarchyStatus
	h.Eventually(timeout, fmt.Sprintf("%s %s on %s", name, st, owner), func() (bool, string) {
		s, err := h.Status(node)
		if err != nil {
			return false, err.Error()
		}
		out, _ = hierarchyOf(s, name)
		return out.State == st && (owner == "" || out.Owner == owner), fmt.Sprintf("state %s on %q, reason %q, resources %v", out.State, out.Owner, out.Reason, out.Resources)
	})
	return out
}

// resIs reports whether every resource of a node's report is in st.
func resIs(res map[string]string, st string) bool {
	for _, v := range res {
		if v != st {
			return false
		}
	}
	return len(res) > 0
}

// maintenanceRestart: under cluster maintenance the owner's agent is
// stopped and started again (an upgrade would be the same) and its
// service runs on untouched; a failing service is reported, not
// recovered or failed over; operator actions are refused; maintenance
// off adopts the running service where it runs, without a restart.
func maintenanceRestart(t testing.TB, h Harness) {
	nodes := h.Nodes()
	agree(t, h, nodes, formTimeout)
	if err := h.Apply(h.Service("mnt", nodes)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "mnt", nodes[0], formTimeout)
	restores := h.Restores("mnt")[nodes[0]]
	if err := h.Post("/v1/maintenance", api.MaintenanceRequest{Scope: "cluster", On: true, Reason: "patching"}); err != nil {
		t.Fatalf("maintenance on: %v", err)
	}
	hierarchyIs(t, h, nodes[1], "mnt", "unmanaged", nodes[0], failoverTimeout)
	if err := h.StartHierarchy("mnt"); err == nil || !strings.Contains(err.Error(), "maintenance") {
		t.Errorf("start under maintenance: %v, want a refusal naming the maintenance", err)
	}
	if err := h.Switchover("mnt", nodes[1]); err == nil || !strings.Contains(err.Error(), "maintenance") {
		t.Errorf("switchover under maintenance: %v, want a refusal naming the maintenance", err)
	}
	// The agent restarts; the service does not.
	h.Stop(nodes[0])
	if run := h.Running("mnt"); !slices.Equal(run, []string{nodes[0]}) {
		t.Fatalf("after the owner's agent stopped under maintenance, mnt runs on %v, want %s untouched", run, nodes[0])
	}
	h.Start(nodes[0])
	agree(t, h, nodes, formTimeout)
	hs := hierarchyIs(t, h, nodes[0], "mnt", "unmanaged", nodes[0], failoverTimeout)
	h.Eventually(failoverTimeout, "the restarted agent's checks find mnt running", func() (bool, string) {
		st, err := h.Status(nodes[1])
		if err != nil {
			return false, err.Error()
		}
		hs, _ = hierarchyOf(st, "mnt")
		return resIs(hs.Resources[nodes[0]], "online"), fmt.Sprintf("resources %v", hs.Resources)
	})
	// A failure under maintenance is seen and left alone.
	if err := h.Break(nodes[0], true); err != nil {
		t.Fatal(err)
	}
	h.Eventually(failoverTimeout, "the failing check reported", func() (bool, string) {
		st, err := h.Status(nodes[1])
		if err != nil {
			return false, err.Error()
		}
		hs, _ = hierarchyOf(st, "mnt")
		return resIs(hs.Resources[nodes[0]], "offline"), fmt.Sprintf("resources %v", hs.Resources)
	})
	if run := h.Running("mnt"); !slices.Equal(run, []string{nodes[0]}) {
		t.Fatalf("a failing check under maintenance moved or stopped mnt: it runs on %v", run)
	}
	if err := h.Break(nodes[0], false); err != nil {
		t.Fatal(err)
	}
	h.Eventually(failoverTimeout, "the check passes again", func() (bool, string) {
		st, err := h.Status(nodes[1])
		if err != nil {
			return false, err.Error()
		}
		hs, _ = hierarchyOf(st, "mnt")
		return resIs(hs.Resources[nodes[0]], "online"), fmt.Sprintf("resources %v", hs.Resources)
	})
	if err := h.Post("/v1/maintenance", api.MaintenanceRequest{Scope: "cluster", On: false}); err != nil {
		t.Fatalf("maintenance off: %v", err)
	}
	servedOn(t, h, "mnt", nodes[0], failoverTimeout)
	if got := h.Restores("mnt")[nodes[0]]; got != restores {
		t.Errorf("mnt restored %d more times on %s: maintenance off must adopt the running service, not restart it", got-restores, nodes[0])
	}
	agree(t, h, nodes, formTimeout)
	noDoubleOwners(t, h)
}

// standbyDrains: standby moves what a node runs to the next node and the
// drained node takes nothing, not even when the new owner dies; it is
// refused for a service with nowhere else to go and for an unknown node;
// unstandby makes it a candidate again.
func standbyDrains(t testing.TB, h Harness) {
	nodes := h.Nodes()
	agree(t, h, nodes, formTimeout)
	if err := h.Apply(h.Service("drn", nodes), h.Service("solo", nodes[:1])); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "drn", nodes[0], formTimeout)
	servedOn(t, h, "solo", nodes[0], formTimeout)
	err := h.Post("/v1/nodes/"+nodes[0]+"/standby", api.StandbyRequest{})
	if err == nil || !strings.Contains(err.Error(), "solo") {
		t.Fatalf("standby of %s with solo nowhere else to go: %v, want a refusal naming solo", nodes[0], err)
	}
	if err := h.Post("/v1/nodes/nosuchnode/unstandby", api.StandbyRequest{}); err == nil || !strings.Contains(err.Error(), "no node") {
		t.Errorf("unstandby of an unknown node: %v, want a refusal", err)
	}
	if err := h.Post("/v1/nodes/"+nodes[0]+"/standby", api.StandbyRequest{Force: true, Reason: "patching"}); err != nil {
		t.Fatalf("standby --force: %v", err)
	}
	servedOn(t, h, "drn", nodes[1], failoverTimeout)
	servedOn(t, h, "solo", nodes[0], failoverTimeout) // forced: it stays
	// The new owner dies: the drained node does not take it.
	h.Kill(nodes[1])
	servedOn(t, h, "drn", nodes[2], failoverTimeout)
	h.Start(nodes[1])
	agree(t, h, nodes, formTimeout)
	if err := h.Post("/v1/nodes/"+nodes[0]+"/unstandby", api.StandbyRequest{}); err != nil {
		t.Fatalf("unstandby: %v", err)
	}
	h.Eventually(failoverTimeout, nodes[0]+" out of standby on every node", func() (bool, string) {
		for _, node := range nodes {
			st, err := h.Status(node)
			if err != nil {
				return false, err.Error()
			}
			for _, n := range st.Nodes {
				if n.Standby != nil {
					return false, fmt.Sprintf("%s sees %s in standby", node, n.Name)
				}
			}
		}
		return true, ""
	})
	// A candidate again: the service goes back to it when asked.
	if err := h.Switchover("drn", nodes[0]); err != nil {
		t.Fatalf("switchover back to %s: %v", nodes[0], err)
	}
	servedOn(t, h, "drn", nodes[0], failoverTimeout)
	noDoubleOwners(t, h)
}

// rollingUpgrade: every node starts on the previous version; one at a
// time, each is stopped (its hierarchies switch over) and started on the
// version under test. After every step all nodes agree; the feature
// level stays 1 until the last voter is upgraded, then rises; the
// service is never on two nodes and back on one within a switchover.
func rollingUpgrade(t testing.TB, h Harness) {
	nodes := h.Nodes()
	agree(t, h, nodes, formTimeout)
	if err := h.Apply(h.Service("svc", nodes)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	servedOn(t, h, "svc", nodes[0], formTimeout)
	for i, n := range nodes {
		h.Stop(n)
		h.Eventually(failoverTimeout, "svc in service on one node while "+n+" is down", func() (bool, string) {
			run := h.Running("svc")
			return len(run) == 1 && run[0] != n, fmt.Sprintf("running on %v", run)
		})
		h.Upgrade(n)
		st := agree(t, h, nodes, formTimeout)
		last := i == len(nodes)-1
		if !last && max(st.FeatureLevel, 1) != 1 {
			t.Fatalf("after upgrading %d of %d nodes the feature level is %d, want 1 until the last voter runs the new version", i+1, len(nodes), st.FeatureLevel)
		}
	}
	h.Eventually(formTimeout, "feature level 2 once every voter is upgraded", func() (bool, string) {
		st, err := h.Status(nodes[0])
		if err != nil {
			return false, err.Error()
		}
		return st.FeatureLevel >= 2, fmt.Sprintf("feature level %d", st.FeatureLevel)
	})
	agree(t, h, nodes, formTimeout)
	h.Eventually(failoverTimeout, "svc in service on one node", func() (bool, string) {
		run := h.Running("svc")
		return len(run) == 1, fmt.Sprintf("running on %v", run)
	})
	noDoubleOwners(t, h)
}
