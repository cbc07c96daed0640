// Package kit defines the contract between the engine and the resource kits:
// how a resource type is brought into service (Restore), taken out (Remove),
// observed (QuickCheck) and repaired in place (Recover), plus the optional
// readiness probe, permission declaration and the descriptions doctor reads
// (probe commands, routed ranges) of the cloud kits. Kits
// are gathered in a Registry that the agent builds; they never import the
// engine or the cluster.
package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// ErrThrottled marks (wrapped) a Restore or Recover that ran out of time
// while the cloud API kept asking it to slow down. It is not the
// resource's failure: the account's request limits are the same on every
// node, so failing over would not help (and would add calls). The engine
// tries again, under the lease, without a failure mark.
var ErrThrottled = errors.New("throttled by the cloud API")

// WithAssignedAt tells a kit when the hierarchy was assigned to this node:
// a Restore may use cloud reads sent since (shared with the other restores
// of the same takeover, awsapi.WithReadsSince), since the previous owner's
// last change came before it.
func WithAssignedAt(ctx context.Context, t time.Time) context.Context {
	return awsapi.WithReadsSince(ctx, t)
}

// Health is the outcome of a QuickCheck.
type Health int

const (
	// Healthy: the resource is in service as it should be.
	Healthy Health = iota
	// Failed: a definite mismatch; local recovery starts.
	Failed
	// Unknown: the check could not tell (timeout, throttling); the resource
	// stays in service and the check is retried.
	Unknown
)

func (h Health) String() string {
	switch h {
	case Healthy:
		return "healthy"
	case Failed:
		return "failed"
	default:
		return "unknown"
	}
}

// AWSProvider gives cloud kits this node's AWS clients, built from the
// agent's own settings (the engine passes it through without knowing AWS).
type AWSProvider = awsapi.Provider

// Env is what the engine hands a kit about where it runs.
type Env struct {
	Node      string
	Hierarchy string
	DataDir   string
	// Logger already carries the node, hierarchy and resource keys.
	Logger *slog.Logger
	// AWS gives cloud kits this agent's AWS clients (nil: no AWS access
	// configured).
	AWS AWSProvider
	// ServedElsewhere: the hierarchy is in service on another node right
	// now. A readiness probe must expect its resources to be held there
	// (another host answering for a virtual IP is then its owner, not a
	// conflict).
	ServedElsewhere bool
	// Probes, when set, makes a readiness probe's cloud calls: within the
	// node's AWS call budget, and sharing answers between hierarchies
	// (see ProbeCalls). Nil: the probe calls directly. Only readiness
	// sets it; restore, remove and recover never wait for it.
	Probes ProbeCalls
}

// Instance manages one configured resource on this node. Every method must be
// idempotent: Restore on a resource already in service succeeds, Remove on one
// already out of service succeeds. QuickCheck must not change anything.
type Instance interface {
	Restore(ctx context.Context) error
	Remove(ctx context.Context) error
	QuickCheck(ctx context.Context) (Health, error)
	Recover(ctx context.Context) error
}

// Kit is a resource type.
type Kit interface {
	// Type is the name used in specs ("app").
	Type() string
	// Validate checks a resource's parameters without side effects.
	Validate(params map[string]string) []spec.Problem
	// New makes the instance for one resource on this node.
	New(res spec.Resource, env Env) (Instance, error)
}

// HostValidator is implemented by kits whose parameters name things that
// must exist on the node (a user, a group). Validate stays free of I/O and
// runs wherever a spec is read (the CLI too); ValidateHost runs in the
// agent that receives an apply, against that node.
type HostValidator interface {
	ValidateHost(params map[string]string) []spec.Problem
}

// Readiness is the result of one resource's readiness probe: can this node
// take the resource over right now, and if not, why. It is not the record
// the cluster keeps: the agent folds the probes of a hierarchy's resources
// into one state.Readiness (Ready, Missing and Reason mean the same there;
// Unknown answers keep the last record, Gaps and Problems stay with the
// probe's callers, and the record adds when it was proven).
type Readiness struct {
	Ready   bool     `json:"ready"`
	Missing []string `json:"missing,omitempty"` // e.g. IAM actions
	Reason  string   `json:"reason,omitempty"`
	// Unknown: the probe could not tell (throttling, 5xx, timeouts). The
	// caller keeps the last definite answer: a slow API is no reason to
	// call a node unable to take over.
	Unknown bool `json:"unknown,omitempty"`
	// Gaps: each call the node was refused, as data (Missing lists their
	// actions; Reason has them in words).
	Gaps []Gap `json:"gaps,omitempty"`
	// Problems: what else stands in the way, in words (each is also in
	// Reason).
	Problems []string `json:"problems,omitempty"`
}

// Gap is one call a node was refused: the permission it lacks.
type Gap struct {
	Action string `json:"action"`
	// Resource is the ARN the call was on ("*" when it has none).
	Resource string `json:"resource,omitempty"`
	// Code is what the cloud answered (UnauthorizedOperation,
	// AccessDenied, ...).
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason"`
}

// ReadinessProber is implemented by kits that can prove, without side
// effects, that this node could restore the resource.
type ReadinessProber interface {
	Ready(ctx context.Context) Readiness
}

// ProbeKey identifies one cloud call of a readiness probe for sharing its
// answer: the action it proves, the resource it is authorized on (ARN or
// ID, with the region; as precise as the call names it) and whatever else
// in the request could change the answer (Detail: the interface a route
// would point at, ...). Probes share an answer only when all three are
// equal: a proof on one route table says nothing about another, since IAM
// conditions may differ per resource.
type ProbeKey struct {
	Action   string
	Resource string
	Detail   string
}

// ProbeAnswer is the answer to one call of a readiness probe.
type ProbeAnswer struct {
	// Value is what the call returned (nil for a dry run); Err its error
	// (a dry run's DryRunOperation included), as the kit's call gave it.
	Value any
	Err   error
	// At is when the call was made; Shared: another probe made it.
	At     time.Time
	Shared bool
}

// ProbeCalls makes the calls of a readiness probe (Env.Probes): it returns
// a fresh answer another probe got for the same key, or waits for the
// node's AWS call budget and runs call. Answers of a cloud that could not
// tell (throttling, 5xx, timeouts) are not kept for others.
type ProbeCalls interface {
	Call(ctx context.Context, key ProbeKey, call func(ctx context.Context) (any, error)) ProbeAnswer
}

// NodeFenced is implemented by kits whose resources nothing outside the
// node arbitrates (a local address): a frozen agent leaves them configured
// in the kernel, so a node holding one arms its watchdog and the cluster
// waits for the watchdog's timeout before restoring the resource elsewhere.
type NodeFenced interface {
	NeedsNodeFencing() bool
}

// ProbeCommand is one call of a readiness probe as a command an operator
// can repeat by hand.
type ProbeCommand struct {
	// Action is the permission the call needs ("ec2:CreateRoute").
	Action string
	// Service is the AWS CLI's service ("ec2"); Args follow it.
	Service string
	Args    []string
}

// ProbeExplainer is implemented by kits whose readiness probe makes cloud
// calls, so that doctor can show them as commands.
type ProbeExplainer interface {
	// ProbeCommands lists the probe's calls for a resource, in the order
	// the probe makes them. primary returns this node's primary network
	// interface; it is called only when the resource names none.
	ProbeCommands(params map[string]string, primary func() string) []ProbeCommand
}

// Router is implemented by kits whose resources route an address range to
// the node that holds them (a cloud route table entry), so that doctor can
// tell which virtual IPs are routed rather than answered for on the link.
type Router interface {
	// Routed returns the range a resource routes; false when it routes
	// none (another mode) or its parameters name no valid range.
	Routed(params map[string]string) (netip.Prefix, bool)
}

// Authority bounds an action by this node's authority over the hierarchy
// (its lease): the returned context ends when the authority does, and an
// error means the node holds none right now and must not act.
type Authority func(ctx context.Context) (context.Context, context.CancelFunc, error)

type authorityKey struct{}

// WithAuthority attaches the node's authority to ctx. The engine bounds
// Restore and Recover by it itself; Remove runs without it (taking a
// resource out of service is always allowed), so a kit whose Remove
// changes state shared with the next owner (a cloud call) bounds that step
// with UnderLease.
func WithAuthority(ctx context.Context, a Authority) context.Context {
	return context.WithValue(ctx, authorityKey{}, a)
}

// UnderLease bounds ctx by the authority attached to it, if any: it fails
// when the node holds none now, and the returned context ends when the
// authority does.
func UnderLease(ctx context.Context) (context.Context, context.CancelFunc, error) {
	a, _ := ctx.Value(authorityKey{}).(Authority)
	if a == nil {
		return ctx, func() {}, nil
	}
	return a(ctx)
}

// Operation names used in permission declarations.
const (
	OpRestore    = "restore"
	OpRemove     = "remove"
	OpQuickCheck = "quickcheck"
	OpRecover    = "recover"
)

// PermissionDeclarer is implemented by kits whose operations need cloud
// permissions: operation -> actions.
type PermissionDeclarer interface {
	Permissions(params map[string]string) map[string][]string
}

// Statement is one least-privilege policy statement: actions allowed on
// resources.
type Statement struct {
	Actions   []string `json:"Action"`
	Resources []string `json:"Resource"`
}

// PolicyDeclarer is implemented by kits that can name the resource ARNs of
// their permissions (region and account may be "*" when unknown).
type PolicyDeclarer interface {
	Policy(params map[string]string, region, account string) []Statement
}

// History is implemented by kits that record, per cloud action, the
// lifeboat version that first needed it (so an operator can grant what an
// upgrade adds before rolling it out: lifeboat iam-policy --since VERSION).
type History interface {
	FirstNeeded(action string) string
}

// Registry is the set of kits one agent (or command) works with, by type
// name. The agent builds it and hands it to the engine, readiness, doctor
// and the API; nothing registers itself behind its back.
type Registry struct {
	kits map[string]Kit
}

// NewRegistry returns a registry of ks; a type given twice is an error.
func NewRegistry(ks ...Kit) (*Registry, error) {
	r := &Registry{kits: map[string]Kit{}}
	for _, k := range ks {
		if _, dup := r.kits[k.Type()]; dup {
			return nil, fmt.Errorf("kit %q given twice", k.Type())
		}
		r.kits[k.Type()] = k
	}
	return r, nil
}

// With returns a registry of r's kits and ks (tests add their own).
func (r *Registry) With(ks ...Kit) (*Registry, error) {
	all := make([]Kit, 0, len(r.kits)+len(ks))
	for _, k := range r.kits {
		all = append(all, k)
	}
	return NewRegistry(append(all, ks...)...)
}

// Lookup returns the kit for a type.
func (r *Registry) Lookup(typ string) (Kit, bool) {
	if r == nil {
		return nil, false
	}
	k, ok := r.kits[typ]
	return k, ok
}

// Known reports whether a type is in the registry.
func (r *Registry) Known(typ string) bool { _, ok := r.Lookup(typ); return ok }

// Types lists the types in order.
func (r *Registry) Types() []string {
	var ts []string
	if r == nil {
		return nil
	}
	for t := range r.kits {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// ValidateHierarchy validates structure and every resource's parameters
// with its kit.
func (r *Registry) ValidateHierarchy(h *spec.Hierarchy) []spec.Problem {
	ps := h.Validate(r.Known)
	for i, res := range h.Resources {
		k, ok := r.Lookup(res.Type)
		if !ok {
			continue
		}
		for _, p := range k.Validate(res.Params) {
			p.Field = fmt.Sprintf("resources[%d].params.%s", i, p.Field)
			ps = append(ps, p)
		}
	}
	return ps
}

// ValidateHost checks, on this node, what the hierarchy's resources need
// from it (kits that implement HostValidator), with the fields named as
// ValidateHierarchy names them.
func (r *Registry) ValidateHost(h *spec.Hierarchy) []spec.Problem {
	var ps []spec.Problem
	for i, res := range h.Resources {
		k, ok := r.Lookup(res.Type)
		if !ok {
			continue
		}
		if hv, ok := k.(HostValidator); ok {
			for _, p := range hv.ValidateHost(res.Params) {
				p.Field = fmt.Sprintf("resources[%d].params.%s", i, p.Field)
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// FirstNeeded returns the version that first needed action, as the kit
// that uses it records ("" when none does).
func (r *Registry) FirstNeeded(action string) string {
	for _, t := range r.Types() {
		if h, ok := r.kits[t].(History); ok {
			if v := h.FirstNeeded(action); v != "" {
				return v
			}
		}
	}
	return ""
}
