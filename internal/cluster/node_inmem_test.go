package cluster

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"
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
