package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// A rolling upgrade in one process: node3 stands in for a version before
// feature levels (it reads only the legacy log, as 0.1 does; a typed entry
// would halt it). The cluster stays at level 1 while it runs, rises to 2
// once it is replaced, and refuses it when it comes back old.
func TestFeatureLevelRollingUpgrade(t *testing.T) {
	c := startTestClusterLevels(t, map[string]int{"node3": cluster.LevelLegacy})
	names := []string{"node1", "node2", "node3"}
	levels := func(want int) func() (bool, string) {
		return func() (bool, string) {
			for _, n := range c.nodes {
				if n.down {
					continue
				}
				st, err := n.status()
				if err != nil {
					return false, n.name + ": " + err.Error()
				}
				if st.FeatureLevel != want || st.Halted != "" {
					return false, fmt.Sprintf("%s: level %d halted %q", n.name, st.FeatureLevel, st.Halted)
				}
			}
			return true, ""
		}
	}
	waitUntil(t, 15*time.Second, "cluster at level 1 with leases", func() (bool, string) {
		if ok, why := levels(1)(); !ok {
			return ok, why
		}
		for _, n := range c.nodes {
			st, _ := n.status()
			if !st.Local.LeaseHeld {
				return false, n.name + " holds no lease"
			}
		}
		return true, ""
	})
	st, err := c.node("node1").status()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range st.Nodes {
		want := cluster.MaxLevel
		if ns.Name == "node3" {
			want = cluster.LevelLegacy
		}
		if ns.Level != want {
			t.Fatalf("node1 sees %s at level %d, want %d", ns.Name, ns.Level, want)
		}
	}

	// Work happens while mixed: the old node applies every entry (a typed
	// one would halt it, which levels(1) checks).
	var ar api.ApplyResponse
	hs := []spec.Hierarchy{flagHierarchy("web", names), flagHierarchy("db", []string{"node3", "node1", "node2"})}
	if err := c.node("node2").do(10*time.Second, "POST", "/v1/apply", api.ApplyRequest{Hierarchies: hs}, &ar); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, c.node("node3"), "web", 10*time.Second, func(o string) bool { return o != "" })
	waitOnline(t, c.node("node1"), "db", 10*time.Second, func(o string) bool { return o != "" })
	if ok, why := levels(1)(); !ok {
		t.Fatalf("while mixed: %s", why)
	}

	// Replace the old node with the current version: the level rises.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.node("node3").shutdown(ctx)
	c.node("node3").restart(t, 0)
	waitUntil(t, 15*time.Second, "cluster at level 2", levels(2))
	waitUntil(t, 10*time.Second, "every node at the same index", func() (bool, string) {
		var idx []uint64
		for _, n := range c.nodes {
			st, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			idx = append(idx, st.Index)
		}
		return idx[0] == idx[1] && idx[1] == idx[2], fmt.Sprint(idx)
	})
	// Typed entries from now on: batches, and the snapshots sealed in
	// the form an old binary refuses.
	waitUntil(t, 10*time.Second, "snapshots in the new form on every node", func() (bool, string) {
		for _, n := range c.nodes {
			if n.a.c.FSM.Level() < cluster.LevelTyped {
				return false, n.name + " not at level 2"
			}
			// raft's file store keeps them in snapshots/ under the
			// directory it is given.
			files, _ := filepath.Glob(filepath.Join(n.dir, "snapshots", "snapshots", "*", "state.bin"))
			if len(files) == 0 {
				return false, n.name + " has no snapshot"
			}
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil || !strings.HasPrefix(string(b), "lifeboat-state 2") {
					return false, fmt.Sprintf("%s: %s starts %.20q", n.name, f, b)
				}
			}
		}
		return true, ""
	})
	// A switchover at level 2 (its commands typed, batched by placement).
	db := waitOnline(t, c.node("node1"), "db", 10*time.Second, func(o string) bool { return o != "" })
	to := "node2"
	if db.Owner == to {
		to = "node1"
	}
	if err := c.node("node1").do(10*time.Second, "POST", "/v1/hierarchies/db/switchover", api.MoveRequest{To: to}, nil); err != nil {
		t.Fatalf("switchover at level 2: %v", err)
	}
	waitOnline(t, c.node("node3"), "db", 10*time.Second, func(o string) bool { return o == to })

	// A downgrade: node3 comes back as the old version. The leader
	// refuses its join; it holds nothing; the service stays where it is.
	c.node("node3").shutdown(ctx)
	c.node("node3").restart(t, cluster.LevelLegacy)
	waitUntil(t, 10*time.Second, "node3's join refused", func() (bool, string) {
		logs := c.node("node3").logs.tail(100000)
		return strings.Contains(logs, "refused this node's join") && strings.Contains(logs, "cluster is at feature level 2"), "no refusal in node3's log"
	})
	st, err = c.node("node3").status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Local.LeaseHeld {
		t.Fatal("the downgraded node holds a lease")
	}
	for _, h := range []string{"web", "db"} {
		waitOnline(t, c.node("node1"), h, 5*time.Second, func(o string) bool { return o == "node1" || o == "node2" })
	}
}
