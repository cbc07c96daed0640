package cluster

import (
	"bytes"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

func member(name string, witness bool) state.Member {
	return state.Member{Name: name, Witness: witness, Raft: name + ":7101", Gossip: name + ":7102", API: name + ":7103"}
}

func TestApplySetMembers(t *testing.T) {
	s := NewState()
	three := []state.Member{member("n1", false), member("n2", false), member("n3", false)}

	// Malformed lists are refused whole.
	for _, bad := range []SetMembers{
		{},
		{Members: []state.Member{member("n1", false), member("n1", false)}},
		{Members: []state.Member{{Name: "n1", Raft: "n1:1"}}},
		{Members: three, Removed: "n3"},
	} {
		if r := ApplyCmd(s, bad, t0); r.Err == nil {
			t.Errorf("%+v applied", bad)
		}
		if len(s.Members) != 0 {
			t.Fatalf("a refused change left members %v", s.Members)
		}
	}

	four := append(append([]state.Member{}, three...), member("n4", false))
	if r := ApplyCmd(s, SetMembers{Members: four, Added: "n4", By: "root on n1 (local socket)", Reason: "grow"}, t0); r.Err != nil || !r.Changed {
		t.Fatalf("add n4: %+v", r)
	}
	if len(s.Members) != 4 || s.MembersChanged == nil || s.MembersChanged.By != "root on n1 (local socket)" || !s.MembersChanged.Since.Equal(t0) {
		t.Fatalf("after add: %v %+v", s.Members, s.MembersChanged)
	}
	// A joined node that a hierarchy lists cannot be removed; once no
	// hierarchy lists it, its state goes with it.
	ApplyCmd(s, Join{Node: "n4", Version: "v", Level: LevelTyped}, t0)
	ApplyCmd(s, PutHierarchies{Hierarchies: []spec.Hierarchy{testHier("web", "n1", "n4")}}, t0)
	r := ApplyCmd(s, SetMembers{Members: three, Removed: "n4"}, t0)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "web") {
		t.Fatalf("remove n4 listed by web: %+v", r)
	}
	ApplyCmd(s, PutHierarchies{Hierarchies: []spec.Hierarchy{testHier("web", "n1", "n2")}}, t0)
	if r := ApplyCmd(s, SetMembers{Members: three, Removed: "n4"}, t0); r.Err != nil {
		t.Fatalf("remove n4: %v", r.Err)
	}
	if _, ok := s.Nodes["n4"]; ok || len(s.Members) != 3 {
		t.Fatalf("after remove: nodes %v members %v", s.Nodes, s.Members)
	}
	// A removed node cannot join again (its agent restarted): only a
	// member can.
	if r := ApplyCmd(s, Join{Node: "n4", Version: "v", Level: LevelTyped}, t0); r.Err == nil || !strings.Contains(r.Err.Error(), "not a member") {
		t.Fatalf("join of removed n4: %+v", r)
	}
	if _, ok := s.Nodes["n4"]; ok {
		t.Fatal("a refused join recorded the node")
	}
	if r := ApplyCmd(s, Join{Node: "n1", Version: "v", Level: LevelTyped}, t0); r.Err != nil {
		t.Fatalf("join of member n1: %v", r.Err)
	}
}

// The lock-free copy of the membership follows every apply and restore.
func TestFSMMembersFollowsState(t *testing.T) {
	f := NewFSM()
	if len(f.Members()) != 0 {
		t.Fatal("new FSM has members")
	}
	b, err := Encode(SetMembers{Members: []state.Member{member("n1", false), member("n2", false)}, Added: "n2"}, t0, LevelTyped)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := f.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: b}).(Result); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := f.Members(); len(got) != 2 || got[1].Name != "n2" {
		t.Fatalf("after apply: %v", got)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	if got := g.Members(); len(got) != 2 {
		t.Fatalf("after restore: %v", got)
	}
}

// A voter grants a renewal only when the asker counts the same voter
// set; a request without a set (an older version) is not checked.
func TestRenewVoterSet(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, 0)
	v := c.leases["n2"]
	var set atomic.Pointer[[]string]
	cur := []string{"n1", "n2", "n3"}
	set.Store(&cur)
	v.cfg.VotersFunc = func() []string { return *set.Load() }
	c.applyAll(Command{Type: CmdJoin, Node: "n1"})

	if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1, Voters: []string{"n3", "n1", "n2"}}); !r.Granted {
		t.Fatalf("same set in another order: %+v", r)
	}
	if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1}); !r.Granted {
		t.Fatalf("no set: %+v", r)
	}
	four := []string{"n1", "n2", "n3", "n4"}
	set.Store(&four)
	r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1, Voters: []string{"n1", "n2", "n3"}})
	if r.Granted || r.Revoked || !strings.Contains(r.Reason, "voter set differs") {
		t.Fatalf("older set: %+v", r)
	}
	if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1, Voters: []string{}}); r.Granted {
		t.Fatalf("empty set (asker in no configuration): %+v", r)
	}
	if v.Majority() != 3 {
		t.Fatalf("majority of four voters = %d", v.Majority())
	}
}
