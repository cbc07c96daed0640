package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/cluster/clustertest"
)

// Bounds, in fake time, with clustertest.FastTiming (lease 300 ms, renew
// 60 ms, raft heartbeat 100 ms and election 200 ms, probes 100/50 ms).
const (
	// electionBound: a new raft leader after the old one died.
	electionBound = time.Second
	// detectBound: memberlist reports a dead node failed.
	detectBound = 2 * time.Second
	// rejoinBound: a (re)started or fenced node holds a lease of a new
	// generation once it reaches a majority and a leader.
	rejoinBound = 2 * time.Second
	// fenceSlack: what fencing may cost beyond the lease threshold after
	// the last grant (three raft commits and the attestation rounds).
	fenceSlack = 300 * time.Millisecond
)

// holdAll waits until every named node holds its lease.
func holdAll(t *testing.T, c *clustertest.Cluster, timeout time.Duration, names ...string) {
	t.Helper()
	if err := c.Eventually(timeout, func() bool {
		for _, n := range names {
			if !c.HoldsLease(n) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("not every one of %v holds its lease within %v", names, timeout)
	}
}

func others(c *clustertest.Cluster, not ...string) []string {
	var out []string
	for _, n := range c.Names() {
		if !slices.Contains(not, n) {
			out = append(out, n)
		}
	}
	return out
}

// noViolations makes the monitor check the lease safety invariant now
// (it fails the test itself on a breach, and checks again at Close).
func noViolations(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	if v := c.Violations(); len(v) > 0 {
		t.Logf("%d lease safety violations", len(v))
	}
}

// (a) The leader dies: a new one is elected within electionBound, the
// others keep their leases all along (renewals do not go through the
// leader), and memberlist reports the dead node failed.
func TestInmemLeaderLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := clustertest.MakeCluster(t, 3, clustertest.Options{})
		leader := c.MustWaitLeader(electionBound)
		holdAll(t, c, rejoinBound, c.Names()...)
		rest := others(c, leader)

		killed := time.Now()
		c.Kill(leader)
		next, err := c.WaitLeader(electionBound)
		if err != nil {
			t.Fatalf("no new leader within %v of killing %s", electionBound, leader)
		}
		t.Logf("killed leader %s; %s leads after %v", leader, next, time.Since(killed))
		if err := c.Eventually(detectBound, func() bool {
			for _, n := range rest {
				if c.Node(n).Members()[leader].State != "failed" {
					return false
				}
			}
			return true
		}); err != nil {
			t.Errorf("the survivors do not report %s failed within %v", leader, detectBound)
		}
		t.Logf("%s reported failed after %v", leader, time.Since(killed))
		// The new leader commits.
		if _, _, err := c.Apply(cluster.Leaving{Node: rest[0], Leaving: false}, time.Second); err != nil {
			t.Errorf("commit through the new leader: %v", err)
		}
		time.Sleep(3 * c.Timing().Lease)
		for _, e := range c.Lapses(killed, rest...) {
			t.Errorf("a survivor's lease lapsed after the leader died: %v", e)
		}
		for _, n := range rest {
			if !c.HoldsLease(n) {
				t.Errorf("%s does not hold its lease", n)
			}
		}
	})
}

// (b) A node cut off from the majority loses its lease no later than the
// lease after its last majority grant; the majority fences it only after
// that, and the monitor checks all along that the node never holds the
// generation past the majority's attestation. Once healed, the node does
// not get the fenced generation back: it joins with a new one.
func TestInmemPartitionFences(t *testing.T) {
	for _, which := range []string{"follower", "leader"} {
		t.Run(which, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testPartitionFences(t, which) })
		})
	}
}

func testPartitionFences(t *testing.T, which string) {
	c := clustertest.MakeCluster(t, 3, clustertest.Options{})
	tm := c.Timing()
	leader := c.MustWaitLeader(electionBound)
	holdAll(t, c, rejoinBound, c.Names()...)
	victim := leader
	if which == "follower" {
		victim = others(c, leader)[0]
	}
	rest := others(c, victim)
	gen, valid := c.Lease(victim)
	if !valid {
		t.Fatalf("%s holds no lease", victim)
	}
	// Let a few rounds go by so that the cut falls between rounds.
	time.Sleep(tm.Renew*3 + tm.Renew/3)

	cutAt := time.Now()
	c.Partition([]string{victim}, rest)
	newLeader := c.MustWaitLeader(electionBound)
	if newLeader == victim {
		t.Fatalf("the isolated %s is still recognized as leader", victim)
	}
	threshold := c.Node(newLeader).Leases.Threshold()
	var lastGrant time.Time
	for _, v := range rest {
		if ago, ok := c.Node(v).Leases.LastGrant(victim, gen); ok {
			if at := time.Now().Add(-ago); at.After(lastGrant) {
				lastGrant = at
			}
		}
	}

	// Right after the cut the majority refuses to attest (no waiting).
	lc := c.Node(newLeader)
	if ok, _ := lc.Leases.Attest(context.Background(), cluster.AttestRequest{Node: victim, Gen: gen}); ok {
		t.Errorf("a majority attested %s's lease expired %v after the cut", victim, time.Since(cutAt))
	}

	// The isolated node's lease ends within a lease of its last round.
	time.Sleep(time.Until(cutAt.Add(tm.Lease)))
	if c.Node(victim).Leases.Valid(gen) {
		t.Errorf("%s still holds generation %d a lease (%v) after the cut", victim, gen, tm.Lease)
	}
	end := c.LeaseEnd(victim, gen)
	if end.After(cutAt.Add(tm.Lease)) || end.After(lastGrant.Add(tm.Lease)) {
		t.Errorf("%s's lease ran to %v: after the cut (%v) or its last majority grant (%v) plus the lease",
			victim, end.Format("15:04:05.000"), cutAt.Format("15:04:05.000"), lastGrant.Format("15:04:05.000"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := c.Fence(ctx, victim)
	if err != nil {
		t.Fatalf("the majority could not fence %s: %v", victim, err)
	}
	t.Logf("%s cut off at %s, its lease ended %v later, fenced by %s %v after the cut (threshold %v)",
		victim, cutAt.Format("15:04:05.000"), end.Sub(cutAt), a.By, a.At.Sub(cutAt), threshold)
	if !a.At.After(end) {
		t.Errorf("attested at %v, not after the lease's end %v", a.At, end)
	}
	if a.At.Before(lastGrant.Add(threshold)) {
		t.Errorf("attested %v after the last grant, before the threshold %v", a.At.Sub(lastGrant), threshold)
	}
	if a.At.After(lastGrant.Add(threshold + fenceSlack)) {
		t.Errorf("fencing took %v after the last grant: more than the threshold %v plus %v", a.At.Sub(lastGrant), threshold, fenceSlack)
	}
	for _, e := range c.Lapses(cutAt, rest...) {
		t.Errorf("a majority node's lease lapsed: %v", e)
	}
	// The failure detector on the majority side sees the node failed.
	if err := c.Eventually(detectBound, func() bool {
		for _, n := range rest {
			if c.Node(n).Members()[victim].State != "failed" {
				return false
			}
		}
		return true
	}); err != nil {
		t.Errorf("the majority does not report %s failed within %v of the cut", victim, detectBound)
	}

	// Healed, the node gets no lease of the fenced generation back and
	// joins with a new one.
	time.Sleep(tm.Lease)
	c.Heal()
	holdAll(t, c, rejoinBound, victim)
	if g, _ := c.Lease(victim); g <= gen {
		t.Errorf("%s holds generation %d after being fenced at %d", victim, g, gen)
	}
	if c.Node(victim).Leases.Valid(gen) {
		t.Errorf("%s holds the fenced generation %d again", victim, gen)
	}
	time.Sleep(2 * tm.Lease)
	noViolations(t, c)
}

// (c) One lost link in a three-node cluster: each end still has a
// majority of grants (itself and the third node), so nobody's lease
// lapses, memberlist's indirect probes keep both ends alive, and the
// leader cannot fence the node it no longer hears from.
func TestInmemOneLostLink(t *testing.T) {
	for _, which := range []string{"leader-follower", "follower-follower"} {
		t.Run(which, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testOneLostLink(t, which) })
		})
	}
}

func testOneLostLink(t *testing.T, which string) {
	c := clustertest.MakeCluster(t, 3, clustertest.Options{})
	tm := c.Timing()
	leader := c.MustWaitLeader(electionBound)
	holdAll(t, c, rejoinBound, c.Names()...)
	fs := others(c, leader)
	a, b := leader, fs[0]
	if which == "follower-follower" {
		a, b = fs[0], fs[1]
	}
	cutAt := time.Now()
	c.Cut(a, b)

	leaders := map[string]bool{}
	failed := map[string]bool{}
	fenceDone := make(chan error, 1)
	go func() {
		// Try to fence b the moment its lease would have run out as a's
		// voter sees it: a leader that does not hear from b must not be
		// able to take its lease away.
		time.Sleep(c.Node(a).Leases.Threshold())
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if c.Leader() == a {
			_, err := c.Fence(ctx, b)
			fenceDone <- err
			return
		}
		fenceDone <- errors.New("skipped")
	}()
	for time.Since(cutAt) < 5*time.Second {
		if l := c.Leader(); l != "" {
			leaders[l] = true
		}
		for _, n := range c.Names() {
			for p, m := range c.Node(n).Members() {
				if m.State == "failed" || m.State == "left" {
					failed[n+" sees "+p+" "+m.State] = true
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-fenceDone; err == nil {
		t.Errorf("%s fenced %s across one lost link", a, b)
	} else if !errors.Is(err, clustertest.ErrNotExpired) && err.Error() != "skipped" {
		t.Errorf("fence %s: %v", b, err)
	} else {
		t.Logf("fence %s from %s: %v", b, a, err)
	}
	for e := range failed {
		t.Errorf("memberlist: %s across one lost link", e)
	}
	for _, e := range c.Lapses(cutAt) {
		t.Errorf("lease lapse across one lost link %s-%s: %v", a, b, e)
	}
	for _, n := range c.Names() {
		if !c.HoldsLease(n) {
			t.Errorf("%s does not hold its lease", n)
		}
	}
	t.Logf("cut %s-%s for 5s: leaders seen %v", a, b, keys(leaders))
	_ = tm
	noViolations(t, c)
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// (d) A killed node's raft data survives; restarted, it rejoins with a
// new generation and holds its lease again. The whole cluster killed and
// restarted (after the feature level rose and every node took a
// snapshot) comes back with its state.
func TestInmemKillRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := clustertest.MakeCluster(t, 3, clustertest.Options{})
		tm := c.Timing()
		leader := c.MustWaitLeader(electionBound)
		holdAll(t, c, rejoinBound, c.Names()...)
		victim := others(c, leader)[1]
		gen, _ := c.Lease(victim)
		last := c.Node(victim).Raft.LastIndex()

		c.Kill(victim)
		if c.Node(victim) != nil {
			t.Fatal("killed node still listed as running")
		}
		// The majority fences the dead node once its lease has run out.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.Fence(ctx, victim); err != nil {
			t.Fatalf("fence the killed %s: %v", victim, err)
		}
		time.Sleep(tm.Lease)

		restarted := time.Now()
		c.Restart(victim)
		if got := c.Node(victim).Raft.LastIndex(); got < last {
			t.Fatalf("restarted %s has raft log up to %d, had %d: its store did not survive", victim, got, last)
		}
		holdAll(t, c, rejoinBound, victim)
		g, _ := c.Lease(victim)
		t.Logf("%s restarted: generation %d -> %d, lease after %v", victim, gen, g, time.Since(restarted))
		if g <= gen {
			t.Errorf("restarted %s holds generation %d, not newer than %d", victim, g, gen)
		}

		// Feature level: every voter gossips level 2, so it may rise; then
		// each node seals its snapshots in the new form.
		lc := c.Node(c.MustWaitLeader(electionBound))
		level, why := lc.NextLevel()
		if level != cluster.LevelTyped {
			t.Fatalf("next level %d (%s), want %d", level, why, cluster.LevelTyped)
		}
		if _, _, err := c.Apply(cluster.SetLevel{Level: level}, time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.Eventually(2*time.Second, func() bool {
			for _, n := range c.Names() {
				if c.Node(n).Raft.Stats()["last_snapshot_index"] == "0" {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatal("not every node took a snapshot after the level rose")
		}

		gens := map[string]uint64{}
		for _, n := range c.Names() {
			gens[n], _ = c.Lease(n)
			c.Kill(n)
		}
		for _, n := range c.Names() {
			c.Restart(n)
		}
		c.MustWaitLeader(2 * electionBound)
		holdAll(t, c, rejoinBound, c.Names()...)
		for _, n := range c.Names() {
			g, _ := c.Lease(n)
			var level int
			c.Node(n).FSM.View(func(s *cluster.State) { level = s.Level })
			if g != gens[n]+1 || level != cluster.LevelTyped {
				t.Errorf("%s after a whole-cluster restart: generation %d (was %d), level %d", n, g, gens[n], level)
			}
		}
		noViolations(t, c)
	})
}

// (e) A seeded random schedule of kills, restarts, partitions, cuts,
// pauses and heals, with a fencer doing what the agent's leader does
// (fence a node its voter has not granted for a threshold). All along,
// the monitor checks the safety invariant; after every step that leaves a
// majority of nodes alive and connected to one another, a leader must
// exist and each node of such a majority that includes the leader must
// hold a lease within livenessBound.
func TestInmemRandomFaults(t *testing.T) {
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { randomFaults(t, seed, 200) })
		})
	}
}

// A frozen node (Pause) that stays frozen past the lease threshold is
// fenced; when it resumes, its lease has run out by its own clock, every
// action is refused (Leases.Bound), and it joins with a new generation.
func TestInmemPauseResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := clustertest.MakeCluster(t, 3, clustertest.Options{})
		tm := c.Timing()
		leader := c.MustWaitLeader(electionBound)
		holdAll(t, c, rejoinBound, c.Names()...)
		victim := others(c, leader)[0]
		gen, _ := c.Lease(victim)
		vc := c.Node(victim)

		pausedAt := time.Now()
		c.Pause(victim)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, err := c.Fence(ctx, victim)
		if err != nil {
			t.Fatalf("fence the paused %s: %v", victim, err)
		}
		if end := c.LeaseEnd(victim, gen); end.After(pausedAt.Add(tm.Lease)) {
			t.Errorf("paused %s's lease ran to %v after the pause", victim, end.Sub(pausedAt))
		}
		time.Sleep(tm.Lease)

		c.Resume(victim)
		if vc.Leases.Valid(gen) {
			t.Errorf("%s resumed believing it holds generation %d (fenced %v ago)", victim, gen, time.Since(a.At))
		}
		if _, _, err := vc.Leases.Bound(context.Background(), gen, vc.Leases.ActMargin()); !errors.Is(err, cluster.ErrLeaseExpired) {
			t.Errorf("an action under the fenced generation after resuming: %v, want %v", err, cluster.ErrLeaseExpired)
		}
		holdAll(t, c, rejoinBound, victim)
		if g, _ := c.Lease(victim); g <= gen {
			t.Errorf("resumed %s holds generation %d, fenced %d", victim, g, gen)
		}
		for _, e := range c.Lapses(pausedAt, others(c, victim)...) {
			t.Errorf("lease lapse on the majority: %v", e)
		}
		noViolations(t, c)
	})
}

// Slow answers on the way back to one node (a congested path), while the
// leader hears the voters at once: the node keeps its lease. Then what it
// sends is lost (one way), while the answers to its last round are still
// on their way: it is fenced only after its lease ran out, which holds
// only if it measures its lease from when it asked, not from when the
// answers came.
func TestInmemSlowAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := clustertest.MakeCluster(t, 3, clustertest.Options{})
		leader := c.MustWaitLeader(electionBound)
		holdAll(t, c, rejoinBound, c.Names()...)
		victim := others(c, leader)[0]
		for _, v := range others(c, victim) {
			// within the round's timeout (half a lease)
			c.SetDelay(v, victim, 140*time.Millisecond)
		}
		held := time.Now()
		time.Sleep(2 * time.Second)
		for _, e := range c.Lapses(held) {
			t.Errorf("lease lapse with slow answers: %v", e)
		}
		for _, v := range others(c, victim) {
			c.CutDirected(victim, v)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.Fence(ctx, victim); err != nil {
			t.Fatalf("fence %s: %v", victim, err)
		}
		time.Sleep(c.Timing().Lease)
		noViolations(t, c)
	})
}

// A voter that appended the revoke but has not applied it (it has not
// heard that it committed) may still grant the fenced generation: its
// attestation must not count. Here raft's messages from the leader to
// that voter are lost right after the revoke commits (lease calls still
// flow): the majority cannot attest; and once the node reaches that
// voter, it indeed gets a lease of the revoked generation again.
func TestInmemAttestNeedsRevokeApplied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := clustertest.MakeCluster(t, 3, clustertest.Options{})
		leader := c.MustWaitLeader(electionBound)
		holdAll(t, c, rejoinBound, c.Names()...)
		fs := others(c, leader)
		victim, voter := fs[0], fs[1]
		gen, _ := c.Lease(victim)
		c.Partition([]string{victim})
		lc := c.Node(leader)
		time.Sleep(lc.Leases.Threshold() + c.Timing().Renew)

		// Nothing else commits meanwhile: the revoke is the next entry.
		// The voter appends it (it commits with it) but every message
		// that would tell it of the commit is lost (the leader pushes
		// commits at once), and then raft's link to it is cut.
		next := lc.Raft.LastIndex() + 1
		c.Net.LoseCommits(leader, voter, next)
		_, idx, err := lc.Apply(cluster.Revoke{Node: victim, Gen: gen, Reason: "test"}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if idx != next {
			t.Fatalf("revoke at index %d, want %d: scenario not set up", idx, next)
		}
		c.CutRaft(leader, voter)
		c.Net.LoseCommits(leader, voter, 0)
		if applied := c.Node(voter).FSM.Index(); applied >= idx {
			t.Fatalf("%s applied the revoke (index %d >= %d) before the cut: scenario not set up", voter, applied, idx)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := c.AttestExpired(ctx, leader, victim, gen, idx); !errors.Is(err, clustertest.ErrNotExpired) {
			t.Errorf("attestation while %s has not applied the revoke: %v, want %v", voter, err, clustertest.ErrNotExpired)
		}
		// Why: the victim reaches the voter (only, and not by raft, so
		// that the voter does not learn of the revoke from it either): it
		// renews the revoked generation with that voter's grant.
		c.CutRaft(victim, voter)
		c.Partition([]string{victim, voter}, []string{leader})
		if err := c.Eventually(time.Second, func() bool { return c.Node(victim).Leases.Valid(gen) }); err != nil {
			t.Errorf("%s did not renew generation %d through %s, which has not applied its revoke", victim, gen, voter)
		}
		c.Heal()
		time.Sleep(c.Timing().Lease)
		noViolations(t, c)
	})
}

// A node restarted while it cannot reach a leader keeps retrying one join
// at a time: when it reconnects it commits one new generation, not one per
// retry (each extra one would make the previous generation, and whatever
// was assigned at it, stale at once).
func TestInmemRejoinCommitsOneGeneration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := clustertest.MakeCluster(t, 3, clustertest.Options{})
		leader := c.MustWaitLeader(electionBound)
		holdAll(t, c, rejoinBound, c.Names()...)
		victim := others(c, leader)[1]
		gen, _ := c.Lease(victim)

		c.Kill(victim)
		rest := others(c, victim)
		c.Partition([]string{victim}, rest)
		c.Restart(victim)
		// Cut off for several join attempts (each waits up to 2 s).
		time.Sleep(5 * time.Second)
		c.Heal()
		holdAll(t, c, rejoinBound, victim)
		g, _ := c.Lease(victim)
		t.Logf("%s: generation %d before, %d after reconnecting", victim, gen, g)
		if g != gen+1 {
			t.Fatalf("%s committed %d generations on rejoining, want 1", victim, g-gen)
		}
	})
}
