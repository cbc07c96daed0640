package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/placement"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// catchUpWithLeader waits (briefly) until this node has applied everything
// the leader had applied when asked. After a refresh, the readiness results
// were committed through the leader, which applies a command before it
// answers; a follower learns that they are committed only with the leader's
// next message, so its own commit index may not cover them yet.
func (a *Agent) catchUpWithLeader(ctx context.Context) {
	leader := a.c.Leader()
	c, ok := a.rpc.slow(leader)
	if leader == "" || leader == a.cfg.Node || !ok {
		return
	}
	var st api.Status
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := c.Do(sctx, "GET", "/v1/status", nil, &st)
	cancel()
	if err != nil {
		a.log.Debug("status --refresh: ask the leader for its applied index", "leader", leader, "error", err)
		return
	}
	_ = a.waitFor(ctx, 2*time.Second, func(s *cluster.State) (bool, error) { return s.Index >= st.Index, nil })
}

// status assembles the cluster status from this node's replicated state and
// failure detector.
func (a *Agent) status() api.Status {
	members := a.c.Members()
	leader := a.c.Leader()
	s := a.c.FSM.Copy()
	st := api.Status{Node: a.cfg.Node, Leader: leader, Index: s.Index, Fingerprint: a.tls.Fingerprint(),
		FeatureLevel: s.FeatureLevel(), SupportedLevel: a.c.SupportedLevel()}
	if h := a.c.FSM.Halted(); h != nil {
		st.Halted = h.String()
	}
	st.Maintenance = s.Maintenance
	st.MembersChanged = s.MembersChanged
	st.Removed = a.c.Removed()
	suffrage := a.c.Suffrage()
	st.Joining = a.cfg.Cluster.Join && suffrage[a.cfg.Node] == ""
	gen, until := a.c.Leases.Current()
	st.Local = api.LocalStatus{LeaseHeld: a.c.Leases.Valid(gen), LeaseGen: gen, Hierarchies: map[string]api.LocalHierarchy{}}
	want := a.desired()
	for name, r := range a.eng.Reports() {
		st.Local.Hierarchies[name] = api.LocalHierarchy{State: r.State, Epoch: r.Epoch, Holding: want[name].InService}
	}
	for _, m := range a.c.MemberList() {
		ms := members[m.Name]
		ns := api.NodeStatus{Name: m.Name, State: ms.State, Leader: m.Name == leader, Witness: m.Witness, Version: ms.Version, Level: ms.Level, Suffrage: suffrage[m.Name]}
		if n := s.Nodes[m.Name]; n != nil {
			ns.Gen, ns.Fenced, ns.Leaving = n.Gen, n.Revoked, n.Leaving
			ns.Findings = n.Findings
			ns.ReadinessPace = n.ReadinessPace
			ns.Maintenance, ns.Standby, ns.ConfirmFailover = n.Maintenance, n.Standby, n.ConfirmFailover
			if ns.Version == "" {
				ns.Version = n.Version
			}
			if ns.Level == 0 {
				ns.Level = n.Level
			}
		}
		if m.Name == a.cfg.Node {
			ns.State = "alive"
			ns.Version = Version
			ns.Level = a.c.SupportedLevel()
			switch {
			case m.Witness:
				ns.Lease = "witness (grants only)"
			case a.c.Leases.Valid(gen):
				ns.Lease, ns.LeaseFresh = "held", true
			case gen != 0:
				ns.Lease = fmt.Sprintf("expired %s ago", time.Since(until).Round(time.Millisecond))
			default:
				ns.Lease = "none"
			}
		} else if !m.Witness {
			if ago, ok := a.c.Leases.LastGrant(m.Name, ns.Gen); ok {
				ns.Lease = fmt.Sprintf("renewed %s ago", ago.Round(time.Millisecond))
				ns.LeaseFresh = ago < a.c.Leases.Threshold()
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	var views map[string]placement.NodeView
	for _, name := range s.HierarchyNames() {
		h := s.Hierarchies[name]
		as := s.Assignments[name]
		hs := api.HierarchyStatus{Name: name, Nodes: h.Nodes, Switchback: h.Switchback, Resources: map[string]map[string]string{}, Errors: map[string]string{}}
		if as != nil {
			hs.Owner, hs.Epoch, hs.Online, hs.MoveTo, hs.Failed, hs.Reason = as.Node, as.Epoch, as.Online, as.MoveTo, as.Failed, as.Reason
			if !as.Since.IsZero() {
				hs.Since = as.Since.Format(time.RFC3339Nano)
			}
		}
		for _, n := range spec.SortedKeys(s.Nodes) {
			if r, ok := s.Nodes[n].Reports[name]; ok {
				hs.Resources[n] = r.Resources
				if r.Error != "" {
					hs.Errors[n] = r.Error
				}
			}
		}
		hs.State = hierarchyState(s, as)
		hs.Maintenance = s.MaintenanceOf(name, "")
		if as != nil && len(as.FailedAt) > 0 {
			hs.FailedUntil = map[string]string{}
			for _, n := range as.Failed {
				if exp := as.MarkExpires(n, h.EffectiveFailureTimeout()); !exp.IsZero() {
					hs.FailedUntil[n] = exp.UTC().Format(time.RFC3339)
				}
			}
		}
		if hs.State == "awaiting-confirmation" {
			hs.Reason = confirmWhy(&h, as)
		} else if hs.State == "failed" || hs.State == "unplaced" {
			// Why it runs nowhere, node by node, as this node sees them.
			if views == nil {
				views = a.nodeViews(s)
			}
			hs.Reason = "no node can take it: " + placement.Explain(h, as, views)
		}
		hs.Readiness = map[string]api.Readiness{}
		for _, n := range h.Nodes {
			if ns := s.Nodes[n]; ns != nil {
				if rd, ok := ns.Readiness[name]; ok {
					// At is served to the second, as it always was.
					rd.At = rd.At.Truncate(time.Second)
					hs.Readiness[n] = rd
				}
			}
		}
		st.Hierarchies = append(st.Hierarchies, hs)
	}
	return st
}

func hierarchyState(s *cluster.State, as *cluster.Assignment) string {
	switch {
	case as == nil:
		return "unknown"
	case as.Deleting:
		return "deleting"
	case s.MaintenanceOf(as.Hierarchy, "") != "":
		return engine.StateUnmanaged
	case as.Node == "" && as.Online && !as.ConfirmSince.IsZero():
		return "awaiting-confirmation"
	case as.Node == "" && as.Online && len(as.Failed) > 0:
		return "failed"
	case as.Node == "" && as.Online:
		return "unplaced"
	case as.MoveTo != "":
		return "moving"
	}
	r, ok := s.Report(as.Node, as.Hierarchy, as.Epoch)
	switch {
	case !as.Online && (!ok || r.State == engine.StateOffline):
		return "stopped"
	case !ok:
		return "pending"
	}
	return r.State
}
