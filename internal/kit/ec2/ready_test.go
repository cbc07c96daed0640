package ec2

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/probe"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// scaleWorld is the default world with more route tables in the same VPC
// (others, at least one), routes for routed destinations 10.200.x.y/32 in
// the first table (pointing at node1), and eips more Elastic IPs.
func scaleWorld(t testing.TB, routed, others, eips int) (*sim.World, []string) {
	t.Helper()
	st := sim.DefaultWorld([]string{"node1", "node2"}).State()
	rt := st.RouteTables[0]
	node1 := ""
	for _, n := range st.NetworkInterfaces {
		if n.Attachment != nil && n.Attachment.InstanceID == st.Instances[0].ID {
			node1 = n.ID
		}
	}
	for i := range routed {
		rt.Routes = append(rt.Routes, sim.Route{DestinationCidrBlock: routedCIDR(i), NetworkInterfaceID: node1})
	}
	st.RouteTables[0] = rt
	for i := range max(others, 1) {
		st.RouteTables = append(st.RouteTables, sim.RouteTable{ID: fmt.Sprintf("rtb-%017x", 0xb00+i), VpcID: rt.VpcID,
			Routes: []sim.Route{{DestinationCidrBlock: "10.0.0.0/16", GatewayID: "local", State: "active", Origin: "CreateRouteTable"}}})
	}
	var allocs []string
	for i := range eips {
		id := fmt.Sprintf("eipalloc-%017x", 0xe000+i)
		st.Addresses = append(st.Addresses, sim.Address{AllocationID: id, PublicIP: fmt.Sprintf("100.64.%d.%d", i/250, 1+i%250)})
		allocs = append(allocs, id)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sim.ParseWorld(b)
	if err != nil {
		t.Fatal(err)
	}
	return w, allocs
}

func routedCIDR(i int) string { return fmt.Sprintf("10.200.%d.%d/32", i/250, 1+i%250) }

// callLog counts the API calls the simulator answered, by action and
// route table, and passes them on.
type callLog struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *callLog) wrap(next http.Handler) http.Handler {
	return intercept(func(_ http.ResponseWriter, f url.Values) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		key := f.Get("Action")
		for _, p := range []string{"RouteTableId", "RouteTableId.1"} {
			if rtb := f.Get(p); rtb != "" {
				key += " " + rtb
			}
		}
		c.calls[key]++
		return false
	})(next)
}

func (c *callLog) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[key]
}

func (c *callLog) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.calls {
		n += v
	}
	return n
}

// fleet is node2's view of many hierarchies, each one ec2 resource.
type fleet struct {
	world   *sim.World
	rtb     string // the first route table
	log     *callLog
	clients *awsapi.Clients
	params  map[string]map[string]string
	names   []string
}

// newFleet builds routedOnFirst hierarchies whose routes exist in the
// first route table, onOthers without routes spread over others more
// tables (at least one), and eips Elastic IP hierarchies.
func newFleet(t testing.TB, routedOnFirst, onOthers, others, eips int, meter func()) *fleet {
	w, allocs := scaleWorld(t, routedOnFirst, others, eips)
	log := &callLog{calls: map[string]int{}}
	hs := httptest.NewServer(log.wrap(sim.New(w, sim.Options{}).Handler()))
	t.Cleanup(hs.Close)
	st := w.State()
	eni := ""
	for _, n := range st.NetworkInterfaces {
		if n.Attachment != nil && n.Attachment.InstanceID == st.Instances[1].ID {
			eni = n.ID
		}
	}
	akid, secret, token, _ := w.IssueRoleCredentials("lifeboat-node2", 24*time.Hour)
	c, err := awsapi.New(context.Background(), awsapi.Settings{Region: w.Region(), Endpoints: awsapi.Endpoints{EC2: hs.URL, STS: hs.URL},
		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, token), CallTimeout: 5 * time.Second, MaxAttempts: 1,
		// No per-node request pacing: it runs on the real clock, while
		// these fleets are driven by the budget's fake one (hours of
		// probes in seconds; paced, a test waited 115 s for dry-run
		// tokens at the mutating bucket's 5 a second).
		Pace: &awsapi.Pace{}})
	if err != nil {
		t.Fatal(err)
	}
	if meter != nil {
		c = c.Metered(meter)
	}
	f := &fleet{world: w, rtb: st.RouteTables[0].ID, log: log, clients: c, params: map[string]map[string]string{}}
	add := func(name string, p map[string]string) {
		p[ParamENI] = eni
		f.params[name] = p
		f.names = append(f.names, name)
	}
	for i := range routedOnFirst {
		add(fmt.Sprintf("route-%04d", i), map[string]string{ParamMode: ModeRoute, ParamCIDR: routedCIDR(i), ParamRouteTables: f.rtb})
	}
	for i := range onOthers {
		rtb := st.RouteTables[1+i%(len(st.RouteTables)-1)].ID
		add(fmt.Sprintf("other-%04d", i), map[string]string{ParamMode: ModeRoute, ParamCIDR: fmt.Sprintf("10.201.%d.%d/32", i/250, 1+i%250), ParamRouteTables: rtb})
	}
	for i, a := range allocs {
		add(fmt.Sprintf("eip-%04d", i), map[string]string{ParamMode: ModeEIP, ParamAllocationID: a})
	}
	sort.Strings(f.names)
	return f
}

// ready probes hierarchy name as node2, its calls through calls (nil:
// direct).
func (f *fleet) ready(t testing.TB, name string, calls kit.ProbeCalls) kit.Readiness {
	inst, err := (&Kit{}).New(spec.Resource{Name: "vip", Type: "ec2", Params: f.params[name]},
		kit.Env{Node: "node2", Hierarchy: name, AWS: func(context.Context) (*awsapi.Clients, error) { return f.clients, nil }, Probes: calls})
	if err != nil {
		t.Fatal(err)
	}
	return inst.(kit.ReadinessProber).Ready(context.Background())
}

// Readiness at scale, against the simulator, on a fake clock driven by the
// scheduler and the budget as the agent drives them: many hierarchies
// routed through one table cost one dry run of each action on that table
// per period, a hierarchy on another table gets its own, the Elastic IPs
// (one resource each, nothing to share) take the budget, which stretches
// the period; and no minute ever holds more calls than the budget.
func TestReadinessAtScaleSharesAndKeepsTheBudget(t *testing.T) {
	const (
		perMinute = 60
		routed    = 200
		eips      = 150
	)
	interval := 5 * time.Minute
	clock := probe.NewFakeClock()
	budget := probe.NewBudget(clock, perMinute)
	var sentMu sync.Mutex
	var sent []time.Time
	f := newFleet(t, routed, 1, 1, eips, func() {
		budget.Spend()
		sentMu.Lock()
		sent = append(sent, clock.Now())
		sentMu.Unlock()
	})
	shared := probe.NewShared(budget, interval)
	sched := probe.NewScheduler(interval, 3*time.Second)
	start := clock.Now()
	sched.Sync(f.names, start)
	run := 30 * time.Minute
	proofs := map[string]int{}
	for {
		turn, _ := sched.Next()
		if d := turn.Due.Sub(clock.Now()); d > 0 {
			clock.Advance(d)
		}
		if clock.Now().Sub(start) >= run {
			break
		}
		shared.Stretch(sched.Period(clock.Now()))
		rd := f.ready(t, turn.Name, shared.View(turn.NotBefore))
		if !rd.Ready {
			t.Fatalf("%s NOT READY: %s", turn.Name, rd.Reason)
		}
		proofs[turn.Name]++
		clock.Advance(time.Millisecond) // the probe's own time
		sched.Done(turn.Name, clock.Now(), rd.Ready)
	}

	// Every request the simulator answered went through the budget.
	if got := f.log.total(); uint64(got) != budget.Made() {
		t.Fatalf("the simulator answered %d calls, the budget counted %d", got, budget.Made())
	}
	if got := maxPerMinute(sent); got > perMinute {
		t.Fatalf("%d calls within one minute, budget %d", got, perMinute)
	}
	// One dry run per period on the shared table, for 200 hierarchies.
	periods := int(run / interval)
	rtb := f.rtb
	for _, action := range []string{"ReplaceRoute", "CreateRoute", "DescribeRouteTables"} {
		n := f.log.get(action + " " + rtb)
		want := periods
		if action == "DescribeRouteTables" {
			want = 2 * periods // the dry-run canary and the read of the table
		}
		if n < want/2 || n > want+2 {
			t.Errorf("%s on %s: %d calls in %d periods for %d hierarchies, want about %d", action, rtb, n, periods, routed, want)
		}
	}
	second := f.world.State().RouteTables[1].ID
	if n := f.log.get("ReplaceRoute " + second); n == 0 {
		t.Errorf("no ReplaceRoute dry run on %s: its hierarchy shared another table's proof", second)
	}
	// The Elastic IPs need 2 calls each a pass, 300 in all: more than a
	// 5-minute period of a 60-call budget holds. Every one was proven,
	// less often than every interval, and the schedule knows it is late.
	for i := range eips {
		name := fmt.Sprintf("eip-%04d", i)
		if proofs[name] == 0 || proofs[name] >= periods {
			t.Fatalf("%s proven %d times in %d periods, want fewer (budget-bound) but some", name, proofs[name], periods)
		}
	}
	if late := sched.Late(clock.Now()); late <= 0 {
		t.Fatal("the schedule is not late, yet the budget cannot cover a pass in an interval")
	}
	if budget.Deferred() == 0 {
		t.Fatal("no call was deferred")
	}
	t.Logf("%s: %d calls (%.0f a minute), %d deferred, %d answers shared, ReplaceRoute on the shared table %d",
		run, budget.Made(), float64(budget.Made())/run.Minutes(), budget.Deferred(), shared.Reused(), f.log.get("ReplaceRoute "+rtb))
}

// maxPerMinute is the most calls within any 60 s.
func maxPerMinute(ts []time.Time) int {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= time.Minute {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// A refused permission is proven refused for every hierarchy that shares
// the call, in the same words, decoded once; a NOT READY hierarchy's retry
// wants answers newer than its verdict, so a grant is seen at once.
func TestSharedRefusalAndRetry(t *testing.T) {
	clock := probe.NewFakeClock()
	budget := probe.NewBudget(clock, 6000)
	f := newFleet(t, 20, 0, 0, 0, budget.Spend)
	shared := probe.NewShared(budget, 5*time.Minute)
	policy, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": []map[string]any{{"Effect": "Allow", "Resource": "*",
		"Action": []string{"ec2:DescribeRouteTables", "ec2:DescribeNetworkInterfaceAttribute", "ec2:DescribeNetworkInterfaces", "ec2:CreateRoute", "ec2:ModifyNetworkInterfaceAttribute", "sts:DecodeAuthorizationMessage"}}}})
	if err := f.world.PutRolePolicy("lifeboat-node2", sim.PlaceholderPolicyName, policy); err != nil {
		t.Fatal(err)
	}
	var first kit.Readiness
	for i, name := range f.names {
		rd := f.ready(t, name, shared.View(time.Time{}))
		if rd.Ready || len(rd.Missing) != 1 || rd.Missing[0] != "ec2:ReplaceRoute" {
			t.Fatalf("%s: %+v, want NOT READY missing ec2:ReplaceRoute", name, rd)
		}
		if i == 0 {
			first = rd
		} else if rd.Reason != first.Reason {
			t.Fatalf("%s: reason %q, the first hierarchy's %q", name, rd.Reason, first.Reason)
		}
	}
	if n := f.log.get("ReplaceRoute " + f.rtb); n != 1 {
		t.Fatalf("%d ReplaceRoute dry runs for %d hierarchies on one table, want 1", n, len(f.names))
	}
	if n := f.log.get("DecodeAuthorizationMessage"); n != 1 {
		t.Fatalf("the refusal was decoded %d times, want once", n)
	}
	// Granted: the retry (answers newer than the verdict) sees it.
	verdict := clock.Now()
	clock.Advance(3 * time.Second)
	if err := f.world.PutRolePolicy("lifeboat-node2", sim.PlaceholderPolicyName, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)); err != nil {
		t.Fatal(err)
	}
	for _, name := range f.names {
		if rd := f.ready(t, name, shared.View(verdict)); !rd.Ready {
			t.Fatalf("%s still NOT READY after the grant: %s", name, rd.Reason)
		}
	}
	if n := f.log.get("ReplaceRoute " + f.rtb); n != 2 {
		t.Fatalf("%d ReplaceRoute dry runs, want 2 (one per verdict)", n)
	}
}

// BenchmarkReadinessCalls prints the AWS calls a node's readiness costs
// for 1,000 hierarchies, before (every probe calls for itself, a round
// every readiness_interval) and after (answers shared, the 60-call budget,
// the scheduler spreading probes over the interval): calls a minute, and
// the period in which every hierarchy is proven again. Run it with
//
//	go test -run '^$' -bench ReadinessCalls -benchtime 1x ./internal/kit/ec2/
func BenchmarkReadinessCalls(b *testing.B) {
	interval := 5 * time.Minute
	layouts := []struct {
		name                 string
		routed, tables, eips int
	}{
		{"1000-routes-1-table", 1000, 1, 0},
		{"1000-routes-10-tables", 1000, 10, 0},
		{"1000-routes-100-tables", 1000, 100, 0},
		// Each probe alone, the most calls per hierarchy: a bound rather
		// than a layout (a private IP holds one Elastic IP at a time).
		{"1000-eips", 0, 0, 1000},
	}
	for _, lay := range layouts {
		b.Run(lay.name+"/before", func(b *testing.B) {
			for range b.N {
				f := newSpreadFleet(b, lay.routed, lay.tables, lay.eips, nil)
				for _, name := range f.names {
					if rd := f.ready(b, name, nil); !rd.Ready {
						b.Fatalf("%s NOT READY: %s", name, rd.Reason)
					}
				}
				b.ReportMetric(float64(f.log.total())/interval.Minutes(), "calls/min")
				b.ReportMetric(interval.Seconds(), "period-s")
			}
		})
		b.Run(lay.name+"/after", func(b *testing.B) {
			for range b.N {
				clock := probe.NewFakeClock()
				budget := probe.NewBudget(clock, probe.DefaultPerMinute)
				f := newSpreadFleet(b, lay.routed, lay.tables, lay.eips, budget.Spend)
				shared := probe.NewShared(budget, interval)
				sched := probe.NewScheduler(interval, 3*time.Second)
				start := clock.Now()
				sched.Sync(f.names, start)
				run := 2 * time.Hour
				last := map[string]time.Time{}
				seen := map[string]bool{}
				var period time.Duration
				for {
					turn, _ := sched.Next()
					if d := turn.Due.Sub(clock.Now()); d > 0 {
						clock.Advance(d)
					}
					if clock.Now().Sub(start) >= run {
						break
					}
					shared.Stretch(sched.Period(clock.Now()))
					rd := f.ready(b, turn.Name, shared.View(turn.NotBefore))
					if !rd.Ready {
						b.Fatalf("%s NOT READY: %s", turn.Name, rd.Reason)
					}
					clock.Advance(time.Millisecond)
					// the period: from a hierarchy's second proof on (the
					// first round runs at once, then spreads out)
					t, ok := last[turn.Name]
					if ok && seen[turn.Name] {
						period = max(period, clock.Now().Sub(t))
					}
					seen[turn.Name] = ok
					last[turn.Name] = clock.Now()
					sched.Done(turn.Name, clock.Now(), true)
				}
				b.ReportMetric(float64(budget.Made())/run.Minutes(), "calls/min")
				b.ReportMetric(period.Seconds(), "period-s")
			}
		})
	}
}

// newSpreadFleet is a fleet of routed hierarchies spread over tables
// route tables (the first holds its share's routes, the others none) and
// eips Elastic IP hierarchies.
func newSpreadFleet(b testing.TB, routed, tables, eips int, meter func()) *fleet {
	if tables <= 1 {
		return newFleet(b, routed, 0, 0, eips, meter)
	}
	perTable := routed / tables
	return newFleet(b, perTable, routed-perTable, tables-1, eips, meter)
}

// A failover never waits for readiness: with the budget spent for an hour
// ahead and a probe waiting for it, a restore (which gets the node's own
// clients, never the probes' metered ones) moves the route at once, and
// none of its calls counts against the budget.
func TestRestoreNeverWaitsForTheReadinessBudget(t *testing.T) {
	budget := probe.NewBudget(probe.Real, 10)
	f := newFleet(t, 2, 0, 0, 0, nil)
	node := f.clients
	f.clients = node.Metered(budget.Spend) // the probes' clients
	for range 600 {
		budget.Spend() // an hour of debt at 10 a minute
	}
	made := budget.Made()
	shared := probe.NewShared(budget, 5*time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	probed := make(chan kit.Readiness, 1)
	go func() {
		inst, err := (&Kit{}).New(spec.Resource{Name: "vip", Type: "ec2", Params: f.params[f.names[0]]},
			kit.Env{Node: "node2", Hierarchy: f.names[0], AWS: func(context.Context) (*awsapi.Clients, error) { return f.clients, nil }, Probes: shared.View(time.Time{})})
		if err != nil {
			probed <- kit.Readiness{Reason: err.Error()}
			return
		}
		probed <- inst.(kit.ReadinessProber).Ready(ctx)
	}()
	inst, err := (&Kit{}).New(spec.Resource{Name: "vip", Type: "ec2", Params: f.params[f.names[1]]},
		kit.Env{Node: "node2", Hierarchy: f.names[1], AWS: func(context.Context) (*awsapi.Clients, error) { return node, nil }})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if err := inst.Restore(rctx); err != nil {
		t.Fatalf("restore while the readiness budget is spent: %v", err)
	}
	if r, _ := f.world.Route(f.rtb, routedCIDR(1)); r.NetworkInterfaceID != f.params[f.names[1]][ParamENI] {
		t.Fatalf("route %s points at %q after the restore", routedCIDR(1), r.NetworkInterfaceID)
	}
	select {
	case rd := <-probed:
		t.Fatalf("the probe did not wait for the budget: %+v", rd)
	default:
	}
	if budget.Made() != made {
		t.Fatalf("the restore's calls were counted against the readiness budget (%d more)", budget.Made()-made)
	}
	cancel()
	if rd := <-probed; rd.Ready {
		t.Fatalf("a probe cut off while waiting for the budget came back READY: %+v", rd)
	}
}

// Held back by the budget, hierarchies on the same tables still share:
// answers live as long as the probes take to come round (not just one
// interval, which would make every hierarchy whose turn comes later in a
// stretched period call again, and the period grow without end). 500
// hierarchies on 100 tables need about 400 calls a pass, more than a
// 5-minute interval holds at 60 a minute: every hierarchy is still proven
// about every 9 minutes.
func TestBudgetBoundProbesStillShare(t *testing.T) {
	interval := 5 * time.Minute
	clock := probe.NewFakeClock()
	budget := probe.NewBudget(clock, probe.DefaultPerMinute)
	f := newSpreadFleet(t, 500, 100, 0, budget.Spend)
	shared := probe.NewShared(budget, interval)
	sched := probe.NewScheduler(interval, 3*time.Second)
	start := clock.Now()
	sched.Sync(f.names, start)
	run := time.Hour
	proofs := map[string]int{}
	for clock.Now().Sub(start) < run {
		turn, _ := sched.Next()
		if d := turn.Due.Sub(clock.Now()); d > 0 {
			clock.Advance(d)
		}
		shared.Stretch(sched.Period(clock.Now()))
		if rd := f.ready(t, turn.Name, shared.View(turn.NotBefore)); !rd.Ready {
			t.Fatalf("%s NOT READY: %s", turn.Name, rd.Reason)
		}
		clock.Advance(time.Millisecond)
		proofs[turn.Name]++
		sched.Done(turn.Name, clock.Now(), true)
	}
	if sched.Late(clock.Now()) == 0 {
		t.Fatal("not held back by the budget: the test proves nothing")
	}
	least := -1
	for _, name := range f.names {
		if least < 0 || proofs[name] < least {
			least = proofs[name]
		}
	}
	// 60 minutes / about 9 per pass; each probe on its own would make one
	// pass in about 45 minutes.
	if least < 5 {
		t.Fatalf("a hierarchy proven only %d times in %s (%d calls): the shared answers expired within the stretched period", least, run, budget.Made())
	}
	t.Logf("every hierarchy proven at least %d times in %s, %d calls", least, run, budget.Made())
}
