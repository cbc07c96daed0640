package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchScaleThreeResources is the scale benchmark's small form (issue
// 11): 100 hierarchies of three resources (an app over a route-table
// virtual IP over its local address) on a network of namespaces, the
// simulator throttling EC2 as AWS does, with a mutating bucket smaller than
// the failover needs (50 tokens, 50 a second, for 100 ReplaceRoute calls).
// The node holding them all is killed; every hierarchy must be back on
// another node, none given up to throttling, and not sooner than the
// buckets allow (the floor: the simulator's throttling held). The full
// form is `lifeboat bench --hierarchies 1000 --three [--rate-limits]`.
func TestBenchScaleThreeResources(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network of namespaces")
	}
	const n = 100
	dir := filepath.Join(t.TempDir(), "bench")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "bench", "--hierarchies", "100", "--three", "--rate-limits", "--mutating-bucket", "50/50",
		"--runs", "1", "--quiet-wait", "0", "--dir", dir, "--json")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		for _, node := range []string{"node1", "node2", "node3"} {
			b, _ := os.ReadFile(filepath.Join(dir, "run-1", node+".log"))
			lines := strings.Split(string(b), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("--- last log lines of %s ---\n%s", node, strings.Join(lines, "\n"))
		}
		t.Fatalf("bench: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}
	var res struct {
		Hierarchies int `json:"hierarchies"`
		Resources   int `json:"resources_per_hierarchy"`
		Runs        []struct {
			Owner        string         `json:"owner"`
			Complete     bool           `json:"complete"`
			LastMS       float64        `json:"last_ms"`
			Back         map[string]int `json:"back"`
			FloorMS      float64        `json:"floor_ms"`
			EC2Admitted  map[string]int `json:"ec2_admitted"`
			EC2Throttled map[string]int `json:"ec2_throttled"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("bench output is not JSON: %v\n%s", err, out.String())
	}
	if res.Hierarchies != n || res.Resources != 3 || len(res.Runs) != 1 {
		t.Fatalf("hierarchies %d of %d resources, runs %d; want %d of 3, 1\n%s", res.Hierarchies, res.Resources, len(res.Runs), n, out.String())
	}
	r := res.Runs[0]
	back := 0
	for node, k := range r.Back {
		if node == r.Owner {
			t.Errorf("%d hierarchies counted back on the killed node %s", k, node)
		}
		back += k
	}
	if !r.Complete || back != n {
		t.Errorf("%d hierarchies back in service, want %d: %v", back, n, r.Back)
	}
	t.Logf("last back after %.0f ms, floor %.0f ms; EC2 admitted %v, throttled %v", r.LastMS, r.FloorMS, r.EC2Admitted, r.EC2Throttled)
	if r.FloorMS != 1000 {
		t.Errorf("floor %.0f ms, want (100 - 50) / 50 per second = 1000 ms", r.FloorMS)
	}
	if moved := r.EC2Admitted["ReplaceRoute"] + r.EC2Admitted["CreateRoute"]; moved < n {
		t.Errorf("%d routes moved through EC2, want at least %d", moved, n)
	}
	if r.LastMS < r.FloorMS {
		t.Errorf("all back after %.0f ms, sooner than EC2's buckets allow (%.0f ms): the simulator did not throttle", r.LastMS, r.FloorMS)
	}
}
