package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"
)

func inmemConfig(net *InmemNet, node string, members []Member) Config {
	return Config{
		Node: node, Members: members, Version: "test", Net: net,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Timing: Timing{Lease: 300 * time.Millisecond, Renew: 60 * time.Millisecond, ProbeInterval: 100 * time.Millisecond,
			ProbeTimeout: 50 * time.Millisecond, SuspicionMult: 2, RaftHeartbeat: 100 * time.Millisecond, RaftElection: 200 * time.Millisecond},
	}
}

// A node on an InmemNet starts without a data directory or TLS, keeps its
// raft stores across Shutdown and Start, and refuses to run twice.
func TestInmemNetStartRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewInmemNet()
		members := []Member{{Name: "solo", Raft: "solo", Gossip: "10.0.0.1:7946"}}
		var c *Cluster
		start := func() {
			cfg := inmemConfig(net, "solo", members)
			cfg.Rejoin = func(ctx context.Context) (uint64, error) {
				res, _, err := c.Apply(Join{Node: "solo", Version: "test", Level: c.SupportedLevel()}, time.Second)
				return res.Gen, err
			}
			var err error
			if c, err = Start(cfg); err != nil {
				t.Fatal(err)
			}
			if !net.Running("solo") {
				t.Fatal("started node not running on the network")
			}
			c.StartLeases()
		}
		holds := func(want uint64) {
			t.Helper()
			deadline := time.Now().Add(2 * time.Second)
			for {
				if g, _ := c.Leases.Current(); g == want && c.Leases.Valid(g) {
					return
				}
				if time.Now().After(deadline) {
					g, _ := c.Leases.Current()
					t.Fatalf("no lease of generation %d (at %d)", want, g)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		start()
		holds(1)
		if _, err := Start(inmemConfig(net, "solo", members)); err == nil || !strings.Contains(err.Error(), "already running") {
			t.Errorf("second start of a running node: %v", err)
		}
		last := c.Raft.LastIndex()
		c.Shutdown()
		if net.Running("solo") {
			t.Error("stopped node still running on the network")
		}
		start()
		if got := c.Raft.LastIndex(); got < last {
			t.Errorf("restarted with log up to %d, had %d", got, last)
		}
		holds(2) // a new process joins with a new generation
		c.Shutdown()
	})
}

func TestInmemNetRefusesNonIPGossip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		members := []Member{{Name: "a", Raft: "a", Gossip: "node-a:7946"}}
		_, err := Start(inmemConfig(NewInmemNet(), "a", members))
		if err == nil || !strings.Contains(err.Error(), "not IP:port") {
			t.Errorf("start with gossip address node-a:7946: %v", err)
		}
	})
}

func TestInmemNetLinks(t *testing.T) {
	n := NewInmemNet()
	members := []Member{{Name: "a", Raft: "a", Gossip: "10.0.0.1:1"}, {Name: "b", Raft: "b", Gossip: "10.0.0.2:1"}}
	if n.Link("a", "b") {
		t.Error("link between nodes not started")
	}
	for _, m := range members {
		if _, _, _, _, err := n.raftParts(m.Name, members); err != nil {
			t.Fatal(err)
		}
	}
	if !n.Link("a", "b") || !n.Link("b", "a") {
		t.Fatal("running nodes not linked")
	}
	n.SetLink("a", "b", false)
	if n.Link("a", "b") || !n.Link("b", "a") {
		t.Error("SetLink(a, b, false) is not one direction")
	}
	n.SetLink("a", "b", true)
	n.Isolate("b", true)
	if n.Link("a", "b") || n.Link("b", "a") {
		t.Error("isolated node linked")
	}
	n.Isolate("b", false)
	if !n.Link("a", "b") {
		t.Error("link not back after isolation ended")
	}
	if _, _, _, _, err := n.raftParts("c", append(members, Member{Name: "c", Raft: "a", Gossip: "10.0.0.3:1"})); err == nil {
		t.Error("two nodes with one raft address accepted")
	}
}

// A Start that fails returns its error (it once panicked: the deferred
// cleanup used the named result, already set to nil by the return).
func TestStartErrorIsReturned(t *testing.T) {
	cfg := Config{Node: "a", DataDir: t.TempDir(), Members: []Member{{Name: "a", Raft: "127.0.0.1:0", Gossip: "127.0.0.1:0"}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "no TLS identity") {
		t.Errorf("start without a TLS identity: %v", err)
	}
}

// A follower learns that an entry committed as soon as the leader has
// applied it, not at raft's commit tick (CommitTimeout, here the 3 s
// heartbeat: 3-6 s): the leader's transport pushes the commit. Time
// is synctest's, which stands still while anything can run, so "at once"
// is within the few milliseconds the test allows.
func TestFollowersLearnCommitsWithoutRaftsTick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := NewInmemNet()
		var members []Member
		for i, name := range []string{"n1", "n2", "n3"} {
			members = append(members, Member{Name: name, Raft: name, Gossip: fmt.Sprintf("10.0.0.%d:7946", i+1)})
		}
		var nodes []*Cluster
		for _, m := range members {
			cfg := inmemConfig(net, m.Name, members)
			cfg.Timing.RaftHeartbeat, cfg.Timing.RaftElection = 3*time.Second, 3*time.Second
			c, err := Start(cfg)
			if err != nil {
				t.Fatal(err)
			}
			nodes = append(nodes, c)
		}
		defer func() {
			for _, c := range nodes {
				c.Shutdown()
			}
			// memberlist's probes in flight end on their own timeouts,
			// which Shutdown does not wait for; the bubble's clock stops
			// when this function returns.
			time.Sleep(time.Second)
		}()
		var leader *Cluster
		for leader == nil {
			time.Sleep(100 * time.Millisecond)
			for _, c := range nodes {
				if c.Raft.State() == raft.Leader {
					leader = c
				}
			}
		}
		for i := range 5 {
			_, idx, err := leader.Apply(Join{Node: fmt.Sprintf("n%d", i%3+1), Version: "test", Level: 1}, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
			for _, c := range nodes {
				if got := c.FSM.Index(); got < idx {
					t.Fatalf("entry %d: %s has applied up to %d 5 ms after the leader applied it", idx, c.cfg.Node, got)
				}
			}
		}
	})
}
