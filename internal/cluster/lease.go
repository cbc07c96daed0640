package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// Voters is the voter set the asker counts a majority of (sorted).
	// A voter grants only when its own latest set is the same, so that
	// during a membership change no lease is counted against a set that
	// is no longer the cluster's (see members.go). Absent from versions
	// before run-time membership: not checked.
	Voters []string `json:"voters,omitempty"`
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
	// WaitMS lets the voter hold its answer up to this long when the
	// lease will have run out (or the revoke will have been applied) by
	// then, so the asker learns the moment it happens instead of polling.
	// A voter that does not know the field answers at once.
	WaitMS int64 `json:"wait_ms,omitempty"`
	// MinAgeMS raises the age the last grant must have beyond the voter's
	// Threshold: the asker sets it when the node holds resources only its
	// watchdog fences, to the lease plus the watchdog's timeout and margin.
	MinAgeMS int64 `json:"min_age_ms,omitempty"`
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

// RenewSender is a LeaseTransport that can send a renewal without waiting
// for its answer. done is called exactly once: with the voter's answer, or
// with an error (no answer within timeout at the latest, or the connection
// failed), from a goroutine of the transport's; it must not block. A
// renewal round then costs the renewing node no goroutine and no wake-up
// of its own per voter: the transport's reader counts the answer in.
type RenewSender interface {
	SendRenew(peer string, req RenewRequest, timeout time.Duration, done func(RenewResponse, error))
}

// LeaseConfig configures a Leases.
type LeaseConfig struct {
	Node string
	// Voters is a fixed voter set (tests); VotersFunc, when set, gives
	// the current one (raft's latest configuration).
	Voters     []string
	VotersFunc func() []string
	Lease      time.Duration
	Renew      time.Duration
	Holder     bool // false on a witness: it grants but holds nothing
	FSM        *FSM
	Transport  LeaseTransport
	Logger     *slog.Logger
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
	fresh  []chan struct{} // closed at the next grant to a lease not fresh here
	// beforeGrant, when set (tests), runs between a renewal's check of
	// the state and the recording of its grant.
	beforeGrant func()

	hmu     sync.Mutex
	gen     uint64
	until   time.Time
	lastOK  time.Time
	lastWhy string // why the last round that failed did
	waiters []chan struct{}
	last    *renewRound // the round under way, or the last one
	// ending fires when Acting turns false, expiry when the lease ends
	// (both re-armed at every extension; nil until the first).
	ending, expiry *time.Timer
}

// renewRound is one round of renewals: its answers are counted as they
// come, each by the goroutine that received it (under hmu).
type renewRound struct {
	gen              uint64
	start            time.Time
	voters           []string
	majority         int
	granted          int
	answered         map[string]bool
	why              []string
	extended, closed bool // the majority granted; the next round began
}

// NewLeases makes the lease service; Run starts renewing.
func NewLeases(cfg LeaseConfig) *Leases {
	return &Leases{cfg: cfg, started: time.Now(), grants: map[grantKey]time.Time{}}
}

// WatchdogAge is the age the last grant must have before a node holding
// resources fenced by a watchdog of timeout wd may be taken over. The node
// feeds its watchdog only while its lease is valid for at least ActMargin
// more, so its last feed came before its lease's end minus that margin;
// its lease ended no later than the lease after the last grant. The
// watchdog has fired by then plus wd: plus 10% for clock-rate drift and the
// same slack as Threshold.
func (l *Leases) WatchdogAge(wd time.Duration) time.Duration {
	d := l.cfg.Lease - l.ActMargin() + wd
	return d + d/10 + l.slack()
}

// ActMargin is how long before its lease's end a node stops acting under
// it: actions are cut off and the watchdog is no longer fed then.
func (l *Leases) ActMargin() time.Duration { return l.cfg.Lease / 10 }

// Threshold is how long after its last grant a voter considers a lease
// expired: the lease plus 10% for clock-rate drift plus a slack of 50ms
// (a fifth of the lease for leases under 250ms).
func (l *Leases) Threshold() time.Duration {
	return l.cfg.Lease + l.cfg.Lease/10 + l.slack()
}

func (l *Leases) slack() time.Duration { return min(50*time.Millisecond, l.cfg.Lease/5) }

// Majority is the number of voters that make a quorum.
func (l *Leases) Majority() int { return len(l.voters())/2 + 1 }

// voters is the voter set now.
func (l *Leases) voters() []string {
	if l.cfg.VotersFunc != nil {
		return l.cfg.VotersFunc()
	}
	return l.cfg.Voters
}

// HandleRenew is the voter side of a renewal.
func (l *Leases) HandleRenew(req RenewRequest) RenewResponse {
	if h := l.cfg.FSM.Halted(); h != nil {
		// Its state is frozen: it cannot tell which generation is current.
		return RenewResponse{Reason: "this voter " + h.String()}
	}
	if req.Voters != nil {
		if mine := l.voters(); !slices.Equal(slices.Sorted(slices.Values(mine)), slices.Sorted(slices.Values(req.Voters))) {
			return RenewResponse{Reason: fmt.Sprintf("voter set differs: %s counts %v, this voter %v (a membership change is under way)", req.Node, req.Voters, mine)}
		}
	}
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
	if l.beforeGrant != nil {
		l.beforeGrant()
	}
	now := time.Now()
	key := grantKey{req.Node, req.Gen}
	l.gmu.Lock()
	prev, had := l.grants[key]
	if !had || now.Sub(prev) >= l.Threshold() {
		for _, c := range l.fresh {
			close(c)
		}
		l.fresh = nil
	}
	l.grants[key] = now
	l.gmu.Unlock()
	// The revoke may have been applied after the check above, and an
	// attestation that came in between (after the revoke, before the
	// grant was recorded) found no grant and said the lease expired. So
	// the state is read again now that the grant is recorded: a grant
	// answered was recorded before any revoke applied here, and every
	// later attestation sees it. (Read after, not under, the grants' lock:
	// placement reads grants while it holds the state's read lock.)
	l.cfg.FSM.View(func(s *State) {
		n := s.Nodes[req.Node]
		revoked = n == nil || n.Gen != req.Gen || n.Revoked
	})
	l.gmu.Lock()
	defer l.gmu.Unlock()
	if revoked {
		if l.grants[key].Equal(now) { // never answered: taken back
			if had {
				l.grants[key] = prev
			} else {
				delete(l.grants, key)
			}
		}
		return RenewResponse{Revoked: true, Reason: fmt.Sprintf("generation %d of %s was fenced", req.Gen, req.Node)}
	}
	for k, at := range l.grants {
		if k.node == req.Node && k.gen < req.Gen && now.Sub(at) > l.Threshold() {
			delete(l.grants, k) // old generation, long expired
		}
	}
	return RenewResponse{Granted: true}
}

// HandleAttest is the voter side of an attestation: it answers at once.
func (l *Leases) HandleAttest(req AttestRequest) AttestResponse {
	r, _, _ := l.attest(req)
	return r
}

// AwaitAttest is HandleAttest that may hold its answer for up to
// req.WaitMS: when the only reason to say no is that the lease has not yet
// run out, or that the revoke has not yet been applied here, it waits for
// that moment and answers then (or at ctx's end, with the last answer).
func (l *Leases) AwaitAttest(ctx context.Context, req AttestRequest) AttestResponse {
	deadline := time.Now().Add(time.Duration(req.WaitMS) * time.Millisecond)
	for {
		changed := l.cfg.FSM.Changed()
		r, after, behind := l.attest(req)
		// Not Before: at the deadline itself (after 0, a voter behind
		// MinIndex) it answers instead of re-arming a zero timer.
		if r.Expired || !time.Now().Add(after).Before(deadline) {
			return r
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !behind {
			t = time.NewTimer(after)
			timer = t.C
		} else {
			// bounded even if nothing is applied: re-check by the deadline
			t = time.NewTimer(time.Until(deadline))
			timer = t.C
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return r
		case <-timer:
		case <-changed:
		}
		t.Stop()
	}
}

// attest computes a voter's answer and, when it is no, how long until it
// may turn into yes (behind: waiting for raft, not for the clock).
func (l *Leases) attest(req AttestRequest) (r AttestResponse, after time.Duration, behind bool) {
	if idx := l.cfg.FSM.Index(); idx < req.MinIndex {
		return AttestResponse{Reason: fmt.Sprintf("state at index %d, behind %d", idx, req.MinIndex)}, 0, true
	}
	l.gmu.Lock()
	defer l.gmu.Unlock()
	th := max(l.Threshold(), time.Duration(req.MinAgeMS)*time.Millisecond)
	if since := time.Since(l.started); since < th {
		return AttestResponse{Reason: fmt.Sprintf("voter started %s ago", since.Round(time.Millisecond))}, th - since, false
	}
	if at, ok := l.grants[grantKey{req.Node, req.Gen}]; ok {
		if ago := time.Since(at); ago < th {
			return AttestResponse{Reason: fmt.Sprintf("granted %s ago", ago.Round(time.Millisecond))}, th - ago, false
		}
	}
	return AttestResponse{Expired: true}, 0, false
}

// Freshened returns a channel closed at the next grant by this voter to a
// lease it had not granted within a threshold (a node starting or coming
// back): what LastGrant says of it turns fresh then, with no other event.
func (l *Leases) Freshened() <-chan struct{} {
	l.gmu.Lock()
	defer l.gmu.Unlock()
	if len(l.fresh) == 0 { // shared until it fires (see FSM.Changed)
		l.fresh = append(l.fresh, make(chan struct{}))
	}
	return l.fresh[0]
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

// Attest asks every voter (this one locally) whether the lease named by
// req (node, generation, the index of the revoke to have applied, the age
// the last grant must have) has expired, letting each hold its answer up to
// req.WaitMS for the lease to run out. It returns as soon as a majority
// says yes, or as soon as a majority can no longer be reached, without
// waiting for voters that do not answer (a dead machine answers nothing):
// with the reasons of those that said no or failed so far.
func (l *Leases) Attest(ctx context.Context, req AttestRequest) (bool, []string) {
	type ans struct {
		peer string
		r    AttestResponse
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the calls still waiting are not needed
	voters := l.voters()
	majority := len(voters)/2 + 1
	ch := make(chan ans, len(voters))
	for _, v := range voters {
		go func() {
			if v == l.cfg.Node {
				ch <- ans{peer: v, r: l.AwaitAttest(ctx, req)}
				return
			}
			r, err := l.cfg.Transport.Attest(ctx, v, req)
			ch <- ans{peer: v, r: r, err: err}
		}()
	}
	yes, no := 0, 0
	var why []string
	for yes < majority && len(voters)-no >= majority {
		var a ans
		select {
		case a = <-ch:
		case <-ctx.Done():
			return false, append(why, fmt.Sprintf("%d of %d voters answered before %v", yes+no, len(voters), ctx.Err()))
		}
		switch {
		case a.err != nil:
			no++
			why = append(why, fmt.Sprintf("%s: %v", a.peer, a.err))
		case a.r.Expired:
			yes++
		default:
			no++
			why = append(why, a.peer+": "+a.r.Reason)
		}
	}
	return yes >= majority, why
}

// Valid reports whether this node holds a lease of generation gen now.
func (l *Leases) Valid(gen uint64) bool {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	return gen != 0 && l.gen == gen && time.Now().Before(l.until)
}

// ErrLeaseExpired is the cause of a Bound context's end: this node's lease
// ran out (or was never held), so it may no longer act.
var ErrLeaseExpired = errors.New("this node's lease expired")

// Bound returns a context that ends, with cause ErrLeaseExpired, margin
// before this node's lease of generation gen runs out. Renewals move that
// moment on, so an action may run longer than one lease as long as the
// lease keeps being renewed; a node that stops renewing (lost quorum, or a
// frozen process that resumes) has its action cut off before the cluster
// can attest the lease expired. It fails at once when the lease is not
// valid for at least margin from now: the check made immediately before
// an action.
func (l *Leases) Bound(parent context.Context, gen uint64, margin time.Duration) (context.Context, context.CancelFunc, error) {
	l.hmu.Lock()
	end := l.until.Add(-margin)
	ok := gen != 0 && l.gen == gen && time.Now().Before(end)
	l.hmu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("%w (generation %d)", ErrLeaseExpired, gen)
	}
	ctx, cancel := context.WithCancelCause(parent)
	var mu sync.Mutex
	var timer *time.Timer
	var check func()
	check = func() {
		l.hmu.Lock()
		end := l.until.Add(-margin)
		valid := l.gen == gen && time.Now().Before(end)
		l.hmu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if !valid {
			cancel(fmt.Errorf("%w (generation %d)", ErrLeaseExpired, gen))
			return
		}
		timer = time.AfterFunc(time.Until(end), check)
	}
	mu.Lock()
	timer = time.AfterFunc(time.Until(end), check)
	mu.Unlock()
	return ctx, func() {
		mu.Lock()
		timer.Stop()
		mu.Unlock()
		cancel(context.Canceled)
	}, nil
}

// Acting reports whether this node may keep hierarchies of generation gen
// in service: it holds that lease for at least ActMargin more. A node whose
// renewals stall takes its hierarchies out of service ActMargin before the
// lease ends, the moment it also stops feeding its watchdog, so that a
// live agent removes its local addresses before the watchdog would reset
// it for holding them.
func (l *Leases) Acting(gen uint64) bool {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	return gen != 0 && l.gen == gen && time.Now().Before(l.until.Add(-l.ActMargin()))
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
	if len(l.waiters) == 0 { // shared until the next change (see FSM.Changed)
		l.waiters = append(l.waiters, make(chan struct{}))
	}
	return l.waiters[0]
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
	// Rounds start on the cluster's beat (see NextBeat), at least half a
	// period apart.
	t := time.NewTimer(NextBeat(time.Now(), l.cfg.Renew, 0))
	defer t.Stop()
	defer func() {
		l.hmu.Lock()
		if l.expiry != nil {
			l.expiry.Stop()
			l.ending.Stop()
		}
		l.hmu.Unlock()
	}()
	var lastRejoin time.Time
	// rejoining: a join is in flight; another one would only commit
	// another generation and make this one stale.
	var rejoining atomic.Bool
	var mine uint64 // the generation this process joined with
	joined := make(chan uint64, 1)
	for {
		select {
		case g := <-joined:
			mine = g
			rejoining.Store(false)
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
		if (mine == 0 || gen > mine || (gen == mine && revoked)) && time.Since(lastRejoin) > 5*l.cfg.Renew && rejoining.CompareAndSwap(false, true) {
			lastRejoin = time.Now()
			go func() {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				g, err := l.cfg.Rejoin(rctx)
				if err != nil {
					l.cfg.Logger.Debug("join cluster", "error", err)
					rejoining.Store(false)
					return
				}
				select {
				case joined <- g: // the loop takes it, then allows another
				default:
					rejoining.Store(false)
				}
			}()
		}
		// A node whose state machine halted holds nothing: it lets its
		// lease run out so that the others fence it and move its
		// hierarchies.
		if mine != 0 && gen == mine && !revoked && l.cfg.FSM.Halted() == nil {
			l.startRound(ctx, gen)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(NextBeat(time.Now(), l.cfg.Renew, l.cfg.Renew/2))
		}
	}
}

// startRound asks all voters for a grant: this one at once, the others
// through the transport without waiting for them. Each answer is counted
// as it comes (answer), and the lease is extended to the round's start
// plus Lease the moment a majority has granted. A round whose majority
// had not granted by the time the next one starts has its reasons kept
// (lastWhy) for the log line when the lease runs out; its answers still
// count if they come later (within Lease/2), since a grant given after the
// round started is good until its start plus Lease.
//
// The calls still out when a majority has granted are left to finish,
// never cancelled: cancelling a request made the HTTP client close its
// connection, and the next round paid a new TLS handshake.
func (l *Leases) startRound(ctx context.Context, gen uint64) *renewRound {
	voters := l.voters()
	r := &renewRound{gen: gen, start: time.Now(), voters: voters, majority: len(voters)/2 + 1, answered: map[string]bool{}}
	req := RenewRequest{Node: l.cfg.Node, Gen: gen}
	if l.cfg.FSM.Level() >= LevelTyped {
		// Only then is every voter a version that reads the field (an
		// older one refuses a request with a field it does not know), and
		// only then can the membership change.
		req.Voters = voters
	}
	l.hmu.Lock()
	if p := l.last; p != nil {
		p.closed = true
		if !p.extended {
			l.lastWhy = p.reasons()
		}
	}
	l.last = r
	if len(voters) == 0 {
		l.lastWhy = "this node is not a voter in any raft configuration it knows (not yet added?)"
	}
	l.hmu.Unlock()
	timeout := l.cfg.Lease / 2
	sender, async := l.cfg.Transport.(RenewSender)
	for _, v := range voters {
		switch {
		case v == l.cfg.Node:
			l.answer(r, v, l.HandleRenew(req), nil)
		case async:
			sender.SendRenew(v, req, timeout, func(resp RenewResponse, err error) { l.answer(r, v, resp, err) })
		default:
			go func() {
				cctx, cancel := context.WithTimeout(ctx, timeout)
				resp, err := l.cfg.Transport.Renew(cctx, v, req)
				cancel()
				l.answer(r, v, resp, err)
			}()
		}
	}
	return r
}

// answer counts voter's answer to round r, and extends the lease when it
// makes a majority.
func (l *Leases) answer(r *renewRound, voter string, resp RenewResponse, err error) {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if r.answered[voter] {
		return
	}
	r.answered[voter] = true
	switch {
	case err != nil:
		r.why = append(r.why, voter+": "+err.Error())
	case !resp.Granted:
		r.why = append(r.why, voter+": "+resp.Reason)
	default:
		r.granted++
	}
	if r.extended || r.granted < r.majority {
		return
	}
	r.extended = true
	if r.gen < l.gen {
		return // a late answer to a round of a generation left behind
	}
	was := l.gen == r.gen && time.Now().Before(l.until)
	l.gen = r.gen
	if u := r.start.Add(l.cfg.Lease); u.After(l.until) {
		l.until = u
	}
	l.lastOK = time.Now()
	if !was {
		l.cfg.Logger.Info("lease acquired", "node", l.cfg.Node, "gen", r.gen)
		l.notify()
	}
	l.armLocked()
}

// armLocked sets the timers at which waiters hear that the lease is about
// to end (Acting turns false) and that it has ended (hmu held).
func (l *Leases) armLocked() {
	toEnding := time.Until(l.until.Add(-l.ActMargin())) + time.Millisecond
	toExpiry := time.Until(l.until) + time.Millisecond
	if l.expiry != nil {
		l.ending.Reset(toEnding)
		l.expiry.Reset(toExpiry)
		return
	}
	l.ending = time.AfterFunc(toEnding, func() {
		l.hmu.Lock()
		if !time.Now().Before(l.until.Add(-l.ActMargin())) {
			l.notify()
		}
		l.hmu.Unlock()
	})
	l.expiry = time.AfterFunc(toExpiry, func() {
		l.hmu.Lock()
		if !time.Now().Before(l.until) {
			l.cfg.Logger.Warn("lease expired: no majority of voters granted it", "node", l.cfg.Node, "gen", l.gen, "why", l.lastWhy)
			l.notify()
		}
		l.hmu.Unlock()
	})
}

// reasons says why round r has no majority (hmu held).
func (r *renewRound) reasons() string {
	why := slices.Clone(r.why)
	var silent []string
	for _, v := range r.voters {
		if !r.answered[v] {
			silent = append(silent, v)
		}
	}
	if len(silent) > 0 {
		why = append(why, fmt.Sprintf("no answer from %s within %v", strings.Join(silent, ", "), time.Since(r.start).Round(time.Millisecond)))
	}
	return strings.Join(why, "; ")
}
