package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

func benchCmd() *cobra.Command {
	var runs int
	var dir string
	var idle, awsLatency time.Duration
	components := true
	var profile string
	var awsMode bool
	var mass massOptions
	cmd := &cobra.Command{
		Use:   "bench [--runs N]",
		Short: "Measure failover time (owner killed -> in service elsewhere), idle CPU and memory",
		Long: `Start a three-node cluster on 127.0.0.1 (real agent processes, default settings),
then N times: kill -9 the owner of a one-resource hierarchy and measure the time
until another node reports it in service; restart the killed node and wait for
it to rejoin. Prints every run, the median, and each agent's idle CPU and RSS
(over --idle, from /proc), then where that CPU goes: a CPU profile of every
agent over as long again (Go's profiler through the agent's socket; not in the
first window, its reader wakes the agent ten times a second), its samples split
by component: the innermost frame of lifeboat's or its cluster libraries' code
decides (raft, leases, memberlist, engine and kits, commands, agent and API),
else the runtime's or a library's own (the Go scheduler, sysmon, GC, TLS).
At 0.5% of a core a 20 s profile holds about 10 samples: use --idle 60s or
more for shares worth reading.

With --hierarchies N: a mass failover instead. N one-resource app hierarchies
whose first-priority node is the same follower; each run kills that node with
kill -9 and measures, from the kill, until the first, the median and the last
hierarchy is reported online on another node (the raft leader's status, read
again --poll after each answer), and how many raft entries were committed
meanwhile; then the node is restarted and must rejoin. Each run has a cluster
of its own (with --switchback one cluster serves all runs and automatic
switchback brings the hierarchies home). --agent-binary runs the agents with
another lifeboat binary (e.g. the previous release).

With --three (root): each hierarchy is an app over a route-table virtual IP
(ec2 kit, its own /32 in the simulated account's route table) over the same
address on the owner's interface (ip kit), the nodes each a host of their own
on a network of namespaces, the simulator in the router. --rate-limits makes
the simulator throttle EC2 calls as AWS does from the kill on, and prints the
floor its mutating bucket imposes on N ReplaceRoute calls, (N - capacity) /
refill, beside the time the last hierarchy was back.`,
		Example: `  lifeboat bench --runs 15
  lifeboat bench --runs 10 --json
  lifeboat bench --runs 10 --profile fast
  lifeboat bench --aws --aws-latency 100ms --runs 10
  lifeboat bench --hierarchies 200 --runs 5
  lifeboat bench --hierarchies 200 --runs 5 --agent-binary /tmp/lifeboat-prev --json
  sudo lifeboat bench --hierarchies 1000 --three --runs 3
  sudo lifeboat bench --hierarchies 400 --three --rate-limits --mutating-bucket 100/20 --runs 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if mass.Hierarchies < 0 {
				return codeErr{exitUsage, fmt.Errorf("--hierarchies %d: must be 0 or more", mass.Hierarchies)}
			}
			if mass.Hierarchies == 0 && mass.AgentBinary != "" {
				return codeErr{exitUsage, fmt.Errorf("--agent-binary goes with --hierarchies")}
			}
			if (mass.Three || mass.ReadinessInterval != 0) && mass.Hierarchies == 0 {
				return codeErr{exitUsage, fmt.Errorf("--three and --readiness-interval go with --hierarchies")}
			}
			if (mass.RateLimits || mass.MutatingBucket != "") && !mass.Three {
				return codeErr{exitUsage, fmt.Errorf("--rate-limits and --mutating-bucket go with --three")}
			}
			if mass.MutatingBucket != "" {
				if _, err := simRateLimits(mass.MutatingBucket); err != nil {
					return codeErr{exitUsage, err}
				}
			}
			if awsMode {
				if mass.Hierarchies > 0 {
					return codeErr{exitUsage, fmt.Errorf("--aws and --hierarchies do not go together")}
				}
				return runAWSBench(runs, dir, awsLatency)
			}
			if profile != config.ProfileDefault && profile != config.ProfileFast {
				return codeErr{exitUsage, fmt.Errorf("--profile %q: use %s or %s", profile, config.ProfileDefault, config.ProfileFast)}
			}
			if mass.Hierarchies > 0 {
				mass.Runs, mass.Dir, mass.Profile = runs, dir, profile
				progress := func(format string, args ...any) {
					if !g.json {
						fmt.Fprintf(stdout, format+"\n", args...)
					}
				}
				res, err := runMassBench(mass, progress)
				if res == nil {
					return codeErr{exitFailure, err}
				}
				// The runs before a failure are worth keeping.
				if g.json {
					if perr := printJSON(res); perr != nil {
						return perr
					}
				} else {
					printMass(res)
				}
				if err != nil {
					return codeErr{exitFailure, err}
				}
				return nil
			}
			res, err := runBench(runs, dir, idle, profile, components)
			if err != nil {
				return codeErr{exitFailure, err}
			}
			if g.json {
				return printJSON(res)
			}
			for i, d := range res.FailoverMS {
				fmt.Fprintf(stdout, "run %2d: failover %.0f ms, declared failed after %.0f ms (owner was leader: %v)\n", i+1, d, res.DetectMS[i], res.OwnerWasLeader[i])
			}
			fmt.Fprintf(stdout, "\nfailover median %.0f ms, min %.0f ms, max %.0f ms over %d runs\n", res.MedianMS, res.MinMS, res.MaxMS, len(res.FailoverMS))
			fmt.Fprintf(stdout, "owner was a follower: median %.0f ms; owner was the raft leader: median %.0f ms\n", res.FollowerMedianMS, res.LeaderMedianMS)
			fmt.Fprintf(stdout, "failure detection (kill -> declared failed): median %.0f ms\n", res.DetectMedianMS)
			for _, n := range res.Idle {
				role := ""
				if n.Role != "" {
					role = " (" + n.Role + ")"
				}
				fmt.Fprintf(stdout, "idle %s%s: CPU %.2f%% of one core over %s, RSS %.1f MiB\n", n.Node, role, n.CPUPercent, idle, n.RSSMiB)
				if n.Profile != nil {
					fmt.Fprintf(stdout, "  by component: %s\n", componentsLine(*n.Profile, idle))
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&runs, "runs", 10, "number of failovers to measure")
	cmd.Flags().StringVar(&dir, "dir", "", "working directory (default: a new temporary directory)")
	cmd.Flags().DurationVar(&idle, "idle", 10*time.Second, "how long to measure idle CPU")
	cmd.Flags().BoolVar(&components, "components", true, "after the idle CPU window, a CPU profile of every agent over as long again, split by component (raft, leases, memberlist, the Go scheduler, ...)")
	cmd.Flags().StringVar(&profile, "profile", config.ProfileDefault, "timing profile of the agents: default or fast")
	cmd.Flags().BoolVar(&awsMode, "aws", false, "measure a route-table failover on the AWS simulator: kill -> the VIP route points at the new node")
	cmd.Flags().DurationVar(&awsLatency, "aws-latency", 100*time.Millisecond, "with --aws: the simulator's latency per EC2 call")
	cmd.Flags().IntVar(&mass.Hierarchies, "hierarchies", 0, "mass failover: N one-resource app hierarchies on one node, that node killed")
	cmd.Flags().StringVar(&mass.AgentBinary, "agent-binary", "", "with --hierarchies: run the agents with this lifeboat binary (default: this one)")
	cmd.Flags().DurationVar(&mass.MonitorInterval, "monitor-interval", 10*time.Second, "with --hierarchies: every hierarchy's monitor interval (each check forks a shell)")
	cmd.Flags().DurationVar(&mass.Poll, "poll", 25*time.Millisecond, "with --hierarchies: the pause after each answer before the leader's status is read again during a failover")
	cmd.Flags().Float64Var(&mass.MaxOther, "max-other-cpu", 0.25, "with --hierarchies: start a run once other processes use at most this many cores (a shared machine)")
	cmd.Flags().DurationVar(&mass.OnlineTimeout, "online-timeout", 3*time.Minute, "with --hierarchies: how long a run waits for every hierarchy to be online (on the first node, then elsewhere after the kill) before it counts as failed")
	cmd.Flags().BoolVar(&mass.Switchback, "switchback", false, "with --hierarchies: one cluster for every run, automatic switchback brings the hierarchies home (default: a cluster per run)")
	cmd.Flags().BoolVar(&mass.Three, "three", false, "with --hierarchies: three-resource hierarchies (app over an ec2 route over its ip address) on a network of namespaces with the simulator in the router (root)")
	cmd.Flags().BoolVar(&mass.RateLimits, "rate-limits", false, "with --three: the simulator throttles EC2 as AWS does from the kill on; the agents pace with the same buckets (without it they do not pace)")
	cmd.Flags().StringVar(&mass.MutatingBucket, "mutating-bucket", "", "with --rate-limits: CAPACITY/REFILL of each mutating action's bucket (default AWS's 200/5)")
	cmd.Flags().DurationVar(&mass.ReadinessInterval, "readiness-interval", 0, "with --hierarchies: the agents' readiness_interval (default theirs)")
	cmd.Flags().DurationVar(&mass.QuietWait, "quiet-wait", 2*time.Minute, "with --hierarchies: how long a run waits for --max-other-cpu before it starts anyway")
	cmd.AddCommand(benchDowntimeCmd(), benchResponderCmd(), benchRejoinCmd())
	return cmd
}

type idleFigure struct {
	Node       string  `json:"node"`
	CPUPercent float64 `json:"cpu_percent"`
	RSSMiB     float64 `json:"rss_mib"`
	// Role: "leader", "owner" (of the bench hierarchy), both, or "".
	Role string `json:"role,omitempty"`
	// Profile splits the node's CPU by component, from a CPU profile over
	// a second window as long as the first (with --components).
	Profile *componentFigures `json:"profile,omitempty"`
}

type benchResult struct {
	FailoverMS []float64 `json:"failover_ms"`
	// DetectMS: kill -> the failure detector declares the node failed.
	DetectMS       []float64 `json:"detect_ms"`
	DetectMedianMS float64   `json:"detect_median_ms"`
	OwnerWasLeader []bool    `json:"owner_was_leader"`
	MedianMS       float64   `json:"median_ms"`
	MinMS          float64   `json:"min_ms"`
	MaxMS          float64   `json:"max_ms"`
	// Medians split by whether the killed owner was also the raft leader.
	FollowerMedianMS float64      `json:"follower_median_ms"`
	LeaderMedianMS   float64      `json:"leader_median_ms"`
	Idle             []idleFigure `json:"idle"`
}

func runBench(runs int, dir string, idle time.Duration, profile string, components bool) (*benchResult, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "lifeboat-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	c, err := demo.Start(demo.Options{Dir: dir, Nodes: 3, ExtraConfig: "timing:\n  profile: " + profile + "\n"})
	if err != nil {
		return nil, err
	}
	defer c.Kill()
	// SIGINT or SIGTERM ends the bench through ctx: the agents it
	// started are killed on the way out.
	sctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// the runs, and the idle windows (CPU, then the profile)
	ctx, cancel := context.WithTimeout(sctx, time.Duration(runs+2)*time.Minute+idleSettle+2*idle)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		return nil, err
	}
	h := spec.Hierarchy{Name: "bench", Nodes: []string{"node1", "node2", "node3"}, MonitorInterval: spec.Duration(time.Second),
		Resources: []spec.Resource{{Name: "flag", Type: "app", Params: map[string]string{
			"restore": `touch "$LB_DATA_DIR/bench.up"`, "remove": `rm -f "$LB_DATA_DIR/bench.up"`, "quickcheck": `test -f "$LB_DATA_DIR/bench.up"`}}}}
	if err := c.Apply(ctx, api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}}); err != nil {
		return nil, err
	}
	res := &benchResult{}
	// idle figures first, with the hierarchy in service, once the start's
	// own work (readiness proofs, the first checks) has settled
	owner, _, err := benchOwner(ctx, c, "", 0)
	if err != nil {
		return nil, err
	}
	time.Sleep(idleSettle) // measuring a steady state, not synchronising
	if res.Idle, err = idleFigures(ctx, c, idle); err != nil {
		return nil, err
	}
	if components {
		by := idleComponents(ctx, c, idle)
		for i := range res.Idle {
			f := by[res.Idle[i].Node]
			res.Idle[i].Profile = &f
		}
	}
	leader := ""
	if st, err := c.Status(ctx, owner); err == nil {
		leader = st.Leader
	}
	for i := range res.Idle {
		var roles []string
		if res.Idle[i].Node == leader {
			roles = append(roles, "leader")
		}
		if res.Idle[i].Node == owner {
			roles = append(roles, "owner")
		}
		res.Idle[i].Role = strings.Join(roles, ", ")
	}
	for i := 0; i < runs; i++ {
		owner, epoch, err := benchOwner(ctx, c, "", 0)
		if err != nil {
			return nil, err
		}
		st, err := c.Status(ctx, otherThan(c, owner))
		if err != nil {
			return nil, err
		}
		// Every other run, the owner is also the raft leader: then a new
		// leader must be elected as well.
		wantLeader := i%2 == 1
		if target := benchTarget(c, st, owner, wantLeader); target != "" {
			var o api.Outcome
			if err := c.Client(otherThan(c, "")).Do(ctx, "POST", "/v1/hierarchies/bench/switchover", api.MoveRequest{To: target}, &o); err != nil {
				return nil, fmt.Errorf("run %d: switchover to the leader: %w", i+1, err)
			}
			if owner, epoch, err = benchOwner(ctx, c, "", epoch); err != nil {
				return nil, err
			}
			if st, err = c.Status(ctx, otherThan(c, owner)); err != nil {
				return nil, err
			}
		}
		killed := time.Now()
		if err := c.Signal(owner, syscall.SIGKILL); err != nil {
			return nil, err
		}
		var detected time.Duration
		_, _, err = benchOwnerDetect(ctx, c, owner, epoch, func() { detected = time.Since(killed) })
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		d := time.Since(killed)
		if detected == 0 {
			// the hierarchy moved first; wait for the failure detector
			if err := waitNodeFailed(ctx, c, owner); err != nil {
				return nil, err
			}
			detected = time.Since(killed)
		}
		res.DetectMS = append(res.DetectMS, float64(detected.Microseconds())/1000)
		res.FailoverMS = append(res.FailoverMS, float64(d.Microseconds())/1000)
		res.OwnerWasLeader = append(res.OwnerWasLeader, st.Leader == owner)
		_ = c.WaitExit(ctx, owner)
		if err := c.StartNode(owner); err != nil {
			return nil, err
		}
		if err := c.WaitReady(ctx); err != nil {
			return nil, err
		}
	}
	res.MedianMS, res.MinMS, res.MaxMS = median(res.FailoverMS)
	res.DetectMedianMS, _, _ = median(res.DetectMS)
	var fol, lead []float64
	for i, d := range res.FailoverMS {
		if res.OwnerWasLeader[i] {
			lead = append(lead, d)
		} else {
			fol = append(fol, d)
		}
	}
	res.FollowerMedianMS, _, _ = median(fol)
	res.LeaderMedianMS, _, _ = median(lead)
	return res, nil
}

// median returns the median, minimum and maximum of xs (zeros when empty).
func median(xs []float64) (med, lo, hi float64) {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return 0, 0, 0
	}
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// benchTarget returns where to move the hierarchy so that its owner is (or
// is not) the raft leader, or "" when it already is as wanted.
func benchTarget(c *demo.Cluster, st api.Status, owner string, wantLeader bool) string {
	if st.Leader == "" || (owner == st.Leader) == wantLeader {
		return ""
	}
	if wantLeader {
		return st.Leader
	}
	for _, n := range c.Nodes {
		if n.Name != st.Leader && n.Running() {
			return n.Name
		}
	}
	return ""
}

func otherThan(c *demo.Cluster, name string) string {
	for _, n := range c.Nodes {
		if n.Name != name && n.Running() {
			return n.Name
		}
	}
	return name
}

// benchOwner polls a running node other than notOn until the hierarchy is
// online on a node other than notOn at an epoch above after.
func benchOwner(ctx context.Context, c *demo.Cluster, notOn string, after uint64) (string, uint64, error) {
	return benchOwnerDetect(ctx, c, notOn, after, nil)
}

// benchOwnerDetect is benchOwner that also calls failed (once) when the
// failure detector first reports notOn failed.
func benchOwnerDetect(ctx context.Context, c *demo.Cluster, notOn string, after uint64, failed func()) (string, uint64, error) {
	for {
		st, err := c.Status(ctx, otherThan(c, notOn))
		if err == nil && failed != nil {
			for _, n := range st.Nodes {
				if n.Name == notOn && n.State == "failed" {
					failed()
					failed = nil
				}
			}
		}
		if err == nil {
			for _, h := range st.Hierarchies {
				if h.State == "online" && h.Owner != notOn && h.Epoch > after {
					return h.Owner, h.Epoch, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", 0, fmt.Errorf("hierarchy not back in service: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func waitNodeFailed(ctx context.Context, c *demo.Cluster, node string) error {
	for {
		if st, err := c.Status(ctx, otherThan(c, node)); err == nil {
			for _, n := range st.Nodes {
				if n.Name == node && n.State == "failed" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never declared failed: %w", node, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// idleSettle is how long the bench lets a new cluster settle before it
// measures idle CPU: the first readiness proofs and checks are the start's
// work, not the steady cost.
const idleSettle = 5 * time.Second

// idleFigures measures each agent's CPU use over d from /proc and its RSS.
func idleFigures(ctx context.Context, c *demo.Cluster, d time.Duration) ([]idleFigure, error) {
	ticks := func(pid int) float64 {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			return 0
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		u, _ := strconv.ParseFloat(f[11], 64)
		s, _ := strconv.ParseFloat(f[12], 64)
		return u + s
	}
	before := map[string]float64{}
	for _, n := range c.Nodes {
		before[n.Name] = ticks(n.PID)
	}
	select { // measuring a duration, not synchronising
	case <-time.After(d):
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	var out []idleFigure
	for _, n := range c.Nodes {
		used := (ticks(n.PID) - before[n.Name]) / 100 // clock ticks at USER_HZ=100
		fig := idleFigure{Node: n.Name, CPUPercent: used / d.Seconds() * 100}
		if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(n.PID), "status")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, "VmRSS:") {
					kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
					fig.RSSMiB = kb / 1024
				}
			}
		}
		out = append(out, fig)
	}
	return out, nil
}

type awsBenchResult struct {
	LatencyMS  float64   `json:"latency_ms"`
	FailoverMS []float64 `json:"failover_ms"`
	MedianMS   float64   `json:"median_ms"`
	MinMS      float64   `json:"min_ms"`
	MaxMS      float64   `json:"max_ms"`
}

// runAWSBench measures kill -9 of the owner -> the VIP route in the
// simulated route table points at another node, with every EC2 call
// delayed by latency.
func runAWSBench(runs int, dir string, latency time.Duration) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "lifeboat-bench-aws-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	nodes := []string{"node1", "node2", "node3"}
	env, err := demo.StartSim(nodes)
	if err != nil {
		return err
	}
	defer env.Close()
	c, err := demo.Start(demo.Options{Dir: dir, Nodes: 3, NodeConfig: env.NodeConfig})
	if err != nil {
		return err
	}
	defer c.Kill()
	// SIGINT or SIGTERM ends the bench through ctx: the agents it
	// started are killed on the way out.
	sctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sctx, time.Duration(runs+2)*2*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		return err
	}
	app := spec.Resource{Name: "flag", Type: "app", Params: map[string]string{
		"restore": `touch "$LB_DATA_DIR/bench.up"`, "remove": `rm -f "$LB_DATA_DIR/bench.up"`, "quickcheck": `test -f "$LB_DATA_DIR/bench.up"`}}
	h := env.VIPHierarchy("bench", nodes, app)
	h.Resources = append(h.Resources[:1], h.Resources[2:]...) // route-table VIP and the app
	h.Resources[1].DependsOn = []string{"bench-vip"}
	if err := env.GrantLeastPrivilege(nodes, []spec.Hierarchy{h}); err != nil {
		return err
	}
	if err := c.Apply(ctx, api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}}); err != nil {
		return err
	}
	env.Server.SetFaults(sim.Faults{Latency: latency, Actions: []string{"ec2:*"}})
	const cidr = "10.0.100.10/32"
	res := awsBenchResult{LatencyMS: float64(latency.Microseconds()) / 1000}
	for i := 0; i < runs; i++ {
		owner, _, err := benchOwner(ctx, c, "", 0)
		if err != nil {
			return err
		}
		if err := demo.Wait(ctx, "route at the owner", func() bool { _, n := env.RouteTarget(cidr); return n == owner }); err != nil {
			return err
		}
		killed := time.Now()
		if err := c.Signal(owner, syscall.SIGKILL); err != nil {
			return err
		}
		for {
			if _, n := env.RouteTarget(cidr); n != "" && n != owner {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("run %d: the route never moved from %s", i+1, owner)
			case <-time.After(time.Millisecond):
			}
		}
		d := time.Since(killed)
		res.FailoverMS = append(res.FailoverMS, float64(d.Microseconds())/1000)
		if !g.json {
			fmt.Fprintf(stdout, "run %2d: route moved from %s in %.0f ms\n", i+1, owner, res.FailoverMS[i])
		}
		_ = c.WaitExit(ctx, owner)
		if err := c.StartNode(owner); err != nil {
			return err
		}
		if err := c.WaitReady(ctx); err != nil {
			return err
		}
	}
	res.MedianMS, res.MinMS, res.MaxMS = median(res.FailoverMS)
	if g.json {
		return printJSON(res)
	}
	fmt.Fprintf(stdout, "\nroute-table failover with %s per EC2 call: median %.0f ms, min %.0f ms, max %.0f ms over %d runs\n", latency, res.MedianMS, res.MinMS, res.MaxMS, runs)
	return nil
}
