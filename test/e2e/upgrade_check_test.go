package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
)

// upgradeAddedAction is the action this release added to the ec2 kit's
// route mode (ec2:DescribeNetworkInterfaces, needed since 0.2.0); a tree
// without it falls back to one every release needed.
func upgradeAddedAction() string {
	k, _ := kits.Builtin().Lookup("ec2")
	p := k.(kit.PermissionDeclarer).Permissions(map[string]string{"mode": "route"})
	if slices.Contains(p[kit.OpRestore], "ec2:DescribeNetworkInterfaces") {
		return "ec2:DescribeNetworkInterfaces"
	}
	return "ec2:ModifyNetworkInterfaceAttribute"
}

// upgradeCheckJSON runs `lifeboat upgrade check --json` with args on node
// and returns its reports by node and the exit code.
func upgradeCheckJSON(t *testing.T, c *demo.Cluster, node string, args ...string) (map[string]upgrade.Report, int) {
	t.Helper()
	out, errOut, code := lifeboat(t, c, node, append([]string{"upgrade", "check", "--json"}, args...)...)
	var cr upgrade.ClusterReport
	if err := json.Unmarshal([]byte(out), &cr); err != nil {
		t.Fatalf("upgrade check %v (exit %d): not JSON: %v\n%s\n%s", args, code, err, out, errOut)
	}
	rs := map[string]upgrade.Report{}
	for _, r := range cr.Nodes {
		rs[r.Node] = r
	}
	return rs, code
}

// Before an upgrade, with the new binary: a node whose role lacks the
// action the new version added is named with the action, the resource that
// needs it, the version that first needed it and the statement to add
// (exit 1); once the statement is granted, it is ready (exit 0).
func TestUpgradeCheckNamesTheMissingAction(t *testing.T) {
	env, err := demo.StartSim(three)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := startCluster(t, demo.Options{ExtraConfig: "readiness_interval: 1s\n", NodeConfig: env.NodeConfig})
	app := flagHierarchy("db", three, spec.SwitchbackIntelligent, 1, "").Resources[0]
	h := env.VIPHierarchy("db", three, app)
	if err := env.GrantLeastPrivilege(three, []spec.Hierarchy{h}); err != nil {
		t.Fatal(err)
	}
	apply(t, c, h)
	waitFor(t, c, "node2", 20*time.Second, "db online on node1", onlineOn("db", "node1"))
	cfg2 := c.Node("node2").Config

	// Every node has what it needs.
	rs, code := upgradeCheckJSON(t, c, "node2", "--config", cfg2)
	if r := rs["node2"]; code != 0 || !r.Ready || !slices.Equal(r.Hierarchies, []string{"db"}) {
		t.Fatalf("with the full policy: exit %d, %+v", code, rs)
	}

	// node2's role loses the action.
	action := upgradeAddedAction()
	t.Logf("taking %s (first needed in %s) from node2's role", action, kits.Builtin().FirstNeeded(action))
	full := agent.LeastPrivilege(kits.Builtin(), []spec.Hierarchy{h}, env.World.Region(), env.World.AccountID())
	cut := agent.PolicyDocument{Version: full.Version}
	for _, st := range full.Statement {
		st.Action = slices.DeleteFunc(slices.Clone(st.Action), func(a string) bool { return a == action })
		if len(st.Action) > 0 {
			cut.Statement = append(cut.Statement, st)
		}
	}
	doc, _ := json.Marshal(cut)
	if err := env.World.PutRolePolicy(env.Role("node2"), "lifeboat", doc); err != nil {
		t.Fatal(err)
	}

	// The check on node2 names it, with the statement to add; exit 1.
	rs, code = upgradeCheckJSON(t, c, "node2", "--config", cfg2)
	r := rs["node2"]
	var gap *upgrade.Gap
	for i, g := range r.Gaps {
		if g.Kind == upgrade.GapPermission && g.Action == action {
			gap = &r.Gaps[i]
		}
	}
	if code != 1 || gap == nil || len(r.Gaps) != 1 || gap.Hierarchy != "db" || gap.Resource != "db-vip" || gap.FirstNeeded == "" ||
		gap.FirstNeeded != kits.Builtin().FirstNeeded(action) || !strings.Contains(gap.Message, "node2 lacks "+action) {
		t.Fatalf("without %s: exit %d, %+v", action, code, r)
	}
	if len(gap.Statements) == 0 || gap.Statements[0].Effect != "Allow" || !slices.Equal(gap.Statements[0].Action, []string{action}) || len(gap.Statements[0].Resource) == 0 {
		t.Fatalf("statement to add: %+v", gap.Statements)
	}
	// The same in words.
	out, errOut, code := lifeboat(t, c, "node2", "upgrade", "check", "--config", cfg2)
	t.Logf("lifeboat upgrade check (exit %d):\n%s%s", code, out, errOut)
	for _, want := range []string{"node2: 1 gap(s)", "MISSING  " + action + " for db/db-vip (needed since " + gap.FirstNeeded + ")",
		"add to node2's role:", `"Action": [`, `"` + action + `"`} {
		if !strings.Contains(out, want) {
			t.Errorf("upgrade check output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 || !strings.Contains(errOut, "1 gap(s) to fix before the upgrade") {
		t.Errorf("upgrade check: exit %d, stderr %q", code, errOut)
	}
	// Asked through any agent for the whole cluster: node2 has the gap,
	// the others are ready.
	rs, code = upgradeCheckJSON(t, c, "node3", "--all", "--config", c.Node("node3").Config)
	if code != 1 || len(rs) != 3 || rs["node1"].Ready != true || rs["node3"].Ready != true || len(rs["node2"].Gaps) != 1 || rs["node2"].Gaps[0].Action != action {
		t.Fatalf("upgrade check --all: exit %d, %+v", code, rs)
	}
	// The specs from a file (for an agent too old to hand them out) give
	// the same answer.
	specFile := filepath.Join(t.TempDir(), "db.json")
	b, _ := json.Marshal(api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}})
	if err := os.WriteFile(specFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rs, code = upgradeCheckJSON(t, c, "node2", "--config", cfg2, "-f", specFile)
	if code != 1 || len(rs["node2"].Gaps) != 1 || rs["node2"].Gaps[0].Action != action {
		t.Fatalf("upgrade check -f: exit %d, %+v", code, rs)
	}

	// Grant what the check said to add: ready, exit 0.
	for _, st := range gap.Statements {
		cut.Statement = append(cut.Statement, agent.PolicyStatement{Sid: st.Sid, Effect: st.Effect, Action: st.Action, Resource: st.Resource})
	}
	doc, _ = json.Marshal(cut)
	if err := env.World.PutRolePolicy(env.Role("node2"), "lifeboat", doc); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = lifeboat(t, c, "node2", "upgrade", "check", "--config", cfg2)
	if code != 0 || !strings.Contains(out, "node2: ready to upgrade") {
		t.Fatalf("after granting the statement: exit %d\n%s\n%s", code, out, errOut)
	}
}
