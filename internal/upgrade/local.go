package upgrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// HierarchiesPath serves the specs (GET; agents from 0.2.0 on).
const HierarchiesPath = "/v1/upgrade/hierarchies"

// CheckPath runs the check on the agent (POST; agents from 0.2.0 on).
const CheckPath = "/v1/upgrade/check"

// AgentView is what the running local agent tells about the cluster. Only
// GET /v1/status, which every version serves, is required; the specs come
// from GET /v1/upgrade/hierarchies where the agent serves it.
type AgentView struct {
	// Running is the agent's version.
	Running string
	// FeatureLevel is the cluster's (0: the agent predates feature levels).
	FeatureLevel int
	// Owners: hierarchy -> node serving it now.
	Owners map[string]string
	// MayRun: hierarchy -> the nodes it may run on, from the status.
	MayRun map[string][]string
	// Hierarchies are the specs; SpecsServed is false when the agent is
	// too old to hand them out.
	Hierarchies []spec.Hierarchy
	SpecsServed bool
}

// ReadAgent asks the local agent for what the check needs.
func ReadAgent(ctx context.Context, c *api.Client, node string) (AgentView, error) {
	var st api.Status
	if err := c.Do(ctx, "GET", "/v1/status", nil, &st); err != nil {
		return AgentView{}, err
	}
	v := AgentView{FeatureLevel: st.FeatureLevel, Owners: map[string]string{}, MayRun: map[string][]string{}}
	for _, n := range st.Nodes {
		if n.Name == node {
			v.Running = n.Version
		}
	}
	for _, h := range st.Hierarchies {
		v.MayRun[h.Name] = h.Nodes
		if h.Online && h.Owner != "" {
			v.Owners[h.Name] = h.Owner
		}
	}
	var hr HierarchiesResponse
	err := c.Do(ctx, "GET", HierarchiesPath, nil, &hr)
	var se *api.StatusError
	switch {
	case err == nil:
		v.Hierarchies, v.SpecsServed = hr.Hierarchies, true
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
	default:
		return v, fmt.Errorf("read the hierarchies from the agent: %w", err)
	}
	return v, nil
}

// Local is the check of this node with this binary, before its agent is
// replaced.
type Local struct {
	// Target is this binary's version.
	Target string
	// ConfigPath is the agent's config file.
	ConfigPath string
	// SpecFiles, when set, give the hierarchies instead of the agent.
	SpecFiles []string
	// Client reaches the local agent, given its config (nil: none).
	Client func(cfg *config.Agent) (*api.Client, error)
	// Changes is the config key table (nil: ConfigChanges).
	Changes []ConfigChange
	Logger  *slog.Logger
}

// Run checks this node.
func (l Local) Run(ctx context.Context) Report {
	r := Report{Target: l.Target, MinLevel: MinLevel, SupportedLevel: SupportedLevel}
	changes := l.Changes
	if changes == nil {
		changes = ConfigChanges
	}
	gaps, cfg, err := CheckConfig(l.ConfigPath, l.Target, changes)
	r.Gaps = append(r.Gaps, gaps...)
	if err != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", l.ConfigPath, err))
	}
	if cfg == nil {
		r.Node = "this node"
		r.Finish()
		return r
	}
	r.Node = cfg.Node
	in := Input{Node: cfg.Node, Witness: cfg.Self().Witness, DataDir: cfg.DataDir, AWS: Provider(Settings(cfg)), Logger: l.Logger}

	var view AgentView
	var viewErr error
	if l.Client == nil {
		viewErr = errors.New("no agent address")
	} else if c, err := l.Client(cfg); err != nil {
		viewErr = err
	} else {
		view, viewErr = ReadAgent(ctx, c, cfg.Node)
	}
	if viewErr != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("the local agent did not answer (%v): the cluster's feature level and who serves each hierarchy are unknown", viewErr))
	} else {
		r.Running = view.Running
		in.FeatureLevel, in.LevelKnown, in.Owners = view.FeatureLevel, true, view.Owners
	}

	switch {
	case len(l.SpecFiles) > 0:
		hs, errs := readSpecs(l.SpecFiles)
		r.Errors = append(r.Errors, errs...)
		in.Hierarchies = hs
		if viewErr == nil {
			r.Errors = append(r.Errors, compare(cfg.Node, hs, view)...)
		}
	case viewErr != nil:
		in.HierarchiesUnknown = true
		r.Errors = append(r.Errors, "the hierarchies are unknown: start the agent, or pass the spec files you applied with -f")
	case !view.SpecsServed:
		in.HierarchiesUnknown = true
		v := view.Running
		if v == "" {
			v = "an older version"
		}
		r.Errors = append(r.Errors, fmt.Sprintf("the running agent (lifeboat %s) does not hand out the hierarchies' specs (%s is new in 0.2.0): pass the spec files you applied with -f FILE", v, HierarchiesPath))
	default:
		in.Hierarchies = view.Hierarchies
	}
	Check(ctx, &r, in)
	return r
}

// readSpecs parses spec files as `lifeboat apply` does, with this
// binary's kits.
func readSpecs(files []string) ([]spec.Hierarchy, []string) {
	var hs []spec.Hierarchy
	var errs []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Sprintf("read spec file: %v", err))
			continue
		}
		got, err := config.ParseSpec(f, data, kits.Builtin().ValidateHierarchy)
		if err != nil {
			errs = append(errs, fmt.Sprintf("spec file %s is not valid for this version:\n%v", f, err))
			continue
		}
		hs = append(hs, got...)
	}
	return hs, errs
}

// compare says which hierarchies that may run on node the cluster has but
// the spec files do not: those were not checked.
func compare(node string, hs []spec.Hierarchy, view AgentView) []string {
	have := map[string]bool{}
	for _, h := range hs {
		have[h.Name] = true
	}
	var names []string
	for name, nodes := range view.MayRun {
		for _, n := range nodes {
			if n == node && !have[name] {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("not checked: %s may run on %s but the spec files given do not have %s: add the files with -f", strings.Join(names, ", "), node,
		map[bool]string{true: "it", false: "them"}[len(names) == 1])}
}
