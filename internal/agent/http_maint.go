package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/auth"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/placement"
)

// who names the caller of an operator's request for the history: the
// local socket is root on this node; a TCP caller is named by its token.
func (a *Agent) who(r *http.Request) string {
	switch r.Context().Value(authKey) {
	case accessLocal:
		return "root on " + a.cfg.Node + " (local socket)"
	case accessAPI:
		t, _ := r.Context().Value(tokenKey).(auth.Token)
		return fmt.Sprintf("%s %s (%s) from %s (through %s)", t.Kind(), t.Name, t.Role, r.RemoteAddr, a.cfg.Node)
	}
	return "cluster member (through " + a.cfg.Node + ")"
}

// needLevel refuses an operation the cluster's feature level does not
// have yet.
func (a *Agent) needLevel(w http.ResponseWriter, what string) bool {
	if lvl := a.c.FSM.Level(); lvl < cluster.LevelTyped {
		writeErr(w, http.StatusConflict, fmt.Errorf("%s needs cluster feature level %d (every node on lifeboat 0.2 or later); the cluster is at %d: finish the upgrade first (`lifeboat status` shows each node's version)", what, cluster.LevelTyped, lvl))
		return false
	}
	return true
}

// refuseUnmanaged refuses an operator's action on a hierarchy under
// maintenance: lifeboat acts on nothing there until it ends.
func (a *Agent) refuseUnmanaged(w http.ResponseWriter, name, verb string) bool {
	var why string
	a.c.FSM.View(func(s *cluster.State) { why = s.MaintenanceOf(name, "") })
	if why == "" {
		return false
	}
	writeErr(w, http.StatusConflict, fmt.Errorf("%s %s refused: %s, so lifeboat starts, stops and moves nothing there; end it first (`lifeboat maintenance off`, see `lifeboat status`)", verb, name, why))
	return true
}

// resourceNode reports whether name is a cluster node that runs
// resources, and if not why.
func (a *Agent) resourceNode(name string) (int, error) {
	for _, m := range a.c.MemberList() {
		if m.Name == name {
			if m.Witness {
				return http.StatusBadRequest, fmt.Errorf("node %s is a witness: it runs no resources, so it has nothing to drain or leave alone", name)
			}
			return 0, nil
		}
	}
	var names []string
	for _, m := range a.c.MemberList() {
		names = append(names, m.Name)
	}
	return http.StatusNotFound, fmt.Errorf("no node %q in the cluster (its nodes: %s)", name, strings.Join(names, ", "))
}

// handleMaintenance turns maintenance on or off: POST /v1/maintenance.
func (a *Agent) handleMaintenance(w http.ResponseWriter, r *http.Request) {
	var req api.MaintenanceRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !a.needLevel(w, "maintenance") {
		return
	}
	what := "the cluster"
	switch req.Scope {
	case cluster.ScopeCluster:
		req.Name = ""
	case cluster.ScopeNode:
		if code, err := a.resourceNode(req.Name); err != nil {
			writeErr(w, code, err)
			return
		}
		what = "node " + req.Name
	case cluster.ScopeHierarchy:
		if _, _, ok := a.assignment(req.Name); !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", req.Name))
			return
		}
		what = "hierarchy " + req.Name
	default:
		writeErr(w, http.StatusBadRequest, fmt.Errorf("unknown maintenance scope %q: use cluster, node or hierarchy", req.Scope))
		return
	}
	out := api.MaintenanceOutcome{Scope: req.Scope, Name: req.Name, On: req.On}
	by := a.who(r)
	_, err := a.submit(r.Context(), cluster.SetMaintenance{Scope: req.Scope, Name: req.Name, On: req.On, By: by, Reason: req.Reason})
	onOff := map[bool]string{true: "on", false: "off"}[req.On]
	switch {
	case err != nil && strings.Contains(err.Error(), cluster.ErrNoChange.Error()):
		out.Message = fmt.Sprintf("maintenance of %s was already %s", what, onOff)
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("maintenance %s for %s: %w", onOff, what, err))
		return
	default:
		out.Changed = true
		out.Message = fmt.Sprintf("maintenance of %s is %s", what, onOff)
		if req.On {
			out.Message += ": lifeboat starts, stops, recovers and fails over nothing there; checks go on"
		}
		msg := out.Message
		if req.Reason != "" {
			msg += " (reason: " + req.Reason + ")"
		}
		// On is a warning (no failover there while it lasts): notified
		// by default.
		a.events.Add(events.Event{Kind: "maintenance", Hierarchy: map[bool]string{true: req.Name}[req.Scope == cluster.ScopeHierarchy],
			Action: "maintenance-" + onOff, Message: msg, By: by, Severity: map[bool]string{true: events.Warning, false: events.Info}[req.On]})
		a.log.Info("maintenance "+onOff, "scope", req.Scope, "name", req.Name, "by", by, "reason", req.Reason)
	}
	a.c.FSM.View(func(s *cluster.State) {
		for _, name := range s.HierarchyNames() {
			as := s.Assignments[name]
			covered := req.Scope == cluster.ScopeCluster || (req.Scope == cluster.ScopeHierarchy && name == req.Name) ||
				(req.Scope == cluster.ScopeNode && as != nil && as.Node == req.Name)
			if !covered || as == nil {
				continue
			}
			o := api.Outcome{Hierarchy: name, Owner: as.Node, Epoch: as.Epoch, State: hierarchyState(s, as)}
			if !req.On && out.Changed {
				o.Message = as.Reason
			}
			out.Hierarchies = append(out.Hierarchies, o)
		}
	})
	writeJSON(w, out)
}

// handleStandby drains a node (standby) or takes it back (unstandby):
// POST /v1/nodes/{name}/{standby|unstandby}. Standby waits until every
// hierarchy the node ran is in service elsewhere (or the timeout).
func (a *Agent) handleStandby(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var req api.StandbyRequest
		if !readJSON(w, r, &req) {
			return
		}
		verb := map[bool]string{true: "standby", false: "unstandby"}[on]
		if !a.needLevel(w, "node "+verb) {
			return
		}
		if code, err := a.resourceNode(name); err != nil {
			writeErr(w, code, fmt.Errorf("%s refused: %w", verb, err))
			return
		}
		start := time.Now()
		// What it runs, and where each would go.
		var owned []string
		var problems []string
		stuck := map[string]bool{}
		a.c.FSM.View(func(s *cluster.State) {
			views := a.nodeViews(s)
			if v, ok := views[name]; ok {
				v.Standby = true
				views[name] = v
			}
			for _, h := range s.HierarchyNames() {
				as := s.Assignments[h]
				if as == nil || as.Node != name || !as.Online || as.Deleting {
					continue
				}
				if why := s.MaintenanceOf(h, ""); why != "" {
					problems = append(problems, fmt.Sprintf("%s: %s, so it cannot be moved", h, why))
					continue
				}
				owned = append(owned, h)
				if _, ok := placement.Choose(s.Hierarchies[h], as, views, name); !ok {
					stuck[h] = true
					problems = append(problems, fmt.Sprintf("%s: no other node can take it (%s)", h, placement.Explain(s.Hierarchies[h], as, views)))
				}
			}
		})
		if on && len(problems) > 0 && !req.Force {
			writeErr(w, http.StatusConflict, fmt.Errorf("standby of %s refused: what it runs would stay on it:\n  %s\n(fix that, or use --force: the node takes nothing new and these stay where they are until a node can take them)",
				name, strings.Join(problems, "\n  ")))
			return
		}
		by := a.who(r)
		out := api.StandbyOutcome{Node: name, Standby: on}
		_, err := a.submit(r.Context(), cluster.SetStandby{Node: name, On: on, By: by, Reason: req.Reason})
		switch {
		case err != nil && strings.Contains(err.Error(), cluster.ErrNoChange.Error()):
			out.Message = fmt.Sprintf("node %s was already %s", name, map[bool]string{true: "in standby", false: "out of standby"}[on])
		case err != nil:
			writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("%s %s: %w", verb, name, err))
			return
		default:
			out.Changed = true
			out.Message = fmt.Sprintf("node %s is in standby: it takes nothing until `lifeboat node unstandby %s`", name, name)
			if !on {
				out.Message = fmt.Sprintf("node %s is out of standby: it may take hierarchies again", name)
			}
			msg := out.Message
			if req.Reason != "" {
				msg += " (reason: " + req.Reason + ")"
			}
			a.events.Add(events.Event{Kind: "maintenance", Action: verb, Message: msg, By: by, Severity: map[bool]string{true: events.Warning, false: events.Info}[on]})
			a.log.Info("node "+verb, "node", name, "by", by, "reason", req.Reason)
		}
		if !on || req.NoWait || len(owned) == 0 {
			out.Duration = time.Since(start).Round(time.Millisecond).String()
			writeJSON(w, out)
			return
		}
		// Drained: each hierarchy it ran is online elsewhere (or failed
		// there), or could not move at all.
		timeout := timeoutOr(req.Timeout, 2*time.Minute)
		err = a.waitFor(r.Context(), timeout, func(s *cluster.State) (bool, error) {
			for _, h := range owned {
				as := s.Assignments[h]
				if as == nil || !as.Online {
					continue
				}
				if as.Node == name && as.MoveTo == "" && stuck[h] {
					continue // forced: it stays
				}
				if as.Node == name {
					return false, nil
				}
				if as.Node == "" || as.MoveTo != "" {
					return false, nil
				}
				if rep, ok := s.Report(as.Node, h, as.Epoch); !ok || (rep.State != engine.StateOnline && rep.State != engine.StateFailed) {
					return false, nil
				}
			}
			return true, nil
		})
		a.c.FSM.View(func(s *cluster.State) {
			for _, h := range owned {
				if as := s.Assignments[h]; as != nil {
					out.Moved = append(out.Moved, api.Outcome{Hierarchy: h, Owner: as.Node, Epoch: as.Epoch, State: hierarchyState(s, as), Message: as.Reason})
				}
			}
		})
		out.Duration = time.Since(start).Round(time.Millisecond).String()
		if err != nil {
			out.Message += fmt.Sprintf("; not yet drained: %v (see `lifeboat status`)", err)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(struct {
				api.StandbyOutcome
				Error string `json:"error"`
			}{out, out.Message})
			return
		}
		writeJSON(w, out)
	}
}

// handleNodeConfirm makes the failovers of what a node runs wait for an
// operator's confirmation, or stops that: POST
// /v1/nodes/{name}/confirm-failover.
func (a *Agent) handleNodeConfirm(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.NodeSettingRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !a.needLevel(w, "confirm-failover for a node") {
		return
	}
	if code, err := a.resourceNode(name); err != nil {
		writeErr(w, code, err)
		return
	}
	by := a.who(r)
	out := api.NodeSettingOutcome{Node: name, Setting: "confirm-failover", On: req.On}
	onOff := map[bool]string{true: "on", false: "off"}[req.On]
	_, err := a.submit(r.Context(), cluster.SetConfirmFailover{Node: name, On: req.On, By: by, Reason: req.Reason})
	switch {
	case err != nil && strings.Contains(err.Error(), cluster.ErrNoChange.Error()):
		out.Message = fmt.Sprintf("confirm-failover of node %s was already %s", name, onOff)
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("confirm-failover %s for %s: %w", onOff, name, err))
		return
	default:
		out.Changed = true
		out.Message = fmt.Sprintf("confirm-failover of node %s is %s", name, onOff)
		if req.On {
			out.Message += fmt.Sprintf(": when what %s runs fails or %s is fenced, the failover waits for `lifeboat failover confirm|block HIERARCHY` (each hierarchy's confirm_timeout and confirm_default apply)", name, name)
		}
		a.events.Add(events.Event{Kind: "maintenance", Action: "confirm-failover-" + onOff, Message: out.Message, By: by, Severity: events.Warning})
		a.log.Info("node confirm-failover "+onOff, "node", name, "by", by, "reason", req.Reason)
	}
	writeJSON(w, out)
}
