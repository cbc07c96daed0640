package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/report"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// lifeboat report on a three-node cluster on the simulator with one agent
// killed: every part of the two live nodes is in the bundle, the dead one
// is listed unreachable with the error, and no secret (the cluster key in
// any encoding, the API and internal tokens, a proxy password, a password
// in an app's environment) appears anywhere in the bundle's bytes.
func TestReportBundle(t *testing.T) {
	const proxyPass, dbPass = "Pr0xyPa55-e2e-secret", "Db-Pa55w0rd-e2e-secret"
	env, err := demo.StartSim(three)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	c := startCluster(t, demo.Options{NodeConfig: func(node string) string {
		// loopback endpoints are never proxied: the proxy is only a secret to keep
		return env.NodeConfig(node) + "  https_proxy: http://lifeboat:" + proxyPass + "@proxy.invalid:3128\n"
	}})
	app := flagHierarchy("db", three, spec.SwitchbackIntelligent, 1, "").Resources[0]
	app.Params["env.DB_PASSWORD"] = dbPass
	h := env.VIPHierarchy("db", three, app)
	if err := env.GrantLeastPrivilege(three, []spec.Hierarchy{h}); err != nil {
		t.Fatal(err)
	}
	apply(t, c, h)
	waitFor(t, c, "node2", 20*time.Second, "db online on node1", onlineOn("db", "node1"))
	if err := c.Signal("node3", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := c.WaitExit(ctx, "node3"); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(t.TempDir(), "case.tar.gz")
	stdout, stderr, code := lifeboat(t, c, "node1", "report", "-o", out)
	if code != 0 {
		t.Fatalf("report: exit %d: %s %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "wrote "+out) || !strings.Contains(stdout, "nodes reached: node1, node2") || !strings.Contains(stdout, "unreachable:   node3: ") {
		t.Fatalf("summary:\n%s", stdout)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("bundle mode %o, want 600", fi.Mode().Perm())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	m, files, err := report.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.Node != "node1" || m.RequestedBy != "root on node1 (local socket)" || m.Version == "" || m.Created.IsZero() {
		t.Fatalf("manifest: %+v", m)
	}
	if len(m.Nodes) != 3 || !m.Nodes[0].Reached || !m.Nodes[1].Reached || m.Nodes[2].Reached || m.Nodes[2].Name != "node3" || m.Nodes[2].Error == "" {
		t.Fatalf("manifest nodes: %+v", m.Nodes)
	}
	for _, name := range []string{"status.json", "state.json"} {
		if len(files[name]) == 0 {
			t.Errorf("no %s", name)
		}
	}
	for _, n := range []string{"node1", "node2"} {
		for _, part := range []string{"version.json", "runtime.json", "events.jsonl", "doctor.json", "config.json", "logs.txt"} {
			if len(files["nodes/"+n+"/"+part]) == 0 {
				t.Errorf("no nodes/%s/%s (files: %v)", n, part, m.Files)
			}
		}
	}
	for name := range files {
		if strings.HasPrefix(name, "nodes/node3/") {
			t.Errorf("the dead node has a part: %s", name)
		}
	}
	// the parts say what they should
	var doc struct {
		Node     string            `json:"node"`
		Findings []json.RawMessage `json:"findings"`
	}
	if err := json.Unmarshal(files["nodes/node2/doctor.json"], &doc); err != nil || doc.Node != "node2" || len(doc.Findings) == 0 {
		t.Errorf("node2's doctor report: %v %s", err, files["nodes/node2/doctor.json"])
	}
	if !bytes.Contains(files["nodes/node1/events.jsonl"], []byte(`"action":"restore"`)) {
		t.Errorf("node1's events have no restore:\n%s", files["nodes/node1/events.jsonl"])
	}
	if !bytes.Contains(files["nodes/node2/logs.txt"], []byte("level=INFO")) {
		t.Errorf("node2's logs:\n%s", files["nodes/node2/logs.txt"])
	}
	var rt map[string]any
	if err := json.Unmarshal(files["nodes/node1/runtime.json"], &rt); err != nil || rt["goroutines"] == nil {
		t.Errorf("runtime.json: %v %s", err, files["nodes/node1/runtime.json"])
	}
	// The defaults in force: timer_slack 1ms (the commands keep the
	// slack the agent was started with), Ps set by the load.
	slack, _ := rt["timer_slack"].(map[string]any)
	procs, _ := rt["procs"].(map[string]any)
	if slack["agent"] != "1ms" || slack["commands"] == nil || procs["mode"] != "1 while idle, more while busy" || procs["procs"] != rt["gomaxprocs"] {
		t.Errorf("runtime.json: timer_slack %v, procs %v, gomaxprocs %v; want 1ms (commands: the slack the agent was started with) and Ps set by the load", rt["timer_slack"], rt["procs"], rt["gomaxprocs"])
	}
	cfg := string(files["nodes/node2/config.json"])
	if !strings.Contains(cfg, `"https_proxy": "http://lifeboat:REDACTED@proxy.invalid:3128"`) || !strings.Contains(cfg, `"key_file"`) {
		t.Errorf("node2's config:\n%s", cfg)
	}
	if !bytes.Contains(files["state.json"], []byte(`"env.DB_PASSWORD": "[REDACTED]"`)) {
		t.Errorf("state.json: the app's password is not shown redacted")
	}

	// No secret anywhere: the whole uncompressed tar, byte by byte.
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	keyText, err := os.ReadFile(filepath.Join(c.Dir, "cluster.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(keyText)))
	secrets := map[string]string{
		"cluster key": strings.TrimSpace(string(keyText)), "cluster key (hex)": hex.EncodeToString(key),
		"cluster key (url base64)": base64.RawURLEncoding.EncodeToString(key),
		"API token":                c.Token, "internal token": agent.DeriveToken(key, "lifeboat-internal"),
		"proxy password": proxyPass, "app password": dbPass,
	}
	for what, s := range secrets {
		if bytes.Contains(all, []byte(s)) {
			t.Errorf("the bundle contains the %s", what)
		}
	}

	// An existing file is kept unless --force; --json prints the manifest.
	if _, stderr, code := lifeboat(t, c, "node1", "report", "-o", out); code != 2 || !strings.Contains(stderr, "--force") {
		t.Fatalf("report over an existing file: exit %d: %s", code, stderr)
	}
	stdout, stderr, code = lifeboat(t, c, "node2", "report", "-o", out, "--force", "--json")
	var sum struct {
		File string `json:"file"`
		report.Manifest
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &sum) != nil || sum.File != out || sum.Node != "node2" || len(sum.Unreached()) != 1 {
		t.Fatalf("report --force --json: exit %d: %s %s", code, stdout, stderr)
	}
	if _, _, err := report.Read(bytes.NewReader(mustRead(t, out))); err != nil {
		t.Fatalf("the overwritten bundle: %v", err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
