package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// The operator CLI end to end, every command sent to a follower so that
// forwarding to the leader is exercised.
func TestCLI(t *testing.T) {
	c := startCluster(t, demo.Options{})
	st, err := c.Status(t.Context(), "node1")
	if err != nil {
		t.Fatal(err)
	}
	follower := "node3"
	if st.Leader == "node3" {
		follower = "node2"
	}

	specFile := filepath.Join(t.TempDir(), "web.yaml")
	writeFile(t, specFile, `hierarchies:
  - name: web
    nodes: [node1, node2, node3]
    monitor_interval: 200ms
    resources:
      - name: web-data
        type: app
        params:
          restore: touch "$LB_DATA_DIR/web-data.up"
          remove: rm -f "$LB_DATA_DIR/web-data.up"
          quickcheck: test -f "$LB_DATA_DIR/web-data.up"
      - name: web-app
        type: app
        depends_on: [web-data]
        params:
          restore: test -f "$LB_DATA_DIR/web-data.up" && touch "$LB_DATA_DIR/web-app.up"
          remove: rm -f "$LB_DATA_DIR/web-app.up"
          quickcheck: test -f "$LB_DATA_DIR/web-app.up"
`)
	out, errOut, code := lifeboat(t, c, follower, "apply", "-f", specFile)
	if code != 0 || !strings.Contains(out, "hierarchy web created") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	waitFor(t, c, follower, 10*time.Second, "web online on node1", onlineOn("web", "node1"))
	out, _, code = lifeboat(t, c, follower, "apply", "-f", specFile)
	if code != 0 || !strings.Contains(out, "unchanged") {
		t.Fatalf("re-apply: exit %d: %s", code, out)
	}

	// status, as text and JSON
	out, _, code = lifeboat(t, c, follower, "status")
	if code != 0 || !strings.Contains(out, "web") || !strings.Contains(out, "web-app=online") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	out, _, code = lifeboat(t, c, follower, "status", "--json")
	var js api.Status
	if err := json.Unmarshal([]byte(out), &js); err != nil || code != 0 {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, out)
	}
	if h := hier(js, "web"); h.Owner != "node1" || h.Resources["node1"]["web-data"] != "online" {
		t.Fatalf("status --json: %+v", h)
	}
	for _, n := range js.Nodes {
		if n.Version == "" {
			t.Fatalf("node %s shows no version", n.Name)
		}
	}

	// events -f follows the live history of every node
	follow := exec.Command(binary, "events", "-f", "--json", "--limit", "1")
	follow.Env = append(os.Environ(), "LIFEBOAT_ADDR="+c.Node(follower).Socket)
	followOut, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = follow.Process.Kill(); _ = follow.Wait() }()
	sawSwitchover := make(chan events.Event, 1)
	go func() {
		dec := json.NewDecoder(followOut)
		for {
			var e events.Event
			if dec.Decode(&e) != nil {
				return
			}
			if e.Node == "node2" && e.Action == "restore" && e.Phase == "end" && e.Hierarchy == "web" {
				sawSwitchover <- e
				return
			}
		}
	}()

	// switchover through a follower
	out, errOut, code = lifeboat(t, c, follower, "switchover", "web", "--to", "node2", "--json")
	var o api.Outcome
	if err := json.Unmarshal([]byte(out), &o); err != nil || code != 0 {
		t.Fatalf("switchover: exit %d %v\n%s%s", code, err, out, errOut)
	}
	if o.Owner != "node2" || o.State != "online" {
		t.Fatalf("switchover outcome: %+v", o)
	}
	for _, f := range []string{"web-data.up", "web-app.up"} {
		if _, err := os.Stat(filepath.Join(c.Dir, "node1", f)); err == nil {
			t.Fatalf("%s left on node1 after switchover", f)
		}
		if _, err := os.Stat(filepath.Join(c.Dir, "node2", f)); err != nil {
			t.Fatalf("%s not on node2 after switchover", f)
		}
	}
	select {
	case <-sawSwitchover:
	case <-time.After(10 * time.Second):
		t.Fatal("events -f did not show node2's restore within 10s")
	}
	// order on node2: web-data restored before web-app (children first)
	var resp api.EventsResponse
	if err := c.Client("node2").Do(t.Context(), "GET", "/v1/events?local=1", nil, &resp); err != nil {
		t.Fatal(err)
	}
	var restores []string
	for _, e := range resp.Events {
		if e.Action == "restore" && e.Phase == "end" && e.Hierarchy == "web" {
			restores = append(restores, e.Resource)
		}
	}
	if strings.Join(restores, ",") != "web-data,web-app" {
		t.Fatalf("restore order on node2: %v", restores)
	}

	// bad input: unknown node, unknown hierarchy, bad file
	_, errOut, code = lifeboat(t, c, follower, "switchover", "web", "--to", "nodeX")
	if code != 2 || !strings.Contains(errOut, `"nodeX" is not in hierarchy web's node list`) {
		t.Fatalf("switchover to unknown node: exit %d: %s", code, errOut)
	}
	_, errOut, code = lifeboat(t, c, follower, "stop", "nope")
	if code != 2 || !strings.Contains(errOut, `hierarchy "nope" does not exist`) {
		t.Fatalf("stop unknown: exit %d: %s", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, "hierarchies:\n  - name: web\n    nodes: [node1]\n    resources:\n      - name: a\n        type: app\n        depends_on: [ghost]\n        params: {restore: x, remove: y, quickcheck: z}\n")
	_, errOut, code = lifeboat(t, c, follower, "apply", "-f", bad)
	if code != 2 || !strings.Contains(errOut, bad+":7:") || !strings.Contains(errOut, "ghost") {
		t.Fatalf("apply bad file: exit %d: %s", code, errOut)
	}

	// stop, start
	out, errOut, code = lifeboat(t, c, follower, "stop", "web")
	if code != 0 || !strings.Contains(out, "stopped") {
		t.Fatalf("stop: exit %d: %s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "node2", "web-app.up")); err == nil {
		t.Fatal("web-app still up after stop")
	}
	out, errOut, code = lifeboat(t, c, follower, "start", "web")
	if code != 0 || !strings.Contains(out, "online") {
		t.Fatalf("start: exit %d: %s%s", code, out, errOut)
	}

	// events: the merged history, text and JSON
	out, _, code = lifeboat(t, c, follower, "events")
	if code != 0 || !strings.Contains(out, "web/web-app restore end") || !strings.Contains(out, "switchover") {
		t.Fatalf("events: exit %d\n%s", code, out)
	}
	out, _, _ = lifeboat(t, c, follower, "events", "--json")
	nodes := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events --json line %q: %v", line, err)
		}
		nodes[e.Node] = true
	}
	if len(nodes) != 3 {
		t.Fatalf("events from %d nodes, want 3", len(nodes))
	}

	// delete takes it out of service and forgets it
	out, errOut, code = lifeboat(t, c, follower, "delete", "web")
	if code != 0 {
		t.Fatalf("delete: exit %d: %s%s", code, out, errOut)
	}
	st = waitFor(t, c, "node1", 5*time.Second, "web gone", func(st api.Status) bool { return len(st.Hierarchies) == 0 })
	for _, n := range []string{"node1", "node2", "node3"} {
		if _, err := os.Stat(filepath.Join(c.Dir, n, "web-app.up")); err == nil {
			t.Fatalf("web-app still up on %s after delete", n)
		}
	}

	// version, log-level
	out, _, code = lifeboat(t, c, follower, "version", "--agent", "--json")
	if code != 0 || !strings.Contains(out, `"agent"`) {
		t.Fatalf("version: exit %d: %s", code, out)
	}
	out, _, code = lifeboat(t, c, follower, "log-level", "debug")
	if code != 0 || !strings.Contains(out, "debug") {
		t.Fatalf("log-level: exit %d: %s", code, out)
	}
	_, errOut, code = lifeboat(t, c, follower, "log-level", "loud")
	if code != 2 || !strings.Contains(errOut, "unknown log level") {
		t.Fatalf("log-level loud: exit %d: %s", code, errOut)
	}
}

// Remote access needs the token; the local socket is root-only.
func TestAPIAccess(t *testing.T) {
	c := startCluster(t, demo.Options{Nodes: 2, Witness: true})
	n := c.Node("node1")
	fi, err := os.Stat(n.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("socket mode %o, want 600", perm)
	}
	run := func(env ...string) (string, int) {
		cmd := exec.Command(binary, "status", "--json")
		cmd.Env = append(os.Environ(), env...)
		b, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(b), ee.ExitCode()
		}
		return string(b), 0
	}
	fp := "LIFEBOAT_FINGERPRINT=" + c.Fingerprint
	out, code := run("LIFEBOAT_ADDR="+n.API, "LIFEBOAT_TOKEN="+c.Token)
	if code == 0 || !strings.Contains(out, "LIFEBOAT_FINGERPRINT") {
		t.Fatalf("TCP without fingerprint: exit %d: %s", code, out)
	}
	out, code = run("LIFEBOAT_ADDR="+n.API, "LIFEBOAT_TOKEN="+c.Token, "LIFEBOAT_FINGERPRINT="+strings.Repeat("ab", 32))
	if code == 0 || !strings.Contains(out, "does not match the fingerprint") {
		t.Fatalf("TCP with a wrong fingerprint: exit %d: %s", code, out)
	}
	out, code = run("LIFEBOAT_ADDR="+n.API, fp)
	if code == 0 || !strings.Contains(out, "token") {
		t.Fatalf("TCP without token: exit %d: %s", code, out)
	}
	out, code = run("LIFEBOAT_ADDR="+n.API, fp, "LIFEBOAT_TOKEN=wrong-token-wrong-token")
	if code == 0 {
		t.Fatalf("TCP with a wrong token: exit %d: %s", code, out)
	}
	out, code = run("LIFEBOAT_ADDR="+n.API, fp, "LIFEBOAT_TOKEN="+c.Token)
	var st api.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Nodes) != 3 {
		t.Fatalf("TCP with token: exit %d: %s", code, out)
	}
	if st.Fingerprint != c.Fingerprint {
		t.Fatalf("status shows fingerprint %s, want %s", st.Fingerprint, c.Fingerprint)
	}
	// the API token cannot call internal endpoints (lease grants) ...
	pinned, err := tlsid.PinnedClientConfig(c.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := api.NewClient(n.API, c.Token, 5*time.Second, pinned)
	err = cl.Do(t.Context(), "POST", "/v1/internal/lease/renew", map[string]any{"node": "node2", "gen": 1}, nil)
	if err == nil || !strings.Contains(err.Error(), "internal endpoint") {
		t.Fatalf("internal endpoint with the API token: %v", err)
	}
	// ... and neither can the internal token without the cluster certificate
	key, err := os.ReadFile(filepath.Join(c.Dir, "cluster.key"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(key)))
	cl, _ = api.NewClient(n.API, agent.DeriveToken(raw, "lifeboat-internal"), 5*time.Second, pinned)
	err = cl.Do(t.Context(), "POST", "/v1/internal/lease/renew", map[string]any{"node": "node2", "gen": 1}, nil)
	if err == nil || !strings.Contains(err.Error(), "cluster certificate") {
		t.Fatalf("internal endpoint without the cluster certificate: %v", err)
	}
	// witness: a two-node cluster with a witness places on node1, never the witness
	apply(t, c, flagHierarchy("pair", []string{"node1", "node2"}, "", 1, ""))
	waitFor(t, c, "witness", 10*time.Second, "pair online on node1", onlineOn("pair", "node1"))
}

// The agent rejects a bad config file with file, line and field.
func TestAgentConfigErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	writeFile(t, p, "node: node1\ndata_dir: ./data\ncluster:\n  key: c2VjcmV0c2VjcmV0c2VjcmV0\n  nodes:\n    - name: node1\n      raft: 127.0.0.1\n      gossip: 127.0.0.1:1\n      api: 127.0.0.1:2\n      colour: blue\n")
	cmd := exec.Command(binary, "agent", "--config", p)
	b, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2: %s", err, b)
	}
	for _, want := range []string{p + ":7:", "cluster.nodes[0].raft", p + ":10:", "colour"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("error output lacks %q:\n%s", want, b)
		}
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A cluster whose agents all refuse their config says why: WaitReady names
// the config error from the log, instead of "ready" with nothing running.
func TestWaitReadyNamesWhyEveryAgentExited(t *testing.T) {
	c, err := demo.Start(demo.Options{Binary: binary, Dir: t.TempDir(), ExtraConfig: "timing:\n  renew_interval: 1s\n"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = c.WaitReady(ctx)
	if err == nil || !strings.Contains(err.Error(), "every agent exited") || !strings.Contains(err.Error(), "timing.renew_interval") {
		t.Fatalf("WaitReady with every agent refusing its config: %v, want the config error", err)
	}
}
