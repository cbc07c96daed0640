package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
)

// TestNodeCertificates: a cluster whose nodes each have their own
// certificate from a cluster CA (the tls section) forms, renews leases,
// forwards commands, fails over, grows and takes a node's rotated
// certificate (new key, agent restarted) as one with the shared identity
// does;
// no internal call is refused for its identity; the CLI reaches every
// node trusting the CA (--ca-cert), and each node serves its own
// certificate.
func TestNodeCertificates(t *testing.T) {
	c := startCluster(t, demo.Options{NodeCerts: true})
	if c.CACert() == "" {
		t.Fatal("NodeCerts wrote no CA")
	}
	b, err := os.ReadFile(c.Node("node2").Config)
	if err != nil || !strings.Contains(string(b), "\ntls:\n") {
		t.Fatalf("node2's config has no tls section: %v\n%s", err, b)
	}
	apply(t, c, flagHierarchy("web", three, "", 1, ""))
	waitFor(t, c, "node2", 15*time.Second, "web online on node1", onlineOn("web", "node1"))

	cli := func(node string, args ...string) (string, string, int) {
		return runCLIEnv(t, binary, []string{"LIFEBOAT_ADDR=" + c.Node(node).API, "LIFEBOAT_TOKEN=" + c.Token, "LIFEBOAT_CA_CERT=" + c.CACert(), "LIFEBOAT_FINGERPRINT="}, args...)
	}
	// Each node serves its own certificate; the CLI trusts all through the CA.
	seen := map[string]bool{}
	for _, n := range three {
		out, errOut, code := cli(n, "status", "--json")
		var st api.Status
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("status on %s over TCP with --ca-cert: exit %d\n%s%s", n, code, out, errOut)
		}
		if st.Fingerprint != c.Node(n).Fingerprint || seen[st.Fingerprint] {
			t.Errorf("%s serves fingerprint %s; want its own %s, different from the others'", n, st.Fingerprint, c.Node(n).Fingerprint)
		}
		seen[st.Fingerprint] = true
	}
	// A switchover asked of node3 is forwarded to the leader.
	if out, errOut, code := cli("node3", "switchover", "web", "--to", "node2"); code != 0 {
		t.Fatalf("switchover through node3: exit %d\n%s%s", code, out, errOut)
	}
	waitFor(t, c, "node1", 15*time.Second, "web online on node2", onlineOn("web", "node2"))

	// Kill the owner: the others' leases and attestations carry the
	// failover.
	if err := c.Signal("node2", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "node3", 15*time.Second, "web online on node1", onlineOn("web", "node1"))
	if _, err := os.Stat(filepath.Join(c.Dir, "node1", "web.up")); err != nil {
		t.Fatalf("resource not restored on node1: %v", err)
	}
	// A node added at run time, with its own certificate, joins and
	// holds a lease (its join is forwarded to the leader under its name).
	addNode(t, c, "node3", "node4", false)
	waitFor(t, c, "node1", 15*time.Second, "node4 alive with a lease", func(s api.Status) bool {
		for _, n := range s.Nodes {
			if n.Name == "node4" {
				return n.State == "alive" && n.LeaseFresh
			}
		}
		return false
	})
	// Rotation: node3 gets a new certificate and key, and its agent is
	// restarted; it takes part again and serves the new certificate.
	// (node2, killed above, comes back first: four voters need three.)
	if err := c.StartNode("node2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "node1", 20*time.Second, "node2 back", func(s api.Status) bool {
		for _, n := range s.Nodes {
			if n.Name == "node2" {
				return n.State == "alive" && n.LeaseFresh
			}
		}
		return false
	})
	oldPrint := c.Node("node3").Fingerprint
	if err := c.RenewCert("node3"); err != nil {
		t.Fatal(err)
	}
	if c.Node("node3").Fingerprint == oldPrint {
		t.Fatal("the renewed certificate has the old fingerprint")
	}
	if err := c.Signal("node3", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitExit(ctx, "node3"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode("node3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "node1", 20*time.Second, "node3 back with a fresh lease after its certificate was rotated", func(s api.Status) bool {
		for _, n := range s.Nodes {
			if n.Name == "node3" {
				return n.State == "alive" && n.LeaseFresh
			}
		}
		return false
	})
	if out, errOut, code := cli("node3", "status", "--json"); code != 0 || !strings.Contains(out, c.Node("node3").Fingerprint) {
		t.Errorf("node3 after rotation: exit %d, does not serve its new certificate\n%s%s", code, out, errOut)
	}
	for _, n := range c.Nodes {
		b, _ := os.ReadFile(n.Log)
		if strings.Contains(string(b), "internal request refused") || strings.Contains(string(b), "not a node certificate") {
			t.Errorf("%s refused a member's call:\n%s", n.Name, grepLines(string(b), "refused", "not a node certificate"))
		}
	}
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
