package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// remoteCLI runs the CLI against node's TCP API with a token, as a
// remote operator would (the certificate pinned by its fingerprint).
func remoteCLI(t *testing.T, c *demo.Cluster, node, token string, args ...string) (string, string, int) {
	t.Helper()
	return runCLIEnv(t, binary, []string{"LIFEBOAT_ADDR=" + c.Node(node).API, "LIFEBOAT_TOKEN=" + token, "LIFEBOAT_FINGERPRINT=" + c.Fingerprint}, args...)
}

// TestRolesCLI: named tokens with roles, through the CLI over TCP. A read
// token sees status but may not switch over; an operate token may, and
// the history names it; after a reload the rotated-out secret is refused.
func TestRolesCLI(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "api.tokens")
	const readTok, opTok, newOpTok = "grafana-secret-0123456789", "oncall-secret-0123456789", "oncall-rotated-0123456789"
	if err := os.WriteFile(tokens, []byte("grafana read "+readTok+"\noncall operate "+opTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, demo.Options{Dir: filepath.Join(dir, "c"), TokenFile: tokens})
	apply(t, c, flagHierarchy("web", []string{"node1", "node2", "node3"}, "", 1, ""))
	waitFor(t, c, "node2", 15*time.Second, "web online on node1", onlineOn("web", "node1"))

	if out, errOut, code := remoteCLI(t, c, "node2", readTok, "status"); code != 0 || !strings.Contains(out, "web") {
		t.Fatalf("status with a read token: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := remoteCLI(t, c, "node2", readTok, "switchover", "web", "--to", "node2"); code != 1 || !strings.Contains(errOut, "needs operate") {
		t.Errorf("switchover with a read token: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := remoteCLI(t, c, "node2", opTok, "log-level", "debug"); code != 1 || !strings.Contains(errOut, "needs admin") {
		t.Errorf("log-level with an operate token: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := remoteCLI(t, c, "node2", opTok, "maintenance", "on", "web", "--reason", "CHG-7"); code != 0 {
		t.Fatalf("maintenance with an operate token: exit %d\n%s%s", code, out, errOut)
	}
	out, _, _ := lifeboat(t, c, "node2", "events", "--json", "--limit", "0")
	found := false
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e events.Event
		if json.Unmarshal([]byte(line), &e) == nil && e.Kind == "maintenance" && strings.HasPrefix(e.By, "token oncall (operate) from ") {
			found = true
		}
	}
	if !found {
		t.Errorf("no maintenance event naming the token:\n%s", out)
	}
	if out, errOut, code := remoteCLI(t, c, "node2", "not-a-token-0123456789", "status"); code != 1 || !strings.Contains(errOut, "bearer token") {
		t.Errorf("status with a wrong token: exit %d\n%s%s", code, out, errOut)
	}

	// Rotate oncall's secret on node2 and reload there (the local socket).
	if err := os.WriteFile(tokens, []byte("grafana read "+readTok+"\noncall operate "+newOpTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := lifeboat(t, c, "node2", "tokens", "reload"); code != 0 || !strings.Contains(out, "oncall") || strings.Contains(out, newOpTok) {
		t.Fatalf("tokens reload: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := remoteCLI(t, c, "node2", opTok, "maintenance", "off", "web"); code == 0 {
		t.Errorf("the rotated-out secret still works on node2: %s", errOut)
	}
	if out, errOut, code := remoteCLI(t, c, "node2", newOpTok, "maintenance", "off", "web"); code != 0 {
		t.Errorf("maintenance off with the new secret: exit %d\n%s%s", code, out, errOut)
	}
}
