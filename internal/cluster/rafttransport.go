package cluster

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// paceTransport wraps raft's transport to cut what hashicorp/raft sends
// when nothing happens, and to bring a follower that comes back up to date
// at once. hashicorp/raft has no knob for either; the transport is ours.
//
// Five changes, each only to *when* an RPC is sent, never to what an RPC
// or its answer says (no answer is ever made up):
//
//  1. Heartbeats are paced. raft's heartbeat goroutine sends one to each
//     follower every HeartbeatTimeout/10 to 2×that (30-60 ms at default
//     timing). The wrapper holds each heartbeat until heartbeatEvery
//     (a whole number of beats near HeartbeatTimeout/3: 100 ms at default
//     timing, see heartbeatEvery) has nearly passed since the previous one to the
//     same follower (nine tenths of it), and then until the cluster's next
//     beat (see NextBeat), then sends it; each of raft's calls sends two,
//     on consecutive beats (see heartbeat), so that raft's own timer wakes
//     the leader half as often. A follower calls an election only after a
//     randomised HeartbeatTimeout to 2×HeartbeatTimeout without contact, so
//     it still hears the leader three times per timeout (at least twice
//     when the beat is longer than a third of it). The
//     leader counts a follower in its leader lease (LeaderLeaseTimeout)
//     only on real answers, so a leader cut off steps down as before; with
//     fewer contacts the lease is set to HeartbeatTimeout (see Start), which
//     matters for liveness only: lifeboat's own quorum leases and every
//     commit still need a majority, and nothing acts on raft's leader lease.
//
//  2. Idle pipeline appends are not sent. In pipeline mode raft sends an
//     AppendEntries every CommitTimeout (10-20 ms) whether or not anything
//     changed, so that a follower learns a new commit index soon. One that
//     carries no entry and repeats the term, previous entry and commit
//     index of the last one sent on that pipeline tells the follower
//     nothing; it is dropped (its future is never delivered: raft ignores
//     the future pipelineSend gets back, and only answers delivered on
//     Consumer move its state). Any new entry or commit index goes out at
//     the next tick as before, and the follower's election timer and the
//     leader's view of the follower are fed by the heartbeats.
//
//  3. A failed replication call waits for the follower to come back before
//     it fails. raft backs off after each failed AppendEntries, doubling up
//     to about 10 s, and does not reset the backoff when heartbeats start
//     to get through again: a node restarted after being down for 5 s
//     waited up to 5 s more for the log entries (its own join among them)
//     while it already heard the leader's heartbeats. Here, when a
//     replication call fails, it returns its error only once a heartbeat to
//     that follower has succeeded again (or after holdMax, or at shutdown),
//     so raft counts one failure per outage and retries 10 ms after the
//     follower answers. Heartbeats keep their own backoff, capped by raft
//     at HeartbeatTimeout/2.
//
//  4. Commits are pushed. A follower learns that an entry committed only
//     from the leader's next AppendEntries, which raft sends when a new
//     entry comes or at its CommitTimeout tick (raft wakes for that tick
//     every 10-20 ms per follower when it is that short: the largest share
//     of an idle leader's wake-ups). lifeboat sets CommitTimeout to a
//     backstop (see Start) and the leader calls Commit as soon as its state
//     machine has applied an entry: for each follower the transport sends
//     the append raft's next tick would send, with no entries, the previous
//     entry being the last one sent to that follower and the commit index
//     no higher than it. On a pipeline it goes on the same connection, after
//     everything raft sent, so the follower holds that entry when it reads
//     the push; raft's decoder takes the answer like that of its own idle
//     appends (it only counts contact). Without a pipeline (raft falls back
//     to one call at a time after an error, and the in-memory transport has
//     none) it follows the last call that succeeded, and its answer goes
//     nowhere. Either way the message is one raft could have sent itself:
//     the term and sender of raft's own last append, an entry the follower
//     acknowledged or receives first, and an index the leader committed.
//
//  5. Keepalives stand in for heartbeats on a pipeline that answers. raft's
//     heartbeat goroutine wakes on its own random timer, 30-60 ms after
//     each call, per follower: with the heartbeats held to the beat, the
//     largest share of an idle leader's wake-ups left. On every heartbeat
//     beat the transport sends each pipeline the idle append raft's own
//     tick would send (and that item 2 drops from raft): a follower's raft
//     takes any append from the leader as contact, and raft's decoder
//     takes its answer as contact for the leader's lease, exactly as for
//     raft's idle appends before lifeboat quieted them. While they are
//     answered, raft's heartbeat call waits (whileCarried), and its timer
//     with it. A keepalive still unanswered at the next beat (a follower
//     down, cut off, frozen, or its raft too busy to answer) hands the
//     heartbeats back to raft at once: they go out on their own connection
//     and raft's fast path as before, until the pipeline answers again.
type paceTransport struct {
	raft.Transport
	heartbeatEvery time.Duration
	twoPerCall     bool // each of raft's calls sends two heartbeats (see heartbeat)
	holdMax        time.Duration
	closed         chan struct{}
	closeOnce      sync.Once

	mu      sync.Mutex
	peers   map[raft.ServerAddress]*raftLink
	commit  uint64 // the highest commit index Commit was given
	keeping bool   // the keepalives goroutine runs
}

// raftLink is what the transport knows of one follower.
type raftLink struct {
	lastBeat time.Time     // when the last heartbeat to it was sent
	down     chan struct{} // non-nil while unreachable: closed when a heartbeat gets through
	id       raft.ServerID
	pipe     *quietPipeline // its open pipeline, if any
	acked    *appendMark    // raft's last call to it that succeeded (no pipeline)
	kick     chan struct{}  // wakes its pusher (nil until the first Commit)
}

// appendMark is what an append told a follower: enough to build the next
// one that adds nothing but a commit index.
type appendMark struct {
	header         raft.RPCHeader
	leader         []byte
	term           uint64
	prev, prevTerm uint64 // the last entry the follower holds after it
	commit         uint64 // the commit index it carried
}

func markOf(req *raft.AppendEntriesRequest) appendMark {
	m := appendMark{header: req.RPCHeader, term: req.Term,
		prev: req.PrevLogEntry, prevTerm: req.PrevLogTerm, commit: req.LeaderCommitIndex}
	if n := len(req.Entries); n > 0 {
		m.prev, m.prevTerm = req.Entries[n-1].Index, req.Entries[n-1].Term
	}
	//lint:ignore SA1019 raft 1.8 still fills the old field in; the push says what raft says
	m.leader = req.Leader
	return m
}

// push is the append that tells the follower commit, if it tells it
// anything new: never beyond the last entry it holds.
func (m appendMark) push(commit uint64) (*raft.AppendEntriesRequest, bool) {
	c := min(commit, m.prev)
	if c <= m.commit {
		return nil, false
	}
	req := &raft.AppendEntriesRequest{RPCHeader: m.header, Term: m.term,
		PrevLogEntry: m.prev, PrevLogTerm: m.prevTerm, LeaderCommitIndex: c}
	//lint:ignore SA1019 as raft 1.8 sends it (see markOf)
	req.Leader = m.leader
	return req, true
}

// heartbeatEvery is how often a follower hears the leader: a whole number
// of the cluster's beats (the renewal interval), so that heartbeats leave
// on the beat; the most that still lets a follower hear the leader three
// times before its election timer can fire, or else twice; a third of the
// timeout when the beat is longer than half of it (or unknown).
func heartbeatEvery(heartbeatTimeout, beat time.Duration) time.Duration {
	switch {
	case beat <= 0 || beat > heartbeatTimeout/2:
		return heartbeatTimeout / 3
	case beat <= heartbeatTimeout/3:
		return beat * (heartbeatTimeout / 3 / beat)
	default:
		return beat
	}
}

// newPaceTransport wraps inner for a leader whose followers time out
// after heartbeatTimeout, on a cluster whose beat is beat (0: none).
// keep is the append that tells the follower commit if it can, and
// otherwise repeats what the last one told it.
func (m appendMark) keep(commit uint64) *raft.AppendEntriesRequest {
	if req, ok := m.push(commit); ok {
		return req
	}
	req := &raft.AppendEntriesRequest{RPCHeader: m.header, Term: m.term,
		PrevLogEntry: m.prev, PrevLogTerm: m.prevTerm, LeaderCommitIndex: m.commit}
	//lint:ignore SA1019 as raft 1.8 sends it (see markOf)
	req.Leader = m.leader
	return req
}

func newPaceTransport(inner raft.Transport, heartbeatTimeout, beat time.Duration) *paceTransport {
	every := heartbeatEvery(heartbeatTimeout, beat)
	// Two per call leaves raft's leader lease (LeaderLeaseTimeout, set to
	// heartbeatTimeout) seeing contact up to 2×every old: only if what is
	// left for an answer's delay is at least a third of it and 100 ms.
	two := heartbeatTimeout-2*every >= max(heartbeatTimeout/3, 100*time.Millisecond)
	return &paceTransport{Transport: inner, heartbeatEvery: every, twoPerCall: two,
		holdMax: 10 * time.Second, closed: make(chan struct{}), peers: map[raft.ServerAddress]*raftLink{}}
}

// isHeartbeat is raft's own test for a heartbeat (net_transport.go; raft
// 1.8 names the leader in the header's Addr).
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	return req.Term != 0 && len(req.Addr) > 0 && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

func (t *paceTransport) link(target raft.ServerAddress) *raftLink {
	l := t.peers[target]
	if l == nil {
		l = &raftLink{}
		t.peers[target] = l
	}
	return l
}

// wait pauses for d, or until the transport closes.
func (t *paceTransport) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-t.closed:
	}
}

func (t *paceTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if isHeartbeat(req) {
		return t.heartbeat(id, target, req, resp)
	}
	err := t.Transport.AppendEntries(id, target, req, resp)
	t.mu.Lock()
	l := t.link(target)
	l.id = id
	if err == nil && resp.Success {
		m := markOf(req)
		l.acked = &m
		if _, ok := m.push(t.commit); ok {
			// The commit was announced while this follower could not
			// hear it: tell it now.
			t.kickLocked(target, l)
		}
	} else {
		l.acked = nil
	}
	t.mu.Unlock()
	if err != nil {
		t.hold(target)
	}
	return err
}

// heartbeat sends raft's heartbeat on two beats in a row, a period apart,
// and returns the second answer (the first one's if it failed or was
// refused). raft's heartbeat goroutine waits its own random
// HeartbeatTimeout/10 to /5 after every call, a wake-up off the beat: the
// largest share of an idle leader's left after the beat itself. So raft
// wakes once per two heartbeats; the follower still hears the leader every
// heartbeatEvery, and raft still counts each follower's contact from real
// answers, every 2×heartbeatEvery (two thirds of its LeaderLeaseTimeout).
func (t *paceTransport) heartbeat(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	t.whileCarried(target)
	if err := t.beatOnce(id, target, req, resp); err != nil || !resp.Success || !t.twoPerCall {
		return err
	}
	select {
	case <-t.closed:
		return nil
	default:
	}
	return t.beatOnce(id, target, req, resp)
}

func (t *paceTransport) beatOnce(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	t.mu.Lock()
	last := t.link(target).lastBeat
	t.mu.Unlock()
	// On the cluster's beat (see NextBeat), at least nine tenths of a
	// period after the last one; at once after a long silence.
	if since := time.Since(last); since < 2*t.heartbeatEvery {
		t.wait(NextBeat(time.Now(), t.heartbeatEvery, t.heartbeatEvery-t.heartbeatEvery/10-since))
	}
	t.mu.Lock()
	t.link(target).lastBeat = time.Now()
	t.mu.Unlock()
	err := t.Transport.AppendEntries(id, target, req, resp)
	t.mu.Lock()
	l := t.link(target)
	switch {
	case err != nil && l.down == nil:
		l.down = make(chan struct{})
	case err == nil && l.down != nil:
		close(l.down)
		l.down = nil
	}
	t.mu.Unlock()
	return err
}

// whileCarried returns once target's pipeline does not carry the
// heartbeats (see keepalive): at once when it has none or does not answer.
func (t *paceTransport) whileCarried(target raft.ServerAddress) {
	for {
		t.mu.Lock()
		p := t.link(target).pipe
		t.mu.Unlock()
		if p == nil {
			return
		}
		stop := p.carrying()
		if stop == nil {
			return
		}
		select {
		case <-stop:
		case <-t.closed:
			return
		}
	}
}

// keepalives sends, on every heartbeat beat, each follower's pipeline the
// append raft's own idle tick would send (see keepalive), while the
// transport has pipelines; it is started with the first one.
func (t *paceTransport) keepalives() {
	for {
		t.wait(NextBeat(time.Now(), t.heartbeatEvery, t.heartbeatEvery/2))
		select {
		case <-t.closed:
			return
		default:
		}
		t.mu.Lock()
		var pipes []*quietPipeline
		for _, l := range t.peers {
			if l.pipe != nil {
				pipes = append(pipes, l.pipe)
			}
		}
		commit := t.commit
		if len(pipes) == 0 {
			t.keeping = false
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
		for _, p := range pipes {
			p.keepalive(commit, t.heartbeatEvery)
		}
	}
}

// hold returns once target has answered a heartbeat since this call began
// (it is marked unreachable now), after holdMax, or at shutdown.
func (t *paceTransport) hold(target raft.ServerAddress) {
	t.mu.Lock()
	l := t.link(target)
	if l.down == nil {
		l.down = make(chan struct{})
	}
	down := l.down
	t.mu.Unlock()
	tm := time.NewTimer(t.holdMax)
	defer tm.Stop()
	select {
	case <-down:
	case <-tm.C:
	case <-t.closed:
	}
}

func (t *paceTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.Transport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	qp := &quietPipeline{AppendPipeline: p, t: t, target: target,
		out: make(chan raft.AppendFuture, 16), done: make(chan struct{})}
	go qp.forward()
	t.mu.Lock()
	l := t.link(target)
	l.id, l.pipe = id, qp
	if !t.keeping {
		t.keeping = true
		go t.keepalives()
	}
	t.mu.Unlock()
	return qp, nil
}

// Commit tells the transport that the log is committed up to index (on the
// leader): every follower that has not been told is sent that (see
// paceTransport), each by a goroutine of its own so that one slow follower
// holds up no other.
func (t *paceTransport) Commit(index uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if index <= t.commit {
		return
	}
	t.commit = index
	for target, l := range t.peers {
		if l.pipe != nil || l.acked != nil {
			t.kickLocked(target, l)
		}
	}
}

// kickLocked has target's pusher run (t.mu held).
func (t *paceTransport) kickLocked(target raft.ServerAddress, l *raftLink) {
	if l.kick == nil {
		l.kick = make(chan struct{}, 1)
		go t.pusher(target, l.kick)
	}
	select {
	case l.kick <- struct{}{}:
	default: // a push is already due: it reads the newest index
	}
}

// pusher sends target the commit index each time Commit kicks it.
func (t *paceTransport) pusher(target raft.ServerAddress, kick <-chan struct{}) {
	for {
		select {
		case <-t.closed:
			return
		case <-kick:
		}
		t.mu.Lock()
		l, commit := t.link(target), t.commit
		pipe, id := l.pipe, l.id
		var req *raft.AppendEntriesRequest
		if pipe == nil && l.acked != nil {
			req, _ = l.acked.push(commit)
		}
		t.mu.Unlock()
		switch {
		case pipe != nil:
			pipe.push(commit)
		case req != nil:
			var resp raft.AppendEntriesResponse
			if err := t.Transport.AppendEntries(id, target, req, &resp); err == nil && resp.Success {
				t.mu.Lock()
				if a := l.acked; a != nil && a.term == req.Term && a.prev == req.PrevLogEntry {
					a.commit = max(a.commit, req.LeaderCommitIndex)
				}
				t.mu.Unlock()
			}
		}
	}
}

// RequestPreVote passes pre-votes on when the wrapped transport has them
// (raft checks for the interface on the transport it is given).
func (t *paceTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	pv, ok := t.Transport.(raft.WithPreVote)
	if !ok {
		return fmt.Errorf("raft transport %T has no pre-vote", t.Transport)
	}
	return pv.RequestPreVote(id, target, args, resp)
}

// stop ends every wait: raft's shutdown waits for its goroutines, some of
// which may be waiting here.
func (t *paceTransport) stop() { t.closeOnce.Do(func() { close(t.closed) }) }

// Close stops the waits and closes the wrapped transport.
func (t *paceTransport) Close() error {
	t.stop()
	if c, ok := t.Transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

var (
	_ raft.Transport   = (*paceTransport)(nil)
	_ raft.WithPreVote = (*paceTransport)(nil)
	_ raft.WithClose   = (*paceTransport)(nil)
)

// quietPipeline drops an append that repeats the last one sent without
// anything new, and carries the transport's commit pushes (see
// paceTransport).
type quietPipeline struct {
	raft.AppendPipeline
	t      *paceTransport
	target raft.ServerAddress

	closed atomic.Bool

	mu   sync.Mutex // raft's replication goroutine, the pusher and keepalives send
	sent bool
	mark appendMark // what the last append sent told the follower

	out       chan raft.AppendFuture // the answers, for raft's decoder, after forward saw them
	done      chan struct{}          // closed by Close
	closeOnce sync.Once

	// Liveness, under lmu (never held while sending: forward takes it, and
	// a send may wait for forward to make room).
	lmu     sync.Mutex
	pending time.Time     // when a keepalive went out unanswered (zero: none)
	carry   chan struct{} // non-nil while the keepalives carry the heartbeats: closed when they stop
}

// forward hands raft's decoder every answer, noting that the follower
// answers.
func (p *quietPipeline) forward() {
	in := p.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			if f.Error() == nil && f.Response().Success {
				p.lmu.Lock()
				p.pending = time.Time{}
				if p.carry == nil && !p.closed.Load() {
					p.carry = make(chan struct{})
				}
				p.lmu.Unlock()
			}
			select {
			case p.out <- f:
			case <-p.done:
				return
			case <-p.t.closed:
				return
			}
		case <-p.done:
			return
		case <-p.t.closed:
			return
		}
	}
}

// Consumer is where raft's decoder reads the answers.
func (p *quietPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

// carrying returns a channel closed when the keepalives stop carrying the
// heartbeats, or nil if they do not carry them now.
func (p *quietPipeline) carrying() <-chan struct{} {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	if p.carry == nil {
		return nil
	}
	return p.carry
}

func (p *quietPipeline) stopCarryingLocked() {
	if p.carry != nil {
		close(p.carry)
		p.carry = nil
	}
}

// keepalive sends the follower the append raft's idle tick would send (the
// one quietPipeline drops from raft: the term and sender of raft's last
// append, the last entry sent, the commit index it may be told), which
// stands in for raft's heartbeat: the follower's raft takes any append from
// the leader as contact, and raft's decoder takes the answer as contact for
// the leader's lease, so raft's heartbeat goroutine, and its random timer,
// can rest (whileCarried) while this pipeline answers. A keepalive still
// unanswered a period later hands the heartbeats back to raft; no other is
// sent on this pipeline until it answers again.
func (p *quietPipeline) keepalive(commit uint64, every time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.sent || p.closed.Load() {
		return
	}
	now := time.Now()
	p.lmu.Lock()
	if !p.pending.IsZero() {
		if now.Sub(p.pending) >= every-every/10 {
			p.stopCarryingLocked()
		}
		p.lmu.Unlock()
		return
	}
	p.pending = now
	p.lmu.Unlock()
	req := p.mark.keep(commit)
	if _, err := p.AppendPipeline.AppendEntries(req, new(raft.AppendEntriesResponse)); err == nil {
		p.mark.commit = req.LeaderCommitIndex
	}
}

func (p *quietPipeline) AppendEntries(req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(req.Entries) == 0 && p.sent && req.Term == p.mark.term && req.PrevLogEntry == p.mark.prev &&
		req.PrevLogTerm == p.mark.prevTerm && req.LeaderCommitIndex <= p.mark.commit {
		return skippedAppend{start: time.Now(), req: req, resp: resp}, nil
	}
	f, err := p.AppendPipeline.AppendEntries(req, resp)
	if err == nil {
		p.sent = true
		p.mark = markOf(req)
	}
	return f, err
}

// push sends the append that tells the follower commit, after all that
// raft sent on the pipeline; raft's decoder takes its answer.
func (p *quietPipeline) push(commit uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.sent || p.closed.Load() {
		return
	}
	req, ok := p.mark.push(commit)
	if !ok {
		return
	}
	if _, err := p.AppendPipeline.AppendEntries(req, new(raft.AppendEntriesResponse)); err == nil {
		p.mark.commit = req.LeaderCommitIndex
	}
}

// Close ends the pipeline: no push goes on it after. It does not wait for
// a push under way: closing the pipeline is what ends a push that waits
// for room in it.
func (p *quietPipeline) Close() error {
	p.closed.Store(true)
	p.closeOnce.Do(func() { close(p.done) })
	p.lmu.Lock()
	p.stopCarryingLocked()
	p.lmu.Unlock()
	p.t.mu.Lock()
	if l := p.t.peers[p.target]; l != nil && l.pipe == p {
		l.pipe = nil
	}
	p.t.mu.Unlock()
	return p.AppendPipeline.Close()
}

// skippedAppend is the future of an append not sent: never delivered.
type skippedAppend struct {
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
}

func (s skippedAppend) Error() error                          { return nil }
func (s skippedAppend) Start() time.Time                      { return s.start }
func (s skippedAppend) Request() *raft.AppendEntriesRequest   { return s.req }
func (s skippedAppend) Response() *raft.AppendEntriesResponse { return s.resp }
func (s skippedAppend) String() string                        { return "skipped idle append" }

var _ raft.AppendFuture = skippedAppend{}
