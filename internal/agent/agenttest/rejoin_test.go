package agenttest_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
)

// TestRejoinAfterLongPartition: a node cut off for up to two minutes is
// back (alive and leased in every view, its state caught up with the
// leader's, its own lease held) within a few seconds of the heal. Before
// members held failed were joined again every second, memberlist saw them
// again only when a push/pull happened to cross (15 s and more); raft's
// backoff for an unreachable follower (up to about 10 s) is the other
// bound. The figures are logged (fake time).
func TestRejoinAfterLongPartition(t *testing.T) {
	const bound = 12 * time.Second
	for _, d := range []time.Duration{10 * time.Second, 30 * time.Second, 120 * time.Second} {
		t.Run(d.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := agenttest.MakeCluster(t, 3, agenttest.Setup{})
				c.Eventually(10*time.Second, "form", func() (bool, string) {
					st, err := c.Status("node1")
					return err == nil && st.Leader != "", ""
				})
				st, _ := c.Status("node1")
				victim := "node1"
				if st.Leader == victim {
					victim = "node2"
				}
				if err := c.Isolate(victim); err != nil {
					t.Fatal(err)
				}
				time.Sleep(d)
				if err := c.Heal(); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				c.Eventually(bound, victim+" back after a partition of "+d.String(), func() (bool, string) {
					a, err := c.Status(victim)
					if err != nil {
						return false, err.Error()
					}
					if a.Leader == "" {
						return false, victim + " sees no leader"
					}
					l, err := c.Status(a.Leader)
					if err != nil {
						return false, err.Error()
					}
					for _, n := range l.Nodes {
						if n.State != "alive" || !n.LeaseFresh {
							return false, n.Name + " " + n.State
						}
					}
					return a.Index >= l.Index && a.Local.LeaseHeld, fmt.Sprintf("index %d/%d lease %v", a.Index, l.Index, a.Local.LeaseHeld)
				})
				t.Logf("partition %s: rejoined after %s", d, time.Since(start))
			})
		})
	}
}
