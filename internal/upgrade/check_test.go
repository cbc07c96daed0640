// An external test package: internal/demo imports the agent, which
// imports this package.
package upgrade_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
)

// simLab is the simulator with two instances; node2 is checked.
type simLab struct {
	t   *testing.T
	env *demo.SimEnv
	hs  []spec.Hierarchy
}

func newSimLab(t *testing.T) *simLab {
	t.Helper()
	nodes := []string{"node1", "node2"}
	env, err := demo.StartSim(nodes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	app := spec.Resource{Name: "web-app", Type: "app", Params: map[string]string{"restore": "true", "remove": "true", "quickcheck": "true"}}
	h := env.VIPHierarchy("web", nodes, app)
	h.Normalize()
	hs := []spec.Hierarchy{h, {Name: "elsewhere", Nodes: []string{"node1"}, Resources: []spec.Resource{app}}}
	if err := env.GrantLeastPrivilege(nodes, hs); err != nil {
		t.Fatal(err)
	}
	return &simLab{t: t, env: env, hs: hs}
}

func (l *simLab) settings(node string) awsapi.Settings {
	e := l.env
	return awsapi.Settings{Region: e.World.Region(), Endpoints: awsapi.Endpoints{EC2: e.Endpoint, STS: e.Endpoint, IAM: e.Endpoint, IMDS: e.IMDS[node]},
		CallTimeout: 2 * time.Second, MaxAttempts: 1}
}

// revoke takes actions away from node's role.
func (l *simLab) revoke(node string, actions ...string) {
	l.t.Helper()
	full := agent.LeastPrivilege(kits.Builtin(), l.hs, l.env.World.Region(), l.env.World.AccountID())
	var cut agent.PolicyDocument
	for _, st := range full.Statement {
		st.Action = slices.DeleteFunc(slices.Clone(st.Action), func(a string) bool { return slices.Contains(actions, a) })
		if len(st.Action) > 0 {
			cut.Statement = append(cut.Statement, st)
		}
	}
	cut.Version = full.Version
	doc, _ := json.Marshal(cut)
	if err := l.env.World.PutRolePolicy(l.env.Role(node), "lifeboat", doc); err != nil {
		l.t.Fatal(err)
	}
}

func (l *simLab) check(node, running string) upgrade.Report {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := upgrade.Report{Node: node, Running: running, Target: "0.2.0-dev"}
	upgrade.Check(ctx, &r, upgrade.Input{Node: node, Hierarchies: l.hs, Owners: map[string]string{"web": "node1"},
		FeatureLevel: 1, LevelKnown: true, AWS: upgrade.Provider(l.settings(node))})
	for _, g := range r.Gaps {
		l.t.Logf("gap %+v", g)
	}
	for _, e := range r.Errors {
		l.t.Logf("error %s", e)
	}
	return r
}

// The action this release added to the ec2 kit's route mode; an older
// tree without it falls back to one every release needed.
func addedAction() string {
	k, _ := kits.Builtin().Lookup("ec2")
	p := k.(kit.PermissionDeclarer).Permissions(map[string]string{"mode": "route"})
	if slices.Contains(p[kit.OpRestore], "ec2:DescribeNetworkInterfaces") {
		return "ec2:DescribeNetworkInterfaces"
	}
	return "ec2:ModifyNetworkInterfaceAttribute"
}

func TestCheckProvesEveryNeedByDryRun(t *testing.T) {
	l := newSimLab(t)
	r := l.check("node2", "0.1.0-dev")
	if !r.Ready || len(r.Gaps) > 0 || len(r.Errors) > 0 {
		t.Fatalf("with the full policy: %+v", r)
	}
	if !slices.Equal(r.Hierarchies, []string{"web"}) {
		t.Errorf("checked %v, want only web (elsewhere does not list node2)", r.Hierarchies)
	}
	byRes := map[string]upgrade.Need{}
	for _, n := range r.Needs {
		byRes[n.Resource] = n
	}
	vip := byRes["web-vip"]
	if !slices.Contains(vip.Actions, "ec2:ReplaceRoute") || !slices.Contains(byRes["web-eip"].Actions, "ec2:AssociateAddress") {
		t.Errorf("needs %+v", r.Needs)
	}
	if a := addedAction(); a == "ec2:DescribeNetworkInterfaces" && !slices.Equal(vip.New, []string{a}) {
		t.Errorf("web-vip: new since 0.1.0-dev %v, want [%s]", vip.New, a)
	}

	// The role lacks what this release added, and one more action.
	added := addedAction()
	l.revoke("node2", added, "ec2:AssociateAddress")
	r = l.check("node2", "0.1.0-dev")
	if r.Ready || len(r.Errors) > 0 {
		t.Fatalf("without %s: %+v", added, r)
	}
	gaps := map[string]upgrade.Gap{}
	for _, g := range r.Gaps {
		if g.Kind != upgrade.GapPermission || g.Hierarchy != "web" {
			t.Errorf("unexpected gap %+v", g)
		}
		gaps[g.Action] = g
	}
	g, ok := gaps[added]
	if !ok || g.Resource != "web-vip" || g.FirstNeeded != kits.Builtin().FirstNeeded(added) || !strings.Contains(g.Message, "node2 lacks "+added) {
		t.Fatalf("gap for %s: %+v", added, g)
	}
	if len(g.Statements) != 1 || g.Statements[0].Effect != "Allow" || !slices.Equal(g.Statements[0].Action, []string{added}) {
		t.Fatalf("statement for %s: %+v", added, g.Statements)
	}
	// The statement for the address names it, in this account and region.
	eip := gaps["ec2:AssociateAddress"]
	want := fmt.Sprintf("arn:aws:ec2:%s:%s:elastic-ip/%s", l.env.World.Region(), l.env.World.AccountID(), l.env.World.State().Addresses[0].AllocationID)
	if eip.Resource != "web-eip" || len(eip.Statements) != 1 || !slices.Contains(eip.Statements[0].Resource, want) || eip.FirstNeeded != "0.1.0" {
		t.Fatalf("gap for ec2:AssociateAddress: %+v, want a statement on %s", eip, want)
	}
	// Adding the statements given closes the gaps.
	full := agent.LeastPrivilege(kits.Builtin(), l.hs, l.env.World.Region(), l.env.World.AccountID())
	var sts []agent.PolicyStatement
	for _, st := range full.Statement {
		st.Action = slices.DeleteFunc(slices.Clone(st.Action), func(a string) bool { return a == added || a == "ec2:AssociateAddress" })
		if len(st.Action) > 0 {
			sts = append(sts, st)
		}
	}
	for _, g := range r.Gaps {
		for _, st := range g.Statements {
			sts = append(sts, agent.PolicyStatement{Sid: st.Sid, Effect: st.Effect, Action: st.Action, Resource: st.Resource})
		}
	}
	doc, _ := json.Marshal(agent.PolicyDocument{Version: "2012-10-17", Statement: sts})
	if err := l.env.World.PutRolePolicy(l.env.Role("node2"), "lifeboat", doc); err != nil {
		t.Fatal(err)
	}
	if r := l.check("node2", "0.1.0-dev"); !r.Ready {
		t.Fatalf("with the statements the check gave added: %+v", r)
	}
}

// A cloud that cannot answer is no proof either way: the check says it
// could not tell.
func TestCheckUnreachableAWSIsAnError(t *testing.T) {
	l := newSimLab(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	s := l.settings("node2")
	s.Endpoints.EC2 = dead
	r := upgrade.Report{Node: "node2", Target: "0.2.0"}
	upgrade.Check(context.Background(), &r, upgrade.Input{Node: "node2", Hierarchies: l.hs, LevelKnown: true, AWS: upgrade.Provider(s)})
	if r.Ready || len(r.Errors) == 0 || upgrade.ExitCode([]upgrade.Report{r}) != upgrade.ExitError {
		t.Fatalf("EC2 unreachable: %+v", r)
	}
}

// fakeAgent serves the API of a running agent on a Unix socket: the status
// every version serves, and the specs only when new enough.
func fakeAgent(t *testing.T, version string, level int, hs []spec.Hierarchy, servesSpecs bool) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lbup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st := api.Status{Node: "node2", FeatureLevel: level, Nodes: []api.NodeStatus{{Name: "node1", Version: version}, {Name: "node2", Version: version}}}
		for _, h := range hs {
			st.Hierarchies = append(st.Hierarchies, api.HierarchyStatus{Name: h.Name, Nodes: h.Nodes, Owner: "node1", Online: true})
		}
		_ = json.NewEncoder(w).Encode(st)
	})
	if servesSpecs {
		mux.HandleFunc("GET "+upgrade.HierarchiesPath, func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(upgrade.HierarchiesResponse{Node: "node2", Version: version, Hierarchies: hs})
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// The whole local check as the CLI runs it: the config file, the running
// agent (old or new), spec files, and the proof by dry run.
func TestLocalCheck(t *testing.T) {
	l := newSimLab(t)
	dir := t.TempDir()
	cfgText := fmt.Sprintf(`node: node2
data_dir: %s
cluster:
  key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  nodes:
    - {name: node1, raft: 127.0.0.1:7101, gossip: 127.0.0.1:7102, api: 127.0.0.1:7103}
    - {name: node2, raft: 127.0.0.1:7201, gossip: 127.0.0.1:7202, api: 127.0.0.1:7203}
    - {name: node3, raft: 127.0.0.1:7301, gossip: 127.0.0.1:7302, api: 127.0.0.1:7303, witness: true}
%s`, filepath.Join(dir, "data"), l.env.NodeConfig("node2"))
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	specPath := filepath.Join(dir, "web.yaml")
	b, _ := json.Marshal(map[string]any{"hierarchies": l.hs[:1]})
	if err := os.WriteFile(specPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	l.revoke("node2", addedAction())
	run := func(sock string, files ...string) upgrade.Report {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		lc := upgrade.Local{Target: "0.2.0-dev", ConfigPath: cfgPath, SpecFiles: files, Client: func(*config.Agent) (*api.Client, error) {
			return api.NewClient(sock, "", 10*time.Second, nil)
		}}
		r := lc.Run(ctx)
		t.Logf("%+v", r)
		return r
	}
	gapFor := func(r upgrade.Report, action string) bool {
		for _, g := range r.Gaps {
			if g.Kind == upgrade.GapPermission && g.Action == action && g.Hierarchy == "web" {
				return true
			}
		}
		return false
	}

	// A new agent hands out the specs.
	r := run(fakeAgent(t, "0.2.0-dev", 2, l.hs, true))
	if r.Node != "node2" || r.Running != "0.2.0-dev" || r.FeatureLevel != 2 || !gapFor(r, addedAction()) || len(r.Errors) > 0 {
		t.Fatalf("new agent: %+v", r)
	}
	// An old agent does not: without -f the check says so, and cannot
	// complete; with -f it runs.
	old := fakeAgent(t, "0.1.0-dev", 0, l.hs, false)
	r = run(old)
	if r.Running != "0.1.0-dev" || len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "-f FILE") || upgrade.ExitCode([]upgrade.Report{r}) != upgrade.ExitError {
		t.Fatalf("old agent without -f: %+v", r)
	}
	r = run(old, specPath)
	if !gapFor(r, addedAction()) || len(r.Errors) > 0 || upgrade.ExitCode([]upgrade.Report{r}) != upgrade.ExitGap {
		t.Fatalf("old agent with -f: %+v", r)
	}
	// A cluster above what this version supports is refused.
	r = run(fakeAgent(t, "0.9.0", upgrade.SupportedLevel+1, l.hs, true))
	found := false
	for _, g := range r.Gaps {
		found = found || g.Kind == upgrade.GapFeatureLevel
	}
	if !found {
		t.Fatalf("cluster above the supported level: %+v", r)
	}
	// No agent: the feature level is unknown; with -f the rest is checked.
	r = run(filepath.Join(dir, "nothing.sock"), specPath)
	if !gapFor(r, addedAction()) || len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "did not answer") {
		t.Fatalf("no agent: %+v", r)
	}
}
