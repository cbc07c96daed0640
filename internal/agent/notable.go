package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/lifeboat-ha/lifeboat/internal/doctor"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/placement"
)

// The events operators are notified of (internal/notify), each recorded
// once cluster-wide by the node that knows the fact: the leader records
// what it decides and sees (failovers, switchovers, nodes failing and
// joining), each node what concerns itself (readiness, doctor findings,
// its quorum).

// placementEvent gives the kind and severity of a committed placement
// action: "switchover" for the moves an operator or a shutdown asked for,
// "failover" otherwise; a failover is a warning, a hierarchy left out of
// service critical.
func placementEvent(act placement.Action, failover bool) (kind, severity string) {
	switch act.Kind {
	case placement.ActMove:
		return "switchover", events.Info
	case placement.ActStop:
		return "failover", events.Critical
	case placement.ActProceed:
		return "failover", events.Warning
	case placement.ActAssign:
		switch {
		case failover:
			return "failover", events.Warning
		case act.Node == "" && act.MarkFailed:
			return "failover", events.Critical // off a failed node, and nowhere to go yet
		case strings.HasPrefix(act.Reason, "switchover"):
			return "switchover", events.Info
		}
	}
	return "failover", events.Info
}

// reportMembers records, on the leader, a node the failure detector sees
// fail or leave, and one that joins again (leader loop only). At the
// first look of a term, a node already seen failed is recorded too (the
// old leader, killed, is the usual one): the history and notifications
// would otherwise never say so.
func (a *Agent) reportMembers() {
	now := map[string]string{}
	for name, m := range a.c.Members() {
		now[name] = m.State
	}
	prev := a.members
	a.members = now
	for name, st := range now {
		was, known := prev[name]
		switch {
		case prev == nil && st == "failed":
			a.events.Add(events.Event{Kind: "node", Action: "failed", Error: fmt.Sprintf("the failure detector reports node %s failed (seen as this node became leader)", name), Message: "node " + name + " failed", Severity: events.Warning})
		case prev == nil || !known:
		case st == "alive" && (was == "failed" || was == "left" || was == "unknown"):
			a.events.Add(events.Event{Kind: "node", Action: "joined", Message: fmt.Sprintf("node %s joined (the failure detector sees it alive, was %s)", name, was), Severity: events.Info})
		case st == "left" && was != "left":
			a.events.Add(events.Event{Kind: "node", Action: "left", Message: fmt.Sprintf("node %s left the cluster", name), Severity: events.Info})
		case st == "failed" && was != "failed":
			a.events.Add(events.Event{Kind: "node", Action: "failed", Error: fmt.Sprintf("the failure detector reports node %s failed", name), Message: "node " + name + " failed", Severity: events.Warning})
		}
	}
}

// quorumLoop records when this node loses its lease (no majority of
// voters grants it: lost quorum, or fenced) and when it holds one again.
func (a *Agent) quorumLoop(ctx context.Context) {
	if a.self.Witness {
		return
	}
	held, ever := false, false
	for {
		changed := a.c.Leases.Changed()
		gen, _ := a.c.Leases.Current()
		now := a.c.Leases.Valid(gen)
		switch {
		case a.stopping.Load() || ctx.Err() != nil:
			return
		case now && !held && ever:
			a.events.Add(events.Event{Kind: "quorum", Action: "regained", Message: fmt.Sprintf("lease generation %d granted by a majority of voters again", gen), Severity: events.Info})
		case !now && held:
			a.events.Add(events.Event{Kind: "quorum", Action: "lost", Severity: events.Critical,
				Error:   "lease lost: no majority of voters grants it (this node is cut off, or was fenced)",
				Message: "quorum lost: quorum_loss_action " + a.cfg.QuorumLossAction})
		}
		ever = ever || now
		held = now
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// noteCriticalFindings records each critical doctor finding when it first
// appears and when it clears (call with doctorMu held).
func (a *Agent) noteCriticalFindings(fs []doctor.Finding) {
	now := map[string]doctor.Finding{}
	for _, f := range fs {
		if f.Severity == doctor.Critical {
			now[f.ID+"/"+f.Hierarchy+"/"+f.Resource] = f
		}
	}
	for k, f := range now {
		if _, ok := a.doctorCritical[k]; !ok {
			msg := "critical doctor finding " + f.ID
			if f.Fix != "" {
				msg += "; fix: " + f.Fix
			}
			a.events.Add(events.Event{Kind: "doctor", Action: "critical", Hierarchy: f.Hierarchy, Resource: f.Resource, Error: f.Seen, Message: msg, Severity: events.Critical})
		}
	}
	for k, f := range a.doctorCritical {
		if _, ok := now[k]; !ok {
			a.events.Add(events.Event{Kind: "doctor", Action: "resolved", Hierarchy: f.Hierarchy, Resource: f.Resource, Message: "critical finding " + f.ID + " no longer seen", Severity: events.Info})
		}
	}
	a.doctorCritical = now
}
