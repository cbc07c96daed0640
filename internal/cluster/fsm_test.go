package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func testHier(name string, nodes ...string) spec.Hierarchy {
	h := spec.Hierarchy{Name: name, Nodes: nodes, Resources: []spec.Resource{{Name: "r", Type: "app"}}}
	h.Normalize() // fills pointer fields, so Clone's depth is exercised
	return h
}

func put(hs ...spec.Hierarchy) *Command {
	return &Command{Type: CmdPutHierarchies, Hierarchies: hs, Time: t0}
}

// mustApply applies c and fails the test on an error result.
func mustApply(t *testing.T, s *State, c *Command) Result {
	t.Helper()
	r := apply(s, c)
	if r.Err != nil {
		t.Fatalf("apply %s: %v", c.Type, r.Err)
	}
	return r
}

func TestApplyPut(t *testing.T) {
	s := NewState()
	r := mustApply(t, s, put(testHier("web", "n1", "n2"), testHier("db", "n2")))
	if !r.Changed {
		t.Fatal("put not Changed")
	}
	for _, n := range []string{"web", "db"} {
		a := s.Assignments[n]
		if a == nil {
			t.Fatalf("no assignment for %s", n)
		}
		if !a.Online || a.Epoch != 1 || a.Node != "" || a.Hierarchy != n || !a.Since.Equal(t0) || a.Reason == "" {
			t.Fatalf("new assignment %+v, want Online at epoch 1, unassigned, since t0", a)
		}
		if _, ok := s.Hierarchies[n]; !ok {
			t.Fatalf("hierarchy %s not stored", n)
		}
	}

	// The owner keeps it across an update; the epoch rises.
	mustApply(t, s, &Command{Type: CmdAssign, Hierarchy: "web", Node: "n2", Gen: 3, Epoch: 1})
	t1 := t0.Add(time.Minute)
	upd := put(testHier("web", "n1", "n2", "n3"))
	upd.Time = t1
	mustApply(t, s, upd)
	a := s.Assignments["web"]
	if a.Node != "n2" || a.Gen != 3 || a.Epoch != 3 || a.MoveTo != "" || !a.Online || !a.Since.Equal(t1) {
		t.Fatalf("after update %+v, want owner n2/3 kept, epoch 3, no MoveTo", a)
	}
	if got := s.Hierarchies["web"].Nodes; !reflect.DeepEqual(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("spec not replaced: %v", got)
	}
	if s.Assignments["db"].Epoch != 1 {
		t.Fatalf("unrelated hierarchy touched: %+v", s.Assignments["db"])
	}

	// The owner is dropped from the node list: move to the first listed.
	mustApply(t, s, put(testHier("web", "n3", "n1")))
	a = s.Assignments["web"]
	if a.Node != "n2" || a.MoveTo != "n3" || a.Epoch != 4 {
		t.Fatalf("owner dropped: %+v, want owner n2 with MoveTo n3 at epoch 4", a)
	}

	// A put revives a hierarchy being deleted.
	mustApply(t, s, &Command{Type: CmdDelete, Hierarchy: "db"})
	if a := s.Assignments["db"]; !a.Deleting || a.Online || a.Epoch != 2 {
		t.Fatalf("after delete %+v", a)
	}
	mustApply(t, s, put(testHier("db", "n2")))
	if a := s.Assignments["db"]; a.Deleting || !a.Online || a.Epoch != 3 {
		t.Fatalf("after re-put %+v, want not deleting, online, epoch 3", a)
	}
}

func TestApplyAssign(t *testing.T) {
	tests := []struct {
		name    string
		start   Assignment
		cmd     Command
		changed bool
		want    Assignment
	}{
		{
			name:    "assign at the current epoch",
			start:   Assignment{Epoch: 1, Online: true},
			cmd:     Command{Node: "n1", Gen: 2, Epoch: 1, Reason: "placed"},
			changed: true,
			want:    Assignment{Node: "n1", Gen: 2, Epoch: 2, Online: true, Reason: "placed"},
		},
		{
			name:    "stale epoch is a no-op",
			start:   Assignment{Node: "n1", Gen: 2, Epoch: 5, Online: true},
			cmd:     Command{Node: "n2", Gen: 1, Epoch: 4},
			changed: false,
			want:    Assignment{Node: "n1", Gen: 2, Epoch: 5, Online: true},
		},
		{
			name:    "future epoch is a no-op",
			start:   Assignment{Node: "n1", Gen: 2, Epoch: 5, Online: true},
			cmd:     Command{Node: "n2", Gen: 1, Epoch: 6},
			changed: false,
			want:    Assignment{Node: "n1", Gen: 2, Epoch: 5, Online: true},
		},
		{
			name:    "assign clears MoveTo",
			start:   Assignment{Node: "n1", Gen: 2, Epoch: 5, Online: true, MoveTo: "n3"},
			cmd:     Command{Node: "n3", Gen: 4, Epoch: 5},
			changed: true,
			want:    Assignment{Node: "n3", Gen: 4, Epoch: 6, Online: true},
		},
		{
			name:    "MarkFailed appends the previous owner",
			start:   Assignment{Node: "n1", Gen: 2, Epoch: 5, Online: true, Failed: []string{"n9"}},
			cmd:     Command{Node: "n2", Gen: 3, Epoch: 5, MarkFailed: true},
			changed: true,
			want:    Assignment{Node: "n2", Gen: 3, Epoch: 6, Online: true, Failed: []string{"n9", "n1"}},
		},
		{
			name:    "MarkFailed does not list the owner twice",
			start:   Assignment{Node: "n1", Gen: 2, Epoch: 5, Online: true, Failed: []string{"n1"}},
			cmd:     Command{Node: "", Epoch: 5, MarkFailed: true},
			changed: true,
			want:    Assignment{Epoch: 6, Online: true, Failed: []string{"n1"}},
		},
		{
			name:    "MarkFailed with no owner adds nothing",
			start:   Assignment{Epoch: 5, Online: true},
			cmd:     Command{Node: "n2", Gen: 1, Epoch: 5, MarkFailed: true},
			changed: true,
			want:    Assignment{Node: "n2", Gen: 1, Epoch: 6, Online: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewState()
			s.Hierarchies["web"] = testHier("web", "n1", "n2", "n3")
			a := tt.start
			a.Hierarchy = "web"
			s.Assignments["web"] = &a
			c := tt.cmd
			c.Type, c.Hierarchy, c.Time = CmdAssign, "web", t0
			r := apply(s, &c)
			if r.Err != nil || r.Changed != tt.changed {
				t.Fatalf("apply = %+v, want Changed %v", r, tt.changed)
			}
			want := tt.want
			want.Hierarchy = "web"
			if tt.changed {
				want.Since = t0
			}
			if got := *s.Assignments["web"]; !reflect.DeepEqual(got, want) {
				t.Fatalf("assignment\n got %+v\nwant %+v", got, want)
			}
		})
	}
	s := NewState()
	if r := apply(s, &Command{Type: CmdAssign, Hierarchy: "nope", Epoch: 0}); r.Changed || r.Err != nil {
		t.Fatalf("assign of unknown hierarchy = %+v", r)
	}
}

func TestApplyRequestMoveAndSetOnline(t *testing.T) {
	s := NewState()
	mustApply(t, s, put(testHier("web", "n1", "n2", "n3")))
	mustApply(t, s, &Command{Type: CmdAssign, Hierarchy: "web", Node: "n1", Gen: 1, Epoch: 1})
	s.Assignments["web"].Failed = []string{"n2", "n3"}
	s.Assignments["web"].Online = false

	// Stale epoch: no-op.
	if r := apply(s, &Command{Type: CmdRequestMove, Hierarchy: "web", To: "n2", Epoch: 1}); r.Changed || r.Err != nil {
		t.Fatalf("stale request-move = %+v", r)
	}
	// Without ClearFailed: Failed and Online are left alone.
	r := mustApply(t, s, &Command{Type: CmdRequestMove, Hierarchy: "web", To: "n3", Epoch: 2})
	a := s.Assignments["web"]
	if !r.Changed || a.MoveTo != "n3" || a.Epoch != 3 || a.Online || !reflect.DeepEqual(a.Failed, []string{"n2", "n3"}) {
		t.Fatalf("request-move = %+v, %+v", r, a)
	}
	// Epoch 0 means unconditional; ClearFailed removes only the target.
	mustApply(t, s, &Command{Type: CmdRequestMove, Hierarchy: "web", To: "n2", ClearFailed: true})
	a = s.Assignments["web"]
	if a.MoveTo != "n2" || a.Epoch != 4 || !a.Online || !reflect.DeepEqual(a.Failed, []string{"n3"}) || a.Node != "n1" {
		t.Fatalf("request-move with ClearFailed: %+v, want MoveTo n2, Online, Failed [n3]", a)
	}
	// set-online clears MoveTo and (optionally) Failed.
	mustApply(t, s, &Command{Type: CmdSetOnline, Hierarchy: "web", Online: false})
	a = s.Assignments["web"]
	if a.Online || a.MoveTo != "" || a.Epoch != 5 || len(a.Failed) != 1 {
		t.Fatalf("set-online false: %+v", a)
	}
	mustApply(t, s, &Command{Type: CmdSetOnline, Hierarchy: "web", Online: true, ClearFailed: true})
	a = s.Assignments["web"]
	if !a.Online || a.Failed != nil || a.Epoch != 6 {
		t.Fatalf("set-online true: %+v", a)
	}
	// Unknown or deleting hierarchies are errors.
	if r := apply(s, &Command{Type: CmdRequestMove, Hierarchy: "nope", To: "n1"}); r.Err == nil {
		t.Fatal("request-move of unknown hierarchy accepted")
	}
	if r := apply(s, &Command{Type: CmdSetOnline, Hierarchy: "nope"}); r.Err == nil {
		t.Fatal("set-online of unknown hierarchy accepted")
	}
	mustApply(t, s, &Command{Type: CmdDelete, Hierarchy: "web"})
	if r := apply(s, &Command{Type: CmdRequestMove, Hierarchy: "web", To: "n1"}); r.Err == nil {
		t.Fatal("request-move of deleting hierarchy accepted")
	}
	if r := apply(s, &Command{Type: CmdSetOnline, Hierarchy: "web", Online: true}); r.Err == nil {
		t.Fatal("set-online of deleting hierarchy accepted")
	}
	if r := apply(s, &Command{Type: CmdDelete, Hierarchy: "nope"}); r.Err == nil {
		t.Fatal("delete of unknown hierarchy accepted")
	}
}

func TestApplyNodes(t *testing.T) {
	s := NewState()
	// join: new generation, returned in Result.Gen.
	for want := uint64(1); want <= 3; want++ {
		r := mustApply(t, s, &Command{Type: CmdJoin, Node: "n1", Version: "v1"})
		if !r.Changed || r.Gen != want || s.Nodes["n1"].Gen != want {
			t.Fatalf("join %d = %+v, node %+v", want, r, s.Nodes["n1"])
		}
	}
	if s.Nodes["n1"].Version != "v1" {
		t.Fatalf("version not recorded: %+v", s.Nodes["n1"])
	}
	// revoke only the current generation.
	if r := apply(s, &Command{Type: CmdRevoke, Node: "n1", Gen: 2}); r.Changed || s.Nodes["n1"].Revoked {
		t.Fatalf("revoke of old gen = %+v, node %+v", r, s.Nodes["n1"])
	}
	if r := apply(s, &Command{Type: CmdRevoke, Node: "n1", Gen: 4}); r.Changed || s.Nodes["n1"].Revoked {
		t.Fatalf("revoke of future gen = %+v, node %+v", r, s.Nodes["n1"])
	}
	if r := apply(s, &Command{Type: CmdRevoke, Node: "n1", Gen: 3}); !r.Changed || !s.Nodes["n1"].Revoked {
		t.Fatalf("revoke of current gen = %+v, node %+v", r, s.Nodes["n1"])
	}
	if r := apply(s, &Command{Type: CmdRevoke, Node: "n1", Gen: 3}); r.Changed {
		t.Fatalf("second revoke = %+v, want no change", r)
	}
	// leaving.
	mustApply(t, s, &Command{Type: CmdLeaving, Node: "n1", Leaving: true})
	if !s.Nodes["n1"].Leaving {
		t.Fatal("leaving not set")
	}
	// join clears Revoked and Leaving.
	r := mustApply(t, s, &Command{Type: CmdJoin, Node: "n1", Version: "v2"})
	n := s.Nodes["n1"]
	if r.Gen != 4 || n.Gen != 4 || n.Revoked || n.Leaving || n.Version != "v2" {
		t.Fatalf("rejoin = %+v, node %+v", r, n)
	}
	mustApply(t, s, &Command{Type: CmdLeaving, Node: "n1", Leaving: true})
	mustApply(t, s, &Command{Type: CmdLeaving, Node: "n1", Leaving: false})
	if s.Nodes["n1"].Leaving {
		t.Fatal("leaving not cleared")
	}
}

func TestApplyRelease(t *testing.T) {
	s := NewState()
	mustApply(t, s, put(testHier("a", "n1"), testHier("b", "n1"), testHier("c", "n1"), testHier("d", "n2")))
	mustApply(t, s, &Command{Type: CmdAssign, Hierarchy: "a", Node: "n1", Gen: 2, Epoch: 1})
	mustApply(t, s, &Command{Type: CmdAssign, Hierarchy: "b", Node: "n1", Gen: 2, Epoch: 1})
	mustApply(t, s, &Command{Type: CmdAssign, Hierarchy: "c", Node: "n1", Gen: 3, Epoch: 1})
	mustApply(t, s, &Command{Type: CmdAssign, Hierarchy: "d", Node: "n2", Gen: 2, Epoch: 1})
	t1 := t0.Add(time.Hour)
	r := mustApply(t, s, &Command{Type: CmdRelease, Node: "n1", Gen: 2, Reason: "fenced", Time: t1})
	if !r.Changed {
		t.Fatal("release not Changed")
	}
	for _, n := range []string{"a", "b"} {
		a := s.Assignments[n]
		if a.Node != "" || a.Gen != 0 || a.Epoch != 3 || a.Reason != "fenced" || !a.Since.Equal(t1) || !a.Online {
			t.Fatalf("%s after release: %+v", n, a)
		}
	}
	if a := s.Assignments["c"]; a.Node != "n1" || a.Gen != 3 || a.Epoch != 2 {
		t.Fatalf("other generation touched: %+v", a)
	}
	if a := s.Assignments["d"]; a.Node != "n2" || a.Gen != 2 || a.Epoch != 2 {
		t.Fatalf("other node touched: %+v", a)
	}
	if r := apply(s, &Command{Type: CmdRelease, Node: "n1", Gen: 2}); r.Changed {
		t.Fatal("second release Changed")
	}
}

func TestApplyReportAndPurge(t *testing.T) {
	s := NewState()
	mustApply(t, s, put(testHier("web", "n1")))
	rep := &HierarchyReport{Epoch: 1, State: "online", At: t0}
	if r := mustApply(t, s, &Command{Type: CmdReport, Node: "n1", Hierarchy: "web", Report: rep}); !r.Changed {
		t.Fatal("report not Changed")
	}
	if got, ok := s.Report("n1", "web", 1); !ok || got.State != "online" {
		t.Fatalf("Report = %+v %v", got, ok)
	}
	if _, ok := s.Report("n1", "web", 2); ok {
		t.Fatal("Report at another epoch found")
	}
	if _, ok := s.Report("n2", "web", 1); ok {
		t.Fatal("Report of unknown node found")
	}
	// Report for an unknown hierarchy is dropped.
	if r := apply(s, &Command{Type: CmdReport, Node: "n1", Hierarchy: "ghost", Report: rep}); r.Changed || r.Err != nil {
		t.Fatalf("report for unknown hierarchy = %+v", r)
	}
	if _, ok := s.Nodes["n1"].Reports["ghost"]; ok {
		t.Fatal("report for unknown hierarchy stored")
	}
	if r := apply(s, &Command{Type: CmdReport, Node: "n1", Hierarchy: "web"}); r.Err == nil {
		t.Fatal("report without body accepted")
	}

	// Purge: only when deleting and at the current epoch.
	if r := apply(s, &Command{Type: CmdPurge, Hierarchy: "web", Epoch: 1}); r.Changed {
		t.Fatal("purge of a live hierarchy")
	}
	mustApply(t, s, &Command{Type: CmdDelete, Hierarchy: "web"})
	if r := apply(s, &Command{Type: CmdPurge, Hierarchy: "web", Epoch: 1}); r.Changed {
		t.Fatal("purge at a stale epoch")
	}
	if r := apply(s, &Command{Type: CmdPurge, Hierarchy: "web", Epoch: 2}); !r.Changed {
		t.Fatal("purge at the current epoch refused")
	}
	if _, ok := s.Assignments["web"]; ok {
		t.Fatal("assignment not purged")
	}
	if _, ok := s.Hierarchies["web"]; ok {
		t.Fatal("hierarchy not purged")
	}
	if _, ok := s.Nodes["n1"].Reports["web"]; ok {
		t.Fatal("report not purged")
	}
	if r := apply(s, &Command{Type: CmdPurge, Hierarchy: "web", Epoch: 2}); r.Changed {
		t.Fatal("second purge Changed")
	}
}

func TestApplyUnknownCommand(t *testing.T) {
	if r := apply(NewState(), &Command{Type: "frobnicate"}); r.Err == nil || r.Changed {
		t.Fatalf("unknown command = %+v", r)
	}
}

func logOf(t *testing.T, idx uint64, c Command) *raft.Log {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: b}
}

func TestFSMApply(t *testing.T) {
	f := NewFSM()
	ch := f.Changed()
	res := f.Apply(logOf(t, 7, Command{Type: CmdJoin, Node: "n1"}))
	r, ok := res.(Result)
	if !ok || r.Err != nil || r.Gen != 1 {
		t.Fatalf("Apply = %#v", res)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed after Apply")
	}
	if f.Index() != 7 {
		t.Fatalf("Index = %d, want 7", f.Index())
	}
	res = f.Apply(logOf(t, 8, *put(testHier("web", "n1"))))
	if r := res.(Result); !r.Changed {
		t.Fatalf("put = %+v", r)
	}
	f.View(func(s *State) {
		if s.Assignments["web"] == nil || s.Nodes["n1"].Gen != 1 || s.Index != 8 {
			t.Fatalf("state %+v", s)
		}
	})
	// Copy is independent of the FSM.
	c := f.Copy()
	c.Nodes["n1"].Gen = 99
	f.View(func(s *State) {
		if s.Nodes["n1"].Gen != 1 {
			t.Fatal("Copy aliases the FSM state")
		}
	})
}

type memSink struct {
	bytes.Buffer
	closed, cancelled bool
	failWrite         bool
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.failWrite {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string     { return "mem" }
func (s *memSink) Cancel() error  { s.cancelled = true; return nil }
func (s *memSink) Close() error   { s.closed = true; return nil }
func (s *memSink) String() string { return s.Buffer.String() }

var _ raft.SnapshotSink = (*memSink)(nil)

// snapshotBytes is f's snapshot as raft would persist it.
func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func richState(t *testing.T) *FSM {
	t.Helper()
	f := NewFSM()
	cmds := []Command{
		{Type: CmdJoin, Node: "n1", Version: "1.0"},
		{Type: CmdJoin, Node: "n2"},
		*put(testHier("web", "n1", "n2"), testHier("db", "n2", "n1")),
		{Type: CmdAssign, Hierarchy: "web", Node: "n1", Gen: 1, Epoch: 1, Time: t0},
		{Type: CmdReport, Node: "n1", Hierarchy: "web", Report: &HierarchyReport{Epoch: 2, State: "online", Resources: map[string]string{"r": "online"}, At: t0}},
		{Type: CmdAssign, Hierarchy: "db", Node: "n2", Gen: 1, Epoch: 1, MarkFailed: true, Time: t0},
		{Type: CmdAssign, Hierarchy: "db", Node: "n1", Gen: 1, Epoch: 2, MarkFailed: true, Time: t0},
		{Type: CmdRevoke, Node: "n2", Gen: 1},
		{Type: CmdLeaving, Node: "n1", Leaving: true},
	}
	for i, c := range cmds {
		if r := f.Apply(logOf(t, uint64(i+1), c)).(Result); r.Err != nil {
			t.Fatalf("command %d: %v", i, r.Err)
		}
	}
	return f
}

func TestSnapshotRestore(t *testing.T) {
	f := richState(t)
	want := f.Copy()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the snapshot do not leak into it.
	f.Apply(logOf(t, 100, Command{Type: CmdJoin, Node: "n3"}))

	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}

	g := NewFSM()
	ch := g.Changed()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Restore did not wake watchers")
	}
	got := g.Copy()
	if !reflect.DeepEqual(got, want) {
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		t.Fatalf("restored state differs:\n got %s\nwant %s", gb, wb)
	}
	if got.Index != 9 || got.Nodes["n3"] != nil {
		t.Fatalf("restored state has index %d, n3 %v", got.Index, got.Nodes["n3"])
	}
	if a := got.Assignments["db"]; !reflect.DeepEqual(a.Failed, []string{"n2"}) || a.Node != "n1" {
		t.Fatalf("restored db %+v", a)
	}
	// The restored FSM keeps working.
	if r := g.Apply(logOf(t, 10, Command{Type: CmdJoin, Node: "n2"})).(Result); r.Gen != 2 {
		t.Fatalf("apply after restore = %+v", r)
	}

	// An empty object restores to a usable empty state.
	h := NewFSM()
	if err := h.Restore(io.NopCloser(bytes.NewReader([]byte(`{}`)))); err != nil {
		t.Fatal(err)
	}
	if r := h.Apply(logOf(t, 1, *put(testHier("x", "n1")))).(Result); r.Err != nil || !r.Changed {
		t.Fatalf("apply after empty restore = %+v", r)
	}
	if r := h.Apply(logOf(t, 2, Command{Type: CmdJoin, Node: "n1"})).(Result); r.Gen != 1 {
		t.Fatalf("join after empty restore = %+v", r)
	}
	// Garbage is an error and leaves the state alone.
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte("garbage")))); err == nil {
		t.Fatal("Restore accepted garbage")
	}
	if g.Index() != 10 {
		t.Fatalf("failed Restore replaced the state (index %d)", g.Index())
	}
	// A failing sink is cancelled.
	bad := &memSink{failWrite: true}
	if err := snap.Persist(bad); err == nil || !bad.cancelled {
		t.Fatalf("Persist to failing sink = %v, cancelled=%v", err, bad.cancelled)
	}
}

func TestCloneIsDeep(t *testing.T) {
	s := richState(t).Copy()
	orig, _ := json.Marshal(s)
	c := s.Clone()
	if !reflect.DeepEqual(c, s) {
		t.Fatal("Clone differs from the original")
	}
	c.Assignments["web"].Node = "zz"
	c.Assignments["db"].Failed[0] = "zz"
	c.Assignments["db"].Failed = append(c.Assignments["db"].Failed, "yy")
	c.Nodes["n1"].Reports["web"] = HierarchyReport{State: "zz"}
	c.Nodes["n1"].Gen = 42
	h := c.Hierarchies["web"]
	h.Nodes[0] = "zz"
	*h.Resources[0].LocalRecovery = 77
	h.Resources[0].DependsOn = append(h.Resources[0].DependsOn, "zz")
	c.Hierarchies["web"] = h
	delete(c.Assignments, "db")
	c.Nodes["n9"] = &NodeState{Name: "n9"}
	c.Index = 1000
	after, _ := json.Marshal(s)
	if !bytes.Equal(orig, after) {
		t.Fatalf("mutating the clone changed the original:\n%s\n%s", orig, after)
	}
}

// A move to the node that already owns the hierarchy is not a move: the
// owner must not take it out of service and back.
func TestApplyRequestMoveToOwner(t *testing.T) {
	s := NewState()
	mustApply(t, s, put(testHier("web", "n1", "n2")))
	mustApply(t, s, &Command{Type: CmdAssign, Hierarchy: "web", Node: "n1", Gen: 1, Epoch: 1})
	r := mustApply(t, s, &Command{Type: CmdRequestMove, Hierarchy: "web", To: "n1", ClearFailed: true})
	if a := s.Assignments["web"]; r.Changed || a.MoveTo != "" || a.Epoch != 2 {
		t.Fatalf("move to owner changed the assignment: %+v, %+v", r, a)
	}
	// Pending move elsewhere, then back to the owner: the move is cancelled.
	mustApply(t, s, &Command{Type: CmdRequestMove, Hierarchy: "web", To: "n2"})
	r = mustApply(t, s, &Command{Type: CmdRequestMove, Hierarchy: "web", To: "n1"})
	if a := s.Assignments["web"]; !r.Changed || a.MoveTo != "" || a.Node != "n1" || a.Epoch != 4 {
		t.Fatalf("move back to owner: %+v, %+v", r, a)
	}
	// Clearing the owner's failure mark is a change.
	s.Assignments["web"].Failed = []string{"n1"}
	r = mustApply(t, s, &Command{Type: CmdRequestMove, Hierarchy: "web", To: "n1", ClearFailed: true})
	if a := s.Assignments["web"]; !r.Changed || len(a.Failed) != 0 || a.MoveTo != "" {
		t.Fatalf("clear failure mark on owner: %+v, %+v", r, a)
	}
}

// apply applies a command given in the legacy form, the way a node reads
// an entry lifeboat 0.1 wrote.
func apply(s *State, c *Command) Result {
	cmd, err := FromLegacy(*c)
	if err != nil {
		return Result{Err: err}
	}
	return cmd.apply(s, c.Time)
}

// From feature level 2, a failure mark records when it was made (the
// entry's time); marks from before get the time the level was reached;
// ExpireMark removes only the mark it names; clearing the marks clears
// their times.
func TestFailureMarkTimes(t *testing.T) {
	s := NewState()
	mustApply(t, s, put(testHier("web", "n1", "n2", "n3")))
	assign := func(node string, epoch uint64, mark bool, at time.Time) {
		t.Helper()
		if r := (Assign{Hierarchy: "web", Node: node, Gen: 1, Epoch: epoch, MarkFailed: mark}).apply(s, at); r.Err != nil || !r.Changed {
			t.Fatalf("assign to %s: %+v", node, r)
		}
	}
	a := s.Assignments["web"]
	assign("n1", 1, false, t0)
	assign("n2", 2, true, t0.Add(time.Minute)) // n1 marked at level 1: no time
	if !a.FailedOn("n1") || a.FailedAt != nil {
		t.Fatalf("level 1: failed %v at %v; want n1 marked without a time (0.1 records none)", a.Failed, a.FailedAt)
	}
	lvl := t0.Add(2 * time.Minute)
	if r := (SetLevel{Level: LevelTyped}).apply(s, lvl); !r.Changed {
		t.Fatal("set-level did not change the state")
	}
	if got := a.FailedAt["n1"]; !got.Equal(lvl) {
		t.Fatalf("n1's mark from before level 2 dated %v, want %v", got, lvl)
	}
	marked := t0.Add(3 * time.Minute)
	assign("n3", 3, true, marked) // n2 marked at level 2
	if got := a.FailedAt["n2"]; !got.Equal(marked) {
		t.Fatalf("n2's mark dated %v, want %v", got, marked)
	}
	// A stale expiry (another time) changes nothing.
	if r := (ExpireMark{Hierarchy: "web", Node: "n2", MarkedAt: marked.Add(-time.Second)}).apply(s, t0); r.Changed || !a.FailedOn("n2") {
		t.Fatalf("stale expiry removed the mark: %+v, failed %v", r, a.Failed)
	}
	if r := (ExpireMark{Hierarchy: "web", Node: "n2", MarkedAt: marked}).apply(s, t0); !r.Changed || a.FailedOn("n2") || !a.FailedOn("n1") {
		t.Fatalf("expiry of n2: %+v, failed %v at %v", r, a.Failed, a.FailedAt)
	}
	if _, ok := a.FailedAt["n2"]; ok {
		t.Fatal("n2's mark time kept after it expired")
	}
	if r := (ExpireMark{Hierarchy: "nope", Node: "n2", MarkedAt: marked}).apply(s, t0); r.Changed || r.Err != nil {
		t.Fatalf("expiry on an unknown hierarchy: %+v", r)
	}
	if r := (SetOnline{Hierarchy: "web", Online: true, ClearFailed: true}).apply(s, t0); r.Err != nil || a.Failed != nil || a.FailedAt != nil {
		t.Fatalf("start cleared failed %v at %v", a.Failed, a.FailedAt)
	}
}

// migration_threshold: a node is marked only at its Nth failure; each
// failure (and each release of an online hierarchy by a fence) is an
// automatic failover in the history, which a start clears; ExpireMark
// forgets an unmarked node's count too.
func TestFailureCountsAndFailovers(t *testing.T) {
	s := NewState()
	h := testHier("web", "n1", "n2", "n3")
	h.MigrationThreshold = 2
	mustApply(t, s, put(h))
	a := s.Assignments["web"]
	(SetLevel{Level: LevelTyped}).apply(s, t0)
	epoch := a.Epoch
	move := func(to string, mark bool, at time.Time) {
		t.Helper()
		if r := (Assign{Hierarchy: "web", Node: to, Gen: 1, Epoch: epoch, MarkFailed: mark}).apply(s, at); r.Err != nil || !r.Changed {
			t.Fatalf("assign to %s: %+v", to, r)
		}
		epoch = a.Epoch
	}
	a.Online = true
	move("n1", false, t0)
	move("n2", true, t0.Add(time.Minute)) // n1's first failure
	if a.FailedOn("n1") || a.Failures["n1"] != 1 || len(a.Failovers) != 1 {
		t.Fatalf("after n1's first failure: failed %v, failures %v, failovers %v", a.Failed, a.Failures, a.Failovers)
	}
	move("n1", true, t0.Add(2*time.Minute)) // n2's first failure
	move("n3", true, t0.Add(3*time.Minute)) // n1's second: marked
	if !a.FailedOn("n1") || a.FailedOn("n2") || a.Failures["n1"] != 2 || len(a.Failovers) != 3 {
		t.Fatalf("after n1's second failure: failed %v, failures %v, failovers %v", a.Failed, a.Failures, a.Failovers)
	}
	// A fence releases n3's online hierarchy: one more failover.
	(Join{Node: "n3", Level: LevelTyped}).apply(s, t0)
	(Release{Node: "n3", Gen: 1}).apply(s, t0.Add(4*time.Minute))
	if a.Node != "" || len(a.Failovers) != 4 {
		t.Fatalf("after the release: node %q, failovers %v", a.Node, a.Failovers)
	}
	// n2's count (no mark) expires.
	if r := (ExpireMark{Hierarchy: "web", Node: "n2", MarkedAt: t0.Add(2 * time.Minute)}).apply(s, t0); !r.Changed || a.Failures["n2"] != 0 || !a.FailedOn("n1") {
		t.Fatalf("expiry of n2's count: %+v, failures %v, failed %v", r, a.Failures, a.Failed)
	}
	if r := (SetOnline{Hierarchy: "web", Online: true, ClearFailed: true}).apply(s, t0); r.Err != nil || a.Failed != nil || a.Failures != nil || a.Failovers != nil {
		t.Fatalf("start left failed %v, failures %v, failovers %v", a.Failed, a.Failures, a.Failovers)
	}
}

// A fence's release of a hierarchy with confirm_failover leaves it
// waiting; a decision with nothing waiting is refused; block stops it;
// a start clears the wait.
func TestConfirmFailoverApply(t *testing.T) {
	s := NewState()
	h := testHier("db", "n1", "n2")
	h.ConfirmFailover = true
	mustApply(t, s, put(h))
	(SetLevel{Level: LevelTyped}).apply(s, t0)
	a := s.Assignments["db"]
	a.Online = true
	if r := (ConfirmFailover{Hierarchy: "db", Proceed: true}).apply(s, t0); !errors.Is(r.Err, ErrNothingToConfirm) {
		t.Fatalf("decision with nothing waiting: %+v", r)
	}
	(Assign{Hierarchy: "db", Node: "n1", Gen: 1, Epoch: a.Epoch}).apply(s, t0)
	(Release{Node: "n1", Gen: 1}).apply(s, t0.Add(time.Second))
	if !a.ConfirmSince.Equal(t0.Add(time.Second)) || a.Node != "" {
		t.Fatalf("after the release: confirm since %v, node %q", a.ConfirmSince, a.Node)
	}
	if r := (ConfirmFailover{Hierarchy: "db", Proceed: false, Reason: "blocked"}).apply(s, t0); r.Err != nil || a.Online || !a.ConfirmSince.IsZero() {
		t.Fatalf("block: %+v, online %v, since %v", r, a.Online, a.ConfirmSince)
	}
	a.ConfirmSince = t0
	(SetOnline{Hierarchy: "db", Online: true, ClearFailed: true}).apply(s, t0)
	if !a.ConfirmSince.IsZero() {
		t.Fatal("start left the failover waiting")
	}
}

// Maintenance off adopts the hierarchies it covered where their checks
// found them running whole, at that node's current lease generation; one
// found running nowhere keeps its owner at its current generation.
func TestMaintenanceAdopts(t *testing.T) {
	s := NewState()
	mustApply(t, s, put(testHier("db", "n1", "n2"), testHier("web", "n1", "n2"), testHier("app", "n2", "n1")))
	(SetLevel{Level: LevelTyped}).apply(s, t0)
	for _, n := range []string{"n1", "n2"} {
		(Join{Node: n, Level: LevelTyped}).apply(s, t0)
	}
	for _, h := range []string{"db", "web", "app"} {
		a := s.Assignments[h]
		a.Online = true
		(Assign{Hierarchy: h, Node: "n1", Gen: s.Nodes["n1"].Gen, Epoch: a.Epoch}).apply(s, t0)
	}
	if r := (SetMaintenance{Scope: ScopeCluster, On: true, By: "root", Reason: "patch"}).apply(s, t0); !r.Changed || s.Maintenance == nil || s.Maintenance.Reason != "patch" {
		t.Fatalf("on: %+v %+v", r, s.Maintenance)
	}
	if r := (SetMaintenance{Scope: ScopeCluster, On: true}).apply(s, t0); !errors.Is(r.Err, ErrNoChange) {
		t.Fatalf("on twice: %+v", r)
	}
	if why := s.MaintenanceOf("db", "n2"); why == "" {
		t.Fatal("db managed under cluster maintenance")
	}
	// Under maintenance: n1's agent restarts (a new generation); db runs
	// on n1, web was moved by hand to n2, app runs nowhere.
	(Join{Node: "n1", Level: LevelTyped}).apply(s, t0)
	gen1, gen2 := s.Nodes["n1"].Gen, s.Nodes["n2"].Gen
	running := map[string]string{"r": "online"}
	stopped := map[string]string{"r": "offline"}
	rep := func(node, h string, res map[string]string) {
		(Report{Node: node, Hierarchy: h, Report: HierarchyReport{Epoch: s.Assignments[h].Epoch, State: state.StateUnmanaged, Resources: res}}).apply(s, t0)
	}
	rep("n1", "db", running)
	rep("n2", "db", stopped)
	rep("n1", "web", stopped)
	rep("n2", "web", running)
	rep("n1", "app", stopped)
	rep("n2", "app", map[string]string{"r": "online", "s": "offline"}) // not whole
	epochs := map[string]uint64{}
	for h, a := range s.Assignments {
		epochs[h] = a.Epoch
	}
	if r := (SetMaintenance{Scope: ScopeCluster, On: false}).apply(s, t0.Add(time.Minute)); !r.Changed || s.Maintenance != nil {
		t.Fatalf("off: %+v", r)
	}
	for h, want := range map[string]struct {
		node string
		gen  uint64
	}{"db": {"n1", gen1}, "web": {"n2", gen2}, "app": {"n1", gen1}} {
		a := s.Assignments[h]
		if a.Node != want.node || a.Gen != want.gen || a.Epoch != epochs[h]+1 {
			t.Errorf("%s after maintenance: on %s gen %d epoch %d (%s), want %s gen %d epoch %d", h, a.Node, a.Gen, a.Epoch, a.Reason, want.node, want.gen, epochs[h]+1)
		}
	}
}

// Node and hierarchy maintenance cover what they name; a hierarchy that
// stays covered by another maintenance is not adopted yet; standby
// toggles once.
func TestMaintenanceScopes(t *testing.T) {
	s := NewState()
	mustApply(t, s, put(testHier("db", "n1", "n2"), testHier("web", "n2", "n1")))
	(SetLevel{Level: LevelTyped}).apply(s, t0)
	(Join{Node: "n1", Level: LevelTyped}).apply(s, t0)
	(Join{Node: "n2", Level: LevelTyped}).apply(s, t0)
	db, web := s.Assignments["db"], s.Assignments["web"]
	db.Online, web.Online = true, true
	(Assign{Hierarchy: "db", Node: "n1", Gen: s.Nodes["n1"].Gen, Epoch: db.Epoch}).apply(s, t0)
	(Assign{Hierarchy: "web", Node: "n2", Gen: s.Nodes["n2"].Gen, Epoch: web.Epoch}).apply(s, t0)
	(SetMaintenance{Scope: ScopeNode, Name: "n1", On: true}).apply(s, t0)
	if s.MaintenanceOf("db", "") == "" || s.MaintenanceOf("web", "") != "" || s.MaintenanceOf("web", "n1") == "" {
		t.Fatalf("node maintenance: db %q web %q web on n1 %q", s.MaintenanceOf("db", ""), s.MaintenanceOf("web", ""), s.MaintenanceOf("web", "n1"))
	}
	(SetMaintenance{Scope: ScopeHierarchy, Name: "db", On: true}).apply(s, t0)
	e := db.Epoch
	(SetMaintenance{Scope: ScopeNode, Name: "n1", On: false}).apply(s, t0)
	if db.Epoch != e || s.MaintenanceOf("db", "") == "" {
		t.Fatalf("db adopted while still in hierarchy maintenance: epoch %d -> %d", e, db.Epoch)
	}
	(SetMaintenance{Scope: ScopeHierarchy, Name: "db", On: false}).apply(s, t0)
	if db.Epoch != e+1 || s.MaintenanceOf("db", "") != "" {
		t.Fatalf("db not handed back: epoch %d -> %d", e, db.Epoch)
	}
	if r := (SetMaintenance{Scope: ScopeHierarchy, Name: "nope", On: true}).apply(s, t0); r.Err == nil {
		t.Fatal("maintenance of an unknown hierarchy accepted")
	}
	if r := (SetStandby{Node: "n2", On: true, Reason: "patch"}).apply(s, t0); !r.Changed || s.Nodes["n2"].Standby == nil {
		t.Fatalf("standby: %+v", r)
	}
	if r := (SetStandby{Node: "n2", On: true}).apply(s, t0); !errors.Is(r.Err, ErrNoChange) {
		t.Fatalf("standby twice: %+v", r)
	}
	if r := (SetStandby{Node: "n2", On: false}).apply(s, t0); !r.Changed || s.Nodes["n2"].Standby != nil {
		t.Fatalf("unstandby: %+v", r)
	}
}

// A node's confirm-failover makes a failover away from it wait, as the
// hierarchy's own setting does: a failed report's assign and a fenced
// node's release both leave the hierarchy awaiting confirmation.
func TestNodeConfirmFailover(t *testing.T) {
	s := NewState()
	mustApply(t, s, put(testHier("db", "n1", "n2"), testHier("web", "n2", "n1")))
	(SetLevel{Level: LevelTyped}).apply(s, t0)
	(Join{Node: "n1", Level: LevelTyped}).apply(s, t0)
	(Join{Node: "n2", Level: LevelTyped}).apply(s, t0)
	db, web := s.Assignments["db"], s.Assignments["web"]
	db.Online, web.Online = true, true
	(Assign{Hierarchy: "db", Node: "n1", Gen: 1, Epoch: db.Epoch}).apply(s, t0)
	(Assign{Hierarchy: "web", Node: "n2", Gen: 1, Epoch: web.Epoch}).apply(s, t0)
	if r := (SetConfirmFailover{Node: "n1", On: true, By: "root"}).apply(s, t0); !r.Changed || !s.ConfirmsFailover("db", "n1") || s.ConfirmsFailover("web", "n2") {
		t.Fatalf("on: %+v", r)
	}
	// db fails on n1: off it, awaiting confirmation.
	(Assign{Hierarchy: "db", Epoch: db.Epoch, MarkFailed: true}).apply(s, t0.Add(time.Second))
	if db.Node != "" || !db.ConfirmSince.Equal(t0.Add(time.Second)) {
		t.Fatalf("db after its failure on n1: node %q, confirm since %v", db.Node, db.ConfirmSince)
	}
	// n2 (no confirm-failover) is fenced: web fails over at once.
	(Release{Node: "n2", Gen: 1}).apply(s, t0)
	if !web.ConfirmSince.IsZero() {
		t.Fatal("web waits for a confirmation though neither it nor n2 asks for one")
	}
	if r := (SetConfirmFailover{Node: "n1", On: false}).apply(s, t0); !r.Changed || s.ConfirmsFailover("db", "n1") {
		t.Fatalf("off: %+v", r)
	}
}

// Loops that wake on a timer and ask again for the change channel (the
// leader's placement, the agent's desired state: several times a second
// on an idle node) get one shared channel: the waiters do not pile up
// until the next change, which on an idle cluster may be hours away.
func TestChangeChannelsDoNotPileUp(t *testing.T) {
	f := NewFSM()
	l := NewLeases(LeaseConfig{FSM: f})
	for range 1000 {
		f.Changed()
		l.Changed()
		l.Freshened()
	}
	if len(f.waiters) != 1 || len(l.waiters) != 1 || len(l.fresh) != 1 {
		t.Errorf("after 1000 asks: %d FSM, %d lease, %d freshened waiters; want 1 each", len(f.waiters), len(l.waiters), len(l.fresh))
	}
	c := f.Changed()
	f.mu.Lock()
	ws := f.waiters
	f.waiters = nil
	f.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
	select {
	case <-c:
	default:
		t.Error("the shared channel was not closed at the change")
	}
	if f.Changed() == c {
		t.Error("after a change, Changed returned the closed channel")
	}
}
