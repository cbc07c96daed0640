package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
)

// upgradeRoutes serves the upgrade check: the specs for a newer binary's
// `lifeboat upgrade check` on this node, and the check itself with this
// agent's own binary, here or on every node.
func (a *Agent) upgradeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+upgrade.HierarchiesPath, func(w http.ResponseWriter, r *http.Request) {
		out := upgrade.HierarchiesResponse{Node: a.cfg.Node, Version: Version, Hierarchies: []spec.Hierarchy{}}
		a.c.FSM.View(func(s *cluster.State) {
			for _, n := range s.HierarchyNames() {
				out.Hierarchies = append(out.Hierarchies, s.Hierarchies[n])
			}
		})
		writeJSON(w, out)
	})
	mux.HandleFunc("POST "+upgrade.CheckPath, a.handleUpgradeCheck)
}

// handleUpgradeCheck answers POST /v1/upgrade/check. Unknown fields in the
// body are ignored: a newer CLI may ask more than this agent knows.
func (a *Agent) handleUpgradeCheck(w http.ResponseWriter, r *http.Request) {
	var req upgrade.Request
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return
	}
	if !req.All {
		writeJSON(w, upgrade.ClusterReport{Nodes: []upgrade.Report{a.upgradeCheck(r.Context())}})
		return
	}
	out := upgrade.ClusterReport{}
	members := a.c.Members()
	out.Nodes = eachMember(a, "", func(m cluster.Member) upgrade.Report {
		var rep upgrade.Report
		ms := members[m.Name]
		switch {
		case m.Name == a.cfg.Node:
			rep = a.upgradeCheck(r.Context())
		case ms.State == "failed" || ms.State == "left":
			rep = upgrade.Report{Node: m.Name, Running: ms.Version, Target: Version,
				Errors: []string{fmt.Sprintf("the failure detector reports %s %s: not checked", m.Name, ms.State)}}
			rep.Finish()
		default:
			ctx, cancel := context.WithTimeout(r.Context(), 90*time.Second)
			var cr upgrade.ClusterReport
			err := a.rpc.call(ctx, m.Name, "POST", upgrade.CheckPath, upgrade.Request{}, &cr)
			cancel()
			switch {
			case err != nil:
				rep = upgrade.FromError(m.Name, ms.Version, Version, err)
			case len(cr.Nodes) != 1:
				rep = upgrade.Report{Node: m.Name, Running: ms.Version, Target: Version,
					Errors: []string{fmt.Sprintf("the agent on %s answered %d reports, want 1", m.Name, len(cr.Nodes))}}
				rep.Finish()
			default:
				rep = cr.Nodes[0]
			}
		}
		return rep
	})
	writeJSON(w, out)
}

// upgradeCheck checks this node against this agent's own version: the
// hierarchies it may run, proven by dry run with its own AWS clients, and
// the cluster's feature level. Its config was accepted when it started.
func (a *Agent) upgradeCheck(ctx context.Context) upgrade.Report {
	r := upgrade.Report{Node: a.cfg.Node, Running: Version, Target: Version}
	in := upgrade.Input{Kits: a.kits, Node: a.cfg.Node, Witness: a.self.Witness, DataDir: a.cfg.DataDir, AWS: a.aws.get,
		Logger: a.log, Owners: map[string]string{}, LevelKnown: true, FeatureLevel: a.status().FeatureLevel}
	a.c.FSM.View(func(s *cluster.State) {
		for _, n := range s.HierarchyNames() {
			in.Hierarchies = append(in.Hierarchies, s.Hierarchies[n])
			if as := s.Assignments[n]; as != nil && as.Online {
				in.Owners[n] = as.Node
			}
		}
	})
	r.Notes = append(r.Notes, "checked by the running agent against its own version "+Version+"; its config was checked when it started")
	upgrade.Check(ctx, &r, in)
	return r
}
