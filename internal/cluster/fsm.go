package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Command types.
const (
	CmdPutHierarchies = "put-hierarchies"
	CmdDelete         = "delete"
	CmdPurge          = "purge"
	CmdSetOnline      = "set-online"
	CmdAssign         = "assign"
	CmdRequestMove    = "request-move"
	CmdReport         = "report"
	CmdRevoke         = "revoke"
	CmdRelease        = "release"
	CmdJoin           = "join"
	CmdLeaving        = "leaving"
	CmdReadiness      = "readiness"
	CmdFindings       = "findings"
)

// Command is one replicated change. Fields are used per type.
type Command struct {
	Type        string           `json:"type"`
	Hierarchies []spec.Hierarchy `json:"hierarchies,omitempty"`
	Hierarchy   string           `json:"hierarchy,omitempty"`
	Node        string           `json:"node,omitempty"`
	Gen         uint64           `json:"gen,omitempty"`
	// Epoch is the expected current epoch for compare-and-set commands.
	Epoch   uint64           `json:"epoch,omitempty"`
	Online  bool             `json:"online,omitempty"`
	To      string           `json:"to,omitempty"`
	Reason  string           `json:"reason,omitempty"`
	Report  *HierarchyReport `json:"report,omitempty"`
	Version string           `json:"version,omitempty"`
	// MarkFailed adds the previous owner to the failed list on assign.
	MarkFailed bool `json:"mark_failed,omitempty"`
	// ClearFailed empties the failed list (operator start/switchover).
	ClearFailed bool      `json:"clear_failed,omitempty"`
	Leaving     bool      `json:"leaving,omitempty"`
	Time        time.Time `json:"time"`
	// Force: a switchover to a NOT READY node.
	Force bool `json:"force,omitempty"`
	// Findings replaces a node's doctor finding counts.
	Findings map[string]int `json:"findings,omitempty"`
	// Readiness replaces a node's readiness map.
	Readiness map[string]Readiness `json:"readiness,omitempty"`
	// WatchdogMS is the joining node's watchdog timeout (0: none).
	WatchdogMS int64 `json:"watchdog_ms,omitempty"`
}

// Result is what Apply returns for a command.
type Result struct {
	Changed bool
	Err     error
	// Gen is the new generation after a join.
	Gen uint64
}

// FSM is the raft state machine. Readers take snapshots of the state
// through View; watchers are woken after every apply.
type FSM struct {
	mu      sync.RWMutex
	state   *State
	waiters []chan struct{}
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM with empty state.
func NewFSM() *FSM { return &FSM{state: NewState()} }

// View calls fn with the current state under a read lock. fn must not keep
// references.
func (f *FSM) View(fn func(*State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Copy returns a deep copy of the state.
func (f *FSM) Copy() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// Index is the last applied raft index.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Index
}

// Changed returns a channel closed after the next applied command.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan struct{})
	f.waiters = append(f.waiters, c)
	return c
}

// Apply applies one raft log entry.
func (f *FSM) Apply(l *raft.Log) any {
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return Result{Err: fmt.Errorf("decode command at index %d: %w", l.Index, err)}
	}
	f.mu.Lock()
	res := apply(f.state, &c)
	f.state.Index = l.Index
	ws := f.waiters
	f.waiters = nil
	f.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
	return res
}

// apply is the pure state transition.
func apply(s *State, c *Command) Result {
	switch c.Type {
	case CmdPutHierarchies:
		return applyPut(s, c)
	case CmdDelete:
		return applyDelete(s, c)
	case CmdPurge:
		return applyPurge(s, c)
	case CmdSetOnline:
		return applySetOnline(s, c)
	case CmdAssign:
		return applyAssign(s, c)
	case CmdRequestMove:
		return applyRequestMove(s, c)
	case CmdReport:
		return applyReport(s, c)
	case CmdRevoke:
		return applyRevoke(s, c)
	case CmdRelease:
		return applyRelease(s, c)
	case CmdJoin:
		return applyJoin(s, c)
	case CmdLeaving:
		return applyLeaving(s, c)
	case CmdReadiness:
		return applyReadiness(s, c)
	case CmdFindings:
		n := node(s, c.Node)
		n.Findings = c.Findings
		return Result{Changed: true}
	}
	return Result{Err: fmt.Errorf("unknown command type %q", c.Type)}
}

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

func bump(a *Assignment, c *Command, reason string) {
	a.Epoch++
	a.Reason = reason
	a.Since = c.Time
}

func applyPut(s *State, c *Command) Result {
	for _, h := range c.Hierarchies {
		s.Hierarchies[h.Name] = h
		a := s.Assignments[h.Name]
		if a == nil {
			a = &Assignment{Hierarchy: h.Name, Online: true}
			s.Assignments[h.Name] = a
			bump(a, c, "created")
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
		bump(a, c, reason)
	}
	return Result{Changed: true}
}

func applyDelete(s *State, c *Command) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil {
		return Result{Err: fmt.Errorf("hierarchy %q does not exist", c.Hierarchy)}
	}
	a.Deleting = true
	a.Online = false
	bump(a, c, "delete requested")
	return Result{Changed: true}
}

func applyPurge(s *State, c *Command) Result {
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

func applySetOnline(s *State, c *Command) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil || a.Deleting {
		return Result{Err: fmt.Errorf("hierarchy %q does not exist", c.Hierarchy)}
	}
	a.Online = c.Online
	a.MoveTo = ""
	if c.ClearFailed {
		a.Failed = nil
	}
	bump(a, c, c.Reason)
	return Result{Changed: true}
}

func applyAssign(s *State, c *Command) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil || a.Epoch != c.Epoch {
		return Result{}
	}
	if c.MarkFailed && a.Node != "" && !a.FailedOn(a.Node) {
		a.Failed = append(a.Failed, a.Node)
	}
	a.Node, a.Gen, a.MoveTo, a.MoveForce = c.Node, c.Gen, "", false
	bump(a, c, c.Reason)
	return Result{Changed: true}
}

func applyRequestMove(s *State, c *Command) Result {
	a := s.Assignments[c.Hierarchy]
	if a == nil || a.Deleting {
		return Result{Err: fmt.Errorf("hierarchy %q does not exist", c.Hierarchy)}
	}
	if c.Epoch != 0 && a.Epoch != c.Epoch {
		return Result{}
	}
	before, wasOnline := len(a.Failed), a.Online
	if c.ClearFailed {
		var keep []string
		for _, n := range a.Failed {
			if n != c.To {
				keep = append(keep, n)
			}
		}
		a.Failed = keep
		a.Online = true
	}
	if c.To == a.Node && a.Node != "" {
		// Already there: nothing to move. Only a change of the failure
		// marks or of Online is a new epoch.
		if a.MoveTo == "" && len(a.Failed) == before && wasOnline == a.Online {
			return Result{}
		}
		a.MoveTo = ""
		bump(a, c, c.Reason)
		return Result{Changed: true}
	}
	a.MoveTo, a.MoveForce = c.To, c.Force
	bump(a, c, c.Reason)
	return Result{Changed: true}
}

func applyReport(s *State, c *Command) Result {
	if c.Report == nil {
		return Result{Err: fmt.Errorf("report without body")}
	}
	n := node(s, c.Node)
	if _, ok := s.Hierarchies[c.Hierarchy]; !ok {
		delete(n.Reports, c.Hierarchy)
		return Result{}
	}
	n.Reports[c.Hierarchy] = *c.Report
	return Result{Changed: true}
}

func applyRevoke(s *State, c *Command) Result {
	n := node(s, c.Node)
	if n.Gen != c.Gen || n.Revoked {
		return Result{}
	}
	n.Revoked = true
	return Result{Changed: true}
}

func applyRelease(s *State, c *Command) Result {
	changed := false
	for _, a := range s.Assignments {
		if a.Node == c.Node && a.Gen == c.Gen {
			a.Node, a.Gen = "", 0
			bump(a, c, c.Reason)
			changed = true
		}
	}
	return Result{Changed: changed}
}

func applyJoin(s *State, c *Command) Result {
	n := node(s, c.Node)
	n.Gen++
	n.Revoked = false
	n.Leaving = false
	n.Version = c.Version
	n.WatchdogMS = c.WatchdogMS
	return Result{Changed: true, Gen: n.Gen}
}

func applyLeaving(s *State, c *Command) Result {
	n := node(s, c.Node)
	n.Leaving = c.Leaving
	return Result{Changed: true}
}

func applyReadiness(s *State, c *Command) Result {
	n := node(s, c.Node)
	n.Readiness = c.Readiness
	return Result{Changed: true}
}

// Snapshot implements raft.FSM.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(f.state)
	if err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	return snapshot(b), nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s := NewState()
	if err := json.NewDecoder(rc).Decode(s); err != nil {
		return fmt.Errorf("restore state from snapshot: %w", err)
	}
	if s.Hierarchies == nil {
		s.Hierarchies = map[string]spec.Hierarchy{}
	}
	if s.Assignments == nil {
		s.Assignments = map[string]*Assignment{}
	}
	if s.Nodes == nil {
		s.Nodes = map[string]*NodeState{}
	}
	f.mu.Lock()
	f.state = s
	ws := f.waiters
	f.waiters = nil
	f.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}
