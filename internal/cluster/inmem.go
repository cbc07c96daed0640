package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// InmemNet is an in-memory network and disk for the nodes of one test
// cluster: set as Config.Net, it makes Start use raft's in-memory log,
// stable and snapshot stores and in-memory transports, and an in-memory
// memberlist transport, instead of raft-boltdb, files, TLS over TCP and
// UDP/TCP gossip. Everything above those (the FSM, leases, joining,
// sealing, membership) runs unchanged. Nothing opens a socket or a file,
// so a cluster on an InmemNet runs inside a testing/synctest bubble.
//
// A node's stores live in the InmemNet, keyed by its name: a node started
// again after Shutdown finds its raft log, stable store and snapshots as
// a restarted process finds its data directory.
//
// Links are directed and either deliver everything or drop everything (an
// RPC's answer needs the link back). SetLink cuts or restores one
// direction; Isolate cuts every link of a node (a crashed or frozen
// machine); SetRaftLink cuts raft's messages only. A dropped gossip packet
// is lost silently (UDP), a gossip stream or a raft RPC over a cut link
// fails at once (no route to host), and a stream already open fails at its
// next read or write. Raft does not pipeline on an InmemNet.
//
// The first Start on an InmemNet registers the whole membership; raft
// addresses (Member.Raft) may be any distinct strings, gossip addresses
// (Member.Gossip) must be distinct IP:port pairs (memberlist resolves
// anything else through DNS).
type InmemNet struct {
	mu    sync.Mutex
	hosts map[string]*inmemHost
	// byGossip maps a normalized gossip address to its node, byAPI an
	// API address (as configured) to its node.
	byGossip map[string]*inmemHost
	byAPI    map[string]*inmemHost
	// cut holds the directed links that drop everything, raftCut those
	// that drop raft's messages only.
	cut, raftCut map[[2]string]bool
	// loseCommits: on the directed link, raft appends that tell a commit
	// index at least this are lost (LoseCommits).
	loseCommits map[[2]string]uint64
}

type inmemHost struct {
	name     string
	raftAddr raft.ServerAddress
	gossip   *net.UDPAddr

	store *raft.InmemStore
	snaps *raft.InmemSnapshotStore

	isolated bool
	// rt is the running incarnation's raft transport (nil while the node
	// is down) and linked the peers it is connected to.
	rt     *raft.InmemTransport
	linked map[string]bool
	// gt is the running incarnation's gossip transport.
	gt *gossipTransport
	// api is the running incarnation's API listener (nil: none).
	api *apiListener
}

// NewInmemNet returns an empty network: every link up, no node started.
func NewInmemNet() *InmemNet {
	return &InmemNet{hosts: map[string]*inmemHost{}, byGossip: map[string]*inmemHost{}, byAPI: map[string]*inmemHost{}, cut: map[[2]string]bool{}, raftCut: map[[2]string]bool{}, loseCommits: map[[2]string]uint64{}}
}

// SetLink cuts (up false) or restores the link that carries messages
// from one node to another. The other direction is not changed.
func (n *InmemNet) SetLink(from, to string, up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if up {
		delete(n.cut, [2]string{from, to})
	} else {
		n.cut[[2]string{from, to}] = true
	}
	n.relink()
}

// SetRaftLink cuts (up false) or restores raft's messages from one node to
// another, one direction, as a firewall rule on the raft port would:
// gossip still flows, and so does whatever else the caller carries
// between the nodes (Link does not change).
func (n *InmemNet) SetRaftLink(from, to string, up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if up {
		delete(n.raftCut, [2]string{from, to})
	} else {
		n.raftCut[[2]string{from, to}] = true
	}
	n.relink()
}

// LoseCommits loses raft's appends from one node to another that tell a
// commit index of at least index (0: none lost): the follower receives the
// entries but not the news that they committed, as when the link fails
// right after it acknowledged them.
func (n *InmemNet) LoseCommits(from, to string, index uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if index == 0 {
		delete(n.loseCommits, [2]string{from, to})
	} else {
		n.loseCommits[[2]string{from, to}] = index
	}
}

// Isolate cuts (or, isolated false, restores) every link to and from node,
// without changing what SetLink set.
func (n *InmemNet) Isolate(node string, isolated bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.host(node)
	h.isolated = isolated
	n.relink()
}

// Link reports whether a message sent now from one node reaches the
// other: both are running (started and not shut down), neither is
// isolated and the link is not cut.
func (n *InmemNet) Link(from, to string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.link(from, to)
}

// Running reports whether node has a started, not yet shut down raft.
func (n *InmemNet) Running(node string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.hosts[node]
	return h != nil && h.rt != nil
}

func (n *InmemNet) link(from, to string) bool {
	f, t := n.hosts[from], n.hosts[to]
	if f == nil || t == nil || f.rt == nil || t.rt == nil || f.isolated || t.isolated {
		return false
	}
	return from == to || !n.cut[[2]string{from, to}]
}

// host returns node's entry, making an empty one for a name not yet
// registered (SetLink and Isolate may come before Start).
func (n *InmemNet) host(node string) *inmemHost {
	h := n.hosts[node]
	if h == nil {
		h = &inmemHost{name: node}
		n.hosts[node] = h
	}
	return h
}

// relink connects and disconnects the running raft transports as the
// links now say.
func (n *InmemNet) relink() {
	for _, a := range n.hosts {
		if a.rt == nil {
			continue
		}
		for _, b := range n.hosts {
			if b == a || b.rt == nil {
				continue
			}
			want := n.link(a.name, b.name) && !n.raftCut[[2]string{a.name, b.name}]
			if want == a.linked[b.name] {
				continue
			}
			if want {
				a.rt.Connect(b.raftAddr, b.rt)
			} else {
				a.rt.Disconnect(b.raftAddr)
			}
			a.linked[b.name] = want
		}
	}
}

// register records the membership, or checks it against the one recorded.
func (n *InmemNet) register(members []Member) error {
	for _, m := range members {
		host, port, err := net.SplitHostPort(m.Gossip)
		ip := net.ParseIP(host)
		p, perr := strconv.Atoi(port)
		if err != nil || ip == nil || perr != nil {
			return fmt.Errorf("in-memory network: gossip address %q of %s is not IP:port", m.Gossip, m.Name)
		}
		ga := &net.UDPAddr{IP: ip, Port: p}
		h := n.host(m.Name)
		switch {
		case h.raftAddr == "":
			if o := n.byGossip[ga.String()]; o != nil {
				return fmt.Errorf("in-memory network: %s and %s share gossip address %s", o.name, m.Name, ga)
			}
			for _, o := range n.hosts {
				if o.raftAddr == raft.ServerAddress(m.Raft) {
					return fmt.Errorf("in-memory network: %s and %s share raft address %s", o.name, m.Name, m.Raft)
				}
			}
			h.raftAddr, h.gossip = raft.ServerAddress(m.Raft), ga
			n.byGossip[ga.String()] = h
			if m.API != "" {
				n.byAPI[m.API] = h
			}
		case h.raftAddr != raft.ServerAddress(m.Raft) || h.gossip.String() != ga.String():
			return fmt.Errorf("in-memory network: %s was registered with raft %s, gossip %s", m.Name, h.raftAddr, h.gossip)
		}
	}
	return nil
}

// raftParts returns node's stores (made on its first start, kept after)
// and a new raft transport connected as the links say.
func (n *InmemNet) raftParts(node string, members []Member) (raft.LogStore, raft.StableStore, raft.SnapshotStore, raft.Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.register(members); err != nil {
		return nil, nil, nil, nil, err
	}
	h := n.hosts[node]
	if h.rt != nil {
		return nil, nil, nil, nil, fmt.Errorf("in-memory network: %s is already running", node)
	}
	if h.store == nil {
		h.store, h.snaps = raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	}
	_, h.rt = raft.NewInmemTransport(h.raftAddr)
	h.linked = map[string]bool{}
	n.relink()
	return h.store, h.store, h.snaps, &inmemRaftTransport{InmemTransport: h.rt, net: n, host: h}, nil
}

// inmemRaftTransport takes its node off the network when raft closes it,
// and loses the answer to an RPC when the link back is cut: raft's
// InmemTransport hands answers back on a channel, around the links, so a
// one-way cut would otherwise still carry them. Without pipelining, every
// answer goes through that check.
type inmemRaftTransport struct {
	*raft.InmemTransport
	net  *InmemNet
	host *inmemHost
}

// answered is err, or the loss of the answer from target if the link
// back is cut now.
func (t *inmemRaftTransport) answered(target raft.ServerAddress, err error) error {
	if err != nil {
		return err
	}
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range n.hosts {
		if h.raftAddr == target && (!n.link(h.name, t.host.name) || n.raftCut[[2]string{h.name, t.host.name}]) {
			return fmt.Errorf("in-memory network: the answer from %s was lost", target)
		}
	}
	return nil
}

func (t *inmemRaftTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (t *inmemRaftTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	n := t.net
	n.mu.Lock()
	for _, h := range n.hosts {
		if h.raftAddr == target {
			if at, ok := n.loseCommits[[2]string{t.host.name, h.name}]; ok && args.LeaderCommitIndex >= at {
				n.mu.Unlock()
				return fmt.Errorf("in-memory network: the append to %s telling commit %d was lost", target, args.LeaderCommitIndex)
			}
		}
	}
	n.mu.Unlock()
	return t.answered(target, t.InmemTransport.AppendEntries(id, target, args, resp))
}

func (t *inmemRaftTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.answered(target, t.InmemTransport.RequestVote(id, target, args, resp))
}

func (t *inmemRaftTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.answered(target, t.InmemTransport.RequestPreVote(id, target, args, resp))
}

func (t *inmemRaftTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return t.answered(target, t.InmemTransport.InstallSnapshot(id, target, args, resp, data))
}

func (t *inmemRaftTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.answered(target, t.InmemTransport.TimeoutNow(id, target, args, resp))
}

func (t *inmemRaftTransport) Close() error {
	n := t.net
	n.mu.Lock()
	if t.host.rt == t.InmemTransport {
		for _, o := range n.hosts {
			if o.linked[t.host.name] {
				o.rt.Disconnect(t.host.raftAddr)
				o.linked[t.host.name] = false
			}
		}
		t.host.rt, t.host.linked = nil, nil
	}
	n.mu.Unlock()
	return t.InmemTransport.Close()
}

// gossipTransport returns a new memberlist transport for node.
func (n *InmemNet) gossipTransport(node string) (memberlist.Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.hosts[node]
	if h == nil || h.gossip == nil {
		return nil, fmt.Errorf("in-memory network: %s is not registered", node)
	}
	t := &gossipTransport{net: n, host: h, packets: make(chan *memberlist.Packet, 256), streams: make(chan net.Conn), done: make(chan struct{})}
	h.gt = t
	return t, nil
}

// gossipRoute returns the running gossip transport at addr, if a message
// from node reaches it now.
func (n *InmemNet) gossipRoute(from, addr string) *gossipTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.byGossip[normalAddr(addr)]
	if h == nil || h.gt == nil || !n.link(from, h.name) {
		return nil
	}
	return h.gt
}

// normalAddr writes an IP:port address the way net.UDPAddr does.
func normalAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip := net.ParseIP(host)
	p, err := strconv.Atoi(port)
	if ip == nil || err != nil {
		return addr
	}
	return (&net.UDPAddr{IP: ip, Port: p}).String()
}

// gossipTransport is memberlist's transport on an InmemNet, shaped after
// memberlist's MockTransport, with what MockNetwork lacks for a cluster
// whose nodes stop, restart and lose links while the others run: a
// stable address per node across restarts (memberlist refuses a known
// name at a new address), a registry safe to change concurrently, and
// datagrams that never block the sender (one to a stopped node, or to a
// full receive queue, is lost as UDP would lose it).
type gossipTransport struct {
	net     *InmemNet
	host    *inmemHost
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
}

var _ memberlist.Transport = (*gossipTransport)(nil)

func (t *gossipTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.host.gossip.IP, t.host.gossip.Port, nil
}

func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	dest := t.net.gossipRoute(t.host.name, addr)
	if dest == nil {
		return now, nil // lost
	}
	p := &memberlist.Packet{Buf: bytes.Clone(b), From: t.host.gossip, Timestamp: now}
	select {
	case <-dest.done:
	case dest.packets <- p:
	default: // the receiver's queue is full: lost
	}
	return now, nil
}

func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	dest := t.net.gossipRoute(t.host.name, addr)
	if dest == nil {
		return nil, fmt.Errorf("dial %s: no route to host (in-memory network)", addr)
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dest.streams <- &inmemConn{Conn: remote, net: t.net, self: dest.host, peer: t.host}:
		return &inmemConn{Conn: local, net: t.net, self: t.host, peer: dest.host}, nil
	case <-dest.done:
	case <-timer.C:
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("dial %s: connection refused (in-memory network)", addr)
}

func (t *gossipTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *gossipTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		t.net.mu.Lock()
		if t.host.gt == t {
			t.host.gt = nil
		}
		t.net.mu.Unlock()
	})
	return nil
}

// inmemConn is one end of a gossip stream: it fails once the link it
// needs is cut (checked at each read and write).
type inmemConn struct {
	net.Conn
	net        *InmemNet
	self, peer *inmemHost
}

var errLinkCut = errors.New("connection lost (in-memory network: link cut)")

func (c *inmemConn) Read(p []byte) (int, error) {
	if !c.net.Link(c.peer.name, c.self.name) {
		c.Conn.Close()
		return 0, errLinkCut
	}
	return c.Conn.Read(p)
}

func (c *inmemConn) Write(p []byte) (int, error) {
	if !c.net.Link(c.self.name, c.peer.name) {
		c.Conn.Close()
		return 0, errLinkCut
	}
	return c.Conn.Write(p)
}

func (c *inmemConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: c.self.gossip.IP, Port: c.self.gossip.Port}
}
func (c *inmemConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: c.peer.gossip.IP, Port: c.peer.gossip.Port}
}

// The agents' API (lease renewals, forwarded commands, operators' calls)
// runs over streams of the same network: ListenAPI is a node's listener at
// its Member.API address, DialAPI connects to one. A stream between two
// nodes needs the link both ways, as a TCP connection does; one from
// outside the cluster (from "", an operator's machine) needs only the
// node to be reachable (running and not isolated).

// apiConnectTimeout is how long a dial to a node that does not answer
// waits at most (the kernel gives up on a TCP connect after minutes; the
// agents' calls give up long before).
const apiConnectTimeout = 10 * time.Second

// ListenAPI returns the API listener of node (registered by its Start):
// what it accepts comes from DialAPI. Close takes it off the network.
func (n *InmemNet) ListenAPI(node string) (net.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.hosts[node]
	if h == nil || h.gossip == nil {
		return nil, fmt.Errorf("in-memory network: %s is not registered (start its cluster first)", node)
	}
	if h.api != nil {
		return nil, fmt.Errorf("in-memory network: %s already listens for the API", node)
	}
	h.api = &apiListener{net: n, host: h, conns: make(chan net.Conn), done: make(chan struct{})}
	return h.api, nil
}

// DialAPI connects from a node ("" for outside the cluster) to the API at
// addr. A node that is not listening refuses at once (a killed process);
// one the link does not reach answers nothing, so the dial waits for ctx
// to end (a dead or cut-off machine).
func (n *InmemNet) DialAPI(ctx context.Context, from, addr string) (net.Conn, error) {
	for {
		n.mu.Lock()
		h := n.byAPI[addr]
		var l *apiListener
		if h != nil {
			l = h.api
		}
		up := l != nil && n.apiLink(from, h.name) && n.apiLink(h.name, from)
		n.mu.Unlock()
		switch {
		case h == nil:
			return nil, fmt.Errorf("dial %s: no such host (in-memory network)", addr)
		case l == nil && n.Running(h.name):
			return nil, fmt.Errorf("dial %s: connection refused (in-memory network)", addr)
		case !up:
			// No answer: wait for the caller to give up, or for the
			// connect timeout. (A link that comes back during the
			// wait does not help this attempt, as a lost SYN would
			// not.)
			t := time.NewTimer(apiConnectTimeout)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("dial %s: %w (in-memory network: no answer)", addr, ctx.Err())
			case <-t.C:
				return nil, fmt.Errorf("dial %s: connection timed out (in-memory network: no answer)", addr)
			}
		}
		local, remote := net.Pipe()
		var self *inmemHost
		if from != "" {
			n.mu.Lock()
			self = n.hosts[from]
			n.mu.Unlock()
		}
		select {
		case l.conns <- &apiConn{Conn: remote, net: n, self: h, peer: self, laddr: addr}:
			return &apiConn{Conn: local, net: n, self: self, peer: h, raddr: addr}, nil
		case <-l.done:
			local.Close()
			remote.Close()
			continue // closed meanwhile: refused on the next round
		case <-ctx.Done():
			local.Close()
			remote.Close()
			return nil, fmt.Errorf("dial %s: %w", addr, ctx.Err())
		}
	}
}

// apiLink: a message from one end reaches the other ("" is outside the
// cluster and reaches every node that is not isolated).
func (n *InmemNet) apiLink(from, to string) bool {
	switch {
	case from == "" && to == "":
		return true
	case from == "":
		h := n.hosts[to]
		return h != nil && h.api != nil && !h.isolated
	case to == "":
		h := n.hosts[from]
		return h != nil && !h.isolated
	}
	return n.link(from, to)
}

type apiListener struct {
	net   *InmemNet
	host  *inmemHost
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *apiListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *apiListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.net.mu.Lock()
		if l.host.api == l {
			l.host.api = nil
		}
		l.net.mu.Unlock()
	})
	return nil
}

func (l *apiListener) Addr() net.Addr { return inmemAddr("api:" + l.host.name) }

// inmemAddr is an address on an InmemNet.
type inmemAddr string

func (a inmemAddr) Network() string { return "inmem" }
func (a inmemAddr) String() string  { return string(a) }

// apiConn is one end of an API stream: it fails once a link it needs is
// cut (checked at each read and write). self or peer nil: outside the
// cluster.
type apiConn struct {
	net.Conn
	net          *InmemNet
	self, peer   *inmemHost
	laddr, raddr string
}

func hostName(h *inmemHost) string {
	if h == nil {
		return ""
	}
	return h.name
}

func (c *apiConn) linked(from, to *inmemHost) bool {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return c.net.apiLink(hostName(from), hostName(to))
}

func (c *apiConn) Read(p []byte) (int, error) {
	if !c.linked(c.peer, c.self) {
		c.Conn.Close()
		return 0, errLinkCut
	}
	return c.Conn.Read(p)
}

func (c *apiConn) Write(p []byte) (int, error) {
	if !c.linked(c.self, c.peer) {
		c.Conn.Close()
		return 0, errLinkCut
	}
	return c.Conn.Write(p)
}

func (c *apiConn) LocalAddr() net.Addr  { return inmemAddr(c.laddr + "@" + hostName(c.self)) }
func (c *apiConn) RemoteAddr() net.Addr { return inmemAddr(c.raddr + "@" + hostName(c.peer)) }
