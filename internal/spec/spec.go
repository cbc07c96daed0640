// Package spec holds the declarative description of what lifeboat keeps in
// service: resources, the hierarchies that group them into a dependency graph,
// and the per-hierarchy policy (node priorities, switchback, monitoring and
// local recovery). The types are shared by the config parser, the replicated
// cluster state, placement and the engine; they carry no behaviour beyond
// validation and ordering.
package spec

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Switchback policies.
const (
	// SwitchbackIntelligent keeps a hierarchy where it is once it has moved.
	SwitchbackIntelligent = "intelligent"
	// SwitchbackAutomatic moves a hierarchy back to its highest-priority
	// ready node as soon as that node can take it.
	SwitchbackAutomatic = "automatic"
)

// Defaults applied by Hierarchy.Normalize.
const (
	DefaultMonitorInterval = 2 * time.Second
	DefaultLocalRecovery   = 1
	DefaultActionTimeout   = 30 * time.Second
	// DefaultFailureTimeout is how long a node stays marked failed for a
	// hierarchy when the spec does not say (FailureTimeout).
	DefaultFailureTimeout = 10 * time.Minute
)

// Duration is a time.Duration that reads and writes as a Go duration string
// ("1.5s", "200ms") in JSON and YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration the way time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON accepts a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration must be a string such as \"2s\": %w", err)
		}
		*d = Duration(n)
		return nil
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalText lets YAML and flag parsers read durations.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDuration parses a Go duration string and rejects negative values.
func ParseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use a value such as \"500ms\" or \"2s\")", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	return Duration(v), nil
}

// Resource is one thing a kit brings into and out of service.
type Resource struct {
	// Name is unique within the hierarchy.
	Name string `json:"name" yaml:"name"`
	// Type names the kit that manages the resource ("app").
	Type string `json:"type" yaml:"type"`
	// DependsOn lists the resources this one needs (its children): they are
	// restored before it and removed after it.
	DependsOn []string `json:"depends_on,omitempty" yaml:"depends_on,omitempty"`
	// Params are the kit's settings; kits validate them.
	Params map[string]string `json:"params,omitempty" yaml:"params,omitempty"`
	// MonitorInterval overrides the hierarchy's quickCheck interval.
	MonitorInterval Duration `json:"monitor_interval,omitempty" yaml:"monitor_interval,omitempty"`
	// LocalRecovery overrides the hierarchy's local recovery count.
	LocalRecovery *int `json:"local_recovery,omitempty" yaml:"local_recovery,omitempty"`
	// Timeout bounds each action (restore, remove, quickCheck, recover).
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
}

// Hierarchy is a directed acyclic graph of resources that is always in
// service on exactly one node at a time.
type Hierarchy struct {
	Name string `json:"name" yaml:"name"`
	// Nodes is the priority list: the first node is preferred.
	Nodes []string `json:"nodes" yaml:"nodes"`
	// Switchback is SwitchbackIntelligent (default) or SwitchbackAutomatic.
	Switchback string `json:"switchback,omitempty" yaml:"switchback,omitempty"`
	// MonitorInterval is how often each resource's quickCheck runs.
	MonitorInterval Duration `json:"monitor_interval,omitempty" yaml:"monitor_interval,omitempty"`
	// LocalRecovery is how many times a failed resource is recovered in
	// place before the hierarchy fails over.
	LocalRecovery *int `json:"local_recovery,omitempty" yaml:"local_recovery,omitempty"`
	// FailureTimeout is how long a node where the hierarchy failed stays
	// marked (placement skips it); then the mark expires and the node may
	// take the hierarchy again. Unset: DefaultFailureTimeout (see
	// EffectiveFailureTimeout). It is left unset by Normalize on purpose:
	// a spec that does not use it stays readable by a version before it.
	FailureTimeout Duration `json:"failure_timeout,omitempty" yaml:"failure_timeout,omitempty"`
	// MigrationThreshold is how many times the hierarchy must fail on a
	// node (each failure fails it over; failures older than
	// FailureTimeout are forgotten) before the node is marked and
	// skipped. Unset: 1, the first failure marks.
	MigrationThreshold int `json:"migration_threshold,omitempty" yaml:"migration_threshold,omitempty"`
	// MaxFailovers, when set, blocks automatic failover once the
	// hierarchy has failed over that many times within FailoverWindow:
	// the next failover stops it instead (anti-flap), until an operator
	// starts it. Unset: no limit.
	MaxFailovers int `json:"max_failovers,omitempty" yaml:"max_failovers,omitempty"`
	// FailoverWindow is MaxFailovers' window. Unset: DefaultFailoverWindow.
	FailoverWindow Duration `json:"failover_window,omitempty" yaml:"failover_window,omitempty"`
	// ConfirmFailover makes an automatic failover wait for an operator's
	// `lifeboat failover confirm|block` (for sites where a human must
	// decide), up to ConfirmTimeout, then do ConfirmDefault. The failed
	// or fenced owner is taken out of service as always; only the
	// placement elsewhere waits.
	ConfirmFailover bool `json:"confirm_failover,omitempty" yaml:"confirm_failover,omitempty"`
	// ConfirmTimeout: how long a failover waits for the decision. Unset:
	// DefaultConfirmTimeout.
	ConfirmTimeout Duration `json:"confirm_timeout,omitempty" yaml:"confirm_timeout,omitempty"`
	// ConfirmDefault is what happens when nobody decides in time:
	// ConfirmProceed (unset) or ConfirmBlock.
	ConfirmDefault string     `json:"confirm_default,omitempty" yaml:"confirm_default,omitempty"`
	Resources      []Resource `json:"resources" yaml:"resources"`
}

// Confirm-failover decisions.
const (
	ConfirmProceed = "proceed"
	ConfirmBlock   = "block"
)

// DefaultConfirmTimeout is how long a failover waits for confirmation
// when the spec does not say.
const DefaultConfirmTimeout = 5 * time.Minute

// EffectiveConfirmTimeout is ConfirmTimeout, or the default when unset.
func (h *Hierarchy) EffectiveConfirmTimeout() time.Duration {
	if h.ConfirmTimeout > 0 {
		return h.ConfirmTimeout.D()
	}
	return DefaultConfirmTimeout
}

// EffectiveConfirmDefault is ConfirmDefault, or ConfirmProceed.
func (h *Hierarchy) EffectiveConfirmDefault() string {
	if h.ConfirmDefault == "" {
		return ConfirmProceed
	}
	return h.ConfirmDefault
}

// DefaultFailoverWindow is the window of MaxFailovers when unset.
const DefaultFailoverWindow = time.Hour

// EffectiveMigrationThreshold is MigrationThreshold, or 1 when unset.
func (h *Hierarchy) EffectiveMigrationThreshold() int { return max(h.MigrationThreshold, 1) }

// EffectiveFailoverWindow is FailoverWindow, or the default when unset.
func (h *Hierarchy) EffectiveFailoverWindow() time.Duration {
	if h.FailoverWindow > 0 {
		return h.FailoverWindow.D()
	}
	return DefaultFailoverWindow
}

// UsesFailurePolicy reports whether the spec sets any of the failure
// policy settings that need feature level 2.
func (h *Hierarchy) UsesFailurePolicy() bool {
	return h.FailureTimeout != 0 || h.MigrationThreshold != 0 || h.MaxFailovers != 0 || h.FailoverWindow != 0 ||
		h.ConfirmFailover || h.ConfirmTimeout != 0 || h.ConfirmDefault != ""
}

// EffectiveFailureTimeout is FailureTimeout, or the default when unset.
func (h *Hierarchy) EffectiveFailureTimeout() time.Duration {
	if h.FailureTimeout > 0 {
		return h.FailureTimeout.D()
	}
	return DefaultFailureTimeout
}

// Normalize fills defaults in place.
func (h *Hierarchy) Normalize() {
	if h.Switchback == "" {
		h.Switchback = SwitchbackIntelligent
	}
	if h.MonitorInterval == 0 {
		h.MonitorInterval = Duration(DefaultMonitorInterval)
	}
	if h.LocalRecovery == nil {
		n := DefaultLocalRecovery
		h.LocalRecovery = &n
	}
	for i := range h.Resources {
		r := &h.Resources[i]
		if r.MonitorInterval == 0 {
			r.MonitorInterval = h.MonitorInterval
		}
		if r.LocalRecovery == nil {
			n := *h.LocalRecovery
			r.LocalRecovery = &n
		}
		if r.Timeout == 0 {
			r.Timeout = Duration(DefaultActionTimeout)
		}
	}
}

// Problem is one validation finding, addressed by a field path such as
// "resources[1].depends_on[0]".
type Problem struct {
	Field   string
	Message string
}

func (p Problem) Error() string { return p.Field + ": " + p.Message }

// Validate reports every problem with the hierarchy, not only the first.
// knownTypes, when non-nil, is consulted for the resource types.
func (h *Hierarchy) Validate(knownTypes func(string) bool) []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if !ValidName(h.Name) {
		add("name", "%q is not a valid name (letters, digits, '-', '_', '.', 1-63 characters)", h.Name)
	}
	if len(h.Nodes) == 0 {
		add("nodes", "at least one node is required (the priority list, preferred first)")
	}
	seenNode := map[string]bool{}
	for i, n := range h.Nodes {
		if !ValidName(n) {
			add(fmt.Sprintf("nodes[%d]", i), "%q is not a valid node name", n)
		}
		if seenNode[n] {
			add(fmt.Sprintf("nodes[%d]", i), "node %q is listed twice", n)
		}
		seenNode[n] = true
	}
	switch h.Switchback {
	case "", SwitchbackIntelligent, SwitchbackAutomatic:
	default:
		add("switchback", "%q is not a switchback policy (use %q or %q)", h.Switchback, SwitchbackIntelligent, SwitchbackAutomatic)
	}
	if h.LocalRecovery != nil && *h.LocalRecovery < 0 {
		add("local_recovery", "must be 0 or more")
	}
	if h.MonitorInterval != 0 && h.MonitorInterval.D() < 10*time.Millisecond {
		add("monitor_interval", "must be at least 10ms")
	}
	if h.FailureTimeout < 0 || (h.FailureTimeout > 0 && h.FailureTimeout.D() < time.Second) {
		add("failure_timeout", "must be at least 1s (how long a node where the hierarchy failed is skipped; default %s)", DefaultFailureTimeout)
	}
	if h.MigrationThreshold < 0 || h.MigrationThreshold > 100 {
		add("migration_threshold", "must be between 1 and 100 (failures on a node before it is skipped; default 1)")
	}
	if h.MaxFailovers < 0 || h.MaxFailovers > 1000 {
		add("max_failovers", "must be between 1 and 1000 (automatic failovers within failover_window before failover is blocked; unset: no limit)")
	}
	if h.FailoverWindow < 0 || (h.FailoverWindow > 0 && h.FailoverWindow.D() < time.Second) {
		add("failover_window", "must be at least 1s (default %s)", DefaultFailoverWindow)
	} else if h.FailoverWindow > 0 && h.MaxFailovers == 0 {
		add("failover_window", "applies only with max_failovers: set max_failovers too, or remove failover_window")
	}
	switch h.ConfirmDefault {
	case "", ConfirmProceed, ConfirmBlock:
	default:
		add("confirm_default", "%q is not a decision (use %q or %q)", h.ConfirmDefault, ConfirmProceed, ConfirmBlock)
	}
	if h.ConfirmTimeout < 0 || (h.ConfirmTimeout > 0 && h.ConfirmTimeout.D() < time.Second) {
		add("confirm_timeout", "must be at least 1s (default %s)", DefaultConfirmTimeout)
	}
	if !h.ConfirmFailover && (h.ConfirmTimeout != 0 || h.ConfirmDefault != "") {
		add("confirm_failover", "confirm_timeout and confirm_default apply only with confirm_failover: true")
	}
	if len(h.Resources) == 0 {
		add("resources", "a hierarchy needs at least one resource")
	}
	byName := map[string]int{}
	for i, r := range h.Resources {
		f := fmt.Sprintf("resources[%d]", i)
		if !ValidName(r.Name) {
			add(f+".name", "%q is not a valid resource name", r.Name)
		}
		if _, dup := byName[r.Name]; dup {
			add(f+".name", "resource %q is defined twice", r.Name)
		}
		byName[r.Name] = i
		if r.Type == "" {
			add(f+".type", "a resource type is required (for example \"app\")")
		} else if knownTypes != nil && !knownTypes(r.Type) {
			add(f+".type", "unknown resource type %q", r.Type)
		}
		if r.LocalRecovery != nil && *r.LocalRecovery < 0 {
			add(f+".local_recovery", "must be 0 or more")
		}
		if r.MonitorInterval != 0 && r.MonitorInterval.D() < 10*time.Millisecond {
			add(f+".monitor_interval", "must be at least 10ms")
		}
	}
	for i, r := range h.Resources {
		for j, d := range r.DependsOn {
			if _, ok := byName[d]; !ok {
				add(fmt.Sprintf("resources[%d].depends_on[%d]", i, j), "resource %q is not defined in hierarchy %q", d, h.Name)
			}
			if d == r.Name {
				add(fmt.Sprintf("resources[%d].depends_on[%d]", i, j), "resource %q depends on itself", d)
			}
		}
	}
	if len(ps) == 0 {
		if _, err := h.RestoreOrder(); err != nil {
			add("resources", "%v", err)
		}
	}
	return ps
}

// RestoreOrder returns the resources children-first: every resource comes
// after everything it depends on. Ties keep the order of the spec, so the
// result is deterministic. A cycle is an error naming its members.
func (h *Hierarchy) RestoreOrder() ([]Resource, error) {
	idx := map[string]int{}
	for i, r := range h.Resources {
		idx[r.Name] = i
	}
	state := make([]int, len(h.Resources)) // 0 new, 1 visiting, 2 done
	var out []Resource
	var stack []string
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case 2:
			return nil
		case 1:
			start := 0
			for k, n := range stack {
				if n == h.Resources[i].Name {
					start = k
				}
			}
			cyc := append(append([]string{}, stack[start:]...), h.Resources[i].Name)
			return fmt.Errorf("dependency cycle: %s", strings.Join(cyc, " -> "))
		}
		state[i] = 1
		stack = append(stack, h.Resources[i].Name)
		for _, d := range h.Resources[i].DependsOn {
			j, ok := idx[d]
			if !ok {
				return fmt.Errorf("resource %q depends on unknown resource %q", h.Resources[i].Name, d)
			}
			if err := visit(j); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = 2
		out = append(out, h.Resources[i])
		return nil
	}
	for i := range h.Resources {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RemoveOrder is RestoreOrder reversed: parents first.
func (h *Hierarchy) RemoveOrder() ([]Resource, error) {
	o, err := h.RestoreOrder()
	if err != nil {
		return nil, err
	}
	for i, j := 0, len(o)-1; i < j; i, j = i+1, j-1 {
		o[i], o[j] = o[j], o[i]
	}
	return o, nil
}

// Priority returns the node's position in the priority list, or -1.
func (h *Hierarchy) Priority(node string) int {
	for i, n := range h.Nodes {
		if n == node {
			return i
		}
	}
	return -1
}

// ValidName reports whether s is usable as a node, hierarchy or resource name.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// SortedKeys returns a map's keys in order; used for stable output.
func SortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
