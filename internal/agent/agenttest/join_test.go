package agenttest_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// TestLegacyJoinAfterLevelRise: a node of the new version forwards its
// join in the legacy form (the cluster was at level 1 when it encoded
// it), and the level rises to 2 before the leader applies it. The legacy
// form has no field for the node's level; the leader must judge the join
// by the level the node gossips, not refuse it as a 0.1 binary's.
func TestLegacyJoinAfterLevelRise(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := agenttest.MakeCluster(t, 3, agenttest.Setup{})
		var leader string
		c.Eventually(10*time.Second, "a leader at feature level 2", func() (bool, string) {
			st, err := c.Status("node1")
			if err != nil {
				return false, err.Error()
			}
			leader = st.Leader
			return leader != "" && st.FeatureLevel == cluster.LevelTyped, st.Leader
		})
		other := "node1"
		if leader == other {
			other = "node2"
		}
		body, err := cluster.EncodeWire(cluster.Join{Node: other, Version: agent.Version, Level: cluster.MaxLevel}, time.Now(), cluster.LevelLegacy)
		if err != nil {
			t.Fatal(err)
		}
		var ans struct {
			Gen   uint64 `json:"gen"`
			Error string `json:"error"`
		}
		if err := c.Internal(leader, "POST", "/v1/internal/apply", json.RawMessage(body), &ans); err != nil {
			t.Fatalf("forward the join: %v", err)
		}
		if ans.Error != "" || ans.Gen == 0 {
			t.Fatalf("the leader refused a legacy-form join of %s, whose binary supports level %d: gen %d, error %q", other, cluster.MaxLevel, ans.Gen, ans.Error)
		}
	})
}

// TestFailureTimeoutNeedsLevel2: while a voter may still run 0.1 (feature
// level 1), a spec that sets failure_timeout is refused with what to do,
// not sent to a leader that would refuse the field or followers that would
// drop it.
func TestFailureTimeoutNeedsLevel2(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := agenttest.MakeCluster(t, 3, agenttest.Setup{Old: true})
		c.Eventually(10*time.Second, "a leader", func() (bool, string) {
			st, err := c.Status("node1")
			return err == nil && st.Leader != "", fmt.Sprint(err)
		})
		h := c.Service("web", c.Nodes())
		h.FailureTimeout = spec.Duration(time.Minute)
		err := c.Apply(h)
		if err == nil || !strings.Contains(err.Error(), "failure_timeout, migration_threshold, max_failovers and failover_window need cluster feature level 2") {
			t.Fatalf("apply with failure_timeout at level 1: %v", err)
		}
		h.FailureTimeout = 0
		if err := c.Apply(h); err != nil {
			t.Fatalf("apply without failure_timeout at level 1: %v", err)
		}
	})
}
