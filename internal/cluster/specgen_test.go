package cluster

import (
	"bytes"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// SpecGen moves at every apply that changes a hierarchy's spec, and at a
// snapshot restore; assignments and reports leave it alone. Every command
// kind is classified here: one that writes State.Hierarchies must be in
// changesSpecs, or readiness would keep proving an old spec.
func TestSpecGen(t *testing.T) {
	writesSpecs := []string{"put-hierarchies", "purge", "restore", "batch"}
	leavesSpecs := []string{"delete", "set-online", "assign", "request-move", "report", "revoke", "release", "join",
		"leaving", "readiness", "findings", "set-level", "expire-mark", "confirm-failover", "maintenance", "standby",
		"node-confirm-failover", "members"}
	for k := range kinds {
		if !slices.Contains(writesSpecs, k) && !slices.Contains(leavesSpecs, k) {
			t.Errorf("command kind %q: does it write State.Hierarchies? Classify it in changesSpecs and in this test", k)
		}
	}

	f := NewFSM()
	idx := uint64(0)
	apply := func(c Cmd) {
		t.Helper()
		b, err := Encode(c, time.Unix(100, 0), LevelTyped)
		if err != nil {
			t.Fatal(err)
		}
		idx++
		if r, _ := f.Apply(&raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: b}).(Result); r.Err != nil {
			t.Fatalf("%s: %v", c.Kind(), r.Err)
		}
	}
	step := func(c Cmd, moves bool) {
		t.Helper()
		before := f.SpecGen()
		apply(c)
		if got := f.SpecGen() != before; got != moves {
			t.Errorf("%s: SpecGen moved %v, want %v", c.Kind(), got, moves)
		}
	}
	h := testHier("web", "n1", "n2")
	step(PutHierarchies{Hierarchies: []spec.Hierarchy{h}}, true)
	step(Join{Node: "n1"}, false)
	step(Assign{Hierarchy: "web", Node: "n1", Epoch: 1, Reason: "placed"}, false)
	step(Batch{Cmds: []Cmd{Assign{Hierarchy: "web", Node: "n2", Epoch: 2, Reason: "moved"}}}, false)
	h.Nodes = []string{"n2", "n1"}
	step(Batch{Cmds: []Cmd{PutHierarchies{Hierarchies: []spec.Hierarchy{h}}}}, true)
	step(Restore{Hierarchies: []spec.Hierarchy{h}, Online: map[string]bool{"web": true}}, true)

	b := snapshotBytes(t, f)
	before := f.SpecGen()
	if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if f.SpecGen() == before {
		t.Error("a snapshot restored: SpecGen did not move")
	}
}
