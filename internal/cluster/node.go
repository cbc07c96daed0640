package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/connlimit"
	"github.com/lifeboat-ha/lifeboat/internal/pki"
	"github.com/lifeboat-ha/lifeboat/internal/tlsid"
)

// Member is one entry of the static cluster membership: a node of the
// agent config's cluster.nodes.
type Member = config.Node

// Timing holds the failure-detection and lease timers: the agent config's
// timing, as config.Timing.Timers gives it.
type Timing = config.Timers

// Config wires a cluster node.
type Config struct {
	Node    string
	DataDir string
	Members []Member
	// Join: this node joins a running cluster (it is added with lifeboat
	// node add) and never bootstraps raft: Members lists itself and the
	// nodes to find the cluster through.
	Join      bool
	Key       []byte
	Version   string
	Timing    Timing
	Logger    *slog.Logger
	Transport LeaseTransport
	// Rejoin commits a join for this node (through the leader).
	Rejoin func(ctx context.Context) (uint64, error)
	// TLS is the node's identity: raft runs over mutual TLS with it.
	TLS tlsid.Member
	// Level caps the feature level this node supports (0: MaxLevel).
	// Tests use it to stand in for an older binary.
	Level int
	// Net, when set, runs this node in memory (tests): raft's stores and
	// transport and memberlist's transport come from Net, and DataDir
	// and TLS are not used. See InmemNet.
	Net *InmemNet
}

// Meta is what each node gossips about itself.
type Meta struct {
	API     string `json:"api"`
	Version string `json:"version"`
	Witness bool   `json:"witness,omitempty"`
	// Level is the highest feature level the node's binary supports
	// (absent from versions before levels: LevelLegacy).
	Level int `json:"level,omitempty"`
}

// MemberStatus is the failure detector's view of a node.
type MemberStatus struct {
	Name    string `json:"name"`
	State   string `json:"state"` // alive, suspect, failed, left, unknown
	Version string `json:"version,omitempty"`
	Witness bool   `json:"witness,omitempty"`
	Addr    string `json:"addr,omitempty"`
	// Level is the highest feature level the node's binary supports (0:
	// not known, the node is not alive).
	Level int `json:"level,omitempty"`
}

// Cluster is this node's membership in the cluster.
type Cluster struct {
	cfg    Config
	FSM    *FSM
	Raft   *raft.Raft
	Leases *Leases
	ml     *memberlist.Memberlist
	store  *raftboltdb.BoltStore // nil in memory
	trans  raft.Transport
	pace   *paceTransport // c.trans, nil until made
	snaps  raft.SnapshotStore
	// raftListener is raft's bounded listener (nil in memory).
	raftListener *connlimit.Listener

	// changeMu orders run-time membership changes on the leader.
	changeMu sync.Mutex

	mu      sync.Mutex
	waiters []chan struct{}
	// gone records, for nodes memberlist no longer lists, why: "failed"
	// or "left". memberlist's Members() lists only live nodes.
	gone map[string]string
	// live holds what memberlist last said of each node it sees alive.
	live    map[string]liveNode
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
}

// Start opens the durable raft store, starts raft, memberlist and the lease
// service. A node with no raft state bootstraps with the configured
// membership (all nodes may do so: the configuration is identical).
func Start(cfg Config) (c *Cluster, err error) {
	if cfg.Net == nil {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory %s: %w", cfg.DataDir, err)
		}
	}
	var self *Member
	for i := range cfg.Members {
		if cfg.Members[i].Name == cfg.Node {
			self = &cfg.Members[i]
		}
	}
	if self == nil {
		return nil, fmt.Errorf("node %q is not in the cluster membership", cfg.Node)
	}
	c = &Cluster{cfg: cfg, FSM: NewFSM(), done: make(chan struct{}), gone: map[string]string{}, live: map[string]liveNode{}}
	c.FSM.Logger = cfg.Logger
	c.FSM.ReadLevel = cfg.Level
	parts := c // the error returns below set c to nil
	defer func() {
		if err != nil {
			parts.closeParts()
		}
	}()

	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: newSlogWriter(cfg.Logger, "raft")})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Node)
	rc.HeartbeatTimeout = cfg.Timing.RaftHeartbeat
	rc.ElectionTimeout = cfg.Timing.RaftElection
	// Heartbeats are paced to a third of the heartbeat timeout (see
	// paceTransport): the leader's lease must span more than one of them.
	rc.LeaderLeaseTimeout = cfg.Timing.RaftHeartbeat
	// A backstop only: the leader pushes each commit to the followers as
	// it applies it (paceTransport.Commit), and raft's tick at this
	// timeout (per follower, whether or not anything changed) was the
	// largest share of an idle leader's wake-ups at 10 ms. What the push
	// does not carry waits for it: the commit of entries the state
	// machine does not see (raft's own no-op and configuration entries,
	// which no follower acts on once committed), and a push that could
	// not follow raft's last call.
	rc.CommitTimeout = cfg.Timing.RaftHeartbeat
	rc.SnapshotThreshold = 2048
	rc.TrailingLogs = 4096
	rc.Logger = hl

	var logs raft.LogStore
	var stable raft.StableStore
	if cfg.Net != nil {
		logs, stable, c.snaps, c.trans, err = cfg.Net.raftParts(cfg.Node, cfg.Members)
	} else {
		logs, stable, err = c.openDurable(self, hl)
	}
	if err != nil {
		return nil, err
	}
	logs = newReadCache(logs)
	c.pace = newPaceTransport(c.trans, rc.HeartbeatTimeout, cfg.Timing.Renew)
	c.trans = c.pace
	snaps := c.snaps
	has, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state in %s: %w", cfg.DataDir, err)
	}
	if !has && cfg.Join {
		cfg.Logger.Info("waiting to be added to the cluster (cluster.join): run lifeboat node add on a member", "node", cfg.Node)
	}
	if !has && !cfg.Join {
		var servers []raft.Server
		for _, m := range cfg.Members {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Raft)})
		}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, c.trans, raft.Configuration{Servers: servers}); err != nil {
			return nil, fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	c.Raft, err = raft.NewRaft(rc, c.FSM, logs, stable, snaps, c.trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}

	c.Leases = NewLeases(LeaseConfig{
		Node: cfg.Node, VotersFunc: c.voters, Lease: cfg.Timing.Lease, Renew: cfg.Timing.Renew,
		Holder: !self.Witness, FSM: c.FSM, Transport: cfg.Transport, Logger: cfg.Logger, Rejoin: cfg.Rejoin,
	})

	if err := c.startMemberlist(self); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.ctx = ctx
	go c.joinLoop(ctx)
	go c.sealLoop(ctx)
	go c.commitLoop(ctx)
	return c, nil
}

// commitLoop has the transport push each commit to the followers while
// this node leads: the state machine applies only what committed, so what
// it has applied (raft's commit index then) can be told at once.
func (c *Cluster) commitLoop(ctx context.Context) {
	for {
		changed := c.FSM.Changed()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		if c.Raft.State() == raft.Leader {
			c.pace.Commit(c.Raft.CommitIndex())
		}
	}
}

// openDurable opens the raft store and snapshots in the data directory and
// raft's transport: mutual TLS over TCP.
func (c *Cluster) openDurable(self *Member, hl hclog.Logger) (raft.LogStore, raft.StableStore, error) {
	cfg := c.cfg
	path := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		return nil, nil, fmt.Errorf("open raft store %s: %w", path, err)
	}
	c.store = store
	c.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, hl)
	if err != nil {
		return nil, nil, fmt.Errorf("open snapshot store in %s: %w", cfg.DataDir, err)
	}
	if cfg.TLS == nil {
		return nil, nil, errors.New("start raft: no TLS identity")
	}
	addr, err := net.ResolveTCPAddr("tcp", self.Raft)
	if err != nil {
		return nil, nil, fmt.Errorf("raft address %s: %w", self.Raft, err)
	}
	ln, err := net.Listen("tcp", self.Raft)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for raft on %s: %w", self.Raft, err)
	}
	// Bounded: a TLS handshake has RaftHandshakeTimeout, and at most
	// RaftMaxConns connections are open at once (see docs/security.md).
	// The members' addresses have a budget of their own, and no other
	// address may hold more than a quarter of the slots.
	bounded := connlimit.Wrap(ln, connlimit.Config{Name: "raft", Max: RaftMaxConns, TLS: c.raftServerTLS(),
		HandshakeTimeout: RaftHandshakeTimeout, Logger: cfg.Logger, PerHost: RaftMaxConns / 4, Reserved: c.MemberAddr})
	c.raftListener = bounded
	stream := &tlsStream{Listener: bounded, addr: addr, c: c}
	c.trans = raft.NewNetworkTransportWithLogger(stream, 3, 2*time.Second, hl)
	return store, store, nil
}

// raftServerTLS is the raft listener's TLS: the identity's mutual TLS,
// and, with node certificates, the peer must be a node of the membership
// (a removed node's certificate, still valid under the CA, is refused).
func (c *Cluster) raftServerTLS() *tls.Config {
	srv := c.cfg.TLS.ServerConfig(true)
	verify := srv.VerifyPeerCertificate
	if verify == nil {
		return srv
	}
	srv.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if err := verify(raw, chains); err != nil {
			return err
		}
		if len(raw) == 0 {
			return nil
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		// A joining node knows the membership only once it has caught
		// up, through raft: until then any node of the CA may reach it.
		joining := c.cfg.Join && len(c.FSM.Members()) == 0
		if name, ok := pki.NodeName(leaf); ok && !joining {
			if _, member := c.Member(name); !member {
				return fmt.Errorf("raft: node %s's certificate, but %s is not a member of the cluster (removed, or not yet added with lifeboat node add)", name, name)
			}
		}
		return nil
	}
	return srv
}

// SupportedLevel is the highest feature level this node supports.
func (c *Cluster) SupportedLevel() int {
	if c.cfg.Level > 0 {
		return min(c.cfg.Level, MaxLevel)
	}
	return MaxLevel
}

// NextLevel is the feature level the cluster may rise to now: the lowest
// level every voter in the raft configuration supports, as each alive
// voter gossips it. A voter that is not alive holds the level where it
// is (it may run an older binary). why says what holds it, if anything.
func (c *Cluster) NextLevel() (level int, why string) {
	f := c.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, "raft configuration: " + err.Error()
	}
	members := c.Members()
	level = MaxLevel
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		name := string(srv.ID)
		m, ok := members[name]
		if name == c.cfg.Node {
			m.State, m.Level, ok = "alive", c.SupportedLevel(), true
		}
		if !ok || m.State != "alive" {
			return 0, fmt.Sprintf("voter %s is not alive (its version is not known)", name)
		}
		if m.Level < level {
			level = m.Level
			why = fmt.Sprintf("voter %s runs %s (feature level %d)", name, orUnknown(m.Version), m.Level)
		}
	}
	return level, why
}

func orUnknown(v string) string {
	if v == "" {
		return "an unknown version"
	}
	return v
}

// sealLoop, once the cluster is at LevelTyped, takes snapshots until none
// of the legacy form is left: a binary from before levels would restore
// an older snapshot of its own form and replay typed entries it cannot
// read; with only new-form snapshots it refuses to start.
func (c *Cluster) sealLoop(ctx context.Context) {
	for {
		changed := c.FSM.Changed()
		if c.FSM.Level() >= LevelTyped && c.FSM.Halted() == nil {
			// Once sealed, every later snapshot has the new form too
			// (the level never falls).
			if !c.hasLegacySnapshot() {
				return
			}
			if err := c.Raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
				c.cfg.Logger.Warn("snapshot after feature level change", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// hasLegacySnapshot reports whether the snapshot store holds a snapshot
// in the form versions before feature levels read, or none at all.
func (c *Cluster) hasLegacySnapshot() bool {
	metas, err := c.snaps.List()
	if err != nil {
		return false
	}
	if len(metas) == 0 {
		return true
	}
	for _, m := range metas {
		_, rc, err := c.snaps.Open(m.ID)
		if err != nil {
			continue
		}
		head := make([]byte, len(stateHeader))
		n, _ := io.ReadFull(rc, head)
		rc.Close()
		if string(head[:n]) != stateHeader {
			return true
		}
	}
	return false
}

// StartLeases starts renewing this node's lease (and joining the cluster
// with a new generation). Call it once the caller is ready to commit the
// join, i.e. after Start has returned.
func (c *Cluster) StartLeases() {
	c.started = true
	go func() {
		defer close(c.done)
		c.Leases.Run(c.ctx)
		<-c.ctx.Done()
	}()
}

func (c *Cluster) startMemberlist(self *Member) error {
	host, portS, err := net.SplitHostPort(self.Gossip)
	if err != nil {
		return fmt.Errorf("gossip address %s: %w", self.Gossip, err)
	}
	port, _ := strconv.Atoi(portS)
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.Node
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	mc.ProbeInterval = c.cfg.Timing.ProbeInterval
	mc.ProbeTimeout = c.cfg.Timing.ProbeTimeout
	mc.SuspicionMult = c.cfg.Timing.SuspicionMult
	mc.SuspicionMaxTimeoutMult = 2
	// Suspicions and deaths ride on every probe and ack as well; the
	// gossip tick only adds a path for them. At 50 ms it was a fifth of an
	// idle agent's CPU (a wake-up every tick, even with nothing to send).
	// At the probe's period both tickers, started together, fire at the
	// same moments: one wake-up for both (docs/benchmarks.md, "Idle cost").
	mc.GossipInterval = c.cfg.Timing.ProbeInterval
	mc.GossipToTheDeadTime = 5 * time.Second
	mc.PushPullInterval = 15 * time.Second
	mc.TCPTimeout = 2 * time.Second
	mc.IndirectChecks = 3
	mc.SecretKey = c.cfg.Key
	// Probes and acks are a few dozen bytes: compressing each one cost an
	// LZW table allocation per message and saved nothing. Every version
	// still reads compressed messages, so mixed clusters are unaffected.
	mc.EnableCompression = false
	mc.Logger = log.New(newSlogWriter(c.cfg.Logger, "memberlist"), "", 0)
	meta, _ := json.Marshal(Meta{API: self.API, Version: c.cfg.Version, Witness: self.Witness, Level: c.SupportedLevel()})
	mc.Delegate = metaDelegate(meta)
	mc.Events = &eventDelegate{c: c}
	if c.cfg.Net != nil {
		if mc.Transport, err = c.cfg.Net.gossipTransport(c.cfg.Node); err != nil {
			return err
		}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if c.cfg.Net != nil {
			_ = mc.Transport.Shutdown()
		}
		return fmt.Errorf("start failure detection on %s: %w", self.Gossip, err)
	}
	c.ml = ml
	return nil
}

// reconnectInterval is how often a node joins again the members its
// failure detector holds failed, left or never seen.
const reconnectInterval = time.Second

// joinLoop joins the other members at start (every 500 ms until one
// answers), then, as Serf's reconnect does, every reconnectInterval joins
// again each member the failure detector holds failed, left or never
// seen. memberlist probes and gossips only with members it holds alive
// (and gossips to the dead for GossipToTheDeadTime), and its push/pull
// (every PushPullInterval) picks only live members: after a partition
// heals, each side would hold the other failed until some later push/pull
// happened to cross, 15 s or more (measured: 22-28 s before the three
// nodes of TestScenariosInMemory/IsolateOwner agreed again).
func (c *Cluster) joinLoop(ctx context.Context) {
	joined := false
	for {
		// The membership may change at run time (lifeboat node add);
		// the nodes this one was configured with stay to find the
		// cluster through.
		addr := map[string]string{}
		for _, m := range append(c.MemberList(), c.cfg.Members...) {
			if _, ok := addr[m.Name]; !ok && m.Name != c.cfg.Node {
				addr[m.Name] = m.Gossip
			}
		}
		var gone []string
		ms := c.Members()
		for name, a := range addr {
			if st := ms[name].State; !joined || (st != "alive" && st != "suspect") {
				gone = append(gone, a)
			}
		}
		sort.Strings(gone)
		if len(gone) > 0 {
			if n, _ := c.ml.Join(gone); n > 0 {
				joined = true
			}
		}
		wait := c.OnBeat(reconnectInterval)
		if !joined {
			wait = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Members returns the failure detector's view of every member.
func (c *Cluster) Members() map[string]MemberStatus {
	out := map[string]MemberStatus{}
	for _, m := range c.MemberList() {
		out[m.Name] = MemberStatus{Name: m.Name, State: "unknown", Witness: m.Witness}
	}
	if c.ml == nil {
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, why := range c.gone {
		if st, ok := out[name]; ok {
			st.State = why
			out[name] = st
		}
	}
	// From the copies the event delegate took under memberlist's lock:
	// the nodes Members() returns are memberlist's own, written by its
	// goroutines while the caller reads them.
	for name, n := range c.live {
		st, ok := out[name]
		if !ok {
			continue
		}
		st.State, st.Addr = "alive", n.addr
		st.Version, st.Witness, st.Level = n.meta.Version, n.meta.Witness, max(n.meta.Level, LevelLegacy)
		out[name] = st
	}
	return out
}

// liveNode is what the cluster keeps of a node memberlist sees alive.
type liveNode struct {
	addr string
	meta Meta
}

// MemberChanged returns a channel closed at the next membership change.
func (c *Cluster) MemberChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiters) == 0 { // shared until the next change (see FSM.Changed)
		c.waiters = append(c.waiters, make(chan struct{}))
	}
	return c.waiters[0]
}

func (c *Cluster) memberNotify() {
	c.mu.Lock()
	ws := c.waiters
	c.waiters = nil
	c.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
}

// IsLeader reports whether this node is the raft leader.
func (c *Cluster) IsLeader() bool { return c.Raft.State() == raft.Leader }

// Leader returns the current leader's name ("" when none is known).
func (c *Cluster) Leader() string {
	_, id := c.Raft.LeaderWithID()
	return string(id)
}

// ErrNotLeader is returned by Apply on a follower.
var ErrNotLeader = errors.New("not the raft leader")

// Apply commits a command; only on the leader. It is encoded for the
// cluster's current feature level: below LevelTyped in the legacy form
// every voter reads, and a Batch as its commands one by one.
func (c *Cluster) Apply(cmd Cmd, timeout time.Duration) (Result, uint64, error) {
	return c.ApplyAt(cmd, time.Now().UTC(), timeout)
}

// ApplyAt is Apply with the command's time given (a forwarded command
// keeps the time its node gave it).
func (c *Cluster) ApplyAt(cmd Cmd, at time.Time, timeout time.Duration) (Result, uint64, error) {
	if h := c.FSM.Halted(); h != nil {
		return Result{}, 0, fmt.Errorf("commit %s command: %w", cmd.Kind(), ErrHalted)
	}
	level := c.FSM.Level()
	if b, ok := cmd.(Batch); ok && level < LevelTyped {
		out := Result{Results: make([]Result, len(b.Cmds))}
		var idx uint64
		for i, sub := range b.Cmds {
			r, ix, err := c.ApplyAt(sub, at, timeout)
			if errors.Is(err, ErrNotLeader) || (err != nil && r.Err == nil) {
				return out, idx, err
			}
			r.Err = err
			out.Results[i], idx = r, ix
			out.Changed = out.Changed || r.Changed
		}
		return out, idx, nil
	}
	b, err := Encode(cmd, at, level)
	if err != nil {
		return Result{}, 0, err
	}
	f := c.Raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return Result{}, 0, ErrNotLeader
		}
		return Result{}, 0, fmt.Errorf("commit %s command: %w", cmd.Kind(), err)
	}
	res, _ := f.Response().(Result)
	return res, f.Index(), res.Err
}

// TransferLeadership hands leadership to another voter, if this node leads.
func (c *Cluster) TransferLeadership() error {
	if !c.IsLeader() {
		return nil
	}
	return c.Raft.LeadershipTransfer().Error()
}

// Shutdown leaves the gossip ring and stops raft.
func (c *Cluster) Shutdown() {
	if c.cancel != nil {
		c.cancel()
		if c.started {
			<-c.done
		}
	}
	if c.ml != nil {
		_ = c.ml.Leave(500 * time.Millisecond)
	}
	c.closeParts()
}

func (c *Cluster) closeParts() {
	if c.ml != nil {
		_ = c.ml.Shutdown()
	}
	if c.pace != nil {
		c.pace.stop() // raft's shutdown waits for calls held there
	}
	if c.Raft != nil {
		_ = c.Raft.Shutdown().Error()
	}
	if t, ok := c.trans.(raft.WithClose); ok {
		_ = t.Close()
	}
	if c.store != nil {
		_ = c.store.Close()
	}
}

// Bounds of the raft listener. Raft keeps a few pooled connections per
// peer; anything near RaftMaxConns is a flood or a leak.
const (
	RaftMaxConns         = connlimit.DefaultMax
	RaftHandshakeTimeout = connlimit.DefaultHandshakeTimeout
)

// RaftListenerStats counts what the raft listener let in and kept out
// (zero in memory).
func (c *Cluster) RaftListenerStats() connlimit.Stats {
	if c.raftListener == nil {
		return connlimit.Stats{}
	}
	return c.raftListener.Stats()
}

// tlsStream is raft's stream layer over mutual TLS with the node's
// identity. With node certificates, a connection accepted may speak only
// for the node its certificate names (see checkedConn), and a dial to a
// member's raft address accepts only that member's certificate.
type tlsStream struct {
	net.Listener
	addr net.Addr
	c    *Cluster
}

func (s *tlsStream) Accept() (net.Conn, error) {
	conn, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	peer, ok, err := s.c.raftPeerOf(conn)
	if err != nil {
		s.c.cfg.Logger.Warn("raft connection refused: "+err.Error(), "remote", conn.RemoteAddr().String())
		_ = conn.Close()
		// Raft's accept loop backs off on errors: hand it a closed
		// connection instead, whose first read fails.
		return conn, nil
	}
	if !ok {
		return conn, nil
	}
	return newCheckedConn(conn, peer, s.c.cfg.Logger), nil
}

func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	cfg := s.c.cfg.TLS.ClientConfig()
	if f, ok := s.c.cfg.TLS.(interface{ ClientConfigFor(string) *tls.Config }); ok {
		for _, m := range s.c.MemberList() {
			if m.Raft == string(address) {
				cfg = f.ClientConfigFor(m.Name)
				break
			}
		}
	}
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(address), cfg)
}

func (s *tlsStream) Addr() net.Addr { return s.addr }

var _ raft.StreamLayer = (*tlsStream)(nil)

type metaDelegate []byte

func (m metaDelegate) NodeMeta(limit int) []byte {
	if len(m) > limit {
		return nil
	}
	return m
}
func (metaDelegate) NotifyMsg([]byte)                           {}
func (metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (metaDelegate) LocalState(join bool) []byte                { return nil }
func (metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

type eventDelegate struct{ c *Cluster }

// The delegate is called with memberlist's node lock held: it copies what
// it needs from n there.
func (e *eventDelegate) NotifyJoin(n *memberlist.Node) {
	e.c.cfg.Logger.Info("node alive", "peer", n.Name)
	e.c.mu.Lock()
	delete(e.c.gone, n.Name)
	e.c.live[n.Name] = copyNode(n)
	e.c.mu.Unlock()
	e.c.memberNotify()
}

func copyNode(n *memberlist.Node) liveNode {
	ln := liveNode{addr: n.Address()}
	_ = json.Unmarshal(n.Meta, &ln.meta)
	return ln
}
func (e *eventDelegate) NotifyLeave(n *memberlist.Node) {
	why := "failed"
	if n.State == memberlist.StateLeft {
		why = "left"
	}
	e.c.cfg.Logger.Warn("node "+why, "peer", n.Name)
	e.c.mu.Lock()
	e.c.gone[n.Name] = why
	delete(e.c.live, n.Name)
	e.c.mu.Unlock()
	e.c.memberNotify()
}
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	e.c.mu.Lock()
	e.c.live[n.Name] = copyNode(n)
	e.c.mu.Unlock()
	e.c.memberNotify()
}

// slogWriter forwards the text loggers of raft and memberlist into slog,
// dropping their debug chatter unless debug logging is on. A warning or
// error that repeats (raft retries a dead peer every few hundred
// milliseconds, and says so each time) is written once per repeatEvery,
// with the count of the lines held back.
type slogWriter struct {
	l   *slog.Logger
	sub string

	mu   sync.Mutex
	seen map[string]*repeated
}

type repeated struct {
	last       time.Time
	suppressed int
}

// repeatEvery is how often one repeating warning or error is written.
const repeatEvery = 30 * time.Second

// noise matches the parts of a library's log line that change between
// repeats of the same complaint: its own timestamp, backoff times, terms.
var noise = regexp.MustCompile(`^\S+ |backoff time=\S+|term=\d+`)

func newSlogWriter(l *slog.Logger, sub string) *slogWriter {
	return &slogWriter{l: l, sub: sub, seen: map[string]*repeated{}}
}

func (w *slogWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	switch {
	case bytes.Contains(p, []byte("[DEBUG]")), bytes.Contains(p, []byte("[TRACE]")):
		level = slog.LevelDebug
	case bytes.Contains(p, []byte("[WARN]")):
		level = slog.LevelWarn
	case bytes.Contains(p, []byte("[ERR")):
		level = slog.LevelError
	}
	if level >= slog.LevelWarn {
		key := noise.ReplaceAllString(line, "")
		now := time.Now()
		w.mu.Lock()
		r := w.seen[key]
		if r != nil && now.Sub(r.last) < repeatEvery {
			r.suppressed++
			w.mu.Unlock()
			return len(p), nil
		}
		held := 0
		if r != nil {
			held = r.suppressed
		}
		if len(w.seen) > 1000 { // bounded: forget everything, start over
			clear(w.seen)
		}
		w.seen[key] = &repeated{last: now}
		w.mu.Unlock()
		if held > 0 {
			w.l.Log(context.Background(), level, line, "component", w.sub, "repeated", held)
			return len(p), nil
		}
	}
	w.l.Log(context.Background(), level, line, "component", w.sub)
	return len(p), nil
}

var _ io.Writer = (*slogWriter)(nil)
