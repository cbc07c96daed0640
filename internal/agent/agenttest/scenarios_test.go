package agenttest_test

import (
	"testing"
	"testing/synctest"

	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
)

// TestScenariosInMemory runs every shared scenario on three in-memory
// agents, in fake time (test/e2e runs the same scenarios as processes).
func TestScenariosInMemory(t *testing.T) {
	for _, sc := range agenttest.Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := agenttest.MakeCluster(t, 3, sc.Setup)
				sc.Run(t, c)
			})
		})
	}
}
