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
	"github.com/lifeboat-ha/lifeboat/internal/backup"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// backupRoutes serves backup and restore (the API token, the local socket,
// or a member forwarding to the leader).
func (a *Agent) backupRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/backup", a.handleBackup)
	mux.HandleFunc("POST /v1/restore", a.handleRestore)
}

// leaderWait bounds how long backup and restore look for a raft leader
// and wait for its barrier: an election takes about a second with any
// timing profile, and a client with a short timeout still gets the
// reason rather than its own deadline.
const leaderWait = 4 * time.Second

// atLeader makes the request run on the raft leader with a state that
// holds every committed change: on the leader, after a barrier (it
// returns true: go on here); on a follower, the request is forwarded to
// the leader and its answer relayed (false). Without a leader or a quorum
// it answers 503 and returns false.
func (a *Agent) atLeader(w http.ResponseWriter, r *http.Request, body any) bool {
	if h := a.c.FSM.Halted(); h != nil {
		writeErr(w, http.StatusServiceUnavailable, errors.New(h.String()))
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), leaderWait)
	defer cancel()
	for {
		if a.c.IsLeader() {
			f := a.c.Raft.Barrier(leaderWait)
			err := f.Error()
			if err == nil {
				return true
			}
			if !a.c.IsLeader() && ctx.Err() == nil {
				// Leadership moved (or was lost with the quorum): look
				// for the next leader until the deadline.
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("%s leads but could not commit a barrier (no quorum? is a majority of voters up?): %w", a.cfg.Node, err))
			return false
		}
		if r.URL.Query().Get("forwarded") == "1" {
			writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("%s is no longer the raft leader: try again", a.cfg.Node))
			return false
		}
		if leader := a.c.Leader(); leader != "" {
			a.forwardToLeader(ctx, w, r, leader, body)
			return false
		}
		select {
		case <-ctx.Done():
			writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("no raft leader after %s: the cluster has no quorum (is a majority of voters up? lifeboat status shows who is alive)", leaderWait))
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// forwardToLeader sends the request on to the leader and relays its answer.
func (a *Agent) forwardToLeader(ctx context.Context, w http.ResponseWriter, r *http.Request, leader string, body any) {
	c, ok := a.rpc.slow(leader)
	if !ok {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("leader %q is not in the configured membership", leader))
		return
	}
	path := r.URL.Path + "?forwarded=1"
	var out json.RawMessage
	if err := c.Do(ctx, r.Method, path, body, &out); err != nil {
		var se *api.StatusError
		if errors.As(err, &se) {
			writeErr(w, se.Code, errors.New(se.Msg))
			return
		}
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("forward %s %s to the leader %s (is it up? without a quorum there is no leader): %w", r.Method, r.URL.Path, leader, err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// backupMembers is the membership as this node knows it.
func (a *Agent) backupMembers() []backup.Member {
	var ms []backup.Member
	for _, m := range a.c.MemberList() {
		ms = append(ms, backup.Member{Name: m.Name, Witness: m.Witness, Raft: m.Raft, Gossip: m.Gossip, API: m.API})
	}
	return ms
}

// handleBackup answers GET /v1/backup with a backup file of the leader's
// state after a barrier.
func (a *Agent) handleBackup(w http.ResponseWriter, r *http.Request) {
	if !a.atLeader(w, r, nil) {
		return
	}
	s := a.c.FSM.Copy()
	body := backup.FromState(s, backup.Body{Created: time.Now().UTC(), Cluster: a.tls.ClusterID(), LifeboatVersion: Version,
		Node: a.cfg.Node, FeatureLevel: s.FeatureLevel(), RaftIndex: s.Index, Members: a.backupMembers()})
	data, sum, err := backup.Encode(body)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	if len(data) > backup.MaxSize {
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("the backup of %d hierarchies would be %d bytes, more than restore accepts (%d): not written", len(body.Hierarchies), len(data), backup.MaxSize))
		return
	}
	a.log.Info("backup taken", "index", s.Index, "hierarchies", len(body.Hierarchies), "checksum", sum)
	a.events.Add(events.Event{Kind: "cluster", Action: "backup", Message: fmt.Sprintf("backup of %d hierarchies at raft index %d (%s)", len(body.Hierarchies), s.Index, sum), By: a.who(r)})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}

// handleRestore validates a backup, compares it with the leader's state
// and, unless it is a dry run, commits it as one restore entry.
func (a *Agent) handleRestore(w http.ResponseWriter, r *http.Request) {
	var req api.RestoreRequest
	if !readJSON(w, r, &req) {
		return
	}
	name := req.Name
	if name == "" {
		name = "the backup"
	}
	b, err := backup.Decode(name, req.Backup, a.kits.ValidateHierarchy)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if !a.atLeader(w, r, req) {
		return
	}
	if problems := a.specProblems(b.Hierarchies); len(problems) > 0 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("%s cannot be restored into this cluster (nothing was changed):\n%s", name, strings.Join(problems, "\n")))
		return
	}
	s := a.c.FSM.Copy()
	resp := api.RestoreResponse{DryRun: req.DryRun, Prune: req.Prune, Node: a.cfg.Node, RaftIndex: s.Index, Backup: api.InfoOf(b),
		SameCluster: b.Cluster == a.tls.ClusterID(), Diff: backup.Compare(&b.Body, s, a.backupMembers())}
	if req.DryRun || !resp.Diff.Changes(req.Prune) {
		writeJSON(w, resp)
		return
	}
	if lvl := s.FeatureLevel(); lvl < cluster.LevelTyped {
		writeErr(w, http.StatusConflict, fmt.Errorf("restore needs cluster feature level %d (every node on lifeboat 0.2 or later); the cluster is at %d: finish the upgrade first (nothing was changed)", cluster.LevelTyped, lvl))
		return
	}
	online := map[string]bool{}
	for n, wish := range b.Wishes {
		online[n] = wish == backup.Online
	}
	cmd := cluster.Restore{Hierarchies: b.Hierarchies, Online: online, Prune: req.Prune, Reason: "restored from backup " + b.Checksum}
	res, idx, err := a.c.ApplyAt(cmd, time.Now().UTC(), leaderWait)
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("%s lost the raft leadership while committing the restore: it was applied whole or not at all; run the restore again (it is idempotent) or check with --dry-run", a.cfg.Node))
		return
	case res.Err != nil:
		writeErr(w, http.StatusBadRequest, fmt.Errorf("the cluster refused the restore (nothing was changed): %w", res.Err))
		return
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("commit the restore: %w", err))
		return
	}
	resp.Applied, resp.RaftIndex = true, idx
	d := resp.Diff
	msg := fmt.Sprintf("restored backup %s: %d created, %d updated, %d wishes changed", b.Checksum, len(d.Created), len(d.Updated), len(d.Wishes))
	if req.Prune {
		msg += fmt.Sprintf(", %d deleted", len(d.Missing))
	}
	a.log.Info("restore committed", "index", idx, "created", len(d.Created), "updated", len(d.Updated), "wishes", len(d.Wishes), "pruned", req.Prune && len(d.Missing) > 0)
	a.events.Add(events.Event{Kind: "cluster", Action: "restore", Message: msg, By: a.who(r)})
	writeJSON(w, resp)
}
