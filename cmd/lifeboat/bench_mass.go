package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/netlab"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// massOptions configure `lifeboat bench --hierarchies N`.
type massOptions struct {
	Hierarchies int
	Runs        int
	Dir         string
	Profile     string
	// AgentBinary runs the agents with another lifeboat binary ("": this one).
	AgentBinary string
	// MonitorInterval of every hierarchy (each check forks a shell).
	MonitorInterval time.Duration
	// Poll is the pause after each answer before the surviving node's
	// status is read again.
	Poll time.Duration
	// MaxOther: a run starts once the processes other than the cluster and
	// the bench use at most this many cores (over a second), or after
	// QuietWait.
	MaxOther  float64
	QuietWait time.Duration
	// OnlineTimeout: how long a run waits for every hierarchy to be
	// online, on the first node before the kill and elsewhere after it.
	OnlineTimeout time.Duration
	// Switchback: one cluster for every run (automatic switchback brings
	// the hierarchies home) instead of a cluster per run.
	Switchback bool
	// Three: three-resource hierarchies (an app over a route-table virtual
	// IP over its local address: app + ec2 + ip) on a network of
	// namespaces with the simulator in the router (root only), instead of
	// one app resource on 127.0.0.1.
	Three bool
	// RateLimits: with Three, the simulator throttles EC2 calls as AWS
	// does from the kill on (buckets full at the kill), with the mutating
	// bucket MutatingBucket (CAPACITY/REFILL, "" AWS's 200/5); the agents
	// pace their calls with the same buckets. Without it the agents do not
	// pace (an account whose limits do not bind).
	RateLimits     bool
	MutatingBucket string
	// ReadinessInterval of the agents (0: the agent's default).
	ReadinessInterval time.Duration
}

// massRun is one mass failover.
type massRun struct {
	Owner          string `json:"owner"`
	OwnerWasLeader bool   `json:"owner_was_leader"`
	// Leader: the raft leader when the owner was killed (leadership may
	// have moved since the start, to the standby as well).
	Leader string `json:"leader"`
	// PolledNode is the surviving node whose status was read (the leader).
	PolledNode   string `json:"polled_node"`
	FeatureLevel int    `json:"feature_level"`
	// FirstMS, P50MS, LastMS: kill -> the first, the median and the last
	// hierarchy reported online on another node.
	FirstMS float64 `json:"first_ms"`
	P50MS   float64 `json:"p50_ms"`
	LastMS  float64 `json:"last_ms"`
	// Back counts the hierarchies back in service per node.
	Back map[string]int `json:"back"`
	// IndexBefore: the raft index just before the kill; IndexLast: when the
	// last hierarchy was seen online; IndexSettled: once no entry was
	// committed for a second after that.
	IndexBefore  uint64 `json:"index_before"`
	IndexLast    uint64 `json:"index_last"`
	IndexSettled uint64 `json:"index_settled"`
	// Commits = IndexLast - IndexBefore: raft entries committed between the
	// kill and the last hierarchy back in service (a new term's entry
	// included).
	Commits        uint64 `json:"commits"`
	CommitsSettled uint64 `json:"commits_settled"`
	// Polls and PollMedianMS: status reads during the failover and how long
	// one took (the resolution of the figures above).
	Polls        int     `json:"polls"`
	PollMedianMS float64 `json:"poll_median_ms"`
	// Complete: every hierarchy came back within the online timeout;
	// BackCount: how many did; TimedOutMS: when the bench gave up; Error:
	// why the run failed (before the kill too: never all online).
	Complete   bool    `json:"complete"`
	Error      string  `json:"error,omitempty"`
	BackCount  int     `json:"back_count"`
	TimedOutMS float64 `json:"timed_out_ms,omitempty"`
	// KilledAt: the wall clock of the kill, to read the agents' logs by.
	KilledAt string `json:"killed_at"`
	// CPUMS: CPU time each surviving agent (and "bench": this process,
	// reading the status) used from the kill to the last hierarchy back,
	// the commands the agents ran not included; MachineBusy: the share of
	// all CPUs busy meanwhile (every process on the machine).
	CPUMS       map[string]float64 `json:"cpu_ms"`
	MachineBusy float64            `json:"machine_busy"`
	// CommandsCPUMS: CPU time of the commands the agents ran (their
	// restores); OtherCPUMS: CPU time of everything else on the machine
	// meanwhile (not lifeboat, not this bench): another workload.
	CommandsCPUMS float64 `json:"commands_cpu_ms"`
	OtherCPUMS    float64 `json:"other_cpu_ms"`
	// OtherCoresBefore: what other processes used (in cores, over a
	// second) right before the kill; WaitedMS: how long the run waited for
	// the cluster to settle and the machine to be quiet.
	OtherCoresBefore float64 `json:"other_cores_before"`
	WaitedMS         float64 `json:"waited_ms"`
	// With rate limits: EC2 calls per action the simulator admitted and
	// throttled from the kill until the last hierarchy was back, and
	// FloorMS, the least time EC2's buckets allow for the calls the
	// failover cannot do without (one ReplaceRoute per route: AWS has no
	// batch form), (N - capacity) / refill.
	EC2Admitted  map[string]int `json:"ec2_admitted,omitempty"`
	EC2Throttled map[string]int `json:"ec2_throttled,omitempty"`
	FloorMS      float64        `json:"floor_ms,omitempty"`
}

type massResult struct {
	Hierarchies       int       `json:"hierarchies"`
	AgentBinary       string    `json:"agent_binary"`
	AgentVersion      string    `json:"agent_version"`
	Profile           string    `json:"profile"`
	Switchback        bool      `json:"switchback"`
	MonitorIntervalMS float64   `json:"monitor_interval_ms"`
	PollMS            float64   `json:"poll_ms"`
	Runs              []massRun `json:"runs"`
	MedianFirstMS     float64   `json:"median_first_ms"`
	MedianP50MS       float64   `json:"median_p50_ms"`
	MedianLastMS      float64   `json:"median_last_ms"`
	MedianCommits     float64   `json:"median_commits"`
	Resources         int       `json:"resources_per_hierarchy"`
	MutatingBucket    string    `json:"mutating_bucket,omitempty"`
	MedianFloorMS     float64   `json:"median_floor_ms,omitempty"`
	// Error: why runs failed (each failed run is kept, marked; medians
	// are over complete runs).
	Error string `json:"error,omitempty"`
}

func massName(i int) string { return fmt.Sprintf("mass-%05d", i) }

// runMassBench: per run, a three-node cluster with N one-resource app
// hierarchies whose first-priority node is the same follower; kill -9 that
// node and measure until each hierarchy is reported online elsewhere (read
// from the raft leader's status); restart the node and wait until it is
// back. Each run has a cluster of its own, unless o.Switchback: then one
// cluster serves every run and automatic switchback brings the hierarchies
// home once the killed node is back.
func runMassBench(o massOptions, progress func(format string, args ...any)) (_ *massResult, err error) {
	if o.Hierarchies <= 0 || o.Runs <= 0 {
		return nil, fmt.Errorf("--hierarchies and --runs must be positive")
	}
	if o.OnlineTimeout <= 0 {
		o.OnlineTimeout = 3 * time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = 25 * time.Millisecond
	}
	if o.MonitorInterval <= 0 {
		o.MonitorInterval = 10 * time.Second
	}
	bin := o.AgentBinary
	if bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return nil, err
		}
		if fi, err := os.Stat(abs); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("--agent-binary %s: not an executable file", bin)
		}
		bin = abs
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		bin = exe
	}
	dir := o.Dir
	if ents, err := os.ReadDir(dir); dir != "" && err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("--dir %s is not empty: the agents would find another cluster's data there", dir)
	}
	if dir == "" {
		d, merr := os.MkdirTemp("", "lifeboat-bench-mass-")
		if merr != nil {
			return nil, merr
		}
		// Kept when the bench fails: the errors point at the agents' logs.
		defer func() {
			if err == nil {
				os.RemoveAll(d)
			}
		}()
		dir = d
	}
	// Generous: the previous release commits every report on its own.
	perRun := 2*time.Minute + time.Duration(o.Hierarchies)*200*time.Millisecond + o.QuietWait + 2*o.OnlineTimeout
	// SIGINT or SIGTERM ends the bench through ctx, so that the agents
	// it started are killed on the way out (not left running).
	sctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sctx, time.Duration(o.Runs)*perRun)
	defer cancel()
	res := &massResult{Hierarchies: o.Hierarchies, AgentBinary: bin, Profile: o.Profile, Switchback: o.Switchback,
		MonitorIntervalMS: ms(o.MonitorInterval), PollMS: ms(o.Poll)}
	res.Resources = 1
	if o.Three {
		res.Resources = 3
		if o.RateLimits {
			res.MutatingBucket = sim.DefaultMutatingBucket.String()
			if o.MutatingBucket != "" {
				res.MutatingBucket = o.MutatingBucket
			}
		}
	}
	var mc *massCluster
	defer func() {
		if mc != nil {
			mc.close()
		}
	}()
	// oneRun returns the run's figures (nil when it failed before the
	// kill) and why it failed.
	oneRun := func(run int) (*massRun, error) {
		if mc == nil {
			cdir := dir
			if !o.Switchback {
				cdir = filepath.Join(dir, fmt.Sprintf("run-%d", run))
			}
			var err error
			if mc, err = startMassCluster(ctx, o, bin, cdir); err != nil {
				return nil, err
			}
			res.AgentVersion = mc.version
			progress("%s: %d hierarchies applied, first priority %s (then %s; leader %s), agents %s %s", cdir, o.Hierarchies, mc.owner, mc.standby, mc.leader, bin, mc.version)
		}
		c, owner := mc.c, mc.owner
		// On a shared machine, wait for a quiet moment: another workload
		// starves the agents and skews the figures.
		var before api.Status
		var other float64
		started, deadline := time.Now(), time.Now().Add(o.QuietWait)
		for {
			sctx, cancel := context.WithTimeout(ctx, o.OnlineTimeout)
			var err error
			before, err = massSettle(sctx, c, owner, o.Hierarchies)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("%w (agent logs in %s)", err, c.Dir)
			}
			if other = otherCores(c, time.Second); other <= o.MaxOther || time.Now().After(deadline) {
				break
			}
		}
		waited := time.Since(started)
		if o.RateLimits {
			// The agents' own buckets were drained by the initial
			// placement and their readiness rounds: let them refill.
			b := mc.bucket
			progress("waiting %s for the agents' EC2 buckets to refill", time.Duration(b.Capacity/b.Refill*float64(time.Second)))
			time.Sleep(time.Duration(b.Capacity / b.Refill * float64(time.Second))) // a refill, nothing to await
		}
		r, err := massFailover(ctx, c, owner, before, o, mc)
		r.OtherCoresBefore, r.WaitedMS = other, ms(waited)
		if err != nil {
			return &r, fmt.Errorf("%w (agent logs in %s)", err, c.Dir)
		}
		progress("run %d: first %s, p50 %s, last %s back in service; %d raft commits (%d until settled); other processes: %.2f cores before, %s CPU meanwhile", run,
			fmtMS(r.FirstMS), fmtMS(r.P50MS), fmtMS(r.LastMS), r.Commits, r.CommitsSettled, r.OtherCoresBefore, fmtMS(r.OtherCPUMS))
		_ = c.WaitExit(ctx, owner)
		if err := c.StartNode(owner); err != nil {
			return &r, err
		}
		rctx, cancel := context.WithTimeout(ctx, o.OnlineTimeout)
		defer cancel()
		if err := c.WaitReady(rctx); err != nil {
			return &r, fmt.Errorf("%s never rejoined: %w (agent logs in %s)", owner, err, c.Dir)
		}
		if !o.Switchback {
			mc.close()
			mc = nil
		}
		return &r, nil
	}
	var failed []string
	for run := 1; run <= o.Runs && ctx.Err() == nil; run++ {
		r, err := oneRun(run)
		if err != nil {
			if r == nil {
				r = &massRun{Back: map[string]int{}}
				if mc != nil {
					r.Owner = mc.owner
				}
			}
			r.Complete, r.Error = false, err.Error()
			failed = append(failed, fmt.Sprintf("run %d: %v", run, err))
			progress("run %d failed: %v", run, err)
		}
		res.Runs = append(res.Runs, *r)
		if err != nil {
			if o.Switchback {
				break // the cluster is in no state for another run
			}
			if mc != nil {
				mc.close()
				mc = nil
			}
		}
	}
	if len(failed) > 0 {
		err = errors.New(strings.Join(failed, "; "))
		res.Error = err.Error()
	}
	var first, p50, last, commits []float64
	for _, r := range res.Runs {
		if !r.Complete {
			continue
		}
		first, p50, last = append(first, r.FirstMS), append(p50, r.P50MS), append(last, r.LastMS)
		commits = append(commits, float64(r.Commits))
	}
	res.MedianFirstMS, _, _ = median(first)
	res.MedianP50MS, _, _ = median(p50)
	res.MedianLastMS, _, _ = median(last)
	res.MedianCommits, _, _ = median(commits)
	var floors []float64
	for _, r := range res.Runs {
		if r.Complete && r.EC2Admitted != nil {
			floors = append(floors, r.FloorMS)
		}
	}
	res.MedianFloorMS, _, _ = median(floors)
	return res, err
}

type massCluster struct {
	c                      *demo.Cluster
	owner, standby, leader string
	version                string
	// Three-resource hierarchies: the network and the simulator.
	lab    *netlab.Lab
	env    *demo.SimEnv
	limits *sim.RateLimits
	bucket sim.Bucket // the mutating bucket
}

// close kills the agents and removes the network and the simulator.
func (mc *massCluster) close() {
	mc.c.Kill()
	if mc.env != nil {
		mc.env.Close()
	}
	if mc.lab != nil {
		mc.lab.Close()
	}
}

// startMassCluster starts three agents in dir and applies the hierarchies:
// the owner is a follower and its first standby the other follower, so
// that the kill needs no election and the new owner forwards its reports
// to the leader, as a standby of a real cluster does.
func startMassCluster(ctx context.Context, o massOptions, bin, dir string) (*massCluster, error) {
	// Only what every release understands: the timing section is written
	// only when a profile other than the default is asked for.
	var extra string
	if o.Profile != "" && o.Profile != config.ProfileDefault {
		extra = "timing:\n  profile: " + o.Profile + "\n"
	}
	if o.ReadinessInterval > 0 {
		extra += "readiness_interval: " + o.ReadinessInterval.String() + "\n"
	}
	opts := demo.Options{Binary: bin, Dir: dir, Nodes: 3, ExtraConfig: extra}
	mc := &massCluster{}
	ok := false
	defer func() {
		if !ok {
			if mc.c != nil {
				mc.c.Kill()
			}
			if mc.env != nil {
				mc.env.Close()
			}
			if mc.lab != nil {
				mc.lab.Close()
			}
		}
	}()
	names := []string{"node1", "node2", "node3"}
	if o.Three {
		var err error
		if mc.lab, err = netlab.New(netlab.Options{Nodes: 3, Router: true, Dir: filepath.Join(dir, "network")}); err != nil {
			return nil, fmt.Errorf("three-resource hierarchies need a network of namespaces (root): %w", err)
		}
		if mc.env, err = demo.StartSimOnLab(mc.lab, names); err != nil {
			return nil, err
		}
		mc.limits, mc.bucket = massRateLimits(o)
		pace := "  mutating_bucket: \"off\"\n  describe_bucket: \"off\"\n"
		if o.RateLimits {
			pace = fmt.Sprintf("  mutating_bucket: %s\n  describe_bucket: %s\n", mc.bucket, sim.DefaultNonMutatingBucket)
		}
		opts.IPs, opts.Wrap = mc.lab.NodeIPs(), mc.lab.Wrap
		opts.NodeConfig = func(node string) string { return mc.env.NodeConfig(node) + pace }
	}
	c, err := demo.Start(opts)
	if err != nil {
		return nil, err
	}
	mc.c = c
	if err := c.WaitReady(ctx); err != nil {
		return nil, fmt.Errorf("%w (agent logs in %s)", err, dir)
	}
	st, err := c.Status(ctx, "node1")
	if err != nil {
		return nil, err
	}
	var followers []string
	for _, n := range c.Nodes {
		if n.Name != st.Leader {
			followers = append(followers, n.Name)
		}
	}
	if st.Leader == "" || len(followers) != 2 {
		return nil, fmt.Errorf("no raft leader among the three nodes (agent logs in %s)", dir)
	}
	mc.owner, mc.standby, mc.leader = followers[0], followers[1], st.Leader
	for _, n := range st.Nodes {
		if n.Name == st.Leader {
			mc.version = n.Version
		}
	}
	hs := make([]spec.Hierarchy, o.Hierarchies)
	for i := range hs {
		flag := `"$LB_DATA_DIR/$LB_HIERARCHY.up"`
		hs[i] = spec.Hierarchy{Name: massName(i + 1), Nodes: []string{mc.owner, mc.standby, mc.leader}, Switchback: spec.SwitchbackAutomatic,
			MonitorInterval: spec.Duration(o.MonitorInterval),
			Resources: []spec.Resource{{Name: "flag", Type: "app", Params: map[string]string{
				"restore": "touch " + flag, "remove": "rm -f " + flag, "quickcheck": "test -f " + flag}}}}
	}
	if o.Three {
		hs = massThree(mc, o)
		if err := mc.env.GrantLeastPrivilege(names, hs); err != nil {
			return nil, err
		}
	}
	if err := c.Apply(ctx, api.ApplyRequest{Hierarchies: hs}); err != nil {
		return nil, fmt.Errorf("apply %d hierarchies: %w", len(hs), err)
	}
	ok = true
	return mc, nil
}

// massSettle waits until every mass hierarchy is online on owner, the
// feature level is as high as the binary supports, no raft entry was
// committed for a second and every node is ready; it returns the leader's
// last status. It reads one status at a time, 250 ms apart: a status of
// many hierarchies costs the agent that builds it.
func massSettle(ctx context.Context, c *demo.Cluster, owner string, n int) (api.Status, error) {
	var last api.Status
	var why string
	stable := time.Now()
	node := otherThan(c, owner)
	for {
		st, err := c.Status(ctx, node)
		if err == nil && st.Leader != "" && st.Leader != node && st.Leader != owner {
			if l := c.Node(st.Leader); l != nil && l.Running() {
				node = st.Leader // the leader's view from now on
				continue
			}
		}
		quiet := false
		switch {
		case err != nil:
			why = err.Error()
			node = otherThan(c, owner)
		case st.FeatureLevel < st.SupportedLevel:
			why = fmt.Sprintf("feature level %d, the binary supports %d", st.FeatureLevel, st.SupportedLevel)
		default:
			on, proven := 0, 0
			for _, h := range st.Hierarchies {
				if strings.HasPrefix(h.Name, "mass-") && h.Owner == owner && h.State == "online" {
					on++
				}
				// Every node's first readiness round is done (its
				// results committed): until then a standby holds its
				// takeovers back, and its dry runs share EC2's buckets.
				if strings.HasPrefix(h.Name, "mass-") && len(h.Readiness) >= len(h.Nodes) {
					proven++
				}
			}
			why = fmt.Sprintf("%d of %d hierarchies online on %s", on, n, owner)
			if on == n && proven < n {
				why = fmt.Sprintf("%d of %d hierarchies proven ready on every node", proven, n)
			}
			if on == n && proven == n {
				why = "raft index still moving"
				quiet = st.Index == last.Index && st.Leader == last.Leader
			}
			last = st
		}
		if !quiet {
			stable = time.Now()
		} else if time.Since(stable) >= time.Second {
			rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			err := c.WaitReady(rctx)
			cancel()
			if err == nil {
				return st, nil
			}
			why, stable = err.Error(), time.Now()
		}
		select {
		case <-ctx.Done():
			return api.Status{}, fmt.Errorf("never settled: %s", why)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// otherCores measures, over d, how many cores the processes other than the
// cluster's agents (and the commands they run) and this bench use.
func otherCores(c *demo.Cluster, d time.Duration) float64 {
	ours := func() float64 {
		t := procTicks(os.Getpid())
		for _, n := range c.Nodes {
			if n.Running() {
				self, kids := procTicks2(n.PID)
				t += self + kids
			}
		}
		return t
	}
	o0 := ours()
	b0, t0 := machineTicks()
	time.Sleep(d) // measuring a duration, not synchronising
	o1 := ours()
	b1, t1 := machineTicks()
	if t1 <= t0 {
		return 0
	}
	cpus := (t1 - t0) / (d.Seconds() * 100)
	return max(0, (b1-b0)-(o1-o0)) / (t1 - t0) * cpus
}

// massFailover kills owner and polls the leader's status until every mass
// hierarchy is online on another node.
func massFailover(ctx context.Context, c *demo.Cluster, owner string, before api.Status, o massOptions, mc *massCluster) (massRun, error) {
	r := massRun{Owner: owner, OwnerWasLeader: before.Leader == owner, Leader: before.Leader, PolledNode: before.Leader,
		FeatureLevel: before.FeatureLevel, IndexBefore: before.Index, Back: map[string]int{}}
	if r.OwnerWasLeader {
		// (only when leadership moved by itself since the start)
		r.PolledNode = otherThan(c, owner)
	}
	back := map[string]time.Duration{}
	var polls []float64
	cpu0, kids0 := map[string]float64{}, map[string]float64{}
	for _, n := range c.Nodes {
		if n.Name != owner {
			cpu0[n.Name], kids0[n.Name] = procTicks2(n.PID)
		}
	}
	self0 := procTicks(os.Getpid())
	busy0, total0 := machineTicks()
	if s, err := c.Status(ctx, r.PolledNode); err == nil {
		r.IndexBefore = s.Index
	}
	if mc.limits != nil {
		// EC2's buckets full, counts from zero.
		mc.env.Server.SetFaults(sim.Faults{RateLimits: mc.limits})
	}
	killed := time.Now()
	if err := c.Signal(owner, syscall.SIGKILL); err != nil {
		return r, err
	}
	r.KilledAt = killed.UTC().Format(time.RFC3339Nano)
	fctx, cancel := context.WithTimeout(ctx, o.OnlineTimeout)
	defer cancel()
	var st api.Status
	var timedOut error
	for len(back) < o.Hierarchies && timedOut == nil {
		// The pause follows each answer: a status of many hierarchies
		// takes a while to build, and back-to-back reads would load the
		// very node being measured.
		select {
		case <-fctx.Done():
			timedOut = fmt.Errorf("%d of %d hierarchies back in service %s after the kill", len(back), o.Hierarchies, time.Since(killed).Round(time.Second))
			continue
		case <-time.After(o.Poll):
		}
		t0 := time.Now()
		s, err := c.Status(fctx, r.PolledNode)
		seen := time.Since(killed) // conservative: when the answer was in
		polls = append(polls, ms(time.Since(t0)))
		if err != nil {
			if s2 := otherThan(c, owner); s2 != r.PolledNode {
				r.PolledNode = s2 // the polled node failed
			}
			continue
		}
		st = s
		for _, h := range st.Hierarchies {
			if _, ok := back[h.Name]; ok || !strings.HasPrefix(h.Name, "mass-") {
				continue
			}
			if h.State == "online" && h.Owner != "" && h.Owner != owner {
				back[h.Name] = seen
				r.Back[h.Owner]++
			}
		}
	}
	if mc.limits != nil {
		st := mc.env.Server.RateLimitStats()
		r.EC2Admitted, r.EC2Throttled = st.Admitted, st.Throttled
		if extra := float64(o.Hierarchies) - mc.bucket.Capacity; extra > 0 {
			r.FloorMS = extra / mc.bucket.Refill * 1000
		}
	}
	busy1, total1 := machineTicks()
	if total1 > total0 {
		r.MachineBusy = (busy1 - busy0) / (total1 - total0)
	}
	r.CPUMS = map[string]float64{}
	ours := 0.0
	for name, t := range cpu0 {
		self, kids := procTicks2(c.Node(name).PID)
		r.CPUMS[name] = (self - t) * 10 // USER_HZ=100
		r.CommandsCPUMS += (kids - kids0[name]) * 10
		ours += self - t + kids - kids0[name]
	}
	r.CPUMS["bench"] = (procTicks(os.Getpid()) - self0) * 10
	ours += r.CPUMS["bench"] / 10
	// Everything else on the machine: another workload skews the figures.
	r.OtherCPUMS = max(0, (busy1-busy0)-ours) * 10
	r.IndexLast = st.Index
	if st.Index >= r.IndexBefore {
		r.Commits = st.Index - r.IndexBefore
	}
	r.Polls = len(polls)
	r.PollMedianMS, _, _ = median(polls)
	var ds []float64
	for _, d := range back {
		ds = append(ds, ms(d))
	}
	sort.Float64s(ds)
	r.BackCount = len(ds)
	if len(ds) > 0 {
		r.FirstMS, r.LastMS = ds[0], ds[len(ds)-1]
		r.P50MS, _, _ = median(ds)
	}
	if timedOut != nil {
		// FirstMS etc. cover what came back; the run counts for nothing.
		r.TimedOutMS = ms(time.Since(killed))
		return r, timedOut
	}
	r.Complete = true
	// What else the failover commits once all are back (trailing reports).
	idx, stable := st.Index, time.Now()
	for time.Since(stable) < time.Second && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond) // polling the index, nothing to await
		if s, err := c.Status(ctx, r.PolledNode); err == nil && s.Index != idx {
			idx, stable = s.Index, time.Now()
		}
	}
	r.IndexSettled, r.CommitsSettled = idx, idx-r.IndexBefore
	return r, nil
}

// procTicks is a process's user+system CPU time in clock ticks.
func procTicks(pid int) float64 {
	self, _ := procTicks2(pid)
	return self
}

// procTicks2 is a process's own CPU time and that of its children it has
// waited for, in clock ticks.
func procTicks2(pid int) (self, children float64) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 15 {
		return 0, 0
	}
	var v [4]float64
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[11+i], 64)
	}
	return v[0] + v[1], v[2] + v[3]
}

// machineTicks returns the busy and total clock ticks of all CPUs.
func machineTicks() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fmtMS(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2f s", v/1000)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func printMass(res *massResult) {
	mode := "a cluster per run"
	if res.Switchback {
		mode = "one cluster, automatic switchback between runs"
	}
	kind := "one-resource app"
	if res.Resources == 3 {
		kind = "three-resource (app + ec2 route + ip)"
		if res.MutatingBucket != "" {
			kind += ", EC2 throttled from the kill on (mutating bucket " + res.MutatingBucket + ")"
		}
	}
	fmt.Fprintf(stdout, "\n%d %s hierarchies, agents %s (%s), %s, monitor interval %s, status read %s after each answer\n",
		res.Hierarchies, kind, res.AgentBinary, res.AgentVersion, mode, time.Duration(res.MonitorIntervalMS*float64(time.Millisecond)), time.Duration(res.PollMS*float64(time.Millisecond)))
	fmt.Fprintf(stdout, "%-4s %-6s %-6s %-5s %9s %9s %9s %8s %8s %7s  %-11s %s\n", "run", "owner", "leader", "level", "first", "p50", "last", "commits", "settled", "poll", "back on", "CPU meanwhile")
	for i, r := range res.Runs {
		var on, cpu []string
		for _, n := range spec.SortedKeys(r.Back) {
			on = append(on, fmt.Sprintf("%s %d", n, r.Back[n]))
		}
		switch {
		case r.Complete:
		case r.KilledAt == "":
			on = append(on, "FAILED before the kill (see below)")
		default:
			on = append(on, fmt.Sprintf("INCOMPLETE: %d of %d after %s", r.BackCount, res.Hierarchies, fmtMS(r.TimedOutMS)))
		}
		for _, n := range spec.SortedKeys(r.CPUMS) {
			cpu = append(cpu, fmt.Sprintf("%s %s", n, fmtMS(r.CPUMS[n])))
		}
		cpu = append(cpu, "commands "+fmtMS(r.CommandsCPUMS), "other processes "+fmtMS(r.OtherCPUMS))
		fmt.Fprintf(stdout, "%-4d %-6s %-6s %-5d %9s %9s %9s %8d %8d %7s  %-11s %s (machine %.0f%% busy)\n", i+1, r.Owner, r.Leader, r.FeatureLevel,
			fmtMS(r.FirstMS), fmtMS(r.P50MS), fmtMS(r.LastMS), r.Commits, r.CommitsSettled, fmtMS(r.PollMedianMS),
			strings.Join(on, ", "), strings.Join(cpu, ", "), r.MachineBusy*100)
	}
	complete := 0
	for _, r := range res.Runs {
		if r.Complete {
			complete++
		}
	}
	for i, r := range res.Runs {
		if r.EC2Admitted != nil {
			fmt.Fprintf(stdout, "run %d: floor %s (the mutating bucket), last back %s after the kill: %s above it; EC2 calls admitted %v, throttled %v\n",
				i+1, fmtMS(r.FloorMS), fmtMS(r.LastMS), fmtMS(r.LastMS-r.FloorMS), r.EC2Admitted, r.EC2Throttled)
		}
	}
	fmt.Fprintf(stdout, "\nmedians over %d complete runs: first %s, p50 %s, last %s back in service; %.0f raft commits per failover\n",
		complete, fmtMS(res.MedianFirstMS), fmtMS(res.MedianP50MS), fmtMS(res.MedianLastMS), res.MedianCommits)
	if res.Error != "" {
		fmt.Fprintf(stdout, "failed: %s\n", res.Error)
	}
}

// massRateLimits returns the simulator's rate limits for o (nil without
// --rate-limits) and the mutating bucket they use.
func massRateLimits(o massOptions) (*sim.RateLimits, sim.Bucket) {
	b := sim.DefaultMutatingBucket
	if o.MutatingBucket != "" {
		if rl, err := simRateLimits(o.MutatingBucket); err == nil {
			b = rl.Mutating
		}
	}
	if !o.RateLimits {
		return nil, b
	}
	return &sim.RateLimits{Mutating: b}, b
}

// massAddress is hierarchy i's virtual IP (outside the simulated VPC).
func massAddress(i int) string { return fmt.Sprintf("10.200.%d.%d", i/250, i%250+1) }

// massThree returns the three-resource hierarchies: an app over a
// route-table virtual IP (ec2, its own /32 in the account's route table)
// over the same address on the owner's eth0 (ip), as in route-table mode
// on AWS.
func massThree(mc *massCluster, o massOptions) []spec.Hierarchy {
	rtb := mc.env.World.State().RouteTables[0].ID
	hs := make([]spec.Hierarchy, o.Hierarchies)
	flag := `"$LB_DATA_DIR/$LB_HIERARCHY.up"`
	for i := range hs {
		addr := massAddress(i) + "/32"
		hs[i] = spec.Hierarchy{Name: massName(i + 1), Nodes: []string{mc.owner, mc.standby, mc.leader}, Switchback: spec.SwitchbackAutomatic,
			MonitorInterval: spec.Duration(o.MonitorInterval),
			Resources: []spec.Resource{
				// No duplicate-address probe: 1,000 ARP probes per
				// readiness round measure nothing here.
				{Name: "addr", Type: "ip", Params: map[string]string{"address": addr, "interface": "eth0", "duplicate_check": "false"}},
				{Name: "vip", Type: "ec2", DependsOn: []string{"addr"}, Params: map[string]string{"mode": "route", "cidr": addr, "route_tables": rtb}},
				{Name: "flag", Type: "app", DependsOn: []string{"vip"}, Params: map[string]string{
					"restore": "touch " + flag, "remove": "rm -f " + flag, "quickcheck": "test -f " + flag}},
			}}
	}
	return hs
}
