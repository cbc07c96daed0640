// Package engine reconciles what the cluster wants this node to run with what
// runs here. For each hierarchy it restores resources children-first, removes
// them parents-first, runs each resource's quickCheck on its interval, tries
// local recovery a configured number of times and then reports the failure so
// that placement moves the hierarchy. The engine never talks to the cluster
// directly: it receives desired states through Update and reports through a
// callback.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// Hierarchy and resource states as reported to the cluster.
const (
	StateOnline    = "online"
	StateOffline   = "offline"
	StateRestoring = "restoring"
	StateRemoving  = "removing"
	StateFailed    = "failed"
	StateFrozen    = "frozen"
	StateUnknown   = "unknown"
	// StateUnmanaged: under maintenance; resources are checked, not acted
	// on (each resource's state is what its last check found).
	StateUnmanaged = state.StateUnmanaged
)

// Desired is what the cluster wants for one hierarchy on this node.
type Desired struct {
	Spec  spec.Hierarchy
	Epoch uint64
	// Gen is the lease generation the assignment was made to: restore and
	// recover run only while this node holds that lease (Config.Authority).
	Gen uint64
	// InService: restore and keep the hierarchy in service here.
	InService bool
	// Frozen: this node lost its lease and quorum_loss_action is keep:
	// leave everything as it is, run no checks and no recovery.
	Frozen bool
	// Unmanaged: maintenance (cluster, node or hierarchy): start, stop
	// and recover nothing, whatever InService says; run every resource's
	// check on its interval and report what runs. When it ends, resources
	// found healthy count as up: a restore here starts only the others,
	// so a service that kept running is adopted, not restarted.
	Unmanaged bool
}

// Report is the engine's account of one hierarchy on this node: the
// report the cluster keeps of it (state.HierarchyReport), with the
// hierarchy's name.
type Report struct {
	Hierarchy string `json:"hierarchy"`
	state.HierarchyReport
}

// Config wires an engine.
type Config struct {
	Node    string
	DataDir string
	Logger  *slog.Logger
	Events  *events.Log
	// Report is called on every state change; it must not block.
	Report func(Report)
	// Lookup finds the kit for a resource type (the agent's kit.Registry;
	// none when nil).
	Lookup func(string) (kit.Kit, bool)
	// AWS gives cloud kits this node's AWS clients.
	AWS kit.AWSProvider
	// Authority bounds an action by this node's lease of generation gen:
	// it fails when the lease is not valid now, and the context it returns
	// ends before the lease does. Restore and recover run under it; nil
	// (tests) means unbounded.
	Authority func(ctx context.Context, gen uint64) (context.Context, context.CancelFunc, error)
	// MaxRestores bounds how many hierarchies this node restores at once
	// (0: DefaultMaxRestores; negative: no bound). The others wait their
	// turn, in the order they asked, reported "restoring"; the wait is not
	// part of any action's timeout. Removes and checks are never held back.
	MaxRestores int
}

// DefaultMaxRestores is Config.MaxRestores' default: enough to keep cloud
// calls overlapping, few enough that a burst of restores (1,000 hierarchies
// assigned in one commit) leaves the agent's lease renewals and raft the
// CPU they need.
const DefaultMaxRestores = 16

// lapseRetry is how soon a restore stopped by a lapsing lease is retried.
const lapseRetry = 20 * time.Millisecond

// ErrNoAuthority marks an action that was not started, or was cut off,
// because this node no longer held its lease.
var ErrNoAuthority = errors.New("no authority to act")

// Engine runs one worker per hierarchy.
type Engine struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	workers map[string]*worker

	// restoreSlots holds a token per hierarchy being restored (nil: no
	// bound).
	restoreSlots chan struct{}
}

// New starts an engine with no hierarchies.
func New(cfg Config) *Engine {
	if cfg.Lookup == nil {
		cfg.Lookup = func(string) (kit.Kit, bool) { return nil, false }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Report == nil {
		cfg.Report = func(Report) {}
	}
	if cfg.MaxRestores == 0 {
		cfg.MaxRestores = DefaultMaxRestores
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{cfg: cfg, ctx: ctx, cancel: cancel, workers: map[string]*worker{}}
	if cfg.MaxRestores > 0 {
		e.restoreSlots = make(chan struct{}, cfg.MaxRestores)
	}
	return e
}

// restoreSlot waits for a turn to restore w's hierarchy (d): it returns
// the function that gives the turn back, or ok false when ctx ended or the
// hierarchy is no longer wanted in service here while it waited.
func (w *worker) restoreSlot(ctx context.Context, d Desired) (release func(), ok bool) {
	slots := w.e.restoreSlots
	if slots == nil {
		return func() {}, true
	}
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, true
	default:
	}
	start := time.Now()
	w.log.Debug("restore waits for a turn", "epoch", d.Epoch, "max_restores", cap(slots))
	woken := false
	defer func() {
		if woken {
			// Hand the wake back to the run loop: the desired state
			// changed while this restore waited, and the loop acts on
			// it once the restore is over.
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}()
	for {
		select {
		case slots <- struct{}{}:
			if waited := time.Since(start); waited > time.Second {
				w.log.Info("restore waited for a turn", "epoch", d.Epoch, "duration", waited, "max_restores", cap(slots))
			}
			return func() { <-slots }, true
		case <-ctx.Done():
			return nil, false
		case <-w.wake:
			woken = true
			if !w.still(d) {
				return nil, false
			}
		}
	}
}

// Update hands the engine the complete desired state. Hierarchies missing
// from the map are wanted out of service here.
func (e *Engine) Update(desired map[string]Desired) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, d := range desired {
		w, ok := e.workers[name]
		if !ok {
			w = newWorker(e, name)
			e.workers[name] = w
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				w.run(e.ctx)
			}()
		}
		w.set(d, true)
	}
	for name, w := range e.workers {
		if _, ok := desired[name]; !ok {
			w.set(Desired{}, false)
		}
	}
}

// Reports returns the current state of every hierarchy known here.
func (e *Engine) Reports() map[string]Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]Report, len(e.workers))
	for n, w := range e.workers {
		w.mu.Lock()
		gone := !w.known
		w.mu.Unlock()
		if r := w.report(); !gone || r.State != StateOffline {
			out[n] = r
		}
	}
	return out
}

// Wait blocks until done holds for the hierarchies' reports (polled every
// 20ms), or ctx ends.
func (e *Engine) Wait(ctx context.Context, done func(map[string]Report) bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if done(e.Reports()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close stops every worker without removing anything.
func (e *Engine) Close() {
	e.cancel()
	e.wg.Wait()
}

func (e *Engine) event(ev events.Event) {
	if e.cfg.Events != nil {
		e.cfg.Events.Add(ev)
	}
}

// worker owns one hierarchy on this node.
type worker struct {
	e    *Engine
	name string
	log  *slog.Logger
	wake chan struct{}

	mu      sync.Mutex
	desired Desired
	known   bool // present in the cluster state
	// assignedAt: when the cluster last asked for the hierarchy in
	// service here (a new epoch in service), for kit.WithAssignedAt.
	assignedAt time.Time
	status     Report
	// interrupt ends the quickcheck in progress: set stops it when the
	// hierarchy is no longer wanted in service here, so that a check that
	// waits on an unreachable API does not delay the removal.
	interrupt context.CancelFunc

	// owned by the run goroutine
	specKey       string
	preparedEpoch uint64 // the epoch whose spec insts were checked against
	specRes       spec.Hierarchy
	insts         map[string]kit.Instance
	up            map[string]bool
	clean         bool // everything known removed
	failedEpoch   uint64
	recoveries    map[string]int
	nextCheck     map[string]time.Time
}

func newWorker(e *Engine, name string) *worker {
	return &worker{
		e: e, name: name, wake: make(chan struct{}, 1),
		log:        e.cfg.Logger.With("hierarchy", name),
		status:     Report{Hierarchy: name, HierarchyReport: state.HierarchyReport{State: StateUnknown}},
		up:         map[string]bool{},
		recoveries: map[string]int{},
		nextCheck:  map[string]time.Time{},
	}
}

func (w *worker) set(d Desired, known bool) {
	w.mu.Lock()
	if known || w.known {
		if known {
			if d.InService && (!w.desired.InService || d.Epoch != w.desired.Epoch) {
				w.assignedAt = time.Now()
			}
			w.desired = d
		} else {
			w.desired.InService = false
			w.desired.Frozen = false
		}
		w.known = known
	}
	if w.interrupt != nil && ((!w.desired.InService && !w.desired.Unmanaged) || w.desired.Frozen) {
		w.interrupt()
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) get() Desired {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.desired
}

func (w *worker) report() Report {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.status
	r.Resources = make(map[string]string, len(w.status.Resources))
	for k, v := range w.status.Resources {
		r.Resources[k] = v
	}
	return r
}

// publish records and reports a state change.
func (w *worker) publish(epoch uint64, st string, res map[string]string, errMsg string) {
	w.mu.Lock()
	changed := w.status.State != st || w.status.Epoch != epoch || w.status.Error != errMsg || !sameMap(w.status.Resources, res)
	w.status = Report{Hierarchy: w.name, HierarchyReport: state.HierarchyReport{Epoch: epoch, State: st, Resources: res, Error: errMsg, At: time.Now()}}
	r := w.status
	w.mu.Unlock()
	if changed {
		w.e.cfg.Report(r)
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		next := w.step(ctx)
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(max(time.Until(next), time.Millisecond))
			timer = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
	}
}

// step does one round of reconciliation and returns when it wants to run
// again (zero: only when woken).
func (w *worker) step(ctx context.Context) time.Time {
	d := w.get()
	switch {
	case d.Frozen:
		w.publish(d.Epoch, StateFrozen, w.resStates(StateFrozen), "lease lost: quorum_loss_action is keep, resources left as they are, no checks or recovery")
		return time.Time{}
	case d.Unmanaged:
		return w.observe(ctx, d)
	case d.InService && d.Epoch == w.failedEpoch:
		return time.Time{}
	case d.InService:
		if err := w.prepare(ctx, d); err != nil {
			w.failedEpoch = d.Epoch
			w.publish(d.Epoch, StateFailed, nil, err.Error())
			return time.Time{}
		}
		if !w.allUp(d.Spec) {
			if w.restore(ctx, d) {
				return time.Now().Add(lapseRetry)
			}
			return w.earliestCheck()
		}
		// Already in service: a new epoch (spec update, start) is
		// confirmed at once.
		w.publish(d.Epoch, StateOnline, w.resStates(""), "")
		return w.monitor(ctx, d)
	default:
		if !w.clean {
			if err := w.prepare(ctx, d); err == nil || w.insts != nil {
				w.removeAll(ctx, d, "out of service here")
			}
		} else if w.report().Epoch != d.Epoch {
			w.publish(d.Epoch, StateOffline, w.resStates(""), "")
		}
		return time.Time{}
	}
}

// prepare (re)creates kit instances when the spec changed.
func (w *worker) prepare(ctx context.Context, d Desired) error {
	// A spec changes only with a new epoch: the same epoch needs no
	// comparison (marshalling every spec on every step was a third of a
	// node's CPU with 1,000 hierarchies).
	if w.insts != nil && d.Epoch != 0 && d.Epoch == w.preparedEpoch {
		return nil
	}
	h := d.Spec
	kb, _ := json.Marshal(h.Resources)
	key := string(kb)
	if w.insts != nil && key == w.specKey {
		w.preparedEpoch = d.Epoch
		return nil
	}
	if len(h.Resources) == 0 {
		return fmt.Errorf("hierarchy %s has no resources", w.name)
	}
	insts := map[string]kit.Instance{}
	for _, r := range h.Resources {
		k, ok := w.e.cfg.Lookup(r.Type)
		if !ok {
			return fmt.Errorf("resource %s: no kit for type %q on node %s", r.Name, r.Type, w.e.cfg.Node)
		}
		inst, err := k.New(r, kit.Env{Node: w.e.cfg.Node, Hierarchy: w.name, DataDir: w.e.cfg.DataDir, Logger: w.log.With("resource", r.Name), AWS: w.e.cfg.AWS})
		if err != nil {
			return fmt.Errorf("resource %s: %w", r.Name, err)
		}
		insts[r.Name] = inst
	}
	// Resources dropped from the spec are taken out of service first
	// (not under maintenance: they are then the operator's).
	if w.insts != nil && !d.Unmanaged {
		old := w.specRes
		order, err := old.RemoveOrder()
		if err != nil {
			order = old.Resources
		}
		for _, r := range order {
			if _, kept := insts[r.Name]; kept || !w.up[r.Name] {
				continue
			}
			_ = w.act(ctx, d, r, kit.OpRemove, w.insts[r.Name].Remove)
			delete(w.up, r.Name)
		}
	}
	w.insts, w.specKey = insts, key
	w.specRes = h
	w.preparedEpoch = d.Epoch
	return nil
}

func (w *worker) allUp(h spec.Hierarchy) bool {
	for _, r := range h.Resources {
		if !w.up[r.Name] {
			return false
		}
	}
	return true
}

func (w *worker) resStates(def string) map[string]string {
	m := map[string]string{}
	for _, r := range w.specRes.Resources {
		if w.up[r.Name] {
			m[r.Name] = StateOnline
		} else {
			m[r.Name] = StateOffline
		}
		if def != "" {
			m[r.Name] = def
		}
	}
	return m
}

// still reports whether the cluster still wants the hierarchy in service
// here. A new epoch that still wants it here (a spec update, a start) does
// not interrupt a restore: the next step confirms the new epoch.
func (w *worker) still(d Desired) bool {
	c := w.get()
	return c.InService && !c.Frozen
}

// authority returns the kit.Authority for d: this node's lease of d's
// generation.
func (w *worker) authority(d Desired) kit.Authority {
	return func(ctx context.Context) (context.Context, context.CancelFunc, error) {
		if w.e.cfg.Authority == nil {
			return ctx, func() {}, nil
		}
		return w.e.cfg.Authority(ctx, d.Gen)
	}
}

// act runs one kit action with events and logs. Restore and recover change
// what the cluster arbitrates, so they start only while this node holds
// the lease the hierarchy was assigned under, checked immediately before
// the call, and their context ends before that lease does. Remove is always
// allowed; the kit bounds any shared step itself (kit.UnderLease).
func (w *worker) act(ctx context.Context, d Desired, r spec.Resource, action string, fn func(context.Context) error) error {
	ctx = kit.WithAuthority(ctx, w.authority(d))
	if action == kit.OpRestore || action == kit.OpRecover {
		lctx, release, err := w.authority(d)(ctx)
		if err != nil {
			w.log.Warn("action not started: no lease", "resource", r.Name, "action", action, "epoch", d.Epoch, "error", err)
			w.e.event(events.Event{Kind: "action", Hierarchy: w.name, Resource: r.Name, Action: action, Phase: "skipped", Epoch: d.Epoch, Error: err.Error()})
			return fmt.Errorf("%w: %v", ErrNoAuthority, err)
		}
		defer release()
		ctx = lctx
	}
	start := time.Now()
	w.e.event(events.Event{Kind: "action", Hierarchy: w.name, Resource: r.Name, Action: action, Phase: "start", Epoch: d.Epoch})
	w.log.Info("action start", "resource", r.Name, "action", action, "epoch", d.Epoch)
	timeout := r.Timeout.D()
	if timeout <= 0 {
		timeout = spec.DefaultActionTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout+time.Second)
	err := fn(actx)
	if err != nil && ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = fmt.Errorf("%w: cut off: %v (%v)", ErrNoAuthority, cause, err)
		}
	}
	cancel()
	dur := time.Since(start)
	ev := events.Event{Kind: "action", Hierarchy: w.name, Resource: r.Name, Action: action, Phase: "end", Epoch: d.Epoch, Duration: dur.Round(time.Microsecond).String()}
	if err != nil {
		ev.Error = err.Error()
		w.log.Error("action failed", "resource", r.Name, "action", action, "epoch", d.Epoch, "duration", dur, "error", err)
	} else {
		w.log.Info("action end", "resource", r.Name, "action", action, "epoch", d.Epoch, "duration", dur)
	}
	w.e.event(ev)
	return err
}

// restore brings the hierarchy into service, children first. It reports
// whether it stopped only because this node's lease is lapsing, to be
// retried shortly.
func (w *worker) restore(ctx context.Context, d Desired) (retry bool) {
	order, err := d.Spec.RestoreOrder()
	if err != nil {
		w.failedEpoch = d.Epoch
		w.publish(d.Epoch, StateFailed, nil, err.Error())
		return false
	}
	w.publish(d.Epoch, StateRestoring, w.resStates(""), "")
	release, ok := w.restoreSlot(ctx, d)
	if !ok {
		return false
	}
	defer release()
	w.clean = false
	w.mu.Lock()
	ctx = kit.WithAssignedAt(ctx, w.assignedAt)
	w.mu.Unlock()
	for _, r := range order {
		if !w.still(d) {
			w.removeAll(ctx, d, "restore interrupted: no longer wanted here")
			return false
		}
		if w.up[r.Name] {
			continue
		}
		err := w.act(ctx, d, r, kit.OpRestore, w.insts[r.Name].Restore)
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, ErrNoAuthority) || errors.Is(err, kit.ErrThrottled) {
			// Not the resource's fault: the lease is lapsing, or the
			// cloud API's request limit (the same on every node) held
			// the action up past its timeout. Leave what is up as it is:
			// either the restore goes on (a renewal came; tokens came,
			// after the hierarchies ahead in the queue), or the lease is
			// lost and the desired state that follows takes the
			// hierarchy out of service here.
			w.publish(d.Epoch, StateRestoring, w.resStates(""), err.Error())
			return true
		}
		if err != nil {
			msg := fmt.Sprintf("restore %s on %s: %v", r.Name, w.e.cfg.Node, err)
			w.removeAll(ctx, d, "restore failed")
			w.failedEpoch = d.Epoch
			w.publish(d.Epoch, StateFailed, w.resStates(""), msg)
			return false
		}
		w.up[r.Name] = true
		w.recoveries[r.Name] = 0
		w.nextCheck[r.Name] = time.Now().Add(r.MonitorInterval.D())
		w.publish(d.Epoch, StateRestoring, w.resStates(""), "")
	}
	w.publish(d.Epoch, StateOnline, w.resStates(""), "")
	return false
}

// removeAll takes every resource out of service, parents first. A failed
// remove is reported but does not stop the others from being removed.
func (w *worker) removeAll(ctx context.Context, d Desired, why string) {
	h := w.specRes
	order, err := h.RemoveOrder()
	if err != nil {
		order = h.Resources
	}
	w.publish(d.Epoch, StateRemoving, w.resStates(""), "")
	var firstErr error
	for _, r := range order {
		inst := w.insts[r.Name]
		if inst == nil {
			continue
		}
		err := w.act(ctx, d, r, kit.OpRemove, inst.Remove)
		if ctx.Err() != nil {
			return
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("remove %s on %s: %w", r.Name, w.e.cfg.Node, err)
		}
		w.up[r.Name] = false
	}
	w.clean = true
	msg := ""
	if firstErr != nil {
		msg = firstErr.Error()
	}
	w.log.Info("hierarchy out of service", "reason", why, "epoch", d.Epoch)
	w.publish(d.Epoch, StateOffline, w.resStates(""), msg)
}

func (w *worker) earliestCheck() time.Time {
	var t time.Time
	for _, r := range w.specRes.Resources {
		n := w.nextCheck[r.Name]
		if w.up[r.Name] && (t.IsZero() || n.Before(t)) {
			t = n
		}
	}
	return t
}

// observe runs, under maintenance, the checks that are due on every
// resource, records what they found and reports it: no restore, remove or
// recovery.
func (w *worker) observe(ctx context.Context, d Desired) time.Time {
	if err := w.prepare(ctx, d); err != nil {
		w.publish(d.Epoch, StateUnmanaged, nil, "maintenance: "+err.Error())
		return time.Time{}
	}
	order, _ := d.Spec.RestoreOrder()
	if order == nil {
		order = d.Spec.Resources
	}
	res := map[string]string{}
	var errs []string
	next := time.Time{}
	for _, r := range order {
		due := w.nextCheck[r.Name]
		if !time.Now().Before(due) {
			timeout := r.Timeout.D()
			if timeout <= 0 {
				timeout = spec.DefaultActionTimeout
			}
			cctx, cancel := context.WithTimeout(ctx, timeout+time.Second)
			w.mu.Lock()
			w.interrupt = cancel
			w.mu.Unlock()
			h, err := w.insts[r.Name].QuickCheck(cctx)
			w.mu.Lock()
			w.interrupt = nil
			w.mu.Unlock()
			cancel()
			if ctx.Err() != nil {
				return time.Time{}
			}
			if c := w.get(); !c.Unmanaged || c.Frozen {
				return time.Now() // maintenance ended meanwhile
			}
			switch h {
			case kit.Healthy:
				w.up[r.Name] = true
			case kit.Failed:
				w.up[r.Name] = false
			}
			if err != nil && h != kit.Healthy {
				errs = append(errs, r.Name+": "+err.Error())
			}
			due = time.Now().Add(r.MonitorInterval.D())
			w.nextCheck[r.Name] = due
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
		res[r.Name] = StateOffline
		if w.up[r.Name] {
			res[r.Name] = StateOnline
			w.clean = false // something runs here: a later removal must act
		}
	}
	w.failedEpoch = 0 // the cluster's wish is acted on afresh afterwards
	msg := ""
	if len(errs) > 0 {
		msg = strings.Join(errs, "; ")
	}
	w.publish(d.Epoch, StateUnmanaged, res, msg)
	return next
}

// monitor runs the quickChecks that are due and local recovery.
func (w *worker) monitor(ctx context.Context, d Desired) time.Time {
	now := time.Now()
	order, _ := d.Spec.RestoreOrder()
	for _, r := range order {
		if now.Before(w.nextCheck[r.Name]) {
			continue
		}
		if !w.still(d) {
			return time.Now()
		}
		inst := w.insts[r.Name]
		timeout := r.Timeout.D()
		cctx, cancel := context.WithTimeout(ctx, timeout+time.Second)
		w.mu.Lock()
		w.interrupt = cancel
		w.mu.Unlock()
		start := time.Now()
		h, err := inst.QuickCheck(cctx)
		w.mu.Lock()
		w.interrupt = nil
		w.mu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return time.Time{}
		}
		if !w.still(d) {
			// No longer wanted here (the check may have been cut short):
			// its answer decides nothing.
			return time.Now()
		}
		w.nextCheck[r.Name] = time.Now().Add(r.MonitorInterval.D())
		switch h {
		case kit.Healthy:
			w.recoveries[r.Name] = 0
			continue
		case kit.Unknown:
			msg := "check could not tell; resource stays in service, retrying"
			if err != nil {
				msg = err.Error()
			}
			w.log.Warn("quickcheck unknown", "resource", r.Name, "epoch", d.Epoch, "duration", time.Since(start), "error", msg)
			w.e.event(events.Event{Kind: "action", Hierarchy: w.name, Resource: r.Name, Action: kit.OpQuickCheck, Phase: "end", Epoch: d.Epoch, Duration: time.Since(start).Round(time.Microsecond).String(), Message: "unknown", Error: msg})
			continue
		}
		errMsg := "check failed"
		if err != nil {
			errMsg = err.Error()
		}
		w.log.Warn("quickcheck failed", "resource", r.Name, "epoch", d.Epoch, "error", errMsg)
		w.e.event(events.Event{Kind: "action", Hierarchy: w.name, Resource: r.Name, Action: kit.OpQuickCheck, Phase: "end", Epoch: d.Epoch, Duration: time.Since(start).Round(time.Microsecond).String(), Message: "failed", Error: errMsg})
		limit := 0
		if r.LocalRecovery != nil {
			limit = *r.LocalRecovery
		}
		if w.recoveries[r.Name] < limit {
			w.recoveries[r.Name]++
			w.e.event(events.Event{Kind: "action", Hierarchy: w.name, Resource: r.Name, Action: kit.OpRecover, Epoch: d.Epoch, Message: fmt.Sprintf("local recovery %d of %d", w.recoveries[r.Name], limit)})
			err := w.act(ctx, d, r, kit.OpRecover, inst.Recover)
			if errors.Is(err, ErrNoAuthority) {
				// The lease lapsed: no recovery; the desired state that
				// follows takes the hierarchy out of service here.
				w.recoveries[r.Name]--
				return time.Now().Add(r.MonitorInterval.D())
			}
			if err == nil {
				w.nextCheck[r.Name] = time.Now().Add(r.MonitorInterval.D())
				continue
			}
			// a failed recovery counts as an attempt; check again soon
			w.nextCheck[r.Name] = time.Now().Add(r.MonitorInterval.D())
			continue
		}
		msg := fmt.Sprintf("resource %s on %s failed its check and %d local recovery attempts: %s", r.Name, w.e.cfg.Node, limit, errMsg)
		w.e.event(events.Event{Kind: "failover", Hierarchy: w.name, Resource: r.Name, Action: "give-up", Epoch: d.Epoch, Error: msg})
		w.removeAll(ctx, d, "local recovery exhausted")
		w.failedEpoch = d.Epoch
		w.publish(d.Epoch, StateFailed, w.resStates(""), msg)
		return time.Time{}
	}
	return w.earliestCheck()
}
