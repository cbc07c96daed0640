package clustertest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/cluster/clustertest"
)

// After a step that leaves a connected majority, in fake time:
//
// leaderBound: a leader (an election, or a stale leader stepping down).
//
// livenessBound: every node of that majority holds a lease. A fenced or
// restarted node renews only once its own replicated state shows its new
// generation, and the leader's raft replication to a follower it could
// not reach backs off exponentially up to 10.24 s (raft's failureWait
// 10 ms × 2^10); then the rejoin (tried every 5 renew intervals) and a
// renew round.
const (
	leaderBound   = 2 * time.Second
	livenessBound = 12 * time.Second
)

func randomFaults(t *testing.T, seed uint64, steps int) {
	if s := os.Getenv("LIFEBOAT_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LIFEBOAT_FAULT_SEED: %v", err)
		}
		seed = v
	}
	rng := rand.New(rand.NewPCG(seed, 0x6c696665626f6174))
	c := clustertest.MakeCluster(t, 3, clustertest.Options{})
	names := c.Names()
	c.MustWaitLeader(electionBound)
	holdAll(t, c, rejoinBound, names...)

	ctx, cancel := context.WithCancel(context.Background())
	fencerDone := make(chan struct{})
	go fencer(ctx, c, fencerDone)
	defer func() {
		cancel()
		<-fencerDone
	}()

	pick := func(cond func(string) bool) string {
		var ok []string
		for _, n := range names {
			if cond(n) {
				ok = append(ok, n)
			}
		}
		if len(ok) == 0 {
			return ""
		}
		return ok[rng.IntN(len(ok))]
	}
	running := func(n string) bool { return c.Node(n) != nil }
	healthy := 0
	var longest time.Duration
	for step := range steps {
		var what string
		switch r := rng.IntN(22); {
		case r < 2:
			if n := pick(running); n != "" {
				c.Kill(n)
				what = "kill " + n
			}
		case r < 6:
			if n := pick(func(n string) bool { return !running(n) }); n != "" {
				c.Restart(n)
				what = "restart " + n
			}
		case r < 8:
			p := slices.Clone(names)
			rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
			k := 1 + rng.IntN(len(p)-1)
			c.Partition(p[:k], p[k:])
			what = fmt.Sprintf("partition %v | %v", p[:k], p[k:])
		case r < 12:
			c.Heal()
			what = "heal"
		case r < 14:
			a := pick(func(string) bool { return true })
			b := pick(func(n string) bool { return n != a })
			if rng.IntN(3) == 0 {
				c.CutDirected(a, b)
				what = "cut one way " + a + "->" + b
			} else {
				c.Cut(a, b)
				what = "cut " + a + "-" + b
			}
		case r < 16:
			if n := pick(c.Alive); n != "" {
				c.Pause(n)
				what = "pause " + n
			}
		case r < 20:
			if n := pick(c.Paused); n != "" {
				c.Resume(n)
				what = "resume " + n
			}
		}
		if what == "" {
			what = "wait"
		}
		start := time.Now()
		if must := majorities(c); len(must) > 0 {
			healthy++
			if _, err := c.WaitLeader(leaderBound); err != nil {
				t.Errorf("step %d (%s): a majority %v is alive and connected, but no leader after %v: %s",
					step, what, must, leaderBound, state(c))
			}
			if err := c.Eventually(livenessBound, func() bool { return live(c) }); err != nil {
				t.Errorf("step %d (%s): a majority %v is alive and connected, but after %v: %s",
					step, what, must, livenessBound, state(c))
			}
			longest = max(longest, time.Since(start))
		}
		time.Sleep(time.Duration(rng.IntN(600)) * time.Millisecond)
		t.Logf("step %3d %-32s %s", step, what, state(c))
	}

	// Everything back: everyone leads a normal life again.
	c.Heal()
	for _, n := range names {
		if c.Paused(n) {
			c.Resume(n)
		}
		if !running(n) {
			c.Restart(n)
		}
	}
	if err := c.Eventually(livenessBound, func() bool { return live(c) }); err != nil {
		t.Errorf("after healing everything: %s", state(c))
	}
	holdAll(t, c, livenessBound, names...)
	t.Logf("seed %d: %d steps, %d with a connected majority (longest wait for liveness %v), %d fenced",
		seed, steps, healthy, longest, len(c.Attestations()))
	noViolations(t, c)
}

// fencer does what the agent's leader does for a node that owns
// hierarchies: fence it once the leader's own voter, having granted its
// current generation, has not granted it for a threshold.
func fencer(ctx context.Context, c *clustertest.Cluster, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.Timing().Renew):
		}
		leader := c.Leader()
		if leader == "" {
			continue
		}
		lc := c.Node(leader)
		if lc == nil {
			continue
		}
		for _, n := range c.Names() {
			var gen uint64
			lc.FSM.View(func(s *cluster.State) {
				if nd := s.Nodes[n]; nd != nil && !nd.Revoked {
					gen = nd.Gen
				}
			})
			if gen == 0 {
				continue
			}
			// A generation never granted here holds nothing yet (the
			// agent's placement assigns only to a node with a lease).
			if ago, ok := lc.Leases.LastGrant(n, gen); !ok || ago < lc.Leases.Threshold() {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, _ = c.Fence(fctx, n)
			cancel()
		}
	}
}

// majorities returns the sets of at least a majority of alive nodes that
// all reach one another.
func majorities(c *clustertest.Cluster) [][]string {
	names := c.Names()
	var out [][]string
	for mask := 1; mask < 1<<len(names); mask++ {
		var set []string
		for i, n := range names {
			if mask&(1<<i) != 0 {
				set = append(set, n)
			}
		}
		if len(set) < c.Majority() || !clique(c, set) {
			continue
		}
		out = append(out, set)
	}
	return out
}

func clique(c *clustertest.Cluster, set []string) bool {
	for _, a := range set {
		if !c.Alive(a) {
			return false
		}
		for _, b := range set {
			if a != b && !c.Linked(a, b) {
				return false
			}
		}
	}
	return true
}

// live: a leader exists, and every node of each connected majority that
// includes it holds its lease.
func live(c *clustertest.Cluster) bool {
	l := c.Leader()
	if l == "" {
		return false
	}
	for _, set := range majorities(c) {
		if !slices.Contains(set, l) {
			continue
		}
		for _, n := range set {
			if !c.HoldsLease(n) {
				return false
			}
		}
	}
	return true
}

// state describes the cluster for a log line.
func state(c *clustertest.Cluster) string {
	var b strings.Builder
	fmt.Fprintf(&b, "leader=%q", c.Leader())
	for _, n := range c.Names() {
		switch {
		case c.Node(n) == nil:
			fmt.Fprintf(&b, " %s:dead", n)
		case c.Paused(n):
			fmt.Fprintf(&b, " %s:paused", n)
		default:
			g, v := c.Lease(n)
			fmt.Fprintf(&b, " %s:g%d/%v", n, g, map[bool]string{true: "lease", false: "none"}[c.HoldsLease(n) && v])
		}
	}
	var cuts []string
	names := c.Names()
	for i, a := range names {
		for _, b := range names[i+1:] {
			switch ab, ba := c.IsCut(a, b), c.IsCut(b, a); {
			case ab && ba:
				cuts = append(cuts, a+"-"+b)
			case ab:
				cuts = append(cuts, a+"->"+b)
			case ba:
				cuts = append(cuts, b+"->"+a)
			}
		}
	}
	if len(cuts) > 0 {
		fmt.Fprintf(&b, " cut=%v", cuts)
	}
	return b.String()
}
