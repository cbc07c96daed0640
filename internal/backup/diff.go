package backup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// Diff is what restoring a backup changes in a cluster.
type Diff struct {
	// Created: hierarchies in the backup the cluster does not have.
	Created []string `json:"created,omitempty"`
	// Updated: hierarchies whose spec differs, with the fields that do.
	Updated []Change `json:"updated,omitempty"`
	// Unchanged: the same spec in both.
	Unchanged []string `json:"unchanged,omitempty"`
	// Missing: hierarchies the cluster has and the backup lacks (kept,
	// or deleted with prune).
	Missing []string `json:"missing,omitempty"`
	// Wishes: online wishes that change (From is "" for a new hierarchy).
	Wishes []WishChange `json:"wishes,omitempty"`
	// Members: how the cluster's membership differs from the backup's,
	// in words. Restore does not change membership.
	Members []string `json:"members,omitempty"`
}

// Change is a hierarchy whose spec differs.
type Change struct {
	Hierarchy string `json:"hierarchy"`
	// Fields are the spec's top-level fields that differ (nodes,
	// resources, failure_timeout, ...).
	Fields []string `json:"fields"`
}

// WishChange is an online wish that changes.
type WishChange struct {
	Hierarchy string `json:"hierarchy"`
	From      string `json:"from,omitempty"`
	To        string `json:"to"`
}

// Changes reports whether restoring changes anything; prune counts the
// missing hierarchies, which it deletes.
func (d Diff) Changes(prune bool) bool {
	return len(d.Created) > 0 || len(d.Updated) > 0 || len(d.Wishes) > 0 || (prune && len(d.Missing) > 0)
}

// Compare sets the backup b against a cluster's state s and membership.
// A hierarchy being deleted counts as missing from the cluster.
func Compare(b *Body, s *state.State, members []Member) Diff {
	var d Diff
	inBackup := map[string]bool{}
	for _, h := range b.Hierarchies {
		inBackup[h.Name] = true
		a := s.Assignments[h.Name]
		old, ok := s.Hierarchies[h.Name]
		if !ok || a == nil || a.Deleting {
			d.Created = append(d.Created, h.Name)
			d.Wishes = append(d.Wishes, WishChange{Hierarchy: h.Name, To: b.Wishes[h.Name]})
			continue
		}
		if fields := specFields(old, h); len(fields) > 0 {
			d.Updated = append(d.Updated, Change{Hierarchy: h.Name, Fields: fields})
		} else {
			d.Unchanged = append(d.Unchanged, h.Name)
		}
		if from := wish(a.Online); from != b.Wishes[h.Name] {
			d.Wishes = append(d.Wishes, WishChange{Hierarchy: h.Name, From: from, To: b.Wishes[h.Name]})
		}
	}
	for _, name := range s.HierarchyNames() {
		if a := s.Assignments[name]; !inBackup[name] && a != nil && !a.Deleting {
			d.Missing = append(d.Missing, name)
		}
	}
	d.Members = compareMembers(b.Members, members)
	return d
}

// Equal reports whether two specs are the same as the cluster stores them
// (the comparison `lifeboat apply` makes).
func Equal(a, b spec.Hierarchy) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// specFields lists the top-level fields in which two specs differ.
func specFields(old, h spec.Hierarchy) []string {
	if Equal(old, h) {
		return nil
	}
	fields := func(h spec.Hierarchy) map[string]json.RawMessage {
		var m map[string]json.RawMessage
		b, _ := json.Marshal(h)
		_ = json.Unmarshal(b, &m)
		return m
	}
	a, b := fields(old), fields(h)
	var out []string
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func compareMembers(backup, cluster []Member) []string {
	var out []string
	byName := map[string]Member{}
	for _, m := range cluster {
		byName[m.Name] = m
	}
	seen := map[string]bool{}
	for _, m := range backup {
		seen[m.Name] = true
		c, ok := byName[m.Name]
		if !ok {
			out = append(out, fmt.Sprintf("node %s is in the backup but not in this cluster", m.Name))
			continue
		}
		if c.Witness != m.Witness {
			out = append(out, fmt.Sprintf("node %s: witness %v in the backup, %v here", m.Name, m.Witness, c.Witness))
		}
		for _, f := range [][3]string{{"raft", m.Raft, c.Raft}, {"gossip", m.Gossip, c.Gossip}, {"api", m.API, c.API}} {
			if f[1] != f[2] {
				out = append(out, fmt.Sprintf("node %s: %s address %s in the backup, %s here", m.Name, f[0], f[1], f[2]))
			}
		}
	}
	for _, m := range cluster {
		if !seen[m.Name] {
			out = append(out, fmt.Sprintf("node %s is in this cluster but not in the backup", m.Name))
		}
	}
	sort.Strings(out)
	return out
}
