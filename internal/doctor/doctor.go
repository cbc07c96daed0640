// Package doctor runs the troubleshooting checklist operators of HA clusters
// in the cloud keep for "the resource will not start" — permissions,
// credentials, metadata, reachability through the proxy, clock skew,
// version skew, cluster health, logging, security software — on one node,
// and says what is wrong and how to fix it. It also checks the network
// traps behind "the virtual IP does not switch" (interfaces, reverse-path
// and ARP sysctls, network managers that remove addresses, AWS routing) and
// the watchdog that fences a frozen node. The agent runs it on every node
// at once; the CLI merges the reports.
package doctor

import (
	"context"
	"sort"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Severities, worst first (defined with the API's finding type).
const (
	// Critical: would stop a failover (or a switchover) from working.
	Critical = api.Critical
	// Warning: something to fix, not blocking today.
	Warning = api.Warning
	// Info: worth knowing.
	Info = api.Info
)

// Finding is one result of the checklist (the API's type: doctor fills
// it, the API carries it).
type Finding = api.Finding

// Rank orders severities: lower is worse.
func Rank(sev string) int { return api.Rank(sev) }

// Member is one node as the failure detector sees it, with its version:
// the API's node status, of which the checks read Name, State, Witness and
// Version.
type Member = api.NodeStatus

// Env is what the checks may look at on one node.
type Env struct {
	// Kits are the agent's kits (the resource types it runs; nil: none).
	// Checks learn what a kit needs through them (kit.ReadinessProber,
	// kit.PolicyDeclarer, kit.ProbeExplainer, kit.Router), never from the
	// kit's package.
	Kits    *kit.Registry
	Node    string
	Witness bool
	Version string
	DataDir string
	// Hierarchies this node may run (it is in their node list).
	Hierarchies []spec.Hierarchy
	// Leader is the raft leader as this node sees it ("" if none).
	Leader  string
	Members []Member
	// LogLevel is the agent's current level.
	LogLevel string
	// AWS: the agent's own settings and clients (Provider nil: no AWS).
	AWSSettings awsapi.Settings
	AWS         awsapi.Provider
	// Probes, when set, gives the readiness probes doctor runs their
	// cloud calls (kit.Env.Probes): the agent's budget and shared
	// answers, so that doctor on a thousand hierarchies costs what
	// readiness does. Nil: each probe calls directly.
	Probes func() kit.ProbeCalls
	// ProcDir is /proc (a test may point it elsewhere).
	ProcDir string
	// Paths lifeboat uses (binary, data directory, socket) for the
	// security software check.
	Paths []string
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// DiskSpace reports the free and total bytes of the file system
	// holding path (statfs by default; a test may fake a full disk).
	DiskSpace func(path string) (free, total uint64, err error)

	// Owners maps each hierarchy to the node it is in service on now (""
	// when on none); nil when the caller does not know.
	Owners map[string]string
	// RootDir prefixes the files the network and watchdog checks read
	// under /etc, /run, /usr and /sys ("" is /; a test points it at a
	// temporary directory).
	RootDir string
	// Links lists this node's network interfaces with their addresses
	// (the kernel's by default; a test may fake them).
	Links func() ([]Link, error)
	// ProbeAddress asks the link, without side effects, whether another
	// host answers for an ip resource's address (the ip kit's readiness
	// probe by default; a test may fake it).
	ProbeAddress func(ctx context.Context, h spec.Hierarchy, r spec.Resource) kit.Readiness
	// WatchdogDevice is the agent's watchdog device ("" when none is
	// configured) and WatchdogTimeout its configured timeout.
	WatchdogDevice  string
	WatchdogTimeout time.Duration
	// AgentPID is the agent's own process (os.Getpid by default): its
	// hold on the watchdog device is expected, another process's is not.
	AgentPID int

	// Holds are the maintenance modes and standbys in force, cluster-wide
	// (nil: none, or the caller does not know).
	Holds []Hold

	// Removed: this node was removed from the cluster (lifeboat node
	// remove) and still runs.
	Removed bool
	// Configured lists the nodes of this node's own cluster.nodes; with
	// MembershipChanged (the membership was changed at run time), the
	// membership check compares it with Members.
	Configured        []string
	MembershipChanged bool
	// CertNotAfter is when this node's certificate expires (zero: no
	// certificate of its own, the identity derived from the cluster key).
	CertNotAfter time.Time

	// imdsErr remembers, for one Run, that the metadata service failed,
	// so that later checks do not each wait out its timeout again.
	imdsErr error
}

// Hold is a maintenance mode or standby in force: What names it
// ("cluster maintenance", "maintenance of node n2", "standby of node n2",
// "maintenance of hierarchy db"), Off the command that ends it.
type Hold struct {
	What   string
	Off    string
	Node   string
	Since  time.Time
	By     string
	Reason string
}

// Check is one item of the checklist.
type Check struct {
	ID  string
	Run func(ctx context.Context, env *Env) []Finding
}

// Run runs every check (or those whose ID is in only) and returns the
// findings worst first. A check that panics does not stop the others.
func Run(ctx context.Context, env *Env, checks []Check, only map[string]bool) []Finding {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.ProcDir == "" {
		env.ProcDir = "/proc"
	}
	env.imdsErr = nil
	var out []Finding
	for _, c := range checks {
		if len(only) > 0 && !only[c.ID] {
			continue
		}
		out = append(out, runOne(ctx, env, c)...)
	}
	for i := range out {
		if out[i].Node == "" {
			out[i].Node = env.Node
		}
	}
	Sort(out)
	return out
}

func runOne(ctx context.Context, env *Env, c Check) (fs []Finding) {
	defer func() {
		if r := recover(); r != nil {
			fs = []Finding{{ID: c.ID, Severity: Warning, Seen: "the check itself failed: " + stringOf(r), Fix: "report this as a lifeboat bug"}}
		}
	}()
	return c.Run(ctx, env)
}

func stringOf(v any) string {
	if e, ok := v.(error); ok {
		return e.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return "panic"
}

// Sort orders findings worst first, then by node, check and hierarchy.
func Sort(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if Rank(a.Severity) != Rank(b.Severity) {
			return Rank(a.Severity) < Rank(b.Severity)
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Hierarchy < b.Hierarchy
	})
}

// ExitCode is the CLI's exit status for a report: 1 when a finding would
// stop a failover, else 0.
func ExitCode(fs []Finding) int {
	for _, f := range fs {
		if f.Severity == Critical {
			return 1
		}
	}
	return 0
}
