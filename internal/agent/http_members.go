package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// memberChange is a membership change forwarded to the leader:
// POST /v1/internal/members.
type memberChange struct {
	Op     string         `json:"op"` // add, remove
	Member cluster.Member `json:"member"`
	By     string         `json:"by"`
	Reason string         `json:"reason,omitempty"`
}

// memberAnswer is the leader's answer to a memberChange.
type memberAnswer struct {
	Steps     []string `json:"steps,omitempty"`
	Error     string   `json:"error,omitempty"`
	NoChange  bool     `json:"no_change,omitempty"`
	NotLeader bool     `json:"not_leader,omitempty"`
	// Code is the HTTP status the refusal maps to.
	Code int `json:"code,omitempty"`
	// Members: the membership as the leader knows it after the change
	// (another node learns raft's new configuration a moment later).
	Members []api.MemberInfo `json:"members,omitempty"`
}

// appliedAnswer is a node's answer to GET /v1/internal/applied.
type appliedAnswer struct {
	Index uint64 `json:"index"`
}

func (a *Agent) memberRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/nodes", a.handleNodeAdd)
	mux.HandleFunc("POST /v1/nodes/{name}/remove", a.handleNodeRemove)
	mux.HandleFunc("GET /v1/internal/applied", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, appliedAnswer{Index: a.c.FSM.Index()})
	}))
	mux.HandleFunc("POST /v1/internal/members", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		var req memberChange
		if !readJSON(w, r, &req) {
			return
		}
		writeJSON(w, a.changeMembers(r.Context(), req))
	}))
}

// handleNodeAdd adds a node to the running cluster: POST /v1/nodes.
func (a *Agent) handleNodeAdd(w http.ResponseWriter, r *http.Request) {
	var req api.MemberRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !a.needLevel(w, "node add") {
		return
	}
	m := cluster.Member{Name: req.Name, Raft: req.Raft, Gossip: req.Gossip, API: req.API, Witness: req.Witness}
	// The new node alone, checked as a config entry (the membership it
	// would make is checked by the leader).
	if probs := config.ValidateMembers([]cluster.Member{m}); len(probs) > 0 {
		var keep []string
		for _, p := range probs {
			if !strings.Contains(p, "witness") && !strings.Contains(p, "third voter") {
				keep = append(keep, strings.ReplaceAll(p, "cluster.nodes[0].", "--"))
			}
		}
		if len(keep) > 0 {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("node add %s refused: %s", req.Name, strings.Join(keep, "; ")))
			return
		}
	}
	a.memberOp(w, r, memberChange{Op: "add", Member: m, By: a.who(r), Reason: req.Reason})
}

// handleNodeRemove removes a node: POST /v1/nodes/{name}/remove.
func (a *Agent) handleNodeRemove(w http.ResponseWriter, r *http.Request) {
	var req api.MemberRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !a.needLevel(w, "node remove") {
		return
	}
	a.memberOp(w, r, memberChange{Op: "remove", Member: cluster.Member{Name: r.PathValue("name")}, By: a.who(r), Reason: req.Reason})
}

// memberOp runs a change on the leader (here or forwarded), following a
// leadership hand-over (a leader asked to remove itself), and answers
// with the membership after it.
func (a *Agent) memberOp(w http.ResponseWriter, r *http.Request, req memberChange) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), cluster.CatchUpTimeout+30*time.Second)
	defer cancel()
	var ans memberAnswer
	var steps []string
	var lastErr error
	for {
		leader := a.c.Leader()
		switch {
		case a.c.IsLeader():
			ans = a.changeMembers(ctx, req)
		case leader != "":
			ans = memberAnswer{}
			err := a.rpc.call(ctx, leader, "POST", "/v1/internal/members", req, &ans)
			var se *api.StatusError
			switch {
			case err != nil && !errors.As(err, &se):
				// The leader did not answer (it died, or is cut off):
				// ask again, of whichever leads next, until the
				// deadline. A change it made before dying is resumed
				// (add) or found done.
				lastErr = fmt.Errorf("ask the leader %s: %w", leader, err)
				ans = memberAnswer{NotLeader: true}
			case err != nil:
				ans = memberAnswer{Error: fmt.Sprintf("ask the leader %s: %v", leader, err), Code: http.StatusServiceUnavailable}
			}
		default:
			ans = memberAnswer{NotLeader: true}
		}
		steps = append(steps, ans.Steps...)
		if !ans.NotLeader {
			break
		}
		select {
		case <-ctx.Done():
			why := "no raft leader reachable (is a majority of nodes up?)"
			if lastErr != nil {
				why += ": " + lastErr.Error()
			}
			writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("node %s %s: %s", req.Op, req.Member.Name, why))
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	if ans.Error != "" && !ans.NoChange {
		code := ans.Code
		if code == 0 {
			code = http.StatusConflict
		}
		writeErr(w, code, errors.New(ans.Error))
		return
	}
	if !ans.NoChange {
		a.memberEvent(req)
	}
	out := api.MemberOutcome{Node: req.Member.Name, Changed: !ans.NoChange, Steps: steps}
	switch {
	case ans.NoChange:
		out.Message = ans.Error
	case req.Op == "add":
		out.Added = true
		out.Message = fmt.Sprintf("node %s is a voting member of the cluster", req.Member.Name)
		if req.Member.Witness {
			out.Message = fmt.Sprintf("node %s is a voting member of the cluster (witness)", req.Member.Name)
		}
		out.Message += ": add it to hierarchies' node lists (lifeboat apply) for it to take any"
	default:
		out.Removed = true
		out.Message = fmt.Sprintf("node %s is no longer a member: stop its agent (it holds and grants nothing now) and remove its data directory before reusing the machine", req.Member.Name)
	}
	a.catchUpWithLeader(ctx)
	out.Members = ans.Members
	if out.Members == nil {
		out.Members = a.memberInfos()
	}
	out.Duration = time.Since(start).Round(time.Millisecond).String()
	writeJSON(w, out)
}

// memberInfos is the membership with each node's raft suffrage.
func (a *Agent) memberInfos() []api.MemberInfo {
	suffrage := a.c.Suffrage()
	var out []api.MemberInfo
	for _, m := range a.c.MemberList() {
		out = append(out, api.MemberInfo{Name: m.Name, Witness: m.Witness, Raft: m.Raft, Gossip: m.Gossip, API: m.API, Suffrage: suffrage[m.Name]})
	}
	return out
}

// changeMembers runs a membership change on this node, the leader.
func (a *Agent) changeMembers(ctx context.Context, req memberChange) memberAnswer {
	if !a.c.IsLeader() {
		return memberAnswer{NotLeader: true}
	}
	var ans memberAnswer
	var err error
	switch req.Op {
	case "add":
		applied := func(ctx context.Context, m cluster.Member) (uint64, error) {
			var out appliedAnswer
			err := a.rpc.call(ctx, m.Name, "GET", "/v1/internal/applied", nil, &out)
			return out.Index, err
		}
		err = a.c.AddMember(ctx, req.Member, req.By, req.Reason, applied, func(s string) { ans.Steps = append(ans.Steps, s) })
	case "remove":
		err = a.c.RemoveMember(ctx, req.Member.Name, req.By, req.Reason)
	default:
		return memberAnswer{Error: fmt.Sprintf("unknown membership operation %q", req.Op), Code: http.StatusBadRequest}
	}
	switch {
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrHandedOver):
		if errors.Is(err, cluster.ErrHandedOver) {
			ans.Steps = append(ans.Steps, fmt.Sprintf("%s led the cluster: handed leadership over", a.cfg.Node))
		}
		ans.NotLeader = true
		return ans
	case errors.Is(err, cluster.ErrNoChange):
		ans.NoChange, ans.Error = true, err.Error()
		return ans
	case errors.As(err, new(cluster.UnknownMemberError)):
		ans.Error, ans.Code = fmt.Sprintf("node %s %s refused: %v", req.Op, req.Member.Name, err), http.StatusNotFound
		return ans
	case err != nil:
		ans.Error, ans.Code = err.Error(), http.StatusConflict
		return ans
	}
	ans.Members = a.memberInfos()
	return ans
}

// memberEvent records a membership change in the history of the node
// that was asked, naming who asked and why.
func (a *Agent) memberEvent(req memberChange) {
	verb := map[string]string{"add": "added", "remove": "removed"}[req.Op]
	msg := fmt.Sprintf("node %s %s", req.Member.Name, verb)
	if req.Op == "add" {
		msg += fmt.Sprintf(" (raft %s, gossip %s, api %s", req.Member.Raft, req.Member.Gossip, req.Member.API)
		if req.Member.Witness {
			msg += ", witness"
		}
		msg += ")"
	}
	if req.Reason != "" {
		msg += " (reason: " + req.Reason + ")"
	}
	a.events.Add(events.Event{Kind: "membership", Action: "node-" + req.Op, Message: msg, By: req.By, Severity: events.Warning})
	a.log.Info("membership change", "op", req.Op, "node", req.Member.Name, "by", req.By, "reason", req.Reason)
}
