// Package upgrade owns `lifeboat upgrade check`: before a node's agent is
// replaced by a new version, it works out what that version will need on
// this node and proves each need with the node's own credentials.
//
// It reads three things: the agent's config file (keys the new version
// renamed or removed, or would reject: ConfigChanges and CheckConfig), the
// hierarchies this node may run (from the running agent or from spec
// files), and the cluster's feature level. From them it computes the cloud
// permissions each kit needs per mode (kit.PermissionDeclarer), runs every
// resource's readiness probe by dry run as the agent would (Check), and
// reports each gap with what to do: the missing action, the version that
// first needed it and the exact IAM statement to add.
//
// The check runs in two places: in the CLI, with the NEW binary, before the
// agent is replaced (the running agent may be an older version, so only
// endpoints every version serves are used), and in an agent that is new
// enough (POST /v1/upgrade/check), which checks its own node with its own
// binary and fans out to the others for `lifeboat upgrade check --all`.
package upgrade

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Feature levels this binary supports: it can run in a cluster whose
// feature level is between MinLevel and SupportedLevel.
const (
	// MinLevel is the lowest cluster feature level this binary can join:
	// a cluster below it must be raised first (every voter upgraded to a
	// version that supports MinLevel, then the level rises by itself).
	MinLevel = cluster.LevelLegacy
	// SupportedLevel is the highest cluster feature level this binary
	// supports: what its replicated commands implement.
	SupportedLevel = cluster.MaxLevel
)

// Gap kinds.
const (
	// GapPermission: the node's role lacks an action the new version needs.
	GapPermission = "permission"
	// GapNotReady: a readiness probe of the new version failed for another
	// reason than a missing permission (a route table that does not exist,
	// an interface that is missing).
	GapNotReady = "not-ready"
	// GapConfig: the agent config has a key the new version renamed,
	// removed or would reject.
	GapConfig = "config"
	// GapSpec: a hierarchy's spec the new version's kits reject.
	GapSpec = "spec"
	// GapFeatureLevel: the cluster's feature level is outside what the new
	// version supports.
	GapFeatureLevel = "feature-level"
)

// Statement is one IAM policy statement, as it is added to a role's policy.
type Statement struct {
	Sid      string   `json:"Sid,omitempty"`
	Effect   string   `json:"Effect"`
	Action   []string `json:"Action"`
	Resource []string `json:"Resource"`
}

// Gap is one thing that stands between this node and the new version.
type Gap struct {
	Kind      string `json:"kind"`
	Hierarchy string `json:"hierarchy,omitempty"`
	Resource  string `json:"resource,omitempty"`
	// Action is the missing IAM action (GapPermission).
	Action string `json:"action,omitempty"`
	// FirstNeeded is the lifeboat version that first needed Action
	// ("" unknown).
	FirstNeeded string `json:"first_needed,omitempty"`
	// Statements are the IAM statements to add to the node's role.
	Statements []Statement `json:"statements,omitempty"`
	// File, Line, Key and NewKey locate a config gap (NewKey "" and
	// Removed: the key is gone).
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Key     string `json:"key,omitempty"`
	NewKey  string `json:"new_key,omitempty"`
	Removed bool   `json:"removed,omitempty"`
	// Version is the version that made a config change.
	Version string `json:"version,omitempty"`
	// Message says what was seen; Fix what to do.
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Need is what one resource needs from the cloud under the new version.
type Need struct {
	Hierarchy string `json:"hierarchy"`
	Resource  string `json:"resource"`
	Type      string `json:"type"`
	// Actions: every action the resource's operations need (restore,
	// remove, quickcheck, recover).
	Actions []string `json:"actions,omitempty"`
	// New: the actions among them that a version later than the running
	// one first needed (what the upgrade adds).
	New []string `json:"new,omitempty"`
}

// Report is one node's answer.
type Report struct {
	Node string `json:"node"`
	// Running is the version of the agent running there now ("" unknown).
	Running string `json:"running,omitempty"`
	// Target is the version whose needs were checked.
	Target string `json:"target"`
	// Ready: no gap and nothing that could not be checked.
	Ready bool `json:"ready"`
	// FeatureLevel is the cluster's feature level as the node's agent
	// reported it (0: unknown or a version before feature levels).
	FeatureLevel int `json:"feature_level,omitempty"`
	// MinLevel and SupportedLevel are the target's range.
	MinLevel       int `json:"min_level"`
	SupportedLevel int `json:"supported_level"`
	// Hierarchies checked (those this node may run).
	Hierarchies []string `json:"hierarchies,omitempty"`
	Needs       []Need   `json:"needs,omitempty"`
	Gaps        []Gap    `json:"gaps,omitempty"`
	// Errors are what could not be checked.
	Errors []string `json:"errors,omitempty"`
	// TooOld: the node's agent does not serve the check (it predates it);
	// run `lifeboat upgrade check` with the new binary on that node.
	TooOld bool `json:"too_old,omitempty"`
	// Notes are for information only.
	Notes []string `json:"notes,omitempty"`
}

// Finish sets Ready from the gaps and errors.
func (r *Report) Finish() {
	r.Ready = len(r.Gaps) == 0 && len(r.Errors) == 0
}

// Request is the body of POST /v1/upgrade/check.
type Request struct {
	// All: check every node through its agent (otherwise only the
	// answering one).
	All bool `json:"all,omitempty"`
}

// ClusterReport is the answer to POST /v1/upgrade/check.
type ClusterReport struct {
	Nodes []Report `json:"nodes"`
}

// HierarchiesResponse is the answer to GET /v1/upgrade/hierarchies: the
// specs in the cluster state as the answering agent sees them.
type HierarchiesResponse struct {
	Node        string           `json:"node"`
	Version     string           `json:"version"`
	Hierarchies []spec.Hierarchy `json:"hierarchies"`
}

// Exit codes of `lifeboat upgrade check`.
const (
	ExitReady = 0 // every node checked is ready to upgrade
	ExitGap   = 1 // at least one gap
	ExitError = 2 // something prevented the check
)

// ExitCode is the exit status for a set of reports: a gap wins over an
// error (the operator has something to fix either way), an error over ready.
func ExitCode(rs []Report) int {
	code := ExitReady
	for _, r := range rs {
		switch {
		case len(r.Gaps) > 0:
			return ExitGap
		case len(r.Errors) > 0 || r.TooOld:
			code = ExitError
		}
	}
	return code
}

// RunOnNode is the advice for a node whose agent cannot run the check of
// the new version itself.
func RunOnNode(node string) string {
	return fmt.Sprintf("run `lifeboat upgrade check` with the new binary on %s", node)
}

// FromError turns a failed call to node's POST /v1/upgrade/check into its
// report: a 404 means the agent predates the check.
func FromError(node, running, target string, err error) Report {
	r := Report{Node: node, Running: running, Target: target, MinLevel: MinLevel, SupportedLevel: SupportedLevel}
	var se *api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		r.TooOld = true
		v := running
		if v == "" {
			v = "an older version"
		}
		r.Errors = append(r.Errors, fmt.Sprintf("the agent on %s (%s) predates the upgrade check: %s", node, v, RunOnNode(node)))
	} else {
		r.Errors = append(r.Errors, fmt.Sprintf("the agent on %s did not answer the check: %v", node, err))
	}
	r.Finish()
	return r
}

// Newer reports whether version a is later than b (dotted numbers; what
// follows a '-' is ignored, so 0.2.0-dev is 0.2.0). An empty version is
// older than any other.
func Newer(a, b string) bool {
	if a == "" {
		return false
	}
	if b == "" {
		return true
	}
	pa, pb := strings.Split(strings.SplitN(a, "-", 2)[0], "."), strings.Split(strings.SplitN(b, "-", 2)[0], ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			fmt.Sscan(pa[i], &x)
		}
		if i < len(pb) {
			fmt.Sscan(pb[i], &y)
		}
		if x != y {
			return x > y
		}
	}
	return false
}
