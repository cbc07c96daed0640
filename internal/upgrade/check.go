package upgrade

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Input is what Check needs to know about the node.
type Input struct {
	// Kits are the new binary's kits (nil: the built-in ones).
	Kits    *kit.Registry
	Node    string
	Witness bool
	DataDir string
	// Hierarchies: every hierarchy of the cluster; those this node may run
	// are checked. HierarchiesUnknown: they could not be read (the caller
	// says why); only the feature level is checked.
	Hierarchies        []spec.Hierarchy
	HierarchiesUnknown bool
	// Owners: hierarchy -> the node that serves it now ("" none). A
	// resource's probe expects a hierarchy served elsewhere to be held
	// there (kit.Env.ServedElsewhere).
	Owners map[string]string
	// FeatureLevel is the cluster's feature level (0: a version before
	// feature levels, which is level 1); LevelKnown says whether it is
	// known at all.
	FeatureLevel int
	LevelKnown   bool
	// AWS gives the node's own AWS clients (nil: none configured).
	AWS    awsapi.Provider
	Logger *slog.Logger
	// ProbeTimeout bounds each resource's readiness probe (default 30s,
	// as the agent's).
	ProbeTimeout time.Duration
}

func (in Input) kits() *kit.Registry {
	if in.Kits != nil {
		return in.Kits
	}
	return kits.Builtin()
}

// Settings builds the AWS settings from an agent config exactly as the
// agent does.
func Settings(cfg *config.Agent) awsapi.Settings {
	// Validated with the config; a value that does not parse (a config
	// built without Validate) keeps AWS's default.
	pace := awsapi.DefaultPace()
	if b, err := awsapi.ParseBucket(cfg.AWS.MutatingBucket); err == nil {
		pace.Mutating = b
	}
	if b, err := awsapi.ParseBucket(cfg.AWS.DescribeBucket); err == nil {
		pace.Describe = b
	}
	return awsapi.Settings{
		Pace:   &pace,
		Region: cfg.AWS.Region,
		Endpoints: awsapi.Endpoints{EC2: cfg.AWS.Endpoints.EC2, STS: cfg.AWS.Endpoints.STS,
			IAM: cfg.AWS.Endpoints.IAM, IMDS: cfg.AWS.Endpoints.IMDS},
		HTTPProxy: cfg.AWS.HTTPProxy, HTTPSProxy: cfg.AWS.HTTPSProxy, NoProxy: cfg.AWS.NoProxy,
		CallTimeout: cfg.AWS.CallTimeout.D(), MaxAttempts: cfg.AWS.MaxAttempts,
	}
}

// Provider builds the clients once, on first use, as the agent does.
func Provider(s awsapi.Settings) awsapi.Provider {
	var mu sync.Mutex
	var c *awsapi.Clients
	return func(ctx context.Context) (*awsapi.Clients, error) {
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			return c, nil
		}
		cl, err := awsapi.New(ctx, s)
		if err != nil {
			return nil, err
		}
		c = cl
		return c, nil
	}
}

// LevelGap compares the cluster's feature level with what a binary of
// version target supports; nil when it can run there.
func LevelGap(level int, target string) *Gap {
	if level <= 0 {
		level = 1 // the running version predates feature levels
	}
	switch {
	case level < MinLevel:
		return &Gap{Kind: GapFeatureLevel,
			Message: fmt.Sprintf("the cluster runs at feature level %d but lifeboat %s needs at least level %d", level, target, MinLevel),
			Fix:     fmt.Sprintf("first upgrade every node to a version that supports level %d and wait until `lifeboat status` shows feature level %d, then upgrade to %s", MinLevel, MinLevel, target)}
	case level > SupportedLevel:
		return &Gap{Kind: GapFeatureLevel,
			Message: fmt.Sprintf("the cluster runs at feature level %d but lifeboat %s supports only up to level %d: it would be refused when it joins", level, target, SupportedLevel),
			Fix:     fmt.Sprintf("this is a downgrade: use a version that supports feature level %d", level)}
	}
	return nil
}

// Check checks the node described by in against this binary (version
// r.Target) and adds what it finds to r.
func Check(ctx context.Context, r *Report, in Input) {
	defer r.Finish()
	r.MinLevel, r.SupportedLevel = MinLevel, SupportedLevel
	if in.LevelKnown {
		r.FeatureLevel = max(in.FeatureLevel, 1) // 0: a version before feature levels, level 1
		if g := LevelGap(in.FeatureLevel, r.Target); g != nil {
			r.Gaps = append(r.Gaps, *g)
		}
	}
	if in.Witness {
		r.Notes = append(r.Notes, in.Node+" is a witness: it runs no resources, so it needs no cloud permissions")
		return
	}
	if in.HierarchiesUnknown {
		return
	}
	if in.Logger == nil {
		in.Logger = slog.New(slog.DiscardHandler)
	}
	if in.ProbeTimeout <= 0 {
		in.ProbeTimeout = 30 * time.Second
	}
	hs := append([]spec.Hierarchy(nil), in.Hierarchies...)
	sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name })
	id := &identity{aws: in.AWS}
	for _, h := range hs {
		if h.Priority(in.Node) < 0 {
			continue
		}
		r.Hierarchies = append(r.Hierarchies, h.Name)
		checkHierarchy(ctx, r, in, h, id)
	}
	if len(r.Hierarchies) == 0 {
		r.Notes = append(r.Notes, "no hierarchy lists "+in.Node+" among its nodes: nothing to prove")
	}
}

func checkHierarchy(ctx context.Context, r *Report, in Input, h spec.Hierarchy, id *identity) {
	hc := h
	for _, p := range in.kits().ValidateHierarchy(&hc) {
		r.Gaps = append(r.Gaps, Gap{Kind: GapSpec, Hierarchy: h.Name, Message: fmt.Sprintf("lifeboat %s rejects hierarchy %s: %s", r.Target, h.Name, p.Error()),
			Fix: "change the spec with `lifeboat apply` to a form both versions accept before upgrading"})
	}
	elsewhere := in.Owners[h.Name] != "" && in.Owners[h.Name] != in.Node
	for _, rs := range h.Resources {
		k, ok := in.kits().Lookup(rs.Type)
		if !ok {
			r.Gaps = append(r.Gaps, Gap{Kind: GapSpec, Hierarchy: h.Name, Resource: rs.Name,
				Message: fmt.Sprintf("lifeboat %s has no kit for resource type %q", r.Target, rs.Type),
				Fix:     "replace the resource with one of the types " + strings.Join(in.kits().Types(), ", ") + " before upgrading"})
			continue
		}
		if pd, ok := k.(kit.PermissionDeclarer); ok {
			r.Needs = append(r.Needs, need(in.kits(), h.Name, rs, pd, r.Running))
		}
		inst, err := k.New(rs, kit.Env{Node: in.Node, Hierarchy: h.Name, DataDir: in.DataDir, AWS: in.AWS, ServedElsewhere: elsewhere,
			Logger: in.Logger.With("hierarchy", h.Name, "resource", rs.Name)})
		if err != nil {
			r.Gaps = append(r.Gaps, Gap{Kind: GapNotReady, Hierarchy: h.Name, Resource: rs.Name, Message: err.Error()})
			continue
		}
		p, ok := inst.(kit.ReadinessProber)
		if !ok {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, in.ProbeTimeout)
		rd := p.Ready(pctx)
		cancel()
		switch {
		case rd.Ready && rd.Unknown:
			r.Errors = append(r.Errors, fmt.Sprintf("%s/%s: the readiness probe could not tell (%s): run the check again", h.Name, rs.Name, rd.Reason))
		case rd.Ready:
		case len(rd.Missing) == 0:
			r.Gaps = append(r.Gaps, Gap{Kind: GapNotReady, Hierarchy: h.Name, Resource: rs.Name, Message: rd.Reason,
				Fix: "the new version's readiness probe fails here: fix the cause before upgrading (lifeboat doctor helps)"})
		default:
			region, account := id.get(ctx)
			for _, a := range rd.Missing {
				r.Gaps = append(r.Gaps, Gap{Kind: GapPermission, Hierarchy: h.Name, Resource: rs.Name, Action: a,
					FirstNeeded: in.kits().FirstNeeded(a), Statements: statements(k, rs.Params, a, region, account),
					Message: reasonFor(rd, a),
					Fix:     fmt.Sprintf("add the statement to the policy of %s's instance role, then check again", in.Node)})
			}
		}
	}
}

// need lists what one resource needs and what of it is newer than running.
func need(kr *kit.Registry, h string, rs spec.Resource, pd kit.PermissionDeclarer, running string) Need {
	set := map[string]bool{}
	for _, acts := range pd.Permissions(rs.Params) {
		for _, a := range acts {
			set[a] = true
		}
	}
	n := Need{Hierarchy: h, Resource: rs.Name, Type: rs.Type, Actions: spec.SortedKeys(set)}
	if running != "" {
		for _, a := range n.Actions {
			if v := kr.FirstNeeded(a); v != "" && Newer(v, running) {
				n.New = append(n.New, a)
			}
		}
	}
	return n
}

// reasonFor gives the words for each refused call of action (the probe's
// whole reason when it has no structured gap for it).
func reasonFor(rd kit.Readiness, action string) string {
	var parts []string
	for _, g := range rd.Gaps {
		if g.Action == action {
			parts = append(parts, g.Reason)
		}
	}
	if len(parts) == 0 {
		if rd.Reason == "" {
			return "the dry run of " + action + " was denied"
		}
		return rd.Reason
	}
	return strings.Join(parts, "; ")
}

// statements are the kit's least-privilege statements that grant action,
// narrowed to it; "*" when the kit names no resources.
func statements(k kit.Kit, params map[string]string, action, region, account string) []Statement {
	sid := "Lifeboat"
	up := true
	for _, c := range action {
		switch {
		case unicode.IsLetter(c) || unicode.IsDigit(c):
			if up {
				c = unicode.ToUpper(c)
			}
			sid += string(c)
			up = false
		default:
			up = true
		}
	}
	var out []Statement
	if pd, ok := k.(kit.PolicyDeclarer); ok {
		for _, st := range pd.Policy(params, region, account) {
			for _, a := range st.Actions {
				if a == action {
					out = append(out, Statement{Sid: sid, Effect: "Allow", Action: []string{action}, Resource: append([]string(nil), st.Resources...)})
					break
				}
			}
		}
	}
	if len(out) == 0 {
		out = []Statement{{Sid: sid, Effect: "Allow", Action: []string{action}, Resource: []string{"*"}}}
	}
	for i := 1; i < len(out); i++ {
		out[i].Sid = fmt.Sprintf("%s%d", sid, i+1)
	}
	return out
}

// identity finds the node's region and account once ("*" for what it
// cannot find out), for the resource ARNs of the statements.
type identity struct {
	aws             awsapi.Provider
	done            bool
	region, account string
}

func (id *identity) get(ctx context.Context) (string, string) {
	if id.done {
		return id.region, id.account
	}
	id.done = true
	id.region, id.account = "*", "*"
	if id.aws == nil {
		return id.region, id.account
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := id.aws(ctx)
	if err != nil {
		return id.region, id.account
	}
	if c.Config.Region != "" {
		id.region = c.Config.Region
	}
	err = c.Call(ctx, func(ctx context.Context) error {
		out, err := c.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err == nil && out.Account != nil {
			id.account = *out.Account
		}
		return err
	})
	_ = err // "*" stays: the statement is still right, only wider
	return id.region, id.account
}
