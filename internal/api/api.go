// Package api holds the agent's HTTP API types and the client used by the
// CLI and by agents talking to each other. The API is JSON over HTTP, served
// on a root-only Unix socket for local use and on TCP with a bearer token for
// remote use.
package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// DefaultSocket is where the CLI looks when neither --addr nor LIFEBOAT_ADDR is set.
const DefaultSocket = "/run/lifeboat/lifeboat.sock"

// Status is the answer to GET /v1/status.
type Status struct {
	Node   string `json:"node"`
	Leader string `json:"leader"`
	// Fingerprint is the SHA-256 of the API's TLS certificate, for remote
	// CLI access (LIFEBOAT_FINGERPRINT).
	Fingerprint string            `json:"fingerprint"`
	Index       uint64            `json:"index"`
	Nodes       []NodeStatus      `json:"nodes"`
	Hierarchies []HierarchyStatus `json:"hierarchies"`
	// Local is the answering node's own view, fresh (not from the
	// replicated state): its lease and what its engine runs.
	Local LocalStatus `json:"local"`
	// FeatureLevel is the cluster's feature level: it rises only when every
	// voter supports the next one, and never falls.
	FeatureLevel int `json:"feature_level"`
	// SupportedLevel is the highest feature level the answering node's
	// binary supports.
	SupportedLevel int `json:"supported_level"`
	// Halted, when set, says why the answering node stopped applying the
	// replicated log (a command its version does not know).
	Halted string `json:"halted,omitempty"`
	// Maintenance: the whole cluster is in maintenance.
	Maintenance *state.Hold `json:"maintenance,omitempty"`
	// Removed: the answering node was removed from the cluster (lifeboat
	// node remove); it holds and grants nothing.
	Removed bool `json:"removed,omitempty"`
	// Joining: the answering node was started to join a running cluster
	// (cluster.join) and has not been added yet (lifeboat node add).
	Joining bool `json:"joining,omitempty"`
	// MembersChanged: the last run-time membership change.
	MembersChanged *state.Hold `json:"members_changed,omitempty"`
}

// LocalStatus is one node's own view.
type LocalStatus struct {
	LeaseHeld bool   `json:"lease_held"`
	LeaseGen  uint64 `json:"lease_gen"`
	// Hierarchies: what the engine runs here.
	Hierarchies map[string]LocalHierarchy `json:"hierarchies"`
}

// LocalHierarchy is the engine's state of one hierarchy on the answering node.
type LocalHierarchy struct {
	State string `json:"state"`
	Epoch uint64 `json:"epoch"`
	// Holding: this node, right now, holds the hierarchy (it is assigned
	// here and the node's lease is valid).
	Holding bool `json:"holding"`
}

// NodeStatus is one node in Status.
type NodeStatus struct {
	Name    string `json:"name"`
	State   string `json:"state"` // alive, suspect, failed, left, unknown
	Leader  bool   `json:"leader"`
	Witness bool   `json:"witness,omitempty"`
	Version string `json:"version,omitempty"`
	// Level is the highest feature level the node's binary supports (1:
	// a version that predates feature levels).
	Level   int    `json:"level,omitempty"`
	Gen     uint64 `json:"gen"`
	Fenced  bool   `json:"fenced,omitempty"`
	Leaving bool   `json:"leaving,omitempty"`
	// Lease is the answering node's view: "held", "expired" (for itself) or
	// the age of the last renewal it granted.
	Lease string `json:"lease,omitempty"`
	// Findings counts the node's last doctor findings by severity.
	Findings map[string]int `json:"findings,omitempty"`
	// ReadinessPace: how the node's readiness probes keep up (its AWS
	// call budget, the period in which it proves every hierarchy again).
	ReadinessPace *state.ReadinessPace `json:"readiness_pace,omitempty"`
	// LeaseFresh: the answering node granted this node's current lease
	// generation within the lease period (itself: holds its lease).
	LeaseFresh bool `json:"lease_fresh"`
	// Maintenance: nothing is started, stopped or failed over on the node
	// and nothing is placed on it.
	Maintenance *state.Hold `json:"maintenance,omitempty"`
	// Standby: the node is drained and takes nothing.
	Standby *state.Hold `json:"standby,omitempty"`
	// ConfirmFailover: failovers of what the node runs wait for an
	// operator's confirmation.
	ConfirmFailover *state.Hold `json:"confirm_failover,omitempty"`
	// Suffrage is the node's place in raft: voter, or nonvoter while it
	// catches up after lifeboat node add ("" when not known here).
	Suffrage string `json:"suffrage,omitempty"`
}

// HierarchyStatus is one hierarchy in Status.
type HierarchyStatus struct {
	Name   string   `json:"name"`
	Owner  string   `json:"owner"`
	State  string   `json:"state"` // the owner's report: online, restoring, failed, ...; "stopped" when out of service by request
	Epoch  uint64   `json:"epoch"`
	Online bool     `json:"online"`
	MoveTo string   `json:"move_to,omitempty"`
	Failed []string `json:"failed_on,omitempty"`
	// FailedUntil: when each failure mark expires (RFC 3339, UTC), for
	// marks made at feature level 2 and up.
	FailedUntil map[string]string `json:"failed_until,omitempty"`
	Reason      string            `json:"reason,omitempty"`
	Since       string            `json:"since,omitempty"`
	Nodes       []string          `json:"nodes"`
	Switchback  string            `json:"switchback"`
	// Resources: node -> resource -> state, as each node last reported.
	Resources map[string]map[string]string `json:"resources,omitempty"`
	Errors    map[string]string            `json:"errors,omitempty"`
	// Readiness: node -> whether it proved it could take the hierarchy
	// over (standbys and owner alike).
	Readiness map[string]Readiness `json:"readiness,omitempty"`
	// Maintenance says why the hierarchy is unmanaged (the cluster, the
	// hierarchy or its owner is in maintenance); "" when managed.
	Maintenance string `json:"maintenance,omitempty"`
}

// Readiness is one node's readiness for one hierarchy: the record the
// cluster keeps (state.Readiness), served as it is stored except that At
// is served to the second.
type Readiness = state.Readiness

// ApplyRequest is the body of POST /v1/apply.
type ApplyRequest struct {
	Hierarchies []spec.Hierarchy `json:"hierarchies"`
}

// ApplyResponse lists what changed.
type ApplyResponse struct {
	Created   []string `json:"created,omitempty"`
	Updated   []string `json:"updated,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
}

// MoveRequest is the body of POST /v1/hierarchies/{name}/switchover.
type MoveRequest struct {
	To      string        `json:"to"`
	Timeout spec.Duration `json:"timeout,omitempty"`
	Force   bool          `json:"force,omitempty"`
}

// ActionRequest is the body of start, stop and delete.
type ActionRequest struct {
	Timeout spec.Duration `json:"timeout,omitempty"`
	NoWait  bool          `json:"no_wait,omitempty"`
}

// MaintenanceRequest is the body of POST /v1/maintenance: Scope
// "cluster", "node" or "hierarchy", Name the node or hierarchy.
type MaintenanceRequest struct {
	Scope  string `json:"scope"`
	Name   string `json:"name,omitempty"`
	On     bool   `json:"on"`
	Reason string `json:"reason,omitempty"`
}

// MaintenanceOutcome is the answer to POST /v1/maintenance.
type MaintenanceOutcome struct {
	Scope string `json:"scope"`
	Name  string `json:"name,omitempty"`
	On    bool   `json:"on"`
	// Changed is false when it already was so.
	Changed bool   `json:"changed"`
	Message string `json:"message"`
	// Hierarchies: the hierarchies it covers, with their owner and state
	// after the change (for off: where each was adopted).
	Hierarchies []Outcome `json:"hierarchies,omitempty"`
}

// StandbyRequest is the body of POST /v1/nodes/{name}/standby and
// /unstandby.
type StandbyRequest struct {
	Reason string `json:"reason,omitempty"`
	// Force puts the node in standby even when some hierarchy it runs has
	// no other node to go to: that one stays where it is, in service,
	// until a node can take it.
	Force   bool          `json:"force,omitempty"`
	Timeout spec.Duration `json:"timeout,omitempty"`
	NoWait  bool          `json:"no_wait,omitempty"`
}

// NodeSettingRequest is the body of POST /v1/nodes/{name}/confirm-failover.
type NodeSettingRequest struct {
	On     bool   `json:"on"`
	Reason string `json:"reason,omitempty"`
}

// NodeSettingOutcome is the answer to a node setting's change.
type NodeSettingOutcome struct {
	Node    string `json:"node"`
	Setting string `json:"setting"`
	On      bool   `json:"on"`
	Changed bool   `json:"changed"`
	Message string `json:"message"`
}

// TokenList is the API tokens one agent accepts: GET /v1/tokens and
// POST /v1/tokens/reload. No secrets.
type TokenList struct {
	Node   string      `json:"node"`
	Source string      `json:"source"`
	Tokens []TokenInfo `json:"tokens"`
}

// TokenInfo is one token's name and role.
type TokenInfo struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// MemberRequest is the body of POST /v1/nodes (lifeboat node add) and of
// POST /v1/nodes/{name}/remove (only Reason).
type MemberRequest struct {
	Name    string `json:"name,omitempty"`
	Raft    string `json:"raft,omitempty"`
	Gossip  string `json:"gossip,omitempty"`
	API     string `json:"api,omitempty"`
	Witness bool   `json:"witness,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// MemberOutcome is the answer to node add and node remove.
type MemberOutcome struct {
	Node    string `json:"node"`
	Added   bool   `json:"added,omitempty"`
	Removed bool   `json:"removed,omitempty"`
	Changed bool   `json:"changed"`
	Message string `json:"message"`
	// Steps: what was done, in order.
	Steps []string `json:"steps,omitempty"`
	// Members: the membership after the change, with each node's raft
	// suffrage (voter or nonvoter).
	Members  []MemberInfo `json:"members"`
	Duration string       `json:"duration"`
}

// MemberInfo is one node of the membership.
type MemberInfo struct {
	Name     string `json:"name"`
	Witness  bool   `json:"witness,omitempty"`
	Raft     string `json:"raft"`
	Gossip   string `json:"gossip"`
	API      string `json:"api"`
	Suffrage string `json:"suffrage,omitempty"`
}

// StandbyOutcome is the answer to standby and unstandby.
type StandbyOutcome struct {
	Node    string `json:"node"`
	Standby bool   `json:"standby"`
	Changed bool   `json:"changed"`
	Message string `json:"message"`
	// Moved: the hierarchies switched over off the node, with their new
	// owner and state.
	Moved    []Outcome `json:"moved,omitempty"`
	Duration string    `json:"duration"`
}

// Outcome is the answer to switchover, start, stop and delete.
type Outcome struct {
	Hierarchy string `json:"hierarchy"`
	Owner     string `json:"owner,omitempty"`
	State     string `json:"state"`
	Epoch     uint64 `json:"epoch"`
	Duration  string `json:"duration"`
	Message   string `json:"message,omitempty"`
}

// EventsResponse is the answer to GET /v1/events.
type EventsResponse struct {
	Events []events.Event `json:"events"`
	// Cursors: node -> last sequence number returned; pass back as
	// ?cursor=node:seq,... to get only newer events.
	Cursors map[string]uint64 `json:"cursors"`
	// Unreachable lists nodes whose history could not be read.
	Unreachable map[string]string `json:"unreachable,omitempty"`
	// Lost counts, per node, the events after the cursor that its ring no
	// longer holds (the reader fell behind).
	Lost map[string]uint64 `json:"lost,omitempty"`
}

// Version is the answer to GET /v1/version.
type Version struct {
	Node    string `json:"node"`
	Version string `json:"version"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Client talks to one agent.
type Client struct {
	base  string
	token string
	hc    *http.Client
	tr    *http.Transport
}

// Text sends a GET and returns the answer's body as text (the
// Prometheus metrics).
func (c *Client) Text(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return "", fmt.Errorf("build request GET %s: %w", path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", fmt.Errorf("read GET %s: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// CloseIdle closes the client's idle connections.
func (c *Client) CloseIdle() { c.hc.CloseIdleConnections() }

// Dialer opens a connection to a TCP API address (host:port).
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// WithDialer makes TCP connections through dial instead of the network
// stack (tests run whole clusters on an in-memory network); TLS runs on
// top as usual. It returns c.
func (c *Client) WithDialer(dial Dialer) *Client {
	c.tr.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) }
	return c
}

// NewClient makes a client for addr: a Unix socket path ("/run/x.sock" or
// "unix:///run/x.sock") or a TCP address ("10.0.0.1:7100" or
// "https://10.0.0.1:7100"), which is always TLS with tlsCfg. token is sent
// as a bearer token (only TCP needs it).
func NewClient(addr, token string, timeout time.Duration, tlsCfg *tls.Config) (*Client, error) {
	c := &Client{token: token}
	tr := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second, TLSClientConfig: tlsCfg, ForceAttemptHTTP2: false}
	switch {
	case strings.HasPrefix(addr, "unix://") || strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "./"):
		path := strings.TrimPrefix(addr, "unix://")
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		c.base = "http://lifeboat"
	case strings.HasPrefix(addr, "http://"):
		return nil, fmt.Errorf("address %q: the TCP API speaks only TLS: use https://%s or just %s", addr, strings.TrimPrefix(addr, "http://"), strings.TrimPrefix(addr, "http://"))
	case addr == "":
		return nil, errors.New("no agent address: use --addr or LIFEBOAT_ADDR (a Unix socket path or host:port)")
	default:
		hostport := strings.TrimSuffix(strings.TrimPrefix(addr, "https://"), "/")
		if _, _, err := net.SplitHostPort(hostport); err != nil {
			return nil, fmt.Errorf("agent address %q is neither a socket path nor host:port", addr)
		}
		if tlsCfg == nil {
			return nil, fmt.Errorf("agent address %s is TCP, which is TLS: set LIFEBOAT_FINGERPRINT (or --fingerprint) to the agent's certificate fingerprint, which `lifeboat status` on a node prints", addr)
		}
		c.base = "https://" + hostport
	}
	c.hc = &http.Client{Transport: tr, Timeout: timeout}
	c.tr = tr
	return c, nil
}

// Base returns the address the client talks to, for messages.
func (c *Client) Base() string { return c.base }

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when non-nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("build request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("connect to agent at %s: permission denied (the local socket is root-only: run as root)", c.base)
		}
		return fmt.Errorf("connect to agent at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &StatusError{Code: resp.StatusCode, Msg: e.Error}
		}
		return &StatusError{Code: resp.StatusCode, Msg: strings.TrimSpace(string(data))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string {
	if e.Code == http.StatusUnauthorized {
		return "agent refused the request: " + e.Msg + " (set LIFEBOAT_TOKEN or --token-file for TCP access)"
	}
	return e.Msg
}

// DoctorSettings is what a node's agent uses to reach AWS (secrets and
// proxy passwords removed), for comparison with an operator's shell.
type DoctorSettings struct {
	HTTPProxy  string            `json:"http_proxy,omitempty"`
	HTTPSProxy string            `json:"https_proxy,omitempty"`
	NoProxy    string            `json:"no_proxy,omitempty"`
	Region     string            `json:"region,omitempty"`
	Endpoints  map[string]string `json:"endpoints,omitempty"`
}

// Severities of a doctor finding, worst first.
const (
	// Critical: would stop a failover (or a switchover) from working.
	Critical = "critical"
	// Warning: something to fix, not blocking today.
	Warning = "warning"
	// Info: worth knowing.
	Info = "info"
)

// Finding is one result of doctor's checklist.
type Finding struct {
	ID        string `json:"id"`
	Severity  string `json:"severity"`
	Node      string `json:"node"`
	Hierarchy string `json:"hierarchy,omitempty"`
	Resource  string `json:"resource,omitempty"`
	// Seen is what the check observed, in plain words.
	Seen string `json:"seen"`
	// Fix says what to do.
	Fix string `json:"fix,omitempty"`
	// Command reproduces the check by hand (an AWS CLI call with
	// --dry-run, a shell command).
	Command string `json:"command,omitempty"`
}

// Rank orders severities: lower is worse.
func Rank(sev string) int {
	switch sev {
	case Critical:
		return 0
	case Warning:
		return 1
	}
	return 2
}

// NodeDoctor is one node's doctor report.
type NodeDoctor struct {
	Node     string         `json:"node"`
	Version  string         `json:"version,omitempty"`
	Settings DoctorSettings `json:"settings"`
	Findings []Finding      `json:"findings"`
	Error    string         `json:"error,omitempty"`
}

// Doctor is the answer to GET /v1/doctor.
type Doctor struct {
	Nodes []NodeDoctor `json:"nodes"`
}

// ConsoleLogin is the body of POST /ui/login.
type ConsoleLogin struct {
	Token string `json:"token"`
}

// ConsoleSession describes the console's session (GET /ui/session, and
// the answer to a sign-in); Name is empty when not signed in. CSRF must be sent in the X-CSRF-Token header
// of every request that may change something.
type ConsoleSession struct {
	Name string `json:"name"`
	Role string `json:"role"`
	CSRF string `json:"csrf"`
	Node string `json:"node"`
}

// ConsoleOverview is GET /ui/overview: the status and its one-line
// summary.
type ConsoleOverview struct {
	Summary string `json:"summary"`
	Ready   bool   `json:"ready"`
	Status  Status `json:"status"`
}

// ConsoleLink is the answer to POST /v1/console/link: a one-time sign-in
// path, valid 10 minutes, for one use.
type ConsoleLink struct {
	Path string `json:"path"`
}
