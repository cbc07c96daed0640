// Package clustertest runs a whole lifeboat cluster (raft, memberlist and
// the quorum leases of internal/cluster) in memory, for tests: no sockets,
// no files, no root. Inside a testing/synctest bubble its timers run on
// the bubble's fake clock, so a failure scenario of many seconds runs in
// a fraction of one, and its timing does not depend on how loaded the
// machine is (goroutine interleavings and raft's and memberlist's random
// timeouts still vary from run to run: a seeded fault schedule is the
// same schedule each time, not the same execution).
//
//	synctest.Test(t, func(t *testing.T) {
//		c := clustertest.MakeCluster(t, 3, clustertest.Options{})
//		leader := c.MustWaitLeader(2 * time.Second)
//		c.Kill(leader)
//		...
//	})
//
// Faults: Partition, Cut, CutDirected (one way), CutRaft (raft's messages
// only) and Heal change links, SetDelay slows lease messages on one link;
// Kill stops a node (its raft stores survive, as a data directory would)
// and Restart starts it again; Pause and Resume freeze a node (see Pause
// for what that models).
//
// Nodes renew their leases through a LeaseTransport that calls the other
// nodes' Leases directly, and join (Rejoin) through the leader as they see
// it, as the agent does. Fence does what the agent's leader does before it
// moves a node's hierarchies (AttestExpired is its binding step alone).
//
// The harness checks the lease safety invariant all the time: every
// binding attestation made through Fence or AttestExpired is recorded, and
// a monitor samples every node's lease; a node that holds a lease
// generation past the moment a majority attested that generation expired
// fails the test.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
)

// FastTiming is the default timing of a harness cluster: sub-second
// failover (a lease threshold of 380 ms, elections within a few hundred).
var FastTiming = cluster.Timing{
	Lease:         300 * time.Millisecond,
	Renew:         60 * time.Millisecond,
	ProbeInterval: 100 * time.Millisecond,
	ProbeTimeout:  50 * time.Millisecond,
	SuspicionMult: 2,
	RaftHeartbeat: 100 * time.Millisecond,
	RaftElection:  200 * time.Millisecond,
}

// Options tunes MakeCluster. The zero value is a good default.
type Options struct {
	// Timing: zero means FastTiming.
	Timing cluster.Timing
	// Logger receives every node's log. Nil: the log is kept in memory
	// and written to the test's output if the test fails (with
	// LIFEBOAT_TEST_LOG=1 it goes to stderr as it happens).
	Logger *slog.Logger
	// Version is what nodes report and join with ("test" if empty).
	Version string
	// Key is the gossip encryption key (nil: a fixed test key).
	Key []byte
	// Sample is how often the monitor looks at every node's lease (0:
	// 5ms). The safety check compares each generation's latest lease end
	// with the attestations, and a lease's end only moves on within a
	// generation, so sampling loses nothing there unless a node extends
	// one generation and starts the next at the same instant; lease gains
	// and losses (LeaseEvents, Lapses) are timed to within Sample.
	Sample time.Duration
}

// Cluster is a harness cluster of nodes node1..nodeN.
type Cluster struct {
	t       testing.TB
	opts    Options
	log     *slog.Logger
	ring    *ring
	members []cluster.Member
	names   []string
	// Net is the in-memory network the nodes talk through.
	Net *cluster.InmemNet

	// bubble: the cluster runs inside a testing/synctest bubble.
	bubble bool

	mu      sync.Mutex
	nodes   map[string]*node
	joiners map[string]bool // started with cluster.join
	cut     map[[2]string]bool
	raftCut map[[2]string]bool
	delay   map[[2]string]time.Duration
	closed  bool

	mon *monitor
}

type node struct {
	name string
	// c is the running incarnation (nil after Kill).
	c *cluster.Cluster
	// paused is closed by Resume (nil when not paused).
	paused chan struct{}
}

// MakeCluster starts n nodes, node1..nodeN, all voters, each renewing its
// lease, and stops them when the test ends. It does not wait for a
// leader: see WaitLeader.
func MakeCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.Timing == (cluster.Timing{}) {
		opts.Timing = FastTiming
	}
	if opts.Version == "" {
		opts.Version = "test"
	}
	if opts.Key == nil {
		opts.Key = []byte("clustertest-key-0123456789abcdef")
	}
	if opts.Sample == 0 {
		opts.Sample = 5 * time.Millisecond
	}
	c := &Cluster{t: t, opts: opts, Net: cluster.NewInmemNet(), nodes: map[string]*node{}, joiners: map[string]bool{}, cut: map[[2]string]bool{}, raftCut: map[[2]string]bool{}, delay: map[[2]string]time.Duration{}, bubble: InBubble()}
	c.log = opts.Logger
	if c.log == nil {
		var w io.Writer = os.Stderr
		if os.Getenv("LIFEBOAT_TEST_LOG") == "" {
			c.ring = &ring{max: 4000}
			w = c.ring
		}
		c.log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node%d", i)
		c.names = append(c.names, name)
		c.members = append(c.members, cluster.Member{
			Name: name, Raft: fmt.Sprintf("10.0.0.%d:7945", i),
			Gossip: fmt.Sprintf("10.0.0.%d:7946", i),
			API:    fmt.Sprintf("10.0.0.%d:7947", i),
		})
		c.nodes[name] = &node{name: name}
	}
	c.mon = newMonitor(c)
	t.Cleanup(c.Close)
	for _, name := range c.names {
		if err := c.start(name); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
	}
	go c.mon.run()
	return c
}

// StartJoiner starts a new node, name, that joins the running cluster
// (cluster.join: it does not bootstrap raft and waits to be added with
// AddMember on the leader), and returns its member entry.
func (c *Cluster) StartJoiner(name string) cluster.Member {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.members) + 1
	m := cluster.Member{Name: name, Raft: fmt.Sprintf("10.0.0.%d:7945", i), Gossip: fmt.Sprintf("10.0.0.%d:7946", i), API: fmt.Sprintf("10.0.0.%d:7947", i)}
	c.members = append(c.members, m)
	c.names = append(c.names, name)
	c.nodes[name] = &node{name: name}
	c.joiners[name] = true
	c.mu.Unlock()
	if err := c.start(name); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	return m
}

// Applied is a cluster.AppliedFunc that reads a node's state directly.
func (c *Cluster) Applied(ctx context.Context, m cluster.Member) (uint64, error) {
	n := c.Node(m.Name)
	if n == nil {
		return 0, fmt.Errorf("%s is not running", m.Name)
	}
	return n.FSM.Index(), nil
}

// Names returns the nodes' names, node1..nodeN.
func (c *Cluster) Names() []string { return slices.Clone(c.names) }

// Timing returns the cluster's timing.
func (c *Cluster) Timing() cluster.Timing { return c.opts.Timing }

// Majority is the number of voters that make a quorum.
func (c *Cluster) Majority() int { return len(c.names)/2 + 1 }

func (c *Cluster) start(name string) error {
	nd := c.nodes[name]
	var self *cluster.Cluster
	var smu sync.Mutex
	c.mu.Lock()
	members, join := slices.Clone(c.members), c.joiners[name]
	c.mu.Unlock()
	cfg := cluster.Config{
		Node: name, Members: members, Join: join, Key: c.opts.Key, Version: c.opts.Version,
		Timing: c.opts.Timing, Logger: c.log.With("node", name),
		Transport: leaseTransport{c: c, from: name},
		Net:       c.Net,
	}
	cfg.Rejoin = func(ctx context.Context) (uint64, error) {
		smu.Lock()
		me := self
		smu.Unlock()
		return c.rejoin(ctx, name, me)
	}
	cl, err := cluster.Start(cfg)
	if err != nil {
		return err
	}
	smu.Lock()
	self = cl
	smu.Unlock()
	c.mu.Lock()
	nd.c = cl
	c.mu.Unlock()
	c.mon.add(name, cl)
	cl.StartLeases()
	return nil
}

// Node returns the running incarnation of name (nil while it is killed).
func (c *Cluster) Node(name string) *cluster.Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.nodes[name]
	if nd == nil {
		c.t.Fatalf("clustertest: no node %q", name)
	}
	return nd.c
}

// Alive reports whether name runs (it was not killed) and is not paused.
func (c *Cluster) Alive(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.nodes[name]
	return nd.c != nil && nd.paused == nil
}

// Paused reports whether name is paused.
func (c *Cluster) Paused(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name].paused != nil
}

// Linked reports whether a message from one node reaches the other now
// (both alive and unpaused, the link not cut).
func (c *Cluster) Linked(from, to string) bool { return c.Net.Link(from, to) }

// Partition splits the cluster: nodes in different groups cannot reach
// each other, nodes in one group can (earlier cuts are replaced). Nodes
// named in no group form one more group.
func (c *Cluster) Partition(groups ...[]string) {
	group := map[string]int{}
	for i, g := range groups {
		for _, name := range g {
			c.check(name)
			group[name] = i + 1
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.names {
		for _, b := range c.names {
			if a != b {
				c.setLink(a, b, group[a] == group[b])
			}
		}
	}
	c.log.Info("clustertest: partition", "groups", fmt.Sprint(groups))
}

// Cut loses the link between a and b, both directions.
func (c *Cluster) Cut(a, b string) {
	c.check(a)
	c.check(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLink(a, b, false)
	c.setLink(b, a, false)
	c.log.Info("clustertest: cut", "a", a, "b", b)
}

// CutDirected loses every message from one node to the other (a one-way
// failure); the other direction still works.
func (c *Cluster) CutDirected(from, to string) {
	c.check(from)
	c.check(to)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLink(from, to, false)
	c.log.Info("clustertest: cut one way", "from", from, "to", to)
}

// CutRaft loses raft's messages between a and b, both directions, as a
// firewall rule on the raft port would: gossip and lease calls still
// flow (Linked does not change).
func (c *Cluster) CutRaft(a, b string) {
	c.check(a)
	c.check(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range [][2]string{{a, b}, {b, a}} {
		c.raftCut[k] = true
		c.Net.SetRaftLink(k[0], k[1], false)
	}
	c.log.Info("clustertest: cut raft", "a", a, "b", b)
}

// Heal restores every link, raft's included (kills and pauses stay).
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.cut {
		c.setLink(k[0], k[1], true)
	}
	for k := range c.raftCut {
		delete(c.raftCut, k)
		c.Net.SetRaftLink(k[0], k[1], true)
	}
	c.log.Info("clustertest: heal")
}

func (c *Cluster) setLink(from, to string, up bool) {
	if up {
		delete(c.cut, [2]string{from, to})
	} else {
		c.cut[[2]string{from, to}] = true
	}
	c.Net.SetLink(from, to, up)
}

// SetDelay makes lease messages (renewals, attestations and their
// answers) from one node to the other take d (0: none), as a slow or
// congested path would. Raft and gossip are not delayed.
func (c *Cluster) SetDelay(from, to string, d time.Duration) {
	c.check(from)
	c.check(to)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delay[[2]string{from, to}] = d
}

func (c *Cluster) wait(ctx context.Context, from, to string) error {
	c.mu.Lock()
	d := c.delay[[2]string{from, to}]
	c.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// IsCut reports whether the link from one node to the other is cut by
// Partition or Cut (regardless of kills and pauses).
func (c *Cluster) IsCut(from, to string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut[[2]string{from, to}]
}

// Kill stops name as a crash would: its links drop first (it says goodbye
// to no one), then it shuts down. Its raft log, stable store and snapshots
// survive for Restart. Killing a paused node ends the pause.
func (c *Cluster) Kill(name string) {
	c.check(name)
	c.mu.Lock()
	nd := c.nodes[name]
	cl := nd.c
	if cl == nil {
		c.mu.Unlock()
		return
	}
	nd.c = nil
	if nd.paused != nil {
		close(nd.paused)
		nd.paused = nil
	}
	c.mu.Unlock()
	c.log.Info("clustertest: kill", "node", name)
	c.Net.Isolate(name, true)
	c.mon.remove(name)
	cl.Shutdown()
}

// Restart starts a killed node again on its surviving stores: a new
// process, so it joins with a new lease generation.
func (c *Cluster) Restart(name string) {
	c.check(name)
	c.mu.Lock()
	running := c.nodes[name].c != nil
	c.mu.Unlock()
	if running {
		c.t.Fatalf("clustertest: restart %s: it is running (Kill it first)", name)
	}
	c.log.Info("clustertest: restart", "node", name)
	c.Net.Isolate(name, false)
	if err := c.start(name); err != nil {
		c.t.Fatalf("clustertest: restart %s: %v", name, err)
	}
}

// Pause freezes name, as SIGSTOP or a stalled VM would, as far as the
// others and the lease protocol can tell: every link to and from it drops
// (raft and gossip), a lease call it makes is held and goes out only when
// it resumes, an answer it is waiting for is delivered only then, and
// calls to it go unanswered. The node's goroutines do keep running: its
// raft may start elections nobody hears, its memberlist declares the
// others dead, and its lease loop keeps starting rounds that cannot get
// out. So its lease runs out at the end of the last round it completed
// before the pause, by its own clock, as a frozen process finds when it
// resumes. What this does not model: a frozen process's timers do not
// fire, so after Resume a real one may act once on state from before the
// pause before its timers catch up, and a renewal round in flight when it
// froze may complete with answers that waited in its socket; here its
// timers ran during the pause, so that state was already updated and that
// round already given up (TestInmemSlowAnswers covers late answers).
func (c *Cluster) Pause(name string) {
	c.check(name)
	c.mu.Lock()
	nd := c.nodes[name]
	if nd.c == nil || nd.paused != nil {
		c.mu.Unlock()
		return
	}
	nd.paused = make(chan struct{})
	c.mu.Unlock()
	c.log.Info("clustertest: pause", "node", name)
	c.Net.Isolate(name, true)
}

// Resume ends a Pause.
func (c *Cluster) Resume(name string) {
	c.check(name)
	c.mu.Lock()
	nd := c.nodes[name]
	if nd.paused == nil {
		c.mu.Unlock()
		return
	}
	close(nd.paused)
	nd.paused = nil
	c.mu.Unlock()
	c.log.Info("clustertest: resume", "node", name)
	c.Net.Isolate(name, false)
}

func (c *Cluster) check(name string) {
	if _, ok := c.nodes[name]; !ok {
		c.t.Fatalf("clustertest: no node %q", name)
	}
}

// Leader returns the leader a majority recognizes now: an alive, unpaused
// node that is raft leader and that a majority of the nodes it reaches
// (itself included) name as leader. "" when there is none.
func (c *Cluster) Leader() string {
	for _, name := range c.names {
		cl := c.Node(name)
		if cl == nil || !c.Alive(name) || !cl.IsLeader() {
			continue
		}
		votes := 0
		for _, o := range c.names {
			oc := c.Node(o)
			if oc != nil && c.Alive(o) && (o == name || c.Linked(name, o) && c.Linked(o, name)) && oc.Leader() == name {
				votes++
			}
		}
		if votes >= c.Majority() {
			return name
		}
	}
	return ""
}

// WaitLeader waits up to timeout for Leader to name a node.
func (c *Cluster) WaitLeader(timeout time.Duration) (string, error) {
	var leader string
	err := c.Eventually(timeout, func() bool {
		leader = c.Leader()
		return leader != ""
	})
	if err != nil {
		return "", fmt.Errorf("no leader within %v", timeout)
	}
	return leader, nil
}

// MustWaitLeader is WaitLeader that fails the test.
func (c *Cluster) MustWaitLeader(timeout time.Duration) string {
	c.t.Helper()
	l, err := c.WaitLeader(timeout)
	if err != nil {
		c.t.Fatal(err)
	}
	return l
}

// Eventually polls cond every millisecond until it holds or timeout passes.
func (c *Cluster) Eventually(timeout time.Duration, cond func() bool) error {
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			return errors.New("timed out")
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// Apply commits cmd through the leader, retrying while there is none or
// leadership moves, for up to timeout.
func (c *Cluster) Apply(cmd cluster.Cmd, timeout time.Duration) (cluster.Result, uint64, error) {
	end := time.Now().Add(timeout)
	for {
		err := errors.New("no leader")
		if l := c.Leader(); l != "" {
			if cl := c.Node(l); cl != nil {
				var res cluster.Result
				var idx uint64
				res, idx, err = cl.Apply(cmd, time.Until(end))
				if err == nil || res.Err != nil {
					return res, idx, err
				}
			}
		}
		if time.Now().After(end) {
			return cluster.Result{}, 0, fmt.Errorf("apply %s: %w", cmd.Kind(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Lease returns the generation name joined with, as its replicated state
// says, and whether its lease of that generation is valid now.
func (c *Cluster) Lease(name string) (gen uint64, valid bool) {
	cl := c.Node(name)
	if cl == nil {
		return 0, false
	}
	g, _ := cl.Leases.Current()
	return g, cl.Leases.Valid(g)
}

// HoldsLease reports whether name holds a valid lease of the generation
// its own replicated state names current and not revoked.
func (c *Cluster) HoldsLease(name string) bool {
	cl := c.Node(name)
	if cl == nil {
		return false
	}
	g, _ := cl.Leases.Current()
	var cur uint64
	var revoked bool
	cl.FSM.View(func(s *cluster.State) {
		if n := s.Nodes[name]; n != nil {
			cur, revoked = n.Gen, n.Revoked
		}
	})
	return g != 0 && g == cur && !revoked && cl.Leases.Valid(g)
}

// rejoin commits a join for me through the leader as me sees it, the way
// the agent does (locally on the leader, else forwarded), until ctx ends.
func (c *Cluster) rejoin(ctx context.Context, name string, me *cluster.Cluster) (uint64, error) {
	if me == nil {
		return 0, errors.New("not started")
	}
	cmd := cluster.Join{Node: name, Version: c.opts.Version, Level: me.SupportedLevel()}
	for {
		if err := c.awaitUnpaused(ctx, name); err != nil {
			return 0, err
		}
		var res cluster.Result
		err := cluster.ErrNotLeader
		if leader := me.Leader(); leader == name {
			res, _, err = me.Apply(cmd, 2*time.Second)
		} else if leader != "" && c.Linked(name, leader) {
			if lc := c.Node(leader); lc != nil {
				res, _, err = lc.Apply(cmd, 2*time.Second)
				if err == nil && !c.Linked(leader, name) {
					err = errors.New("answer lost")
				}
			}
		}
		if res.Err != nil {
			return 0, err
		}
		if err == nil {
			return res.Gen, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// awaitUnpaused returns once name is not paused (or ctx ends).
func (c *Cluster) awaitUnpaused(ctx context.Context, name string) error {
	c.mu.Lock()
	p := c.nodes[name].paused
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops every node and the monitor and checks the invariant a last
// time. MakeCluster registers it with t.Cleanup; calling it earlier is fine.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.mon.stop()
	for _, name := range c.names {
		c.Kill(name)
	}
	if c.bubble {
		// Let what the nodes left running (memberlist's probes, streams
		// and RPCs waiting for their timeouts) end: a bubble may not
		// end with goroutines blocked, and its clock stops with it.
		time.Sleep(settle)
	}
	if c.ring != nil && c.t.Failed() {
		c.t.Logf("cluster log (last %d lines):\n%s", c.ring.max, c.ring.String())
	}
}

// settle is how long Close waits in a bubble for the stopped nodes'
// leftover goroutines: longer than any of their timeouts (raft's
// snapshot RPC: 5 s).
const settle = 10 * time.Second

// InBubble reports whether the caller runs in a testing/synctest bubble.
func InBubble() (in bool) {
	defer func() {
		if recover() != nil {
			in = false
		}
	}()
	synctest.Wait() // panics outside a bubble
	return true
}

// leaseTransport carries lease calls between the nodes, directly to the
// other node's Leases, as the links and pauses allow.
type leaseTransport struct {
	c    *Cluster
	from string
}

func (lt leaseTransport) Renew(ctx context.Context, peer string, req cluster.RenewRequest) (cluster.RenewResponse, error) {
	var out cluster.RenewResponse
	err := lt.c.deliver(ctx, lt.from, peer, func(_ context.Context, l *cluster.Leases) { out = l.HandleRenew(req) })
	return out, err
}

func (lt leaseTransport) Attest(ctx context.Context, peer string, req cluster.AttestRequest) (cluster.AttestResponse, error) {
	// As the agent's client does: the voter may hold its answer up to
	// WaitMS; bound the call by that plus one lease.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(req.WaitMS)*time.Millisecond+lt.c.opts.Timing.Lease)
	defer cancel()
	var out cluster.AttestResponse
	err := lt.c.deliver(ctx, lt.from, peer, func(ctx context.Context, l *cluster.Leases) {
		// Leases.AwaitAttest, when the voter has not applied MinIndex by
		// its deadline (now + WaitMS), re-arms a zero timer until the clock
		// passes the deadline: a spin of one clock tick in real time, but
		// forever under a fake clock that only moves when everything
		// blocks. A context ending at that same deadline ends the wait
		// with the same answer.
		wctx, cancel := context.WithTimeout(ctx, time.Duration(req.WaitMS)*time.Millisecond)
		defer cancel()
		out = l.AwaitAttest(wctx, req)
	})
	return out, err
}

// deliver runs fn on peer's Leases as a call from node from would reach it:
// not before from resumes (a frozen process sends nothing), not at all over
// a dead link (the caller hears nothing until its context or a lease's
// time ends), each way after its SetDelay, and with the answer lost if the
// way back is cut meanwhile, or held until from resumes.
func (c *Cluster) deliver(ctx context.Context, from, peer string, fn func(context.Context, *cluster.Leases)) error {
	if err := c.awaitUnpaused(ctx, from); err != nil {
		return err
	}
	if err := c.wait(ctx, from, peer); err != nil {
		return err
	}
	var target *cluster.Cluster
	if c.Linked(from, peer) {
		target = c.Node(peer)
	}
	if target == nil {
		return c.lost(ctx, from, peer)
	}
	fn(ctx, target.Leases)
	if err := c.wait(ctx, peer, from); err != nil {
		return err
	}
	if err := c.awaitUnpaused(ctx, from); err != nil {
		return err
	}
	if !c.Linked(peer, from) {
		return c.lost(ctx, peer, from)
	}
	return nil
}

func (c *Cluster) lost(ctx context.Context, from, to string) error {
	t := time.NewTimer(c.opts.Timing.Lease)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return fmt.Errorf("%s -> %s: no answer (in-memory network: unreachable)", from, to)
}

// ring keeps the last max lines written to it.
type ring struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, strings.TrimRight(string(p), "\n"))
	if len(r.lines) >= 2*r.max {
		r.lines = slices.Clone(r.lines[len(r.lines)-r.max:])
	}
	return len(p), nil
}

func (r *ring) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines[max(0, len(r.lines)-r.max):], "\n")
}
