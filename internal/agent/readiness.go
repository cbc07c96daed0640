package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/probe"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
	"github.com/lifeboat-ha/lifeboat/internal/watchdog"
)

// awsProvider builds this agent's AWS clients once, from its own config.
type awsProvider struct {
	settings awsapi.Settings
	mu       sync.Mutex
	clients  *awsapi.Clients
}

func (p *awsProvider) get(ctx context.Context) (*awsapi.Clients, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.clients != nil {
		return p.clients, nil
	}
	c, err := awsapi.New(ctx, p.settings)
	if err != nil {
		return nil, err
	}
	p.clients = c
	return c, nil
}

// readiness proves, for every hierarchy this node could run, that it could
// take it over now: each resource's readiness probe (dry runs for the cloud
// kits). Results go to the cluster state when they change.
//
// One scheduler (probe.Scheduler) decides when each hierarchy is proven:
// all of them at start, after the join and on a refresh, one whose spec
// changed at once;
// then each once per readiness_interval, the probes spread evenly over it;
// a NOT READY one again after notReadyRetry, with fresh answers. The
// probes' AWS calls go through a budget (aws.readiness_calls_per_minute)
// and a store of answers that probes of other hierarchies making the same
// call on the same resource share while they are fresh (one interval).
// When the budget cannot cover every hierarchy each interval, probes wait
// for it and the period stretches: each verdict carries when the oldest
// answer it relied on was got (At), and the node's pace says why
// (state.ReadinessPace). Only readiness uses the budget: the engine's
// restores use the node's clients directly and never wait for a probe.
//
// Right after the agent starts (an upgraded binary, perhaps, with needs its
// role does not meet), what the cluster state says about this node's
// readiness is the previous process's answer. So the first round runs at
// once and is committed as soon as it is done, and until then the engine
// does not take over a hierarchy it does not run already (mayTakeOver):
// an upgraded standby that lacks a permission is NOT READY before it can
// be handed anything, not at the next failover. The gate is bounded: a
// first round that takes longer than firstRoundBound (AWS unreachable)
// releases it, with a log line and an event, and placement's existing
// rules decide (a NOT READY node is still chosen when no node is READY).
type readiness struct {
	a    *Agent
	wake chan refreshRequest
	// hurry tells the loop, while a probe of its own is in flight (it may
	// be waiting for the budget for many seconds), that a refresh is
	// coming: that probe gives way and is taken up again after it.
	hurry chan struct{}
	mu    sync.Mutex
	// last: the verdicts as last committed (or tried).
	last map[string]cluster.Readiness

	// open: a round that started after this node had joined the cluster
	// (its state had caught up to its own join) is done.
	open   atomic.Bool
	gateMu sync.Mutex
	// proven: hierarchies a completed round of this process covered, or
	// that the bound released.
	proven map[string]bool
	// held: when the engine was first kept from taking a hierarchy over.
	held map[string]time.Time
	now  func() time.Time

	// The pacing.
	budget *probe.Budget
	// operatorPace paces the AWS calls of the doctor runs an operator
	// waits for: they do not queue behind the budget (which still counts
	// them), and a burst of them stays gentle on the account's API rate.
	operatorPace *probe.Budget
	shared       *probe.Shared
	meterMu      sync.Mutex
	base         *awsapi.Clients // the node's clients ...
	metered      *awsapi.Clients // ... and the same counted against the budget
	paceMu       sync.Mutex
	pace         state.ReadinessPace
}

// refreshRequest asks for names (nil: every hierarchy) to be proven now,
// with fresh answers; reply gets every verdict once they are.
type refreshRequest struct {
	names []string
	reply chan map[string]cluster.Readiness
}

// notReadyRetry is how soon a NOT READY node proves itself again.
const notReadyRetry = 3 * time.Second

// firstRoundBound is how long the engine waits for the first readiness
// round before it takes over a hierarchy unproven (a variable for tests).
var firstRoundBound = 5 * time.Second

// operatorCallsPerMinute paces an operator's doctor runs on one node: a
// burst of 20 calls, then about five a second.
const operatorCallsPerMinute = 300

func newReadiness(a *Agent) *readiness {
	interval, perMinute := 5*time.Minute, 0
	if a.cfg != nil {
		interval, perMinute = a.cfg.ReadinessInterval.D(), a.cfg.AWS.ReadinessCallsPerMinute
	}
	budget := probe.NewBudget(probe.Real, perMinute)
	return &readiness{a: a, wake: make(chan refreshRequest), hurry: make(chan struct{}, 1),
		proven: map[string]bool{}, held: map[string]time.Time{}, now: time.Now,
		budget: budget, shared: probe.NewShared(budget, interval),
		operatorPace: probe.NewBudget(probe.Real, operatorCallsPerMinute)}
}

// mayTakeOver reports whether the engine may bring hierarchy name into
// service here: once this process's first readiness round is done (or one
// covered name), or once it has been held back for firstRoundBound. It is
// called inside a view of the cluster state and must not read it.
func (r *readiness) mayTakeOver(name string) bool {
	if r.open.Load() {
		return true
	}
	r.gateMu.Lock()
	defer r.gateMu.Unlock()
	if r.proven[name] {
		return true
	}
	now := r.now()
	since, ok := r.held[name]
	if !ok {
		r.held[name] = now
		r.a.log.Info("taking over waits for the first readiness round", "hierarchy", name)
		return false
	}
	if now.Sub(since) < firstRoundBound {
		return false
	}
	r.proven[name] = true
	msg := fmt.Sprintf("the first readiness round is not done after %s (is AWS reachable?): taking %s over without it", firstRoundBound, name)
	r.a.log.Warn("readiness gate released", "hierarchy", name, "waited", now.Sub(since).Round(time.Millisecond))
	r.a.events.Add(events.Event{Kind: "readiness", Hierarchy: name, Action: "gate", Error: msg})
	return true
}

// roundDone records a completed round over names; afterJoin opens the gate
// for every hierarchy.
func (r *readiness) roundDone(names []string, afterJoin bool, took time.Duration) {
	r.gateMu.Lock()
	for _, n := range names {
		r.proven[n] = true
	}
	r.gateMu.Unlock()
	if afterJoin && !r.open.Swap(true) {
		r.a.log.Info("first readiness round done", "hierarchies", len(names), "duration", took.Round(time.Millisecond))
	}
}

// joined reports whether this node's state has caught up to its own
// current join: every hierarchy that existed then is in view.
func (r *readiness) joined() bool {
	gen, _ := r.a.c.Leases.Current()
	if gen == 0 {
		return false
	}
	ok := false
	r.a.c.FSM.View(func(s *cluster.State) {
		n := s.Nodes[r.a.cfg.Node]
		ok = n != nil && n.Gen == gen
	})
	return ok
}

// flushEvery bounds how long changed verdicts wait for their commit while
// the scheduler is busy (a long round held back by the budget).
const flushEvery = 2 * time.Second

// clients is the AWS provider of the probes: the node's clients, with
// every request counted against the budget.
func (r *readiness) clients(ctx context.Context) (*awsapi.Clients, error) {
	c, err := r.a.aws.get(ctx)
	if err != nil {
		return nil, err
	}
	r.meterMu.Lock()
	defer r.meterMu.Unlock()
	if r.base != c {
		r.base, r.metered = c, c.Metered(r.budget.Spend)
	}
	return r.metered, nil
}

// round is the hierarchies proven since the scheduler was last idle (or
// last covered every hierarchy).
type round struct {
	proven map[string]bool
	start  time.Time
	joined bool
}

// run probes at start, on every turn the scheduler hands out, when the
// specs this node could run change, and when asked (Refresh).
func (r *readiness) run(ctx context.Context) {
	interval := r.a.cfg.ReadinessInterval.D()
	if r.a.self.Witness {
		r.roundDone(nil, true, 0)
		for {
			select {
			case <-ctx.Done():
				return
			case req := <-r.wake:
				req.reply <- nil
			}
		}
	}
	sched := probe.NewScheduler(interval, notReadyRetry)
	specs := map[string]spec.Hierarchy{}
	verdicts := map[string]cluster.Readiness{}
	var specKey string
	var waiting []pendingRefresh
	var cur round
	joinProbed := false
	pace := newPaceMeter(r.budget, interval)
	lastFlush := time.Now()
	// sync reads the hierarchies this node could run: a new one, or one
	// whose spec changed, is due now.
	encoded := map[string]string{}
	var specGen uint64
	synced := false
	sync := func() {
		// Under the FSM's generation of specs, nothing to compare: most
		// changes of the state are assignments and reports.
		gen := r.a.c.FSM.SpecGen()
		if synced && gen == specGen {
			return
		}
		synced, specGen = true, gen
		key := r.mySpecKey()
		if key == specKey {
			return
		}
		specKey = key
		clear(specs)
		var names, changed []string
		r.a.c.FSM.View(func(s *cluster.State) {
			for _, name := range s.HierarchyNames() {
				if h := s.Hierarchies[name]; h.Priority(r.a.cfg.Node) >= 0 {
					specs[name] = h
					names = append(names, name)
					if enc := string(encodeJSON(h)); encoded[name] != enc {
						encoded[name] = enc
						changed = append(changed, name)
					}
				}
			}
		})
		for name := range encoded {
			if _, ok := specs[name]; !ok {
				delete(encoded, name)
			}
		}
		for name := range verdicts {
			if _, ok := specs[name]; !ok {
				delete(verdicts, name)
			}
		}
		pace.forget(specs)
		now := time.Now()
		sched.Sync(names, now)
		sched.Reschedule(changed, now)
	}
	// onFSM follows a change of the state: the specs, and until the first
	// round after the join is done, the join itself (the gate waits on
	// it).
	fsmC := r.a.c.FSM.Changed()
	onFSM := func() {
		fsmC = r.a.c.FSM.Changed()
		sync()
		if !r.open.Load() && r.joined() && !joinProbed {
			joinProbed = true
			sched.All(time.Now(), false)
		}
	}
	// ask puts a refresh first in line; it is answered once the names it
	// asked for are proven.
	ask := func(req refreshRequest) {
		select {
		case <-r.hurry: // this request's, if the loop was idle
		default:
		}
		sync()
		names := req.names
		if names == nil {
			names = spec.SortedKeys(specs)
		}
		left := map[string]bool{}
		for _, n := range names {
			if _, ok := specs[n]; ok {
				left[n] = true
			}
		}
		sched.Hurry(names, time.Now())
		waiting = append(waiting, pendingRefresh{req: req, left: left})
	}
	// answer replies to the refreshes whose names are all proven (all of
	// them when every is true).
	answer := func(every bool) {
		var kept []pendingRefresh
		var out map[string]cluster.Readiness
		for _, w := range waiting {
			if len(w.left) > 0 && !every {
				kept = append(kept, w)
				continue
			}
			if out == nil {
				r.flush(ctx, verdicts, pace.report(), false)
				lastFlush = time.Now()
				out = maps.Clone(verdicts)
			}
			w.req.reply <- out
		}
		waiting = kept
	}
	sync()
	for {
		if ctx.Err() != nil {
			return
		}
		// Events first, without waiting: a refresh or a spec change must
		// not wait for turns the budget holds back.
		select {
		case req := <-r.wake:
			ask(req)
			continue
		case <-fsmC:
			onFSM()
			continue
		default:
		}
		now := time.Now()
		if due := sched.Due(now); len(due) > 0 {
			t := due[0]
			if cur.start.IsZero() {
				cur = round{start: now, joined: r.joined(), proven: map[string]bool{}}
			}
			h, ok := specs[t.Name]
			if !ok {
				sched.Sync(spec.SortedKeys(specs), now)
				continue
			}
			r.shared.Stretch(sched.Period(now))
			rd, preempted := r.proveTurn(ctx, h, t, verdicts[t.Name])
			if ctx.Err() != nil {
				return
			}
			if preempted {
				continue // still due: taken up after the refresh
			}
			done := time.Now()
			verdicts[t.Name] = rd
			var late time.Duration
			if !t.Due.IsZero() { // zero: a refresh's, first in line
				late = done.Sub(t.Due)
			}
			pace.proven(t, done, late)
			sched.Done(t.Name, done, rd.Ready)
			cur.proven[t.Name] = true
			if t.Due.IsZero() {
				for _, w := range waiting {
					delete(w.left, t.Name)
				}
				answer(false)
			}
			if len(cur.proven) >= len(specs) {
				// Every hierarchy proven once: a round, even while
				// the budget keeps the scheduler busy.
				r.flush(ctx, verdicts, pace.report(), false)
				lastFlush = time.Now()
				r.roundDone(spec.SortedKeys(cur.proven), cur.joined, time.Since(cur.start))
				cur = round{}
			}
			if time.Since(lastFlush) >= flushEvery {
				r.flush(ctx, verdicts, pace.report(), false)
				lastFlush = time.Now()
			}
			continue
		}
		// Idle: commit what changed, close the round, answer refreshes.
		r.flush(ctx, verdicts, pace.report(), false)
		lastFlush = time.Now()
		if !cur.start.IsZero() {
			r.roundDone(spec.SortedKeys(cur.proven), cur.joined, time.Since(cur.start))
			cur = round{}
		}
		answer(true)
		var timer <-chan time.Time
		if t, ok := sched.Next(); ok {
			timer = time.After(time.Until(t.Due))
		}
		select {
		case <-ctx.Done():
			return
		case <-timer:
		case req := <-r.wake:
			ask(req)
		case <-fsmC:
			onFSM()
		}
	}
}

// pendingRefresh is a refresh waiting for the names left to be proven.
type pendingRefresh struct {
	req  refreshRequest
	left map[string]bool
}

// proveOne runs h's probes for turn t (prev: its last verdict).
// errPreempted ends a scheduled probe that gives way to a refresh.
var errPreempted = errors.New("a refresh comes first")

// proveTurn proves one turn. A scheduled turn gives way to a refresh that
// arrives meanwhile (preempted: nothing was proven, the turn stays due); a
// refresh's own turn (an operator waits: a switchover to this node, status
// --refresh) is paced on its own, not held back by the budget, which
// still counts its calls.
func (r *readiness) proveTurn(ctx context.Context, h spec.Hierarchy, t probe.Turn, prev cluster.Readiness) (rd cluster.Readiness, preempted bool) {
	if t.Due.IsZero() {
		return r.proveOne(ctx, h, t, prev, r.operatorPace), false
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-r.hurry:
			cancel(errPreempted)
		case <-stop:
		}
	}()
	rd = r.proveOne(pctx, h, t, prev, r.budget)
	return rd, errors.Is(context.Cause(pctx), errPreempted)
}

// proveOne proves one hierarchy, its calls waiting for pace.
func (r *readiness) proveOne(ctx context.Context, h spec.Hierarchy, t probe.Turn, prev cluster.Readiness, pace *probe.Budget) cluster.Readiness {
	calls := r.shared.ViewPaced(t.NotBefore, pace)
	elsewhere := r.servedElsewhere(h.Name)
	rd, unknown := r.probeHierarchy(ctx, h, elsewhere, calls)
	if !rd.Ready && !elsewhere && r.servedElsewhere(h.Name) {
		// It was placed on another node while the probes ran: what
		// they saw may be that node taking it over. Probe again,
		// expecting it there.
		calls = r.shared.ViewPaced(time.Now(), pace)
		rd, unknown = r.probeHierarchy(ctx, h, true, calls)
	}
	if unknown && !prev.At.IsZero() {
		// The probe could not tell: keep the last definite answer.
		return prev
	}
	// The verdict is as old as the oldest answer it relied on.
	if at := calls.Oldest(); !at.IsZero() && at.Before(rd.At) {
		rd.At = at.UTC()
	}
	return rd
}

// flush commits the verdicts when any changed, or when the committed
// proofs are an interval old (so that status shows how old they are),
// with the node's pace.
func (r *readiness) flush(ctx context.Context, verdicts map[string]cluster.Readiness, pace state.ReadinessPace, force bool) {
	r.paceMu.Lock()
	prevPace := r.pace
	r.pace = pace
	r.paceMu.Unlock()
	r.mu.Lock()
	last := r.last
	r.mu.Unlock()
	changed := !sameReadiness(last, verdicts)
	stale := false
	if !changed {
		interval := r.a.cfg.ReadinessInterval.D()
		for name, rd := range verdicts {
			if l := last[name]; rd.At.Sub(l.At) >= interval {
				stale = true
				break
			}
		}
	}
	if !changed && !stale && !force && prevPace.BudgetBound == pace.BudgetBound {
		return
	}
	out := maps.Clone(verdicts)
	if changed {
		for _, name := range spec.SortedKeys(out) {
			rd, l := out[name], last[name]
			if l.At.IsZero() || rd.Ready != l.Ready || rd.Reason != l.Reason || !reflect.DeepEqual(rd.Missing, l.Missing) {
				if !rd.Ready {
					r.a.log.Warn("NOT READY", "hierarchy", name, "missing", strings.Join(rd.Missing, ","), "reason", rd.Reason)
					r.a.events.Add(events.Event{Kind: "readiness", Hierarchy: name, Action: "probe", Error: "NOT READY: " + rd.Reason})
				} else {
					r.a.events.Add(events.Event{Kind: "readiness", Hierarchy: name, Action: "probe", Message: "READY"})
				}
			}
		}
	}
	if pace.BudgetBound && !prevPace.BudgetBound {
		r.a.log.Warn("readiness held back by the AWS call budget", "budget_per_minute", pace.BudgetPerMinute,
			"period", (time.Duration(pace.PeriodMS) * time.Millisecond).Round(time.Second), "interval", r.a.cfg.ReadinessInterval.D())
	}
	r.mu.Lock()
	r.last = out
	r.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.a.submit(sctx, cluster.SetReadiness{Node: r.a.cfg.Node, Readiness: out, Pace: &pace}); err != nil {
		r.a.log.Warn("report readiness", "error", err)
		r.mu.Lock()
		r.last = nil // try again next time
		r.mu.Unlock()
	}
}

// Pace returns how this node's probes keep up, as last reported.
func (r *readiness) Pace() state.ReadinessPace {
	r.paceMu.Lock()
	defer r.paceMu.Unlock()
	return r.pace
}

func (r *readiness) mySpecKey() string {
	var b strings.Builder
	r.a.c.FSM.View(func(s *cluster.State) {
		for _, name := range s.HierarchyNames() {
			h := s.Hierarchies[name]
			if h.Priority(r.a.cfg.Node) >= 0 {
				b.Write(encodeJSON(h))
			}
		}
	})
	return b.String()
}

// Refresh proves every hierarchy now and returns the result.
func (r *readiness) Refresh(ctx context.Context) (map[string]cluster.Readiness, error) {
	// Concurrent callers (peers' refreshAll, several at once) share one
	// round (fanout.go).
	return shared(ctx, r.a, r.a.localRuns, "readiness round", time.Minute, func(ctx context.Context) (map[string]cluster.Readiness, error) {
		return r.refreshNow(ctx, nil)
	})
}

// RefreshOne proves one hierarchy now (a switchover to this node) and
// returns every verdict.
func (r *readiness) RefreshOne(ctx context.Context, name string) (map[string]cluster.Readiness, error) {
	return shared(ctx, r.a, r.a.localRuns, "readiness of "+name, time.Minute, func(ctx context.Context) (map[string]cluster.Readiness, error) {
		return r.refreshNow(ctx, []string{name})
	})
}

func (r *readiness) refreshNow(ctx context.Context, names []string) (map[string]cluster.Readiness, error) {
	req := refreshRequest{names: names, reply: make(chan map[string]cluster.Readiness, 1)}
	select {
	case r.hurry <- struct{}{}:
	default: // one is pending already
	}
	select {
	case r.wake <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-req.reply:
		return res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// servedElsewhere reports whether the hierarchy is in service on another
// node now.
func (r *readiness) servedElsewhere(name string) bool {
	yes := false
	r.a.c.FSM.View(func(s *cluster.State) {
		as := s.Assignments[name]
		yes = as != nil && as.Online && as.Node != "" && as.Node != r.a.cfg.Node
	})
	return yes
}

func sameReadiness(a, b map[string]cluster.Readiness) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x.Ready != y.Ready || x.Reason != y.Reason || !reflect.DeepEqual(x.Missing, y.Missing) {
			return false
		}
	}
	return true
}

// probeHierarchy runs the probes of h's resources, their cloud calls
// through calls; unknown reports that some probe could not tell and none
// gave a definite "not ready".
func (r *readiness) probeHierarchy(ctx context.Context, h spec.Hierarchy, servedElsewhere bool, calls kit.ProbeCalls) (res cluster.Readiness, unknown bool) {
	res = cluster.Readiness{Ready: true, At: time.Now().UTC()}
	var reasons []string
	missing := map[string]bool{}
	for _, rs := range h.Resources {
		k, ok := r.a.kits.Lookup(rs.Type)
		if !ok {
			res.Ready = false
			reasons = append(reasons, fmt.Sprintf("%s: no kit for type %q", rs.Name, rs.Type))
			continue
		}
		inst, err := k.New(rs, kit.Env{Node: r.a.cfg.Node, Hierarchy: h.Name, DataDir: r.a.cfg.DataDir, Logger: r.a.log.With("hierarchy", h.Name, "resource", rs.Name), AWS: r.clients, ServedElsewhere: servedElsewhere, Probes: calls})
		if err != nil {
			res.Ready = false
			reasons = append(reasons, fmt.Sprintf("%s: %v", rs.Name, err))
			continue
		}
		p, ok := inst.(kit.ReadinessProber)
		if !ok {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, r.probeTimeout())
		rd := p.Ready(pctx)
		cancel()
		if rd.Unknown {
			unknown = true
			continue
		}
		if !rd.Ready {
			res.Ready = false
			for _, m := range rd.Missing {
				missing[m] = true
			}
			reasons = append(reasons, fmt.Sprintf("%s: %s", rs.Name, rd.Reason))
		}
	}
	// A configured watchdog that cannot be used is no protection: a node
	// that would restore local addresses without it is not ready for them.
	if wd := r.a.cfg.Watchdog.Device; wd != "" && nodeFenced(r.a.kits, h) && !r.a.wd.dev.Armed() {
		if err := watchdog.Check(wd); err != nil {
			res.Ready = false
			reasons = append(reasons, err.Error())
		}
	}
	for m := range missing {
		res.Missing = append(res.Missing, m)
	}
	sort.Strings(res.Missing)
	res.Reason = strings.Join(reasons, "; ")
	return res, unknown && res.Ready
}

// refreshNode makes node prove its readiness now (for hierarchy alone,
// unless it is "") and returns every verdict. An older node proves every
// hierarchy.
func (a *Agent) refreshNode(ctx context.Context, node, hierarchy string) (map[string]cluster.Readiness, error) {
	if node == a.cfg.Node {
		if hierarchy != "" {
			return a.ready.RefreshOne(ctx, hierarchy)
		}
		return a.ready.Refresh(ctx)
	}
	c, ok := a.rpc.slow(node)
	if !ok {
		return nil, fmt.Errorf("unknown node %q", node)
	}
	var out map[string]cluster.Readiness
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	path := "/v1/internal/readiness/refresh"
	if hierarchy != "" {
		path += "?hierarchy=" + url.QueryEscape(hierarchy)
	}
	if err := c.Do(rctx, "POST", path, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// refreshAll makes every reachable resource node prove its readiness now
// (lifeboat status --refresh) and waits until the results are committed.
// Concurrent callers share one run (fanout.go).
func (a *Agent) refreshAll(ctx context.Context) {
	_, _ = shared(ctx, a, a.fanouts, "refresh readiness on every node", 70*time.Second, func(ctx context.Context) (struct{}, error) {
		a.refreshEveryNode(ctx)
		return struct{}{}, nil
	})
	// The results were committed through the leader; wait (briefly) until
	// this node's copy of the state has them.
	_ = a.waitFor(ctx, 2*time.Second, func(s *cluster.State) (bool, error) { return s.Index >= a.c.Raft.CommitIndex(), nil })
}

func (a *Agent) refreshEveryNode(ctx context.Context) {
	var wg sync.WaitGroup
	for _, n := range a.c.MemberList() {
		if n.Witness {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.refreshNode(ctx, n.Name, ""); err != nil {
				a.log.Debug("refresh readiness", "peer", n.Name, "error", err)
			}
		}()
	}
	wg.Wait()
}
