package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/doctor"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
)

type doctorOut struct {
	Findings []doctor.Finding `json:"findings"`
}

// runDoctor runs `lifeboat doctor --json` against node with extra
// environment and returns the findings and the exit status.
func runDoctor(t *testing.T, c *demo.Cluster, node string, env []string, args ...string) ([]doctor.Finding, int, string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"doctor", "--json"}, args...)...)
	cmd.Env = append(append([]string{}, os.Environ()...), "LIFEBOAT_ADDR="+c.Node(node).Socket)
	for _, k := range []string{"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"} {
		cmd.Env = append(cmd.Env, k+"=")
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	var d doctorOut
	if code != 2 {
		if err := json.Unmarshal([]byte(out.String()), &d); err != nil {
			t.Fatalf("doctor --json: %v\n%s\n%s", err, out.String(), errb.String())
		}
	}
	return d.Findings, code, errb.String()
}

func find(fs []doctor.Finding, id, node, sev string) (doctor.Finding, bool) {
	for _, f := range fs {
		if f.ID == id && (node == "" || f.Node == node) && (sev == "" || f.Severity == sev) {
			return f, true
		}
	}
	return doctor.Finding{}, false
}

func TestDoctorOnTheSimulator(t *testing.T) {
	c, env, _ := awsCluster(t)
	waitFor(t, c, "node2", 20*time.Second, "db online on node1", onlineOn("db", "node1"))

	// Healthy: nothing would stop a failover.
	fs, code, errOut := runDoctor(t, c, "node2", nil)
	if code != 0 {
		t.Fatalf("healthy cluster: exit %d: %+v %s", code, fs, errOut)
	}
	if _, ok := find(fs, "debug-logging", "node1", doctor.Info); !ok {
		t.Fatalf("no debug-logging note: %+v", fs)
	}

	// A permission removed from node3's role: a critical finding naming it,
	// with the statement to add and a command to reproduce it by hand.
	if err := env.World.PutRolePolicy(env.Role("node3"), "lifeboat", []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:Describe*","sts:DecodeAuthorizationMessage","ec2:CreateRoute","ec2:ReplaceRoute","ec2:AssociateAddress"],"Resource":"*"}]}`)); err != nil {
		t.Fatal(err)
	}
	fs, code, _ = runDoctor(t, c, "node2", nil)
	f, ok := find(fs, "permissions", "node3", doctor.Critical)
	if code != 1 || !ok || !strings.Contains(f.Seen+f.Fix, "ec2:ModifyNetworkInterfaceAttribute") || !strings.Contains(f.Command, "--dry-run") {
		t.Fatalf("missing permission: exit %d, finding %+v (all %+v)", code, f, fs)
	}
	// lifeboat status shows the count (the run recorded it in the cluster state)
	waitFor(t, c, "node1", 5*time.Second, "status shows node3's critical finding", func(st api.Status) bool {
		for _, n := range st.Nodes {
			if n.Name == "node3" {
				return n.Findings["critical"] >= 1
			}
		}
		return false
	})
	// --node limits the run
	fs, _, _ = runDoctor(t, c, "node2", nil, "--node", "node1")
	for _, f := range fs {
		if f.Node != "node1" {
			t.Fatalf("--node node1 returned a finding of %s: %+v", f.Node, f)
		}
	}
	// an unknown node is bad input
	if _, code, errOut := runDoctor(t, c, "node2", nil, "--node", "nodeX"); code != 2 || !strings.Contains(errOut, "nodeX") {
		t.Fatalf("unknown node: exit %d: %s", code, errOut)
	}

	// Proxy drift: the operator's shell has a proxy the agents do not use.
	fs, _, _ = runDoctor(t, c, "node2", []string{"https_proxy=http://user:secret@proxy.example:3128"}, "--node", "node1")
	f, ok = find(fs, "proxy-drift", "node1", doctor.Warning)
	if !ok || !strings.Contains(f.Seen, "https_proxy=http://user@proxy.example:3128") || strings.Contains(f.Seen, "secret") || !strings.Contains(f.Seen, "no proxy") {
		t.Fatalf("proxy drift: %+v", fs)
	}

	// Clock skew and expired credentials, through the simulator's controls.
	env.Server.SetFaults(sim.Faults{ClockSkew: 10 * time.Minute})
	fs, code, _ = runDoctor(t, c, "node2", nil, "--node", "node1")
	if _, ok := find(fs, "clock-skew", "node1", doctor.Critical); !ok || code != 1 {
		t.Fatalf("clock skew: exit %d %+v", code, fs)
	}
	env.Server.SetFaults(sim.Faults{ExpireCredentials: true})
	fs, code, _ = runDoctor(t, c, "node2", nil, "--node", "node1")
	if _, ok := find(fs, "credentials", "node1", doctor.Critical); !ok || code != 1 {
		t.Fatalf("expired credentials: exit %d %+v", code, fs)
	}
	env.Server.SetFaults(sim.Faults{})

	// A stopped node: its agent does not answer.
	if err := c.Signal("node3", syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Signal("node3", syscall.SIGCONT) }()
	waitFor(t, c, "node1", 10*time.Second, "node3 declared failed", func(st api.Status) bool {
		for _, n := range st.Nodes {
			if n.Name == "node3" {
				return n.State == "failed"
			}
		}
		return false
	})
	fs, code, _ = runDoctor(t, c, "node1", nil)
	if _, ok := find(fs, "agent", "node3", doctor.Critical); !ok || code != 1 {
		t.Fatalf("stopped node: exit %d %+v", code, fs)
	}
}

// Version skew in a rolling upgrade: doctor names the versions and the
// upgrade check; a warning alone does not fail the run.
func TestDoctorVersionSkew(t *testing.T) {
	c := startCluster(t, demo.Options{Binaries: map[string]string{"node3": newerBinary}})
	waitFor(t, c, "node1", 10*time.Second, "node3's version visible", func(st api.Status) bool {
		for _, n := range st.Nodes {
			if n.Name == "node3" {
				return n.Version == "9.9.0"
			}
		}
		return false
	})
	fs, code, errOut := runDoctor(t, c, "node1", nil, "--node", "node1")
	f, ok := find(fs, "version-skew", "node1", doctor.Warning)
	if !ok || code != 0 || !strings.Contains(f.Seen, "9.9.0 on node3") || !strings.HasPrefix(f.Command, "lifeboat iam-policy --since ") {
		t.Fatalf("version skew: exit %d, %+v (%s)", code, fs, errOut)
	}
}
