// Package agent wires one lifeboat node: the replicated cluster state, the
// quorum leases, placement on the leader, the engine that runs this node's
// share of the hierarchies, and the HTTP API. Data flows one way: API ->
// cluster state -> placement -> engine -> kits; status flows back through
// the cluster state.
package agent

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/auth"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/console"
	"github.com/lifeboat-ha/lifeboat/internal/doctor"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/logring"
	"github.com/lifeboat-ha/lifeboat/internal/notify"
	"github.com/lifeboat-ha/lifeboat/internal/placement"
	"github.com/lifeboat-ha/lifeboat/internal/procs"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
	"github.com/lifeboat-ha/lifeboat/internal/watchdog"
)

// Version is the binary's version, set by the main package.
var Version = "dev"

// Agent is one running node.
type Agent struct {
	// levelHeld is what last held the feature level (leader loop only).
	levelHeld string
	// stranded: hierarchies wanted in service that no node can take, and
	// why, as last reported (leader loop only).
	stranded map[string]string
	kits     *kit.Registry
	// fenceWG: fence jobs of the current term (they end with it).
	fenceWG   sync.WaitGroup
	joinMu    sync.Mutex
	joinErr   string
	joinErrAt time.Time
	cfg       *config.Agent
	log       *slog.Logger
	level     *slog.LevelVar
	events    *events.Log
	c         *cluster.Cluster
	eng       *engine.Engine
	rpc       *rpc
	self      config.Node

	apiToken string // derived from the cluster key: the demo's
	// tokens are the API's credentials (api.token_file, or the derived
	// token when there is none); ReloadTokens replaces them.
	tokens atomic.Pointer[auth.Set]
	// sessions are the web console's sign-ins (console.go).
	sessions      *console.Sessions
	internalToken string
	tls           tlsid.Member // see identity.go

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	repMu   sync.Mutex
	pending map[string]engine.Report
	repWake chan struct{}

	fenceMu sync.Mutex
	fencing map[string]bool

	stopping atomic.Bool
	// joinedGen is the lease generation of this agent's first join (0:
	// not joined yet); see caughtUp.
	joinedGen atomic.Uint64
	http      *httpServers
	aws       *awsProvider
	ready     *readiness

	doctorMu       sync.Mutex
	doctorCounts   map[string]int
	doctorCritical map[string]doctor.Finding

	wd *watchdogFeeder // nil: no watchdog configured

	net *cluster.InmemNet // nil: real sockets
	// procs sets the Ps (GOMAXPROCS) from the load; nil: left as they are
	// (an agent in a test process among others).
	procs *procs.Governor

	health *http.Server // nil: no health_listen
	// listeners are the bounded listeners of the HTTP servers, for metrics.
	listeners boundedListeners
	// shutdownOnce makes Shutdown run once.
	shutdownOnce sync.Once
	// fanouts and localRuns share the runs that cost cloud calls
	// (fanout.go): those that ask every node, and this node's part.
	fanouts, localRuns *sharedRuns

	notify *notify.Dispatcher
	// members is the failure detector's view the leader last recorded
	// events for (leader loop only).
	members map[string]string

	// failovers counts the failovers this node carried out as leader;
	// lostFrom remembers, per hierarchy released by a fence, the node it
	// left, until it is placed again.
	failovers *prometheus.CounterVec
	lostMu    sync.Mutex
	lostFrom  map[string]string

	// logs: the recent log records, for support bundles; started: when
	// this agent started. reportMu admits one bundle at a time (a second
	// request is refused), nodeReportMu one share of a bundle at a time
	// (each runs the doctor): repeated requests cannot pile up work.
	logs         *logring.Ring
	started      time.Time
	reportMu     sync.Mutex
	nodeReportMu sync.Mutex
}

// Options are run-time settings outside the config file.
type Options struct {
	Logger *slog.Logger
	Level  *slog.LevelVar
	// FeatureLevel caps the feature level this agent supports (0: all
	// this binary has). Tests use it to stand in for an older version.
	FeatureLevel int
	// Kits are the resource types the agent runs (nil: the built-in ones).
	Kits *kit.Registry
	// Net runs the agent on an in-memory network instead of sockets and
	// disk for raft and gossip (tests: internal/agent/agenttest): raft,
	// memberlist and the API go through it, there is no Unix socket and
	// no periodic doctor run. The data directory still holds the event
	// history and the engine's files.
	Net *cluster.InmemNet
	// Logs is the ring of recent log records that Logger's handler
	// already feeds (the caller wraps its handler with the same options,
	// see logring.Ring.Handler); nil: New wraps Logger's handler itself.
	Logs *logring.Ring
	// Procs, when set, runs on the cluster's beat and sets the process's
	// GOMAXPROCS: one P while the agent is idle, every P while it is busy
	// (see package procs). Only for an agent that is the process's own.
	Procs *procs.Governor
}

// New starts a node from its config. Call Shutdown to stop it.
func New(cfg *config.Agent, opts Options) (a *Agent, err error) {
	a = &Agent{cfg: cfg, log: opts.Logger, sessions: console.NewSessions(), level: opts.Level, self: cfg.Self(), kits: opts.Kits,
		pending: map[string]engine.Report{}, repWake: make(chan struct{}, 1), fencing: map[string]bool{}, net: opts.Net,
		lostFrom: map[string]string{}, failovers: newFailoverCounter(), procs: opts.Procs}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.kits == nil {
		a.kits = kits.Builtin()
	}
	a.started = time.Now()
	if a.logs = opts.Logs; a.logs == nil {
		a.logs = logring.New(logring.DefaultRecords, logring.DefaultBytes)
		a.log = slog.New(a.logs.Handler(a.log.Handler(), nil))
	}
	a.log = a.log.With("node", cfg.Node)
	key := cfg.KeyBytes()
	if a.tls, err = loadIdentity(cfg, key); err != nil {
		return nil, err
	}
	a.internalToken = DeriveToken(key, "lifeboat-internal")
	a.apiToken = DeriveToken(key, "lifeboat-api")
	if err := a.ReloadTokens(); err != nil {
		return nil, err
	}
	if err := privateDirs(cfg.DataDir, cfg.API.Socket, a.log); err != nil {
		return nil, err
	}
	evOpt := events.AgentOptions()
	if cfg.Events.MaxBytes > 0 {
		evOpt.MaxBytes = cfg.Events.MaxBytes
	}
	a.events, err = events.OpenWith(cfg.Node, filepath.Join(cfg.DataDir, "events.jsonl"), evOpt)
	if err != nil {
		return nil, err
	}
	// Notifications cover what this process records, from its start on.
	notifyFrom := a.events.Last()
	a.notify, err = notify.New(notify.Config{Cluster: cfg.Cluster.Name, Node: cfg.Node, Version: Version, Notifiers: cfg.Notify, Logger: a.log})
	if err != nil {
		a.events.Close()
		return nil, err
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.fanouts, a.localRuns = newSharedRuns(), newSharedRuns()
	a.rpc = newRPC(a)

	a.c, err = cluster.Start(cluster.Config{
		Node: cfg.Node, DataDir: cfg.DataDir, Members: slices.Clone(cfg.Cluster.Nodes), Join: cfg.Cluster.Join, Key: key, Version: Version, Logger: a.log, Level: opts.FeatureLevel,
		Transport: a.rpc,
		Timing:    cfg.Timing.Timers(),
		Rejoin:    a.join,
		TLS:       a.tls,
		Net:       opts.Net,
	})
	if err != nil {
		a.events.Close()
		return nil, err
	}
	a.aws = &awsProvider{settings: upgrade.Settings(cfg)}
	a.ready = newReadiness(a)
	if cfg.Watchdog.Device != "" {
		a.wd = newWatchdogFeeder(a, watchdog.New(cfg.Watchdog.Device, cfg.Watchdog.Timeout.D()))
	}
	// Kit actions end a tenth of a lease before the lease: voters attest
	// expiry only a tenth plus a slack after it, so an action cut off at
	// this margin is over well before anyone else is assigned.
	margin := a.c.Leases.ActMargin()
	a.eng = engine.New(engine.Config{Lookup: a.kits.Lookup, Node: cfg.Node, DataDir: cfg.DataDir, Logger: a.log, Events: a.events, Report: a.queueReport, AWS: a.aws.get,
		MaxRestores: cfg.MaxParallelRestores,
		Authority: func(ctx context.Context, gen uint64) (context.Context, context.CancelFunc, error) {
			return a.c.Leases.Bound(ctx, gen, margin)
		}})
	a.http, err = a.serveHTTP()
	if err == nil {
		if a.health, err = a.serveHealth(); err != nil {
			a.http.close()
		}
	}
	if err != nil {
		a.eng.Close()
		a.c.Shutdown()
		a.events.Close()
		return nil, err
	}
	a.goFn(func(ctx context.Context) { a.notify.Run(ctx, a.events, notifyFrom) })
	a.events.Add(events.Event{Kind: "cluster", Action: "start", Message: "agent started, version " + Version})
	a.c.StartLeases()
	a.goFn(a.quorumLoop)
	a.goFn(a.desiredLoop)
	a.goFn(a.reportLoop)
	a.goFn(a.leaderLoop)
	a.goFn(a.ready.run)
	if a.net == nil {
		a.goFn(a.doctorLoop)
	}
	if a.wd != nil {
		a.goFn(a.wd.run)
	}
	a.goFn(a.systemdLoop)
	if a.procs != nil {
		beat := cfg.Timing.RenewInterval.D()
		a.goFn(func(ctx context.Context) { a.procs.Run(ctx, func() time.Duration { return a.c.OnBeat(beat) }) })
	}
	return a, nil
}

// DeriveToken derives a bearer token for purpose ("lifeboat-api",
// "lifeboat-internal") from the cluster key.
func DeriveToken(key []byte, purpose string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	return hex.EncodeToString(m.Sum(nil))
}

func (a *Agent) goFn(fn func(context.Context)) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn(a.ctx)
	}()
}

// join commits a new lease generation for this node.
func (a *Agent) join(ctx context.Context) (uint64, error) {
	cmd := cluster.Join{Node: a.cfg.Node, Version: Version, Level: a.c.SupportedLevel()}
	if a.wd != nil {
		cmd.WatchdogMS = a.wd.dev.Timeout().Milliseconds()
	}
	res, err := a.submit(ctx, cmd)
	var rej errRejected
	if errors.As(err, &rej) {
		// Refused (a version too old for the cluster's feature level):
		// say so loudly, once per 30 s, not at every retry.
		a.joinMu.Lock()
		if rej.msg != a.joinErr || time.Since(a.joinErrAt) > 30*time.Second {
			a.joinErr, a.joinErrAt = rej.msg, time.Now()
			a.log.Error("the cluster refused this node's join: it holds and runs nothing", "reason", rej.msg)
			a.events.Add(events.Event{Kind: "lease", Action: "join", Error: rej.msg, Message: "join refused"})
		}
		a.joinMu.Unlock()
	}
	if err != nil && !errors.As(err, &rej) && !errors.Is(err, context.Canceled) {
		a.joinMu.Lock()
		if err.Error() != a.joinErr || time.Since(a.joinErrAt) > 30*time.Second {
			a.joinErr, a.joinErrAt = err.Error(), time.Now()
			a.log.Warn("join the cluster (retrying)", "error", err)
		}
		a.joinMu.Unlock()
	}
	if err != nil {
		return 0, err
	}
	a.events.Add(events.Event{Kind: "lease", Action: "join", Message: fmt.Sprintf("joined with lease generation %d", res.Gen)})
	a.joinedGen.CompareAndSwap(0, res.Gen)
	return res.Gen, nil
}

// desired computes what this node's engine should run.
func (a *Agent) desired() map[string]engine.Desired {
	out := map[string]engine.Desired{}
	var reports map[string]engine.Report
	if a.cfg.QuorumLossAction == config.QuorumLossKeep {
		reports = a.eng.Reports() // only keep needs to know what runs here
	}
	// A node whose state machine halted knows no current assignment: it
	// runs nothing (its lease runs out and the others take over).
	halted := a.c.FSM.Halted() != nil
	a.c.FSM.View(func(s *cluster.State) {
		me := s.Nodes[a.cfg.Node]
		for name, h := range s.Hierarchies {
			as := s.Assignments[name]
			if as == nil {
				continue
			}
			d := engine.Desired{Spec: h, Epoch: as.Epoch, Gen: as.Gen}
			mine := !halted && !a.stopping.Load() && as.Node == a.cfg.Node && as.Online && as.MoveTo == "" && !as.Deleting &&
				!as.FailedOn(a.cfg.Node) && me != nil && me.Gen == as.Gen && !me.Revoked
			if mine {
				if a.c.Leases.Acting(as.Gen) && a.ready.mayTakeOver(name) {
					d.InService = true
				} else if a.cfg.QuorumLossAction == config.QuorumLossKeep {
					if r, ok := reports[name]; ok && (r.State == engine.StateOnline || r.State == engine.StateFrozen) {
						d.Frozen = true
					}
				}
			}
			// Maintenance: the engine checks and reports, and acts on
			// nothing, not even when the agent stops.
			d.Unmanaged = !halted && s.MaintenanceOf(name, a.cfg.Node) != ""
			out[name] = d
		}
	})
	return out
}

// caughtUp reports whether this node's replicated state includes its own
// join: everything committed before the agent started is applied. At
// start the state is only the last snapshot (raft applies the entries
// after it once the leader says they are committed): acting on it could
// undo what came since, such as removing a service that a maintenance
// turned on after the snapshot leaves alone.
func (a *Agent) caughtUp() bool {
	g := a.joinedGen.Load()
	if g == 0 {
		return false
	}
	ok := false
	a.c.FSM.View(func(s *cluster.State) {
		n := s.Nodes[a.cfg.Node]
		ok = n != nil && n.Gen >= g
	})
	return ok
}

// desiredLoop feeds the engine on every state or lease change. The
// first update waits until the state has caught up with the cluster
// (caughtUp), or, for a node that cannot reach a quorum, one lease
// period: then what the last snapshot does not assign here is taken out
// of service (it holds no lease to run anything).
func (a *Agent) desiredLoop(ctx context.Context) {
	// Every input of desired() that changes tells (the state, the lease
	// gained, about to end or ended); the tick is for the readiness
	// gate's bound (firstRoundBound, seconds) and as a backstop.
	tick := time.NewTimer(a.c.OnBeat(time.Second)) // with the renewals
	defer tick.Stop()
	grace := time.Now().Add(a.c.Leases.Threshold())
	waiting := true
	for {
		fsmC := a.c.FSM.Changed()
		leaseC := a.c.Leases.Changed()
		if waiting && (a.caughtUp() || !time.Now().Before(grace)) {
			waiting = false
			if !a.caughtUp() {
				a.log.Warn("acting on the last state this node knows: it has not caught up with the cluster within a lease period", "period", a.c.Leases.Threshold())
			}
		}
		if !waiting {
			d := a.desired()
			if a.wd != nil {
				a.wd.want(d) // armed before anything it fences is restored
			}
			a.eng.Update(d)
		}
		select {
		case <-ctx.Done():
			return
		case <-fsmC:
		case <-leaseC:
		case <-tick.C:
			tick.Reset(a.c.OnBeat(time.Second))
		}
	}
}

// queueReport is the engine's callback: keep the latest report per
// hierarchy and let reportLoop send it.
func (a *Agent) queueReport(r engine.Report) {
	a.repMu.Lock()
	a.pending[r.Hierarchy] = r
	a.repMu.Unlock()
	select {
	case a.repWake <- struct{}{}:
	default:
	}
}

// maxReportBatch bounds how many reports go in one log entry.
const maxReportBatch = 256

// reportLoop sends the engine's reports, every pending one in one batch
// (one raft commit when many hierarchies change at once).
func (a *Agent) reportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.repWake:
		}
		for {
			a.repMu.Lock()
			var batch []engine.Report
			for _, p := range a.pending {
				batch = append(batch, p)
			}
			a.repMu.Unlock()
			if len(batch) == 0 {
				break
			}
			sort.Slice(batch, func(i, j int) bool { return batch[i].Hierarchy < batch[j].Hierarchy })
			if len(batch) > maxReportBatch {
				batch = batch[:maxReportBatch]
			}
			var cmds []cluster.Cmd
			for _, r := range batch {
				cmds = append(cmds, cluster.Report{Node: a.cfg.Node, Hierarchy: r.Hierarchy, Report: r.HierarchyReport})
			}
			var cmd cluster.Cmd = cluster.Batch{Cmds: cmds}
			if len(cmds) == 1 {
				cmd = cmds[0]
			}
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := a.submit(sctx, cmd)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				a.log.Debug("report state", "hierarchies", len(batch), "error", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			a.repMu.Lock()
			for _, r := range batch {
				if cur, ok := a.pending[r.Hierarchy]; ok && cur.At.Equal(r.At) && cur.State == r.State && cur.Epoch == r.Epoch {
					delete(a.pending, r.Hierarchy)
				}
			}
			a.repMu.Unlock()
		}
	}
}

// nodeViews is the leader's view of every node for placement.
func (a *Agent) nodeViews(s *cluster.State) map[string]placement.NodeView {
	members := a.c.Members()
	th := a.c.Leases.Threshold()
	out := map[string]placement.NodeView{}
	for _, m := range a.c.MemberList() {
		v := placement.NodeView{Name: m.Name, Witness: m.Witness, Ready: true}
		ms := members[m.Name]
		v.Alive = ms.State == "alive" || (m.Name == a.cfg.Node && !a.stopping.Load())
		if n := s.Nodes[m.Name]; n != nil {
			v.Gen, v.Revoked, v.Leaving = n.Gen, n.Revoked, n.Leaving
			v.Maintenance, v.Standby = n.Maintenance != nil, n.Standby != nil
			if n.Unproven {
				v.NotReady = map[string]string{}
				for h := range s.Hierarchies {
					v.NotReady[h] = fmt.Sprintf("readiness not yet proven since it started lifeboat %s", orUnknown(n.Version))
				}
			}
			for h, r := range n.Readiness {
				if !r.Ready {
					if v.NotReady == nil {
						v.NotReady = map[string]string{}
					}
					v.NotReady[h] = notReadyText(r)
				}
			}
		}
		if ago, ok := a.c.Leases.LastGrant(m.Name, v.Gen); ok && ago < th {
			v.LeaseFresh = true
		}
		out[m.Name] = v
	}
	return out
}

// leaderLoop runs one term of leadership at a time, driven by raft's
// leader channel: each term has its own context (barrier, establish, run),
// cancelled when raft reports the leadership lost, and the term's work
// (placement, fencing jobs) ends before the next term can start.
func (a *Agent) leaderLoop(ctx context.Context) {
	ch := a.c.Raft.LeaderCh()
	var endTerm context.CancelFunc
	var termDone chan struct{}
	revoke := func() {
		if endTerm != nil {
			endTerm()
			<-termDone
			endTerm = nil
		}
	}
	defer revoke()
	establish := func() {
		var tctx context.Context
		tctx, endTerm = context.WithCancel(ctx)
		termDone = make(chan struct{})
		go func() {
			defer close(termDone)
			a.lead(tctx)
		}()
	}
	if a.c.IsLeader() {
		establish()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-ch:
			revoke()
			if leader {
				establish()
			}
		}
	}
}

// lead is one term: it returns when the term's context ends.
func (a *Agent) lead(ctx context.Context) {
	defer a.fenceWG.Wait()
	a.members = nil // a new term's first look is its baseline
	if err := a.c.Raft.Barrier(5 * time.Second).Error(); err != nil {
		a.log.Warn("leader barrier", "error", err)
		return
	}
	a.log.Info("leading the cluster: placement active")
	a.events.Add(events.Event{Kind: "cluster", Action: "leader", Message: "became raft leader; placement active"})
	// Placement runs on every change of the state, of the failure
	// detector's view and of a lease's freshness: a lease turns fresh at a
	// grant (Freshened) and stale at a moment known in advance (the timer).
	// The tick is for time-based policies only (failure marks expiring,
	// confirmation timeouts, the first placement's grace), whose periods
	// are seconds or more.
	tick := time.NewTimer(a.c.OnBeat(leaderTick))
	defer tick.Stop()
	stale := time.NewTimer(time.Hour)
	defer stale.Stop()
	for ctx.Err() == nil {
		fsmC := a.c.FSM.Changed()
		memC := a.c.MemberChanged()
		freshC := a.c.Leases.Freshened()
		if h := a.c.FSM.Halted(); h != nil {
			// A leader that cannot read the log must not place anything.
			a.log.Error("leading with a halted state machine: handing leadership over", "halt", h.String())
			if err := a.c.TransferLeadership(); err != nil {
				a.log.Warn("leadership transfer", "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		a.raiseLevel()
		// A node seen failed is recorded before what placement does about
		// it (the history reads in order: failed, fenced, assigned).
		a.reportMembers()
		// Decide reads the state without copying it (it never mutates);
		// the actions are committed after the read lock is released.
		var acts []placement.Action
		var nowhere map[string]string
		var staleIn time.Duration
		a.c.FSM.View(func(s *cluster.State) {
			views := a.nodeViews(s)
			acts = placement.Decide(s, views, time.Now())
			nowhere = strandedWhy(s, views)
			staleIn = a.nextStale(s)
		})
		a.carryOut(ctx, acts)
		a.reportStranded(nowhere)
		stale.Reset(staleIn)
		select {
		case <-ctx.Done():
			return
		case <-fsmC:
		case <-memC:
		case <-freshC:
		case <-stale.C:
		case <-tick.C:
			tick.Reset(a.c.OnBeat(leaderTick))
		}
	}
}

// leaderTick is about how often placement runs on the leader when nothing
// happens (time-based policies only; see lead): the first multiple of the
// cluster's beat at least this long, on the beat.
const leaderTick = 500 * time.Millisecond

// nextStale is how long until the first lease this voter holds fresh for
// placement (nodeViews' LeaseFresh) turns stale, just past that moment;
// an hour when none is fresh.
func (a *Agent) nextStale(s *cluster.State) time.Duration {
	th := a.c.Leases.Threshold()
	next := time.Hour
	for name, n := range s.Nodes {
		if ago, ok := a.c.Leases.LastGrant(name, n.Gen); ok && ago < th {
			next = min(next, th-ago+time.Millisecond)
		}
	}
	return next
}

// strandedWhy explains, for each hierarchy wanted in service that runs
// nowhere, why no node can take it.
func strandedWhy(s *cluster.State, views map[string]placement.NodeView) map[string]string {
	out := map[string]string{}
	for _, name := range s.HierarchyNames() {
		as := s.Assignments[name]
		if as == nil || as.Node != "" || !as.Online || as.Deleting || as.MoveTo != "" {
			continue
		}
		if h := s.Hierarchies[name]; !as.ConfirmSince.IsZero() {
			out[name] = confirmWhy(&h, as)
			continue
		}
		if _, _, ok := placement.ChooseDown(s.Hierarchies[name], as, views); ok {
			continue // placed this round
		}
		out[name] = placement.Explain(s.Hierarchies[name], as, views)
	}
	return out
}

// confirmWhy says that a failover waits for an operator's decision.
func confirmWhy(h *spec.Hierarchy, as *cluster.Assignment) string {
	return fmt.Sprintf("the failover waits for confirmation: `lifeboat failover confirm %s` or `lifeboat failover block %s`; without a decision, %s at %s",
		h.Name, h.Name, h.EffectiveConfirmDefault(), as.ConfirmSince.Add(h.EffectiveConfirmTimeout()).UTC().Format(time.RFC3339))
}

// reportStranded logs and records an event when a hierarchy comes to run
// nowhere, or the reason changes, and when it is placed again (leader
// loop only).
func (a *Agent) reportStranded(now map[string]string) {
	for name, why := range now {
		if a.stranded[name] != why {
			a.log.Warn("hierarchy runs nowhere", "hierarchy", name, "why", why)
			a.events.Add(events.Event{Kind: "failover", Hierarchy: name, Action: "stranded", Error: why, Message: "runs nowhere", Severity: events.Critical})
		}
	}
	for name := range a.stranded {
		if _, ok := now[name]; !ok {
			a.log.Info("hierarchy can be placed again", "hierarchy", name)
		}
	}
	a.stranded = now
}

// raiseLevel commits the next feature level once every voter supports it.
func (a *Agent) raiseLevel() {
	next, why := a.c.NextLevel()
	cur := a.c.FSM.Level()
	if next <= cur {
		if why != "" && cur < cluster.MaxLevel && why != a.levelHeld {
			a.levelHeld = why
			a.log.Info("feature level held", "level", cur, "supported", cluster.MaxLevel, "why", why)
		}
		return
	}
	res, _, err := a.c.Apply(cluster.SetLevel{Level: next}, 5*time.Second)
	if err != nil {
		a.log.Warn("raise feature level", "level", next, "error", err)
		return
	}
	if res.Changed {
		a.levelHeld = ""
		msg := fmt.Sprintf("cluster feature level raised from %d to %d: every voter supports it", cur, next)
		a.log.Info(msg)
		a.events.Add(events.Event{Kind: "cluster", Action: "feature-level", Message: msg})
	}
}

func orUnknown(v string) string {
	if v == "" {
		return "(unknown version)"
	}
	return v
}

// carryOut commits placement's decisions, all in one batch (one raft
// commit when a node dies owning many hierarchies), and starts fencing.
func (a *Agent) carryOut(ctx context.Context, acts []placement.Action) {
	var cmds []cluster.Cmd
	var done []placement.Action
	for _, act := range acts {
		switch act.Kind {
		case placement.ActFence:
			a.startFence(ctx, act)
			continue
		case placement.ActAssign:
			cmds = append(cmds, cluster.Assign{Hierarchy: act.Hierarchy, Node: act.Node, Gen: act.Gen, Epoch: act.Epoch, MarkFailed: act.MarkFailed, Reason: act.Reason})
		case placement.ActMove:
			cmds = append(cmds, cluster.RequestMove{Hierarchy: act.Hierarchy, To: act.To, Epoch: act.Epoch, Reason: act.Reason})
		case placement.ActPurge:
			cmds = append(cmds, cluster.Purge{Hierarchy: act.Hierarchy, Epoch: act.Epoch})
		case placement.ActExpire:
			cmds = append(cmds, cluster.ExpireMark{Hierarchy: act.Hierarchy, Node: act.Node, MarkedAt: act.MarkedAt})
		case placement.ActStop:
			cmds = append(cmds, cluster.SetOnline{Hierarchy: act.Hierarchy, Online: false, Reason: act.Reason})
		case placement.ActProceed:
			cmds = append(cmds, cluster.ConfirmFailover{Hierarchy: act.Hierarchy, Proceed: true, Reason: act.Reason})
		default:
			continue
		}
		done = append(done, act)
	}
	if len(cmds) == 0 {
		return
	}
	var results []cluster.Result
	if len(cmds) == 1 {
		res, _, err := a.c.Apply(cmds[0], 5*time.Second)
		if err != nil && res.Err == nil {
			a.log.Warn("placement", "action", done[0].String(), "error", err)
			return
		}
		results = []cluster.Result{res}
	} else {
		res, _, err := a.c.Apply(cluster.Batch{Cmds: cmds}, 5*time.Second)
		if err != nil {
			a.log.Warn("placement", "actions", len(cmds), "error", err)
			return
		}
		results = res.Results
	}
	for i, act := range done {
		if i >= len(results) {
			break
		}
		res := results[i]
		if res.Err != nil {
			a.log.Warn("placement", "action", act.String(), "error", res.Err)
			continue
		}
		failover := false
		if res.Changed && act.Kind == placement.ActAssign && act.Node != "" {
			failover = a.countFailover(act)
		}
		if res.Changed && act.Kind == placement.ActExpire {
			a.log.Info("failure mark expired", "hierarchy", act.Hierarchy, "node", act.Node, "reason", act.Reason)
			a.events.Add(events.Event{Kind: "failover", Hierarchy: act.Hierarchy, Action: act.Kind, Message: act.String(), Severity: events.Info})
		} else if res.Changed {
			a.log.Info("placement", "action", act.Kind, "hierarchy", act.Hierarchy, "target", act.Node+act.To, "reason", act.Reason, "epoch", act.Epoch+1)
			kind, sev := placementEvent(act, failover)
			a.events.Add(events.Event{Kind: kind, Hierarchy: act.Hierarchy, Action: act.Kind, Epoch: act.Epoch + 1, Message: act.String(), Severity: sev})
		}
	}
}

// startFence runs one fence job per node generation: check that a majority
// of voters no longer grant the node's lease, revoke it, wait for a binding
// majority attestation that the lease ran out, then release its hierarchies.
func (a *Agent) startFence(ctx context.Context, act placement.Action) {
	key := fmt.Sprintf("%s/%d", act.Node, act.Gen)
	a.fenceMu.Lock()
	if a.fencing[key] {
		a.fenceMu.Unlock()
		return
	}
	a.fencing[key] = true
	a.fenceMu.Unlock()
	a.fenceWG.Add(1)
	go func() {
		defer a.fenceWG.Done()
		defer func() {
			a.fenceMu.Lock()
			delete(a.fencing, key)
			a.fenceMu.Unlock()
		}()
		if err := a.fence(ctx, act); err != nil {
			a.log.Debug("fence", "peer", act.Node, "gen", act.Gen, "error", err)
		}
	}()
}

func (a *Agent) fence(ctx context.Context, act placement.Action) error {
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Non-binding check first: one broken link must not fence a node the
	// rest of the cluster still hears from.
	// Voters hold their answer until the lease runs out (at most one
	// threshold), so this returns the moment a majority can attest it.
	req := cluster.AttestRequest{Node: act.Node, Gen: act.Gen, MinAgeMS: a.fenceAge(act.Node, act.Gen).Milliseconds()}
	req.WaitMS = max(a.c.Leases.Threshold().Milliseconds(), req.MinAgeMS)
	if ok, why := a.c.Leases.Attest(fctx, req); !ok {
		return fmt.Errorf("not fencing %s: %s", act.Node, strings.Join(why, "; "))
	}
	start := time.Now()
	_, idx, err := a.c.Apply(cluster.Revoke{Node: act.Node, Gen: act.Gen, Reason: act.Reason}, 5*time.Second)
	if err != nil {
		return fmt.Errorf("revoke %s generation %d: %w", act.Node, act.Gen, err)
	}
	for {
		req.MinIndex = idx
		ok, why := a.c.Leases.Attest(fctx, req)
		if ok {
			break
		}
		select {
		case <-fctx.Done():
			return fmt.Errorf("no majority attests that %s's lease ran out: %s", act.Node, strings.Join(why, "; "))
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The online hierarchies it releases fail over (counted when they
	// are placed again).
	var lost []string
	a.c.FSM.View(func(s *cluster.State) {
		for name, as := range s.Assignments {
			if as.Node == act.Node && as.Gen == act.Gen && as.Online {
				lost = append(lost, name)
			}
		}
	})
	a.noteFailovers(act.Node, lost)
	res, _, err := a.c.Apply(cluster.Release{Node: act.Node, Gen: act.Gen, Reason: fmt.Sprintf("%s fenced: %s", act.Node, act.Reason)}, 5*time.Second)
	if err != nil {
		return fmt.Errorf("release hierarchies of %s: %w", act.Node, err)
	}
	msg := fmt.Sprintf("fenced %s (lease generation %d): %s; lease expiry attested by a majority in %s", act.Node, act.Gen, act.Reason, time.Since(start).Round(time.Millisecond))
	a.log.Warn("fenced node", "peer", act.Node, "gen", act.Gen, "reason", act.Reason, "released", res.Changed)
	a.events.Add(events.Event{Kind: "failover", Action: "fence", Message: msg, Severity: events.Warning})
	return nil
}

// fenceAge is how old node's last lease grant must be before its
// hierarchies may go elsewhere: the lease threshold, or, when it holds
// resources only its watchdog fences (local addresses) and has a watchdog,
// long enough for the watchdog to have reset it.
func (a *Agent) fenceAge(node string, gen uint64) time.Duration {
	age := a.c.Leases.Threshold()
	a.c.FSM.View(func(s *cluster.State) {
		n := s.Nodes[node]
		if n == nil || n.WatchdogMS == 0 {
			return
		}
		for name, as := range s.Assignments {
			if as.Node == node && as.Gen == gen && nodeFenced(a.kits, s.Hierarchies[name]) {
				age = max(age, a.c.Leases.WatchdogAge(time.Duration(n.WatchdogMS)*time.Millisecond))
				return
			}
		}
	})
	return age
}

// submit commits a command on the leader, forwarding when this node is a
// follower, and retries while no leader is known.
// Below LevelTyped (a voter may run a version without batches) a Batch is
// submitted command by command.
func (a *Agent) submit(ctx context.Context, cmd cluster.Cmd) (cluster.Result, error) {
	if b, ok := cmd.(cluster.Batch); ok && a.c.FSM.Level() < cluster.LevelTyped {
		out := cluster.Result{Results: make([]cluster.Result, len(b.Cmds))}
		for i, sub := range b.Cmds {
			r, err := a.submit(ctx, sub)
			var rej errRejected
			if err != nil && !errors.As(err, &rej) {
				return out, err
			}
			r.Err = err
			out.Results[i] = r
			out.Changed = out.Changed || r.Changed
		}
		return out, nil
	}
	at := time.Now().UTC()
	for {
		var res cluster.Result
		var err error
		if a.c.IsLeader() {
			res, _, err = a.c.ApplyAt(cmd, at, 5*time.Second)
			if err != nil && res.Err != nil {
				// The command itself was refused: retrying is no use.
				err = errRejected{err.Error()}
			}
		} else if leader := a.c.Leader(); leader != "" {
			res, err = a.rpc.forward(ctx, leader, cmd, at)
		} else {
			err = cluster.ErrNotLeader
		}
		if err == nil || !retryable(err) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("%s: no raft leader reachable (is a majority of nodes up?): %w", cmd.Kind(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errRejected marks an error the leader returned for the command itself.
type errRejected struct{ msg string }

func (e errRejected) Error() string { return e.msg }

func retryable(err error) bool {
	var rej errRejected
	return !errors.As(err, &rej) && !errors.Is(err, context.Canceled)
}

// Shutdown stops the node following the configured shutdown strategy.
// Only the first call does anything; later ones return at once.
func (a *Agent) Shutdown(ctx context.Context) {
	a.shutdownOnce.Do(func() { a.shutdown(ctx) })
}

func (a *Agent) shutdown(ctx context.Context) {
	a.log.Info("shutting down", "strategy", a.cfg.ShutdownStrategy)
	if os.Getenv("NOTIFY_SOCKET") != "" {
		_, _ = systemdNotify("STOPPING=1\nSTATUS=stopping: " + a.cfg.ShutdownStrategy + "\n")
	}
	a.events.Add(events.Event{Kind: "cluster", Action: "shutdown", Message: "agent stopping, strategy " + a.cfg.ShutdownStrategy})
	if !a.self.Witness {
		a.handOver(ctx)
	}
	// Take whatever is still here out of service.
	a.stopping.Store(true)
	a.eng.Update(a.desired())
	_ = a.eng.Wait(ctx, func(rs map[string]engine.Report) bool {
		for _, r := range rs {
			if r.State != engine.StateOffline && r.State != engine.StateFailed && r.State != engine.StateUnknown && r.State != engine.StateUnmanaged {
				return false
			}
		}
		return true
	})
	// Let the last reports reach the leader.
	a.flushReports(ctx)
	if err := a.c.TransferLeadership(); err != nil {
		a.log.Debug("leadership transfer", "error", err)
	}
	a.cancel()
	a.http.close()
	if a.health != nil {
		_ = a.health.Close()
	}
	a.wg.Wait()
	a.eng.Close()
	a.c.Shutdown()
	a.events.Close()
}

// Kill stops the agent as `kill -9` would, for tests on an in-memory
// network (Options.Net; the caller cuts the node off the network first,
// so that nothing it says on the way out reaches the others): nothing is
// handed over or taken out of service, the node does not leave, no
// report is flushed. The engine's actions in progress are cut off.
func (a *Agent) Kill() {
	a.log.Info("killed")
	a.stopping.Store(true)
	a.cancel()
	_ = a.http.unix.Close()
	_ = a.http.tcp.Close()
	a.wg.Wait()
	a.eng.Close()
	a.c.Shutdown()
	a.events.Close()
}

func (a *Agent) flushReports(ctx context.Context) {
	for i := 0; i < 40; i++ {
		a.repMu.Lock()
		n := len(a.pending)
		a.repMu.Unlock()
		if n == 0 || ctx.Err() != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// handOver moves (switchover strategy) or stops (stop strategy) every
// hierarchy this node owns.
func (a *Agent) handOver(ctx context.Context) {
	owned := func() []string {
		var hs []string
		a.c.FSM.View(func(s *cluster.State) {
			for n, as := range s.Assignments {
				if as.Node == a.cfg.Node && as.Online && s.MaintenanceOf(n, a.cfg.Node) == "" {
					hs = append(hs, n)
				}
			}
		})
		return hs
	}
	hs := owned()
	if len(hs) == 0 {
		return
	}
	if a.cfg.ShutdownStrategy == config.ShutdownStop {
		for _, h := range hs {
			_, err := a.submit(ctx, cluster.SetOnline{Hierarchy: h, Online: false, Reason: a.cfg.Node + " shut down (shutdown_strategy stop)"})
			if err != nil {
				a.log.Error("stop hierarchy on shutdown", "hierarchy", h, "error", err)
			}
		}
		return
	}
	if _, err := a.submit(ctx, cluster.Leaving{Node: a.cfg.Node, Leaving: true}); err != nil {
		a.log.Error("announce shutdown", "error", err)
		return
	}
	// Wait until placement has moved everything it can move.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		left := 0
		movable := false
		a.c.FSM.View(func(s *cluster.State) {
			for n, as := range s.Assignments {
				if as.Node == a.cfg.Node && as.Online && s.MaintenanceOf(n, a.cfg.Node) == "" {
					left++
					if as.MoveTo != "" {
						movable = true
					}
				}
			}
		})
		if left == 0 {
			a.log.Info("all hierarchies handed over")
			a.awaitTakenOver(ctx, hs)
			return
		}
		if !movable && time.Since(deadline.Add(-60*time.Second)) > 3*time.Second {
			a.log.Warn("no ready node can take the remaining hierarchies; taking them out of service", "count", left)
			return
		}
		select {
		case <-ctx.Done():
		case <-a.c.FSM.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// takeOverWait bounds how long a node shutting down with the switchover
// strategy waits, once it has handed its hierarchies over, for their new
// owners to report them online: long enough for a quick restore, short
// enough not to hold a shutdown for a slow one (the hand-over itself is
// done; the new owner carries on either way).
const takeOverWait = 10 * time.Second

// awaitTakenOver waits until every hierarchy of hs that is wanted in
// service is reported online (or failed) by its new owner, so that a
// rolling upgrade that waits for the agent's exit finds the service back,
// not still restoring.
func (a *Agent) awaitTakenOver(ctx context.Context, hs []string) {
	deadline := time.Now().Add(takeOverWait)
	for {
		var pending []string
		a.c.FSM.View(func(s *cluster.State) {
			for _, h := range hs {
				as := s.Assignments[h]
				if as == nil || !as.Online || as.Node == "" {
					continue
				}
				if st := hierarchyState(s, as); st != engine.StateOnline && st != engine.StateFailed {
					pending = append(pending, h+" "+st+" on "+as.Node)
				}
			}
		})
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			a.log.Warn("exiting before the new owners report online", "waited", takeOverWait, "pending", strings.Join(pending, ", "))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-a.c.FSM.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// notReadyText is the short reason shown for a NOT READY node.
func notReadyText(r cluster.Readiness) string {
	if len(r.Missing) > 0 {
		return "missing " + strings.Join(r.Missing, ", ")
	}
	if r.Reason != "" {
		return r.Reason
	}
	return "readiness probe failed"
}
