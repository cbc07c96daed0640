package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

var three = []string{"node1", "node2", "node3"}

// Kill -9 the owner: the hierarchy comes back on the next node by
// priority, and the resource really exists there.
func TestKillOwnerFailsOverByPriority(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("web", []string{"node1", "node3", "node2"}, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node2", 10*time.Second, "web online on node1", onlineOn("web", "node1"))

	if err := c.Signal("node1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, c, "node2", 10*time.Second, "web online on node3", onlineOn("web", "node3"))
	t.Logf("failover took %s (observed by polling)", time.Since(killed).Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(c.Dir, "node3", "web.up")); err != nil {
		t.Fatalf("resource not restored on node3: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "node2", "web.up")); err == nil {
		t.Fatal("resource also restored on node2")
	}
	// The failure detector declares node1 failed as well (the bench
	// measures how fast).
	waitFor(t, c, "node2", 5*time.Second, "node1 declared failed", func(st api.Status) bool {
		for _, n := range st.Nodes {
			if n.Name == "node1" {
				return n.State == "failed"
			}
		}
		return false
	})
}

// SIGSTOP the owner (a hung node): at no moment do two nodes hold the
// hierarchy; the new owner restores only after the hung owner's lease ran
// out; after SIGCONT the old owner steps down.
func TestHungOwnerNeverDoubleOwned(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("db", three, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node2", 10*time.Second, "db online on node1", onlineOn("db", "node1"))

	// Watch every node's own view as fast as it answers.
	var mu sync.Mutex
	holding := map[string]bool{}
	paused := map[string]bool{} // a stopped node's answers are not sampled
	var violations []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range three {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				st, err := c.Status(ctx, n)
				cancel()
				mu.Lock()
				if err == nil && !paused[n] {
					holding[n] = st.Local.Hierarchies["db"].Holding
					var who []string
					for node, h := range holding {
						if h {
							who = append(who, node)
						}
					}
					if len(who) > 1 {
						violations = append(violations, strings.Join(who, "+"))
					}
				}
				mu.Unlock()
			}
		}()
	}

	// While node1 is stopped it cannot answer; it may believe it holds db
	// until its lease runs out, which the event timestamps check below.
	mu.Lock()
	paused["node1"] = true
	delete(holding, "node1")
	mu.Unlock()
	stopped := time.Now()
	if err := c.Signal("node1", syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "node3", 10*time.Second, "db online on node2", onlineOn("db", "node2"))
	// node1's lease started before the stop, so it ended within one lease
	// after it; node2 must not have started restoring before that.
	restoreStart := firstEvent(t, c, "node2", func(e events.Event) bool {
		return e.Hierarchy == "db" && e.Action == "restore" && e.Phase == "start"
	})
	if lease := 600 * time.Millisecond; restoreStart.Time.Before(stopped.Add(lease)) {
		t.Fatalf("node2 started restoring %s after node1 hung, before node1's %s lease could have run out", restoreStart.Time.Sub(stopped), lease)
	}

	if err := c.Signal("node1", syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	paused["node1"] = false // every answer from here on was computed after the resume
	mu.Unlock()
	// node1 steps down: it reports db offline and does not hold it.
	waitFor(t, c, "node1", 10*time.Second, "node1 stepped down", func(st api.Status) bool {
		l := st.Local.Hierarchies["db"]
		return !l.Holding && l.State == "offline"
	})
	if _, err := os.Stat(filepath.Join(c.Dir, "node1", "db.up")); err == nil {
		t.Fatal("node1 still has the resource after stepping down")
	}
	waitFor(t, c, "node3", 5*time.Second, "db still on node2", onlineOn("db", "node2"))
	close(stop)
	wg.Wait()
	if len(violations) > 0 {
		t.Fatalf("two nodes held db at once: %v", violations[:min(5, len(violations))])
	}
}

func firstEvent(t *testing.T, c *demo.Cluster, node string, match func(events.Event) bool) events.Event {
	t.Helper()
	var resp api.EventsResponse
	if err := c.Client(node).Do(context.Background(), "GET", "/v1/events?local=1", nil, &resp); err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.Events {
		if match(e) {
			return e
		}
	}
	t.Fatalf("no matching event on %s", node)
	return events.Event{}
}

// A full-cluster restart loses nothing: specs, assignment, and the
// hierarchy comes back into service.
func TestFullClusterRestartKeepsSpec(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("keep", three, spec.SwitchbackIntelligent, 1, ""), flagHierarchy("other", []string{"node2", "node1"}, spec.SwitchbackAutomatic, 3, ""))
	waitFor(t, c, "node1", 10*time.Second, "keep online", onlineOn("keep", "node1"))
	c.Kill()
	for _, n := range c.Nodes {
		if err := c.StartNode(n.Name); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, c, "node3", 15*time.Second, "both hierarchies online", func(st api.Status) bool {
		return hier(st, "keep").State == "online" && hier(st, "other").State == "online"
	})
	o := hier(st, "other")
	if o.Switchback != spec.SwitchbackAutomatic || !slices.Equal(o.Nodes, []string{"node2", "node1"}) {
		t.Fatalf("spec not kept across restart: %+v", o)
	}
}

// Switchback: automatic returns to the preferred node when it comes back,
// intelligent stays put.
func TestSwitchbackPolicies(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c,
		flagHierarchy("auto", three, spec.SwitchbackAutomatic, 1, ""),
		flagHierarchy("smart", three, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node2", 10*time.Second, "both on node1", func(st api.Status) bool {
		return onlineOn("auto", "node1")(st) && onlineOn("smart", "node1")(st)
	})
	if err := c.Signal("node1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "node2", 10*time.Second, "both on node2", func(st api.Status) bool {
		return onlineOn("auto", "node2")(st) && onlineOn("smart", "node2")(st)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitExit(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode("node1"); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, c, "node3", 15*time.Second, "auto back on node1", onlineOn("auto", "node1"))
	if h := hier(st, "smart"); h.Owner != "node2" {
		t.Fatalf("intelligent switchback moved smart to %s", h.Owner)
	}
	// node1 is fully back (joined, alive) and smart still stays on node2.
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	st = waitFor(t, c, "node3", 5*time.Second, "smart online", func(st api.Status) bool { return hier(st, "smart").State == "online" })
	if h := hier(st, "smart"); h.Owner != "node2" {
		t.Fatalf("intelligent switchback moved smart to %s", h.Owner)
	}
}

// A failing quickCheck is recovered locally N times, then the hierarchy
// fails over and the failing node is marked.
func TestQuickCheckRecoveryThenFailover(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("app", three, spec.SwitchbackIntelligent, 2, "exit 1"))
	waitFor(t, c, "node2", 10*time.Second, "app online on node1", onlineOn("app", "node1"))
	if err := os.WriteFile(filepath.Join(c.Dir, "node1", "broken"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, c, "node2", 15*time.Second, "app online on node2", onlineOn("app", "node2"))
	if h := hier(st, "app"); !slices.Contains(h.Failed, "node1") {
		t.Fatalf("node1 not marked failed: %+v", h)
	}
	var resp api.EventsResponse
	if err := c.Client("node1").Do(context.Background(), "GET", "/v1/events?local=1", nil, &resp); err != nil {
		t.Fatal(err)
	}
	recovers, gaveUp := 0, false
	for _, e := range resp.Events {
		if e.Hierarchy != "app" {
			continue
		}
		if e.Action == "recover" && e.Phase == "end" {
			recovers++
			if e.Error == "" {
				t.Errorf("recover succeeded though its command fails: %+v", e)
			}
		}
		if e.Action == "give-up" {
			gaveUp = true
			if recovers != 2 {
				t.Fatalf("gave up after %d recoveries, want 2", recovers)
			}
		}
	}
	if !gaveUp {
		t.Fatalf("no give-up event on node1; %d recoveries", recovers)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "node1", "app.up")); err == nil {
		t.Fatal("node1 still has the resource after failing over")
	}
}

// A successful recovery keeps the hierarchy where it is.
func TestQuickCheckRecoveredInPlace(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("svc", three, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node2", 10*time.Second, "svc online on node1", onlineOn("svc", "node1"))
	// Remove the resource behind lifeboat's back: the check fails, and
	// recovery (remove + restore) brings it back on node1.
	flag := filepath.Join(c.Dir, "node1", "svc.up")
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		var resp api.EventsResponse
		if err := c.Client("node1").Do(ctx, "GET", "/v1/events?local=1", nil, &resp); err != nil {
			t.Fatal(err)
		}
		done := false
		for _, e := range resp.Events {
			if e.Hierarchy == "svc" && e.Action == "recover" && e.Phase == "end" && e.Error == "" {
				done = true
			}
		}
		if done {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no successful recovery on node1")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := os.Stat(flag); err != nil {
		t.Fatalf("recovery did not restore the resource: %v", err)
	}
	st := waitFor(t, c, "node2", 5*time.Second, "svc online", func(st api.Status) bool { return hier(st, "svc").State == "online" })
	if h := hier(st, "svc"); h.Owner != "node1" || len(h.Failed) > 0 {
		t.Fatalf("svc moved after a successful recovery: %+v", h)
	}
}

// SIGTERM with the default switchover strategy hands the hierarchy over
// before the agent exits; the restarted agent rejoins without moving it.
func TestShutdownSwitchoverAndRejoin(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("roll", three, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node2", 10*time.Second, "roll online on node1", onlineOn("roll", "node1"))
	if err := c.Signal("node1", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitExit(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	// By the time node1 has exited, roll is already in service on node2:
	// a handover, not a failover after a lease expiry.
	st, err := c.Status(ctx, "node2")
	if err != nil {
		t.Fatal(err)
	}
	if h := hier(st, "roll"); h.Owner != "node2" || h.State != "online" {
		t.Fatalf("after node1 exited, roll is %s on %q; want online on node2", h.State, h.Owner)
	}
	epoch := hier(st, "roll").Epoch
	if err := c.StartNode("node1"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	st = waitFor(t, c, "node1", 10*time.Second, "node1 sees roll", func(st api.Status) bool { return hier(st, "roll").State == "online" })
	if h := hier(st, "roll"); h.Owner != "node2" || h.Epoch != epoch {
		t.Fatalf("restarted node1 disturbed roll: owner %s epoch %d (was node2, %d)", h.Owner, h.Epoch, epoch)
	}
}
