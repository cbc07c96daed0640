package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// everyKind has one command of each registered kind, with fields set.
func everyKind() []Cmd {
	return []Cmd{
		PutHierarchies{Hierarchies: []spec.Hierarchy{testHier("web", "n1", "n2")}},
		Delete{Hierarchy: "web"},
		Purge{Hierarchy: "web", Epoch: 4},
		SetOnline{Hierarchy: "web", Online: true, ClearFailed: true, Reason: "start requested"},
		Assign{Hierarchy: "web", Node: "n1", Gen: 2, Epoch: 3, MarkFailed: true, Reason: "failover"},
		RequestMove{Hierarchy: "web", To: "n2", Epoch: 5, Force: true, ClearFailed: true, Reason: "switchover"},
		Report{Node: "n1", Hierarchy: "web", Report: HierarchyReport{Epoch: 3, State: "online", Resources: map[string]string{"r": "online"}, At: t0}},
		Revoke{Node: "n1", Gen: 2, Reason: "lease expired"},
		Release{Node: "n1", Gen: 2, Reason: "fenced"},
		Join{Node: "n1", Version: "0.2.0", Level: 2, WatchdogMS: 1000},
		Leaving{Node: "n1", Leaving: true},
		SetReadiness{Node: "n2", Readiness: map[string]Readiness{"web": {Ready: false, Missing: []string{"ec2:ReplaceRoute"}, At: t0}}},
		SetFindings{Node: "n2", Findings: map[string]int{"warn": 1}},
		SetLevel{Level: 2},
		ExpireMark{Hierarchy: "web", Node: "n2", MarkedAt: t0.Add(-time.Hour)},
		ConfirmFailover{Hierarchy: "web", Proceed: true, Reason: "confirmed"},
		SetMaintenance{Scope: ScopeNode, Name: "n2", On: true, By: "root on n1 (local socket)", Reason: "patching"},
		SetStandby{Node: "n1", On: true, By: "API token", Reason: "drain"},
		SetConfirmFailover{Node: "n1", On: true, By: "API token", Reason: "a human decides"},
		Restore{Hierarchies: []spec.Hierarchy{testHier("web", "n1", "n2")}, Online: map[string]bool{"web": false}, Prune: true, Reason: "restored from backup"},
		SetMembers{Members: []state.Member{{Name: "n1", Raft: "10.0.0.1:7101", Gossip: "10.0.0.1:7102", API: "10.0.0.1:7103"}}, Added: "n1", By: "root on n1 (local socket)"},
		Batch{Cmds: []Cmd{Assign{Hierarchy: "a", Node: "n1", Gen: 1, Epoch: 1}, Report{Node: "n1", Hierarchy: "a", Report: HierarchyReport{Epoch: 2, State: "online", At: t0}}}},
	}
}

func TestEveryKindRegistered(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range everyKind() {
		if _, ok := kinds[c.Kind()]; !ok {
			t.Errorf("kind %q not registered", c.Kind())
		}
		seen[c.Kind()] = true
	}
	for k := range kinds {
		if !seen[k] {
			t.Errorf("kind %q has no case in everyKind", k)
		}
	}
}

func TestTypedRoundTrip(t *testing.T) {
	for _, c := range everyKind() {
		b, err := Encode(c, t0, LevelTyped)
		if err != nil {
			t.Fatalf("encode %s: %v", c.Kind(), err)
		}
		if b[0] != typedMagic {
			t.Fatalf("%s at LevelTyped is not typed: %q", c.Kind(), b)
		}
		got, at, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %s: %v", c.Kind(), err)
		}
		if !at.Equal(t0) || !reflect.DeepEqual(got, c) {
			t.Fatalf("%s round trip:\n got %#v at %v\nwant %#v", c.Kind(), got, at, c)
		}
		// Forwarded between agents the same way.
		w, err := EncodeWire(c, t0, LevelTyped)
		if err != nil {
			t.Fatal(err)
		}
		if got, _, err := DecodeWire(w); err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("%s wire round trip: %#v, %v", c.Kind(), got, err)
		}
	}
}

// The legacy form is what lifeboat 0.1 reads: below LevelTyped every
// command it knows is written as its union Command, so an old voter
// applies exactly what the new ones do.
func TestLegacyFormBelowTypedLevel(t *testing.T) {
	for _, c := range everyKind() {
		b, err := Encode(c, t0, LevelLegacy)
		k := kinds[c.Kind()]
		if k.level > LevelLegacy && c.Kind() != (SetLevel{}).Kind() {
			if err == nil {
				t.Fatalf("%s encoded at LevelLegacy, but needs level %d", c.Kind(), k.level)
			}
			continue
		}
		if err != nil {
			t.Fatalf("encode %s: %v", c.Kind(), err)
		}
		if c.Kind() == (SetLevel{}).Kind() {
			// Only written once every voter reads typed entries.
			if b[0] != typedMagic {
				t.Fatal("set-level not typed")
			}
			continue
		}
		// What 0.1 does with the bytes: decode into its Command.
		var old Command
		if err := json.Unmarshal(b, &old); err != nil || old.Type != c.Kind() {
			t.Fatalf("%s: a 0.1 node reads %q as %+v, %v", c.Kind(), b, old, err)
		}
		got, at, err := Decode(b)
		if err != nil || !at.Equal(t0) || !reflect.DeepEqual(got, c) {
			t.Fatalf("%s legacy round trip:\n got %#v, %v\nwant %#v", c.Kind(), got, err, c)
		}
	}
}

// Entries written by lifeboat 0.1, byte for byte as it wrote them.
func TestDecodesEntriesOf01(t *testing.T) {
	s := NewState()
	for i, line := range []string{
		`{"type":"join","node":"n1","version":"0.1.0-dev","time":"2024-05-01T12:00:00Z"}`,
		`{"type":"put-hierarchies","hierarchies":[{"name":"web","nodes":["n1","n2"],"resources":[{"name":"r","type":"app"}]}],"time":"2024-05-01T12:00:00Z"}`,
		`{"type":"assign","hierarchy":"web","node":"n1","gen":1,"epoch":1,"reason":"initial placement","time":"2024-05-01T12:00:01Z"}`,
		`{"type":"report","hierarchy":"web","node":"n1","report":{"epoch":2,"state":"online","at":"2024-05-01T12:00:02Z"},"time":"2024-05-01T12:00:02Z"}`,
		`{"type":"readiness","node":"n2","readiness":{"web":{"ready":true,"at":"2024-05-01T12:00:02Z"}},"time":"2024-05-01T12:00:02Z"}`,
	} {
		c, at, err := Decode([]byte(line))
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if r := c.apply(s, at); r.Err != nil {
			t.Fatalf("entry %d: %v", i, r.Err)
		}
	}
	a := s.Assignments["web"]
	if a.Node != "n1" || a.Gen != 1 || a.Epoch != 2 || a.Reason != "initial placement" {
		t.Fatalf("assignment %+v", a)
	}
	if r, ok := s.Report("n1", "web", 2); !ok || r.State != "online" {
		t.Fatalf("report %+v %v", r, ok)
	}
	if !s.Nodes["n2"].Readiness["web"].Ready || s.Nodes["n1"].Version != "0.1.0-dev" || s.Nodes["n1"].Level != LevelLegacy {
		t.Fatalf("nodes %+v %+v", s.Nodes["n1"], s.Nodes["n2"])
	}
}

func TestWireAcceptsLegacyFromOlderAgents(t *testing.T) {
	c, _, err := DecodeWire([]byte(`{"type":"report","hierarchy":"web","node":"n1","report":{"epoch":2,"state":"online","at":"2024-05-01T12:00:02Z"},"time":"2024-05-01T12:00:02Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := c.(Report); !ok || r.Node != "n1" || r.Report.State != "online" {
		t.Fatalf("got %#v", c)
	}
	// Below LevelTyped a new agent forwards the legacy form: an old
	// leader decodes it.
	w, err := EncodeWire(Revoke{Node: "n1", Gen: 3}, t0, LevelLegacy)
	if err != nil {
		t.Fatal(err)
	}
	var old Command
	if err := json.Unmarshal(w, &old); err != nil || old.Type != CmdRevoke || old.Gen != 3 {
		t.Fatalf("legacy wire %s: %+v %v", w, old, err)
	}
	// 0.1's leader decodes forwarded commands with unknown fields
	// refused: the join must carry only what it knows.
	w, err = EncodeWire(Join{Node: "n1", Version: "0.2.0", Level: 2}, t0, LevelLegacy)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(w), "level") {
		t.Fatalf("legacy wire join carries the level: %s", w)
	}
}

func typedLog(t *testing.T, idx uint64, e envelope) *raft.Log {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: append([]byte{typedMagic}, b...)}
}

func mustLog(t *testing.T, idx uint64, c Cmd, level int) *raft.Log {
	t.Helper()
	b, err := Encode(c, t0, level)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: b}
}

// A command this binary does not know stops the state machine: nothing
// after it is applied, snapshots are refused, and the halt is reported.
func TestUnknownCommandHalts(t *testing.T) {
	f := NewFSM()
	f.Apply(mustLog(t, 1, Join{Node: "n1"}, LevelTyped))
	r := f.Apply(typedLog(t, 2, envelope{Kind: "frobnicate", V: 1, Time: t0, Body: json.RawMessage(`{}`)})).(Result)
	if !errors.Is(r.Err, ErrHalted) {
		t.Fatalf("unknown command result = %+v", r)
	}
	h := f.Halted()
	if h == nil || h.Index != 2 || !strings.Contains(h.Err, `"frobnicate"`) || !strings.Contains(h.String(), "newer lifeboat") {
		t.Fatalf("halt = %+v", h)
	}
	// Nothing after it applies.
	r = f.Apply(mustLog(t, 3, Join{Node: "n1"}, LevelTyped)).(Result)
	if !errors.Is(r.Err, ErrHalted) {
		t.Fatalf("after halt = %+v", r)
	}
	f.View(func(s *State) {
		if s.Nodes["n1"].Gen != 1 || s.Index != 1 {
			t.Fatalf("state moved after the halt: gen %d index %d", s.Nodes["n1"].Gen, s.Index)
		}
	})
	if _, err := f.Snapshot(); !errors.Is(err, ErrHalted) {
		t.Fatalf("snapshot while halted: %v", err)
	}

	// A newer schema of a known kind halts too.
	g := NewFSM()
	if r := g.Apply(typedLog(t, 1, envelope{Kind: "assign", V: 99, Time: t0, Body: json.RawMessage(`{}`)})).(Result); !errors.Is(r.Err, ErrHalted) {
		t.Fatalf("newer assign = %+v", r)
	}
	// So does an entry that does not decode.
	g = NewFSM()
	if r := g.Apply(&raft.Log{Index: 1, Data: []byte("{not json")}).(Result); !errors.Is(r.Err, ErrHalted) || g.Halted() == nil {
		t.Fatalf("undecodable = %+v", r)
	}
}

func TestIgnorableUnknownSkipped(t *testing.T) {
	f := NewFSM()
	r := f.Apply(typedLog(t, 5, envelope{Kind: "telemetry", V: 1, Ignorable: true, Time: t0, Body: json.RawMessage(`{}`)})).(Result)
	if r.Err != nil || f.Halted() != nil || f.Index() != 5 {
		t.Fatalf("ignorable: %+v, halt %v, index %d", r, f.Halted(), f.Index())
	}
	// Inside a batch too: the rest of the batch applies.
	inner, _ := toEnvelope(Join{Node: "n1"}, t0)
	body, _ := json.Marshal(batchBody{Cmds: []envelope{{Kind: "telemetry", V: 1, Ignorable: true, Body: json.RawMessage(`{}`)}, inner}})
	r = f.Apply(typedLog(t, 6, envelope{Kind: "batch", V: 1, Time: t0, Body: body})).(Result)
	if r.Err != nil || len(r.Results) != 1 || r.Results[0].Gen != 1 {
		t.Fatalf("batch with an ignorable = %+v", r)
	}
	// Findings are ignorable by declaration.
	if !kinds[SetFindings{}.Kind()].ignorable || kinds[Assign{}.Kind()].ignorable {
		t.Fatal("ignorable flags")
	}
}

func TestBatchAppliesInOrder(t *testing.T) {
	s := NewState()
	ApplyCmd(s, PutHierarchies{Hierarchies: []spec.Hierarchy{testHier("a", "n1"), testHier("b", "n1")}}, t0)
	r := ApplyCmd(s, Batch{Cmds: []Cmd{
		Assign{Hierarchy: "a", Node: "n1", Gen: 1, Epoch: 1},
		Assign{Hierarchy: "b", Node: "n1", Gen: 1, Epoch: 7}, // stale epoch: no change
		Assign{Hierarchy: "a", Node: "n2", Gen: 1, Epoch: 2}, // sees the first
		Delete{Hierarchy: "nope"},
	}}, t0)
	if !r.Changed || len(r.Results) != 4 {
		t.Fatalf("batch = %+v", r)
	}
	if !r.Results[0].Changed || r.Results[1].Changed || !r.Results[2].Changed || r.Results[3].Err == nil {
		t.Fatalf("results = %+v", r.Results)
	}
	if s.Assignments["a"].Node != "n2" || s.Assignments["b"].Node != "" {
		t.Fatalf("a %+v b %+v", s.Assignments["a"], s.Assignments["b"])
	}
}

func TestFeatureLevel(t *testing.T) {
	s := NewState()
	if s.FeatureLevel() != LevelLegacy {
		t.Fatalf("new state level %d", s.FeatureLevel())
	}
	// Below LevelTyped, a join with another version keeps what 0.1 kept.
	ApplyCmd(s, Join{Node: "n1", Version: "0.1.0"}, t0)
	ApplyCmd(s, SetReadiness{Node: "n1", Readiness: map[string]Readiness{"web": {Ready: true}}}, t0)
	ApplyCmd(s, Join{Node: "n1", Version: "0.2.0", Level: 2}, t0)
	if n := s.Nodes["n1"]; n.Unproven || !n.Readiness["web"].Ready || n.Level != 2 {
		t.Fatalf("legacy-level join changed readiness: %+v", n)
	}

	if r := ApplyCmd(s, SetLevel{Level: 2}, t0); !r.Changed || s.FeatureLevel() != 2 {
		t.Fatalf("set level = %+v, level %d", r, s.FeatureLevel())
	}
	if r := ApplyCmd(s, SetLevel{Level: 1}, t0); r.Changed || s.FeatureLevel() != 2 {
		t.Fatalf("level fell: %+v, %d", r, s.FeatureLevel())
	}
	if r := ApplyCmd(s, SetLevel{Level: MaxLevel + 1}, t0); r.Err == nil {
		t.Fatal("a level beyond this binary was accepted")
	}

	// From LevelTyped on, a node that changes version must prove its
	// readiness again; its report clears the mark.
	ApplyCmd(s, Join{Node: "n1", Version: "0.3.0", Level: 2}, t0)
	if n := s.Nodes["n1"]; !n.Unproven || n.Readiness != nil {
		t.Fatalf("join with a new version: %+v", n)
	}
	ApplyCmd(s, SetReadiness{Node: "n1", Readiness: map[string]Readiness{"web": {Ready: true}}}, t0)
	if s.Nodes["n1"].Unproven {
		t.Fatal("readiness did not clear Unproven")
	}
	// The same version again is not a change.
	ApplyCmd(s, Join{Node: "n1", Version: "0.3.0", Level: 2}, t0)
	if s.Nodes["n1"].Unproven {
		t.Fatal("a restart on the same version made the node unproven")
	}

	// A node's first join is not a change of version.
	ApplyCmd(s, Join{Node: "n9", Version: "0.3.0", Level: 2}, t0)
	if s.Nodes["n9"].Unproven {
		t.Fatal("a first join made the node unproven")
	}

	// A binary below the cluster's level is refused, with the reason.
	gen := s.Nodes["n1"].Gen
	r := ApplyCmd(s, Join{Node: "n1", Version: "0.1.0-dev"}, t0)
	var tooOld ErrTooOld
	if !errors.As(r.Err, &tooOld) || r.Changed || s.Nodes["n1"].Gen != gen {
		t.Fatalf("old join = %+v (gen %d)", r, s.Nodes["n1"].Gen)
	}
	for _, want := range []string{"0.1.0-dev", "feature level 1", "cluster is at feature level 2", "downgrade"} {
		if !strings.Contains(r.Err.Error(), want) {
			t.Errorf("refusal %q does not say %q", r.Err, want)
		}
	}
}

// Snapshots at LevelTyped carry a header that lifeboat 0.1 fails on (it
// decodes bare JSON), so an old binary on an upgraded data directory
// refuses to start instead of replaying entries it cannot read.
func TestSnapshotForm(t *testing.T) {
	persist := func(f *FSM) []byte { return snapshotBytes(t, f) }
	f := NewFSM()
	f.Apply(mustLog(t, 1, Join{Node: "n1", Version: "0.2.0", Level: 2}, LevelLegacy))
	legacy := persist(f)
	if legacy[0] != '{' {
		t.Fatalf("snapshot below LevelTyped is not bare JSON: %q", legacy[:20])
	}
	f.Apply(mustLog(t, 2, SetLevel{Level: 2}, LevelLegacy))
	typed := persist(f)
	if !strings.HasPrefix(string(typed), stateHeader+"2 ") {
		t.Fatalf("typed snapshot header: %q", typed[:40])
	}
	// What 0.1's Restore does with it.
	if err := json.NewDecoder(bytes.NewReader(typed)).Decode(NewState()); err == nil {
		t.Fatal("a 0.1 binary would read the typed snapshot")
	}
	for _, b := range [][]byte{legacy, typed} {
		g := NewFSM()
		if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
			t.Fatal(err)
		}
		if g.Copy().Nodes["n1"].Gen != 1 {
			t.Fatal("restored state lost n1")
		}
	}
	if g := NewFSM(); g.Restore(io.NopCloser(bytes.NewReader(typed))) != nil || g.Level() != 2 {
		t.Fatalf("restored level %d", g.Level())
	}
	// A snapshot of a newer format is refused with the reason.
	newer := append([]byte(stateHeader+"9 (future)\n"), typed[bytes.IndexByte(typed, '\n')+1:]...)
	_, err := readState(bufio.NewReader(bytes.NewReader(newer)))
	if err == nil || !strings.Contains(err.Error(), "newer lifeboat") {
		t.Fatalf("newer snapshot: %v", err)
	}
}
