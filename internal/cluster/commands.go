package cluster

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// Cmd is one typed replicated change. Each kind is its own struct with a
// pure apply: no clock reads (the time comes with the log entry) and no I/O.
// A kind is registered in kinds with its schema version and the feature
// level the cluster must have reached before the leader may commit it.
type Cmd interface {
	// Kind is the type tag written to the log ("assign").
	Kind() string
	apply(s *State, at time.Time) Result
}

// Result is what Apply returns for a command.
type Result struct {
	Changed bool
	Err     error
	// Gen is the new generation after a join.
	Gen uint64
	// Results holds one result per command of a Batch, in order.
	Results []Result
}

// PutHierarchies creates or replaces hierarchy specs.
type PutHierarchies struct {
	Hierarchies []spec.Hierarchy `json:"hierarchies"`
}

// Delete asks for a hierarchy to be taken out of service and forgotten.
type Delete struct {
	Hierarchy string `json:"hierarchy"`
}

// Purge forgets a deleted hierarchy once it is out of service (compare and
// set on Epoch).
type Purge struct {
	Hierarchy string `json:"hierarchy"`
	Epoch     uint64 `json:"epoch"`
}

// SetOnline is the operator's start or stop of a hierarchy.
type SetOnline struct {
	Hierarchy string `json:"hierarchy"`
	Online    bool   `json:"online"`
	// ClearFailed empties the failed list (operator start).
	ClearFailed bool   `json:"clear_failed,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// Assign makes Node (at lease generation Gen) the owner of a hierarchy,
// compare and set on Epoch.
type Assign struct {
	Hierarchy string `json:"hierarchy"`
	Node      string `json:"node"`
	Gen       uint64 `json:"gen"`
	Epoch     uint64 `json:"epoch"`
	// MarkFailed adds the previous owner to the failed list.
	MarkFailed bool   `json:"mark_failed,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// RequestMove asks the owner to hand a hierarchy over to To (a planned
// switchover). Epoch 0 means unconditional (an operator's request).
type RequestMove struct {
	Hierarchy string `json:"hierarchy"`
	To        string `json:"to"`
	Epoch     uint64 `json:"epoch,omitempty"`
	// Force: a switchover to a NOT READY node.
	Force bool `json:"force,omitempty"`
	// ClearFailed removes To from the failed list and brings the
	// hierarchy online (operator switchover).
	ClearFailed bool   `json:"clear_failed,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// Report is a node's account of one hierarchy.
type Report struct {
	Node      string          `json:"node"`
	Hierarchy string          `json:"hierarchy"`
	Report    HierarchyReport `json:"report"`
}

// Revoke ends a node's lease generation (fencing).
type Revoke struct {
	Node   string `json:"node"`
	Gen    uint64 `json:"gen"`
	Reason string `json:"reason,omitempty"`
}

// Release unassigns every hierarchy a fenced node generation held.
type Release struct {
	Node   string `json:"node"`
	Gen    uint64 `json:"gen"`
	Reason string `json:"reason,omitempty"`
}

// Join starts a new lease generation for a node.
type Join struct {
	Node    string `json:"node"`
	Version string `json:"version,omitempty"`
	// Level is the highest feature level the node's binary supports
	// (LevelLegacy for a version that predates levels).
	Level int `json:"level,omitempty"`
	// WatchdogMS is the node's watchdog timeout (0: none).
	WatchdogMS int64 `json:"watchdog_ms,omitempty"`
}

// Leaving marks a node as shutting down with the switchover strategy.
type Leaving struct {
	Node    string `json:"node"`
	Leaving bool   `json:"leaving"`
}

// SetReadiness replaces a node's readiness map (and how its probes keep
// up, which the legacy form leaves out).
type SetReadiness struct {
	Node      string               `json:"node"`
	Readiness map[string]Readiness `json:"readiness"`
	Pace      *state.ReadinessPace `json:"pace,omitempty"`
}

// SetFindings replaces a node's doctor finding counts.
type SetFindings struct {
	Node     string         `json:"node"`
	Findings map[string]int `json:"findings"`
}

// SetLevel raises the cluster's feature level. The leader commits it only
// when every voter supports the level; it never lowers the level.
type SetLevel struct {
	Level int `json:"level"`
}

// ExpireMark forgets the failures of Node for a hierarchy (its mark, if
// any, and its count) once the last is older than the hierarchy's
// failure_timeout (the leader decides; MarkedAt names that failure, so
// that one made since is kept). Feature level 2.
type ExpireMark struct {
	Hierarchy string    `json:"hierarchy"`
	Node      string    `json:"node"`
	MarkedAt  time.Time `json:"marked_at"`
}

// ConfirmFailover is an operator's (or, at confirm_timeout, the leader's)
// decision on a failover waiting for confirmation: proceed places the
// hierarchy as usual; block takes it out of service until it is started.
// Feature level 2.
type ConfirmFailover struct {
	Hierarchy string `json:"hierarchy"`
	Proceed   bool   `json:"proceed"`
	Reason    string `json:"reason,omitempty"`
}

// Maintenance scopes.
const (
	ScopeCluster   = "cluster"
	ScopeNode      = "node"
	ScopeHierarchy = "hierarchy"
)

// SetMaintenance turns maintenance on or off for the whole cluster, one
// node or one hierarchy (Scope, Name). While on, nothing there is
// started, stopped, recovered or failed over; checks still run. Turning
// it off adopts what the checks found running: a hierarchy that runs
// whole on one of its nodes is assigned there, at that node's current
// lease generation (an agent restarted under maintenance holds a new
// one), so it is not restarted. Feature level 2.
type SetMaintenance struct {
	Scope  string `json:"scope"`
	Name   string `json:"name,omitempty"`
	On     bool   `json:"on"`
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// SetStandby drains a node (On) or lets it take hierarchies again:
// placement switches what a node in standby runs over to the next ready
// node and places nothing on it. Feature level 2.
type SetStandby struct {
	Node   string `json:"node"`
	On     bool   `json:"on"`
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// SetConfirmFailover makes the automatic failovers of what Node runs
// wait for an operator's confirmation (On), as confirm_failover does for
// a hierarchy, or stops that. Feature level 2.
type SetConfirmFailover struct {
	Node   string `json:"node"`
	On     bool   `json:"on"`
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Batch commits several commands in one log entry, applied in order; each
// has its own result (one failing does not undo the others).
type Batch struct {
	Cmds []Cmd `json:"-"`
}

// Kind implementations.
func (PutHierarchies) Kind() string  { return "put-hierarchies" }
func (Delete) Kind() string          { return "delete" }
func (Purge) Kind() string           { return "purge" }
func (SetOnline) Kind() string       { return "set-online" }
func (Assign) Kind() string          { return "assign" }
func (RequestMove) Kind() string     { return "request-move" }
func (Report) Kind() string          { return "report" }
func (Revoke) Kind() string          { return "revoke" }
func (Release) Kind() string         { return "release" }
func (Join) Kind() string            { return "join" }
func (Leaving) Kind() string         { return "leaving" }
func (SetReadiness) Kind() string    { return "readiness" }
func (SetFindings) Kind() string     { return "findings" }
func (SetLevel) Kind() string        { return "set-level" }
func (ExpireMark) Kind() string      { return "expire-mark" }
func (ConfirmFailover) Kind() string { return "confirm-failover" }
func (SetMaintenance) Kind() string  { return "maintenance" }
func (SetStandby) Kind() string      { return "standby" }
func (SetConfirmFailover) Kind() string {
	return "node-confirm-failover"
}
func (Batch) Kind() string { return "batch" }

func node(s *State, name string) *NodeState {
	n := s.Nodes[name]
	if n == nil {
		n = &NodeState{Name: name, Reports: map[string]HierarchyReport{}}
		s.Nodes[name] = n
	}
	if n.Reports == nil {
		n.Reports = map[string]HierarchyReport{}
	}
	return n
}

func bump(a *Assignment, at time.Time, reason string) {
	a.Epoch++
	a.Reason = reason
	a.Since = at
}

func (c PutHierarchies) apply(s *State, at time.Time) Result {
	for _, h := range c.Hierarchies {
		s.Hierarchies[h.Name] = h
		a := s.Assignments[h.Name]
		if a == nil {
			a = &Assignment{Hierarchy: h.Name, Online: true}
			s.Assignments[h.Name] = a
			bump(a, at, "created")
			continue
		}
		if a.Deleting {
			a.Deleting = false
			a.Online = true
		}
		// A new spec is a new epoch: the owner re-reads it. If the owner
		// is no longer in the node list, move the hierarchy away.
		reason := "spec updated"
		if a.Node != "" && h.Priority(a.Node) < 0 {
			a.MoveTo = ""
			for _, n := range h.Nodes {
				a.MoveTo = n
				break
			}
			reason = "spec updated: owner no longer listed"
		}
		bump(a, at, reason)
	}
	return Result{Changed: true}
}

func (c Delete) apply(s *State, at time.Time) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil {
		return Result{Err: fmt.Errorf("hierarchy %q does not exist", c.Hierarchy)}
	}
	if err := unmanaged(s, c.Hierarchy); err != nil {
		return Result{Err: err}
	}
	a.Deleting = true
	a.Online = false
	bump(a, at, "delete requested")
	return Result{Changed: true}
}

func (c Purge) apply(s *State, _ time.Time) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil || a.Epoch != c.Epoch || !a.Deleting {
		return Result{}
	}
	delete(s.Assignments, c.Hierarchy)
	delete(s.Hierarchies, c.Hierarchy)
	for _, n := range s.Nodes {
		delete(n.Reports, c.Hierarchy)
	}
	return Result{Changed: true}
}

func (c SetOnline) apply(s *State, at time.Time) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil || a.Deleting {
		return Result{Err: fmt.Errorf("hierarchy %q does not exist", c.Hierarchy)}
	}
	if err := unmanaged(s, c.Hierarchy); err != nil {
		return Result{Err: err}
	}
	a.Online = c.Online
	a.MoveTo = ""
	a.ConfirmSince = time.Time{} // an operator's start or stop decides
	if c.ClearFailed {
		// An operator's start: every mark, count and the failover
		// history (anti-flap) start over.
		a.Failed, a.FailedAt, a.Failures, a.Failovers = nil, nil, nil, nil
	}
	bump(a, at, c.Reason)
	return Result{Changed: true}
}

func (c Assign) apply(s *State, at time.Time) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil || a.Epoch != c.Epoch {
		return Result{}
	}
	if c.MarkFailed && c.Node == "" && s.ConfirmsFailover(c.Hierarchy, a.Node) {
		// Taken off the failed node; placement elsewhere waits for an
		// operator's decision.
		a.ConfirmSince = at.UTC()
	}
	if c.MarkFailed && a.Node != "" && !a.FailedOn(a.Node) {
		if s.FeatureLevel() >= LevelTyped {
			// Count the failure; mark the node once it reaches the
			// hierarchy's migration threshold; record the failover.
			h := s.Hierarchies[c.Hierarchy]
			stampMark(a, a.Node, at)
			if a.Failures == nil {
				a.Failures = map[string]int{}
			}
			a.Failures[a.Node]++
			if a.Failures[a.Node] >= h.EffectiveMigrationThreshold() {
				a.Failed = append(a.Failed, a.Node)
			}
			recordFailover(a, h.EffectiveFailoverWindow(), at)
		} else {
			a.Failed = append(a.Failed, a.Node)
		}
	}
	a.Node, a.Gen, a.MoveTo, a.MoveForce = c.Node, c.Gen, "", false
	bump(a, at, c.Reason)
	return Result{Changed: true}
}

func (c RequestMove) apply(s *State, at time.Time) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil || a.Deleting {
		return Result{Err: fmt.Errorf("hierarchy %q does not exist", c.Hierarchy)}
	}
	if err := unmanaged(s, c.Hierarchy); err != nil {
		return Result{Err: err}
	}
	if c.Epoch != 0 && a.Epoch != c.Epoch {
		return Result{}
	}
	before, wasOnline := len(a.Failed), a.Online
	if c.ClearFailed {
		a.Unmark(c.To)
		a.Online = true
	}
	a.ConfirmSince = time.Time{} // a switchover decides where it goes
	if c.To == a.Node && a.Node != "" {
		// Already there: nothing to move. Only a change of the failure
		// marks or of Online is a new epoch.
		if a.MoveTo == "" && len(a.Failed) == before && wasOnline == a.Online {
			return Result{}
		}
		a.MoveTo = ""
		bump(a, at, c.Reason)
		return Result{Changed: true}
	}
	a.MoveTo, a.MoveForce = c.To, c.Force
	bump(a, at, c.Reason)
	return Result{Changed: true}
}

func (c Report) apply(s *State, _ time.Time) Result {
	n := node(s, c.Node)
	if _, ok := s.Hierarchies[c.Hierarchy]; !ok {
		delete(n.Reports, c.Hierarchy)
		return Result{}
	}
	n.Reports[c.Hierarchy] = c.Report
	return Result{Changed: true}
}

func (c Revoke) apply(s *State, _ time.Time) Result {
	n := node(s, c.Node)
	if n.Gen != c.Gen || n.Revoked {
		return Result{}
	}
	n.Revoked = true
	return Result{Changed: true}
}

func (c Release) apply(s *State, at time.Time) Result {
	changed := false
	for _, a := range s.Assignments {
		if a.Node == c.Node && a.Gen == c.Gen {
			if a.Online && s.FeatureLevel() >= LevelTyped {
				// Its node was fenced: an automatic failover, which may
				// have to wait for an operator's decision.
				h := s.Hierarchies[a.Hierarchy]
				recordFailover(a, h.EffectiveFailoverWindow(), at)
				if s.ConfirmsFailover(a.Hierarchy, a.Node) {
					a.ConfirmSince = at.UTC()
				}
			}
			a.Node, a.Gen = "", 0
			bump(a, at, c.Reason)
			changed = true
		}
	}
	return Result{Changed: changed}
}

// ErrTooOld is the error of a join refused because the node's version
// does not support the cluster's feature level.
type ErrTooOld struct {
	Node    string
	Version string
	Level   int
	Cluster int
}

func (e ErrTooOld) Error() string {
	v := e.Version
	if v == "" {
		v = "unknown"
	}
	return fmt.Sprintf("node %s runs lifeboat %s, which supports feature level %d, but the cluster is at feature level %d: "+
		"it cannot join (a downgrade after the whole cluster was upgraded is refused); run the version the other nodes run",
		e.Node, v, e.Level, e.Cluster)
}

func (c Join) apply(s *State, _ time.Time) Result {
	lvl := max(c.Level, LevelLegacy)
	if lvl < s.FeatureLevel() {
		return Result{Err: ErrTooOld{Node: c.Node, Version: c.Version, Level: lvl, Cluster: s.FeatureLevel()}}
	}
	if len(s.Members) > 0 && !slices.ContainsFunc(s.Members, func(m state.Member) bool { return m.Name == c.Node }) {
		return Result{Err: fmt.Errorf("node %s is not a member of the cluster (it was removed, or not yet added: lifeboat node add)", c.Node)}
	}
	n := node(s, c.Node)
	n.Gen++
	n.Revoked = false
	n.Leaving = false
	// From the typed level on (every voter runs a version that applies
	// this the same way), a node that joins with another binary must
	// prove its readiness again.
	if s.FeatureLevel() >= LevelTyped && n.Version != "" && n.Version != c.Version {
		// Another binary: what it could take over must be proven again
		// (the new version may need what the node's role does not
		// grant). Until it reports, it counts as not ready.
		n.Readiness = nil
		n.Unproven = true
	}
	n.Version = c.Version
	n.Level = lvl
	n.WatchdogMS = c.WatchdogMS
	return Result{Changed: true, Gen: n.Gen}
}

func (c Leaving) apply(s *State, _ time.Time) Result {
	n := node(s, c.Node)
	n.Leaving = c.Leaving
	return Result{Changed: true}
}

func (c SetReadiness) apply(s *State, _ time.Time) Result {
	n := node(s, c.Node)
	n.Readiness = c.Readiness
	n.ReadinessPace = c.Pace
	n.Unproven = false
	return Result{Changed: true}
}

func (c SetFindings) apply(s *State, _ time.Time) Result {
	n := node(s, c.Node)
	n.Findings = c.Findings
	return Result{Changed: true}
}

func (c SetLevel) apply(s *State, at time.Time) Result {
	if c.Level > MaxLevel {
		return Result{Err: fmt.Errorf("feature level %d is beyond this version's %d", c.Level, MaxLevel)}
	}
	if c.Level <= s.FeatureLevel() {
		return Result{}
	}
	s.Level = c.Level
	if c.Level >= LevelTyped {
		// Marks from before level 2 carry no time: they expire counting
		// from now.
		for _, a := range s.Assignments {
			for _, n := range a.Failed {
				if _, ok := a.FailedAt[n]; !ok {
					stampMark(a, n, at)
				}
			}
		}
	}
	return Result{Changed: true}
}

// stampMark records when node's failure mark was made.
func stampMark(a *Assignment, node string, at time.Time) {
	if a.FailedAt == nil {
		a.FailedAt = map[string]time.Time{}
	}
	a.FailedAt[node] = at.UTC()
}

// ErrNothingToConfirm: a decision on a hierarchy whose failover is not
// waiting for one.
var ErrNothingToConfirm = errors.New("no failover is waiting for confirmation")

func (c ConfirmFailover) apply(s *State, at time.Time) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil || a.Deleting {
		return Result{Err: fmt.Errorf("hierarchy %q does not exist", c.Hierarchy)}
	}
	if err := unmanaged(s, c.Hierarchy); err != nil {
		return Result{Err: err}
	}
	if a.ConfirmSince.IsZero() {
		return Result{Err: fmt.Errorf("%s: %w", c.Hierarchy, ErrNothingToConfirm)}
	}
	a.ConfirmSince = time.Time{}
	if !c.Proceed {
		a.Online = false
		bump(a, at, c.Reason)
	} else {
		a.Reason = c.Reason
	}
	return Result{Changed: true}
}

// maxFailovers bounds the failover history kept per hierarchy.
const maxFailovers = 1024

// recordFailover adds an automatic failover at at, forgetting those that
// left the window.
func recordFailover(a *Assignment, window time.Duration, at time.Time) {
	var keep []time.Time // a new slice: copies of the state may share the old one
	for _, t := range a.Failovers {
		if t.After(at.Add(-window)) {
			keep = append(keep, t)
		}
	}
	keep = append(keep, at.UTC())
	if len(keep) > maxFailovers {
		keep = keep[len(keep)-maxFailovers:]
	}
	a.Failovers = keep
}

func (c ExpireMark) apply(s *State, _ time.Time) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil {
		return Result{}
	}
	// Only the mark the leader saw expire: one made again since stays.
	if t, ok := a.FailedAt[c.Node]; !ok || !t.Equal(c.MarkedAt) {
		return Result{}
	}
	a.Unmark(c.Node)
	return Result{Changed: true}
}

// ErrUnmanaged: an operator's start, stop, move or delete of a hierarchy
// under maintenance (the leader's state decides, not the asking node's).
var ErrUnmanaged = errors.New("under maintenance: lifeboat starts, stops and moves nothing there; end it first (lifeboat maintenance off)")

// unmanaged refuses a change to hierarchy h while it is under
// maintenance (only a level-2 state can record one).
func unmanaged(s *State, h string) error {
	if why := s.MaintenanceOf(h, ""); why != "" {
		return fmt.Errorf("%s: %w", why, ErrUnmanaged)
	}
	return nil
}

// ErrNoChange: the maintenance or standby asked for is already so.
var ErrNoChange = errors.New("already so")

func (c SetMaintenance) apply(s *State, at time.Time) Result {
	hold := func(cur *Hold) (*Hold, bool) {
		if c.On == (cur != nil) {
			return cur, false
		}
		if c.On {
			return &Hold{Since: at.UTC(), By: c.By, Reason: c.Reason}, true
		}
		return nil, true
	}
	// What the change leaves managed that was not: the hierarchies to
	// adopt.
	before := map[string]bool{}
	for name := range s.Assignments {
		before[name] = s.MaintenanceOf(name, "") != ""
	}
	var changed bool
	switch c.Scope {
	case ScopeCluster:
		s.Maintenance, changed = hold(s.Maintenance)
	case ScopeHierarchy:
		a := s.Assignments[c.Name]
		if a == nil || a.Deleting {
			return Result{Err: fmt.Errorf("hierarchy %q does not exist", c.Name)}
		}
		a.Maintenance, changed = hold(a.Maintenance)
	case ScopeNode:
		n := node(s, c.Name)
		n.Maintenance, changed = hold(n.Maintenance)
	default:
		return Result{Err: fmt.Errorf("unknown maintenance scope %q", c.Scope)}
	}
	if !changed {
		return Result{Err: ErrNoChange}
	}
	if !c.On {
		for _, name := range s.HierarchyNames() {
			if before[name] && s.MaintenanceOf(name, "") == "" {
				adopt(s, name, at)
			}
		}
	}
	return Result{Changed: true}
}

// adopt hands a hierarchy that leaves maintenance back to placement,
// assigned where its checks found it running whole (the owner first,
// then by priority), at that node's current lease generation; a new
// epoch either way, so that every node acts on the cluster's wish again.
func adopt(s *State, name string, at time.Time) {
	a, h := s.Assignments[name], s.Hierarchies[name]
	if a == nil || a.Deleting {
		return
	}
	running := func(n string) bool {
		ns := s.Nodes[n]
		if ns == nil || ns.Gen == 0 || ns.Revoked {
			return false
		}
		r, ok := ns.Reports[name]
		return ok && r.Epoch == a.Epoch && r.Running()
	}
	reason := "maintenance ended"
	if a.Online {
		target := ""
		if a.Node != "" && running(a.Node) {
			target = a.Node
		} else {
			for _, n := range h.Nodes {
				if running(n) {
					target = n
					break
				}
			}
		}
		switch {
		case target != "":
			a.Node, a.Gen = target, s.Nodes[target].Gen
			reason += "; adopted where it runs, on " + target
		case a.Node != "":
			if ns := s.Nodes[a.Node]; ns != nil && !ns.Revoked && ns.Gen != 0 {
				a.Gen = ns.Gen
			}
			reason += "; not found running: restored on " + a.Node
		}
		a.MoveTo, a.MoveForce = "", false
	}
	bump(a, at, reason)
}

func (c SetStandby) apply(s *State, at time.Time) Result {
	n := node(s, c.Node)
	if c.On == (n.Standby != nil) {
		return Result{Err: ErrNoChange}
	}
	if c.On {
		n.Standby = &Hold{Since: at.UTC(), By: c.By, Reason: c.Reason}
	} else {
		n.Standby = nil
	}
	return Result{Changed: true}
}

func (c SetConfirmFailover) apply(s *State, at time.Time) Result {
	n := node(s, c.Node)
	if c.On == (n.ConfirmFailover != nil) {
		return Result{Err: ErrNoChange}
	}
	if c.On {
		n.ConfirmFailover = &Hold{Since: at.UTC(), By: c.By, Reason: c.Reason}
	} else {
		n.ConfirmFailover = nil
	}
	return Result{Changed: true}
}

func (c Batch) apply(s *State, at time.Time) Result {
	out := Result{Results: make([]Result, len(c.Cmds))}
	for i, sub := range c.Cmds {
		r := sub.apply(s, at)
		out.Results[i] = r
		out.Changed = out.Changed || r.Changed
	}
	return out
}
