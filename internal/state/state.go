// Package state holds the types of the replicated cluster state: the
// hierarchies' specs, where each is assigned (node, lease generation,
// epoch), and what each node reported. The cluster package builds it from
// the raft log; placement reads it and decides. It is a leaf: it knows no
// raft, no network and no kit.
package state

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Assignment says where a hierarchy should be in service.
type Assignment struct {
	Hierarchy string `json:"hierarchy"`
	// Node is the owner; "" when unassigned.
	Node string `json:"node,omitempty"`
	// Gen is the owner's lease generation when it was assigned: the owner
	// holds the hierarchy only while its lease is of this generation.
	Gen uint64 `json:"gen,omitempty"`
	// Epoch rises with every change of the assignment.
	Epoch uint64 `json:"epoch"`
	// Online is the operator's wish (start/stop).
	Online bool `json:"online"`
	// MoveTo, when set, asks the owner to take the hierarchy out of service
	// so that it can be restored on MoveTo (a planned switchover).
	MoveTo string `json:"move_to,omitempty"`
	// MoveForce: the operator forced the move to a NOT READY node.
	MoveForce bool `json:"move_force,omitempty"`
	// Failed lists the nodes where the hierarchy failed; placement skips
	// them until the mark expires (FailedAt plus the hierarchy's
	// failure_timeout) or an operator starts or switches the hierarchy
	// over.
	Failed []string `json:"failed,omitempty"`
	// FailedAt is when the hierarchy last failed on each node (the
	// entry's time), marked or not, from feature level 2 on; a mark from
	// before carries the time the cluster reached level 2. The mark and
	// the count expire together, failure_timeout after it.
	FailedAt map[string]time.Time `json:"failed_at,omitempty"`
	// Failures counts the failures on each node since its count last
	// expired (feature level 2): a node is marked once it reaches the
	// hierarchy's migration_threshold.
	Failures map[string]int `json:"failures,omitempty"`
	// Failovers are the times of the automatic failovers within the
	// hierarchy's failover_window (feature level 2; anti-flap).
	Failovers []time.Time `json:"failovers,omitempty"`
	// ConfirmSince: an automatic failover has been waiting since then
	// for an operator's confirmation (confirm_failover; zero: none).
	ConfirmSince time.Time `json:"confirm_since,omitzero"`
	// Maintenance: the hierarchy is unmanaged (feature level 2): nothing
	// is started, stopped, recovered or failed over; checks still run.
	Maintenance *Hold `json:"maintenance,omitempty"`
	// Deleting: take out of service, then forget.
	Deleting bool   `json:"deleting,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Since is the leader's wall clock when the assignment last changed
	// (carried in the command, not read in Apply).
	Since time.Time `json:"since"`
}

// FailedOn reports whether the hierarchy failed on node.
func (a *Assignment) FailedOn(node string) bool {
	for _, n := range a.Failed {
		if n == node {
			return true
		}
	}
	return false
}

// MarkExpires is when the failure mark of node expires, given the
// hierarchy's failure timeout (zero time: no mark, or one without a time).
func (a *Assignment) MarkExpires(node string, timeout time.Duration) time.Time {
	if !a.FailedOn(node) {
		return time.Time{}
	}
	return a.FailureExpires(node, timeout)
}

// FailureExpires is when node's failure record (its mark, if any, and
// its count) expires (zero time: none with a time).
func (a *Assignment) FailureExpires(node string, timeout time.Duration) time.Time {
	t, ok := a.FailedAt[node]
	if !ok {
		return time.Time{}
	}
	return t.Add(timeout)
}

// RecentFailovers counts the automatic failovers after now - window.
func (a *Assignment) RecentFailovers(now time.Time, window time.Duration) int {
	n := 0
	for _, t := range a.Failovers {
		if t.After(now.Add(-window)) {
			n++
		}
	}
	return n
}

// Unmark removes node's failure mark.
func (a *Assignment) Unmark(node string) {
	var keep []string
	for _, n := range a.Failed {
		if n != node {
			keep = append(keep, n)
		}
	}
	a.Failed = keep
	delete(a.FailedAt, node)
	if len(a.FailedAt) == 0 {
		a.FailedAt = nil
	}
	delete(a.Failures, node)
	if len(a.Failures) == 0 {
		a.Failures = nil
	}
}

// HierarchyReport is a node's account of one hierarchy.
type HierarchyReport struct {
	Epoch     uint64            `json:"epoch"`
	State     string            `json:"state"`
	Resources map[string]string `json:"resources,omitempty"`
	Error     string            `json:"error,omitempty"`
	At        time.Time         `json:"at"`
}

// NodeState is what the cluster knows of a node.
type NodeState struct {
	Name string `json:"name"`
	// Gen is the node's current lease generation; a node starts a new one
	// when it joins and after it has been fenced.
	Gen     uint64 `json:"gen"`
	Revoked bool   `json:"revoked,omitempty"`
	// Leaving: the node is shutting down with the switchover strategy.
	Leaving bool                       `json:"leaving,omitempty"`
	Version string                     `json:"version,omitempty"`
	Reports map[string]HierarchyReport `json:"reports,omitempty"`
	// Readiness: per hierarchy, whether this node could take it over, as
	// it last proved.
	Readiness map[string]Readiness `json:"readiness,omitempty"`
	// ReadinessPace: how the node's readiness probes keep up (nil: a
	// version that does not say).
	ReadinessPace *ReadinessPace `json:"readiness_pace,omitempty"`
	// Findings counts the node's last doctor findings by severity.
	Findings map[string]int `json:"findings,omitempty"`
	// Level is the highest feature level the node's binary supports, as
	// it said when it last joined (0: not known).
	Level int `json:"level,omitempty"`
	// Unproven: the node joined with another version and has not yet
	// proven what it could take over; placement counts it as not ready.
	Unproven bool `json:"unproven,omitempty"`
	// WatchdogMS is the node's watchdog timeout (0: no watchdog): a
	// frozen node holding local addresses is reset that long after its
	// last feed, so the cluster waits for it before moving them.
	WatchdogMS int64 `json:"watchdog_ms,omitempty"`
	// Maintenance: lifeboat starts, stops, recovers and fails over
	// nothing on this node, and places nothing on it (feature level 2).
	Maintenance *Hold `json:"maintenance,omitempty"`
	// Standby: the node is drained; what it runs is switched over to the
	// next ready node and it takes nothing until unstandby (level 2).
	Standby *Hold `json:"standby,omitempty"`
	// ConfirmFailover: an automatic failover of what this node runs waits
	// for an operator's confirmation, as a hierarchy's confirm_failover
	// does, with that hierarchy's confirm_timeout and confirm_default
	// (level 2).
	ConfirmFailover *Hold `json:"confirm_failover,omitempty"`
}

// Hold records an operator's maintenance or standby: since when, who
// asked, and why.
type Hold struct {
	Since  time.Time `json:"since"`
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

// Readiness is a node's proof that it could (or could not) take over a
// hierarchy: the one record of it, kept here and served by the API
// (api.Readiness).
type Readiness struct {
	Ready   bool      `json:"ready"`
	Missing []string  `json:"missing,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// ReadinessPace is how a node's readiness probes keep up: its budget of
// AWS calls a minute and its readiness interval, and the period in which
// it lately proved every hierarchy again. Informational (status, doctor):
// placement never reads it.
type ReadinessPace struct {
	BudgetPerMinute int   `json:"budget_per_minute"`
	IntervalMS      int64 `json:"interval_ms"`
	// PeriodMS: the longest time between two proofs of one hierarchy
	// lately (0: not known yet).
	PeriodMS int64 `json:"period_ms,omitempty"`
	// CallsPerMinute: the AWS calls the probes made a minute lately.
	CallsPerMinute int `json:"calls_per_minute,omitempty"`
	// BudgetBound: the period is longer than the interval because the
	// probes waited for the budget.
	BudgetBound bool `json:"budget_bound,omitempty"`
}

// State is the whole replicated state.
type State struct {
	Hierarchies map[string]spec.Hierarchy `json:"hierarchies"`
	Assignments map[string]*Assignment    `json:"assignments"`
	Nodes       map[string]*NodeState     `json:"nodes"`
	// Index is the raft index of the last applied command.
	Index uint64 `json:"index"`
	// Level is the cluster's feature level (0 and 1: legacy). It only
	// rises.
	Level int `json:"level,omitempty"`
	// Maintenance: the whole cluster is in maintenance (feature level 2).
	Maintenance *Hold `json:"maintenance,omitempty"`
	// Members is the cluster's membership once an operator changed it at
	// run time (lifeboat node add|remove, feature level 2); empty until
	// then, when the agents' static cluster.nodes is the membership.
	Members []Member `json:"members,omitempty"`
	// MembersChanged records the last membership change.
	MembersChanged *Hold `json:"members_changed,omitempty"`
}

// Member is one node of the replicated membership: its addresses as the
// other nodes reach them.
type Member struct {
	Name    string `json:"name"`
	Witness bool   `json:"witness,omitempty"`
	Raft    string `json:"raft"`
	Gossip  string `json:"gossip"`
	API     string `json:"api"`
}

// LevelLegacy is the feature level of a state that records none: the
// level of lifeboat versions before feature levels.
const LevelLegacy = 1

// LevelTyped is the feature level of typed commands, batches and the
// behaviour that came with them (failure marks that expire, ...).
const LevelTyped = 2

// FeatureLevel is the cluster's feature level, at least LevelLegacy.
func (s *State) FeatureLevel() int { return max(s.Level, LevelLegacy) }

// New returns an empty state.
func New() *State {
	return &State{Hierarchies: map[string]spec.Hierarchy{}, Assignments: map[string]*Assignment{}, Nodes: map[string]*NodeState{}}
}

// Clone deep-copies the state (through JSON: the state is small and this
// keeps every nested map safe to hand out).
func (s *State) Clone() *State {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	c := New()
	if err := json.Unmarshal(b, c); err != nil {
		panic(err)
	}
	return c
}

// HierarchyNames returns the hierarchy names in order.
func (s *State) HierarchyNames() []string {
	var ns []string
	for n := range s.Hierarchies {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Report returns node's report on hierarchy h for epoch, if any.
func (s *State) Report(node, h string, epoch uint64) (HierarchyReport, bool) {
	n := s.Nodes[node]
	if n == nil {
		return HierarchyReport{}, false
	}
	r, ok := n.Reports[h]
	if !ok || r.Epoch != epoch {
		return HierarchyReport{}, false
	}
	return r, true
}

// StateUnmanaged is the state a node reports for a hierarchy under
// maintenance: its resources are checked, not acted on.
const StateUnmanaged = "unmanaged"

// MaintenanceOf says why hierarchy h is unmanaged on node (the cluster,
// the hierarchy or the node is in maintenance), or "" when it is managed
// there. node "" asks about the hierarchy wherever it is: the cluster or
// the hierarchy in maintenance, or its owner node.
func (s *State) MaintenanceOf(h, node string) string {
	if s.Maintenance != nil {
		return "the cluster is in maintenance"
	}
	a := s.Assignments[h]
	if a != nil && a.Maintenance != nil {
		return "hierarchy " + h + " is in maintenance"
	}
	if node == "" && a != nil {
		node = a.Node
	}
	if n := s.Nodes[node]; node != "" && n != nil && n.Maintenance != nil {
		return "node " + node + " is in maintenance"
	}
	return ""
}

// ConfirmsFailover reports whether an automatic failover of hierarchy h
// away from node from waits for an operator's confirmation: the
// hierarchy's confirm_failover or the node's (feature level 2).
func (s *State) ConfirmsFailover(h, from string) bool {
	if s.FeatureLevel() < LevelTyped {
		return false
	}
	if s.Hierarchies[h].ConfirmFailover {
		return true
	}
	n := s.Nodes[from]
	return from != "" && n != nil && n.ConfirmFailover != nil
}

// Running reports whether a report made under maintenance found every
// resource of the hierarchy up.
func (r HierarchyReport) Running() bool {
	if r.State != StateUnmanaged || len(r.Resources) == 0 {
		return false
	}
	for _, st := range r.Resources {
		if st != "online" {
			return false
		}
	}
	return true
}
