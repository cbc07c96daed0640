package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

func (a *Agent) handleApply(w http.ResponseWriter, r *http.Request) {
	var req api.ApplyRequest
	if !readJSON(w, r, &req) {
		return
	}
	if len(req.Hierarchies) == 0 {
		writeErr(w, http.StatusBadRequest, errors.New("nothing to apply: the request has no hierarchies"))
		return
	}
	problems := a.specProblems(req.Hierarchies)
	for i := range req.Hierarchies {
		req.Hierarchies[i].Normalize()
	}
	if len(problems) > 0 {
		writeErr(w, http.StatusBadRequest, errors.New(strings.Join(problems, "\n")))
		return
	}
	var resp api.ApplyResponse
	var changed []spec.Hierarchy
	a.c.FSM.View(func(s *cluster.State) {
		for _, h := range req.Hierarchies {
			old, ok := s.Hierarchies[h.Name]
			switch {
			case !ok:
				resp.Created = append(resp.Created, h.Name)
				changed = append(changed, h)
			case string(encodeJSON(old)) != string(encodeJSON(h)):
				resp.Updated = append(resp.Updated, h.Name)
				changed = append(changed, h)
			default:
				resp.Unchanged = append(resp.Unchanged, h.Name)
			}
		}
	})
	if len(changed) > 0 {
		if _, err := a.submit(r.Context(), cluster.PutHierarchies{Hierarchies: changed}); err != nil {
			writeErr(w, http.StatusServiceUnavailable, err)
			return
		}
	}
	writeJSON(w, resp)
}

// specProblems checks hierarchies as apply does (and restore): the kits'
// validation, nodes that run resources in this cluster, and settings the
// cluster's feature level does not carry yet.
func (a *Agent) specProblems(hs []spec.Hierarchy) []string {
	var problems []string
	resNodes := map[string]bool{}
	for _, n := range a.c.MemberList() {
		if !n.Witness {
			resNodes[n.Name] = true
		}
	}
	for i := range hs {
		h := &hs[i]
		for _, p := range a.kits.ValidateHierarchy(h) {
			problems = append(problems, fmt.Sprintf("hierarchy %q: %s", h.Name, p.Error()))
		}
		for _, p := range a.kits.ValidateHost(h) {
			problems = append(problems, fmt.Sprintf("hierarchy %q: %s (on %s)", h.Name, p.Error(), a.cfg.Node))
		}
		for j, n := range h.Nodes {
			if !resNodes[n] {
				problems = append(problems, fmt.Sprintf("hierarchy %q: nodes[%d]: %q is not a cluster node that runs resources (known: %s)", h.Name, j, n, strings.Join(spec.SortedKeys(resNodes), ", ")))
			}
		}
	}
	// Settings an older voter cannot read: 0.1 drops the failure policy
	// from the spec (and its leader refuses the fields), so they wait for
	// feature level 2.
	if lvl := a.c.FSM.Level(); lvl < cluster.LevelTyped {
		for _, h := range hs {
			if h.UsesFailurePolicy() {
				problems = append(problems, fmt.Sprintf("hierarchy %q: failure_timeout, migration_threshold, max_failovers and failover_window need cluster feature level %d (every node on lifeboat 0.2 or later); the cluster is at %d: finish the upgrade first (`lifeboat status` shows each node's version)", h.Name, cluster.LevelTyped, lvl))
			}
		}
	}
	return problems
}

func (a *Agent) assignment(name string) (cluster.Assignment, spec.Hierarchy, bool) {
	var as cluster.Assignment
	var h spec.Hierarchy
	var ok bool
	a.c.FSM.View(func(s *cluster.State) {
		if p := s.Assignments[name]; p != nil {
			as, h, ok = *p, s.Hierarchies[name], true
		}
	})
	return as, h, ok
}

// waitFor blocks until cond holds on the local state or the timeout ends.
func (a *Agent) waitFor(ctx context.Context, timeout time.Duration, cond func(*cluster.State) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ch := a.c.FSM.Changed()
		var done bool
		var err error
		a.c.FSM.View(func(s *cluster.State) { done, err = cond(s) })
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s", timeout)
		case <-ch:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func timeoutOr(d spec.Duration, def time.Duration) time.Duration {
	if d > 0 {
		return d.D()
	}
	return def
}

func (a *Agent) handleSwitchover(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.MoveRequest
	if !readJSON(w, r, &req) {
		return
	}
	as, h, ok := a.assignment(name)
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", name))
		return
	}
	if a.refuseUnmanaged(w, name, "switchover of") {
		return
	}
	if h.Priority(req.To) < 0 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("node %q is not in hierarchy %s's node list (%s)", req.To, name, strings.Join(h.Nodes, ", ")))
		return
	}
	start := time.Now()
	if as.Node == req.To && as.Online && as.MoveTo == "" && !as.FailedOn(req.To) {
		if rep, ok := a.report(req.To, name, as.Epoch); ok && rep.State == engine.StateOnline {
			writeJSON(w, api.Outcome{Hierarchy: name, Owner: req.To, State: rep.State, Epoch: as.Epoch, Duration: "0s", Message: "already in service on " + req.To})
			return
		}
		// Already assigned there (still restoring): wait for it, no move.
		a.finishWait(w, r, name, start, as.Epoch-1, timeoutOr(req.Timeout, 2*time.Minute), onlineOrFailedOn(req.To))
		return
	}
	// Prove the target ready now, not as of its last scheduled probe.
	if rd, err := a.refreshNode(r.Context(), req.To, name); err != nil {
		if !req.Force {
			writeErr(w, http.StatusConflict, fmt.Errorf("switchover to %s refused: its readiness could not be checked: %v (use --force to move anyway)", req.To, err))
			return
		}
	} else if x, ok := rd[name]; ok && !x.Ready && !req.Force {
		writeErr(w, http.StatusConflict, fmt.Errorf("switchover to %s refused: %s is NOT READY for %s: %s (fix it, or use --force to move anyway)", req.To, req.To, name, x.Reason))
		return
	}
	before := as.Epoch
	asked := time.Now() // the event's time: the request, not its commit
	if _, err := a.submit(r.Context(), cluster.RequestMove{Hierarchy: name, To: req.To, Force: req.Force, ClearFailed: true, Reason: "switchover to " + req.To + " requested"}); err != nil {
		writeErr(w, http.StatusConflict, err)
		return
	}
	a.events.Add(events.Event{Time: asked, Kind: "switchover", Hierarchy: name, Action: "switchover", Message: "switchover to " + req.To + " requested", By: a.who(r)})
	a.finishWait(w, r, name, start, before, timeoutOr(req.Timeout, 2*time.Minute), func(s *cluster.State, as *cluster.Assignment) (bool, error) {
		if as.Node != req.To {
			if as.MoveTo == "" && as.Node != "" {
				if rep, ok := s.Report(as.Node, name, as.Epoch); ok && rep.State == engine.StateOnline {
					return false, fmt.Errorf("switchover to %s did not happen: %s; %s stays on %s", req.To, as.Reason, name, as.Node)
				}
			}
			return false, nil
		}
		return onlineOrFailed(s, as)
	})
}

func onlineOrFailedOn(node string) func(*cluster.State, *cluster.Assignment) (bool, error) {
	return func(s *cluster.State, as *cluster.Assignment) (bool, error) {
		if as.Node != node {
			return false, fmt.Errorf("%s moved to %q: %s", as.Hierarchy, as.Node, as.Reason)
		}
		return onlineOrFailed(s, as)
	}
}

func onlineOrFailed(s *cluster.State, as *cluster.Assignment) (bool, error) {
	rep, ok := s.Report(as.Node, as.Hierarchy, as.Epoch)
	if !ok {
		return false, nil
	}
	switch rep.State {
	case engine.StateOnline:
		return true, nil
	case engine.StateFailed:
		return false, fmt.Errorf("%s failed on %s: %s", as.Hierarchy, as.Node, rep.Error)
	}
	return false, nil
}

func (a *Agent) report(node, h string, epoch uint64) (cluster.HierarchyReport, bool) {
	var rep cluster.HierarchyReport
	var ok bool
	a.c.FSM.View(func(s *cluster.State) { rep, ok = s.Report(node, h, epoch) })
	return rep, ok
}

// finishWait waits for cond and writes the outcome.
// Only states after the request's own change (epoch above before) count:
// a follower's state may lag the leader's commit.
func (a *Agent) finishWait(w http.ResponseWriter, r *http.Request, name string, start time.Time, before uint64, timeout time.Duration, cond func(*cluster.State, *cluster.Assignment) (bool, error)) {
	err := a.waitFor(r.Context(), timeout, func(s *cluster.State) (bool, error) {
		as := s.Assignments[name]
		if as == nil {
			return true, nil
		}
		if as.Epoch <= before {
			return false, nil
		}
		return cond(s, as)
	})
	as, _, _ := a.assignment(name)
	out := api.Outcome{Hierarchy: name, Owner: as.Node, Epoch: as.Epoch, Duration: time.Since(start).Round(time.Millisecond).String()}
	var st string
	a.c.FSM.View(func(s *cluster.State) { st = hierarchyState(s, s.Assignments[name]) })
	out.State = st
	if err != nil {
		out.Message = err.Error()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(struct {
			api.Outcome
			Error string `json:"error"`
		}{out, err.Error()})
		return
	}
	writeJSON(w, out)
}

// handleFailoverDecision decides a failover that waits for confirmation:
// POST /v1/hierarchies/{name}/failover/{decision}, confirm or block.
// Confirm waits (like start) until the hierarchy is online somewhere.
func (a *Agent) handleFailoverDecision(w http.ResponseWriter, r *http.Request) {
	name, decision := r.PathValue("name"), r.PathValue("decision")
	var req api.ActionRequest
	if !readJSON(w, r, &req) {
		return
	}
	if decision != "confirm" && decision != "block" {
		writeErr(w, http.StatusNotFound, fmt.Errorf("unknown decision %q: use confirm or block", decision))
		return
	}
	cur, _, ok := a.assignment(name)
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", name))
		return
	}
	if a.refuseUnmanaged(w, name, "failover "+decision+" of") {
		return
	}
	proceed := decision == "confirm"
	reason := "failover " + map[bool]string{true: "confirmed", false: "blocked"}[proceed] + " by an operator"
	if !proceed {
		reason += "; `lifeboat start " + name + "` starts it"
	}
	start := time.Now()
	if _, err := a.submit(r.Context(), cluster.ConfirmFailover{Hierarchy: name, Proceed: proceed, Reason: reason}); err != nil {
		if errors.Is(err, cluster.ErrNothingToConfirm) || strings.Contains(err.Error(), cluster.ErrNothingToConfirm.Error()) {
			writeErr(w, http.StatusConflict, fmt.Errorf("%s: no failover is waiting for confirmation (state: see lifeboat status)", name))
			return
		}
		writeErr(w, http.StatusConflict, err)
		return
	}
	a.events.Add(events.Event{Kind: "failover", Hierarchy: name, Action: "failover-" + decision, Message: reason, By: a.who(r)})
	if !proceed || req.NoWait {
		as, _, _ := a.assignment(name)
		writeJSON(w, api.Outcome{Hierarchy: name, Owner: as.Node, Epoch: as.Epoch, State: map[bool]string{true: "requested", false: "stopped"}[proceed],
			Duration: time.Since(start).Round(time.Millisecond).String()})
		return
	}
	a.finishWait(w, r, name, start, cur.Epoch, timeoutOr(req.Timeout, 2*time.Minute), func(s *cluster.State, as *cluster.Assignment) (bool, error) {
		if as.Node == "" {
			return false, nil
		}
		return onlineOrFailed(s, as)
	})
}

func (a *Agent) handleStartStop(online bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var req api.ActionRequest
		if !readJSON(w, r, &req) {
			return
		}
		cur, _, ok := a.assignment(name)
		if !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", name))
			return
		}
		verb := map[bool]string{true: "start", false: "stop"}[online]
		if a.refuseUnmanaged(w, name, verb+" of") {
			return
		}
		start := time.Now()
		if _, err := a.submit(r.Context(), cluster.SetOnline{Hierarchy: name, Online: online, ClearFailed: online, Reason: verb + " requested"}); err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		a.events.Add(events.Event{Kind: "failover", Hierarchy: name, Action: verb, Message: verb + " requested", By: a.who(r)})
		if req.NoWait {
			as, _, _ := a.assignment(name)
			writeJSON(w, api.Outcome{Hierarchy: name, Owner: as.Node, Epoch: as.Epoch, State: "requested"})
			return
		}
		a.finishWait(w, r, name, start, cur.Epoch, timeoutOr(req.Timeout, 2*time.Minute), func(s *cluster.State, as *cluster.Assignment) (bool, error) {
			if online {
				if as.Node == "" {
					if len(as.Failed) > 0 {
						return false, fmt.Errorf("no node could take %s", name)
					}
					return false, nil
				}
				return onlineOrFailed(s, as)
			}
			if as.Node == "" {
				return true, nil
			}
			rep, ok := s.Report(as.Node, name, as.Epoch)
			return ok && (rep.State == engine.StateOffline || rep.State == engine.StateFailed), nil
		})
	}
}

func (a *Agent) handleDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.ActionRequest
	if !readJSON(w, r, &req) {
		return
	}
	if _, _, ok := a.assignment(name); !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", name))
		return
	}
	if a.refuseUnmanaged(w, name, "delete of") {
		return
	}
	start := time.Now()
	if _, err := a.submit(r.Context(), cluster.Delete{Hierarchy: name}); err != nil {
		writeErr(w, http.StatusConflict, err)
		return
	}
	err := a.waitFor(r.Context(), timeoutOr(req.Timeout, 2*time.Minute), func(s *cluster.State) (bool, error) {
		return s.Assignments[name] == nil, nil
	})
	out := api.Outcome{Hierarchy: name, State: "deleted", Duration: time.Since(start).Round(time.Millisecond).String()}
	if err != nil {
		writeErr(w, http.StatusConflict, fmt.Errorf("delete %s: still being taken out of service: %w", name, err))
		return
	}
	writeJSON(w, out)
}
