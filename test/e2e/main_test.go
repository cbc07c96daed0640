// Package e2e runs whole lifeboat clusters as real agent processes on
// 127.0.0.1 and kills, stops and restarts them for real.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

var binary, newerBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lifeboat-e2e-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "lifeboat")
	out, err := exec.Command("go", "build", "-o", binary, "../../cmd/lifeboat").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build lifeboat: %v\n%s", err, out)
		os.Exit(1)
	}
	// The same code under a later version number, for rolling upgrades.
	newerBinary = filepath.Join(dir, "lifeboat-newer")
	out, err = exec.Command("go", "build", "-ldflags", "-X main.version=9.9.0", "-o", newerBinary, "../../cmd/lifeboat").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build lifeboat 9.9.0: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startCluster starts nodes agents and waits for the cluster to form.
func startCluster(t *testing.T, opts demo.Options) *demo.Cluster {
	t.Helper()
	opts.Binary = binary
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	c, err := demo.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			for _, n := range c.Nodes {
				b, _ := os.ReadFile(n.Log)
				lines := strings.Split(string(b), "\n")
				if len(lines) > 60 {
					lines = lines[len(lines)-60:]
				}
				t.Logf("--- last log lines of %s ---\n%s", n.Name, strings.Join(lines, "\n"))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// flagHierarchy is a one-resource hierarchy whose resource is a file in the
// node's data directory; "broken" in the data directory fails its check.
func flagHierarchy(name string, nodes []string, switchback string, recovery int, recoverCmd string) spec.Hierarchy {
	flag := fmt.Sprintf(`"$LB_DATA_DIR/%s.up"`, name)
	params := map[string]string{
		"restore":    "touch " + flag,
		"remove":     "rm -f " + flag,
		"quickcheck": fmt.Sprintf(`test -f %s && ! test -f "$LB_DATA_DIR/broken"`, flag),
	}
	if recoverCmd != "" {
		params["recover"] = recoverCmd
	}
	return spec.Hierarchy{Name: name, Nodes: nodes, Switchback: switchback, MonitorInterval: spec.Duration(100 * time.Millisecond),
		LocalRecovery: &recovery, Resources: []spec.Resource{{Name: name + "-res", Type: "app", Params: params}}}
}

func apply(t *testing.T, c *demo.Cluster, hs ...spec.Hierarchy) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Apply(ctx, api.ApplyRequest{Hierarchies: hs}); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls node's status until cond holds.
func waitFor(t *testing.T, c *demo.Cluster, node string, timeout time.Duration, what string, cond func(api.Status) bool) api.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last api.Status
	var lastErr error
	for {
		st, err := c.Status(ctx, node)
		if err == nil {
			last = st
			if cond(st) {
				return st
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s (last error %v); last status: %+v", timeout, what, lastErr, last.Hierarchies)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func hier(st api.Status, name string) api.HierarchyStatus {
	for _, h := range st.Hierarchies {
		if h.Name == name {
			return h
		}
	}
	return api.HierarchyStatus{}
}

func onlineOn(name, node string) func(api.Status) bool {
	return func(st api.Status) bool {
		h := hier(st, name)
		return h.Owner == node && h.State == "online"
	}
}

// lifeboat runs the CLI against node's socket and returns stdout, stderr
// and the exit code.
func lifeboat(t *testing.T, c *demo.Cluster, node string, args ...string) (string, string, int) {
	t.Helper()
	return runCLI(t, binary, c.Node(node).Socket, args...)
}

// runCLI runs lifeboat binary bin with args against the agent at socket
// and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, bin, socket string, args ...string) (string, string, int) {
	t.Helper()
	return runCLIEnv(t, bin, []string{"LIFEBOAT_ADDR=" + socket}, args...)
}

// runCLIEnv runs lifeboat binary bin with args and env added to the
// test's environment, and returns stdout, stderr and the exit code.
func runCLIEnv(t *testing.T, bin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}
