package cluster

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Restore brings the cluster's hierarchies and online wishes to what a
// backup holds, in one log entry: no node ever sees a hierarchy created
// but not yet stopped, or half of the backup. Specs that differ (or are
// new, or being deleted) are put as PutHierarchies puts them; each
// hierarchy's Online is set to its wish. With Prune, hierarchies the
// backup lacks are deleted as Delete deletes them; without, they stay.
// Owners, marks and everything per-run of the hierarchies that exist are
// kept. Feature level 2.
type Restore struct {
	Hierarchies []spec.Hierarchy `json:"hierarchies"`
	Online      map[string]bool  `json:"online"`
	Prune       bool             `json:"prune,omitempty"`
	Reason      string           `json:"reason,omitempty"`
}

// Kind implements Cmd.
func (Restore) Kind() string { return "restore" }

func (c Restore) apply(s *State, at time.Time) Result {
	// Refuse the whole entry, before any change, if it is inconsistent
	// (the agent checks this; every node refuses it the same way).
	names := map[string]bool{}
	for _, h := range c.Hierarchies {
		if names[h.Name] {
			return Result{Err: fmt.Errorf("restore: hierarchy %q is listed twice", h.Name)}
		}
		if _, ok := c.Online[h.Name]; !ok {
			return Result{Err: fmt.Errorf("restore: no online wish for hierarchy %q", h.Name)}
		}
		names[h.Name] = true
	}
	var put []spec.Hierarchy
	created := map[string]bool{}
	for _, h := range c.Hierarchies {
		a := s.Assignments[h.Name]
		old, ok := s.Hierarchies[h.Name]
		switch {
		case a == nil || !ok:
			created[h.Name] = true
			put = append(put, h)
		case a.Deleting || !sameSpec(old, h):
			put = append(put, h)
		}
	}
	changed := false
	if len(put) > 0 {
		PutHierarchies{Hierarchies: put}.apply(s, at)
		changed = true
	}
	for _, h := range c.Hierarchies {
		a := s.Assignments[h.Name]
		on := c.Online[h.Name]
		if a.Online == on {
			continue
		}
		a.Online = on
		changed = true
		if created[h.Name] {
			continue // created in this entry: its first epoch carries the wish
		}
		a.MoveTo = ""
		a.ConfirmSince = time.Time{}
		bump(a, at, c.Reason)
	}
	if c.Prune {
		var gone []string
		for name, a := range s.Assignments {
			if !names[name] && !a.Deleting {
				gone = append(gone, name)
			}
		}
		sort.Strings(gone)
		for _, name := range gone {
			a := s.Assignments[name]
			a.Deleting = true
			a.Online = false
			bump(a, at, "deleted by restore: not in the backup")
			changed = true
		}
	}
	return Result{Changed: changed}
}

// sameSpec compares specs as `lifeboat apply` does (their JSON).
func sameSpec(a, b spec.Hierarchy) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}
