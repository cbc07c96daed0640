package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/ports"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

func TestHierarchyState(t *testing.T) {
	const h = "web"
	withReport := func(node string, r cluster.HierarchyReport) *cluster.State {
		s := cluster.NewState()
		s.Nodes[node] = &cluster.NodeState{Name: node, Gen: 1, Reports: map[string]cluster.HierarchyReport{h: r}}
		return s
	}
	empty := cluster.NewState()
	tests := []struct {
		name string
		s    *cluster.State
		as   *cluster.Assignment
		want string
	}{
		{"no assignment", empty, nil, "unknown"},
		{"deleting wins over everything", withReport("n1", cluster.HierarchyReport{Epoch: 3, State: engine.StateOnline}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 3, Online: true, MoveTo: "n2", Deleting: true}, "deleting"},
		{"unowned, wanted, failed somewhere", empty, &cluster.Assignment{Hierarchy: h, Online: true, Failed: []string{"n1"}}, "failed"},
		{"unowned, wanted", empty, &cluster.Assignment{Hierarchy: h, Online: true}, "unplaced"},
		{"unowned, not wanted", empty, &cluster.Assignment{Hierarchy: h}, "stopped"},
		{"unowned, not wanted, failed list ignored", empty, &cluster.Assignment{Hierarchy: h, Failed: []string{"n1"}}, "stopped"},
		{"move requested", withReport("n1", cluster.HierarchyReport{Epoch: 2, State: engine.StateOnline}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2, Online: true, MoveTo: "n2"}, "moving"},
		{"stopped, no report", empty, &cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2}, "stopped"},
		{"stopped, offline report", withReport("n1", cluster.HierarchyReport{Epoch: 2, State: engine.StateOffline}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2}, "stopped"},
		{"stopped, still removing", withReport("n1", cluster.HierarchyReport{Epoch: 2, State: engine.StateRemoving}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2}, engine.StateRemoving},
		{"stopped, report of an older epoch", withReport("n1", cluster.HierarchyReport{Epoch: 1, State: engine.StateOnline}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2}, "stopped"},
		{"wanted, no report yet", empty, &cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2, Online: true}, "pending"},
		{"wanted, report of an older epoch", withReport("n1", cluster.HierarchyReport{Epoch: 1, State: engine.StateOnline}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2, Online: true}, "pending"},
		{"wanted, report from another node", withReport("n2", cluster.HierarchyReport{Epoch: 2, State: engine.StateOnline}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2, Online: true}, "pending"},
		{"online", withReport("n1", cluster.HierarchyReport{Epoch: 2, State: engine.StateOnline}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2, Online: true}, engine.StateOnline},
		{"restoring", withReport("n1", cluster.HierarchyReport{Epoch: 2, State: engine.StateRestoring}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2, Online: true}, engine.StateRestoring},
		{"failed on owner", withReport("n1", cluster.HierarchyReport{Epoch: 2, State: engine.StateFailed}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2, Online: true}, engine.StateFailed},
		{"frozen", withReport("n1", cluster.HierarchyReport{Epoch: 2, State: engine.StateFrozen}),
			&cluster.Assignment{Hierarchy: h, Node: "n1", Epoch: 2, Online: true}, engine.StateFrozen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := hierarchyState(tc.s, tc.as); got != tc.want {
				t.Errorf("hierarchyState = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseCursors(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]uint64
	}{
		{"", map[string]uint64{}},
		{"node1:5", map[string]uint64{"node1": 5}},
		{"node1:5,node2:0,node3:18446744073709551615", map[string]uint64{"node1": 5, "node2": 0, "node3": 18446744073709551615}},
		{"node1:1,node1:7", map[string]uint64{"node1": 7}}, // the last one wins
		{"node1", map[string]uint64{}},                      // no colon
		{"node1:,node2:3", map[string]uint64{"node2": 3}},   // no number
		{"node1:x,node2:3", map[string]uint64{"node2": 3}},  // not a number
		{"node1:-1,node2:3", map[string]uint64{"node2": 3}}, // negative
		{"node1:18446744073709551616", map[string]uint64{}}, // overflow
		{",,node2:3,", map[string]uint64{"node2": 3}},       // empty parts
		{"node1:2,garbage,node2:3", map[string]uint64{"node1": 2, "node2": 3}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := parseCursors(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseCursors(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Three agents in one process, driven through their Unix sockets
// ---------------------------------------------------------------------------

// syncBuffer collects one agent's log lines; it is written from many
// goroutines, possibly after the test has ended (so no t.Log there).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(b.buf.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type testNode struct {
	name string
	dir  string // data_dir ($LB_DATA_DIR of the app commands)
	sock string
	a    *Agent
	cl   *api.Client
	logs *syncBuffer
	cfg  *config.Agent
	lg   *slog.Logger

	mu   sync.Mutex
	down bool // Shutdown has been called
}

// shutdown calls Shutdown once and reports how long it took.
func (n *testNode) shutdown(ctx context.Context) (time.Duration, bool) {
	n.mu.Lock()
	if n.down {
		n.mu.Unlock()
		return 0, false
	}
	n.down = true
	n.mu.Unlock()
	start := time.Now()
	n.a.Shutdown(ctx)
	return time.Since(start), true
}

// restart starts the node's agent again on its data directory, standing
// in for a binary that supports up to level (0: all of this one's).
func (n *testNode) restart(t *testing.T, level int) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.down {
		t.Fatalf("restart of %s, which is running", n.name)
	}
	a, err := New(n.cfg, Options{Logger: n.lg, Level: new(slog.LevelVar), FeatureLevel: level, Kits: testKits})
	if err != nil {
		t.Fatalf("restart %s: %v", n.name, err)
	}
	n.a, n.down = a, false
}

type testCluster struct {
	nodes []*testNode
}

func (c *testCluster) node(name string) *testNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// testFreePorts returns n distinct free TCP ports on 127.0.0.1 that are also
// free for UDP (memberlist uses both), as internal/demo does.
func testFreePorts(t testing.TB, n int) []int {
	t.Helper()
	ps, err := ports.Free(n)
	if err != nil {
		t.Fatalf("find free ports: %v", err)
	}
	return ps
}

// shortTempDir returns a temporary directory short enough for unix socket
// paths below it.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) < 60 {
		return dir
	}
	dir, err := os.MkdirTemp("/tmp", "lbat")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startTestCluster starts three agents (node1..node3) in this process. The
// cleanup shuts every agent still running down, even when the test fails.
func startTestCluster(t *testing.T) *testCluster {
	t.Helper()
	return startTestClusterLevels(t, nil)
}

// startTestClusterLevels is startTestCluster with some nodes standing in
// for a version that supports only up to the given feature level.
func startTestClusterLevels(t *testing.T, levels map[string]int) *testCluster {
	t.Helper()
	const count = 3
	root := shortTempDir(t)
	ports := testFreePorts(t, count*3)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	var members strings.Builder
	for i := range count {
		fmt.Fprintf(&members, "    - name: node%d\n      raft: 127.0.0.1:%d\n      gossip: 127.0.0.1:%d\n      api: 127.0.0.1:%d\n",
			i+1, ports[i*3], ports[i*3+1], ports[i*3+2])
	}
	c := &testCluster{}
	t.Cleanup(func() {
		// Shut down whatever still runs, all at once: a lone survivor may
		// wait for a leader until the context ends.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, n := range c.nodes {
			wg.Go(func() { n.shutdown(ctx) })
		}
		wg.Wait()
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("--- last log lines of %s ---\n%s", n.name, n.logs.tail(80))
			}
		}
	})
	for i := range count {
		n := &testNode{name: fmt.Sprintf("node%d", i+1), logs: &syncBuffer{}}
		n.dir = filepath.Join(root, n.name)
		n.sock = filepath.Join(root, n.name+".sock")
		if len(n.sock) >= 100 {
			t.Fatalf("socket path %s is too long", n.sock)
		}
		yaml := fmt.Sprintf("node: %s\ndata_dir: %s\napi:\n  socket: %s\ncluster:\n  key: %s\n  nodes:\n%s",
			n.name, n.dir, n.sock, base64.StdEncoding.EncodeToString(key), members.String())
		cfg, err := config.ParseAgent(filepath.Join(root, n.name+".yaml"), []byte(yaml))
		if err != nil {
			t.Fatalf("parse config of %s: %v\n%s", n.name, err, yaml)
		}
		if cfg.ShutdownStrategy != config.ShutdownSwitchover {
			t.Fatalf("default shutdown strategy = %q, want %q", cfg.ShutdownStrategy, config.ShutdownSwitchover)
		}
		logger := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		n.cfg, n.lg = cfg, logger
		n.a, err = New(cfg, Options{Logger: logger, Level: new(slog.LevelVar), FeatureLevel: levels[n.name], Kits: testKits})
		if err != nil {
			t.Fatalf("start %s: %v", n.name, err)
		}
		c.nodes = append(c.nodes, n)
		if n.cl, err = api.NewClient(n.sock, "", 5*time.Second, nil); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// do sends one request to a node's socket with a bounded context.
func (n *testNode) do(timeout time.Duration, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.cl.Do(ctx, method, path, body, out)
}

func (n *testNode) status() (api.Status, error) {
	var st api.Status
	err := n.do(2*time.Second, "GET", "/v1/status", nil, &st)
	return st, err
}

// waitUntil polls cond every 10ms until it holds or timeout passes; cond
// returns a description of what it saw for the failure message.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func findHierarchy(st api.Status, name string) (api.HierarchyStatus, bool) {
	for _, h := range st.Hierarchies {
		if h.Name == name {
			return h, true
		}
	}
	return api.HierarchyStatus{}, false
}

// waitOnline waits until node from sees hierarchy name online on a node
// accepted by owner and returns the status.
func waitOnline(t *testing.T, from *testNode, name string, timeout time.Duration, owner func(string) bool) api.HierarchyStatus {
	t.Helper()
	var hs api.HierarchyStatus
	waitUntil(t, timeout, fmt.Sprintf("%s online (seen by %s)", name, from.name), func() (bool, string) {
		st, err := from.status()
		if err != nil {
			return false, err.Error()
		}
		h, ok := findHierarchy(st, name)
		hs = h
		return ok && h.State == engine.StateOnline && owner(h.Owner) && h.MoveTo == "", fmt.Sprintf("%+v", h)
	})
	return hs
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// flagHierarchy is a one-resource hierarchy whose resource is the file
// $LB_DATA_DIR/NAME.up.
func flagHierarchy(name string, nodes []string) spec.Hierarchy {
	flag := fmt.Sprintf(`"$LB_DATA_DIR/%s.up"`, name)
	return spec.Hierarchy{
		Name:            name,
		Nodes:           nodes,
		MonitorInterval: spec.Duration(100 * time.Millisecond),
		Resources: []spec.Resource{{Name: name + "-res", Type: "app", Params: map[string]string{
			"restore":    "touch " + flag,
			"remove":     "rm -f " + flag,
			"quickcheck": "test -f " + flag,
		}}},
	}
}

// TestAgentsInProcess runs three agents in one process (meant for -race):
// apply, switchover, graceful shutdown with handover, merged events, stop
// and shutdown of the rest, while every node's API is polled concurrently.
func TestAgentsInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	testStart := time.Now()
	c := startTestCluster(t)
	names := []string{"node1", "node2", "node3"}

	// Every node sees a leader, holds its lease, and sees every node alive
	// with a fresh lease.
	waitUntil(t, 15*time.Second, "cluster ready", func() (bool, string) {
		for _, n := range c.nodes {
			st, err := n.status()
			if err != nil {
				return false, n.name + ": " + err.Error()
			}
			if st.Leader == "" {
				return false, n.name + " sees no leader"
			}
			if !st.Local.LeaseHeld {
				return false, n.name + " holds no lease"
			}
			if len(st.Nodes) != len(names) {
				return false, fmt.Sprintf("%s lists %d nodes", n.name, len(st.Nodes))
			}
			for _, ns := range st.Nodes {
				if ns.State != "alive" || ns.Gen == 0 || !ns.LeaseFresh {
					return false, fmt.Sprintf("%s sees %+v", n.name, ns)
				}
			}
		}
		return true, ""
	})
	t.Logf("cluster ready after %s", time.Since(testStart).Round(time.Millisecond))

	// Load in the background: every node's read endpoints, concurrently
	// with everything below. Errors are expected once a node is down.
	stopLoad := make(chan struct{})
	var loadWG sync.WaitGroup
	t.Cleanup(func() {
		select {
		case <-stopLoad:
		default:
			close(stopLoad)
		}
		loadWG.Wait()
	})
	for _, n := range c.nodes {
		loadWG.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				case <-tick.C:
				}
				switch i % 4 {
				case 0, 2:
					_, _ = n.status()
				case 1:
					_ = n.do(2*time.Second, "GET", "/metrics", nil, nil)
				case 3:
					_ = n.do(2*time.Second, "GET", "/v1/events?local=1", nil, &api.EventsResponse{})
				}
			}
		})
	}
	// The run-time log level is an atomic shared with every handler.
	if err := c.node("node3").do(2*time.Second, "POST", "/v1/log-level", map[string]string{"level": "debug"}, nil); err != nil {
		t.Fatalf("set log level: %v", err)
	}

	// Apply one hierarchy; it comes online on node1, its first choice.
	const hname = "web"
	h := flagHierarchy(hname, names)
	var ar api.ApplyResponse
	if err := c.node("node2").do(10*time.Second, "POST", "/v1/apply", api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}}, &ar); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !slices.Equal(ar.Created, []string{hname}) || len(ar.Updated) != 0 {
		t.Fatalf("apply answered %+v, want %s created", ar, hname)
	}
	waitOnline(t, c.node("node3"), hname, 10*time.Second, func(o string) bool { return o == "node1" })
	flag := func(n string) string { return filepath.Join(c.node(n).dir, hname+".up") }
	if !fileExists(flag("node1")) {
		t.Fatal("web online on node1 but its file is missing there")
	}
	for _, n := range []string{"node2", "node3"} {
		if fileExists(flag(n)) {
			t.Fatalf("web online on node1 but its file also exists on %s", n)
		}
	}
	// Applying the same spec again changes nothing.
	ar = api.ApplyResponse{}
	if err := c.node("node1").do(10*time.Second, "POST", "/v1/apply", api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}}, &ar); err != nil {
		t.Fatalf("re-apply: %v", err)
	}
	if !slices.Equal(ar.Unchanged, []string{hname}) || len(ar.Created)+len(ar.Updated) != 0 {
		t.Fatalf("re-apply answered %+v, want %s unchanged", ar, hname)
	}

	// 1. Switchover to node2, asked on node1 or node3 (a follower when
	// possible, so the command is forwarded to the leader).
	st, err := c.node("node1").status()
	if err != nil {
		t.Fatal(err)
	}
	asker := c.node("node3")
	if st.Leader == "node3" {
		asker = c.node("node1")
	}
	var out api.Outcome
	if err := asker.do(30*time.Second, "POST", "/v1/hierarchies/"+hname+"/switchover", api.MoveRequest{To: "node2", Timeout: spec.Duration(20 * time.Second)}, &out); err != nil {
		t.Fatalf("switchover to node2 (asked on %s, leader %s): %v", asker.name, st.Leader, err)
	}
	if out.Hierarchy != hname || out.Owner != "node2" || out.State != engine.StateOnline || out.Epoch == 0 {
		t.Fatalf("switchover outcome %+v, want %s online on node2", out, hname)
	}
	t.Logf("switchover (asked on %s, leader %s): %+v", asker.name, st.Leader, out)
	if !fileExists(flag("node2")) || fileExists(flag("node1")) || fileExists(flag("node3")) {
		t.Fatalf("after switchover: file on node1=%v node2=%v node3=%v, want only node2",
			fileExists(flag("node1")), fileExists(flag("node2")), fileExists(flag("node3")))
	}
	// The new owner's own view: it holds the hierarchy now.
	st2, err := c.node("node2").status()
	if err != nil {
		t.Fatal(err)
	}
	if lh := st2.Local.Hierarchies[hname]; lh.State != engine.StateOnline || !lh.Holding || lh.Epoch != out.Epoch {
		t.Fatalf("node2's local view of %s: %+v, want online, holding, epoch %d", hname, lh, out.Epoch)
	}
	// Switching over to where it already is answers at once, without a
	// new epoch, once the asked node's state shows it online there.
	waitOnline(t, c.node("node1"), hname, 10*time.Second, func(o string) bool { return o == "node2" })
	var again api.Outcome
	if err := c.node("node1").do(10*time.Second, "POST", "/v1/hierarchies/"+hname+"/switchover", api.MoveRequest{To: "node2"}, &again); err != nil {
		t.Fatalf("repeated switchover: %v", err)
	}
	if again.Owner != "node2" || again.State != engine.StateOnline || again.Epoch != out.Epoch {
		t.Fatalf("repeated switchover outcome %+v, want no change from %+v", again, out)
	}

	// 2. Graceful shutdown of the owner hands the hierarchy over.
	ownerName := out.Owner
	owner := c.node(ownerName)
	var survivors []*testNode
	for _, n := range c.nodes {
		if n != owner {
			survivors = append(survivors, n)
		}
	}
	const shutdownBound = 10 * time.Second
	sdCtx, sdCancel := context.WithTimeout(context.Background(), shutdownBound)
	done := make(chan time.Duration, 1)
	go func() {
		d, _ := owner.shutdown(sdCtx)
		done <- d
	}()
	select {
	case d := <-done:
		t.Logf("shutdown of %s took %s", ownerName, d.Round(time.Millisecond))
	case <-time.After(shutdownBound + 5*time.Second):
		t.Fatalf("Shutdown of %s did not return within %s", ownerName, shutdownBound+5*time.Second)
	}
	if sdCtx.Err() != nil {
		t.Errorf("Shutdown of %s used up its whole context (%s): handover did not finish", ownerName, shutdownBound)
	}
	sdCancel()
	if err := owner.do(time.Second, "GET", "/v1/version", nil, nil); err == nil {
		t.Errorf("%s still answers on its socket after Shutdown", ownerName)
	}
	hs := waitOnline(t, survivors[0], hname, 10*time.Second, func(o string) bool { return o != "" && o != ownerName })
	newOwner := hs.Owner
	// Handed over by the switchover path (the owner announced it was
	// leaving), not by fencing.
	if want := "switchover to " + newOwner; hs.Reason != want {
		t.Errorf("after shutdown of %s: reason %q, want %q", ownerName, hs.Reason, want)
	}
	if !fileExists(flag(newOwner)) || fileExists(flag(ownerName)) {
		t.Fatalf("after shutdown: file on %s=%v, on %s=%v", newOwner, fileExists(flag(newOwner)), ownerName, fileExists(flag(ownerName)))
	}
	for _, n := range survivors {
		if n.name != newOwner && fileExists(flag(n.name)) {
			t.Fatalf("%s is online on %s but its file also exists on %s", hname, newOwner, n.name)
		}
	}
	// Both survivors agree, and still see a leader among themselves.
	for _, n := range survivors {
		waitUntil(t, 10*time.Second, n.name+" agrees on the new owner and sees a live leader", func() (bool, string) {
			st, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			h, _ := findHierarchy(st, hname)
			leaving := false
			for _, ns := range st.Nodes {
				if ns.Name == ownerName {
					leaving = ns.Leaving
				}
			}
			return h.Owner == newOwner && h.State == engine.StateOnline && st.Leader != "" && st.Leader != ownerName && leaving,
				fmt.Sprintf("leader %q, %s leaving %v, %+v", st.Leader, ownerName, leaving, h)
		})
	}

	// 3. Merged events from a survivor: both survivors' histories, the
	// shut-down node reported unreachable.
	reader := survivors[0]
	var ev api.EventsResponse
	if err := reader.do(10*time.Second, "GET", "/v1/events", nil, &ev); err != nil {
		t.Fatalf("events: %v", err)
	}
	if _, ok := ev.Unreachable[ownerName]; !ok {
		t.Errorf("events: unreachable = %v, want it to name %s", ev.Unreachable, ownerName)
	}
	for _, n := range survivors {
		if msg, ok := ev.Unreachable[n.name]; ok {
			t.Errorf("events: live node %s reported unreachable: %s", n.name, msg)
		}
	}
	byNode := map[string]int{}
	maxSeq := map[string]uint64{}
	sawSwitchover, sawRestore := false, map[string]bool{}
	for i, e := range ev.Events {
		byNode[e.Node]++
		maxSeq[e.Node] = max(maxSeq[e.Node], e.Seq)
		if i > 0 && e.Time.Before(ev.Events[i-1].Time) {
			t.Errorf("events not in time order at %d: %s before %s", i, e.Time, ev.Events[i-1].Time)
		}
		if e.Action == "switchover" && e.Hierarchy == hname && e.Node == asker.name {
			sawSwitchover = true
		}
		if e.Kind == "action" && e.Action == "restore" && e.Phase == "end" && e.Hierarchy == hname && e.Error == "" {
			sawRestore[e.Node] = true
		}
	}
	for _, n := range survivors {
		if byNode[n.name] == 0 {
			t.Errorf("events: none from %s (by node: %v)", n.name, byNode)
		}
		if ev.Cursors[n.name] != maxSeq[n.name] {
			t.Errorf("events: cursor of %s is %d, want its last sequence %d", n.name, ev.Cursors[n.name], maxSeq[n.name])
		}
	}
	if byNode[ownerName] != 0 {
		t.Errorf("events: %d events from unreachable %s", byNode[ownerName], ownerName)
	}
	if !sawSwitchover {
		t.Errorf("events: no switchover event from %s", asker.name)
	}
	if !sawRestore[newOwner] {
		t.Errorf("events: no successful restore of %s on %s (restores seen on %v)", hname, newOwner, sawRestore)
	}
	// With the cursors passed back, only newer events come.
	var cur []string
	for _, n := range survivors {
		cur = append(cur, fmt.Sprintf("%s:%d", n.name, ev.Cursors[n.name]))
	}
	var ev2 api.EventsResponse
	if err := reader.do(10*time.Second, "GET", "/v1/events?cursor="+strings.Join(cur, ","), nil, &ev2); err != nil {
		t.Fatalf("events with cursor: %v", err)
	}
	for _, e := range ev2.Events {
		if e.Seq <= ev.Cursors[e.Node] {
			t.Errorf("events with cursor %v returned old event %s#%d", cur, e.Node, e.Seq)
		}
	}

	// 4. Stop the hierarchy, then shut the survivors down together.
	var stopOut api.Outcome
	if err := reader.do(30*time.Second, "POST", "/v1/hierarchies/"+hname+"/stop", api.ActionRequest{Timeout: spec.Duration(20 * time.Second)}, &stopOut); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if stopOut.State != "stopped" {
		t.Fatalf("stop outcome %+v, want stopped", stopOut)
	}
	for _, n := range names {
		if fileExists(flag(n)) {
			t.Fatalf("%s stopped but its file still exists on %s", hname, n)
		}
	}
	close(stopLoad)
	loadWG.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownBound)
	defer cancel()
	took := make(chan string, len(survivors))
	for _, n := range survivors {
		go func() {
			d, _ := n.shutdown(ctx)
			took <- fmt.Sprintf("%s %s", n.name, d.Round(time.Millisecond))
		}()
	}
	timeout := time.After(shutdownBound + 5*time.Second)
	for range survivors {
		select {
		case s := <-took:
			t.Logf("shutdown of %s", s)
		case <-timeout:
			t.Fatalf("Shutdown of the survivors did not return within %s", shutdownBound+5*time.Second)
		}
	}
	if ctx.Err() != nil {
		t.Errorf("Shutdown of the survivors used up its whole context (%s)", shutdownBound)
	}
	for _, n := range survivors {
		if err := n.do(time.Second, "GET", "/v1/version", nil, nil); err == nil {
			t.Errorf("%s still answers after Shutdown", n.name)
		}
	}
	t.Logf("total %s", time.Since(testStart).Round(time.Millisecond))
}
