package agenttest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// MemType is the resource type of the in-memory kit.
const MemType = "mem"

// World is what the in-memory kit's resources do, seen from outside the
// agents: which node runs which hierarchy's resource. It records every
// restore that brings a resource into service while another node that
// is neither dead nor stalled still runs it, and counts restores.
type World struct {
	mu sync.Mutex
	// running: hierarchy -> nodes running its resource.
	running map[string]map[string]bool
	// dead: nodes whose machine is down (they run nothing, and a late
	// action of their agent changes nothing).
	dead map[string]bool
	// stalled: nodes whose machine hangs: what they run serves nobody,
	// and every action their agent starts on a resource waits until the
	// machine resumes (the channel is closed then).
	stalled  map[string]chan struct{}
	restores map[string]map[string]int
	// broken: nodes where every resource fails its checks.
	broken  map[string]bool
	doubles []string
	now     func() time.Time
}

func newWorld() *World {
	return &World{running: map[string]map[string]bool{}, dead: map[string]bool{}, stalled: map[string]chan struct{}{},
		restores: map[string]map[string]int{}, broken: map[string]bool{}, now: time.Now}
}

// serving: node's machine is up and not stalled (w.mu held).
func (w *World) serving(node string) bool {
	return !w.dead[node] && w.stalled[node] == nil
}

// Running lists the nodes where hierarchy's resource serves now.
func (w *World) Running(hierarchy string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for n, on := range w.running[hierarchy] {
		if on && w.serving(n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Restores counts, per node, the restores of hierarchy's resource.
func (w *World) Restores(hierarchy string) map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.restores[hierarchy])
}

// DoubleOwners lists every restore that found the resource in service on
// another node.
func (w *World) DoubleOwners() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.doubles)
}

// crash takes node's machine down (everything it ran is gone) or, dead
// false, brings it back up empty.
func (w *World) crash(node string, dead bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dead[node] = dead
	if dead {
		for _, m := range w.running {
			delete(m, node)
		}
		w.resumeLocked(node) // nothing waits on a dead machine
	}
}

// stall makes node's machine hang (true) or resume (false).
func (w *World) stall(node string, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !on {
		w.resumeLocked(node)
		return
	}
	if w.stalled[node] == nil {
		w.stalled[node] = make(chan struct{})
	}
}

func (w *World) resumeLocked(node string) {
	if ch := w.stalled[node]; ch != nil {
		close(ch)
		delete(w.stalled, node)
	}
}

// wait blocks while node's machine hangs: a stalled machine finishes
// nothing, whatever deadline its agent set.
func (w *World) wait(node string) {
	w.mu.Lock()
	ch := w.stalled[node]
	w.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (w *World) set(hierarchy, node string, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead[node] {
		return
	}
	m := w.running[hierarchy]
	if m == nil {
		m = map[string]bool{}
		w.running[hierarchy] = m
	}
	if on {
		if w.restores[hierarchy] == nil {
			w.restores[hierarchy] = map[string]int{}
		}
		w.restores[hierarchy][node]++
	}
	if on && !m[node] {
		for other, o := range m {
			if o && other != node && w.serving(other) {
				w.doubles = append(w.doubles, fmt.Sprintf("%s restored on %s at %s while %s ran it",
					hierarchy, node, w.now().Format("15:04:05.000"), other))
			}
		}
	}
	m[node] = on
}

func (w *World) on(hierarchy, node string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running[hierarchy][node] && !w.dead[node] && !w.broken[node]
}

// breakNode makes every resource on node fail its checks (or work again).
func (w *World) breakNode(node string, broken bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.broken[node] = broken
}

// memKit is a resource kit whose resources live in a World.
type memKit struct{ w *World }

func (k memKit) Type() string                              { return MemType }
func (k memKit) Validate(map[string]string) []spec.Problem { return nil }
func (k memKit) New(res spec.Resource, env kit.Env) (kit.Instance, error) {
	return &memInstance{w: k.w, node: env.Node, hierarchy: env.Hierarchy}, nil
}

type memInstance struct {
	w               *World
	node, hierarchy string
}

func (m *memInstance) Restore(ctx context.Context) error {
	m.w.wait(m.node)
	if err := ctx.Err(); err != nil {
		return err
	}
	m.w.set(m.hierarchy, m.node, true)
	return nil
}

func (m *memInstance) Remove(context.Context) error {
	m.w.wait(m.node)
	m.w.set(m.hierarchy, m.node, false)
	return nil
}

func (m *memInstance) QuickCheck(context.Context) (kit.Health, error) {
	m.w.wait(m.node)
	if m.w.on(m.hierarchy, m.node) {
		return kit.Healthy, nil
	}
	return kit.Failed, fmt.Errorf("%s is not running on %s", m.hierarchy, m.node)
}

func (m *memInstance) Recover(ctx context.Context) error { return m.Restore(ctx) }
