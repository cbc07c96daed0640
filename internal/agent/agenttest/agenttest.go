// Package agenttest runs whole lifeboat agents (the agent package: raft,
// leases, placement, the engine, the API) in memory, for tests: raft,
// memberlist and the agents' HTTPS API go over a cluster.InmemNet, the
// resources are those of an in-memory kit whose World says from outside
// which node runs what. Inside a testing/synctest bubble every timer runs
// on the bubble's fake clock (the clock seam of the agent, the engine and
// the cluster: they read time only through the time package), so a
// failover scenario of many seconds runs in a fraction of one.
//
// The scenarios (Scenarios) are written once against Harness, which this
// package's Cluster implements in memory and test/e2e implements with
// real agent processes:
//
//	synctest.Test(t, func(t *testing.T) {
//		c := agenttest.MakeCluster(t, 3, agenttest.Setup{})
//		sc.Run(t, c)
//	})
package agenttest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/cluster/clustertest"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// Cluster is n in-memory agents, node1..nodeN. It implements Harness.
type Cluster struct {
	t     testing.TB
	net   *cluster.InmemNet
	world *World
	kits  *kit.Registry
	key   []byte
	token string
	tls   *tlsid.Identity
	logs  *logBuffer
	names []string

	mu       sync.Mutex
	nodes    map[string]*memNode
	isolated map[string]bool
	hung     map[string]bool
	cut      [][2]string
	clients  map[string]*api.Client
}

type memNode struct {
	name  string
	cfg   *config.Agent
	a     *agent.Agent // nil: not running
	level int          // feature level cap (0: all of this binary's)
}

// MakeCluster starts n agents with default timing on an in-memory
// network and stops them when the test ends. With setup.Old every agent
// stands in for the previous version: it supports feature level 1 only
// (Upgrade lifts the cap; the version string is the same, one binary).
func MakeCluster(t testing.TB, n int, setup Setup) *Cluster {
	t.Helper()
	key := bytes.Repeat([]byte{0x5a}, 32)
	id, err := tlsid.Derive(key)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld()
	reg, err := kits.Builtin().With(memKit{w: w})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, net: cluster.NewInmemNet(), world: w, kits: reg, key: key, token: agent.DeriveToken(key, "lifeboat-api"),
		tls: id, logs: &logBuffer{}, nodes: map[string]*memNode{}, isolated: map[string]bool{}, hung: map[string]bool{}, clients: map[string]*api.Client{}}
	var members strings.Builder
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node%d", i)
		c.names = append(c.names, name)
		fmt.Fprintf(&members, "    - name: %s\n      raft: 10.0.0.%d:7101\n      gossip: 10.0.0.%d:7102\n      api: 10.0.0.%d:7103\n", name, i, i, i)
	}
	root := t.TempDir()
	for _, name := range c.names {
		dir := filepath.Join(root, name)
		yaml := fmt.Sprintf("node: %s\ndata_dir: %s\napi:\n  socket: %s\ncluster:\n  key: %s\n  nodes:\n%s",
			name, dir, filepath.Join(dir, "lifeboat.sock"), base64.StdEncoding.EncodeToString(key), members.String())
		cfg, err := config.ParseAgent(filepath.Join(root, name+".yaml"), []byte(yaml))
		if err != nil {
			t.Fatalf("agenttest: config of %s: %v\n%s", name, err, yaml)
		}
		nd := &memNode{name: name, cfg: cfg}
		if setup.Old {
			nd.level = cluster.LevelLegacy
		}
		c.nodes[name] = nd
	}
	t.Cleanup(c.close)
	for _, name := range c.names {
		c.start(name)
	}
	return c
}

// World is what the in-memory kit's resources do.
func (c *Cluster) World() *World { return c.world }

// Agent returns node's running agent (nil if it is down).
func (c *Cluster) Agent(node string) *agent.Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	if nd := c.nodes[node]; nd != nil {
		return nd.a
	}
	return nil
}

func (c *Cluster) node(name string) *memNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.nodes[name]
	if nd == nil {
		c.t.Fatalf("agenttest: no node %q", name)
	}
	return nd
}

func (c *Cluster) start(name string) {
	c.t.Helper()
	nd := c.node(name)
	if nd.a != nil {
		c.t.Fatalf("agenttest: start %s: it is running", name)
	}
	c.world.crash(name, false)
	c.mu.Lock()
	isolated := c.isolated[name]
	c.mu.Unlock()
	c.net.Isolate(name, isolated)
	lg := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := agent.New(nd.cfg, agent.Options{Logger: lg, Level: new(slog.LevelVar), FeatureLevel: nd.level, Kits: c.kits, Net: c.net})
	if err != nil {
		c.t.Fatalf("agenttest: start %s: %v", name, err)
	}
	c.mu.Lock()
	nd.a = a
	c.mu.Unlock()
}

// Nodes implements Harness.
func (c *Cluster) Nodes() []string { return append([]string(nil), c.names...) }

// client is an operator's API client for node, over the in-memory network.
func (c *Cluster) client(node string) (*api.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.clients[node]; cl != nil {
		return cl, nil
	}
	nd := c.nodes[node]
	if nd == nil {
		return nil, fmt.Errorf("agenttest: no node %q", node)
	}
	cl, err := api.NewClient(nd.cfg.Self().API, c.token, 5*time.Second, c.tls.ClientConfig())
	if err != nil {
		return nil, fmt.Errorf("agenttest: client for %s: %w", node, err)
	}
	cl.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) { return c.net.DialAPI(ctx, "", addr) })
	c.clients[node] = cl
	return cl, nil
}

// Metrics returns node's /metrics (Prometheus text).
func (c *Cluster) Metrics(node string) (string, error) {
	cl, err := c.client(node)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Text(ctx, "/metrics")
}

// Internal sends a request to node's API as a cluster member would (the
// internal token and the cluster certificate), for tests of what members
// send each other.
func (c *Cluster) Internal(node, method, path string, body, out any) error {
	cl, err := api.NewClient(c.node(node).cfg.Self().API, agent.DeriveToken(c.key, "lifeboat-internal"), 5*time.Second, c.tls.ClientConfig())
	if err != nil {
		return err
	}
	cl.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) { return c.net.DialAPI(ctx, "", addr) })
	defer cl.CloseIdle()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Do(ctx, method, path, body, out)
}

// Status implements Harness.
func (c *Cluster) Status(node string) (api.Status, error) {
	var st api.Status
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cl, err := c.client(node)
	if err != nil {
		return st, err
	}
	err = cl.Do(ctx, "GET", "/v1/status", nil, &st)
	return st, err
}

// Apply implements Harness: through the first running node that is not
// cut off.
func (c *Cluster) Apply(hs ...spec.Hierarchy) error {
	var last error
	for _, n := range c.names {
		if c.Agent(n) == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var res api.ApplyResponse
		cl, err := c.client(n)
		if err != nil {
			cancel()
			return err
		}
		last = cl.Do(ctx, "POST", "/v1/apply", api.ApplyRequest{Hierarchies: hs}, &res)
		cancel()
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("apply through every running node: %w", last)
}

// Service implements Harness: one resource of the in-memory kit.
func (c *Cluster) Service(name string, nodes []string) spec.Hierarchy {
	return spec.Hierarchy{Name: name, Nodes: nodes, MonitorInterval: spec.Duration(100 * time.Millisecond),
		Resources: []spec.Resource{{Name: name + "-res", Type: MemType}}}
}

// Running implements Harness.
func (c *Cluster) Running(hierarchy string) []string { return c.world.Running(hierarchy) }

// DoubleOwners implements Harness.
func (c *Cluster) DoubleOwners() []string { return c.world.DoubleOwners() }

// take marks node down and returns its agent (nil if it was down).
func (c *Cluster) take(node string) *agent.Agent {
	nd := c.node(node)
	c.mu.Lock()
	defer c.mu.Unlock()
	a := nd.a
	nd.a = nil
	return a
}

// Kill implements Harness: the node is cut off first (nothing it says on
// the way out reaches anyone), then its agent stops without handing over
// and its resources vanish with the machine.
func (c *Cluster) Kill(node string) {
	a := c.take(node)
	if a == nil {
		return
	}
	c.net.Isolate(node, true)
	c.world.crash(node, true)
	a.Kill()
}

// Stop implements Harness: a graceful shutdown (its strategy).
func (c *Cluster) Stop(node string) {
	a := c.take(node)
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.Shutdown(ctx)
}

// Start implements Harness.
func (c *Cluster) Start(node string) { c.start(node) }

// Upgrade implements Harness: start the stopped node with every feature
// level of this binary.
func (c *Cluster) Upgrade(node string) {
	nd := c.node(node)
	c.mu.Lock()
	nd.level = 0
	c.mu.Unlock()
	c.start(node)
}

// Isolate implements Harness.
func (c *Cluster) Isolate(node string) error {
	c.mu.Lock()
	c.isolated[node] = true
	c.mu.Unlock()
	c.net.Isolate(node, true)
	return nil
}

// Hang implements Harness: the node answers nobody (every link cut) and
// every action its agent starts on a resource waits until Resume. Its
// agent's goroutines do run on (one process cannot stop some of its
// goroutines): it notices that its lease ran out during the hang, which a
// frozen process notices the moment it resumes.
func (c *Cluster) Hang(node string) error {
	c.mu.Lock()
	c.hung[node] = true
	c.mu.Unlock()
	c.net.Isolate(node, true)
	c.world.stall(node, true)
	return nil
}

// Resume implements Harness.
func (c *Cluster) Resume(node string) error {
	c.mu.Lock()
	delete(c.hung, node)
	isolated := c.isolated[node]
	c.mu.Unlock()
	c.world.stall(node, false)
	c.net.Isolate(node, isolated)
	return nil
}

// Break implements Harness.
func (c *Cluster) Break(node string, broken bool) error {
	c.world.breakNode(node, broken)
	return nil
}

// post sends an operator's request through the first running node and
// returns what the API answered.
func (c *Cluster) post(path string, body any) error {
	for _, n := range c.names {
		if c.Agent(n) == nil {
			continue
		}
		cl, err := c.client(n)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return cl.Do(ctx, "POST", path, body, nil)
	}
	return errors.New("POST " + path + ": no node is running")
}

// Switchover implements Harness; it returns what the API answered (an
// error when the move failed).
func (c *Cluster) Switchover(hierarchy, to string) error {
	return c.post("/v1/hierarchies/"+hierarchy+"/switchover", api.MoveRequest{To: to})
}

// StartHierarchy implements Harness.
func (c *Cluster) StartHierarchy(hierarchy string) error {
	return c.post("/v1/hierarchies/"+hierarchy+"/start", api.ActionRequest{})
}

// Post implements Harness.
func (c *Cluster) Post(path string, body any) error { return c.post(path, body) }

// DecideFailover implements Harness.
func (c *Cluster) DecideFailover(hierarchy, decision string) error {
	return c.post("/v1/hierarchies/"+hierarchy+"/failover/"+decision, api.ActionRequest{})
}

// Restores implements Harness.
func (c *Cluster) Restores(hierarchy string) map[string]int { return c.world.Restores(hierarchy) }

// Cut implements Harness.
func (c *Cluster) Cut(a, b string) error {
	c.mu.Lock()
	c.cut = append(c.cut, [2]string{a, b})
	c.mu.Unlock()
	c.net.SetLink(a, b, false)
	c.net.SetLink(b, a, false)
	return nil
}

// Heal implements Harness.
func (c *Cluster) Heal() error {
	c.mu.Lock()
	var names []string
	for n := range c.isolated {
		names = append(names, n)
	}
	cut := c.cut
	c.isolated, c.cut = map[string]bool{}, nil
	c.mu.Unlock()
	for _, n := range names {
		c.mu.Lock()
		hung := c.hung[n]
		c.mu.Unlock()
		c.net.Isolate(n, hung)
	}
	for _, l := range cut {
		c.net.SetLink(l[0], l[1], true)
		c.net.SetLink(l[1], l[0], true)
	}
	return nil
}

// Eventually implements Harness, polling every 10 ms of the clock.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	c.t.Helper()
	Eventually(c.t, timeout, 10*time.Millisecond, what, cond)
}

// close stops every agent still running (all at once: a survivor alone
// would wait for a quorum) and shows the log when the test failed.
func (c *Cluster) close() {
	c.mu.Lock()
	var run []*agent.Agent
	for _, n := range c.names {
		if nd := c.nodes[n]; nd.a != nil {
			run = append(run, nd.a)
			nd.a = nil
		}
		c.net.Isolate(n, true)
		c.world.crash(n, true) // and nothing waits on a stalled machine
	}
	for _, cl := range c.clients {
		cl.CloseIdle()
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range run {
		wg.Go(a.Kill)
	}
	wg.Wait()
	if clustertest.InBubble() {
		// Let what the agents left running (memberlist's probes, dials
		// and calls waiting for their timeouts) end: a bubble may not
		// end with goroutines blocked, and its clock stops with it.
		time.Sleep(settle)
	}
	if c.t.Failed() || os.Getenv("LIFEBOAT_TEST_LOG") != "" {
		if f := os.Getenv("LIFEBOAT_TEST_LOG_FILE"); f != "" {
			_ = os.WriteFile(f, []byte(c.logs.tail(1<<30)), 0o600)
		}
		c.t.Logf("--- agents' log (last lines) ---\n%s", c.logs.tail(300))
	}
}

// settle is longer than any timeout the stopped agents' goroutines may
// be waiting for (a dial that gets no answer: 10 s).
const settle = 15 * time.Second

// logBuffer keeps the agents' log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(b.buf.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Call sends an operator's request (the API token) to node and decodes
// the answer into out (when non-nil).
func (c *Cluster) Call(node, method, path string, body, out any) error {
	cl, err := c.client(node)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cl.Do(ctx, method, path, body, out)
}

// Stream opens node's event stream (GET /v1/events?follow=1) as an
// operator would, resuming after lastID when set; it ends with ctx.
func (c *Cluster) Stream(ctx context.Context, node, lastID string) (io.ReadCloser, error) {
	cl, err := c.client(node)
	if err != nil {
		return nil, err
	}
	return cl.Stream(ctx, "/v1/events?follow=1", lastID)
}
