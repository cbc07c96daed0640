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

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
)

// TestBenchMassFailover runs `lifeboat bench --hierarchies` end to end with a
// handful of hierarchies: the node holding them all is killed, every one is
// reported back in service elsewhere, and the figures are sane. No timing is
// asserted beyond the order of first, median and last.
func TestBenchMassFailover(t *testing.T) {
	const n = 5
	dir := filepath.Join(t.TempDir(), "bench")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// --quiet-wait 0: the test checks what the bench reports, not the
	// figures, so it does not wait for the other tests to leave the CPU.
	cmd := exec.CommandContext(ctx, binary, "bench", "--hierarchies", "5", "--runs", "1", "--quiet-wait", "0", "--dir", dir, "--json")
	// On the deadline, SIGTERM: the bench kills the agents it started
	// (SIGKILL, the default, would leave them running).
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
		Runs        []struct {
			Owner        string         `json:"owner"`
			FeatureLevel int            `json:"feature_level"`
			FirstMS      float64        `json:"first_ms"`
			P50MS        float64        `json:"p50_ms"`
			LastMS       float64        `json:"last_ms"`
			Back         map[string]int `json:"back"`
			IndexBefore  uint64         `json:"index_before"`
			IndexLast    uint64         `json:"index_last"`
			Commits      uint64         `json:"commits"`
		} `json:"runs"`
		MedianFirstMS float64 `json:"median_first_ms"`
		MedianLastMS  float64 `json:"median_last_ms"`
		MedianCommits float64 `json:"median_commits"`
	}
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("bench output is not JSON: %v\n%s", err, out.String())
	}
	if res.Hierarchies != n || len(res.Runs) != 1 {
		t.Fatalf("hierarchies %d, runs %d; want %d, 1\n%s", res.Hierarchies, len(res.Runs), n, out.String())
	}
	r := res.Runs[0]
	back := 0
	for node, k := range r.Back {
		if node == r.Owner {
			t.Errorf("%d hierarchies counted back on the killed node %s", k, node)
		}
		back += k
	}
	if back != n {
		t.Errorf("%d hierarchies back in service, want %d: %v", back, n, r.Back)
	}
	if !(r.FirstMS > 0 && r.FirstMS <= r.P50MS && r.P50MS <= r.LastMS) {
		t.Errorf("first %.0f ms, p50 %.0f ms, last %.0f ms: want 0 < first <= p50 <= last", r.FirstMS, r.P50MS, r.LastMS)
	}
	if r.LastMS > 20000 {
		t.Errorf("last hierarchy back after %.0f ms: the bench measured something else", r.LastMS)
	}
	// At least the revocation, the release and the placement of the
	// hierarchies are committed.
	if r.IndexBefore == 0 || r.IndexLast != r.IndexBefore+r.Commits || r.Commits < 3 {
		t.Errorf("raft index %d -> %d, %d commits", r.IndexBefore, r.IndexLast, r.Commits)
	}
	if r.FeatureLevel < cluster.LevelTyped {
		t.Errorf("feature level %d during the failover, want at least %d (batches)", r.FeatureLevel, cluster.LevelTyped)
	}
	if res.MedianFirstMS != r.FirstMS || res.MedianLastMS != r.LastMS || res.MedianCommits != float64(r.Commits) {
		t.Errorf("medians of one run differ from the run: %+v", res)
	}
}

// TestBenchIdleByComponent runs the plain `lifeboat bench` once with a
// short idle window: every agent's idle CPU and RSS are reported, then its
// CPU profile (fetched through the agent's socket) split by component.
func TestBenchIdleByComponent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bench")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "bench", "--runs", "1", "--idle", "2s", "--dir", dir, "--json")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}
	var res struct {
		FailoverMS []float64 `json:"failover_ms"`
		Idle       []struct {
			Node       string  `json:"node"`
			CPUPercent float64 `json:"cpu_percent"`
			RSSMiB     float64 `json:"rss_mib"`
			Profile    *struct {
				Samples    int     `json:"samples"`
				CPUMS      float64 `json:"cpu_ms"`
				Error      string  `json:"error"`
				Components []struct {
					Name    string  `json:"name"`
					Percent float64 `json:"percent"`
				} `json:"components"`
			} `json:"profile"`
		} `json:"idle"`
	}
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out.String())
	}
	if len(res.FailoverMS) != 1 || len(res.Idle) != 3 {
		t.Fatalf("want one failover and three idle figures: %s", out.String())
	}
	for _, n := range res.Idle {
		if n.RSSMiB <= 0 || n.Profile == nil || n.Profile.Error != "" {
			t.Errorf("%s: RSS %.1f MiB, profile %+v: want an RSS and a profile", n.Node, n.RSSMiB, n.Profile)
			continue
		}
		sum := 0.0
		for _, c := range n.Profile.Components {
			sum += c.Percent
		}
		if n.Profile.Samples > 0 && (sum < 99.9 || sum > 100.1) || n.Profile.Samples == 0 && len(n.Profile.Components) != 0 {
			t.Errorf("%s: %d samples, components add up to %.1f%%: %+v", n.Node, n.Profile.Samples, sum, n.Profile.Components)
		}
	}
}
