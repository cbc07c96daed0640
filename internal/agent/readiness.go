package agent

import (
	"context"
	"fmt"
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
	"github.com/lifeboat-ha/lifeboat/internal/spec"
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
	a       *Agent
	wake    chan chan map[string]cluster.Readiness
	mu      sync.Mutex
	last    map[string]cluster.Readiness
	specKey string

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
}

// notReadyRetry is how soon a NOT READY node proves itself again.
const notReadyRetry = 3 * time.Second

// firstRoundBound is how long the engine waits for the first readiness
// round before it takes over a hierarchy unproven (a variable for tests).
var firstRoundBound = 5 * time.Second

func newReadiness(a *Agent) *readiness {
	return &readiness{a: a, wake: make(chan chan map[string]cluster.Readiness),
		proven: map[string]bool{}, held: map[string]time.Time{}, now: time.Now}
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

// run probes at start, on every interval, when the specs this node could
// run change, and when asked (Refresh).
func (r *readiness) run(ctx context.Context) {
	interval := r.a.cfg.ReadinessInterval.D()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var reply chan map[string]cluster.Readiness
	for {
		res := r.probe(ctx)
		if reply != nil {
			reply <- res
			reply = nil
		}
		// A node NOT READY proves itself again soon (every few seconds)
		// rather than at the next interval: many causes pass (a permission
		// granted, an address that was moving while the probe ran).
		var again <-chan time.Time
		for _, rd := range res {
			if !rd.Ready {
				again = time.After(min(interval, notReadyRetry))
				break
			}
		}
	wait:
		for {
			fsmC := r.a.c.FSM.Changed()
			select {
			case <-ctx.Done():
				return
			case <-again:
				break wait
			case <-tick.C:
				break wait
			case reply = <-r.wake:
				break wait
			case <-fsmC:
				// Until the first round after the join is done, the
				// join itself is a reason to probe: the gate waits on it.
				if r.mySpecKey() != r.currentKey() || (!r.open.Load() && r.joined()) {
					break wait
				}
			}
		}
	}
}

func (r *readiness) currentKey() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.specKey
}

// mySpecKey identifies the specs of the hierarchies this node may run.
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

// Refresh probes now and returns the result.
func (r *readiness) Refresh(ctx context.Context) (map[string]cluster.Readiness, error) {
	// Concurrent callers (peers' refreshAll, several at once) share one
	// round (fanout.go).
	return shared(ctx, r.a, r.a.localRuns, "readiness round", time.Minute, r.refreshNow)
}

func (r *readiness) refreshNow(ctx context.Context) (map[string]cluster.Readiness, error) {
	reply := make(chan map[string]cluster.Readiness, 1)
	select {
	case r.wake <- reply:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-reply:
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

func (r *readiness) probe(ctx context.Context) map[string]cluster.Readiness {
	if r.a.self.Witness {
		r.roundDone(nil, true, 0)
		return nil
	}
	start := time.Now()
	afterJoin := r.joined()
	key := r.mySpecKey()
	var hs []spec.Hierarchy
	elsewhere := map[string]bool{}
	r.a.c.FSM.View(func(s *cluster.State) {
		for _, name := range s.HierarchyNames() {
			if h := s.Hierarchies[name]; h.Priority(r.a.cfg.Node) >= 0 {
				hs = append(hs, h)
				as := s.Assignments[name]
				elsewhere[name] = as != nil && as.Online && as.Node != "" && as.Node != r.a.cfg.Node
			}
		}
	})
	out := map[string]cluster.Readiness{}
	r.mu.Lock()
	prev := r.last
	r.mu.Unlock()
	for _, h := range hs {
		rd, unknown := r.probeHierarchy(ctx, h, elsewhere[h.Name])
		if !rd.Ready && !elsewhere[h.Name] && r.servedElsewhere(h.Name) {
			// It was placed on another node while the probes ran: what
			// they saw may be that node taking it over. Probe again,
			// expecting it there.
			rd, unknown = r.probeHierarchy(ctx, h, true)
		}
		if unknown {
			// The probe could not tell: keep the last definite answer.
			if p, ok := prev[h.Name]; ok {
				rd = p
			}
		}
		out[h.Name] = rd
	}
	r.mu.Lock()
	changed := !sameReadiness(r.last, out)
	r.last, r.specKey = out, key
	r.mu.Unlock()
	if changed {
		for name, rd := range out {
			if !rd.Ready {
				r.a.log.Warn("NOT READY", "hierarchy", name, "missing", strings.Join(rd.Missing, ","), "reason", rd.Reason)
				r.a.events.Add(events.Event{Kind: "readiness", Hierarchy: name, Action: "probe", Error: "NOT READY: " + rd.Reason})
			} else {
				r.a.events.Add(events.Event{Kind: "readiness", Hierarchy: name, Action: "probe", Message: "READY"})
			}
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := r.a.submit(sctx, cluster.SetReadiness{Node: r.a.cfg.Node, Readiness: out}); err != nil {
			r.a.log.Warn("report readiness", "error", err)
			r.mu.Lock()
			r.last = nil // try again next time
			r.mu.Unlock()
		}
		cancel()
	}
	// Committed (or tried): the engine may now take these over.
	r.roundDone(spec.SortedKeys(out), afterJoin, time.Since(start))
	return out
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

// probeHierarchy runs the probes of h's resources; unknown reports that
// some probe could not tell and none gave a definite "not ready".
func (r *readiness) probeHierarchy(ctx context.Context, h spec.Hierarchy, servedElsewhere bool) (res cluster.Readiness, unknown bool) {
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
		inst, err := k.New(rs, kit.Env{Node: r.a.cfg.Node, Hierarchy: h.Name, DataDir: r.a.cfg.DataDir, Logger: r.a.log.With("hierarchy", h.Name, "resource", rs.Name), AWS: r.a.aws.get, ServedElsewhere: servedElsewhere})
		if err != nil {
			res.Ready = false
			reasons = append(reasons, fmt.Sprintf("%s: %v", rs.Name, err))
			continue
		}
		p, ok := inst.(kit.ReadinessProber)
		if !ok {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
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

// refreshNode makes node prove its readiness now and returns the result.
func (a *Agent) refreshNode(ctx context.Context, node string) (map[string]cluster.Readiness, error) {
	if node == a.cfg.Node {
		return a.ready.Refresh(ctx)
	}
	c, ok := a.rpc.slow(node)
	if !ok {
		return nil, fmt.Errorf("unknown node %q", node)
	}
	var out map[string]cluster.Readiness
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.Do(rctx, "POST", "/v1/internal/readiness/refresh", nil, &out); err != nil {
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
			if _, err := a.refreshNode(ctx, n.Name); err != nil {
				a.log.Debug("refresh readiness", "peer", n.Name, "error", err)
			}
		}()
	}
	wg.Wait()
}
