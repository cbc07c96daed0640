package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Quorum leases.
//
// A node may keep hierarchies in service only while it holds a lease granted
// by a majority of the voters. Every renew round it asks all voters at once;
// voter V grants node X (generation g) when its replicated state says g is
// X's current, unrevoked generation, and remembers when it granted. X's
// lease then runs until round start + Lease, on X's own monotonic clock.
//
// To move hierarchies away from X, the leader first commits Revoke(X, g)
// through raft (after which no voter that has applied it grants g again),
// then collects, from a majority of voters, an attestation that their last
// grant to X at g is older than Lease plus a margin for clock-rate drift and
// that they have applied the revoke. Any majority that granted X's last
// lease intersects that majority, so X's lease ran out before the move:
// two nodes never both hold a hierarchy. Only then does the leader commit
// Release and reassign.
//
// Renewals do not go through the raft leader, so a leader election does not
// cost anyone their lease.

// RenewRequest asks a voter to grant a lease.
type RenewRequest struct {
	Node string `json:"node"`
	Gen  uint64 `json:"gen"`
}

// RenewResponse is a voter's answer.
type RenewResponse struct {
	Granted bool   `json:"granted"`
	Revoked bool   `json:"revoked,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// AttestRequest asks a voter whether node's lease at gen has run out from
// its point of view.
type AttestRequest struct {
	Node     string `json:"node"`
	Gen      uint64 `json:"gen"`
	MinIndex uint64 `json:"min_index"`
}

// AttestResponse is a voter's answer.
type AttestResponse struct {
	Expired bool   `json:"expired"`
	Reason  string `json:"reason,omitempty"`
}

// LeaseTransport carries lease messages to other voters.
type LeaseTransport interface {
	Renew(ctx context.Context, peer string, req RenewRequest) (RenewResponse, error)
	Attest(ctx context.Context, peer string, req AttestRequest) (AttestResponse, error)
}

// LeaseConfig configures a Leases.
type LeaseConfig struct {
	Node      string
	Voters    []string
	Lease     time.Duration
	Renew     time.Duration
	Holder    bool // false on a witness: it grants but holds nothing
	FSM       *FSM
	Transport LeaseTransport
	Logger    *slog.Logger
	// Rejoin is called (from the renew loop) when this node has not joined
	// since it started, or was fenced; it commits a join command and
	// returns the node's new generation.
	Rejoin func(ctx context.Context) (uint64, error)
}

// grantKey identifies a lease generation: grants are kept per generation
// so that a grant at a newer one never hides a recent grant at an older one.
type grantKey struct {
	node string
	gen  uint64
}

// Leases is both sides of the lease protocol on one node.
type Leases struct {
	cfg     LeaseConfig
	started time.Time

	gmu    sync.Mutex
	grants map[grantKey]time.Time

	hmu     sync.Mutex
	gen     uint64
	until   time.Time
	lastOK  time.Time
	waiters []chan struct{}
}

// NewLeases makes the lease service; Run starts renewing.
func NewLeases(cfg LeaseConfig) *Leases {
	return &Leases{cfg: cfg, started: time.Now(), grants: map[grantKey]time.Time{}}
}

// Threshold is how long after its last grant a voter considers a lease
// expired: the lease plus 10% for clock-rate drift plus 50ms.
func (l *Leases) Threshold() time.Duration {
	return l.cfg.Lease + l.cfg.Lease/10 + 50*time.Millisecond
}

// Majority is the number of voters that make a quorum.
func (l *Leases) Majority() int { return len(l.cfg.Voters)/2 + 1 }

// HandleRenew is the voter side of a renewal.
func (l *Leases) HandleRenew(req RenewRequest) RenewResponse {
	var cur uint64
	var revoked, known bool
	l.cfg.FSM.View(func(s *State) {
		if n := s.Nodes[req.Node]; n != nil {
			cur, revoked, known = n.Gen, n.Revoked, true
		}
	})
	switch {
	case !known || cur < req.Gen:
		return RenewResponse{Reason: fmt.Sprintf("generation %d of %s not yet known here", req.Gen, req.Node)}
	case cur > req.Gen || revoked:
		return RenewResponse{Revoked: true, Reason: fmt.Sprintf("generation %d of %s was fenced", req.Gen, req.Node)}
	}
	now := time.Now()
	l.gmu.Lock()
	l.grants[grantKey{req.Node, req.Gen}] = now
	for k, at := range l.grants {
		if k.node == req.Node && k.gen < req.Gen && now.Sub(at) > l.Threshold() {
			delete(l.grants, k) // old generation, long expired
		}
	}
	l.gmu.Unlock()
	return RenewResponse{Granted: true}
}

// HandleAttest is the voter side of an attestation.
func (l *Leases) HandleAttest(req AttestRequest) AttestResponse {
	if idx := l.cfg.FSM.Index(); idx < req.MinIndex {
		return AttestResponse{Reason: fmt.Sprintf("state at index %d, behind %d", idx, req.MinIndex)}
	}
	l.gmu.Lock()
	defer l.gmu.Unlock()
	th := l.Threshold()
	if since := time.Since(l.started); since < th {
		return AttestResponse{Reason: fmt.Sprintf("voter started %s ago", since.Round(time.Millisecond))}
	}
	if at, ok := l.grants[grantKey{req.Node, req.Gen}]; ok {
		if ago := time.Since(at); ago < th {
			return AttestResponse{Reason: fmt.Sprintf("granted %s ago", ago.Round(time.Millisecond))}
		}
	}
	return AttestResponse{Expired: true}
}

// LastGrant returns how long ago this voter last granted node at gen.
func (l *Leases) LastGrant(node string, gen uint64) (time.Duration, bool) {
	l.gmu.Lock()
	defer l.gmu.Unlock()
	at, ok := l.grants[grantKey{node, gen}]
	if !ok {
		return time.Since(l.started), false
	}
	return time.Since(at), true
}

// Attest asks every voter (this one locally) whether node's lease at gen
// has expired and reports whether a majority says so, with the reasons of
// those that did not.
func (l *Leases) Attest(ctx context.Context, node string, gen, minIndex uint64) (bool, []string) {
	req := AttestRequest{Node: node, Gen: gen, MinIndex: minIndex}
	type ans struct {
		peer string
		r    AttestResponse
		err  error
	}
	ch := make(chan ans, len(l.cfg.Voters))
	for _, v := range l.cfg.Voters {
		go func() {
			if v == l.cfg.Node {
				ch <- ans{peer: v, r: l.HandleAttest(req)}
				return
			}
			r, err := l.cfg.Transport.Attest(ctx, v, req)
			ch <- ans{peer: v, r: r, err: err}
		}()
	}
	yes := 0
	var why []string
	for range l.cfg.Voters {
		a := <-ch
		switch {
		case a.err != nil:
			why = append(why, fmt.Sprintf("%s: %v", a.peer, a.err))
		case a.r.Expired:
			yes++
		default:
			why = append(why, a.peer+": "+a.r.Reason)
		}
	}
	return yes >= l.Majority(), why
}

// Valid reports whether this node holds a lease of generation gen now.
func (l *Leases) Valid(gen uint64) bool {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	return gen != 0 && l.gen == gen && time.Now().Before(l.until)
}

// Current returns the generation and expiry of this node's lease.
func (l *Leases) Current() (uint64, time.Time) {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	return l.gen, l.until
}

// Changed returns a channel closed when the lease is gained or lost.
func (l *Leases) Changed() <-chan struct{} {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	c := make(chan struct{})
	l.waiters = append(l.waiters, c)
	return c
}

func (l *Leases) notify() {
	for _, w := range l.waiters {
		close(w)
	}
	l.waiters = nil
}

// Run renews this node's lease until ctx ends. On a witness it returns at
// once: a witness only grants.
func (l *Leases) Run(ctx context.Context) {
	if !l.cfg.Holder {
		return
	}
	t := time.NewTicker(l.cfg.Renew)
	defer t.Stop()
	var expiry *time.Timer
	defer func() {
		if expiry != nil {
			expiry.Stop()
		}
	}()
	var lastRejoin time.Time
	var mine uint64 // the generation this process joined with
	joined := make(chan uint64, 1)
	for {
		select {
		case g := <-joined:
			mine = g
			l.cfg.Logger.Info("joined the cluster", "node", l.cfg.Node, "gen", g)
		default:
		}
		var gen uint64
		var revoked bool
		l.cfg.FSM.View(func(s *State) {
			if n := s.Nodes[l.cfg.Node]; n != nil {
				gen, revoked = n.Gen, n.Revoked
			}
		})
		if (mine == 0 || gen > mine || (gen == mine && revoked)) && time.Since(lastRejoin) > 5*l.cfg.Renew {
			lastRejoin = time.Now()
			go func() {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				g, err := l.cfg.Rejoin(rctx)
				if err != nil {
					l.cfg.Logger.Debug("join cluster", "error", err)
					return
				}
				select {
				case joined <- g:
				default:
				}
			}()
		}
		if mine != 0 && gen == mine && !revoked {
			if l.round(ctx, gen) {
				l.hmu.Lock()
				until := l.until
				l.hmu.Unlock()
				if expiry != nil {
					expiry.Stop()
				}
				expiry = time.AfterFunc(time.Until(until)+time.Millisecond, func() {
					l.hmu.Lock()
					if !time.Now().Before(l.until) {
						l.cfg.Logger.Warn("lease expired: no majority of voters reachable", "node", l.cfg.Node, "gen", l.gen)
						l.notify()
					}
					l.hmu.Unlock()
				})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round asks all voters for a grant and extends the lease on a majority.
// It reports whether the lease was extended.
func (l *Leases) round(ctx context.Context, gen uint64) bool {
	start := time.Now()
	req := RenewRequest{Node: l.cfg.Node, Gen: gen}
	rctx, cancel := context.WithTimeout(ctx, l.cfg.Lease/2)
	defer cancel()
	ch := make(chan RenewResponse, len(l.cfg.Voters))
	for _, v := range l.cfg.Voters {
		go func() {
			if v == l.cfg.Node {
				ch <- l.HandleRenew(req)
				return
			}
			r, err := l.cfg.Transport.Renew(rctx, v, req)
			if err != nil {
				r = RenewResponse{Reason: err.Error()}
			}
			ch <- r
		}()
	}
	granted, answered := 0, 0
	for granted < l.Majority() && answered < len(l.cfg.Voters) {
		select {
		case r := <-ch:
			answered++
			if r.Granted {
				granted++
			}
		case <-rctx.Done():
			answered = len(l.cfg.Voters)
		}
	}
	if granted < l.Majority() {
		return false
	}
	l.hmu.Lock()
	defer l.hmu.Unlock()
	was := l.gen == gen && time.Now().Before(l.until)
	l.gen = gen
	if u := start.Add(l.cfg.Lease); u.After(l.until) {
		l.until = u
	}
	l.lastOK = time.Now()
	if !was {
		l.cfg.Logger.Info("lease acquired", "node", l.cfg.Node, "gen", gen)
		l.notify()
	}
	return true
}
