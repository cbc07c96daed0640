package e2e

import (
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// routeLog records every route the simulator creates or replaces.
type routeLog struct {
	mu     sync.Mutex
	events []routeEvent
}

type routeEvent struct {
	at  time.Time
	eni string
}

func (l *routeLog) hook(_, _, eni string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, routeEvent{time.Now(), eni})
}

func (l *routeLog) since(t time.Time) []routeEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []routeEvent
	for _, e := range l.events {
		if !e.at.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

// An owner frozen (SIGSTOP) while the route points at it resumes after its
// lease has expired and the route has moved to another node: it must take
// the hierarchy out of service and never touch the route again, whatever
// its checks, timers and recovery had pending. Checked from outside the
// agents, on the simulator's own record of route changes. (The exact race
// the engine guards against, a check that comes back "moved" and a
// recovery that follows before the lease loss is noticed, is reproduced
// deterministically in internal/engine: TestNoRecoverAfterLeaseExpired.)
func TestFrozenOwnerDoesNotActAfterLease(t *testing.T) {
	var log routeLog
	env, err := demo.StartSimWorld(sim.DefaultWorld(three), three, nil, sim.Options{RouteHook: log.hook})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := startCluster(t, demo.Options{ExtraConfig: "readiness_interval: 1s\n", NodeConfig: env.NodeConfig})
	app := flagHierarchy("db", three, spec.SwitchbackIntelligent, 1, "").Resources[0]
	h := env.VIPHierarchy("db", three, app)
	h.MonitorInterval = spec.Duration(200 * time.Millisecond)
	if err := env.GrantLeastPrivilege(three, []spec.Hierarchy{h}); err != nil {
		t.Fatal(err)
	}
	apply(t, c, h)
	eniOf := func(node string) string {
		inst, _ := env.World.InstanceByName(node)
		return env.World.InstanceNetworkInterfaces(inst.ID)[0]
	}
	owner := "node1"
	waitFor(t, c, "node2", 20*time.Second, "db online on node1", onlineOn("db", owner))
	for round := 1; round <= 2; round++ {
		if err := c.Signal(owner, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		var next string
		ctx := t.Context()
		if err := demo.Wait(ctx, "the route to move off the frozen "+owner, func() bool {
			_, n := env.RouteTarget("10.0.100.10/32")
			next = n
			return n != "" && n != owner
		}); err != nil {
			t.Fatal(err)
		}
		moved := time.Now()
		if err := c.Signal(owner, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// The resumed node takes db out of service here and rejoins.
		waitFor(t, c, owner, 20*time.Second, owner+" resumed with db out of service and its lease back", func(st api.Status) bool {
			l := st.Local.Hierarchies["db"]
			return st.Local.LeaseHeld && !l.Holding && l.State == "offline"
		})
		time.Sleep(2 * time.Second) // the subject: ten monitor intervals in which nothing may happen
		for _, e := range log.since(moved) {
			if e.eni == eniOf(owner) {
				t.Fatalf("round %d: %s, resumed after its lease expired, pointed the route back at itself %s after it had moved to %s",
					round, owner, e.at.Sub(moved).Round(time.Millisecond), next)
			}
		}
		if _, n := env.RouteTarget("10.0.100.10/32"); n != next {
			t.Fatalf("round %d: the route points at %q, want %s", round, n, next)
		}
		owner = next
		waitFor(t, c, owner, 20*time.Second, "db online on "+owner, onlineOn("db", owner))
	}
}
