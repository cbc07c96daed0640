package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

const testKey = "iLsmckBzHgDA4pGjDyPK4YssDTrXbjfWK4fSwtg4ZAo="

// goodAgent is a complete, valid config. The bad cases below edit one line
// of it, so its line numbers matter.
const goodAgent = `node: node1
data_dir: /var/lib/lifeboat
log_level: debug
shutdown_strategy: stop
quorum_loss_action: keep
api:
  socket: /run/lifeboat.sock
  token_file: token
cluster:
  key: "` + testKey + `"
  nodes:
    - name: node1
      raft: 10.0.0.1:7101
      gossip: 10.0.0.1:7102
      api: 10.0.0.1:7103
    - name: node2
      raft: 10.0.0.2:7101
      gossip: 10.0.0.2:7102
      api: 10.0.0.2:7103
    - name: quorum
      witness: true
      raft: 10.0.0.3:7101
      gossip: 10.0.0.3:7102
      api: 10.0.0.3:7103
timing:
  lease: 900ms
  renew_interval: 200ms
  probe_interval: 200ms
  probe_timeout: 150ms
  suspicion_mult: 3
  raft_heartbeat: 200ms
  raft_election: 400ms
`

const agentFile = "/etc/lifeboat/agent.yaml"

// edit replaces exactly one occurrence of old in s.
func edit(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if strings.Count(s, pairs[i]) != 1 {
			t.Fatalf("test bug: %q occurs %d times", pairs[i], strings.Count(s, pairs[i]))
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func asErrors(t *testing.T, err error) []Error {
	t.Helper()
	var es *Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T, want *Errors: %v", err, err)
	}
	if len(es.List) == 0 {
		t.Fatal("empty *Errors")
	}
	return es.List
}

// find returns the entry for field, failing the test if there is none.
func find(t *testing.T, list []Error, field string) Error {
	t.Helper()
	for _, e := range list {
		if e.Field == field {
			return e
		}
	}
	t.Fatalf("no error for field %q in:\n%v", field, &Errors{List: list})
	return Error{}
}

func TestParseAgentGood(t *testing.T) {
	a, err := ParseAgent(agentFile, []byte(goodAgent))
	if err != nil {
		t.Fatal(err)
	}
	if a.Node != "node1" || a.DataDir != "/var/lib/lifeboat" || a.LogLevel != "debug" ||
		a.ShutdownStrategy != ShutdownStop || a.QuorumLossAction != QuorumLossKeep {
		t.Errorf("top level: %+v", a)
	}
	if a.API.Socket != "/run/lifeboat.sock" || a.API.TokenFile != "/etc/lifeboat/token" {
		t.Errorf("api: %+v", a.API)
	}
	if len(a.Cluster.Nodes) != 3 || !a.Cluster.Nodes[2].Witness || a.Cluster.Nodes[1].Gossip != "10.0.0.2:7102" {
		t.Errorf("nodes: %+v", a.Cluster.Nodes)
	}
	want := Timing{
		Profile: ProfileDefault,
		Lease:   spec.Duration(900 * time.Millisecond), RenewInterval: spec.Duration(200 * time.Millisecond),
		ProbeInterval: spec.Duration(200 * time.Millisecond), ProbeTimeout: spec.Duration(150 * time.Millisecond),
		SuspicionMult: 3, RaftHeartbeat: spec.Duration(200 * time.Millisecond), RaftElection: spec.Duration(400 * time.Millisecond),
		TimerSlack: spec.Duration(time.Millisecond),
	}
	if a.Timing != want {
		t.Errorf("timing = %+v, want %+v", a.Timing, want)
	}
	if s := a.Self(); s.Name != "node1" || s.Raft != "10.0.0.1:7101" || s.API != "10.0.0.1:7103" {
		t.Errorf("Self() = %+v", s)
	}
	if k := a.KeyBytes(); len(k) != 32 {
		t.Errorf("KeyBytes() has %d bytes", len(k))
	}
}

func TestParseAgentDefaults(t *testing.T) {
	in := `node: a
data_dir: /d
cluster:
  key: aGVsbG8gd29ybGQgMTIzNA==
  nodes:
    - {name: a, raft: "a.example:1", gossip: "a.example:2", api: "a.example:3"}
`
	a, err := ParseAgent("/x/agent.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if a.LogLevel != "info" || a.ShutdownStrategy != ShutdownSwitchover || a.QuorumLossAction != QuorumLossRemove {
		t.Errorf("defaults: %+v", a)
	}
	if a.API.Socket != "/d/lifeboat.sock" || a.API.TokenFile != "" || a.API.MaxConnections != 256 || a.Events.MaxBytes != 16<<20 {
		t.Errorf("api: %+v", a.API)
	}
	d := DefaultTiming()
	if a.Timing != d || d.Lease.D() != 600*time.Millisecond || d.RenewInterval.D() != 150*time.Millisecond ||
		d.ProbeInterval.D() != 300*time.Millisecond || d.ProbeTimeout.D() != 100*time.Millisecond ||
		d.SuspicionMult != 2 || d.RaftHeartbeat.D() != 300*time.Millisecond || d.RaftElection.D() != 300*time.Millisecond {
		t.Errorf("timing = %+v, defaults %+v", a.Timing, d)
	}
	if len(a.KeyBytes()) != 16 {
		t.Errorf("KeyBytes() = %d bytes, want 16", len(a.KeyBytes()))
	}
	if a.Watchdog.Device != "" || a.Watchdog.Timeout != 0 {
		t.Errorf("watchdog on by default: %+v", a.Watchdog)
	}
	if a.MaxParallelRestores != DefaultMaxParallelRestores {
		t.Errorf("max_parallel_restores = %d, want the default %d", a.MaxParallelRestores, DefaultMaxParallelRestores)
	}
	if m, err := ParseAgent("/x/agent.yaml", []byte(in+"max_parallel_restores: 4\n")); err != nil {
		t.Errorf("max_parallel_restores: 4: %v", err)
	} else if m.MaxParallelRestores != 4 {
		t.Errorf("max_parallel_restores: 4 read as %d", m.MaxParallelRestores)
	}
	if a.AWS.MutatingBucket != "200/5" || a.AWS.DescribeBucket != "100/20" {
		t.Errorf("EC2 pacing defaults %q %q, want AWS's 200/5 and 100/20", a.AWS.MutatingBucket, a.AWS.DescribeBucket)
	}
	if _, err := ParseAgent("/x/agent.yaml", []byte(in+"aws: {mutating_bucket: 500/10, describe_bucket: \"off\"}\n")); err != nil {
		t.Errorf("buckets: %v", err)
	}
	if _, err := ParseAgent("/x/agent.yaml", []byte(in+"aws: {mutating_bucket: 5}\n")); err == nil || !strings.Contains(err.Error(), `aws.mutating_bucket: "5" is not CAPACITY/REFILL`) {
		t.Errorf("a bucket without a rate: %v", err)
	}
	if _, err := ParseAgent("/x/agent.yaml", []byte(in+"max_parallel_restores: -1\n")); err == nil || !strings.Contains(err.Error(), "max_parallel_restores: -1 is not between 1 and 4096") {
		t.Errorf("max_parallel_restores: -1: %v", err)
	}
	// The fast profile changes the defaults; a field set by hand wins.
	f, err := ParseAgent("/x/agent.yaml", []byte(in+"timing: {profile: fast, raft_election: 200ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	fast := ProfileTiming(ProfileFast)
	fast.RaftElection = spec.Duration(200 * time.Millisecond)
	if f.Timing != fast || fast.Lease.D() != 150*time.Millisecond || fast.RenewInterval.D() >= fast.Lease.D()/3 {
		t.Errorf("fast timing = %+v, want %+v", f.Timing, fast)
	}
	// The cluster runs with the same values as plain durations.
	ms := time.Millisecond
	if got, want := f.Timing.Timers(), (Timers{Lease: 150 * ms, Renew: 30 * ms, ProbeInterval: 50 * ms, ProbeTimeout: 30 * ms,
		SuspicionMult: 2, RaftHeartbeat: 100 * ms, RaftElection: 200 * ms}); got != want {
		t.Errorf("fast timers = %+v, want %+v", got, want)
	}
	// The timer slack: the kernel's own 50us is allowed (it keeps the
	// kernel's behaviour); a slack the lease's own margins would notice is
	// not.
	if k, err := ParseAgent("/x/agent.yaml", []byte(in+"timing: {timer_slack: 50us}\n")); err != nil || k.Timing.TimerSlack.D() != 50*time.Microsecond {
		t.Errorf("timer_slack: 50us: %v", err)
	}
	for _, bad := range []string{"timing: {timer_slack: 20ms}\n", "timing: {profile: fast, timer_slack: 2ms}\n"} {
		if _, err := ParseAgent("/x/agent.yaml", []byte(in+bad)); err == nil || !strings.Contains(err.Error(), "timing.timer_slack") || !strings.Contains(err.Error(), "a hundredth of timing.lease") {
			t.Errorf("%s: %v", strings.TrimSpace(bad), err)
		}
	}
	if _, err := ParseAgent("/x/agent.yaml", []byte(in+"timing: {timer_slack: 0s}\n")); err == nil || !strings.Contains(err.Error(), "timing.timer_slack: must be greater than 0") {
		t.Errorf("timer_slack: 0s: %v", err)
	}
	if _, err := ParseAgent("/x/agent.yaml", []byte(in+"timing: {profile: quick}\n")); err == nil || !strings.Contains(err.Error(), "use default or fast") {
		t.Errorf("unknown profile: %v", err)
	}
	// Bounds set by hand are kept.
	if g, err := ParseAgent("/x/agent.yaml", []byte(in+"events: {max_bytes: 2097152}\napi: {max_connections: 1024}\n")); err != nil || g.Events.MaxBytes != 2<<20 || g.API.MaxConnections != 1024 {
		t.Errorf("bounds set: %v %+v %+v", err, g.Events, g.API)
	}
	b, err := ParseAgent("/x/agent.yaml", []byte(in+"watchdog: {device: /dev/watchdog}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Watchdog.Timeout.D() != time.Second {
		t.Errorf("watchdog timeout default %v, want 1s", b.Watchdog.Timeout)
	}
}

func TestParseAgentBad(t *testing.T) {
	cases := []struct {
		name  string
		edits []string // old, new pairs applied to goodAgent
		line  int
		field string
		msg   string
	}{
		{"unknown key", []string{"      raft: 10.0.0.2:7101", "      rfat: 10.0.0.2:7101"},
			17, "cluster.nodes[1].rfat", `unknown key "rfat" (did you mean "raft"?)`},
		{"unknown key top level", []string{"log_level: debug", "loglevel: debug"},
			3, "loglevel", `did you mean "log_level"?`},
		{"unknown key far", []string{"log_level: debug", "colour: red"},
			3, "colour", "known keys: node, data_dir"},
		{"health listener not host:port", []string{"log_level: debug", "log_level: debug\nhealth_listen: 7180"},
			4, "health_listen", `"7180" is not host:port`},
		{"not host:port", []string{"raft: 10.0.0.2:7101", "raft: 127.0.0.1"},
			17, "cluster.nodes[1].raft", `"127.0.0.1" is not host:port (for example 10.0.0.2:7101)`},
		{"bad port", []string{"gossip: 10.0.0.2:7102", "gossip: 10.0.0.2:70000"},
			18, "cluster.nodes[1].gossip", "port must be a number from 1 to 65535"},
		{"unspecified address", []string{"api: 10.0.0.2:7103", "api: 0.0.0.0:7103"},
			19, "cluster.nodes[1].api", "not an address other nodes can reach"},
		{"bad host", []string{"api: 10.0.0.2:7103", "api: bad_host:7103"},
			19, "cluster.nodes[1].api", "not an IP address or host name"},
		{"missing address", []string{"      api: 10.0.0.2:7103\n", ""},
			16, "cluster.nodes[1].api", "required: host:port"},
		{"address used twice", []string{"gossip: 10.0.0.2:7102", "gossip: 10.0.0.1:7101"},
			18, "cluster.nodes[1].gossip", "already used by cluster.nodes[0].raft"},
		{"duplicate node names", []string{"name: node2", "name: node1"},
			16, "cluster.nodes[1].name", `node name "node1" is used twice`},
		{"invalid node name", []string{"name: node2", "name: node/2"},
			16, "cluster.nodes[1].name", "not a valid name"},
		{"node not in cluster", []string{"node: node1", "node: node9"},
			1, "node", `"node9" is not in cluster.nodes (add it there or use one of: node1, node2, quorum)`},
		{"missing data_dir", []string{"data_dir: /var/lib/lifeboat\n", ""},
			1, "data_dir", "required"},
		{"bad log level", []string{"log_level: debug", "log_level: verbose"},
			3, "log_level", "use debug, info, warn or error"},
		{"bad shutdown strategy", []string{"shutdown_strategy: stop", "shutdown_strategy: halt"},
			4, "shutdown_strategy", "use switchover or stop"},
		{"bad quorum loss action", []string{"quorum_loss_action: keep", "quorum_loss_action: panic"},
			5, "quorum_loss_action", "use remove or keep"},
		{"bad duration", []string{"lease: 900ms", "lease: 5 seconds"},
			26, "timing.lease", `invalid duration "5 seconds" (use a value such as "500ms" or "2s")`},
		{"duration without unit", []string{"lease: 900ms", "lease: 5"},
			26, "timing.lease", `invalid duration "5"`},
		{"explicit zero duration", []string{"lease: 900ms", "lease: 0s"},
			26, "timing.lease", "must be greater than 0"},
		{"renew_interval too long", []string{"renew_interval: 200ms", "renew_interval: 300ms"},
			27, "timing.renew_interval", "less than a third of timing.lease (900ms)"},
		{"probe_timeout too long", []string{"probe_timeout: 150ms", "probe_timeout: 200ms"},
			29, "timing.probe_timeout", "less than timing.probe_interval"},
		{"suspicion_mult zero", []string{"suspicion_mult: 3", "suspicion_mult: 0"},
			30, "timing.suspicion_mult", "1 or more"},
		{"election below heartbeat", []string{"raft_election: 400ms", "raft_election: 100ms"},
			32, "timing.raft_election", "at least timing.raft_heartbeat"},
		{"missing key", []string{"  key: \"" + testKey + "\"\n", ""},
			9, "cluster.key", "set cluster.key or cluster.key_file"},
		{"bad base64 key", []string{testKey, "not base64!"},
			10, "cluster.key", "not valid base64"},
		{"short key", []string{testKey, "aGVsbG8="},
			10, "cluster.key", "decodes to 5 bytes but the key must be 16, 24 or 32 bytes"},
		{"key and key_file", []string{"  nodes:\n", "  key_file: /k\n  nodes:\n"},
			11, "cluster.key_file", "not both"},
		{"type error int", []string{"suspicion_mult: 3", "suspicion_mult: three"},
			30, "timing.suspicion_mult", `"three" is not a whole number`},
		{"type error float for int", []string{"suspicion_mult: 3", "suspicion_mult: 2.5"},
			30, "timing.suspicion_mult", "not a whole number"},
		{"type error bool", []string{"witness: true", "witness: maybe"},
			21, "cluster.nodes[2].witness", `"maybe" is not true or false`},
		{"type error list for string", []string{"node: node1", "node: [node1]"},
			1, "node", "expected a string, found a list"},
		{"type error scalar for list", []string{"  nodes:\n", "  nodes: node1\n  old_nodes:\n"},
			11, "cluster.nodes", "expected a list"},
		{"type error scalar for struct", []string{"api:\n  socket: /run/lifeboat.sock\n  token_file: token\n", "api: /run/lifeboat.sock\n\n\n"},
			6, "api", "expected a mapping"},
		{"duplicate key", []string{"log_level: debug", "log_level: debug\nnode: node2"},
			4, "node", "key given twice (first at line 1)"},
		{"two nodes without witness", []string{"    - name: quorum\n      witness: true\n      raft: 10.0.0.3:7101\n      gossip: 10.0.0.3:7102\n      api: 10.0.0.3:7103\n", ""},
			11, "cluster.nodes", "two nodes need a third voter: add a node with witness: true"},
		{"only witnesses", []string{"    - name: node1\n", "    - name: node1\n      witness: true\n", "    - name: node2\n", "    - name: node2\n      witness: true\n"},
			11, "cluster.nodes", "every node is a witness"},
		{"socket too long", []string{"/run/lifeboat.sock", "/" + strings.Repeat("s", 120)},
			7, "api.socket", "at most 107"},
		{"watchdog timeout below two renewals", []string{"  raft_election: 400ms\n", "  raft_election: 400ms\nwatchdog:\n  device: /dev/watchdog\n  timeout: 300ms\n"},
			35, "watchdog.timeout", "between 400ms (two renew intervals, and a fifth of the lease) and 1m"},
		{"watchdog relative device", []string{"  raft_election: 400ms\n", "  raft_election: 400ms\nwatchdog:\n  device: watchdog\n"},
			34, "watchdog.device", "must be an absolute path"},
		{"watchdog timeout without device", []string{"  raft_election: 400ms\n", "  raft_election: 400ms\nwatchdog:\n  timeout: 2s\n"},
			34, "watchdog.timeout", "watchdog.device is not"},
		{"api.max_connections too low", []string{"  token_file: token\n", "  token_file: token\n  max_connections: 4\n"},
			9, "api.max_connections", "4 must be between 16 and 65536"},
		{"api.max_connections zero", []string{"  token_file: token\n", "  token_file: token\n  max_connections: 0\n"},
			9, "api.max_connections", "leave it out for the default 256"},
		{"events.max_bytes too low", []string{"  raft_election: 400ms\n", "  raft_election: 400ms\nevents:\n  max_bytes: 1000\n"},
			34, "events.max_bytes", "1000 bytes is below the minimum of 1048576"},
		{"syntax error", []string{"node: node1", "node: [node1"},
			1, "", "fix the YAML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := edit(t, goodAgent, c.edits...)
			a, err := ParseAgent(agentFile, []byte(in))
			if err == nil {
				t.Fatalf("no error; parsed %+v", a)
			}
			if a != nil {
				t.Error("got an Agent along with the error")
			}
			list := asErrors(t, err)
			var e Error
			if c.field == "" {
				e = list[0]
			} else {
				e = find(t, list, c.field)
			}
			if e.File != agentFile || e.Line != c.line || !strings.Contains(e.Message, c.msg) {
				t.Errorf("got %v\nwant %s:%d: %s: ...%s...", e, agentFile, c.line, c.field, c.msg)
			}
			prefix := fmt.Sprintf("%s:%d:", agentFile, c.line)
			if !strings.HasPrefix(e.Error(), prefix) || !strings.Contains(err.Error(), e.Error()) {
				t.Errorf("Error() = %q, want prefix %q and to be part of %q", e.Error(), prefix, err.Error())
			}
			if strings.Contains(err.Error(), "not base64!") || strings.Contains(err.Error(), "aGVsbG8=") {
				t.Errorf("error quotes the secret key: %v", err)
			}
		})
	}
}

func TestParseAgentExactMessage(t *testing.T) {
	_, err := ParseAgent(agentFile, []byte(edit(t, goodAgent, "raft: 10.0.0.2:7101", "raft: 127.0.0.1")))
	want := `/etc/lifeboat/agent.yaml:17:7: cluster.nodes[1].raft: "127.0.0.1" is not host:port (for example 10.0.0.2:7101)`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestParseAgentWitnessIsSelf(t *testing.T) {
	if _, err := ParseAgent(agentFile, []byte(edit(t, goodAgent, "node: node1", "node: quorum"))); err != nil {
		t.Fatal(err)
	}
}

func TestParseAgentAllProblems(t *testing.T) {
	in := edit(t, goodAgent,
		"node: node1", "node: nobody",
		"log_level: debug", "log_lvl: debug",
		"raft: 10.0.0.2:7101", "raft: 10.0.0.2",
		"lease: 900ms", "lease: soon",
		"suspicion_mult: 3", "suspicion_mult: many",
	)
	_, err := ParseAgent(agentFile, []byte(in))
	list := asErrors(t, err)
	want := []struct {
		line  int
		field string
	}{{1, "node"}, {3, "log_lvl"}, {17, "cluster.nodes[1].raft"}, {26, "timing.lease"}, {30, "timing.suspicion_mult"}}
	if len(list) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		if list[i].Line != w.line || list[i].Field != w.field {
			t.Errorf("problem %d = %v, want line %d field %s", i, list[i], w.line, w.field)
		}
	}
	if n := strings.Count(err.Error(), "\n"); n != len(want)-1 {
		t.Errorf("Error() has %d lines, want one per problem:\n%v", n+1, err)
	}
}

func TestParseAgentRelativePaths(t *testing.T) {
	in := edit(t, goodAgent,
		"data_dir: /var/lib/lifeboat", "data_dir: state",
		"  socket: /run/lifeboat.sock\n", "",
		"  key: \""+testKey+"\"", "  key_file: secret/cluster.key",
	)
	a, err := ParseAgent("/etc/lb/agent.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if a.DataDir != "/etc/lb/state" || a.API.Socket != "/etc/lb/state/lifeboat.sock" ||
		a.API.TokenFile != "/etc/lb/token" || a.Cluster.KeyFile != "/etc/lb/secret/cluster.key" {
		t.Errorf("paths not resolved: data_dir %q socket %q token_file %q key_file %q",
			a.DataDir, a.API.Socket, a.API.TokenFile, a.Cluster.KeyFile)
	}
	if a.KeyBytes() != nil {
		t.Error("ParseAgent must not read the key file")
	}
}

func TestLoadAgent(t *testing.T) {
	dir := t.TempDir()
	in := edit(t, goodAgent, "  key: \""+testKey+"\"", "  key_file: cluster.key")
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}

	// Key file missing: the error is at the key_file line and names the file.
	_, err := LoadAgent(path)
	e := find(t, asErrors(t, err), "cluster.key_file")
	keyPath := filepath.Join(dir, "cluster.key")
	if e.File != path || e.Line != 10 || !strings.Contains(e.Message, keyPath) {
		t.Errorf("missing key file: %v", e)
	}

	// Key file with a bad key.
	if err := os.WriteFile(keyPath, []byte("aGVsbG8=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadAgent(path)
	e = find(t, asErrors(t, err), "cluster.key_file")
	if e.Line != 10 || !strings.Contains(e.Message, "decodes to 5 bytes") || strings.Contains(e.Message, "aGVsbG8=") {
		t.Errorf("bad key file: %v", e)
	}

	// Good key file.
	if err := os.WriteFile(keyPath, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := LoadAgent(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.KeyBytes()) != 32 || a.Cluster.KeyFile != keyPath || a.API.TokenFile != filepath.Join(dir, "token") {
		t.Errorf("loaded %+v", a)
	}

	// Missing config file.
	_, err = LoadAgent(filepath.Join(dir, "nope.yaml"))
	if e := asErrors(t, err)[0]; e.File != filepath.Join(dir, "nope.yaml") {
		t.Errorf("missing config: %v", e)
	}
}

// testKit validates like a real kit: "restore" is required.
type testKit struct{}

func (testKit) Type() string { return "testapp" }
func (testKit) Validate(p map[string]string) []spec.Problem {
	if p["restore"] == "" {
		return []spec.Problem{{Field: "restore", Message: "required: the command that starts the resource"}}
	}
	return nil
}
func (testKit) New(spec.Resource, kit.Env) (kit.Instance, error) { return nil, nil }

var testKits, _ = kit.NewRegistry(testKit{})

const goodSpec = `hierarchies:
  - name: web
    nodes: [node1, node2, node3]
    switchback: automatic
    monitor_interval: 1s
    local_recovery: 2
    resources:
      - name: web-app
        type: testapp
        depends_on: [web-data]
        timeout: 10s
        params:
          restore: "systemctl start web"
      - name: web-data
        type: testapp
        monitor_interval: 5s
        local_recovery: 0
        params:
          restore: "mount /data"
  - name: db
    nodes: [node2, node1]
    resources:
      - name: db-app
        type: testapp
        params: {restore: start-db}
`

const specFileName = "web.yaml"

func TestParseSpecGood(t *testing.T) {
	hs, err := ParseSpec(specFileName, []byte(goodSpec), testKits.ValidateHierarchy)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].Name != "web" || hs[1].Name != "db" {
		t.Fatalf("got %+v", hs)
	}
	web, db := hs[0], hs[1]
	if web.Switchback != spec.SwitchbackAutomatic || web.MonitorInterval.D() != time.Second || *web.LocalRecovery != 2 {
		t.Errorf("web policy: %+v", web)
	}
	app, data := web.Resources[0], web.Resources[1]
	if app.Timeout.D() != 10*time.Second || app.MonitorInterval.D() != time.Second || *app.LocalRecovery != 2 ||
		app.DependsOn[0] != "web-data" || app.Params["restore"] != "systemctl start web" {
		t.Errorf("web-app: %+v", app)
	}
	if data.Timeout.D() != spec.DefaultActionTimeout || data.MonitorInterval.D() != 5*time.Second || *data.LocalRecovery != 0 {
		t.Errorf("web-data: %+v", data)
	}
	// Defaults filled by Normalize.
	if db.Switchback != spec.SwitchbackIntelligent || db.MonitorInterval.D() != spec.DefaultMonitorInterval ||
		*db.LocalRecovery != spec.DefaultLocalRecovery || db.Resources[0].Timeout.D() != spec.DefaultActionTimeout ||
		db.Resources[0].Params["restore"] != "start-db" {
		t.Errorf("db defaults: %+v %+v", db, db.Resources[0])
	}
}

func TestParseSpecSingleAndJSON(t *testing.T) {
	single := "name: web\nnodes: [a, b]\nresources:\n  - {name: r, type: testapp, params: {restore: x}}\n"
	json := "{\n\t\"name\": \"web\",\n\t\"nodes\": [\"a\", \"b\"],\n\t\"resources\": [\n\t\t{\"name\": \"r\", \"type\": \"testapp\", \"timeout\": \"3s\", \"params\": {\"restore\": \"x\"}}\n\t]\n}\n"
	jsonList := `{"hierarchies": [{"name": "web", "nodes": ["a"], "resources": [{"name": "r", "type": "testapp", "params": {"restore": "x"}}]}]}`
	for name, in := range map[string]string{"single": single, "json": json, "json list": jsonList} {
		hs, err := ParseSpec("f", []byte(in), testKits.ValidateHierarchy)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(hs) != 1 || hs[0].Name != "web" || len(hs[0].Resources) != 1 || hs[0].Switchback != spec.SwitchbackIntelligent {
			t.Errorf("%s: %+v", name, hs)
		}
	}
	// Errors in JSON still carry lines.
	_, err := ParseSpec("f.json", []byte(strings.Replace(json, `"3s"`, `"3 s"`, 1)), nil)
	if e := find(t, asErrors(t, err), "resources[0].timeout"); e.Line != 5 {
		t.Errorf("json error: %v", e)
	}
}

func TestParseSpecBad(t *testing.T) {
	cases := []struct {
		name  string
		edits []string
		line  int
		field string
		msg   string
	}{
		{"cycle", []string{"        type: testapp\n        monitor_interval: 5s", "        type: testapp\n        depends_on: [web-app]\n        monitor_interval: 5s"},
			7, "hierarchies[0].resources", "dependency cycle: web-app -> web-data -> web-app"},
		{"unknown depends_on", []string{"depends_on: [web-data]", "depends_on: [web-data, web-cache]"},
			10, "hierarchies[0].resources[0].depends_on[1]", `resource "web-cache" is not defined in hierarchy "web"`},
		{"duplicate hierarchy", []string{"  - name: db\n", "  - name: web\n"},
			20, "hierarchies[1].name", `hierarchy "web" is defined twice (also hierarchies[0])`},
		{"unknown key in resource", []string{"depends_on: [web-data]", "dependson: [web-data]"},
			10, "hierarchies[0].resources[0].dependson", `unknown key "dependson" (did you mean "depends_on"?)`},
		{"kit param problem", []string{`          restore: "mount /data"`, `          start: "mount /data"`},
			18, "hierarchies[0].resources[1].params.restore", "required: the command"},
		{"unknown type", []string{"  - name: db\n    nodes: [node2, node1]\n    resources:\n      - name: db-app\n        type: testapp", "  - name: db\n    nodes: [node2, node1]\n    resources:\n      - name: db-app\n        type: nosuch"},
			24, "hierarchies[1].resources[0].type", `unknown resource type "nosuch"`},
		{"bad switchback", []string{"switchback: automatic", "switchback: always"},
			4, "hierarchies[0].switchback", "not a switchback policy"},
		{"bad duration", []string{"timeout: 10s", "timeout: ten"},
			11, "hierarchies[0].resources[0].timeout", `invalid duration "ten"`},
		{"negative local recovery", []string{"local_recovery: 2", "local_recovery: -1"},
			6, "hierarchies[0].local_recovery", "0 or more"},
		{"failure timeout too short", []string{"local_recovery: 2\n", "local_recovery: 2\n    failure_timeout: 100ms\n"},
			7, "hierarchies[0].failure_timeout", "must be at least 1s"},
		{"failover window alone", []string{"local_recovery: 2\n", "local_recovery: 2\n    migration_threshold: 2\n    failover_window: 1h\n"},
			8, "hierarchies[0].failover_window", "applies only with max_failovers"},
		{"params not strings", []string{`params: {restore: start-db}`, `params: {restore: [a, b]}`},
			25, "hierarchies[1].resources[0].params.restore", "expected a string"},
		{"unknown top-level key", []string{"params: {restore: start-db}\n", "params: {restore: start-db}\nversion: 2\n"},
			26, "version", `unknown key "version"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hs, err := ParseSpec(specFileName, []byte(edit(t, goodSpec, c.edits...)), testKits.ValidateHierarchy)
			if err == nil {
				t.Fatalf("no error; parsed %+v", hs)
			}
			e := find(t, asErrors(t, err), c.field)
			if e.File != specFileName || e.Line != c.line || !strings.Contains(e.Message, c.msg) {
				t.Errorf("got %v\nwant %s:%d: %s: ...%s...", e, specFileName, c.line, c.field, c.msg)
			}
		})
	}
}

func TestParseSpecOther(t *testing.T) {
	// The depends_on item's own column is reported.
	_, err := ParseSpec("s", []byte("name: h\nnodes: [a]\nresources:\n  - name: r\n    type: testapp\n    params: {restore: x}\n    depends_on: [r, q]\n"), testKits.ValidateHierarchy)
	if e := find(t, asErrors(t, err), "resources[0].depends_on[1]"); e.Line != 7 || e.Column != 21 {
		t.Errorf("got %v, want line 7 column 21", e)
	}
	// Single form: a typo of hierarchies gets a suggestion.
	_, err = ParseSpec("s", []byte("hierarchys:\n  - name: h\n"), nil)
	if e := find(t, asErrors(t, err), "hierarchys"); e.Line != 1 || !strings.Contains(e.Message, `did you mean "hierarchies"?`) {
		t.Errorf("got %v", e)
	}
	// Validation runs before defaults: a too-short hierarchy monitor
	// interval is reported once, not again for each resource inheriting it.
	_, err = ParseSpec("s", []byte("name: h\nnodes: [a]\nmonitor_interval: 1ms\nresources:\n  - {name: r, type: t}\n  - {name: s, type: t}\n"), nil)
	if list := asErrors(t, err); len(list) != 1 || list[0].Field != "monitor_interval" || list[0].Line != 3 {
		t.Errorf("got %v", err)
	}
	// Empty inputs.
	for _, in := range []string{"", "# nothing\n", "hierarchies: []\n"} {
		if _, err := ParseSpec("s", []byte(in), nil); err == nil {
			t.Errorf("%q: no error", in)
		} else {
			asErrors(t, err)
		}
	}
	// Several documents are refused rather than silently ignored.
	_, err = ParseSpec("s", []byte("name: a\n---\nname: b\n"), nil)
	if e := asErrors(t, err)[0]; e.Line != 2 || !strings.Contains(e.Message, "one YAML document") {
		t.Errorf("got %v", e)
	}
	// Alias loops and merges do not break the parser.
	for _, in := range []string{"name: &a [*a]\n", "a: &a {<<: *a}\n", "resources: &r [*r]\n"} {
		if _, err := ParseSpec("s", []byte(in), nil); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	hs, err := ParseSpec("s", []byte("base: &b {type: testapp, params: {restore: x}}\n"), nil)
	if err == nil {
		t.Errorf("unknown key base accepted: %+v", hs)
	}
	// Anchors and aliases work; merge keys are refused with a clear message.
	hs, err = ParseSpec("s", []byte("name: h\nnodes: &n [a]\nresources:\n  - {name: r, type: testapp, params: &p {restore: x}}\n  - {name: s, type: testapp, params: *p}\n"), testKits.ValidateHierarchy)
	if err != nil || len(hs[0].Resources) != 2 || hs[0].Resources[1].Params["restore"] != "x" {
		t.Errorf("alias: %v %+v", err, hs)
	}
	_, err = ParseSpec("s", []byte("name: h\nnodes: [a]\nresources:\n  - &b {name: r, type: testapp}\n  - {<<: *b, name: s}\n"), nil)
	if e := find(t, asErrors(t, err), "resources[1].<<"); e.Line != 5 || !strings.Contains(e.Message, "not supported") {
		t.Errorf("merge: %v", e)
	}
}

func FuzzParseAgent(f *testing.F) {
	f.Add([]byte(goodAgent))
	f.Add([]byte("node: &a [*a]\ncluster: {nodes: [{name: a, raft: ':1'}]}\n"))
	f.Add([]byte("timing: {lease: 0s, renew_interval: 1h, suspicion_mult: -1}\n"))
	f.Add([]byte("{\"node\": \"a\", \"cluster\": {\"key_file\": \"k\"}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAgent("/etc/lifeboat/agent.yaml", data)
		checkResult(t, a != nil, err)
		if a != nil && (a.Self().Name != a.Node || a.API.Socket == "") {
			t.Fatalf("accepted an inconsistent config: %+v", a)
		}
	})
}

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(goodSpec))
	f.Add([]byte("name: h\nnodes: [a]\nresources:\n  - &b {name: r, type: testapp}\n  - {<<: *b, name: s, depends_on: [r]}\n"))
	f.Add([]byte(`{"hierarchies": [{"name": "x", "nodes": ["a"], "resources": [{"name": "r", "type": "t", "depends_on": ["r"]}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		hs, err := ParseSpec("spec.yaml", data, testKits.ValidateHierarchy)
		checkResult(t, hs != nil, err)
		for _, h := range hs {
			if h.LocalRecovery == nil || h.Switchback == "" {
				t.Fatalf("not normalized: %+v", h)
			}
			if _, err := h.RestoreOrder(); err != nil {
				t.Fatalf("accepted a bad hierarchy: %v", err)
			}
		}
	})
}

func checkResult(t *testing.T, ok bool, err error) {
	if ok == (err != nil) {
		t.Fatalf("result present %v with error %v", ok, err)
	}
	if err == nil {
		return
	}
	var es *Errors
	if !errors.As(err, &es) || len(es.List) == 0 {
		t.Fatalf("error %T is not a non-empty *Errors: %v", err, err)
	}
	for _, e := range es.List {
		if e.File == "" || e.Message == "" || e.Line < 0 {
			t.Fatalf("malformed entry %#v", e)
		}
	}
}

// TestAWSEndpointsInClear: plain http endpoints only on loopback (and the
// metadata service's own link-local address for imds); anything else must
// be https unless aws.allow_insecure_endpoints opts in.
func TestAWSEndpointsInClear(t *testing.T) {
	cases := []struct {
		field, url string
		ok         bool
	}{
		{"ec2", "https://vpce-1.ec2.eu-west-1.vpce.amazonaws.com", true},
		{"ec2", "http://127.0.0.1:4566", true},
		{"sts", "http://127.9.9.9:4566", true},
		{"iam", "http://[::1]:4566", true},
		{"ec2", "http://localhost:4566", true},
		{"imds", "http://169.254.169.254", true},
		{"imds", "http://[fd00:ec2::254]", true},
		{"imds", "http://127.0.0.1:8111", true},
		{"ec2", "http://10.0.0.5:4566", false},
		{"sts", "http://sts.amazonaws.com", false},
		{"ec2", "http://169.254.169.254", false}, // link-local is for IMDS only
		{"imds", "http://10.0.0.5:8111", false},
		{"iam", "http://localhost.evil.example", false},
		{"ec2", "http://[::ffff:10.0.0.5]:80", false},
	}
	for _, c := range cases {
		doc := goodAgent + "aws:\n  endpoints:\n    " + c.field + ": " + c.url + "\n"
		_, err := ParseAgent(agentFile, []byte(doc))
		if c.ok {
			if err != nil {
				t.Errorf("%s %s: %v", c.field, c.url, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s %s: accepted", c.field, c.url)
			continue
		}
		e := find(t, asErrors(t, err), "aws.endpoints."+c.field)
		if e.File != agentFile || e.Line != 35 || !strings.Contains(e.Message, "plain http") || !strings.Contains(e.Message, "allow_insecure_endpoints: true") ||
			!strings.Contains(e.Message, "https://") {
			t.Errorf("%s %s: %v", c.field, c.url, e)
		}
		// The explicit opt-in accepts it.
		if _, err := ParseAgent(agentFile, []byte(doc+"  allow_insecure_endpoints: true\n")); err != nil {
			t.Errorf("%s %s with allow_insecure_endpoints: %v", c.field, c.url, err)
		}
	}
	// A proxy may be http://: https endpoints go through it in a tunnel.
	if _, err := ParseAgent(agentFile, []byte(goodAgent+"aws:\n  https_proxy: http://proxy.corp:3128\n")); err != nil {
		t.Errorf("http proxy: %v", err)
	}
}
