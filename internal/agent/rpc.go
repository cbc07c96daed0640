package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
)

// rpc carries agent-to-agent calls over the peers' TCP API, authenticated
// with a token derived from the cluster key. The peers are the cluster's
// membership, which may change at run time: a client is made on first use
// and remade when the peer's address changes; a peer that left the
// membership keeps its last client (a removed voter is still asked until
// raft's configuration drops it).
type rpc struct {
	a     *Agent
	renew time.Duration

	mu      sync.Mutex
	clients map[string]*peerClients
}

type peerClients struct {
	addr       string
	fast, slow *api.Client // fast: lease traffic over HTTP, short timeouts
	stream     *leaseStream
}

var _ cluster.LeaseTransport = (*rpc)(nil)

func newRPC(a *Agent) *rpc {
	return &rpc{a: a, clients: map[string]*peerClients{}, renew: a.cfg.Timing.RenewInterval.D()}
}

// peer returns the clients for a node of the membership.
func (r *rpc) peer(name string) (*peerClients, error) {
	addr := ""
	if r.a.c != nil {
		if m, ok := r.a.c.Member(name); ok {
			addr = m.API
		}
	}
	if addr == "" {
		for _, n := range r.a.cfg.Cluster.Nodes {
			if n.Name == name {
				addr = n.API
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pc := r.clients[name]
	if pc != nil && (addr == "" || pc.addr == addr) {
		return pc, nil
	}
	if addr == "" {
		return nil, fmt.Errorf("node %q is not in the cluster's membership", name)
	}
	a := r.a
	fast, err := api.NewClient(addr, a.internalToken, a.cfg.Timing.Lease.D(), a.peerTLS(name))
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	slow, err := api.NewClient(addr, a.internalToken, 30*time.Second, a.peerTLS(name))
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	if a.net != nil {
		dial := func(ctx context.Context, addr string) (net.Conn, error) { return a.net.DialAPI(ctx, a.cfg.Node, addr) }
		fast.WithDialer(dial)
		slow.WithDialer(dial)
	}
	if pc != nil {
		pc.stream.close() // the peer moved
	}
	pc = &peerClients{addr: addr, fast: fast, slow: slow, stream: &leaseStream{a: a, peer: name, addr: addr}}
	r.clients[name] = pc
	return pc, nil
}

// slow returns the client for forwarding and fan-out calls to a node.
func (r *rpc) slow(name string) (*api.Client, bool) {
	pc, err := r.peer(name)
	if err != nil {
		return nil, false
	}
	return pc.slow, true
}

// call makes a forwarding or fan-out call to a node.
func (r *rpc) call(ctx context.Context, name, method, path string, body, out any) error {
	c, ok := r.slow(name)
	if !ok {
		return fmt.Errorf("node %q is not in the cluster's membership", name)
	}
	return c.Do(ctx, method, path, body, out)
}

func (r *rpc) Renew(ctx context.Context, peer string, req cluster.RenewRequest) (cluster.RenewResponse, error) {
	var out cluster.RenewResponse
	pc, err := r.peer(peer)
	if err != nil {
		return out, err
	}
	out, err = pc.stream.renew(ctx, req)
	if !errors.Is(err, errLegacyPeer) {
		return out, err
	}
	// A peer of a version from before the stream.
	err = pc.fast.Do(ctx, "POST", "/v1/internal/lease/renew", req, &out)
	return out, err
}

// SendRenew implements cluster.RenewSender: the renewal goes on the
// peer's stream without waiting for the answer; to a peer of a version
// from before the stream, over HTTP/JSON from a goroutine.
func (r *rpc) SendRenew(peer string, req cluster.RenewRequest, timeout time.Duration, done func(cluster.RenewResponse, error)) {
	pc, err := r.peer(peer)
	if err != nil {
		done(cluster.RenewResponse{}, err)
		return
	}
	pc.stream.sendAsync(req, timeout, func(resp cluster.RenewResponse, err error) {
		if !errors.Is(err, errLegacyPeer) {
			done(resp, err)
			return
		}
		go func() {
			ctx, cancel := context.WithTimeout(r.a.ctx, timeout)
			defer cancel()
			var out cluster.RenewResponse
			err := pc.fast.Do(ctx, "POST", "/v1/internal/lease/renew", req, &out)
			done(out, err)
		}()
	})
}

var _ cluster.RenewSender = (*rpc)(nil)

func (r *rpc) Attest(ctx context.Context, peer string, req cluster.AttestRequest) (cluster.AttestResponse, error) {
	var out cluster.AttestResponse
	// The voter may hold the answer up to req.WaitMS: bound the call by
	// that plus one lease instead of the lease alone.
	actx, cancel := context.WithTimeout(ctx, time.Duration(req.WaitMS)*time.Millisecond+r.a.cfg.Timing.Lease.D())
	defer cancel()
	err := r.call(actx, peer, "POST", "/v1/internal/lease/attest", req, &out)
	return out, err
}

// applyAnswer is the leader's answer to a forwarded command.
type applyAnswer struct {
	Changed bool   `json:"changed"`
	Gen     uint64 `json:"gen,omitempty"`
	Error   string `json:"error,omitempty"`
	// NotLeader: the peer is no longer the leader; retry.
	NotLeader bool `json:"not_leader,omitempty"`
	// Results: one answer per command of a batch.
	Results []applyAnswer `json:"results,omitempty"`
	// Index is the raft index the command was committed at (absent from
	// older leaders).
	Index uint64 `json:"index,omitempty"`
}

func answerOf(res cluster.Result) applyAnswer {
	ans := applyAnswer{Changed: res.Changed, Gen: res.Gen}
	if res.Err != nil {
		ans.Error = res.Err.Error()
	}
	for _, r := range res.Results {
		ans.Results = append(ans.Results, answerOf(r))
	}
	return ans
}

func resultOf(ans applyAnswer) cluster.Result {
	res := cluster.Result{Changed: ans.Changed, Gen: ans.Gen}
	if ans.Error != "" {
		res.Err = errRejected{ans.Error}
	}
	for _, r := range ans.Results {
		res.Results = append(res.Results, resultOf(r))
	}
	return res
}

// forward sends a command to the leader, in the form every voter reads at
// the cluster's feature level (an older leader reads only the legacy form).
func (r *rpc) forward(ctx context.Context, leader string, cmd cluster.Cmd, at time.Time) (cluster.Result, error) {
	c, ok := r.slow(leader)
	if !ok {
		return cluster.Result{}, fmt.Errorf("leader %q is not in the configured membership", leader)
	}
	body, err := cluster.EncodeWire(cmd, at, r.a.c.FSM.Level())
	if err != nil {
		return cluster.Result{}, err
	}
	var ans applyAnswer
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Do(fctx, "POST", "/v1/internal/apply", json.RawMessage(body), &ans); err != nil {
		return cluster.Result{}, fmt.Errorf("forward %s to leader %s: %w", cmd.Kind(), leader, err)
	}
	if ans.NotLeader {
		return cluster.Result{}, cluster.ErrNotLeader
	}
	res := resultOf(ans)
	// Read your writes: what the caller does next reads this node's
	// state (apply, then switchover to a node the apply added), so wait,
	// briefly, for it to have applied the command too.
	if ans.Index > 0 {
		_ = r.a.waitFor(ctx, 2*time.Second, func(s *cluster.State) (bool, error) { return s.Index >= ans.Index, nil })
	}
	return res, res.Err
}

// handleInternalApply commits a forwarded command if this node leads.
func (a *Agent) handleInternalApply(raw []byte) applyAnswer {
	if !a.c.IsLeader() {
		return applyAnswer{NotLeader: true}
	}
	cmd, at, err := cluster.DecodeWire(raw)
	if err != nil {
		return applyAnswer{Error: err.Error()}
	}
	if cmd == nil {
		return applyAnswer{Error: "the forwarded command is of a newer version than this leader applies"}
	}
	if at.IsZero() {
		at = time.Now().UTC()
	}
	cmd = a.statedLevel(cmd)
	res, idx, err := a.c.ApplyAt(cmd, at, 5*time.Second)
	if err == cluster.ErrNotLeader {
		return applyAnswer{NotLeader: true}
	}
	ans := answerOf(res)
	ans.Index = idx
	if err != nil {
		ans.Error = err.Error()
	}
	return ans
}

// statedLevel fills in the feature level of a join forwarded in the
// legacy form, which has no field for it (0.1's leader refuses unknown
// fields): the level the node gossips. Without it, a new binary that
// forwarded its join while the cluster was still at level 1 would be
// refused as too old by the time the entry applies, if the level rose
// meanwhile (the last node of a rolling upgrade, as it joins). A 0.1
// binary gossips no level and is judged as level 1, as before.
func (a *Agent) statedLevel(cmd cluster.Cmd) cluster.Cmd {
	j, ok := cmd.(cluster.Join)
	if !ok || j.Level != 0 {
		return cmd
	}
	if m, ok := a.c.Members()[j.Node]; ok && m.State == "alive" && m.Level > 0 {
		j.Level = m.Level
	}
	return j
}

// parseCursors reads "node:seq,node:seq".
func parseCursors(s string) map[string]uint64 {
	out := map[string]uint64{}
	for _, part := range strings.Split(s, ",") {
		n, v, ok := strings.Cut(part, ":")
		if !ok {
			continue
		}
		if seq, err := strconv.ParseUint(v, 10, 64); err == nil {
			out[n] = seq
		}
	}
	return out
}

func encodeJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
