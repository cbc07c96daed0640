package agenttest_test

import (
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
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
