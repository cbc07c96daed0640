// Package placement decides, on the raft leader, where each hierarchy should
// be in service. Decide is a pure function of the replicated state and the
// leader's view of the nodes (failure detector, leases, readiness): it keeps
// a hierarchy where it is while its owner is alive, healthy and holds a
// lease; otherwise it fences the owner and picks the highest-priority ready
// node. The agent carries out the actions it returns.
package placement

import (
	"fmt"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// NodeView is the leader's view of one node.
type NodeView struct {
	Name    string
	Witness bool
	// Alive: the failure detector sees the node alive (or suspect).
	Alive bool
	// LeaseFresh: the node renewed its lease at its current generation
	// recently, as seen by the leader's own voter.
	LeaseFresh bool
	// Ready: the node could take over (readiness probes pass).
	Ready bool
	// NotReady: hierarchies this node proved it could not take over, with
	// the reason (e.g. the missing IAM action).
	NotReady map[string]string
	Gen      uint64
	Revoked  bool
	Leaving  bool
	// Maintenance: the operator put the node in maintenance: nothing is
	// placed on it and what it owns is left alone.
	Maintenance bool
	// Standby: the node is drained: what it runs is switched over and
	// nothing is placed on it.
	Standby bool
}

// Action kinds.
const (
	// ActAssign commits a new owner (Node may be "": nowhere to go).
	ActAssign = "assign"
	// ActMove asks the owner to hand the hierarchy over to To.
	ActMove = "move"
	// ActFence revokes Node's lease generation Gen and, once a majority of
	// voters attest it has run out, releases its hierarchies.
	ActFence = "fence"
	// ActPurge forgets a deleted hierarchy that is out of service.
	ActPurge = "purge"
	// ActExpire forgets Node's failures (its mark and count; the last at
	// MarkedAt) once they are older than the hierarchy's failure_timeout.
	ActExpire = "expire-mark"
	// ActStop takes the hierarchy out of service instead of failing it
	// over again (anti-flap: max_failovers within failover_window), or
	// when a failover waiting for confirmation times out with
	// confirm_default block.
	ActStop = "stop"
	// ActProceed lets a failover that waited for confirmation go on
	// (confirm_timeout passed with confirm_default proceed).
	ActProceed = "proceed"
)

// Action is one step for the leader to commit.
type Action struct {
	Kind       string
	Hierarchy  string
	Node       string
	To         string
	Gen        uint64
	Epoch      uint64
	MarkFailed bool
	// MarkedAt names the failure mark an ActExpire removes.
	MarkedAt time.Time
	// From is the node a failover leaves (an ActAssign after a failure).
	From   string
	Reason string
}

func (a Action) String() string {
	switch a.Kind {
	case ActFence:
		return fmt.Sprintf("fence %s (generation %d): %s", a.Node, a.Gen, a.Reason)
	case ActMove:
		return fmt.Sprintf("move %s to %s: %s", a.Hierarchy, a.To, a.Reason)
	case ActPurge:
		return fmt.Sprintf("purge %s", a.Hierarchy)
	case ActExpire:
		return fmt.Sprintf("forget the failures of %s on %s: %s", a.Hierarchy, a.Node, a.Reason)
	case ActStop:
		return fmt.Sprintf("stop %s: %s", a.Hierarchy, a.Reason)
	case ActProceed:
		return fmt.Sprintf("fail %s over: %s", a.Hierarchy, a.Reason)
	}
	return fmt.Sprintf("assign %s to %q: %s", a.Hierarchy, a.Node, a.Reason)
}

// Candidate reports whether node n may take hierarchy h now, and if not why.
func Candidate(h spec.Hierarchy, a *state.Assignment, n NodeView, ok bool) (bool, string) {
	switch {
	case !ok:
		return false, "unknown node"
	case h.Priority(n.Name) < 0:
		return false, "not in the hierarchy's node list"
	case n.Witness:
		return false, "a witness runs no resources"
	case !n.Alive:
		return false, "not alive"
	case n.Gen == 0 || n.Revoked:
		return false, "has not joined since it was fenced"
	case !n.LeaseFresh:
		return false, "holds no lease"
	case n.Leaving:
		return false, "shutting down"
	case n.Maintenance:
		return false, "in maintenance"
	case n.Standby:
		return false, "in standby (`lifeboat node unstandby " + n.Name + "` takes it back)"
	case !n.Ready:
		return false, "NOT READY"
	case n.NotReady[h.Name] != "":
		return false, "NOT READY: " + n.NotReady[h.Name]
	case a != nil && a.FailedOn(n.Name):
		return false, "the hierarchy failed there"
	}
	return true, ""
}

// Explain says, node by node in priority order, why none of h's nodes
// can take it now (for status and events when a hierarchy has nowhere to
// go). A failure mark says when it expires.
func Explain(h spec.Hierarchy, a *state.Assignment, nodes map[string]NodeView) string {
	var parts []string
	for _, name := range h.Nodes {
		n, ok := nodes[name]
		c, why := Candidate(h, a, n, ok)
		if c {
			why = "could take it"
		}
		if a != nil && a.FailedOn(name) && why == "the hierarchy failed there" {
			if exp := a.MarkExpires(name, h.EffectiveFailureTimeout()); !exp.IsZero() {
				why += fmt.Sprintf(" (the mark expires at %s)", exp.UTC().Format(time.RFC3339))
			} else {
				why += " (until `lifeboat start` or a switchover to it)"
			}
		}
		parts = append(parts, name+": "+why)
	}
	return strings.Join(parts, "; ")
}

// Choose picks the highest-priority candidate for h other than except.
func Choose(h spec.Hierarchy, a *state.Assignment, nodes map[string]NodeView, except string) (NodeView, bool) {
	for _, name := range h.Nodes {
		if name == except {
			continue
		}
		n, ok := nodes[name]
		if c, _ := Candidate(h, a, n, ok); c {
			return n, true
		}
	}
	return NodeView{}, false
}

// ChooseDown picks a node for a hierarchy that is in service nowhere: the
// highest-priority ready candidate, or, when no node is ready, the
// highest-priority node that is NOT READY but otherwise a candidate (down
// anyway, the service is better tried there than left down: a restore that
// fails marks that node and the next is tried). fallback reports the
// second case.
func ChooseDown(h spec.Hierarchy, a *state.Assignment, nodes map[string]NodeView) (n NodeView, fallback, ok bool) {
	if c, ok := Choose(h, a, nodes, ""); ok {
		return c, false, true
	}
	for _, name := range h.Nodes {
		n, ok := nodes[name]
		if !ok {
			continue
		}
		n.Ready, n.NotReady = true, nil
		if c, _ := Candidate(h, a, n, true); c {
			return nodes[name], true, true
		}
	}
	return NodeView{}, false, false
}

func notReadyWhy(n NodeView, hier string) string {
	if r := n.NotReady[hier]; r != "" {
		return r
	}
	return "readiness probe failed"
}

// expired lists the failure marks older than their hierarchy's
// failure_timeout, in hierarchy and node order.
func expired(s *state.State, now time.Time) []Action {
	var out []Action
	for _, name := range s.HierarchyNames() {
		h, a := s.Hierarchies[name], s.Assignments[name]
		if a == nil || a.Deleting {
			continue
		}
		timeout := h.EffectiveFailureTimeout()
		for _, n := range spec.SortedKeys(a.FailedAt) {
			if exp := a.FailureExpires(n, timeout); !exp.IsZero() && !now.Before(exp) {
				out = append(out, Action{Kind: ActExpire, Hierarchy: name, Node: n, MarkedAt: a.FailedAt[n],
					Reason: fmt.Sprintf("last failed there at %s, failure_timeout %s", a.FailedAt[n].UTC().Format(time.RFC3339), timeout)})
			}
		}
	}
	return out
}

// initialGrace is how long the first placement of a new hierarchy waits
// for a preferred node that has joined but not yet renewed its lease.
const initialGrace = 2 * time.Second

// joiningFirst reports whether a node that ranks before every candidate
// is alive and joined but has not yet renewed its lease with the leader
// (it has just started).
func joiningFirst(h spec.Hierarchy, a *state.Assignment, nodes map[string]NodeView) bool {
	for _, name := range h.Nodes {
		n, ok := nodes[name]
		if c, _ := Candidate(h, a, n, ok); c {
			return false
		}
		if ok && n.Alive && n.Gen > 0 && !n.Revoked && !n.Leaving && !n.Witness && !n.LeaseFresh && !a.FailedOn(name) {
			return true
		}
	}
	return false
}

// flapping reports whether the hierarchy has failed over more than its
// max_failovers within failover_window, counting extra failovers about to
// be committed (feature level 2; never without max_failovers).
func flapping(s *state.State, h spec.Hierarchy, a *state.Assignment, now time.Time, extra int) bool {
	if h.MaxFailovers <= 0 || s.FeatureLevel() < state.LevelTyped {
		return false
	}
	return a.RecentFailovers(now, h.EffectiveFailoverWindow())+extra > h.MaxFailovers
}

func stopFlapping(h spec.Hierarchy, a *state.Assignment, now time.Time) Action {
	n := a.RecentFailovers(now, h.EffectiveFailoverWindow())
	return Action{Kind: ActStop, Hierarchy: h.Name, Epoch: a.Epoch,
		Reason: fmt.Sprintf("automatic failover blocked (anti-flap): %d failovers within %s, max_failovers %d; it stays stopped until `lifeboat start %s`",
			n, h.EffectiveFailoverWindow(), h.MaxFailovers, h.Name)}
}

// ownerGone reports whether the owner's lease generation must be fenced
// before the hierarchy can go anywhere else.
func ownerGone(a *state.Assignment, n NodeView, ok bool) (bool, string) {
	switch {
	case !ok:
		return true, "owner unknown"
	case n.Gen != a.Gen || n.Revoked:
		return true, "owner restarted or was fenced"
	case !n.LeaseFresh:
		return true, "owner stopped renewing its lease"
	case !n.Alive:
		return true, "owner failed"
	}
	return false, ""
}

// Decide returns the actions that bring the cluster towards its desired
// state, now being the leader's clock (failure marks expire by it). It is
// deterministic: hierarchies are visited in name order and at most one
// fence per node generation is returned.
func Decide(s *state.State, nodes map[string]NodeView, now time.Time) []Action {
	var out []Action
	if s.FeatureLevel() >= state.LevelTyped {
		out = append(out, expired(s, now)...)
	}
	fenced := map[string]bool{}
	fence := func(a *state.Assignment, why string) {
		key := fmt.Sprintf("%s/%d", a.Node, a.Gen)
		if !fenced[key] {
			fenced[key] = true
			out = append(out, Action{Kind: ActFence, Node: a.Node, Gen: a.Gen, Hierarchy: a.Hierarchy, Reason: why})
		}
	}
	for _, name := range s.HierarchyNames() {
		h := s.Hierarchies[name]
		a := s.Assignments[name]
		if a == nil {
			continue
		}
		if s.MaintenanceOf(name, "") != "" {
			// Unmanaged: nothing is fenced, moved, started or stopped.
			continue
		}
		if a.Node != "" {
			owner, known := nodes[a.Node]
			if gone, why := ownerGone(a, owner, known); gone {
				fence(a, why)
				continue
			}
		}
		rep, reported := s.Report(a.Node, name, a.Epoch)
		if a.Deleting {
			if a.Node == "" || (reported && (rep.State == "offline" || rep.State == "failed")) {
				out = append(out, Action{Kind: ActPurge, Hierarchy: name, Epoch: a.Epoch})
			}
			continue
		}
		if a.Node == "" {
			if !a.Online {
				continue
			}
			if a.MoveTo == "" && flapping(s, h, a, now, 0) {
				out = append(out, stopFlapping(h, a, now))
				continue
			}
			if !a.ConfirmSince.IsZero() {
				// A failover waiting for an operator's decision.
				deadline := a.ConfirmSince.Add(h.EffectiveConfirmTimeout())
				if now.Before(deadline) {
					continue
				}
				why := fmt.Sprintf("no decision within confirm_timeout %s", h.EffectiveConfirmTimeout())
				if h.EffectiveConfirmDefault() == spec.ConfirmBlock {
					out = append(out, Action{Kind: ActStop, Hierarchy: name, Epoch: a.Epoch,
						Reason: why + ": failover blocked (confirm_default block); `lifeboat start " + name + "` starts it"})
				} else {
					out = append(out, Action{Kind: ActProceed, Hierarchy: name, Epoch: a.Epoch, Reason: why + ": failing over (confirm_default proceed)"})
				}
				continue
			}
			if t, ok := nodes[a.MoveTo]; ok && a.MoveTo != "" {
				if c, _ := Candidate(h, a, t, true); c {
					out = append(out, Action{Kind: ActAssign, Hierarchy: name, Node: t.Name, Gen: t.Gen, Epoch: a.Epoch, Reason: "switchover to " + t.Name})
					continue
				}
			}
			if a.Epoch == 1 && now.Sub(a.Since) < initialGrace && joiningFirst(h, a, nodes) {
				// A new hierarchy: give a preferred node that has just
				// joined a moment to renew its lease, rather than start
				// it on a lower one where it would then stay.
				continue
			}
			if c, fallback, ok := ChooseDown(h, a, nodes); ok {
				why := "placed on highest-priority ready node"
				if fallback {
					why = fmt.Sprintf("no node is READY; placed on %s although NOT READY (%s) rather than left out of service", c.Name, notReadyWhy(c, name))
				}
				out = append(out, Action{Kind: ActAssign, Hierarchy: name, Node: c.Name, Gen: c.Gen, Epoch: a.Epoch, Reason: why})
			}
			continue
		}
		owner := nodes[a.Node]
		switch {
		case !a.Online:
			continue
		case reported && rep.State == "failed" && flapping(s, h, a, now, 1):
			// This failover would be one too many.
			out = append(out, stopFlapping(h, a, now))
		case reported && rep.State == "failed" && s.ConfirmsFailover(name, a.Node):
			// Off the failed node; elsewhere only once confirmed.
			out = append(out, Action{Kind: ActAssign, Hierarchy: name, Epoch: a.Epoch, MarkFailed: true,
				Reason: fmt.Sprintf("failed on %s: %s; the failover waits for `lifeboat failover confirm|block %s` (%s after %s)",
					a.Node, rep.Error, name, h.EffectiveConfirmDefault(), h.EffectiveConfirmTimeout())})
		case reported && rep.State == "failed":
			act := Action{Kind: ActAssign, Hierarchy: name, Epoch: a.Epoch, MarkFailed: true, From: a.Node}
			if c, ok := Choose(h, a, nodes, a.Node); ok {
				act.Node, act.Gen = c.Name, c.Gen
				act.Reason = fmt.Sprintf("failed on %s: %s", a.Node, rep.Error)
			} else {
				act.Reason = fmt.Sprintf("failed on %s and no other node can take it: %s (%s)", a.Node, rep.Error, Explain(h, a, nodes))
			}
			out = append(out, act)
		case a.MoveTo != "":
			if !reported || rep.State != "offline" {
				continue
			}
			act := Action{Kind: ActAssign, Hierarchy: name, Epoch: a.Epoch}
			if t, ok := nodes[a.MoveTo]; ok {
				if a.MoveForce {
					t.NotReady = nil // the operator forced it
				}
				if c, _ := Candidate(h, a, t, true); c {
					act.Node, act.Gen, act.Reason = t.Name, t.Gen, "switchover to "+t.Name
				}
			}
			if act.Node == "" {
				if c, ok := Choose(h, a, nodes, ""); ok {
					act.Node, act.Gen = c.Name, c.Gen
					act.Reason = fmt.Sprintf("switchover target %s cannot take it; placed on %s", a.MoveTo, c.Name)
				} else {
					act.Reason = "switchover target cannot take it and no node is ready"
				}
			}
			out = append(out, act)
		case owner.Leaving:
			if c, ok := Choose(h, a, nodes, a.Node); ok {
				out = append(out, Action{Kind: ActMove, Hierarchy: name, To: c.Name, Epoch: a.Epoch, Reason: a.Node + " is shutting down"})
			}
		case owner.Standby:
			if c, ok := Choose(h, a, nodes, a.Node); ok {
				out = append(out, Action{Kind: ActMove, Hierarchy: name, To: c.Name, Epoch: a.Epoch, Reason: a.Node + " is in standby (drained)"})
			}
		case h.Switchback == spec.SwitchbackAutomatic && reported && rep.State == "online":
			if c, ok := Choose(h, a, nodes, a.Node); ok && h.Priority(c.Name) < h.Priority(a.Node) {
				out = append(out, Action{Kind: ActMove, Hierarchy: name, To: c.Name, Epoch: a.Epoch, Reason: "automatic switchback to higher-priority " + c.Name})
			}
		}
	}
	return out
}
