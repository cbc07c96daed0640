package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// stopOthers SIGSTOPs every node but keep and returns a function that
// resumes them.
func stopOthers(t *testing.T, c *demo.Cluster, keep string) func() {
	t.Helper()
	var stopped []string
	for _, n := range c.Nodes {
		if n.Name != keep {
			if err := c.Signal(n.Name, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopped = append(stopped, n.Name)
		}
	}
	return func() {
		for _, n := range stopped {
			_ = c.Signal(n, syscall.SIGCONT)
		}
	}
}

// quorum_loss_action remove (the default): a node that loses its lease takes
// its hierarchies out of service; when the quorum is back, they return.
func TestQuorumLossRemoves(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("q", three, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node1", 10*time.Second, "q online on node1", onlineOn("q", "node1"))
	resume := stopOthers(t, c, "node1")
	defer resume()
	waitFor(t, c, "node1", 5*time.Second, "node1 fenced itself", func(st api.Status) bool {
		l := st.Local.Hierarchies["q"]
		return !st.Local.LeaseHeld && l.State == "offline" && !l.Holding
	})
	if _, err := os.Stat(filepath.Join(c.Dir, "node1", "q.up")); err == nil {
		t.Fatal("resource still in service on node1 without a lease")
	}
	resume()
	waitFor(t, c, "node1", 15*time.Second, "q back online", func(st api.Status) bool { return hier(st, "q").State == "online" })
}

// quorum_loss_action keep: the node leaves its resources as they are and
// runs no checks or recovery until the quorum is back.
func TestQuorumLossKeeps(t *testing.T) {
	c := startCluster(t, demo.Options{ExtraConfig: "quorum_loss_action: keep\n"})
	apply(t, c, flagHierarchy("k", three, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node1", 10*time.Second, "k online on node1", onlineOn("k", "node1"))
	resume := stopOthers(t, c, "node1")
	defer resume()
	waitFor(t, c, "node1", 5*time.Second, "node1 froze k", func(st api.Status) bool {
		return !st.Local.LeaseHeld && st.Local.Hierarchies["k"].State == "frozen"
	})
	if _, err := os.Stat(filepath.Join(c.Dir, "node1", "k.up")); err != nil {
		t.Fatalf("keep removed the resource: %v", err)
	}
	resume()
	waitFor(t, c, "node1", 15*time.Second, "k online again on node1", func(st api.Status) bool {
		return st.Local.Hierarchies["k"].State == "online" && st.Local.LeaseHeld
	})
}

// shutdown_strategy stop: SIGTERM takes the node's hierarchies out of
// service and leaves them stopped; nothing fails over.
func TestShutdownStop(t *testing.T) {
	c := startCluster(t, demo.Options{ShutdownStrategy: "stop"})
	apply(t, c, flagHierarchy("s", three, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node2", 10*time.Second, "s online on node1", onlineOn("s", "node1"))
	if err := c.Signal("node1", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := c.WaitExit(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "node1", "s.up")); err == nil {
		t.Fatal("resource left in service by a stopped agent")
	}
	st := waitFor(t, c, "node2", 5*time.Second, "s stopped", func(st api.Status) bool { return hier(st, "s").State == "stopped" })
	if h := hier(st, "s"); h.Online {
		t.Fatalf("s should stay out of service: %+v", h)
	}
	for _, n := range []string{"node2", "node3"} {
		if _, err := os.Stat(filepath.Join(c.Dir, n, "s.up")); err == nil {
			t.Fatalf("s was restored on %s", n)
		}
	}
	// and it starts elsewhere when asked
	out, errOut, code := lifeboat(t, c, "node2", "start", "s")
	if code != 0 {
		t.Fatalf("start: exit %d: %s%s", code, out, errOut)
	}
	waitFor(t, c, "node2", 5*time.Second, "s online on node2", onlineOn("s", "node2"))
}
