package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Values of Agent.ShutdownStrategy (what the agent does with its
// hierarchies when it stops) and Agent.QuorumLossAction (what it does with
// them when it can no longer renew its lease); the first of each is the
// default.
const (
	ShutdownSwitchover = "switchover"
	ShutdownStop       = "stop"
	QuorumLossRemove   = "remove"
	QuorumLossKeep     = "keep"
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes, NUL included).
const maxSocketPath = 107

// DefaultMaxParallelRestores is max_parallel_restores' default (it is
// engine.DefaultMaxRestores; config is a leaf and does not import the
// engine); MaxParallelRestoresLimit its upper bound.
const (
	DefaultMaxParallelRestores = 16
	MaxParallelRestoresLimit   = 4096
)

const keyHint = "generate one with: head -c 32 /dev/urandom | base64"

var hostnameRe = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$`)

// Agent is the agent config file.
type Agent struct {
	// Node is this node's name: one of Cluster.Nodes.
	Node string `yaml:"node"`
	// DataDir holds the node's state. Relative paths are resolved against
	// the config file's directory.
	DataDir string `yaml:"data_dir"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `yaml:"log_level"`
	// ShutdownStrategy is ShutdownSwitchover (default) or ShutdownStop.
	ShutdownStrategy string `yaml:"shutdown_strategy"`
	// QuorumLossAction is QuorumLossRemove (default) or QuorumLossKeep.
	QuorumLossAction string  `yaml:"quorum_loss_action"`
	API              API     `yaml:"api"`
	Cluster          Cluster `yaml:"cluster"`
	Timing           Timing  `yaml:"timing"`
	// AWS is how this agent reaches AWS (for the ec2 kit).
	AWS AWS `yaml:"aws"`
	// ReadinessInterval is how often this node proves it could take over
	// each hierarchy (default 5m).
	ReadinessInterval spec.Duration `yaml:"readiness_interval"`
	// MaxParallelRestores bounds how many hierarchies this node restores at
	// once (default 16): a node that takes over 1,000 hierarchies restores
	// them in turns instead of starving its own lease renewals.
	MaxParallelRestores int `yaml:"max_parallel_restores"`
	// Watchdog resets this node when its agent hangs while it holds
	// resources nothing outside the node arbitrates (the ip kit's local
	// addresses).
	Watchdog Watchdog `yaml:"watchdog"`
	// HealthListen, when set, is a plain HTTP listener (host:port) that
	// serves only GET /health/HIERARCHY: 200 on the node that has the
	// hierarchy in service, 503 elsewhere, for load balancer and DNS
	// health checks. It carries no token and serves nothing else.
	HealthListen string `yaml:"health_listen"`
	// Notify sends the events this node records to webhooks and commands
	// (see Notifier).
	Notify []Notifier `yaml:"notify"`
	// TLS is this node's own certificate (see TLS); unset: the identity
	// derived from the cluster key, shared by every node.
	TLS TLS `yaml:"tls"`
	// Events bounds the event history on disk.
	Events Events `yaml:"events"`

	key []byte // read from Cluster.KeyFile by LoadAgent
}

// API configures the local and remote API.
type API struct {
	// Socket is the local unix socket; default DataDir/lifeboat.sock.
	Socket string `yaml:"socket"`
	// TokenFile optionally holds the bearer token for remote TCP API access;
	// when unset a token derived from the cluster key is used.
	TokenFile string `yaml:"token_file"`
	// MaxConnections caps the connections open at once on each of the
	// agent's TCP listeners for the API (and the health listener); the
	// members keep a budget of their own and no other address may hold
	// more than a quarter (default 256; 16 to 65536).
	MaxConnections int `yaml:"max_connections"`
}

// Events bounds the node's event history (events.jsonl in data_dir).
type Events struct {
	// MaxBytes bounds the history file and its one rotated predecessor
	// together (default 16 MiB, at least 1 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
}

// Cluster is the membership and its shared secret.
type Cluster struct {
	// Key is the base64 of a 16, 24 or 32 byte key (the memberlist AES key).
	// Exactly one of Key and KeyFile is set.
	Key string `yaml:"key"`
	// KeyFile holds that base64 key; LoadAgent reads it.
	KeyFile string `yaml:"key_file"`
	// Nodes lists every member, this node included.
	Nodes []Node `yaml:"nodes"`
	// Name names the cluster in notifications (default "lifeboat").
	Name string `yaml:"name"`
	// Join: this node joins a running cluster (lifeboat node add) instead
	// of forming one: it never bootstraps raft, and Nodes lists itself and
	// at least one running node to find the cluster through.
	Join bool `yaml:"join"`
}

// Node is one cluster member: an entry of the static membership, as the
// file lists it and as the cluster runs with it (cluster.Member).
type Node struct {
	Name string `yaml:"name"`
	// Witness nodes vote but never run resources.
	Witness bool `yaml:"witness"`
	// Raft, Gossip and API are host:port addresses the other nodes can
	// reach. API serves the TCP API and the internal RPC.
	Raft   string `yaml:"raft"`
	Gossip string `yaml:"gossip"`
	API    string `yaml:"api"`
}

// Bounds and default of aws.readiness_calls_per_minute. EC2 throttles
// each account in each region with a token bucket per API action (a
// non-mutating one such as DescribeHosts: 100 tokens, refilled at 20 a
// second; mutating ones have less), shared by every node and every other
// tool of the account: the default keeps one node's readiness to a second's
// worth of refill a minute, and leaves the rest to failovers.
const (
	DefaultReadinessCallsPerMinute = 60
	MinReadinessCallsPerMinute     = 10
	MaxReadinessCallsPerMinute     = 6000
)

// DefaultReadinessCalls is the budget when none is configured: 60 calls a
// minute, or 20 calls per readiness interval when that is more (an
// interval under 20 s, as in the demo and the tests), so that a short
// interval still proves a few hierarchies each time.
func DefaultReadinessCalls(interval time.Duration) int {
	if interval <= 0 {
		return DefaultReadinessCallsPerMinute
	}
	return min(max(DefaultReadinessCallsPerMinute, int(20*time.Minute/interval)), MaxReadinessCallsPerMinute)
}

// AWS configures the agent's own AWS access. Nothing here is read from the
// environment: the proxy of root's shell is not the agent's.
type AWS struct {
	// Region; empty means the instance metadata service's.
	Region    string       `yaml:"region"`
	Endpoints AWSEndpoints `yaml:"endpoints"`
	// Proxy for AWS API calls; the metadata service is never proxied.
	HTTPProxy  string `yaml:"http_proxy"`
	HTTPSProxy string `yaml:"https_proxy"`
	NoProxy    string `yaml:"no_proxy"`
	// CallTimeout bounds each API call with its retries (default 5s).
	CallTimeout spec.Duration `yaml:"call_timeout"`
	// MaxAttempts per call, retries on throttling and 5xx included
	// (default 4).
	MaxAttempts int `yaml:"max_attempts"`
	// ReadinessCallsPerMinute is the budget of AWS API calls this node's
	// readiness probes may make a minute (default 60, or 20 per
	// readiness_interval when that is more; retries and the decoding of
	// refusals count). Restore, remove and recover never wait
	// for it. When it cannot cover every hierarchy each
	// readiness_interval, the probes take longer to come round (status
	// and doctor say so).
	ReadinessCallsPerMinute int `yaml:"readiness_calls_per_minute"`
	// MutatingBucket and DescribeBucket pace this node's EC2 calls per
	// action the way EC2 throttles them: CAPACITY/REFILL (tokens, tokens
	// per second), or "off". Defaults: AWS's default account limits,
	// 200/5 for actions that change something, 100/20 for Describe*.
	// Raise them when AWS raised the account's limits.
	MutatingBucket string `yaml:"mutating_bucket"`
	DescribeBucket string `yaml:"describe_bucket"`
	// AllowInsecureEndpoints lets Endpoints name plain http:// URLs on
	// addresses other than loopback (signed requests and the credentials
	// IMDS hands out would travel in clear). Only for a simulator on a
	// test network of namespaces; without it such an endpoint is refused.
	AllowInsecureEndpoints bool `yaml:"allow_insecure_endpoints"`
}

// Watchdog configures the node's watchdog device.
type Watchdog struct {
	// Device is the watchdog device, /dev/watchdog (a hardware watchdog,
	// or the softdog module); empty: no watchdog.
	Device string `yaml:"device"`
	// Timeout is how long after the agent's last feed the device resets
	// the machine (default 1s; real devices count whole seconds). The
	// cluster waits lease + timeout before it restores this node's
	// local addresses elsewhere.
	Timeout spec.Duration `yaml:"timeout"`
}

// AWSEndpoints override service endpoints (VPC endpoints, the simulator).
type AWSEndpoints struct {
	EC2  string `yaml:"ec2"`
	STS  string `yaml:"sts"`
	IAM  string `yaml:"iam"`
	IMDS string `yaml:"imds"`
}

// Timing tunes the lease, failure detection (memberlist) and raft. Zero
// means the default (see DefaultTiming). RenewInterval must be under a third
// of Lease, ProbeTimeout under ProbeInterval and RaftElection at least
// RaftHeartbeat.
type Timing struct {
	// Profile picks the defaults of the fields left unset: ProfileDefault
	// or ProfileFast (a LAN with sub-millisecond round trips and machines
	// that are not overloaded: failover in about a quarter of a second, at
	// about twice the idle CPU).
	Profile       string        `yaml:"profile"`
	Lease         spec.Duration `yaml:"lease"`
	RenewInterval spec.Duration `yaml:"renew_interval"`
	ProbeInterval spec.Duration `yaml:"probe_interval"`
	ProbeTimeout  spec.Duration `yaml:"probe_timeout"`
	SuspicionMult int           `yaml:"suspicion_mult"`
	RaftHeartbeat spec.Duration `yaml:"raft_heartbeat"`
	RaftElection  spec.Duration `yaml:"raft_election"`
	// TimerSlack is how late the kernel may end the agent's sleeps, so
	// that it ends several with one wake-up (see package timerslack). The
	// kernel's own default is 50us: set that to keep it.
	TimerSlack spec.Duration `yaml:"timer_slack"`
}

// Timers are the lease, failure-detection and raft timers as the cluster
// runs with them (cluster.Timing): Timing's values as plain durations.
type Timers struct {
	Lease         time.Duration
	Renew         time.Duration
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int
	RaftHeartbeat time.Duration
	RaftElection  time.Duration
}

// Timers returns the timers as the cluster takes them (call it after the
// defaults are applied: an unset field is zero).
func (t Timing) Timers() Timers {
	return Timers{Lease: t.Lease.D(), Renew: t.RenewInterval.D(), ProbeInterval: t.ProbeInterval.D(), ProbeTimeout: t.ProbeTimeout.D(),
		SuspicionMult: t.SuspicionMult, RaftHeartbeat: t.RaftHeartbeat.D(), RaftElection: t.RaftElection.D()}
}

// DefaultSuspicionMult is the default Timing.SuspicionMult.
const DefaultSuspicionMult = 2

type durationField struct {
	name string
	d    *spec.Duration
	def  time.Duration
}

// Timing profiles.
const (
	ProfileDefault = "default"
	ProfileFast    = "fast"
)

func (t *Timing) durations() []durationField {
	ms := time.Millisecond
	if t.Profile == ProfileFast {
		return []durationField{
			{"lease", &t.Lease, 150 * ms},
			{"renew_interval", &t.RenewInterval, 30 * ms},
			{"probe_interval", &t.ProbeInterval, 50 * ms},
			{"probe_timeout", &t.ProbeTimeout, 30 * ms},
			{"raft_heartbeat", &t.RaftHeartbeat, 100 * ms},
			{"raft_election", &t.RaftElection, 100 * ms},
			{"timer_slack", &t.TimerSlack, ms},
		}
	}
	return []durationField{
		{"lease", &t.Lease, 600 * ms},
		{"renew_interval", &t.RenewInterval, 150 * ms},
		{"probe_interval", &t.ProbeInterval, 300 * ms},
		{"probe_timeout", &t.ProbeTimeout, 100 * ms},
		{"raft_heartbeat", &t.RaftHeartbeat, 300 * ms},
		{"raft_election", &t.RaftElection, 300 * ms},
		{"timer_slack", &t.TimerSlack, ms},
	}
}

// DefaultTiming returns the timing used for every field left unset.
func DefaultTiming() Timing { return ProfileTiming(ProfileDefault) }

// ProfileTiming returns a profile's timing.
func ProfileTiming(profile string) Timing {
	t := Timing{Profile: profile}
	for _, f := range t.durations() {
		*f.d = spec.Duration(f.def)
	}
	t.SuspicionMult = DefaultSuspicionMult
	return t
}

// LoadAgent reads, parses and validates the agent config file at path and
// reads the cluster key file it names.
func LoadAgent(path string) (*Agent, error) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Errors{List: []Error{{File: path, Message: fmt.Sprintf("cannot read the agent config: %v (check the path and its permissions)", err)}}}
	}
	w := newWalker(path)
	a := parseAgent(w, data)
	if a != nil && a.Cluster.KeyFile != "" && a.Cluster.Key == "" && !w.bad["cluster.key_file"] {
		b, err := os.ReadFile(a.Cluster.KeyFile)
		if err == nil {
			a.key, err = decodeKey(string(b))
			if err != nil {
				err = fmt.Errorf("key file %s %v", a.Cluster.KeyFile, err)
			}
		} else {
			err = fmt.Errorf("cannot read the key file: %v (create it with: head -c 32 /dev/urandom | base64 > %s)", err, a.Cluster.KeyFile)
		}
		if err != nil {
			w.problem("cluster.key_file", err.Error())
		}
	}
	if a != nil {
		for i, n := range a.Notify {
			if n.Webhook != nil && n.Webhook.HeadersFile != "" && !w.bad[fmt.Sprintf("notify[%d].webhook.headers_file", i)] {
				if _, err := ReadHeadersFile(n.Webhook.HeadersFile); err != nil {
					w.problem(fmt.Sprintf("notify[%d].webhook.headers_file", i), err.Error())
				}
			}
		}
	}
	if a != nil {
		a.loadTLS(w)
	}
	if err := w.result(); err != nil {
		return nil, err
	}
	return a, nil
}

// ParseAgent parses and validates an agent config. name is the file name
// used in errors and to resolve relative paths. It does no I/O: a key_file
// is resolved but not read, so KeyBytes returns nil for it (use LoadAgent).
func ParseAgent(name string, data []byte) (*Agent, error) {
	w := newWalker(name)
	a := parseAgent(w, data)
	if err := w.result(); err != nil {
		return nil, err
	}
	return a, nil
}

// parseAgent records every problem in w; it returns nil only when the file
// could not be decoded at all.
func parseAgent(w *walker, data []byte) *Agent {
	a := &Agent{}
	if root := w.document(data); root == nil && len(w.errs) > 0 || root != nil && !w.decode(root, a) {
		return nil
	}
	// An explicit zero would silently become the default: reject it.
	set := func(p string) bool { _, ok := w.pos[p]; return ok && !w.nulls[p] && !w.bad[p] }
	for _, f := range a.Timing.durations() {
		if p := "timing." + f.name; set(p) && *f.d == 0 {
			w.problem(p, fmt.Sprintf("must be greater than 0 (leave it out for the default %v)", f.def))
			w.bad[p] = true
		}
	}
	if set("timing.suspicion_mult") && a.Timing.SuspicionMult == 0 {
		w.problem("timing.suspicion_mult", "must be 1 or more")
	}
	if set("api.max_connections") && a.API.MaxConnections == 0 {
		w.problem("api.max_connections", fmt.Sprintf("must be between 16 and 65536 (leave it out for the default %d)", DefaultMaxConnections))
		w.bad["api.max_connections"] = true
	}
	if set("events.max_bytes") && a.Events.MaxBytes == 0 {
		w.problem("events.max_bytes", fmt.Sprintf("must be at least 1048576 (leave it out for the default %d, 16 MiB)", DefaultEventsMaxBytes))
		w.bad["events.max_bytes"] = true
	}
	dir := filepath.Dir(w.file)
	for _, p := range append([]*string{&a.DataDir, &a.API.Socket, &a.API.TokenFile, &a.Cluster.KeyFile, &a.TLS.CA, &a.TLS.Cert, &a.TLS.Key}, a.notifyPaths()...) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	a.applyDefaults()
	for _, p := range a.Validate() {
		if !w.mentionsBad(p.Message) {
			w.problem(p.Field, p.Message)
		}
	}
	return a
}

// applyDefaults fills every unset field with its default.
func (a *Agent) applyDefaults() {
	if a.LogLevel == "" {
		a.LogLevel = "info"
	}
	if a.ShutdownStrategy == "" {
		a.ShutdownStrategy = ShutdownSwitchover
	}
	if a.QuorumLossAction == "" {
		a.QuorumLossAction = QuorumLossRemove
	}
	if a.API.Socket == "" && a.DataDir != "" {
		a.API.Socket = filepath.Join(a.DataDir, "lifeboat.sock")
	}
	if a.Timing.Profile == "" {
		a.Timing.Profile = ProfileDefault
	}
	for _, f := range a.Timing.durations() {
		if *f.d == 0 {
			*f.d = spec.Duration(f.def)
		}
	}
	if a.Timing.SuspicionMult == 0 {
		a.Timing.SuspicionMult = DefaultSuspicionMult
	}
	if a.ReadinessInterval == 0 {
		a.ReadinessInterval = spec.Duration(5 * time.Minute)
	}
	if a.MaxParallelRestores == 0 {
		a.MaxParallelRestores = DefaultMaxParallelRestores
	}
	if a.AWS.CallTimeout == 0 {
		a.AWS.CallTimeout = spec.Duration(5 * time.Second)
	}
	if a.AWS.MaxAttempts == 0 {
		a.AWS.MaxAttempts = 4
	}
	if a.AWS.ReadinessCallsPerMinute == 0 {
		a.AWS.ReadinessCallsPerMinute = DefaultReadinessCalls(a.ReadinessInterval.D())
	}
	if a.AWS.MutatingBucket == "" {
		a.AWS.MutatingBucket = "200/5"
	}
	if a.AWS.DescribeBucket == "" {
		a.AWS.DescribeBucket = "100/20"
	}
	if a.Watchdog.Device != "" && a.Watchdog.Timeout == 0 {
		a.Watchdog.Timeout = spec.Duration(time.Second)
	}
	if a.Cluster.Name == "" {
		a.Cluster.Name = "lifeboat"
	}
	if a.API.MaxConnections == 0 {
		a.API.MaxConnections = DefaultMaxConnections
	}
	if a.Events.MaxBytes == 0 {
		a.Events.MaxBytes = DefaultEventsMaxBytes
	}
	a.notifyDefaults()
}

// Defaults of the bounds an operator may change.
const (
	DefaultMaxConnections = 256
	DefaultEventsMaxBytes = 16 << 20
)

// Self returns this node's entry in Cluster.Nodes (the zero Node if absent).
func (a *Agent) Self() Node {
	for _, n := range a.Cluster.Nodes {
		if n.Name == a.Node {
			return n
		}
	}
	return Node{}
}

// KeyBytes returns the decoded cluster key: Cluster.Key, or the content of
// Cluster.KeyFile as read by LoadAgent. It is nil when neither is available.
func (a *Agent) KeyBytes() []byte {
	if a.Cluster.Key != "" {
		b, _ := decodeKey(a.Cluster.Key)
		return b
	}
	return append([]byte(nil), a.key...)
}

// decodeKey decodes a base64 memberlist key. Errors never quote the key.
func decodeKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("is not valid base64 (%s)", keyHint)
	}
	switch len(b) {
	case 16, 24, 32:
		return b, nil
	}
	return nil, fmt.Errorf("decodes to %d bytes but the key must be 16, 24 or 32 bytes (%s)", len(b), keyHint)
}

// Validate reports every problem with a (defaults applied) agent config.
func (a *Agent) Validate() []spec.Problem {
	var ps []spec.Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, spec.Problem{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	var names []string
	for _, n := range a.Cluster.Nodes {
		names = append(names, n.Name)
	}
	switch {
	case a.Node == "":
		add("node", "required: this node's name, one of cluster.nodes")
	case !spec.ValidName(a.Node):
		add("node", "%q is not a valid name (letters, digits, '-', '_', '.', 1-63 characters)", a.Node)
	case len(names) > 0 && a.Self().Name != a.Node:
		add("node", "%q is not in cluster.nodes (add it there or use one of: %s)", a.Node, strings.Join(names, ", "))
	}
	if a.DataDir == "" {
		add("data_dir", "required: the directory for this node's state (for example /var/lib/lifeboat)")
	}
	switch a.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level", "%q is not a log level (use debug, info, warn or error)", a.LogLevel)
	}
	if a.ShutdownStrategy != ShutdownSwitchover && a.ShutdownStrategy != ShutdownStop {
		add("shutdown_strategy", "%q is not a shutdown strategy (use %s or %s)", a.ShutdownStrategy, ShutdownSwitchover, ShutdownStop)
	}
	if a.HealthListen != "" {
		if _, port, err := net.SplitHostPort(a.HealthListen); err != nil || port == "" {
			add("health_listen", "%q is not host:port (for example 0.0.0.0:7180)", a.HealthListen)
		} else if self := a.Self(); self.API == a.HealthListen || self.Raft == a.HealthListen || self.Gossip == a.HealthListen {
			add("health_listen", "%s is already this node's raft, gossip or API address: use a port of its own", a.HealthListen)
		}
	}
	if a.QuorumLossAction != QuorumLossRemove && a.QuorumLossAction != QuorumLossKeep {
		add("quorum_loss_action", "%q is not a quorum loss action (use %s or %s)", a.QuorumLossAction, QuorumLossRemove, QuorumLossKeep)
	}
	if len(a.API.Socket) > maxSocketPath {
		add("api.socket", "%q is %d bytes but a unix socket path may have at most %d: set api.socket to a shorter path", a.API.Socket, len(a.API.Socket), maxSocketPath)
	}
	switch {
	case a.Cluster.Key == "" && a.Cluster.KeyFile == "":
		add("cluster.key", "required: set cluster.key or cluster.key_file to the cluster's shared base64 key (%s)", keyHint)
	case a.Cluster.Key != "" && a.Cluster.KeyFile != "":
		add("cluster.key_file", "set either cluster.key or cluster.key_file, not both")
	case a.Cluster.Key != "":
		if _, err := decodeKey(a.Cluster.Key); err != nil {
			add("cluster.key", "%v", err)
		}
	}
	a.validateNodes(add)
	if !spec.ValidName(a.Cluster.Name) {
		add("cluster.name", "%q is not a valid name (letters, digits, '-', '_', '.', 1-63 characters)", a.Cluster.Name)
	}
	a.validateNotify(add)
	a.validateTiming(add)
	a.validateAWS(add)
	a.validateTLS(add)
	if n := a.API.MaxConnections; n < 16 || n > 65536 {
		add("api.max_connections", "%d must be between 16 and 65536 (default %d)", n, DefaultMaxConnections)
	}
	if a.Events.MaxBytes < 1<<20 {
		add("events.max_bytes", "%d bytes is below the minimum of 1048576 (1 MiB; default %d, 16 MiB)", a.Events.MaxBytes, DefaultEventsMaxBytes)
	}
	if a.ReadinessInterval.D() < time.Second {
		add("readiness_interval", "must be at least 1s (default 5m)")
	}
	if n := a.AWS.ReadinessCallsPerMinute; n < MinReadinessCallsPerMinute || n > MaxReadinessCallsPerMinute {
		add("aws.readiness_calls_per_minute", "must be between %d and %d AWS calls a minute (default %d)", MinReadinessCallsPerMinute, MaxReadinessCallsPerMinute, DefaultReadinessCalls(a.ReadinessInterval.D()))
	}
	if a.MaxParallelRestores < 1 || a.MaxParallelRestores > MaxParallelRestoresLimit {
		add("max_parallel_restores", "%d is not between 1 and %d (default %d)", a.MaxParallelRestores, MaxParallelRestoresLimit, DefaultMaxParallelRestores)
	}
	if w := a.Watchdog; w.Device != "" {
		if !filepath.IsAbs(w.Device) {
			add("watchdog.device", "%q must be an absolute path such as /dev/watchdog", w.Device)
		}
		// The agent stops feeding a tenth of a lease before the lease ends
		// and removes its addresses when it ends: the timeout must leave
		// it time for that, and feeds come every quarter timeout.
		low := max(2*a.Timing.RenewInterval.D(), a.Timing.Lease.D()/5)
		if w.Timeout.D() < low || w.Timeout.D() > time.Minute {
			add("watchdog.timeout", "%v must be between %v (two renew intervals, and a fifth of the lease) and 1m (default 1s)", w.Timeout, low)
		}
	} else if a.Watchdog.Timeout != 0 {
		add("watchdog.timeout", "is set but watchdog.device is not: set the device (/dev/watchdog) or leave the section out")
	}
	return ps
}

// validBucket: CAPACITY/REFILL with a capacity of at least 1 and a
// positive refill, or "off" (awsapi.ParseBucket reads it).
func validBucket(s string) bool {
	if s == "off" {
		return true
	}
	c, r, ok := strings.Cut(s, "/")
	capacity, err1 := strconv.ParseFloat(strings.TrimSpace(c), 64)
	refill, err2 := strconv.ParseFloat(strings.TrimSpace(r), 64)
	return ok && err1 == nil && err2 == nil && capacity >= 1 && refill > 0
}

func (a *Agent) validateAWS(add func(field, format string, args ...any)) {
	urls := []struct {
		field, v string
		endpoint bool
	}{
		{"aws.endpoints.ec2", a.AWS.Endpoints.EC2, true}, {"aws.endpoints.sts", a.AWS.Endpoints.STS, true},
		{"aws.endpoints.iam", a.AWS.Endpoints.IAM, true}, {"aws.endpoints.imds", a.AWS.Endpoints.IMDS, true},
		{"aws.http_proxy", a.AWS.HTTPProxy, false}, {"aws.https_proxy", a.AWS.HTTPSProxy, false},
	}
	for _, u := range urls {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			add(u.field, "%q is not a URL such as https://ec2.eu-west-1.amazonaws.com or http://proxy.corp:3128", u.v)
			continue
		}
		// A proxy sees only a CONNECT tunnel for https endpoints, so
		// http:// is its usual scheme; an endpoint in clear is not.
		if u.endpoint && p.Scheme == "http" && !a.AWS.AllowInsecureEndpoints && !plainHTTPAllowed(u.field, p.Hostname()) {
			add(u.field, "%q is plain http on %s, which is not a loopback address: signed requests and credentials would travel in clear; "+
				"use an https:// URL (AWS's endpoint, an interface VPC endpoint, or a TLS front of the emulator), or, for a simulator on a test network only, set aws.allow_insecure_endpoints: true",
				u.v, p.Hostname())
		}
	}
	if d := a.AWS.CallTimeout.D(); d < 100*time.Millisecond || d > 5*time.Minute {
		add("aws.call_timeout", "must be between 100ms and 5m (default 5s)")
	}
	for _, b := range []struct{ field, v string }{{"aws.mutating_bucket", a.AWS.MutatingBucket}, {"aws.describe_bucket", a.AWS.DescribeBucket}} {
		if !validBucket(b.v) {
			add(b.field, "%q is not CAPACITY/REFILL (tokens, tokens per second; AWS's defaults: mutating 200/5, describe 100/20) or off", b.v)
		}
	}
	if n := a.AWS.MaxAttempts; n < 1 || n > 10 {
		add("aws.max_attempts", "must be between 1 and 10 (default 4)")
	}
}

// imdsAddrs are the instance metadata service's own addresses: it speaks
// plain http only, on a link-local address that never leaves the host.
var imdsAddrs = map[string]bool{"169.254.169.254": true, "fd00:ec2::254": true}

// plainHTTPAllowed reports whether an http:// endpoint on host keeps its
// traffic on this machine: loopback (127.0.0.0/8, ::1, localhost), and
// for aws.endpoints.imds the metadata service's link-local address.
func plainHTTPAllowed(field, host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	return ip.IsLoopback() || field == "aws.endpoints.imds" && imdsAddrs[ip.String()]
}

// ValidateMembers checks a membership as cluster.nodes is checked (unique
// names, reachable unique addresses, a third voter beside two resource
// nodes): the membership a run-time change would leave. It returns the
// problems, one sentence each.
func ValidateMembers(nodes []Node) []string {
	var out []string
	a := &Agent{Cluster: Cluster{Nodes: nodes}}
	a.validateNodes(func(field, format string, args ...any) {
		out = append(out, field+": "+fmt.Sprintf(format, args...))
	})
	return out
}

func (a *Agent) validateNodes(add func(field, format string, args ...any)) {
	nodes := a.Cluster.Nodes
	if len(nodes) == 0 {
		add("cluster.nodes", "at least one node is required: list every member with its name, raft, gossip and api addresses")
		return
	}
	byName := map[string]int{}
	addrs := map[string]string{}
	voters, witnesses := 0, 0
	for i, n := range nodes {
		f := fmt.Sprintf("cluster.nodes[%d]", i)
		if j, dup := byName[n.Name]; dup {
			add(f+".name", "node name %q is used twice (also cluster.nodes[%d]): names must be unique", n.Name, j)
		} else if n.Name == "" {
			add(f+".name", "required: the node's name (letters, digits, '-', '_', '.')")
		} else if !spec.ValidName(n.Name) {
			add(f+".name", "%q is not a valid name (letters, digits, '-', '_', '.', 1-63 characters)", n.Name)
		} else {
			byName[n.Name] = i
		}
		for _, ad := range []struct{ field, val, example string }{
			{"raft", n.Raft, "10.0.0.2:7101"}, {"gossip", n.Gossip, "10.0.0.2:7102"}, {"api", n.API, "10.0.0.2:7103"},
		} {
			key, err := checkHostPort(ad.val, ad.example)
			if err != nil {
				add(f+"."+ad.field, "%v", err)
			} else if prev, dup := addrs[key]; dup {
				add(f+"."+ad.field, "%s is already used by %s: every address must be unique", ad.val, prev)
			} else {
				addrs[key] = f + "." + ad.field
			}
		}
		if n.Witness {
			witnesses++
		} else {
			voters++
		}
	}
	switch {
	case a.Cluster.Join:
		// A joining node lists itself and the nodes it finds the cluster
		// through; the cluster's membership is the replicated one.
		if len(nodes) < 2 {
			add("cluster.nodes", "cluster.join is set: list this node and at least one node of the running cluster, so that it can find the cluster")
		}
	case voters == 0:
		add("cluster.nodes", "every node is a witness: at least one node must run resources (witness: false)")
	case voters == 2 && witnesses == 0:
		add("cluster.nodes", "two nodes need a third voter: add a node with witness: true")
	}
}

func (a *Agent) validateTiming(add func(field, format string, args ...any)) {
	t := &a.Timing
	if t.Profile != ProfileDefault && t.Profile != ProfileFast {
		add("timing.profile", "%q is not a timing profile (use %s or %s)", t.Profile, ProfileDefault, ProfileFast)
	}
	for _, f := range t.durations() {
		if *f.d <= 0 {
			add("timing."+f.name, "must be greater than 0 (default %v)", f.def)
		}
	}
	if t.Lease > 0 && t.RenewInterval > 0 && t.RenewInterval >= t.Lease/3 {
		add("timing.renew_interval", "%v must be less than a third of timing.lease (%v) so that a missed renewal does not lose the lease: lower renew_interval or raise lease", t.RenewInterval, t.Lease)
	}
	if t.ProbeTimeout > 0 && t.ProbeTimeout >= t.ProbeInterval {
		add("timing.probe_timeout", "%v must be less than timing.probe_interval (%v): lower probe_timeout or raise probe_interval", t.ProbeTimeout, t.ProbeInterval)
	}
	if t.SuspicionMult < 1 {
		add("timing.suspicion_mult", "must be 1 or more (default %d)", DefaultSuspicionMult)
	}
	if t.RaftHeartbeat > 0 && t.RaftHeartbeat.D() < 5*time.Millisecond {
		add("timing.raft_heartbeat", "%v is too short: raft needs at least 5ms", t.RaftHeartbeat)
	}
	if t.TimerSlack > 0 && (t.TimerSlack.D() > 10*time.Millisecond || t.Lease > 0 && t.TimerSlack > t.Lease/100) {
		add("timing.timer_slack", "%v is too long: at most 10ms and a hundredth of timing.lease (%v); 1ms is the default, 50us the kernel's", t.TimerSlack, t.Lease)
	}
	if t.RaftElection > 0 && t.RaftElection < t.RaftHeartbeat {
		add("timing.raft_election", "%v must be at least timing.raft_heartbeat (%v)", t.RaftElection, t.RaftHeartbeat)
	}
}

// checkHostPort validates an address other nodes dial and returns it in a
// canonical form for duplicate detection.
func checkHostPort(s, example string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("required: host:port (for example %s)", example)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("%q is not host:port (for example %s)", s, example)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("%q: the port must be a number from 1 to 65535 (for example %s)", s, example)
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return "", fmt.Errorf("%q: %s is not an address other nodes can reach: use this node's own address (for example %s)", s, host, example)
		}
		host = ip.String()
	} else if len(host) > 253 || !hostnameRe.MatchString(host) {
		return "", fmt.Errorf("%q: %q is not an IP address or host name (for example %s)", s, host, example)
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(p)), nil
}
