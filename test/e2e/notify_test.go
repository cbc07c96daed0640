package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/notify"
)

// A webhook configured in notify: gets the failover when the owner is
// killed, and `lifeboat events -f --json` prints a switchover as it
// happens (the agent streams it; nothing polls).
func TestNotifyAndEventStream(t *testing.T) {
	got := make(chan notify.Message, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m notify.Message
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err := json.Unmarshal(b, &m); err != nil || r.Method != "POST" {
			t.Errorf("webhook got %s %q: %v", r.Method, b, err)
		}
		select {
		case got <- m:
		default:
		}
	}))
	defer hook.Close()
	c := startCluster(t, demo.Options{NodeConfig: func(string) string {
		return "notify:\n  - name: ops\n    webhook:\n      url: " + hook.URL + "\n      timeout: 2s\n    filter:\n      kinds: [failover, node]\n"
	}})
	apply(t, c, flagHierarchy("nt", three, "", 1, ""))
	waitFor(t, c, "node3", 10*time.Second, "nt online on node1", onlineOn("nt", "node1"))

	follow := exec.Command(binary, "events", "-f", "--json", "--limit", "1")
	follow.Env = append(os.Environ(), "LIFEBOAT_ADDR="+c.Node("node3").Socket)
	out, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = follow.Process.Kill(); _ = follow.Wait() }()
	lines := make(chan events.Event, 1000)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e events.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("events -f --json printed %q: %v", sc.Text(), err)
				continue
			}
			lines <- e
		}
		close(lines)
	}()
	waitLine := func(what string, within time.Duration, match func(events.Event) bool) events.Event {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case e, ok := <-lines:
				if !ok {
					t.Fatalf("events -f ended before %s", what)
				}
				if match(e) {
					return e
				}
			case <-deadline:
				t.Fatalf("events -f: no %s within %s", what, within)
			}
		}
	}
	waitLine("past event (--limit 1)", 10*time.Second, func(events.Event) bool { return true })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	asked := time.Now()
	if err := c.Client("node1").Do(ctx, "POST", "/v1/hierarchies/nt/switchover", api.MoveRequest{To: "node2"}, nil); err != nil {
		t.Fatal(err)
	}
	e := waitLine("switchover assignment", 5*time.Second, func(e events.Event) bool {
		return e.Kind == "switchover" && e.Hierarchy == "nt" && e.Action == "assign"
	})
	t.Logf("events -f printed the switchover %s after it was asked for", time.Since(asked).Round(time.Millisecond))
	if e.Severity != events.Info {
		t.Errorf("switchover severity %q, want info", e.Severity)
	}

	if err := c.Signal("node2", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	var sawFailover, sawNodeFailed bool
	for !sawFailover || !sawNodeFailed {
		select {
		case m := <-got:
			if m.Cluster != "lifeboat" || m.Node == "" || m.Node != m.Event.Node {
				t.Errorf("webhook message from cluster %q node %q (event of %s)", m.Cluster, m.Node, m.Event.Node)
			}
			if m.Event.Kind != "failover" && m.Event.Kind != "node" || events.SeverityRank(m.Event.Severity) < events.SeverityRank(events.Warning) {
				t.Errorf("the filter let through %+v", m.Event)
			}
			if m.Event.Kind == "failover" && m.Event.Action == "assign" && m.Event.Hierarchy == "nt" {
				sawFailover = true
			}
			if m.Event.Kind == "node" && m.Event.Action == "failed" {
				sawNodeFailed = true
			}
		case <-deadline:
			t.Fatalf("webhook: failover seen %v, node failed seen %v, after 20s", sawFailover, sawNodeFailed)
		}
	}
	waitLine("the failover", 10*time.Second, func(e events.Event) bool {
		return e.Kind == "failover" && e.Hierarchy == "nt" && e.Action == "assign"
	})
}
