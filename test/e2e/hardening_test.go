package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// The agent refuses a cluster key file that group members can read, and
// says which chmod fixes it.
func TestAgentRefusesOpenKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "cluster.key")
	writeFile(t, key, "iLsmckBzHgDA4pGjDyPK4YssDTrXbjfWK4fSwtg4ZAo=\n")
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "agent.yaml")
	writeFile(t, p, fmt.Sprintf("node: node1\ndata_dir: %s\ncluster:\n  key_file: %s\n  nodes:\n    - {name: node1, raft: 127.0.0.1:1, gossip: 127.0.0.1:2, api: 127.0.0.1:3}\n",
		filepath.Join(dir, "data"), key))
	b, err := exec.Command(binary, "agent", "--config", p).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2: %s", err, b)
	}
	for _, want := range []string{"refusing to start", key + " (cluster.key_file) has mode 0640", "run: chmod 600 " + key} {
		if !strings.Contains(string(b), want) {
			t.Errorf("output lacks %q:\n%s", want, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("the agent created its data directory before refusing: %v", err)
	}
}

// A running agent: its data directory made private although it existed
// open; an app's output with terminal escapes printed escaped; a run_as
// user unknown on the node refused at apply; the token from --token-file.
func TestAgentFilesAndOutput(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "node1")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, demo.Options{Dir: dir, Nodes: 2, Witness: true})
	fi, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %04o, want 0700", fi.Mode().Perm())
	}
	if log, _ := os.ReadFile(c.Node("node1").Log); !strings.Contains(string(log), "changed the mode of a directory to 0700") {
		t.Errorf("the change is not logged:\n%s", log)
	}

	// An app whose failing command prints terminal escapes.
	one := 0
	h := spec.Hierarchy{Name: "esc", Nodes: []string{"node1", "node2"}, LocalRecovery: &one, MonitorInterval: spec.Duration(time.Second),
		Resources: []spec.Resource{{Name: "esc-app", Type: "app", Params: map[string]string{
			"restore":    `printf 'ok\033]0;owned\007 \033[2J\r\n'; exit 3`,
			"remove":     "true",
			"quickcheck": "true",
		}}}}
	apply(t, c, h)
	var out string
	for deadline := time.Now().Add(20 * time.Second); ; {
		var code int
		out, _, code = lifeboat(t, c, "node1", "events", "--limit", "0")
		if code != 0 {
			t.Fatalf("events: exit %d", code)
		}
		if strings.Contains(out, "owned") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed restore of esc-app in the events:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond) // polling the CLI, as waitFor polls status
	}
	if strings.ContainsAny(out, "\x1b\x07\r") {
		t.Errorf("events printed raw control characters: %q", out)
	}
	if !strings.Contains(out, `ok\x1b]0;owned\a \x1b[2J`) {
		t.Errorf("events do not show the escaped output:\n%s", out)
	}

	// run_as names a user this node does not have.
	h2 := flagHierarchy("asuser", []string{"node1", "node2"}, "", 1, "")
	h2.Resources[0].Params["run_as.user"] = "no-such-user-lb"
	_, errOut, code := applyCLI(t, c, "node1", h2)
	if code == 0 || !strings.Contains(errOut, `run_as.user "no-such-user-lb": no such user on this node`) {
		t.Errorf("apply with an unknown run_as user: exit %d: %s", code, errOut)
	}

	// The token from a file, over TCP; the environment's token is not used.
	tokFile := filepath.Join(dir, "token")
	writeFile(t, tokFile, c.Token+"\n")
	cmd := exec.Command(binary, "status", "--json", "--token-file", tokFile)
	cmd.Env = append(os.Environ(), "LIFEBOAT_ADDR="+c.Node("node1").API, "LIFEBOAT_FINGERPRINT="+c.Fingerprint, "LIFEBOAT_TOKEN=wrong-token-wrong-token")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("status with --token-file: %v: %s", err, b)
	}
}

// applyCLI applies h through the CLI (lifeboat apply -f FILE).
func applyCLI(t *testing.T, c *demo.Cluster, node string, h spec.Hierarchy) (string, string, int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "spec.json")
	b, err := json.Marshal(map[string]any{"hierarchies": []spec.Hierarchy{h}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f, string(b))
	return lifeboat(t, c, node, "apply", "-f", f)
}
