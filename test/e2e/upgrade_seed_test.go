package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
)

// seedAction is the action this release added to the ec2 kit's route mode.
const seedAction = "ec2:DescribeNetworkInterfaces"

// seedReadinessInterval is the readiness interval of every agent in the
// seed's case: far longer than the test, so whatever readiness the test
// sees after a restart comes from the agent's first round, not a schedule.
const seedReadinessInterval = "5m"

// seedStatus runs the current binary's `lifeboat status --json` (with
// extra args) against node and decodes it.
func seedStatus(t *testing.T, c *demo.Cluster, node string, args ...string) (api.Status, error) {
	t.Helper()
	out, errOut, code := lifeboat(t, c, node, append([]string{"status", "--json"}, args...)...)
	var st api.Status
	if code != 0 {
		return st, fmt.Errorf("lifeboat status --json %v through %s: exit %d: %s", args, node, code, strings.TrimSpace(errOut))
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json through %s: not JSON: %v\n%s", node, err, out)
	}
	return st, nil
}

func seedPolicyActions(doc agent.PolicyDocument) []string {
	var as []string
	for _, st := range doc.Statement {
		as = append(as, st.Action...)
	}
	slices.Sort(as)
	return slices.Compact(as)
}

// TestSeedCase is the support case lifeboat exists for (DESIGN.md, "The
// problem it solves"), end to end against the real previous release: the
// new version needs one more IAM action than the role an operator of 0.1
// granted. `upgrade check` with the new binary names it before the
// upgrade; the upgraded standby shows NOT READY naming it right after its
// restart (not at the next failover, nor at the next readiness interval),
// the old owner keeps serving, a switchover to the upgraded standby is
// refused, a failover skips it for the ready old standby, and once the
// action is granted it is READY.
func TestSeedCase(t *testing.T) {
	testStart := time.Now()
	prevBin := previousBinary(t)
	if kits.Builtin().FirstNeeded(seedAction) == "" {
		t.Fatalf("this tree does not record when %s was first needed (the ec2 kit's step table)", seedAction)
	}
	env, err := demo.StartSim(three)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)

	// 1. Three agents of the previous release on the simulator.
	bins := map[string]string{}
	for _, n := range three {
		bins[n] = prevBin
	}
	c := startCluster(t, demo.Options{ShutdownStrategy: config.ShutdownSwitchover, Binaries: bins,
		ExtraConfig: "readiness_interval: " + seedReadinessInterval + "\n", NodeConfig: env.NodeConfig})
	app := flagHierarchy("db", three, spec.SwitchbackIntelligent, 1, "").Resources[0]
	h := env.VIPHierarchy("db", three, app)
	h.MonitorInterval = spec.Duration(200 * time.Millisecond)
	// The roles start with the simulator's placeholder policy (every EC2
	// action it implements), as a role does before the operator narrows it.
	apply(t, c, h)
	waitFor(t, c, "node3", 20*time.Second, "db online on node1", onlineOn("db", "node1"))

	// The policy an operator running 0.1 grants: what its agent prints.
	out, errOut, code := runCLI(t, prevBin, c.Node("node1").Socket, "iam-policy", "--json")
	if code != 0 {
		t.Fatalf("lifeboat %s iam-policy --json: exit %d: %s", prev.version, code, errOut)
	}
	oldDoc := []byte(out)
	var old agent.PolicyDocument
	if err := json.Unmarshal(oldDoc, &old); err != nil || len(old.Statement) == 0 {
		t.Fatalf("lifeboat %s iam-policy --json: %v\n%s", prev.version, err, out)
	}
	oldActions := seedPolicyActions(old)
	if slices.Contains(oldActions, seedAction) || !slices.Contains(oldActions, "ec2:ReplaceRoute") {
		t.Fatalf("the policy of lifeboat %s: want ec2:ReplaceRoute and not %s, got %v", prev.version, seedAction, oldActions)
	}
	newActions := seedPolicyActions(agent.LeastPrivilege(kits.Builtin(), []spec.Hierarchy{h}, env.World.Region(), env.World.AccountID()))
	added := slices.DeleteFunc(slices.Clone(newActions), func(a string) bool { return slices.Contains(oldActions, a) })
	t.Logf("lifeboat %s's least-privilege policy: %d statements, %d actions; this release's adds %v", prev.version, len(old.Statement), len(oldActions), added)
	if !slices.Equal(added, []string{seedAction}) {
		t.Errorf("this release's least-privilege policy adds %v to the previous release's, want exactly [%s]", added, seedAction)
	}
	for _, n := range three {
		role := env.Role(n)
		for name := range env.World.RolePolicies(role) {
			if err := env.World.DeleteRolePolicy(role, name); err != nil {
				t.Fatal(err)
			}
		}
		if err := env.World.PutRolePolicy(role, "lifeboat", oldDoc); err != nil {
			t.Fatal(err)
		}
	}
	// The old agents prove themselves under that policy (through the
	// leader: a follower may answer before it has the results).
	st, err := c.Status(t.Context(), "node1")
	if err != nil {
		t.Fatal(err)
	}
	leader := st.Leader
	if err := c.Client(leader).Do(t.Context(), "GET", "/v1/status?refresh=1", nil, &st); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node2", "node3"} {
		if r := hier(st, "db").Readiness[n]; !r.Ready {
			t.Fatalf("%s (lifeboat %s) NOT READY under its own least-privilege policy: %+v", n, prev.version, r)
		}
	}
	if _, node := env.RouteTarget("10.0.100.10/32"); node != "node1" {
		t.Fatalf("VIP route points at %q, want node1", node)
	}
	epoch := hier(st, "db").Epoch

	// 2. Before the upgrade, on the standby node2, with the new binary.
	// The old agent does not hand out its specs: the check says so, and
	// with the spec file it names the gap.
	cfg2 := c.Node("node2").Config
	specFile := filepath.Join(t.TempDir(), "db.json")
	b, _ := json.Marshal(api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}})
	if err := os.WriteFile(specFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rs, code := upgradeCheckJSON(t, c, "node2", "--config", cfg2)
	if r := rs["node2"]; code != 2 || r.Running != prev.version || !slices.ContainsFunc(r.Errors, func(e string) bool { return strings.Contains(e, "-f FILE") }) {
		t.Errorf("upgrade check without -f against lifeboat %s: exit %d, %+v", prev.version, code, r)
	}
	checked := time.Now()
	rs, code = upgradeCheckJSON(t, c, "node2", "--config", cfg2, "-f", specFile)
	r := rs["node2"]
	t.Logf("upgrade check -f on node2 (exit %d, %s): running %s, target %s, gaps %+v, errors %v", code, time.Since(checked).Round(time.Millisecond), r.Running, r.Target, r.Gaps, r.Errors)
	if code != 1 || r.Ready || len(r.Gaps) != 1 || r.Running != prev.version {
		t.Fatalf("upgrade check -f on node2: exit %d, %+v", code, r)
	}
	gap := r.Gaps[0]
	if gap.Kind != upgrade.GapPermission || gap.Action != seedAction || gap.Hierarchy != "db" || gap.Resource != "db-vip" ||
		gap.FirstNeeded != kits.Builtin().FirstNeeded(seedAction) || !strings.Contains(gap.Message, "node2 lacks "+seedAction) {
		t.Fatalf("upgrade check -f on node2: gap %+v", gap)
	}
	if len(gap.Statements) == 0 || gap.Statements[0].Effect != "Allow" || !slices.Equal(gap.Statements[0].Action, []string{seedAction}) || len(gap.Statements[0].Resource) == 0 {
		t.Fatalf("upgrade check -f on node2: statement to add %+v", gap.Statements)
	}
	if len(r.Errors) > 0 {
		t.Errorf("upgrade check -f on node2 could not check everything: %v", r.Errors)
	}

	// 3. Upgrade node2: SIGTERM, the new binary on the same data directory.
	db := flagProber(t, c, "db")
	db.reset()
	if err := c.Signal("node2", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	err = c.WaitExit(ctx, "node2")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	c.SetBinary("node2", binary)
	if err := c.StartNode("node2"); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	// Every 20 ms, `lifeboat status --json` through node3 (an old agent):
	// node2 NOT READY naming the action, from a proof after the restart.
	var seen time.Duration
	var rd api.Readiness
	for polls := 0; ; polls++ {
		st, err := seedStatus(t, c, "node3")
		if err == nil {
			rd = hier(st, "db").Readiness["node2"]
			if !rd.Ready && slices.Contains(rd.Missing, seedAction) && !rd.At.Before(restarted.Truncate(time.Second)) {
				seen = time.Since(restarted)
				t.Logf("node2 NOT READY in status through node3 %s after its restart (poll %d): missing %v: %s", seen.Round(time.Millisecond), polls+1, rd.Missing, rd.Reason)
				break
			}
		}
		if time.Since(restarted) > 15*time.Second {
			t.Fatalf("node2 not shown NOT READY missing %s 15s after its restart on the new binary (readiness_interval %s); last seen %+v (err %v)%s",
				seedAction, seedReadinessInterval, rd, err, seedDescribe(t, c))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if seen > 5*time.Second {
		t.Errorf("node2's NOT READY took %s after its restart; the first readiness round is bounded by 5s", seen.Round(time.Millisecond))
	}
	if !strings.Contains(rd.Reason, "node2 lacks "+seedAction) {
		t.Errorf("node2's reason does not name the node and the action: %q", rd.Reason)
	}
	// node2 learns its own verdict back through raft from the old leader,
	// which may still be catching the restarted node2 up: within a bound.
	for deadline := time.Now().Add(5 * time.Second); ; {
		out, _, _ = lifeboat(t, c, "node2", "status")
		if strings.Contains(out, "node2 NOT READY (missing "+seedAction+")") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("status through the upgraded node2 does not show it NOT READY within 5 s:\n%s", out)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The old owner still serves it, untouched.
	st, err = seedStatus(t, c, "node2")
	if err != nil {
		t.Fatal(err)
	}
	if x := hier(st, "db"); x.Owner != "node1" || x.State != "online" || x.Epoch != epoch {
		t.Errorf("db after node2's upgrade: %s on %s epoch %d, want online on node1 epoch %d", x.State, x.Owner, x.Epoch, epoch)
	}
	if _, node := env.RouteTarget("10.0.100.10/32"); node != "node1" {
		t.Errorf("VIP route points at %q after node2's upgrade, want node1", node)
	}
	if g, by := db.gap(), db.servedBy(); g > time.Second || !slices.Equal(by, []string{"node1"}) {
		t.Errorf("db during node2's upgrade: longest gap %s, served by %v; want no gap, node1 only", g.Round(time.Millisecond), by)
	}
	for _, via := range []string{"node1", "node2"} {
		_, errOut, code := lifeboat(t, c, via, "switchover", "db", "--to", "node2")
		if code == 0 || !strings.Contains(errOut, "NOT READY") || !strings.Contains(errOut, seedAction) {
			t.Errorf("switchover to the upgraded, NOT READY node2 through %s: exit %d: %s", via, code, errOut)
		} else {
			t.Logf("switchover to node2 through %s refused: %s", via, strings.TrimSpace(errOut))
		}
	}

	// Kill the owner: db skips node2 (higher priority, NOT READY) for the
	// ready old node3.
	db.reset()
	if err := c.Signal("node1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, c, "node3", 30*time.Second, "db online on node3", onlineOn("db", "node3"))
	t.Logf("owner node1 killed: db online on node3 after %s", time.Since(killed).Round(time.Millisecond))
	if _, node := env.RouteTarget("10.0.100.10/32"); node != "node3" {
		t.Errorf("VIP route points at %q after the failover, want node3", node)
	}
	if by := db.servedBy(); slices.Contains(by, "node2") {
		t.Errorf("the NOT READY node2 served db during the failover (served by %v)", by)
	}

	// 4. Grant what the check said to add to node2's role: READY.
	granted := old
	for _, s := range gap.Statements {
		granted.Statement = append(granted.Statement, agent.PolicyStatement{Sid: s.Sid, Effect: s.Effect, Action: s.Action, Resource: s.Resource})
	}
	doc, _ := json.Marshal(granted)
	if err := env.World.PutRolePolicy(env.Role("node2"), "lifeboat", doc); err != nil {
		t.Fatal(err)
	}
	grantAt := time.Now()
	st, err = seedStatus(t, c, "node3")
	if err != nil {
		t.Fatal(err)
	}
	leader = st.Leader
	st, err = seedStatus(t, c, leader, "--refresh")
	if err != nil {
		t.Fatal(err)
	}
	rd = hier(st, "db").Readiness["node2"]
	t.Logf("status --refresh through the leader %s, %s after the grant: node2 %+v", leader, time.Since(grantAt).Round(time.Millisecond), rd)
	if !rd.Ready {
		t.Errorf("node2 NOT READY after %s was granted (status --refresh through %s): %+v", seedAction, leader, rd)
	}
	t.Logf("seed's case: NOT READY visible %s after node2's restart; whole test %s", seen.Round(time.Millisecond), time.Since(testStart).Round(100*time.Millisecond))
}

// seedDescribe is every running node's view of db's readiness, for failures.
func seedDescribe(t *testing.T, c *demo.Cluster) string {
	t.Helper()
	var b strings.Builder
	for _, n := range three {
		if !c.Node(n).Running() {
			b.WriteString("\n  " + n + ": not running")
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.Status(ctx, n)
		cancel()
		if err != nil {
			b.WriteString("\n  " + n + ": " + err.Error())
			continue
		}
		x := hier(st, "db")
		js, _ := json.Marshal(x.Readiness)
		b.WriteString("\n  " + n + ": db " + x.State + " on " + x.Owner + ", readiness " + string(js))
	}
	return b.String()
}
