package placement

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// ready is a node that can take any hierarchy.
func ready(name string, gen uint64) NodeView {
	return NodeView{Name: name, Alive: true, LeaseFresh: true, Ready: true, Gen: gen}
}

func views(vs ...NodeView) map[string]NodeView {
	m := map[string]NodeView{}
	for _, v := range vs {
		m[v.Name] = v
	}
	return m
}

func with(v NodeView, f func(*NodeView)) NodeView {
	f(&v)
	return v
}

func hier(name, switchback string, nodes ...string) spec.Hierarchy {
	return spec.Hierarchy{Name: name, Nodes: nodes, Switchback: switchback,
		Resources: []spec.Resource{{Name: "r", Type: "app"}}}
}

// world builds a state.State.
type world struct {
	s *state.State
}

func newWorld() *world { return &world{s: state.New()} }

func (w *world) hier(h spec.Hierarchy, a state.Assignment) *world {
	a.Hierarchy = h.Name
	w.s.Hierarchies[h.Name] = h
	w.s.Assignments[h.Name] = &a
	return w
}

func (w *world) report(node, h string, epoch uint64, st, err string) *world {
	n := w.s.Nodes[node]
	if n == nil {
		n = &state.NodeState{Name: node, Reports: map[string]state.HierarchyReport{}}
		w.s.Nodes[node] = n
	}
	n.Reports[h] = state.HierarchyReport{Epoch: epoch, State: st, Error: err}
	return w
}

func stripReasons(as []Action) []Action {
	if len(as) == 0 {
		return nil
	}
	out := make([]Action, len(as))
	for i, a := range as {
		a.Reason = ""
		out[i] = a
	}
	return out
}

// testNow is the leader's clock in the tests.
var testNow = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

const (
	intel = spec.SwitchbackIntelligent
	auto  = spec.SwitchbackAutomatic
)

func TestDecide(t *testing.T) {
	h3 := hier("web", intel, "n1", "n2", "n3")
	h3auto := hier("web", auto, "n1", "n2", "n3")
	all := views(ready("n1", 1), ready("n2", 2), ready("n3", 3))

	tests := []struct {
		name  string
		w     *world
		nodes map[string]NodeView
		want  []Action
	}{
		{
			name:  "new hierarchy goes to the highest-priority node",
			w:     newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: all,
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n1", Gen: 1, Epoch: 1}},
		},
		{
			name: "new hierarchy skips witness",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Witness = true }),
				ready("n2", 2), ready("n3", 3)),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n2", Gen: 2, Epoch: 1}},
		},
		{
			name: "new hierarchy skips dead node",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Alive = false }),
				ready("n2", 2), ready("n3", 3)),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n2", Gen: 2, Epoch: 1}},
		},
		{
			name: "new hierarchy skips generation 0",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Gen = 0 }),
				ready("n2", 2), ready("n3", 3)),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n2", Gen: 2, Epoch: 1}},
		},
		{
			name: "new hierarchy skips revoked",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Revoked = true }),
				ready("n2", 2), ready("n3", 3)),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n2", Gen: 2, Epoch: 1}},
		},
		{
			name: "new hierarchy skips leaving",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Leaving = true }),
				ready("n2", 2), ready("n3", 3)),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n2", Gen: 2, Epoch: 1}},
		},
		{
			name: "new hierarchy skips node without fresh lease",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.LeaseFresh = false }),
				ready("n2", 2), ready("n3", 3)),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n2", Gen: 2, Epoch: 1}},
		},
		{
			name: "new hierarchy skips not ready",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Ready = false }),
				ready("n2", 2), ready("n3", 3)),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n2", Gen: 2, Epoch: 1}},
		},
		{
			name:  "new hierarchy skips node it failed on",
			w:     newWorld().hier(h3, state.Assignment{Epoch: 4, Online: true, Failed: []string{"n1", "n2"}}),
			nodes: all,
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n3", Gen: 3, Epoch: 4}},
		},
		{
			name:  "new hierarchy skips nodes outside its list and unknown nodes",
			w:     newWorld().hier(hier("web", intel, "ghost", "n3"), state.Assignment{Epoch: 1, Online: true}),
			nodes: all,
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n3", Gen: 3, Epoch: 1}},
		},
		{
			name: "no READY node: placed on a NOT READY one rather than left down",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Ready = false }),
				with(ready("n2", 2), func(v *NodeView) { v.Alive = false })),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n1", Gen: 1, Epoch: 1}},
		},
		{
			name: "new hierarchy with no candidate stays unassigned",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 1, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Ready = false; v.LeaseFresh = false }),
				with(ready("n2", 2), func(v *NodeView) { v.Alive = false })),
			want: nil,
		},
		{
			name:  "unassigned and stopped stays put",
			w:     newWorld().hier(h3, state.Assignment{Epoch: 2, Online: false}),
			nodes: all,
			want:  nil,
		},
		{
			name:  "unassigned with MoveTo goes to MoveTo",
			w:     newWorld().hier(h3, state.Assignment{Epoch: 5, Online: true, MoveTo: "n3"}),
			nodes: all,
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n3", Gen: 3, Epoch: 5}},
		},
		{
			name: "unassigned with MoveTo that cannot take it goes to the best candidate",
			w:    newWorld().hier(h3, state.Assignment{Epoch: 5, Online: true, MoveTo: "n3"}),
			nodes: views(ready("n1", 1), ready("n2", 2),
				with(ready("n3", 3), func(v *NodeView) { v.Ready = false })),
			want: []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n1", Gen: 1, Epoch: 5}},
		},
		{
			name: "owner alive and healthy: no action",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}).
				report("n1", "web", 2, "online", ""),
			nodes: all,
			want:  nil,
		},
		{
			name: "intelligent switchback keeps it on the lower-priority node",
			w: newWorld().hier(h3, state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true}).
				report("n2", "web", 3, "online", ""),
			nodes: all,
			want:  nil,
		},
		{
			name: "automatic switchback moves to the preferred node once online",
			w: newWorld().hier(h3auto, state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true}).
				report("n2", "web", 3, "online", ""),
			nodes: all,
			want:  []Action{{Kind: ActMove, Hierarchy: "web", To: "n1", Epoch: 3}},
		},
		{
			name:  "automatic switchback waits until the owner reports online",
			w:     newWorld().hier(h3auto, state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true}),
			nodes: all,
			want:  nil,
		},
		{
			name: "automatic switchback ignores a report at an older epoch",
			w: newWorld().hier(h3auto, state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true}).
				report("n2", "web", 2, "online", ""),
			nodes: all,
			want:  nil,
		},
		{
			name: "automatic switchback while restoring: no move",
			w: newWorld().hier(h3auto, state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true}).
				report("n2", "web", 3, "restoring", ""),
			nodes: all,
			want:  nil,
		},
		{
			name: "automatic switchback needs a ready higher-priority node",
			w: newWorld().hier(h3auto, state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true}).
				report("n2", "web", 3, "online", ""),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Ready = false }), ready("n2", 2), ready("n3", 3)),
			want:  nil,
		},
		{
			name: "automatic switchback never moves to a lower-priority node",
			w: newWorld().hier(h3auto, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}).
				report("n1", "web", 3, "online", ""),
			nodes: all,
			want:  nil,
		},
		{
			name: "owner not lease-fresh is fenced",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}).
				report("n1", "web", 2, "online", ""),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.LeaseFresh = false }), ready("n2", 2), ready("n3", 3)),
			want:  []Action{{Kind: ActFence, Hierarchy: "web", Node: "n1", Gen: 1}},
		},
		{
			name: "owner not alive is fenced",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}).
				report("n1", "web", 2, "online", ""),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Alive = false }), ready("n2", 2), ready("n3", 3)),
			want:  []Action{{Kind: ActFence, Hierarchy: "web", Node: "n1", Gen: 1}},
		},
		{
			name:  "owner restarted (generation mismatch) is fenced at the old generation",
			w:     newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}),
			nodes: views(ready("n1", 7), ready("n2", 2), ready("n3", 3)),
			want:  []Action{{Kind: ActFence, Hierarchy: "web", Node: "n1", Gen: 1}},
		},
		{
			name:  "revoked owner is fenced",
			w:     newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Revoked = true }), ready("n2", 2), ready("n3", 3)),
			want:  []Action{{Kind: ActFence, Hierarchy: "web", Node: "n1", Gen: 1}},
		},
		{
			name:  "unknown owner is fenced",
			w:     newWorld().hier(h3, state.Assignment{Node: "n9", Gen: 4, Epoch: 2, Online: true}),
			nodes: all,
			want:  []Action{{Kind: ActFence, Hierarchy: "web", Node: "n9", Gen: 4}},
		},
		{
			name:  "stopped hierarchy whose owner died is still fenced",
			w:     newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: false}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Alive = false }), ready("n2", 2)),
			want:  []Action{{Kind: ActFence, Hierarchy: "web", Node: "n1", Gen: 1}},
		},
		{
			name: "one fence per node generation across hierarchies",
			w: newWorld().
				hier(hier("a", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}).
				hier(hier("b", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 1, Epoch: 9, Online: true}).
				hier(hier("c", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 2, Epoch: 3, Online: true}).
				hier(hier("d", intel, "n2", "n1"), state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true}).
				hier(hier("e", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 2, Epoch: 3, Online: true}),
			nodes: views(with(ready("n1", 3), func(v *NodeView) { v.Alive = false }), ready("n2", 2)),
			want: []Action{
				{Kind: ActFence, Hierarchy: "a", Node: "n1", Gen: 1},
				{Kind: ActFence, Hierarchy: "c", Node: "n1", Gen: 2},
			},
		},
		{
			name: "owner reports failed: assign to next candidate and mark failed",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}).
				report("n1", "web", 2, "failed", "disk gone"),
			nodes: all,
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n2", Gen: 2, Epoch: 2, MarkFailed: true, From: "n1"}},
		},
		{
			name: "owner reports failed: skips nodes it already failed on",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true, Failed: []string{"n2"}}).
				report("n1", "web", 2, "failed", "disk gone"),
			nodes: all,
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n3", Gen: 3, Epoch: 2, MarkFailed: true, From: "n1"}},
		},
		{
			name: "owner reports failed and no other node is ready: unassign",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}).
				report("n1", "web", 2, "failed", "disk gone"),
			nodes: views(ready("n1", 1), with(ready("n2", 2), func(v *NodeView) { v.Ready = false })),
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "", Epoch: 2, MarkFailed: true, From: "n1"}},
		},
		{
			name: "failure report at an older epoch is ignored",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}).
				report("n1", "web", 2, "failed", "old news"),
			nodes: all,
			want:  nil,
		},
		{
			name: "failure report by a node that is not the owner is ignored",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}).
				report("n2", "web", 3, "failed", "not mine"),
			nodes: all,
			want:  nil,
		},
		{
			name: "MoveTo waits for the owner to report offline",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true, MoveTo: "n3"}).
				report("n1", "web", 3, "removing", ""),
			nodes: all,
			want:  nil,
		},
		{
			name: "MoveTo with an offline report at an older epoch waits",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true, MoveTo: "n3"}).
				report("n1", "web", 2, "offline", ""),
			nodes: all,
			want:  nil,
		},
		{
			name: "MoveTo and owner offline: assign to MoveTo",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true, MoveTo: "n3"}).
				report("n1", "web", 3, "offline", ""),
			nodes: all,
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n3", Gen: 3, Epoch: 3}},
		},
		{
			name: "MoveTo cannot take it: fall back to the best candidate",
			w: newWorld().hier(h3, state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true, MoveTo: "n3"}).
				report("n2", "web", 3, "offline", ""),
			nodes: views(ready("n1", 1), ready("n2", 2), with(ready("n3", 3), func(v *NodeView) { v.Ready = false })),
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n1", Gen: 1, Epoch: 3}},
		},
		{
			name: "MoveTo unknown: fall back to the best candidate",
			w: newWorld().hier(h3, state.Assignment{Node: "n2", Gen: 2, Epoch: 3, Online: true, MoveTo: "n9"}).
				report("n2", "web", 3, "offline", ""),
			nodes: all,
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "n1", Gen: 1, Epoch: 3}},
		},
		{
			name: "MoveTo nobody can take it: unassign",
			w: newWorld().hier(hier("web", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true, MoveTo: "n2"}).
				report("n1", "web", 3, "offline", ""),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Ready = false }), with(ready("n2", 2), func(v *NodeView) { v.Ready = false })),
			want:  []Action{{Kind: ActAssign, Hierarchy: "web", Node: "", Epoch: 3}},
		},
		{
			name: "owner leaving: move to the best other node",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}).
				report("n1", "web", 3, "online", ""),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Leaving = true }), with(ready("n2", 2), func(v *NodeView) { v.Ready = false }), ready("n3", 3)),
			want:  []Action{{Kind: ActMove, Hierarchy: "web", To: "n3", Epoch: 3}},
		},
		{
			name:  "owner leaving with nowhere to go: no action",
			w:     newWorld().hier(hier("web", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Leaving = true }), with(ready("n2", 2), func(v *NodeView) { v.Alive = false })),
			want:  nil,
		},
		{
			name: "stopped hierarchy: nothing even if failed",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: false}).
				report("n1", "web", 3, "failed", "x"),
			nodes: all,
			want:  nil,
		},
		{
			name: "deleting with owner offline: purge",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 4, Deleting: true}).
				report("n1", "web", 4, "offline", ""),
			nodes: all,
			want:  []Action{{Kind: ActPurge, Hierarchy: "web", Epoch: 4}},
		},
		{
			name: "deleting with owner failed: purge",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 4, Deleting: true}).
				report("n1", "web", 4, "failed", "x"),
			nodes: all,
			want:  []Action{{Kind: ActPurge, Hierarchy: "web", Epoch: 4}},
		},
		{
			name: "deleting while owner still removing: wait",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 4, Deleting: true}).
				report("n1", "web", 4, "removing", ""),
			nodes: all,
			want:  nil,
		},
		{
			name: "deleting with an offline report at an older epoch: wait",
			w: newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 4, Deleting: true}).
				report("n1", "web", 3, "offline", ""),
			nodes: all,
			want:  nil,
		},
		{
			name:  "deleting and unassigned: purge",
			w:     newWorld().hier(h3, state.Assignment{Epoch: 4, Deleting: true}),
			nodes: all,
			want:  []Action{{Kind: ActPurge, Hierarchy: "web", Epoch: 4}},
		},
		{
			name:  "deleting with owner gone: fence first",
			w:     newWorld().hier(h3, state.Assignment{Node: "n1", Gen: 1, Epoch: 4, Deleting: true}),
			nodes: views(with(ready("n1", 1), func(v *NodeView) { v.Alive = false })),
			want:  []Action{{Kind: ActFence, Hierarchy: "web", Node: "n1", Gen: 1}},
		},
		{
			name: "hierarchies are visited in name order",
			w: newWorld().
				hier(hier("zeta", intel, "n2", "n1"), state.Assignment{Epoch: 1, Online: true}).
				hier(hier("alpha", intel, "n1", "n2"), state.Assignment{Epoch: 7, Online: true}).
				hier(hier("mid", intel, "n3"), state.Assignment{Epoch: 2, Online: true}),
			nodes: all,
			want: []Action{
				{Kind: ActAssign, Hierarchy: "alpha", Node: "n1", Gen: 1, Epoch: 7},
				{Kind: ActAssign, Hierarchy: "mid", Node: "n3", Gen: 3, Epoch: 2},
				{Kind: ActAssign, Hierarchy: "zeta", Node: "n2", Gen: 2, Epoch: 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.w.s.Clone()
			got := Decide(tt.w.s, tt.nodes, testNow)
			if !reflect.DeepEqual(stripReasons(got), tt.want) {
				t.Fatalf("Decide =\n  %+v\nwant\n  %+v", got, tt.want)
			}
			for _, a := range got {
				if a.Kind != ActPurge && a.Reason == "" {
					t.Errorf("action %+v has no reason", a)
				}
				if a.String() == "" {
					t.Errorf("action %+v has no string form", a)
				}
			}
			if !reflect.DeepEqual(before, tt.w.s) {
				t.Fatal("Decide modified the state")
			}
			// Deterministic.
			if again := Decide(tt.w.s, tt.nodes, testNow); !reflect.DeepEqual(again, got) {
				t.Fatalf("Decide not deterministic: %+v vs %+v", again, got)
			}
		})
	}
}

func TestDecideReasons(t *testing.T) {
	h := hier("web", intel, "n1", "n2")
	w := newWorld().hier(h, state.Assignment{Node: "n1", Gen: 1, Epoch: 2, Online: true}).
		report("n1", "web", 2, "failed", "disk gone")
	got := Decide(w.s, views(ready("n1", 1), ready("n2", 2)), testNow)
	if len(got) != 1 || !strings.Contains(got[0].Reason, "disk gone") || !strings.Contains(got[0].Reason, "n1") {
		t.Fatalf("Decide = %+v, want the failure reason", got)
	}
	if s := got[0].String(); !strings.Contains(s, "assign web") || !strings.Contains(s, `"n2"`) {
		t.Fatalf("String() = %q", s)
	}
	f := Action{Kind: ActFence, Node: "n1", Gen: 3, Reason: "x"}
	if s := f.String(); !strings.Contains(s, "fence n1") || !strings.Contains(s, "3") {
		t.Fatalf("String() = %q", s)
	}
}

func TestCandidate(t *testing.T) {
	h := hier("web", intel, "n1", "n2")
	failed := &state.Assignment{Failed: []string{"n1"}}
	tests := []struct {
		name string
		a    *state.Assignment
		n    NodeView
		ok   bool
		want bool
		why  string
	}{
		{"ready", nil, ready("n1", 1), true, true, ""},
		{"unknown", nil, NodeView{}, false, false, "unknown"},
		{"not listed", nil, ready("n3", 1), true, false, "node list"},
		{"witness", nil, with(ready("n1", 1), func(v *NodeView) { v.Witness = true }), true, false, "witness"},
		{"dead", nil, with(ready("n1", 1), func(v *NodeView) { v.Alive = false }), true, false, "alive"},
		{"gen 0", nil, ready("n1", 0), true, false, "fenced"},
		{"revoked", nil, with(ready("n1", 1), func(v *NodeView) { v.Revoked = true }), true, false, "fenced"},
		{"no lease", nil, with(ready("n1", 1), func(v *NodeView) { v.LeaseFresh = false }), true, false, "lease"},
		{"leaving", nil, with(ready("n1", 1), func(v *NodeView) { v.Leaving = true }), true, false, "shutting down"},
		{"not ready", nil, with(ready("n1", 1), func(v *NodeView) { v.Ready = false }), true, false, "READY"},
		{"failed there", failed, ready("n1", 1), true, false, "failed"},
		{"failed elsewhere", failed, ready("n2", 1), true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := Candidate(h, tt.a, tt.n, tt.ok)
			if got != tt.want || !strings.Contains(why, tt.why) || (got && why != "") {
				t.Fatalf("Candidate = %v %q, want %v %q", got, why, tt.want, tt.why)
			}
		})
	}
}

func TestChoose(t *testing.T) {
	h := hier("web", intel, "n3", "n1", "n2")
	nodes := views(ready("n1", 1), ready("n2", 2), ready("n3", 3))
	if c, ok := Choose(h, nil, nodes, ""); !ok || c.Name != "n3" {
		t.Fatalf("Choose = %v %v, want n3", c.Name, ok)
	}
	if c, ok := Choose(h, nil, nodes, "n3"); !ok || c.Name != "n1" {
		t.Fatalf("Choose except n3 = %v %v, want n1", c.Name, ok)
	}
	a := &state.Assignment{Failed: []string{"n1"}}
	if c, ok := Choose(h, a, nodes, "n3"); !ok || c.Name != "n2" {
		t.Fatalf("Choose except n3, failed on n1 = %v %v, want n2", c.Name, ok)
	}
	if c, ok := Choose(h, a, views(ready("n1", 1)), ""); ok {
		t.Fatalf("Choose = %v, want none", c)
	}
}

// A node that proved it cannot take a hierarchy over is skipped for that
// hierarchy only, in favour of a ready node of lower priority.
func TestNotReadySkippedPerHierarchy(t *testing.T) {
	s := state.New()
	for _, name := range []string{"a", "b"} {
		h := spec.Hierarchy{Name: name, Nodes: []string{"n1", "n2"}, Resources: []spec.Resource{{Name: "r", Type: "app"}}}
		h.Normalize()
		s.Hierarchies[name] = h
		s.Assignments[name] = &state.Assignment{Hierarchy: name, Online: true, Epoch: 1}
	}
	nodes := map[string]NodeView{
		"n1": {Name: "n1", Alive: true, LeaseFresh: true, Ready: true, Gen: 1, NotReady: map[string]string{"a": "lacks ec2:ReplaceRoute"}},
		"n2": {Name: "n2", Alive: true, LeaseFresh: true, Ready: true, Gen: 1},
	}
	got := map[string]string{}
	for _, act := range Decide(s, nodes, testNow) {
		got[act.Hierarchy] = act.Node
	}
	if got["a"] != "n2" || got["b"] != "n1" {
		t.Fatalf("placements = %v, want a on n2 (n1 NOT READY for a), b on n1", got)
	}
	ok, why := Candidate(s.Hierarchies["a"], s.Assignments["a"], nodes["n1"], true)
	if ok || why != "NOT READY: lacks ec2:ReplaceRoute" {
		t.Fatalf("Candidate = %v %q", ok, why)
	}
}

// Failure marks expire failure_timeout after they were made, from feature
// level 2 on; a mark made again since (another time) is not the one named.
func TestDecideExpiresMarks(t *testing.T) {
	h := hier("web", intel, "n1", "n2", "n3")
	h.FailureTimeout = spec.Duration(5 * time.Minute)
	marked := testNow.Add(-5 * time.Minute)
	nodes := views(ready("n1", 1), ready("n2", 1), ready("n3", 1))
	build := func(level int, at map[string]time.Time) *state.State {
		w := newWorld().hier(h, state.Assignment{Node: "n3", Gen: 1, Epoch: 4, Online: true, Failed: []string{"n1", "n2"}, FailedAt: at})
		w.report("n3", "web", 4, "online", "")
		w.s.Level = level
		return w.s
	}
	at := map[string]time.Time{"n1": marked, "n2": marked.Add(time.Second)}

	got := Decide(build(2, at), nodes, testNow)
	want := []Action{{Kind: ActExpire, Hierarchy: "web", Node: "n1", MarkedAt: marked}}
	if !reflect.DeepEqual(stripReasons(got), want) {
		t.Fatalf("at the timeout: %+v, want %+v", got, want)
	}
	if !strings.Contains(got[0].Reason, "failure_timeout 5m0s") {
		t.Errorf("reason %q does not name the timeout", got[0].Reason)
	}
	if got := Decide(build(2, at), nodes, testNow.Add(-time.Millisecond)); len(got) != 0 {
		t.Errorf("before the timeout: %+v, want nothing", got)
	}
	if got := Decide(build(1, at), nodes, testNow.Add(time.Hour)); len(got) != 0 {
		t.Errorf("at feature level 1 (a 0.1 voter may lead next): %+v, want nothing", got)
	}
	// The default timeout applies when the spec does not set one.
	h.FailureTimeout = 0
	if got := Decide(build(2, at), nodes, marked.Add(spec.DefaultFailureTimeout-time.Second)); len(got) != 0 {
		t.Errorf("before the default timeout: %+v", got)
	}
	if got := Decide(build(2, at), nodes, marked.Add(spec.DefaultFailureTimeout+time.Second)); len(got) != 2 {
		t.Errorf("after the default timeout: %+v, want both marks expired", got)
	}
}

// With every other node marked or down, the reason names each node's
// obstacle, and a mark says when it expires.
func TestExplain(t *testing.T) {
	h := hier("db", intel, "n1", "n2", "n3")
	h.FailureTimeout = spec.Duration(time.Minute)
	a := &state.Assignment{Hierarchy: "db", Online: true, Failed: []string{"n2"}, FailedAt: map[string]time.Time{"n2": testNow}}
	nodes := views(with(ready("n1", 1), func(v *NodeView) { v.Alive = false }), ready("n2", 1), with(ready("n3", 1), func(v *NodeView) { v.NotReady = map[string]string{"db": "missing ec2:ReplaceRoute"} }))
	got := Explain(h, a, nodes)
	for _, want := range []string{"n1: not alive", "n2: the hierarchy failed there (the mark expires at 2026-12-02T12:01:00Z)", "n3: NOT READY: missing ec2:ReplaceRoute"} {
		if !strings.Contains(got, want) {
			t.Errorf("Explain = %q, want it to contain %q", got, want)
		}
	}
}

// Anti-flap: with max_failovers set, the failover that would make one too
// many within failover_window stops the hierarchy instead, whether it
// failed (report) or its owner was fenced (released, unowned).
func TestDecideAntiFlap(t *testing.T) {
	h := hier("app", intel, "n1", "n2", "n3")
	h.MaxFailovers = 2
	h.FailoverWindow = spec.Duration(10 * time.Minute)
	nodes := views(ready("n1", 1), ready("n2", 1), ready("n3", 1))
	recent := func(n int) []time.Time {
		var ts []time.Time
		for i := range n {
			ts = append(ts, testNow.Add(-time.Duration(i+1)*time.Minute))
		}
		return ts
	}
	failed := func(level int, failovers []time.Time) *state.State {
		w := newWorld().hier(h, state.Assignment{Node: "n1", Gen: 1, Epoch: 7, Online: true, Failovers: failovers})
		w.report("n1", "app", 7, "failed", "boom")
		w.s.Level = level
		return w.s
	}
	if got := Decide(failed(2, recent(1)), nodes, testNow); len(got) != 1 || got[0].Kind != ActAssign || got[0].Node != "n2" {
		t.Fatalf("second failover within the window: %+v, want an assign to n2", got)
	}
	got := Decide(failed(2, recent(2)), nodes, testNow)
	if len(got) != 1 || got[0].Kind != ActStop || got[0].Epoch != 7 {
		t.Fatalf("third failover within the window: %+v, want a stop", got)
	}
	for _, want := range []string{"anti-flap", "2 failovers within 10m0s", "max_failovers 2", "lifeboat start app"} {
		if !strings.Contains(got[0].Reason, want) {
			t.Errorf("reason %q does not say %q", got[0].Reason, want)
		}
	}
	// Failovers older than the window do not count; level 1 has no limit.
	old := []time.Time{testNow.Add(-11 * time.Minute), testNow.Add(-12 * time.Minute), testNow.Add(-13 * time.Minute)}
	if got := Decide(failed(2, old), nodes, testNow); len(got) != 1 || got[0].Kind != ActAssign {
		t.Errorf("failovers outside the window: %+v, want an assign", got)
	}
	if got := Decide(failed(1, recent(5)), nodes, testNow); len(got) != 1 || got[0].Kind != ActAssign {
		t.Errorf("at feature level 1: %+v, want an assign (0.1 knows no limit)", got)
	}
	// Released by a fence: the release recorded the failover already.
	unowned := func(failovers []time.Time) *state.State {
		w := newWorld().hier(h, state.Assignment{Epoch: 9, Online: true, Failovers: failovers})
		w.s.Level = 2
		return w.s
	}
	if got := Decide(unowned(recent(2)), nodes, testNow); len(got) != 1 || got[0].Kind != ActAssign || got[0].Node != "n1" {
		t.Errorf("released after its second failover: %+v, want an assign to n1", got)
	}
	if got := Decide(unowned(recent(3)), nodes, testNow); len(got) != 1 || got[0].Kind != ActStop {
		t.Errorf("released after its third failover: %+v, want a stop", got)
	}
}

// confirm_failover: a failed owner is taken off without a new node; an
// unowned hierarchy waiting for confirmation stays put until
// confirm_timeout, then proceeds or stops as confirm_default says.
func TestDecideConfirmFailover(t *testing.T) {
	h := hier("db", intel, "n1", "n2")
	h.ConfirmFailover = true
	h.ConfirmTimeout = spec.Duration(time.Minute)
	nodes := views(ready("n1", 1), ready("n2", 1))
	w := newWorld().hier(h, state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true})
	w.report("n1", "db", 3, "failed", "boom")
	w.s.Level = 2
	got := Decide(w.s, nodes, testNow)
	if len(got) != 1 || got[0].Kind != ActAssign || got[0].Node != "" || !got[0].MarkFailed || !strings.Contains(got[0].Reason, "lifeboat failover confirm|block db") {
		t.Fatalf("failed with confirm_failover: %+v, want an assign to nobody, marking n1", got)
	}
	since := testNow.Add(-30 * time.Second)
	waiting := func(def string) *state.State {
		h.ConfirmDefault = def
		w := newWorld().hier(h, state.Assignment{Epoch: 4, Online: true, ConfirmSince: since})
		w.s.Level = 2
		return w.s
	}
	if got := Decide(waiting(""), nodes, testNow); len(got) != 0 {
		t.Fatalf("waiting, before confirm_timeout: %+v, want nothing", got)
	}
	later := since.Add(time.Minute)
	if got := Decide(waiting(""), nodes, later); len(got) != 1 || got[0].Kind != ActProceed {
		t.Fatalf("at confirm_timeout, default proceed: %+v", got)
	}
	if got := Decide(waiting(spec.ConfirmBlock), nodes, later); len(got) != 1 || got[0].Kind != ActStop || !strings.Contains(got[0].Reason, "confirm_default block") {
		t.Fatalf("at confirm_timeout, default block: %+v", got)
	}
}

// A new hierarchy waits briefly for a preferred node that has joined but
// not yet renewed its lease, instead of starting on a lower one where
// intelligent switchback would keep it; a failover never waits.
func TestDecideInitialGrace(t *testing.T) {
	h := hier("web", intel, "n1", "n2")
	joining := with(ready("n1", 1), func(v *NodeView) { v.LeaseFresh = false })
	nodes := views(joining, ready("n2", 1))
	created := func(epoch uint64, since time.Time) *state.State {
		return newWorld().hier(h, state.Assignment{Epoch: epoch, Online: true, Since: since}).s
	}
	if got := Decide(created(1, testNow.Add(-time.Second)), nodes, testNow); len(got) != 0 {
		t.Fatalf("new, n1 joining: %+v, want a wait", got)
	}
	if got := Decide(created(1, testNow.Add(-3*time.Second)), nodes, testNow); len(got) != 1 || got[0].Node != "n2" {
		t.Fatalf("new, n1 still joining after the grace: %+v, want n2", got)
	}
	if got := Decide(created(5, testNow), nodes, testNow); len(got) != 1 || got[0].Node != "n2" {
		t.Fatalf("after a failover (epoch 5): %+v, want n2 at once", got)
	}
	down := views(with(ready("n1", 1), func(v *NodeView) { v.Alive, v.LeaseFresh = false, false }), ready("n2", 1))
	if got := Decide(created(1, testNow), down, testNow); len(got) != 1 || got[0].Node != "n2" {
		t.Fatalf("new, n1 down: %+v, want n2 at once", got)
	}
}

// Maintenance: a hierarchy covered by the cluster's, its own or its
// owner's maintenance is neither fenced, failed over nor moved; a node in
// maintenance or standby takes nothing; a node in standby is drained.
func TestDecideMaintenanceAndStandby(t *testing.T) {
	dead := with(ready("n1", 1), func(v *NodeView) { v.Alive, v.LeaseFresh = false, false })
	owned := func() *world {
		return newWorld().hier(hier("web", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}).
			hier(hier("db", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 1, Epoch: 5, Online: true})
	}
	hold := &state.Hold{Since: testNow}

	// Baseline: a dead owner is fenced.
	if got := Decide(owned().s, views(dead, ready("n2", 1)), testNow); len(got) != 1 || got[0].Kind != ActFence {
		t.Fatalf("baseline: %v", got)
	}
	w := owned()
	w.s.Maintenance = hold
	if got := Decide(w.s, views(dead, ready("n2", 1)), testNow); len(got) != 0 {
		t.Fatalf("cluster maintenance: %v", got)
	}
	w = owned()
	w.s.Assignments["web"].Maintenance = hold
	w.s.Assignments["db"].Maintenance = hold
	if got := Decide(w.s, views(dead, ready("n2", 1)), testNow); len(got) != 0 {
		t.Fatalf("hierarchy maintenance: %v", got)
	}
	w = owned()
	w.s.Nodes["n1"] = &state.NodeState{Name: "n1", Maintenance: hold}
	if got := Decide(w.s, views(dead, ready("n2", 1)), testNow); len(got) != 0 {
		t.Fatalf("owner in maintenance: %v", got)
	}
	// Only web in maintenance: db's owner is still fenced.
	w = owned()
	w.s.Assignments["web"].Maintenance = hold
	if got := Decide(w.s, views(dead, ready("n2", 1)), testNow); len(got) != 1 || got[0].Kind != ActFence || got[0].Hierarchy != "db" {
		t.Fatalf("web in maintenance, db not: %v", got)
	}

	// A failed hierarchy does not go to a node in maintenance or standby.
	for _, mark := range []func(*NodeView){func(v *NodeView) { v.Maintenance = true }, func(v *NodeView) { v.Standby = true }} {
		w = newWorld().hier(hier("web", intel, "n1", "n2", "n3"), state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}).
			report("n1", "web", 3, "failed", "boom")
		got := Decide(w.s, views(ready("n1", 1), with(ready("n2", 1), mark), ready("n3", 1)), testNow)
		if len(got) != 1 || got[0].Node != "n3" {
			t.Fatalf("failover skipping n2: %v", got)
		}
	}

	// Standby drains: what n1 runs moves to the next ready node.
	w = newWorld().hier(hier("web", intel, "n1", "n2", "n3"), state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}).
		report("n1", "web", 3, "online", "")
	got := Decide(w.s, views(with(ready("n1", 1), func(v *NodeView) { v.Standby = true }), ready("n2", 1), ready("n3", 1)), testNow)
	if want := []Action{{Kind: ActMove, Hierarchy: "web", To: "n2", Epoch: 3}}; !reflect.DeepEqual(stripReasons(got), want) {
		t.Fatalf("standby: %v, want %v", got, want)
	}
	// ... unless n1 is also in maintenance.
	w.s.Nodes["n1"].Maintenance = hold
	if got := Decide(w.s, views(with(ready("n1", 1), func(v *NodeView) { v.Standby, v.Maintenance = true, true }), ready("n2", 1)), testNow); len(got) != 0 {
		t.Fatalf("standby under maintenance: %v", got)
	}
	// Candidate says why.
	if _, why := Candidate(hier("web", intel, "n1"), nil, with(ready("n1", 1), func(v *NodeView) { v.Standby = true }), true); !strings.Contains(why, "standby") {
		t.Fatalf("standby reason %q", why)
	}
}

// A failure on a node with confirm-failover takes the hierarchy off it
// and waits, as the hierarchy's own confirm_failover does.
func TestDecideNodeConfirmFailover(t *testing.T) {
	w := newWorld().hier(hier("web", intel, "n1", "n2"), state.Assignment{Node: "n1", Gen: 1, Epoch: 3, Online: true}).
		report("n1", "web", 3, "failed", "boom")
	w.s.Level = state.LevelTyped
	got := Decide(w.s, views(ready("n1", 1), ready("n2", 1)), testNow)
	if len(got) != 1 || got[0].Node != "n2" {
		t.Fatalf("without confirm-failover: %v", got)
	}
	w.s.Nodes["n1"].ConfirmFailover = &state.Hold{Since: testNow}
	got = Decide(w.s, views(ready("n1", 1), ready("n2", 1)), testNow)
	if len(got) != 1 || got[0].Kind != ActAssign || got[0].Node != "" || !got[0].MarkFailed || !strings.Contains(got[0].Reason, "lifeboat failover confirm") {
		t.Fatalf("with n1's confirm-failover: %v", got)
	}
}
