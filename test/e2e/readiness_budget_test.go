package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Readiness at scale on real agents, every node proving every hierarchy
// every 10 s within a budget of 60 AWS calls a minute. First 40
// hierarchies routed through one route table: their dry runs are shared,
// one ReplaceRoute dry run on the table per node and period rather than
// one per hierarchy, and the budget covers them. Then 20 more, each on a
// route table of its own (nothing to share): a pass needs more calls than
// the budget has, every node's calls stay within it, the period stretches,
// and status, doctor and the metrics say so.
func TestReadinessBudgetAndSharingOnAgents(t *testing.T) {
	const routed, alone, budget = 40, 20, 60
	st := sim.DefaultWorld(three).State()
	vpc := st.RouteTables[0].VpcID
	for i := range alone {
		st.RouteTables = append(st.RouteTables, sim.RouteTable{ID: fmt.Sprintf("rtb-%017x", 0xa00+i), VpcID: vpc,
			Routes: []sim.Route{{DestinationCidrBlock: "10.0.0.0/16", GatewayID: "local", State: "active", Origin: "CreateRouteTable"}}})
	}
	b, _ := json.Marshal(st)
	w, err := sim.ParseWorld(b)
	if err != nil {
		t.Fatal(err)
	}
	// The simulator logs every request with its answer: a dry run that
	// would have succeeded answers DryRunOperation.
	var mu sync.Mutex
	calls := map[string]int{}
	env, err := demo.StartSimWorld(w, three, nil, sim.Options{Logf: func(format string, args ...any) {
		if len(args) >= 5 {
			mu.Lock()
			calls[fmt.Sprint(args[0], ":", args[1], " ", args[4])]++
			mu.Unlock()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	dryRuns := func(action string) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[action+" DryRunOperation"]
	}
	nodeConfig := func(n string) string {
		return strings.Replace(env.NodeConfig(n), "aws:\n", fmt.Sprintf("aws:\n  readiness_calls_per_minute: %d\n", budget), 1)
	}
	c := startCluster(t, demo.Options{ExtraConfig: "readiness_interval: 10s\n", NodeConfig: nodeConfig})
	route := func(name, cidr, rtb string) spec.Hierarchy {
		return spec.Hierarchy{Name: name, Nodes: three, Switchback: spec.SwitchbackIntelligent, MonitorInterval: spec.Duration(time.Minute),
			Resources: []spec.Resource{{Name: "vip", Type: "ec2", Params: map[string]string{"mode": "route", "cidr": cidr, "route_tables": rtb}}}}
	}
	var hs []spec.Hierarchy
	for i := range routed {
		hs = append(hs, route(fmt.Sprintf("r%02d", i), fmt.Sprintf("10.0.100.%d/32", i+1), st.RouteTables[0].ID))
	}
	var more []spec.Hierarchy
	for i := range alone {
		more = append(more, route(fmt.Sprintf("t%02d", i), fmt.Sprintf("10.0.101.%d/32", i+1), st.RouteTables[1+i].ID))
	}
	if err := env.GrantLeastPrivilege(three, append(hs, more...)); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	apply(t, c, hs...)
	allReady := func(n int) func(api.Status) bool {
		return func(st api.Status) bool {
			for _, h := range st.Hierarchies {
				if h.State != "online" || len(h.Readiness) != 3 {
					return false
				}
				for _, rd := range h.Readiness {
					if !rd.Ready {
						return false
					}
				}
			}
			return len(st.Hierarchies) == n
		}
	}
	waitFor(t, c, "node1", 2*time.Minute, "every hierarchy online and every node READY for it", allReady(routed))

	// A span of time is what is measured: nothing to wait on.
	made := map[string]float64{}
	for _, n := range three {
		made[n] = readinessMetric(t, c, n, "lifeboat_readiness_aws_calls_total")
	}
	before, start := dryRuns("ec2:ReplaceRoute"), time.Now()
	t.Logf("every node READY for %d hierarchies after %s", routed, time.Since(began).Round(time.Second))
	time.Sleep(25 * time.Second)
	took := time.Since(start)
	got := dryRuns("ec2:ReplaceRoute") - before
	// Each node: one ReplaceRoute dry run on the table per 10 s period,
	// for all 40 hierarchies (each probe on its own: 40 a period).
	periods := int(took/(10*time.Second)) + 1
	if limit := 3 * periods; got > limit || got == 0 {
		t.Errorf("%d ReplaceRoute dry runs proven in %s for %d hierarchies on one table: want 1 to %d (one per node and period)", got, took.Round(time.Second), routed, limit)
	}
	for _, n := range three {
		used := readinessMetric(t, c, n, "lifeboat_readiness_aws_calls_total") - made[n]
		// The budget's bucket: a burst of a quarter of it, the rest
		// refilled over the minute.
		if limit := float64(budget)/4 + float64(budget)*3/4*took.Minutes(); used > limit {
			t.Errorf("%s: %.0f readiness calls in %s, budget %d a minute", n, used, took.Round(time.Second), budget)
		}
		t.Logf("%s: %.0f readiness calls in %s", n, used, took.Round(time.Second))
		if readinessMetric(t, c, n, "lifeboat_readiness_aws_answers_shared_total") == 0 {
			t.Errorf("%s: no answer shared", n)
		}
	}
	t.Logf("%d ReplaceRoute dry runs in %s for %d hierarchies on one table, 3 nodes", got, took.Round(time.Second), routed)

	// 20 tables of their own: about 80 calls a pass a node, 480 a
	// minute at 10 s, against a budget of 60.
	apply(t, c, more...)
	began = time.Now()
	st2 := waitFor(t, c, "node2", 3*time.Minute, "every node's readiness shown held back by its budget", func(st api.Status) bool {
		for _, n := range st.Nodes {
			if !n.Witness && (n.ReadinessPace == nil || !n.ReadinessPace.BudgetBound) {
				return false
			}
		}
		return true
	})
	t.Logf("every node's readiness shown held back by its budget after %s", time.Since(began).Round(time.Second))
	for _, n := range st2.Nodes {
		if p := n.ReadinessPace; p != nil && (p.PeriodMS <= 10_000 || p.BudgetPerMinute != budget) {
			t.Errorf("%s: pace %+v, want a period beyond the 10 s interval and the budget %d", n.Name, *p, budget)
		}
	}
	for _, n := range three {
		if readinessMetric(t, c, n, "lifeboat_readiness_aws_calls_deferred_total") == 0 {
			t.Errorf("%s: no call waited for the budget", n)
		}
	}
	out, _, _ := lifeboat(t, c, "node2", "status")
	if !strings.Contains(out, "AWS call budget of 60 calls a minute holds the probes back") {
		t.Errorf("status does not say the budget holds readiness back:\n%s", out)
	}
	// An operator's doctor run does not queue behind the probes the
	// budget holds back (it took over two minutes when it did).
	began = time.Now()
	out, _, _ = lifeboat(t, c, "node2", "doctor", "--node", "node2")
	// Half its run's 2-minute bound, which it reached when it queued.
	took = time.Since(began)
	t.Logf("doctor took %s while the budget held readiness back", took.Round(time.Millisecond))
	if took > time.Minute {
		t.Errorf("doctor took %s while the budget held readiness back: its calls queued behind the probes", took.Round(time.Second))
	}
	if !strings.Contains(out, "readiness_calls_per_minute") {
		t.Errorf("doctor does not name the budget:\n%s", out)
	}

	// A switchover to a node whose probes the budget holds back: the
	// target proves that one hierarchy first, ahead of its late turns,
	// and the move itself never waits for the budget.
	st3 := waitFor(t, c, "node3", time.Minute, "t07 online", func(st api.Status) bool { return hier(st, "t07").State == "online" })
	owner := hier(st3, "t07").Owner
	to := "node1"
	if owner == to {
		to = "node2"
	}
	began = time.Now()
	out, errOut, code := lifeboat(t, c, "node3", "switchover", "t07", "--to", to)
	if code != 0 {
		t.Fatalf("switchover to %s while its readiness is held back by the budget: exit %d: %s%s", to, code, out, errOut)
	}
	took = time.Since(began)
	if st := waitFor(t, c, "node3", 10*time.Second, "t07 online on "+to, onlineOn("t07", to)); hier(st, "t07").Readiness[to].Ready != true {
		t.Errorf("t07 moved to %s, which is not shown READY for it", to)
	}
	t.Logf("switchover t07 %s -> %s (its readiness held back by the budget) took %s: %s", owner, to, took.Round(time.Millisecond), strings.TrimSpace(out))
}

// readinessMetric reads an unlabelled figure from node's /metrics.
func readinessMetric(t *testing.T, c *demo.Cluster, node, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := c.Client(node).Text(ctx, "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", node, err)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no %s in %s's metrics", name, node)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
