// Package demo starts a whole lifeboat cluster on one machine: it writes a
// config per node on 127.0.0.1, starts each node as a separate `lifeboat
// agent` process, applies a sample hierarchy and describes the result in
// demo.json. The integration tests and `lifeboat bench` drive clusters
// through the same code, so what the README shows is what the tests run.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/pki"
	"github.com/lifeboat-ha/lifeboat/internal/ports"
	"github.com/lifeboat-ha/lifeboat/internal/termsafe"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// Options describe the cluster to start.
type Options struct {
	// Binary is the lifeboat executable to run for each agent.
	Binary string
	// Dir holds configs, data, logs and demo.json.
	Dir string
	// Nodes is the number of resource nodes (default 3).
	Nodes int
	// Witness adds a witness voter.
	Witness bool
	// ExtraConfig is appended to every node's config (YAML).
	ExtraConfig string
	// ShutdownStrategy for every node ("" = default).
	ShutdownStrategy string
	// IPs, when set, gives each node (in order) its own address instead
	// of 127.0.0.1, e.g. inside its own network namespace.
	IPs []string
	// Wrap, when set, returns the command prefix that runs a node's agent
	// (for example ip netns exec NAME).
	Wrap func(node string) []string
	// Binaries, when set, runs some nodes with another lifeboat binary
	// (node name -> path), e.g. during a rolling upgrade.
	Binaries map[string]string
	// NodeConfig, when set, returns config appended to one node's file
	// (for example its aws section).
	NodeConfig func(node string) string
	// TokenFile, when set, is every node's api.token_file (named tokens
	// with roles) instead of the token derived from the cluster key.
	TokenFile string
	// NodeCerts gives each node its own certificate (its tls section),
	// issued by a CA derived from the cluster key and written under
	// Dir/pki, instead of the one identity derived from the key.
	NodeCerts bool
}

// Node is one agent process.
type Node struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	API     string `json:"api"`
	Socket  string `json:"socket"`
	Config  string `json:"config"`
	Log     string `json:"log"`
	Witness bool   `json:"witness,omitempty"`
	// InstanceID and Role: the node's simulated EC2 instance and its IAM
	// role, when the cluster runs on the simulator.
	InstanceID string `json:"instance_id,omitempty"`
	Role       string `json:"role,omitempty"`
	// Fingerprint is the node's own API certificate's (with NodeCerts;
	// otherwise the Cluster's Fingerprint is every node's).
	Fingerprint string `json:"fingerprint,omitempty"`

	cmd  *exec.Cmd
	done chan struct{}
}

// Cluster is a running local cluster.
type Cluster struct {
	Nodes       []*Node  `json:"nodes"`
	Hierarchies []string `json:"hierarchies"`
	Token       string   `json:"token"`
	Fingerprint string   `json:"fingerprint"`
	Service     string   `json:"service,omitempty"`
	Dir         string   `json:"dir"`
	opts        Options
	members     string // the cluster.nodes entries of the configs
	keyFile     string
	clientMu    sync.Mutex
	clients     map[string]*api.Client // by socket path
	ca          *pki.CA                // with NodeCerts
}

// Joiner is a node made to join the running cluster: its addresses, as
// lifeboat node add takes them.
type Joiner struct {
	Node                *Node
	Raft, Gossip, APIAt string
}

// AddJoiner writes the config of a new node that joins the running cluster
// (cluster.join: true; cluster.nodes lists it and the nodes the cluster
// started with) on ip ("" = 127.0.0.1), and adds it to the cluster's nodes
// without starting it (StartNode does).
func (c *Cluster) AddJoiner(name, ip string, witness bool) (*Joiner, error) {
	if c.Node(name) != nil {
		return nil, fmt.Errorf("node %q exists", name)
	}
	if ip == "" {
		ip = "127.0.0.1"
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	j := &Joiner{Node: &Node{Name: name, Witness: witness}}
	j.Raft, j.Gossip, j.APIAt = fmt.Sprintf("%s:%d", ip, ports[0]), fmt.Sprintf("%s:%d", ip, ports[1]), fmt.Sprintf("%s:%d", ip, ports[2])
	n := j.Node
	n.API = j.APIAt
	n.Config = filepath.Join(c.Dir, n.Name+".yaml")
	n.Socket = filepath.Join(c.Dir, n.Name, "lifeboat.sock")
	n.Log = filepath.Join(c.Dir, n.Name+".log")
	cfg := fmt.Sprintf("node: %s\ndata_dir: %s\n", n.Name, filepath.Join(c.Dir, n.Name))
	cfg += fmt.Sprintf("api:\n  socket: %s\n", n.Socket)
	if c.opts.TokenFile != "" {
		cfg += fmt.Sprintf("  token_file: %s\n", c.opts.TokenFile)
	}
	cfg += fmt.Sprintf("cluster:\n  join: true\n  key_file: %s\n  nodes:\n%s", c.keyFile, c.members)
	cfg += fmt.Sprintf("    - name: %s\n      witness: %v\n      raft: %s\n      gossip: %s\n      api: %s\n", n.Name, witness, j.Raft, j.Gossip, j.APIAt)
	tlsCfg, err := c.nodeCert(n, ip)
	if err != nil {
		return nil, err
	}
	cfg += tlsCfg
	cfg += c.opts.ExtraConfig
	if c.opts.NodeConfig != nil && !witness {
		cfg += c.opts.NodeConfig(n.Name)
	}
	if err := os.WriteFile(n.Config, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", n.Config, err)
	}
	c.Nodes = append(c.Nodes, n)
	return j, nil
}

// freePorts returns n ports free for TCP and UDP on 127.0.0.1 (memberlist
// uses both), outside the ephemeral range, so that a restarted node finds
// its ports free again (internal/ports).
func freePorts(n int) ([]int, error) { return ports.Free(n) }

// Start writes the configs and starts every agent. It returns once every
// process runs; use WaitReady to wait for the cluster to form.
func Start(opts Options) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the lifeboat binary: %w", err)
		}
		opts.Binary = exe
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create demo directory %s: %w", dir, err)
	}
	c := &Cluster{Dir: dir, opts: opts}
	total := opts.Nodes
	if opts.Witness {
		total++
	}
	ports, err := freePorts(total*3 + 1)
	if err != nil {
		return nil, err
	}
	c.Service = fmt.Sprintf("127.0.0.1:%d", ports[len(ports)-1])
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	keyFile := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", keyFile, err)
	}
	if opts.NodeCerts {
		if c.ca, err = pki.DeriveCA(key); err != nil {
			return nil, err
		}
	}
	var members strings.Builder
	for i := 0; i < total; i++ {
		n := &Node{Name: fmt.Sprintf("node%d", i+1)}
		if opts.Witness && i == total-1 {
			n.Name, n.Witness = "witness", true
		}
		ip := "127.0.0.1"
		if i < len(opts.IPs) {
			ip = opts.IPs[i]
		}
		n.API = fmt.Sprintf("%s:%d", ip, ports[i*3+2])
		fmt.Fprintf(&members, "    - name: %s\n      witness: %v\n      raft: %s:%d\n      gossip: %s:%d\n      api: %s\n",
			n.Name, n.Witness, ip, ports[i*3], ip, ports[i*3+1], n.API)
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		n.Config = filepath.Join(dir, n.Name+".yaml")
		n.Socket = filepath.Join(dir, n.Name, "lifeboat.sock")
		n.Log = filepath.Join(dir, n.Name+".log")
		cfg := fmt.Sprintf("node: %s\ndata_dir: %s\n", n.Name, filepath.Join(dir, n.Name))
		if opts.ShutdownStrategy != "" {
			cfg += "shutdown_strategy: " + opts.ShutdownStrategy + "\n"
		}
		cfg += fmt.Sprintf("api:\n  socket: %s\n", n.Socket)
		if opts.TokenFile != "" {
			cfg += fmt.Sprintf("  token_file: %s\n", opts.TokenFile)
		}
		cfg += fmt.Sprintf("cluster:\n  key_file: %s\n  nodes:\n%s", keyFile, members.String())
		host, _, _ := net.SplitHostPort(n.API)
		tlsCfg, err := c.nodeCert(n, host)
		if err != nil {
			return nil, err
		}
		cfg += tlsCfg
		cfg += opts.ExtraConfig
		if opts.NodeConfig != nil && !n.Witness {
			cfg += opts.NodeConfig(n.Name)
		}
		if err := os.WriteFile(n.Config, []byte(cfg), 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", n.Config, err)
		}
	}
	c.members, c.keyFile = members.String(), keyFile
	c.Token = agent.DeriveToken(key, "lifeboat-api")
	id, err := tlsid.Derive(key)
	if err != nil {
		return nil, err
	}
	c.Fingerprint = id.Fingerprint()
	for _, n := range c.Nodes {
		if err := c.StartNode(n.Name); err != nil {
			c.Kill()
			return nil, err
		}
	}
	return c, nil
}

// nodeCert issues n's certificate (with NodeCerts) into Dir/pki and
// returns its tls section; "" without NodeCerts.
func (c *Cluster) nodeCert(n *Node, host string) (string, error) {
	if c.ca == nil {
		return "", nil
	}
	dir := filepath.Join(c.Dir, "pki")
	caFile := filepath.Join(dir, pki.CACertFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.WriteFile(caFile, c.ca.CertPEM(), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", caFile, err)
	}
	is, err := c.ca.Issue(n.Name, []string{host}, 0)
	if err != nil {
		return "", err
	}
	certFile, keyFile, err := pki.WriteIssued(dir, n.Name, is)
	if err != nil {
		return "", err
	}
	n.Fingerprint = tlsid.Fingerprint(is.Cert.Raw)
	return fmt.Sprintf("tls:\n  ca: %s\n  cert: %s\n  key: %s\n", caFile, certFile, keyFile), nil
}

// RenewCert issues node name a new certificate and key (with NodeCerts),
// over its files, as an operator rotating it would; the node's agent
// reads them at its next start.
func (c *Cluster) RenewCert(name string) error {
	n := c.Node(name)
	if n == nil || c.ca == nil {
		return fmt.Errorf("renew the certificate of %q: no such node, or no NodeCerts", name)
	}
	host, _, _ := strings.Cut(n.API, ":")
	_, err := c.nodeCert(n, host)
	return err
}

// CACert is the CA's certificate file with NodeCerts ("" otherwise): the
// CLI trusts every node with it (--ca-cert).
func (c *Cluster) CACert() string {
	if c.ca == nil {
		return ""
	}
	return filepath.Join(c.Dir, "pki", pki.CACertFile)
}

// Node returns a node by name.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// StartNode (re)starts one agent process.
func (c *Cluster) StartNode(name string) error {
	n := c.Node(name)
	if n == nil {
		return fmt.Errorf("no node %q", name)
	}
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log %s: %w", n.Log, err)
	}
	bin := c.opts.Binary
	if b := c.opts.Binaries[name]; b != "" {
		bin = b
	}
	argv := []string{bin, "agent", "--config", n.Config}
	if c.opts.Wrap != nil {
		argv = append(c.opts.Wrap(name), argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C in the terminal reaches the demo, which
	// then stops the agents in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start agent %s: %w", name, err)
	}
	n.cmd, n.PID, n.done = cmd, cmd.Process.Pid, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}(n.done)
	return nil
}

// SetBinary makes every later StartNode of node run bin: a rolling upgrade
// (or a downgrade) restarts the node with another lifeboat binary on the
// same config and data directory.
func (c *Cluster) SetBinary(name, bin string) {
	bs := make(map[string]string, len(c.opts.Binaries)+1)
	for k, v := range c.opts.Binaries {
		bs[k] = v
	}
	bs[name] = bin
	c.opts.Binaries = bs
}

// ExitCode is the exit status of the node's last process once it has
// ended (-1 while it runs, was killed by a signal or never started).
func (n *Node) ExitCode() int {
	if n.done == nil || n.Running() {
		return -1
	}
	return n.cmd.ProcessState.ExitCode()
}

// Running reports whether the node's process is running.
func (n *Node) Running() bool {
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the node's process.
func (c *Cluster) Signal(name string, sig syscall.Signal) error {
	n := c.Node(name)
	if n == nil || !n.Running() {
		return fmt.Errorf("node %s is not running", name)
	}
	return n.cmd.Process.Signal(sig)
}

// WaitExit waits for the node's process to end.
func (c *Cluster) WaitExit(ctx context.Context, name string) error {
	n := c.Node(name)
	if n == nil || n.done == nil {
		return nil
	}
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("node %s still running: %w", name, ctx.Err())
	}
}

// Client returns an API client for a node's socket.
//
// One client per node, kept: its connections are reused. (A client made
// per call left its connection open until the agent's idle timeout: a
// harness polling status every few milliseconds filled the socket
// listener's connection cap.)
func (c *Cluster) Client(name string) *api.Client {
	n := c.Node(name)
	c.clientMu.Lock()
	defer c.clientMu.Unlock()
	if c.clients == nil {
		c.clients = map[string]*api.Client{}
	}
	if cl := c.clients[n.Socket]; cl != nil {
		return cl
	}
	cl, _ := api.NewClient(n.Socket, "", 10*time.Second, nil)
	c.clients[n.Socket] = cl
	return cl
}

// Status asks a node for the cluster status.
func (c *Cluster) Status(ctx context.Context, name string) (api.Status, error) {
	var st api.Status
	err := c.Client(name).Do(ctx, "GET", "/v1/status", nil, &st)
	return st, err
}

// WaitReady waits until every running node sees a leader and every running
// resource node has joined (holds a generation) and is alive.
func (c *Cluster) WaitReady(ctx context.Context) error {
	var last error
	for {
		if err := c.allExited(); err != nil {
			return err
		}
		ok := true
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			st, err := c.Status(ctx, n.Name)
			if err != nil {
				ok, last = false, err
				break
			}
			if st.Leader == "" {
				ok, last = false, fmt.Errorf("%s sees no leader", n.Name)
				break
			}
			if !n.Witness && !st.Local.LeaseHeld {
				ok, last = false, fmt.Errorf("%s holds no lease yet", n.Name)
				break
			}
			for _, ns := range st.Nodes {
				peer := c.Node(ns.Name)
				if peer == nil || !peer.Running() {
					continue
				}
				if ns.State != "alive" || (!ns.Witness && (ns.Gen == 0 || !ns.LeaseFresh)) {
					ok, last = false, fmt.Errorf("%s sees %s %s (gen %d)", n.Name, ns.Name, ns.State, ns.Gen)
					break
				}
			}
			if !ok {
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready: %v", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// allExited says why, when no node runs any more: the last line of the
// first node's log (a config error, most often).
func (c *Cluster) allExited() error {
	for _, n := range c.Nodes {
		if n.Running() {
			return nil
		}
	}
	if len(c.Nodes) == 0 {
		return nil
	}
	n := c.Nodes[0]
	b, _ := os.ReadFile(n.Log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return fmt.Errorf("every agent exited (%s exit status %d): %s", n.Name, n.ExitCode(), termsafe.Escape(lines[len(lines)-1]))
}

// Apply submits hierarchies written as YAML through the first running node.
func (c *Cluster) Apply(ctx context.Context, req api.ApplyRequest) error {
	for _, n := range c.Nodes {
		if n.Running() && !n.Witness {
			return c.Client(n.Name).Do(ctx, "POST", "/v1/apply", req, nil)
		}
	}
	return errors.New("no node running")
}

// Kill stops every agent at once with SIGKILL (for test cleanup).
func (c *Cluster) Kill() {
	for _, n := range c.Nodes {
		if n.Running() {
			_ = n.cmd.Process.Signal(syscall.SIGCONT)
			_ = n.cmd.Process.Kill()
			<-n.done
		}
	}
}

// Stop sends SIGTERM to every agent and waits up to timeout, then kills.
func (c *Cluster) Stop(timeout time.Duration) {
	for _, n := range c.Nodes {
		if n.Running() {
			_ = n.cmd.Process.Signal(syscall.SIGCONT)
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(timeout)
	for _, n := range c.Nodes {
		if n.done == nil {
			continue
		}
		select {
		case <-n.done:
		case <-deadline:
			c.Kill()
			return
		}
	}
}

// WriteJSON writes DIR/demo.json.
func (c *Cluster) WriteJSON(extra map[string]any) error {
	m := map[string]any{"nodes": c.Nodes, "hierarchies": c.Hierarchies, "token": c.Token, "fingerprint": c.Fingerprint, "service": c.Service, "dir": c.Dir}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(c.Dir, "demo.json")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return os.Rename(tmp, p)
}
