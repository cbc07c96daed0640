package clustertest_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/cluster/clustertest"
)

// voterSet is raft's voter set as node knows it.
func voterSet(cl *cluster.Cluster) []string {
	var out []string
	for n, s := range cl.Suffrage() {
		if s == "voter" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// TestInmemMembershipChanges grows a three-node cluster to five and
// shrinks it back to three with AddMember and RemoveMember, one node at a
// time, while every node renews its lease: no node that held a lease
// loses it on the way, the new nodes get theirs once voters, and the
// lease safety invariant holds throughout (the harness's monitor). It
// also checks the refusals: an unknown node, a removal that would leave
// too few voters alive, the leader asked to remove itself (it hands over).
func TestInmemMembershipChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := clustertest.MakeCluster(t, 3, clustertest.Options{})
		leader := c.MustWaitLeader(2 * time.Second)
		if _, _, err := c.Apply(cluster.SetLevel{Level: cluster.LevelTyped}, time.Second); err != nil {
			t.Fatal(err)
		}
		holdAll(t, c, rejoinBound, "node1", "node2", "node3")
		start := time.Now()
		ctx := context.Background()

		for _, name := range []string{"node4", "node5"} {
			m := c.StartJoiner(name)
			// Not a voter, it holds no lease and forms no cluster.
			time.Sleep(time.Second)
			if c.HoldsLease(name) || c.Node(name).Leader() != "" {
				t.Fatalf("%s before AddMember: lease %v, leader %q", name, c.HoldsLease(name), c.Node(name).Leader())
			}
			leader = c.MustWaitLeader(2 * time.Second)
			var steps []string
			if err := c.Node(leader).AddMember(ctx, m, "test", "grow", c.Applied, func(s string) { steps = append(steps, s) }); err != nil {
				t.Fatalf("add %s: %v (steps %v)", name, err, steps)
			}
			holdAll(t, c, rejoinBound, name)
		}
		want := []string{"node1", "node2", "node3", "node4", "node5"}
		// Every node learns the new configuration and membership with
		// the next entries the leader sends it.
		if err := c.Eventually(time.Second, func() bool {
			for _, n := range want {
				if !slices.Equal(voterSet(c.Node(n)), want) || len(c.Node(n).MemberList()) != 5 {
					return false
				}
			}
			return true
		}); err != nil {
			for _, n := range want {
				t.Logf("%s: voters %v, %d members", n, voterSet(c.Node(n)), len(c.Node(n).MemberList()))
			}
			t.Fatal("the nodes do not all see five voters")
		}
		// Adding it again changes nothing.
		m4, _ := c.Node(leader).Member("node4")
		if err := c.Node(leader).AddMember(ctx, m4, "test", "", c.Applied, nil); !errors.Is(err, cluster.ErrNoChange) {
			t.Fatalf("add node4 again: %v", err)
		}

		// Refusals.
		var unknown cluster.UnknownMemberError
		if err := c.Node(leader).RemoveMember(ctx, "nosuch", "test", ""); !errors.As(err, &unknown) {
			t.Fatalf("remove nosuch: %v", err)
		}
		// Two of five down: removing a third would leave four voters
		// with two alive.
		var down []string
		for _, n := range want {
			if n != leader && len(down) < 2 {
				down = append(down, n)
			}
		}
		for _, n := range down {
			c.Kill(n)
		}
		if err := c.Eventually(detectBound, func() bool {
			ms := c.Node(leader).Members()
			return ms[down[0]].State == "failed" && ms[down[1]].State == "failed"
		}); err != nil {
			t.Fatal(err)
		}
		var other string
		for _, n := range want {
			if n != leader && !slices.Contains(down, n) {
				other = n
				break
			}
		}
		if err := c.Node(leader).RemoveMember(ctx, other, "test", ""); err == nil || !strings.Contains(err.Error(), "quorum") {
			t.Fatalf("remove %s with %v down: %v", other, down, err)
		}
		for _, n := range down {
			c.Restart(n)
		}
		holdAll(t, c, rejoinBound, want...)
		if err := c.Eventually(detectBound, func() bool {
			ms := c.Node(leader).Members()
			return ms[down[0]].State == "alive" && ms[down[1]].State == "alive"
		}); err != nil {
			t.Fatal(err)
		}
		lapseFrom := time.Now()

		// Shrink back, the leader last if it is one of the new nodes: it
		// hands leadership over and is removed by the next leader.
		for _, name := range []string{"node5", "node4"} {
			for {
				leader = c.MustWaitLeader(2 * time.Second)
				err := c.Node(leader).RemoveMember(ctx, name, "test", "shrink")
				if errors.Is(err, cluster.ErrHandedOver) {
					if leader != name {
						t.Fatalf("%s handed over when asked to remove %s", leader, name)
					}
					continue
				}
				if err != nil {
					t.Fatalf("remove %s (leader %s): %v", name, leader, err)
				}
				break
			}
			if err := c.Eventually(2*time.Second, func() bool { return c.Node(name).Removed() }); err != nil {
				t.Fatalf("%s does not know it was removed", name)
			}
		}
		three := []string{"node1", "node2", "node3"}
		if err := c.Eventually(2*time.Second, func() bool {
			for _, n := range three {
				if !slices.Equal(voterSet(c.Node(n)), three) {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatalf("voters after shrinking: %v", voterSet(c.Node("node1")))
		}
		// The removed nodes' leases run out; the others' never lapsed.
		if err := c.Eventually(time.Second, func() bool { return !c.HoldsLease("node4") && !c.HoldsLease("node5") }); err != nil {
			t.Fatal("a removed node keeps its lease")
		}
		if l := c.Lapses(start, "node1", "node2", "node3"); len(slices.DeleteFunc(l, func(e clustertest.LeaseEvent) bool {
			return e.At.Before(lapseFrom) && slices.Contains(down, e.Node)
		})) > 0 {
			t.Fatalf("leases lapsed during membership changes: %+v", l)
		}
		// The cluster of three elects a new leader after its leader dies:
		// two of three are a majority (the harness's Leader counts every
		// node it started, so it is asked here directly).
		leader = c.MustWaitLeader(2 * time.Second)
		c.Kill(leader)
		var left []string
		for _, n := range three {
			if n != leader {
				left = append(left, n)
			}
		}
		if err := c.Eventually(electionBound+time.Second, func() bool {
			a, b := c.Node(left[0]), c.Node(left[1])
			return a.Leader() != "" && a.Leader() != leader && a.Leader() == b.Leader()
		}); err != nil {
			t.Fatalf("no new leader of %v: %v", left, err)
		}
	})
}
