package cluster

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// paceTransport wraps raft's transport to cut what hashicorp/raft sends
// when nothing happens, and to bring a follower that comes back up to date
// at once. hashicorp/raft has no knob for either; the transport is ours.
//
// Three changes, each only to *when* an RPC is sent, never to what an RPC
// or its answer says (no answer is ever made up):
//
//  1. Heartbeats are paced. raft's heartbeat goroutine sends one to each
//     follower every HeartbeatTimeout/10 to 2×that (30-60 ms at default
//     timing). The wrapper holds each heartbeat until heartbeatEvery
//     (HeartbeatTimeout/3) has passed since the previous one to the same
//     follower, then sends it. A follower calls an election only after a
//     randomised HeartbeatTimeout to 2×HeartbeatTimeout without contact, so
//     it still hears the leader at least three times per timeout. The
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
type paceTransport struct {
	raft.Transport
	heartbeatEvery time.Duration
	holdMax        time.Duration
	closed         chan struct{}
	closeOnce      sync.Once

	mu    sync.Mutex
	peers map[raft.ServerAddress]*raftLink
}

// raftLink is what the transport knows of one follower.
type raftLink struct {
	lastBeat time.Time     // when the last heartbeat to it was sent
	down     chan struct{} // non-nil while unreachable: closed when a heartbeat gets through
}

func newPaceTransport(inner raft.Transport, heartbeatTimeout time.Duration) *paceTransport {
	return &paceTransport{Transport: inner, heartbeatEvery: heartbeatTimeout / 3, holdMax: 10 * time.Second,
		closed: make(chan struct{}), peers: map[raft.ServerAddress]*raftLink{}}
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
	if err != nil {
		t.hold(target)
	}
	return err
}

func (t *paceTransport) heartbeat(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	t.mu.Lock()
	next := t.link(target).lastBeat.Add(t.heartbeatEvery)
	t.mu.Unlock()
	t.wait(time.Until(next))
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
	return &quietPipeline{AppendPipeline: p}, nil
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
// anything new (see paceTransport).
type quietPipeline struct {
	raft.AppendPipeline
	sent                          bool
	term, prev, prevTerm, commitd uint64
}

func (p *quietPipeline) AppendEntries(req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if len(req.Entries) == 0 && p.sent && req.Term == p.term && req.PrevLogEntry == p.prev && req.PrevLogTerm == p.prevTerm && req.LeaderCommitIndex == p.commitd {
		return skippedAppend{start: time.Now(), req: req, resp: resp}, nil
	}
	f, err := p.AppendPipeline.AppendEntries(req, resp)
	if err == nil {
		p.sent = true
		p.term, p.prevTerm, p.commitd = req.Term, req.PrevLogTerm, req.LeaderCommitIndex
		p.prev = req.PrevLogEntry
		if n := len(req.Entries); n > 0 {
			p.prev, p.prevTerm = req.Entries[n-1].Index, req.Entries[n-1].Term
		}
	}
	return f, err
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
