package agent

import (
	"context"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/watchdog"
)

// nodeFenced reports whether h has a resource that nothing outside the node
// arbitrates (kit.NodeFenced): a frozen node would keep it configured.
func nodeFenced(kr *kit.Registry, h spec.Hierarchy) bool {
	for _, r := range h.Resources {
		if k, ok := kr.Lookup(r.Type); ok {
			if nf, ok := k.(kit.NodeFenced); ok && nf.NeedsNodeFencing() {
				return true
			}
		}
	}
	return false
}

// watchdogFeeder arms the node's watchdog before a hierarchy with node-fenced
// resources is restored here, feeds it while the agent works and either
// holds its lease or has nothing fenced up, and disarms it (magic close)
// once nothing fenced is wanted or up here. A frozen agent feeds nothing,
// so its machine is reset before the cluster, which waits lease + timeout
// (Agent.fenceAge), restores the addresses elsewhere.
type watchdogFeeder struct {
	a   *Agent
	dev *watchdog.Device

	mu      sync.Mutex
	wanted  bool
	starved bool // not feeding: lease lost with fenced resources up
}

func newWatchdogFeeder(a *Agent, dev *watchdog.Device) *watchdogFeeder {
	return &watchdogFeeder{a: a, dev: dev}
}

// want is called with every desired state, before the engine sees it.
func (w *watchdogFeeder) want(d map[string]engine.Desired) {
	wanted := false
	for _, x := range d {
		if x.InService && nodeFenced(w.a.kits, x.Spec) {
			wanted = true
			break
		}
	}
	w.mu.Lock()
	w.wanted = wanted
	w.mu.Unlock()
	if wanted && !w.dev.Armed() {
		w.arm()
	}
}

func (w *watchdogFeeder) arm() {
	a := w.a
	if err := w.dev.Arm(); err != nil {
		a.log.Error("watchdog not armed: a hang of this agent would leave local addresses up while the cluster moves them", "device", w.dev.Path(), "error", err)
		a.events.Add(events.Event{Kind: "watchdog", Action: "arm", Error: err.Error()})
		return
	}
	a.log.Info("watchdog armed", "device", w.dev.Path(), "timeout", w.dev.Timeout())
	a.events.Add(events.Event{Kind: "watchdog", Action: "arm", Message: "armed " + w.dev.Path() + " with timeout " + w.dev.Timeout().String()})
}

// fencedUp reports whether a hierarchy with node-fenced resources may still
// have some configured here.
func (w *watchdogFeeder) fencedUp() bool {
	reports := w.a.eng.Reports()
	up := false
	w.a.c.FSM.View(func(s *cluster.State) {
		for name, r := range reports {
			switch r.State {
			case engine.StateOffline, engine.StateFailed, engine.StateUnknown:
				continue
			}
			if h, ok := s.Hierarchies[name]; ok && nodeFenced(w.a.kits, h) {
				up = true
				return
			}
		}
	})
	return up
}

// run feeds the watchdog four times per timeout until ctx ends.
func (w *watchdogFeeder) run(ctx context.Context) {
	every := w.dev.Timeout() / 4
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if !w.fencedUp() {
				w.disarm("agent stopping with nothing fenced up")
			}
			return
		case <-t.C:
		}
		w.tick()
	}
}

func (w *watchdogFeeder) tick() {
	a := w.a
	if !w.dev.Armed() {
		return
	}
	w.mu.Lock()
	wanted := w.wanted
	w.mu.Unlock()
	up := w.fencedUp()
	if !wanted && !up {
		w.disarm("no hierarchy with local addresses held here")
		return
	}
	// Fed only while the lease is valid for ActMargin more: the cluster
	// counts on the last feed coming no later (Leases.WatchdogAge).
	gen, _ := a.c.Leases.Current()
	leased := a.c.Leases.Acting(gen)
	if leased || !up || a.cfg.QuorumLossAction == config.QuorumLossKeep {
		w.setStarved(false)
		if err := w.dev.Feed(); err != nil {
			a.log.Error("feed watchdog", "device", w.dev.Path(), "error", err)
		}
		return
	}
	if w.setStarved(true) {
		a.log.Warn("not feeding the watchdog: the lease is lost while local addresses are still up; the machine is reset unless they are removed first", "timeout", w.dev.Timeout())
		a.events.Add(events.Event{Kind: "watchdog", Action: "starve", Message: "lease lost with local addresses up: feeding stopped"})
	}
}

// setStarved records the state and reports whether it changed.
func (w *watchdogFeeder) setStarved(v bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	changed := w.starved != v
	w.starved = v
	return changed
}

func (w *watchdogFeeder) disarm(why string) {
	a := w.a
	if !w.dev.Armed() {
		return
	}
	if err := w.dev.Disarm(); err != nil {
		a.log.Error("disarm watchdog", "device", w.dev.Path(), "error", err)
		return
	}
	a.log.Info("watchdog disarmed", "device", w.dev.Path(), "reason", why)
	a.events.Add(events.Event{Kind: "watchdog", Action: "disarm", Message: why})
}
