package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
)

// The gate before the first readiness round: a hierarchy is held until a
// round covered it, or a round after the join opened the gate, or the
// bound ran out (with an event saying so).
func TestReadinessGate(t *testing.T) {
	ev, err := events.Open("node1", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	r := newReadiness(&Agent{log: slog.New(slog.DiscardHandler), events: ev})
	now := time.Unix(1_000_000, 0)
	r.now = func() time.Time { return now }

	if r.mayTakeOver("web") {
		t.Fatal("web taken over before any readiness round")
	}
	now = now.Add(firstRoundBound - time.Millisecond)
	if r.mayTakeOver("web") {
		t.Fatal("web taken over before the bound")
	}
	// A round before the join covered db: db may go, web still waits.
	r.roundDone([]string{"db"}, false, time.Millisecond)
	if !r.mayTakeOver("db") || r.mayTakeOver("web") {
		t.Fatal("a round that covered db must release db only")
	}
	// The bound runs out for web: released, with an event.
	now = now.Add(time.Millisecond)
	if !r.mayTakeOver("web") {
		t.Fatal("web still held after the bound")
	}
	gated := 0
	for _, e := range ev.Since(0) {
		if e.Kind == "readiness" && e.Action == "gate" && e.Hierarchy == "web" && e.Error != "" {
			gated++
		}
	}
	if gated != 1 {
		t.Fatalf("%d gate events for web, want 1: %+v", gated, ev.Since(0))
	}
	if !r.mayTakeOver("web") {
		t.Fatal("web held again after its release")
	}
	// A third hierarchy waits; the first round after the join opens the
	// gate for everything.
	if r.mayTakeOver("api") {
		t.Fatal("api taken over unproven")
	}
	r.roundDone(nil, true, time.Millisecond)
	if !r.mayTakeOver("api") || !r.mayTakeOver("new-one") {
		t.Fatal("the gate stays shut after the first round after the join")
	}
}

// gateKit is a resource whose readiness probe, on a node listed in
// gateProbes, waits until that channel is closed; it records when it is
// restored where.
type gateKit struct{}

var (
	gateMu       sync.Mutex
	gateProbes   = map[string]chan struct{}{}
	gateRestored = map[string]time.Time{}
)

func (gateKit) Type() string                              { return "gatetest" }
func (gateKit) Validate(map[string]string) []spec.Problem { return nil }
func (gateKit) New(_ spec.Resource, env kit.Env) (kit.Instance, error) {
	return gateInstance{node: env.Node}, nil
}

type gateInstance struct{ node string }

var (
	_ kit.Instance        = gateInstance{}
	_ kit.ReadinessProber = gateInstance{}
)

func (g gateInstance) Restore(context.Context) error {
	gateMu.Lock()
	defer gateMu.Unlock()
	if _, ok := gateRestored[g.node]; !ok {
		gateRestored[g.node] = time.Now()
	}
	return nil
}
func (gateInstance) Remove(context.Context) error                   { return nil }
func (gateInstance) QuickCheck(context.Context) (kit.Health, error) { return kit.Healthy, nil }
func (gateInstance) Recover(context.Context) error                  { return nil }
func (g gateInstance) Ready(ctx context.Context) kit.Readiness {
	gateMu.Lock()
	ch := gateProbes[g.node]
	gateMu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return kit.Readiness{Unknown: true, Ready: true}
		}
	}
	return kit.Readiness{Ready: true}
}

func restoredOn(node string) (time.Time, bool) {
	gateMu.Lock()
	defer gateMu.Unlock()
	at, ok := gateRestored[node]
	return at, ok
}

// A restarted agent (an upgraded standby, say) takes nothing over before
// its first readiness round is done, even when placement hands it a
// hierarchy on the strength of what its previous process proved.
func TestRestartedAgentWaitsForItsFirstReadinessRound(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	// The bound must not release the gate while the test holds it.
	old := firstRoundBound
	firstRoundBound = time.Minute
	t.Cleanup(func() { firstRoundBound = old })
	c := startTestCluster(t)
	nodes := []string{"node1", "node2", "node3"}
	waitUntil(t, 15*time.Second, "cluster ready", func() (bool, string) {
		for _, n := range c.nodes {
			st, err := n.status()
			if err != nil || st.Leader == "" || !st.Local.LeaseHeld {
				return false, fmt.Sprintf("%s: %v %+v", n.name, err, st.Local)
			}
		}
		return true, ""
	})
	h := spec.Hierarchy{Name: "gated", Nodes: nodes, MonitorInterval: spec.Duration(100 * time.Millisecond),
		Resources: []spec.Resource{{Name: "g", Type: "gatetest"}}}
	if err := c.node("node3").do(10*time.Second, "POST", "/v1/apply", api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}}, nil); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, c.node("node3"), "gated", 10*time.Second, func(o string) bool { return o == "node1" })
	waitUntil(t, 10*time.Second, "node2 READY for gated", func() (bool, string) {
		st, err := c.node("node3").status()
		if err != nil {
			return false, err.Error()
		}
		hs, _ := findHierarchy(st, "gated")
		return hs.Readiness["node2"].Ready, fmt.Sprintf("%+v", hs.Readiness)
	})

	// Restart node2 with its probes held.
	n2 := c.node("node2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	n2.shutdown(ctx)
	cancel()
	var gen uint64
	if st, err := c.node("node3").status(); err == nil {
		for _, ns := range st.Nodes {
			if ns.Name == "node2" {
				gen = ns.Gen
			}
		}
	}
	hold := make(chan struct{})
	gateMu.Lock()
	gateProbes["node2"] = hold
	gateMu.Unlock()
	released := false
	t.Cleanup(func() {
		gateMu.Lock()
		defer gateMu.Unlock()
		if !released {
			close(hold)
		}
		delete(gateProbes, "node2")
		gateRestored = map[string]time.Time{}
	})
	cfg := n2.a.cfg
	a, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(n2.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Level: new(slog.LevelVar), Kits: testKits})
	if err != nil {
		t.Fatalf("restart node2: %v", err)
	}
	n2.mu.Lock()
	n2.a, n2.down = a, false
	n2.mu.Unlock()
	// Fresh as every other node sees it: whichever leads places by its
	// own view (found under load: node1 saw node2 fresh, the leader node3
	// not yet, and moved the hierarchy to itself).
	waitUntil(t, 15*time.Second, "node2 rejoined with a fresh lease", func() (bool, string) {
		for _, from := range []string{"node1", "node3"} {
			st, err := c.node(from).status()
			if err != nil {
				return false, err.Error()
			}
			fresh := false
			for _, ns := range st.Nodes {
				if ns.Name == "node2" {
					fresh = ns.State == "alive" && ns.Gen > gen && ns.LeaseFresh
					if !fresh {
						return false, fmt.Sprintf("%s sees %+v", from, ns)
					}
				}
			}
			if !fresh {
				return false, "node2 not listed by " + from
			}
		}
		return true, ""
	})

	// The owner leaves: placement moves the hierarchy to node2, READY as
	// far as the cluster state knows (its previous process said so).
	n1Down := make(chan struct{})
	go func() {
		defer close(n1Down)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c.node("node1").shutdown(ctx)
	}()
	waitUntil(t, 15*time.Second, "gated assigned to node2", func() (bool, string) {
		st, err := c.node("node3").status()
		if err != nil {
			return false, err.Error()
		}
		hs, _ := findHierarchy(st, "gated")
		return hs.Owner == "node2" && hs.MoveTo == "", fmt.Sprintf("%+v", hs)
	})
	// Held: nothing restored there while its first round is not done.
	time.Sleep(time.Second)
	if at, ok := restoredOn("node2"); ok {
		t.Fatalf("node2 restored gated at %s, before its first readiness round was done", at.Format(time.StampMilli))
	}
	st, err := n2.status()
	if err != nil {
		t.Fatal(err)
	}
	if lh := st.Local.Hierarchies["gated"]; lh.Holding || lh.State == engine.StateOnline {
		t.Fatalf("node2's local view while held: %+v", lh)
	}
	// The round completes: the hierarchy comes online there.
	gateMu.Lock()
	releasedAt := time.Now()
	close(hold)
	released = true
	gateMu.Unlock()
	waitOnline(t, c.node("node3"), "gated", 15*time.Second, func(o string) bool { return o == "node2" })
	if at, ok := restoredOn("node2"); !ok || at.Before(releasedAt) {
		t.Fatalf("node2 restored at %v (%v), want after its probe ended at %v", at, ok, releasedAt)
	}
	// The agent's own upgrade check sees the hierarchy and nothing missing.
	select {
	case <-n1Down:
	case <-time.After(30 * time.Second):
		t.Fatal("node1 did not shut down")
	}
	var cr upgrade.ClusterReport
	if err := n2.do(30*time.Second, "POST", upgrade.CheckPath, upgrade.Request{All: true}, &cr); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range cr.Nodes {
		seen[r.Node] = true
		switch r.Node {
		case "node1":
			if r.Ready {
				t.Errorf("node1 is down but its check says ready: %+v", r)
			}
		default:
			if !r.Ready || r.Target != Version || len(r.Hierarchies) != 1 {
				t.Errorf("check of %s: %+v", r.Node, r)
			}
		}
	}
	if len(seen) != 3 {
		t.Errorf("upgrade check --all answered for %v, want every node", seen)
	}
}
