package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// TestScenariosAsProcesses runs the scenarios of internal/agent/agenttest,
// which its own tests run on in-memory agents in fake time, on real agent
// processes (default timing, the app kit, a flag file per node as the
// service). As root each node is a host of its own in a network
// namespace: a killed node's link goes down with it (a dead machine
// answers nothing) and an isolated node's link goes down while its agent
// runs on. Otherwise the agents share 127.0.0.1 and the isolation
// scenario is skipped.
func TestScenariosAsProcesses(t *testing.T) {
	for _, sc := range agenttest.Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			h := startProcHarness(t, sc.Setup)
			sc.Run(t, h)
		})
	}
}

// procHarness implements agenttest.Harness with agent processes.
type procHarness struct {
	t *testing.T
	c *demo.Cluster
	// lab: each node in its own network namespace (nil: 127.0.0.1).
	lab *netnsLab

	mu       sync.Mutex
	dead     map[string]bool
	isolated map[string]bool
	hung     map[string]bool
	cuts     [][2]int
	doubles  []string
	watched  map[string]bool
	// resumed: "hierarchy/node" that a node resumed from a hang serves
	// (what it ran before), until it is no longer served there.
	resumed map[string]bool
}

func startProcHarness(t *testing.T, setup agenttest.Setup) *procHarness {
	t.Helper()
	opts := demo.Options{}
	var lab *netnsLab
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("ip"); err == nil {
			lab = newNetnsLab(t, 3)
			opts.IPs, opts.Wrap = lab.ips, lab.wrap
		}
	}
	if setup.Old {
		prevBin := previousBinary(t)
		opts.Binaries = map[string]string{}
		for _, n := range []string{"node1", "node2", "node3"} {
			opts.Binaries[n] = prevBin
		}
	}
	h := &procHarness{t: t, c: startCluster(t, opts), lab: lab, dead: map[string]bool{}, isolated: map[string]bool{}, hung: map[string]bool{}, watched: map[string]bool{}, resumed: map[string]bool{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	go h.watch(stop, done)
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return h
}

// watch looks every 5 ms for a service that comes up on a node while it
// serves on another (a node that resumes from a hang and still serves
// what it ran is not a new start: it is left out of the check until its
// agent has taken the service out or it hangs again).
func (h *procHarness) watch(stop, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	prev := map[string][]string{}
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		h.mu.Lock()
		var names []string
		for n := range h.watched {
			names = append(names, n)
		}
		h.mu.Unlock()
		for _, n := range names {
			run := h.Running(n)
			h.mu.Lock()
			for _, node := range run {
				if slices.Contains(prev[n], node) || h.resumed[n+"/"+node] {
					continue
				}
				if len(run) > 1 {
					h.doubles = append(h.doubles, fmt.Sprintf("%s started on %s while it ran on %v, at %s", n, node, run, time.Now().Format("15:04:05.000")))
				}
			}
			for key := range h.resumed {
				if hier, node, _ := strings.Cut(key, "/"); hier == n && !slices.Contains(run, node) {
					delete(h.resumed, key)
				}
			}
			h.mu.Unlock()
			prev[n] = run
		}
	}
}

func (h *procHarness) Nodes() []string {
	var out []string
	for _, n := range h.c.Nodes {
		out = append(out, n.Name)
	}
	return out
}

func (h *procHarness) Status(node string) (api.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return h.c.Status(ctx, node)
}

func (h *procHarness) Apply(hs ...spec.Hierarchy) error {
	h.mu.Lock()
	for _, x := range hs {
		h.watched[x.Name] = true
	}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.c.Apply(ctx, api.ApplyRequest{Hierarchies: hs})
}

// Service is a flag file per node; every restore also adds a line to
// NAME.restores in the node's data directory.
func (h *procHarness) Service(name string, nodes []string) spec.Hierarchy {
	hs := flagHierarchy(name, nodes, "", 1, "")
	p := hs.Resources[0].Params
	p["restore"] = fmt.Sprintf(`%s && echo restore >> "$LB_DATA_DIR/%s.restores"`, p["restore"], name)
	return hs
}

func (h *procHarness) Restores(hierarchy string) map[string]int {
	out := map[string]int{}
	for _, n := range h.c.Nodes {
		b, err := os.ReadFile(filepath.Join(h.c.Dir, n.Name, hierarchy+".restores"))
		if err == nil {
			out[n.Name] = strings.Count(string(b), "\n")
		}
	}
	return out
}

// Break makes the node's services fail their checks: the flag
// hierarchies' quickcheck fails while "broken" exists in the data
// directory.
func (h *procHarness) Break(node string, broken bool) error {
	f := filepath.Join(h.c.Dir, node, "broken")
	if broken {
		return os.WriteFile(f, nil, 0o600)
	}
	if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// post sends an operator's request through the first running node.
func (h *procHarness) post(path string, body any) error {
	for _, n := range h.c.Nodes {
		if !n.Running() || n.Witness {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return h.c.Client(n.Name).Do(ctx, "POST", path, body, nil)
	}
	return fmt.Errorf("POST %s: no node is running", path)
}

func (h *procHarness) Post(path string, body any) error { return h.post(path, body) }

func (h *procHarness) Switchover(hierarchy, to string) error {
	return h.post("/v1/hierarchies/"+hierarchy+"/switchover", api.MoveRequest{To: to})
}

func (h *procHarness) StartHierarchy(hierarchy string) error {
	return h.post("/v1/hierarchies/"+hierarchy+"/start", api.ActionRequest{})
}

func (h *procHarness) DecideFailover(hierarchy, decision string) error {
	return h.post("/v1/hierarchies/"+hierarchy+"/failover/"+decision, api.ActionRequest{})
}

// Hang stops the agent's process group (SIGSTOP) and, on namespaces,
// takes its link down: a frozen machine answers nothing.
func (h *procHarness) Hang(node string) error {
	n := h.c.Node(node)
	if n == nil || !n.Running() {
		return fmt.Errorf("node %s is not running", node)
	}
	h.mu.Lock()
	h.hung[node] = true
	h.mu.Unlock()
	h.setLink(node, "down")
	if err := syscall.Kill(-n.PID, syscall.SIGSTOP); err != nil {
		return err
	}
	// The agent itself must be stopped, not only its link.
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.PID))
		if err != nil {
			return err
		}
		// pid (comm) state ...: the state follows the last ')'.
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "T" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) is not stopped after SIGSTOP: %s", node, n.PID, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Resume continues the process group and brings the link back.
func (h *procHarness) Resume(node string) error {
	n := h.c.Node(node)
	if n == nil {
		return fmt.Errorf("no node %s", node)
	}
	h.mu.Lock()
	for key := range h.watched {
		if _, err := os.Stat(h.flag(node, key)); err == nil {
			h.resumed[key+"/"+node] = true
		}
	}
	delete(h.hung, node)
	h.mu.Unlock()
	if err := syscall.Kill(-n.PID, syscall.SIGCONT); err != nil {
		return err
	}
	h.setLink(node, "up")
	return nil
}

func (h *procHarness) flag(node, hierarchy string) string {
	return filepath.Join(h.c.Dir, node, hierarchy+".up")
}

func (h *procHarness) Running(hierarchy string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, n := range h.c.Nodes {
		if h.dead[n.Name] || h.hung[n.Name] {
			continue
		}
		if _, err := os.Stat(h.flag(n.Name, hierarchy)); err == nil {
			out = append(out, n.Name)
		}
	}
	sort.Strings(out)
	return out
}

func (h *procHarness) DoubleOwners() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.doubles...)
}

// Kill: kill -9, and the machine's services die with it (its flag files
// go).
func (h *procHarness) Kill(node string) {
	h.mu.Lock()
	h.dead[node] = true
	h.mu.Unlock()
	h.setLink(node, "down")
	if err := h.c.Signal(node, syscall.SIGKILL); err != nil {
		h.t.Fatalf("kill %s: %v", node, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.c.WaitExit(ctx, node); err != nil {
		h.t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(h.c.Dir, node, "*.up"))
	for _, m := range matches {
		os.Remove(m)
	}
}

// Stop: SIGTERM, and wait for the agent to hand over and exit.
func (h *procHarness) Stop(node string) {
	if err := h.c.Signal(node, syscall.SIGTERM); err != nil {
		h.t.Fatalf("stop %s: %v", node, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.c.WaitExit(ctx, node); err != nil {
		h.t.Fatal(err)
	}
}

func (h *procHarness) Start(node string) {
	h.mu.Lock()
	h.dead[node] = false
	h.mu.Unlock()
	h.setLink(node, "up")
	if err := h.c.StartNode(node); err != nil {
		h.t.Fatal(err)
	}
}

func (h *procHarness) Upgrade(node string) {
	h.c.SetBinary(node, binary)
	h.Start(node)
}

// setLink takes node's network link down or up (on namespaces only).
func (h *procHarness) setLink(node, state string) {
	if h.lab == nil {
		return
	}
	if err := ipCmd("-n", h.lab.ns(nodeIndex(node)), "link", "set", "eth0", state); err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	if state == "down" {
		h.isolated[node] = true
	} else {
		delete(h.isolated, node)
	}
	h.mu.Unlock()
}

func nodeIndex(node string) int {
	var i int
	fmt.Sscanf(node, "node%d", &i)
	return i
}

func (h *procHarness) Isolate(node string) error {
	if h.lab == nil {
		return fmt.Errorf("agents on 127.0.0.1 share one network: %w", agenttest.ErrUnsupported)
	}
	h.setLink(node, "down")
	return nil
}

// Cut blackholes the routes between two nodes' addresses, both ways.
func (h *procHarness) Cut(a, b string) error {
	if h.lab == nil {
		return fmt.Errorf("agents on 127.0.0.1 share one network: %w", agenttest.ErrUnsupported)
	}
	i, j := nodeIndex(a), nodeIndex(b)
	h.lab.cut(i, j)
	h.mu.Lock()
	h.cuts = append(h.cuts, [2]int{i, j})
	h.mu.Unlock()
	return nil
}

func (h *procHarness) Heal() error {
	if h.lab == nil {
		return agenttest.ErrUnsupported
	}
	h.mu.Lock()
	var names []string
	for n := range h.isolated {
		if !h.dead[n] {
			names = append(names, n)
		}
	}
	cuts := h.cuts
	h.cuts = nil
	h.mu.Unlock()
	for _, c := range cuts {
		for _, p := range [][2]int{{c[0], c[1]}, {c[1], c[0]}} {
			if err := ipCmd("-n", h.lab.ns(p[0]), "route", "del", "blackhole", h.lab.ips[p[1]-1]+"/32"); err != nil {
				return err
			}
		}
	}
	for _, n := range names {
		h.setLink(n, "up")
	}
	return nil
}

func (h *procHarness) Eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	h.t.Helper()
	agenttest.Eventually(h.t, timeout, 20*time.Millisecond, what, cond)
}
