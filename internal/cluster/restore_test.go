package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// A restore creates what is missing with its wish (a stopped hierarchy is
// never online, not even for one entry), updates what differs, stops or
// starts by the wish, keeps owners and leaves equal specs at their epoch.
func TestRestoreApply(t *testing.T) {
	s := NewState()
	web, db, old := testHier("web", "n1", "n2"), testHier("db", "n2", "n1"), testHier("old", "n1")
	(SetLevel{Level: LevelTyped}).apply(s, t0)
	mustApply(t, s, put(web, old))
	(Assign{Hierarchy: "web", Node: "n1", Gen: 4, Epoch: 1}).apply(s, t0)
	webEpoch := s.Assignments["web"].Epoch

	t1 := t0.Add(time.Minute)
	r := (Restore{Hierarchies: []spec.Hierarchy{web, db}, Online: map[string]bool{"web": true, "db": false}, Reason: "restored"}).apply(s, t1)
	if r.Err != nil || !r.Changed {
		t.Fatalf("restore: %+v", r)
	}
	if a := s.Assignments["db"]; a == nil || a.Online || a.Epoch != 1 || !a.Since.Equal(t1) {
		t.Fatalf("db: %+v, want created offline at epoch 1", a)
	}
	if a := s.Assignments["web"]; a.Epoch != webEpoch || a.Node != "n1" || !a.Online {
		t.Fatalf("web, unchanged in the backup, changed: %+v", a)
	}
	if a := s.Assignments["old"]; a.Deleting || !a.Online {
		t.Fatalf("old, not in the backup, without prune: %+v", a)
	}

	// The same restore again changes nothing.
	if r := (Restore{Hierarchies: []spec.Hierarchy{web, db}, Online: map[string]bool{"web": true, "db": false}}).apply(s, t1); r.Changed {
		t.Fatal("restoring the same backup twice changed the state")
	}

	// Another spec and another wish: a new epoch, the owner kept; prune
	// deletes what the backup lacks.
	web2 := testHier("web", "n2", "n1")
	r = (Restore{Hierarchies: []spec.Hierarchy{web2, db}, Online: map[string]bool{"web": false, "db": true}, Prune: true, Reason: "restored"}).apply(s, t1)
	if r.Err != nil || !r.Changed {
		t.Fatalf("second restore: %+v", r)
	}
	a := s.Assignments["web"]
	if a.Online || a.Node != "n1" || a.Epoch <= webEpoch || s.Hierarchies["web"].Nodes[0] != "n2" {
		t.Fatalf("web after the second restore: %+v, nodes %v", a, s.Hierarchies["web"].Nodes)
	}
	if !s.Assignments["db"].Online || s.Assignments["db"].Epoch != 2 {
		t.Fatalf("db after the second restore: %+v", s.Assignments["db"])
	}
	if a := s.Assignments["old"]; !a.Deleting || a.Online {
		t.Fatalf("old with prune: %+v", a)
	}

	// A hierarchy being deleted comes back.
	r = (Restore{Hierarchies: []spec.Hierarchy{old}, Online: map[string]bool{"old": false}}).apply(s, t1)
	if a := s.Assignments["old"]; r.Err != nil || a.Deleting || a.Online {
		t.Fatalf("old restored while being deleted: %+v, %+v", r, a)
	}
}

// An inconsistent restore is refused whole, with nothing applied.
func TestRestoreRefusedWhole(t *testing.T) {
	s := NewState()
	web := testHier("web", "n1")
	for name, c := range map[string]Restore{
		"no wish":   {Hierarchies: []spec.Hierarchy{testHier("db", "n1"), web}, Online: map[string]bool{"db": true}},
		"duplicate": {Hierarchies: []spec.Hierarchy{web, web}, Online: map[string]bool{"web": true}},
	} {
		r := c.apply(s, t0)
		if r.Err == nil || r.Changed || len(s.Hierarchies) != 0 || !strings.HasPrefix(r.Err.Error(), "restore:") {
			t.Fatalf("%s: %+v, state %v", name, r, s.Hierarchies)
		}
	}
}

// Restore needs feature level 2: an older voter would not know it.
func TestRestoreNeedsTypedLevel(t *testing.T) {
	c := Restore{Hierarchies: []spec.Hierarchy{testHier("web", "n1")}, Online: map[string]bool{"web": true}}
	if _, err := Encode(c, t0, LevelLegacy); err == nil || !strings.Contains(err.Error(), "feature level 2") {
		t.Fatalf("restore encoded at level 1: %v", err)
	}
}
