package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// TestTimerSlack: every thread of a running agent has the default timer
// slack (1ms, timing.timer_slack), the Go runtime's own included, and the
// commands of its app resources run with the slack the agent was started
// with.
func TestTimerSlack(t *testing.T) {
	c := startCluster(t, demo.Options{})
	started := readSlack(t, "/proc/self/timerslack_ns") // what the agents were started with
	if started == "1000000" {
		t.Skip("this test runs with a 1ms timer slack already: nothing to tell apart")
	}
	for _, n := range c.Nodes {
		tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(n.PID), "task"))
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if got := readSlack(t, filepath.Join("/proc", task.Name(), "timerslack_ns")); got != "1000000" {
				t.Errorf("%s: thread %s has a timer slack of %s ns, want 1000000", n.Name, task.Name(), got)
			}
		}
	}
	h := flagHierarchy("slack", []string{"node1", "node2", "node3"}, spec.SwitchbackIntelligent, 1, "")
	h.MonitorInterval = spec.Duration(time.Second)
	h.Resources[0].Params["restore"] = `cat /proc/self/timerslack_ns > "$LB_DATA_DIR/slack" && touch "$LB_DATA_DIR/slack.up"`
	apply(t, c, h)
	st := waitFor(t, c, "node1", 20*time.Second, "slack online", func(st api.Status) bool { return hier(st, "slack").State == "online" })
	owner := hier(st, "slack").Owner
	got := readSlack(t, filepath.Join(c.Dir, owner, "slack"))
	if got != started {
		t.Errorf("the app resource's command ran with a timer slack of %s ns, want the %s ns its agent was started with", got, started)
	}
}

func readSlack(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
