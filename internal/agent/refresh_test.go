package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// flagReadyKit is a resource whose readiness probe says NOT READY while
// the file notready exists in the node's data directory.
type flagReadyKit struct{}

type flagReady struct{ dir string }

// testKits are the built-in kits and the agent tests' own.
var testKits, _ = kits.Builtin().With(gateKit{}, flagReadyKit{})

func (flagReadyKit) Type() string                              { return "test-flag-ready" }
func (flagReadyKit) Validate(map[string]string) []spec.Problem { return nil }
func (flagReadyKit) New(_ spec.Resource, env kit.Env) (kit.Instance, error) {
	return flagReady{dir: env.DataDir}, nil
}
func (flagReady) Restore(context.Context) error                  { return nil }
func (flagReady) Remove(context.Context) error                   { return nil }
func (flagReady) Recover(context.Context) error                  { return nil }
func (flagReady) QuickCheck(context.Context) (kit.Health, error) { return kit.Healthy, nil }
func (f flagReady) Ready(context.Context) kit.Readiness {
	if _, err := os.Stat(filepath.Join(f.dir, "notready")); err == nil {
		return kit.Readiness{Reason: "notready flag set"}
	}
	return kit.Readiness{Ready: true}
}

// `lifeboat status --refresh` answered by a follower shows the readiness
// the refresh proved, not what the follower had applied before: the
// results are committed through the leader, and the follower waits until
// it has applied them.
func TestStatusRefreshThroughAFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	c := startTestCluster(t)
	names := []string{"node1", "node2", "node3"}
	var leader string
	waitUntil(t, 15*time.Second, "a leader, and every node joined, seen by every node", func() (bool, string) {
		for _, n := range c.nodes {
			st, err := n.status()
			if err != nil || st.Leader == "" {
				return false, fmt.Sprintf("%s: %v %q", n.name, err, st.Leader)
			}
			leader = st.Leader
			for _, ns := range st.Nodes {
				if ns.Gen == 0 {
					return false, fmt.Sprintf("%s sees %+v", n.name, ns)
				}
			}
		}
		return true, ""
	})
	h := spec.Hierarchy{Name: "r", Nodes: names, MonitorInterval: spec.Duration(time.Second),
		Resources: []spec.Resource{{Name: "r-res", Type: "test-flag-ready", Params: map[string]string{}}}}
	if err := c.node(leader).do(10*time.Second, "POST", "/v1/apply", api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}}, nil); err != nil {
		t.Fatalf("apply: %v", err)
	}
	var follower *testNode
	for _, n := range c.nodes {
		if n.name != leader {
			follower = n
		}
	}
	refreshed := func(from *testNode) map[string]api.Readiness {
		t.Helper()
		var st api.Status
		if err := from.do(30*time.Second, "GET", "/v1/status?refresh=1", nil, &st); err != nil {
			t.Fatalf("status --refresh through %s: %v", from.name, err)
		}
		hs, _ := findHierarchy(st, "r")
		return hs.Readiness
	}
	waitUntil(t, 15*time.Second, "every node READY", func() (bool, string) {
		rd := refreshed(follower)
		return rd["node1"].Ready && rd["node2"].Ready && rd["node3"].Ready, fmt.Sprintf("%+v", rd)
	})
	// Flip a node's readiness, again and again, and read it through the
	// follower right away (never through the leader).
	for i := range 6 {
		target := c.nodes[i%len(c.nodes)]
		flag := filepath.Join(target.dir, "notready")
		if err := os.WriteFile(flag, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if got := refreshed(follower)[target.name]; got.Ready {
			t.Fatalf("round %d: %s READY through follower %s right after a refresh that proved it NOT READY (%+v)", i, target.name, follower.name, got)
		}
		if err := os.Remove(flag); err != nil {
			t.Fatal(err)
		}
		if got := refreshed(follower)[target.name]; !got.Ready {
			t.Fatalf("round %d: %s NOT READY through follower %s right after a refresh that proved it READY (%+v)", i, target.name, follower.name, got)
		}
	}
}
