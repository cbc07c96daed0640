package agenttest_test

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
)

// TestFailoverMetrics: a failover is counted by the leader that carried it
// out, with the node it left, the node it went to and why; every node
// exports, from the replicated state, where each hierarchy is in service,
// each node's readiness and the time of the last failover.
func TestFailoverMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := agenttest.MakeCluster(t, 3, agenttest.Setup{})
		var leader string
		c.Eventually(10*time.Second, "a leader with every lease fresh", func() (bool, string) {
			st, err := c.Status("node1")
			if err != nil {
				return false, err.Error()
			}
			for _, n := range st.Nodes {
				if !n.LeaseFresh {
					return false, n.Name + " has no fresh lease"
				}
			}
			leader = st.Leader
			return leader != "", "no leader"
		})
		// The service prefers a node that is not the leader, then the
		// other follower.
		var prio []string
		for _, n := range c.Nodes() {
			if n != leader {
				prio = append(prio, n)
			}
		}
		prio = append(prio, leader)
		if err := c.Apply(c.Service("web", prio)); err != nil {
			t.Fatal(err)
		}
		metric := func(node, line string) func() (bool, string) {
			return func() (bool, string) {
				m, err := c.Metrics(node)
				if err != nil {
					return false, err.Error()
				}
				return strings.Contains(m, line), grep(m, strings.SplitN(line, "{", 2)[0])
			}
		}
		c.Eventually(10*time.Second, "web in service on "+prio[0], metric(prio[1], fmt.Sprintf(`lifeboat_hierarchy_in_service{hierarchy="web",node=%q} 1`, prio[0])))
		c.Eventually(10*time.Second, prio[1]+" ready for web", metric(prio[0], fmt.Sprintf(`lifeboat_hierarchy_ready{hierarchy="web",node=%q} 1`, prio[1])))
		c.Kill(prio[0])
		c.Eventually(10*time.Second, "the failover counted on the leader", metric(leader,
			fmt.Sprintf(`lifeboat_failovers_total{from=%q,hierarchy="web",reason="owner-lost",to=%q} 1`, prio[0], prio[1])))
		c.Eventually(10*time.Second, "web in service on "+prio[1], metric(leader, fmt.Sprintf(`lifeboat_hierarchy_in_service{hierarchy="web",node=%q} 1`, prio[1])))
		m, err := c.Metrics(prio[1])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(m, `lifeboat_hierarchy_last_failover_timestamp_seconds{hierarchy="web"}`) {
			t.Errorf("no last-failover time on %s:\n%s", prio[1], grep(m, "lifeboat_hierarchy"))
		}
	})
}

// grep keeps the lines of text that contain s.
func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
