package cluster

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"
)

// fakeRaftTransport records what reaches the wire and fails calls while
// down is set.
type fakeRaftTransport struct {
	raft.Transport // nil: only the methods below are called
	mu             sync.Mutex
	down           bool
	refuse         bool // answer heartbeats with Success false (a higher term)
	pipeAnswers    bool // the follower answers what is sent on a pipeline
	beats, appends []time.Time
	piped          []*raft.AppendEntriesRequest // sent on a pipeline
	called         []*raft.AppendEntriesRequest // sent one call at a time (not heartbeats)
}

func (f *fakeRaftTransport) AppendEntries(_ raft.ServerID, _ raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if isHeartbeat(req) {
		f.beats = append(f.beats, time.Now())
	} else {
		f.appends = append(f.appends, time.Now())
		f.called = append(f.called, req)
	}
	if f.down {
		return errors.New("connection refused")
	}
	resp.Success = !f.refuse || !isHeartbeat(req)
	return nil
}

func (f *fakeRaftTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return &fakePipeline{f: f, answers: make(chan raft.AppendFuture, 1024)}, nil
}

func (f *fakeRaftTransport) setDown(v bool) {
	f.mu.Lock()
	f.down = v
	f.mu.Unlock()
}

type fakePipeline struct {
	raft.AppendPipeline
	f       *fakeRaftTransport
	answers chan raft.AppendFuture
}

// AppendEntries records req; the follower answers it (on Consumer) only
// while pipeAnswers is set and it is not down.
func (p *fakePipeline) AppendEntries(req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.f.mu.Lock()
	p.f.piped = append(p.f.piped, req)
	answer := p.f.pipeAnswers && !p.f.down
	p.f.mu.Unlock()
	if answer {
		resp.Success = true
		p.answers <- skippedAppend{req: req, resp: resp}
	}
	return skippedAppend{req: req, resp: resp}, nil
}

func (p *fakePipeline) Consumer() <-chan raft.AppendFuture { return p.answers }

func (p *fakePipeline) Close() error { return nil }

func heartbeatReq() *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte("a1")}, Term: 3}
}

func TestPaceTransportSpacesHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{}
		pt := newPaceTransport(f, 300*time.Millisecond, 100*time.Millisecond)
		start := time.Now()
		calls := 0
		// raft's heartbeat goroutine: a heartbeat, then 30-60 ms, again.
		for time.Since(start) < 3*time.Second {
			if err := pt.AppendEntries("n2", "a2", heartbeatReq(), &raft.AppendEntriesResponse{}); err != nil {
				t.Fatal(err)
			}
			calls++
			time.Sleep(30 * time.Millisecond)
		}
		n := 0
		for _, b := range f.beats {
			if b.Sub(start) < 3*time.Second {
				n++
			}
		}
		if n < 28 || n > 31 {
			t.Errorf("%d heartbeats in 3 s, want one per 100 ms (30)", n)
		}
		// Each call carries two: raft's timer wakes it every 200 ms.
		if calls < 14 || calls > 16 {
			t.Errorf("raft called %d times in 3 s, want one per 200 ms (15)", calls)
		}
		for i := 1; i < len(f.beats); i++ {
			if gap := f.beats[i].Sub(f.beats[i-1]); gap < 100*time.Millisecond {
				t.Fatalf("heartbeats %d and %d %v apart, want at least 100ms", i-1, i, gap)
			}
		}
	})
}

// A heartbeat that fails, or that the follower refuses, goes back to raft
// at once: only a good answer is followed by the second heartbeat.
func TestPaceTransportReturnsAFailedHeartbeatAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{down: true}
		pt := newPaceTransport(f, 300*time.Millisecond, 100*time.Millisecond)
		for range 3 {
			if err := pt.AppendEntries("n2", "a2", heartbeatReq(), &raft.AppendEntriesResponse{}); err == nil {
				t.Fatal("heartbeat to a follower that is down succeeded")
			}
		}
		if n := len(f.beats); n != 3 {
			t.Errorf("%d heartbeats sent for 3 failed calls, want 3", n)
		}
		f.setDown(false)
		f.refuse = true
		resp := &raft.AppendEntriesResponse{}
		if err := pt.AppendEntries("n2", "a2", heartbeatReq(), resp); err != nil || resp.Success {
			t.Fatalf("refused heartbeat: err %v, success %v", err, resp.Success)
		}
		if n := len(f.beats); n != 4 {
			t.Errorf("%d heartbeats sent after a refused one, want 4", n)
		}
	})
}

// (In fake time that stands still: no keepalive goes out meanwhile.)
func TestQuietPipelineDropsOnlyRepeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{}
		pt := newPaceTransport(f, 300*time.Millisecond, 100*time.Millisecond)
		defer pt.stop()
		p, err := pt.AppendEntriesPipeline("n2", "a2")
		if err != nil {
			t.Fatal(err)
		}
		send := func(prev, commit uint64, entries ...uint64) {
			req := &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: prev, PrevLogTerm: 2, LeaderCommitIndex: commit}
			for _, i := range entries {
				req.Entries = append(req.Entries, &raft.Log{Index: i, Term: 2})
			}
			if _, err := p.AppendEntries(req, &raft.AppendEntriesResponse{}); err != nil {
				t.Fatal(err)
			}
		}
		send(4, 4)       // first: sent
		send(4, 4)       // repeat: dropped
		send(4, 4, 5, 6) // entries: sent
		send(6, 4)       // nothing new since the entries: dropped
		send(6, 6)       // commit index moved: sent
		send(6, 6)       // dropped
		send(6, 6)       // dropped
		var got []uint64
		for _, r := range f.piped {
			got = append(got, r.LeaderCommitIndex*100+uint64(len(r.Entries)))
		}
		if want := []uint64{400, 402, 600}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Errorf("sent (commit*100+entries) %v, want %v", got, want)
		}
	})
}

// A replication call to a follower that is down fails only once a
// heartbeat reaches the follower again: raft counts one failure per outage
// instead of backing off further with every retry.
func TestPaceTransportHoldsFailedAppendUntilFollowerAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{down: true}
		pt := newPaceTransport(f, 300*time.Millisecond, 100*time.Millisecond)
		defer pt.stop()
		stopBeats := make(chan struct{})
		beatsDone := make(chan struct{})
		go func() { // raft's heartbeat goroutine (backoff aside)
			defer close(beatsDone)
			for {
				select {
				case <-stopBeats:
					return
				case <-time.After(30 * time.Millisecond):
				}
				_ = pt.AppendEntries("n2", "a2", heartbeatReq(), &raft.AppendEntriesResponse{})
			}
		}()
		var returned time.Time
		done := make(chan error)
		go func() {
			err := pt.AppendEntries("n2", "a2", &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 7, PrevLogTerm: 3, LeaderCommitIndex: 7}, &raft.AppendEntriesResponse{})
			returned = time.Now()
			done <- err
		}()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("the failed append returned while the follower was still down")
		default:
		}
		f.setDown(false)
		up := time.Now()
		if err := <-done; err == nil {
			t.Error("the held append returned no error")
		}
		if d := returned.Sub(up); d > 150*time.Millisecond {
			t.Errorf("held append returned %v after the follower came back, want within a heartbeat", d)
		}
		if len(f.appends) != 1 {
			t.Errorf("%d appends sent while held, want 1", len(f.appends))
		}
		close(stopBeats)
		<-beatsDone
	})
}

// appendReq is an append of term 2 after entry prev carrying commit.
func appendReq(prev, commit uint64, entries ...uint64) *raft.AppendEntriesRequest {
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte("a1")}, Term: 2,
		PrevLogEntry: prev, PrevLogTerm: 2, LeaderCommitIndex: commit}
	for _, i := range entries {
		req.Entries = append(req.Entries, &raft.Log{Index: i, Term: 2})
	}
	return req
}

// what is the (prev entry, commit, entries) of each request.
func what(reqs []*raft.AppendEntriesRequest) [][3]uint64 {
	var out [][3]uint64
	for _, r := range reqs {
		out = append(out, [3]uint64{r.PrevLogEntry, r.LeaderCommitIndex, uint64(len(r.Entries))})
	}
	return out
}

// On a pipeline, Commit sends the follower the append raft's next tick
// would send: after the last entry sent on that pipeline, with the
// leader's header and term, and a commit index no higher than that entry;
// only when it tells the follower something new, and never after Close.
func TestCommitPushedOnPipeline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{}
		pt := newPaceTransport(f, 300*time.Millisecond, 100*time.Millisecond)
		defer pt.stop()
		pt.Commit(3) // nothing sent yet: nothing to follow
		p, err := pt.AppendEntriesPipeline("n2", "a2")
		if err != nil {
			t.Fatal(err)
		}
		send := func(req *raft.AppendEntriesRequest) {
			if _, err := p.AppendEntries(req, &raft.AppendEntriesResponse{}); err != nil {
				t.Fatal(err)
			}
		}
		send(appendReq(4, 4, 5, 6))
		pt.Commit(6)
		synctest.Wait()
		pt.Commit(6)          // told already
		pt.Commit(9)          // beyond the last entry sent: 6 is all it may be told
		send(appendReq(6, 6)) // raft's idle tick: dropped
		send(appendReq(6, 6, 7))
		pt.Commit(7)
		synctest.Wait()
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		send(appendReq(7, 7, 8)) // a pipeline raft has closed is not used again; the fake takes it
		pt.Commit(8)
		synctest.Wait()
		got := what(f.piped)
		want := [][3]uint64{{4, 4, 2}, {6, 6, 0}, {6, 6, 1}, {7, 7, 0}, {7, 7, 1}}
		if !slices.Equal(got, want) {
			t.Errorf("sent (prev, commit, entries) %v, want %v", got, want)
		}
		push := f.piped[1]
		if string(push.ID) != "n1" || string(push.Addr) != "a1" || push.Term != 2 || push.PrevLogTerm != 2 || isHeartbeat(push) {
			t.Errorf("push %+v: want raft's header, term 2, previous entry's term 2", push)
		}
	})
}

// Without a pipeline the push follows raft's last call that succeeded,
// on a call of its own; after a call that failed it waits for the next.
func TestCommitPushedWithoutPipeline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{}
		pt := newPaceTransport(f, 300*time.Millisecond, 100*time.Millisecond)
		defer pt.stop()
		call := func(req *raft.AppendEntriesRequest) {
			_ = pt.AppendEntries("n2", "a2", req, &raft.AppendEntriesResponse{})
		}
		call(appendReq(4, 4, 5))
		pt.Commit(5)
		synctest.Wait()
		pt.Commit(5)
		synctest.Wait()
		f.setDown(true)
		done := make(chan struct{})
		go func() { call(appendReq(5, 5, 6)); close(done) }() // held until a heartbeat gets through
		synctest.Wait()
		pt.Commit(6) // the last call failed: nothing to follow
		synctest.Wait()
		f.setDown(false)
		_ = pt.AppendEntries("n2", "a2", heartbeatReq(), &raft.AppendEntriesResponse{})
		<-done
		call(appendReq(5, 5, 6))
		pt.Commit(6)
		synctest.Wait()
		got := what(f.called)
		want := [][3]uint64{{4, 4, 1}, {5, 5, 0}, {5, 5, 1}, {5, 5, 1}, {6, 6, 0}}
		if !slices.Equal(got, want) {
			t.Errorf("called (prev, commit, entries) %v, want %v", got, want)
		}
	})
}

// Renewal rounds and heartbeats leave on the cluster's beat: multiples of
// their period on the wall clock, whatever the phase of the caller.
func TestNextBeat(t *testing.T) {
	base := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	for _, c := range []struct {
		at, min, want time.Duration
	}{
		{0, 0, 0},
		{1 * ms, 0, 99 * ms},
		{1 * ms, 50 * ms, 99 * ms},
		{60 * ms, 50 * ms, 140 * ms}, // 100 is too close: the next one
		{99 * ms, 0, 1 * ms},
	} {
		if got := NextBeat(base.Add(c.at), 100*ms, c.min); got != c.want {
			t.Errorf("at +%v, at least %v away: %v, want %v", c.at, c.min, got, c.want)
		}
	}
}

// Periodic work that can wait lands on a beat: a whole number of beats,
// at least the period asked, at least half of it from now.
func TestOnBeat(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		at, beat, every, want time.Duration
	}{
		{10 * ms, 150 * ms, time.Second, 1040 * ms},        // period 1050 ms
		{600 * ms, 150 * ms, time.Second, 1500 * ms},       // the next one is too close: the one after
		{100 * ms, 150 * ms, 500 * ms, 500 * ms},           // period 600 ms
		{400 * ms, 150 * ms, 500 * ms, 800 * ms},           // 600 is too close: the next one
		{10 * ms, 100 * ms, 250 * ms, 290 * ms},            // period 300 ms
		{10 * ms, 0, time.Second, time.Second},             // no beat
		{10 * ms, 2 * time.Second, time.Second, 1990 * ms}, // a beat longer than asked: one beat
	} {
		base := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
		if c.beat > 0 {
			base = base.Truncate(c.beat * max(1, (c.every+c.beat-1)/c.beat)) // on a period's beat
		}
		if got := onBeat(base.Add(c.at), c.beat, c.every); got != c.want {
			t.Errorf("at +%v, beat %v, every %v: %v, want %v", c.at, c.beat, c.every, got, c.want)
		}
	}
}

// Heartbeats leave on the cluster's beat: every a whole number of beats,
// at most a third of the heartbeat timeout or else half; two per raft call only where raft's
// leader lease keeps room for a slow answer.
func TestHeartbeatEvery(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		timeout, beat, want time.Duration
		two                 bool
	}{
		{300 * ms, 100 * ms, 100 * ms, true},  // default timing
		{300 * ms, 150 * ms, 150 * ms, false}, // a slower beat: twice per timeout
		{100 * ms, 30 * ms, 30 * ms, false},   // fast profile: too little room
		{300 * ms, 200 * ms, 100 * ms, true},  // beat longer than half: a third, off the beat
		{1000 * ms, 100 * ms, 300 * ms, true},
		{1000 * ms, 400 * ms, 400 * ms, false},
		{300 * ms, 0, 100 * ms, true},
	} {
		pt := newPaceTransport(&fakeRaftTransport{}, c.timeout, c.beat)
		if pt.heartbeatEvery != c.want || pt.twoPerCall != c.two {
			t.Errorf("timeout %v beat %v: every %v two %v, want %v %v", c.timeout, c.beat, pt.heartbeatEvery, pt.twoPerCall, c.want, c.two)
		}
	}
}

// While the follower answers on the pipeline, a keepalive there on every
// beat stands in for raft's heartbeats: raft's heartbeat call waits and
// raft's decoder gets an answer a beat. When the keepalives go
// unanswered, raft's heartbeats go out again, until the pipeline answers.
func TestKeepalivesCarryHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{pipeAnswers: true}
		pt := newPaceTransport(f, 300*time.Millisecond, 100*time.Millisecond)
		defer pt.stop()
		p, err := pt.AppendEntriesPipeline("n2", "a2")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		answers, calls := 0, 0
		go func() { // raft's decoder
			for {
				select {
				case <-p.Consumer():
				case <-pt.closed:
					return
				}
				mu.Lock()
				answers++
				mu.Unlock()
			}
		}()
		if _, err := p.AppendEntries(appendReq(4, 4, 5), &raft.AppendEntriesResponse{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // its answer read
		go func() {     // raft's heartbeat goroutine
			for {
				_ = pt.AppendEntries("n2", "a2", heartbeatReq(), &raft.AppendEntriesResponse{})
				mu.Lock()
				calls++
				mu.Unlock()
				select {
				case <-pt.closed:
					return
				case <-time.After(30 * time.Millisecond):
				}
			}
		}()
		count := func() (beats, piped, ans, c int) {
			synctest.Wait()
			f.mu.Lock()
			defer f.mu.Unlock()
			mu.Lock()
			defer mu.Unlock()
			return len(f.beats), len(f.piped), answers, calls
		}
		time.Sleep(3 * time.Second)
		beats, piped, ans, c := count()
		if beats != 0 || c != 0 {
			t.Errorf("%d heartbeats sent and %d raft calls returned in 3 s while the pipeline answers, want none", beats, c)
		}
		if piped < 30 || piped > 32 || ans != piped {
			t.Errorf("%d appends on the pipeline and %d answers in 3 s, want one keepalive per 100 ms beat, each answered", piped, ans)
		}
		f.mu.Lock()
		k := f.piped[len(f.piped)-1]
		f.mu.Unlock()
		if string(k.ID) != "n1" || k.Term != 2 || k.PrevLogEntry != 5 || k.PrevLogTerm != 2 || len(k.Entries) != 0 || isHeartbeat(k) {
			t.Errorf("keepalive %+v: want raft's header and term, after entry 5, no entries", k)
		}

		// The follower stops answering on the pipeline (its heartbeats get
		// through): raft's heartbeats take over within two beats, and
		// one keepalive at most is left unanswered.
		f.mu.Lock()
		f.pipeAnswers = false
		f.mu.Unlock()
		time.Sleep(time.Second)
		beats2, piped2, _, _ := count()
		if beats2-beats < 8 {
			t.Errorf("%d heartbeats in the second after the pipeline went silent, want about ten", beats2-beats)
		}
		if piped2-piped > 1 {
			t.Errorf("%d keepalives sent to a silent pipeline, want at most one", piped2-piped)
		}

		// It answers again: the keepalives take over again.
		f.mu.Lock()
		f.pipeAnswers = true
		f.mu.Unlock()
		if _, err := p.AppendEntries(appendReq(5, 5, 6), &raft.AppendEntriesResponse{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // the heartbeat under way
		beats3, piped3, _, _ := count()
		time.Sleep(time.Second)
		beats4, piped4, _, _ := count()
		if beats4 != beats3 || piped4-piped3 < 9 {
			t.Errorf("after the pipeline answered again: %d heartbeats and %d keepalives in a second, want none and about ten", beats4-beats3, piped4-piped3)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		// Closed: raft's heartbeats go out again.
		time.Sleep(time.Second)
		beats5, _, _, _ := count()
		if beats5-beats4 < 8 {
			t.Errorf("%d heartbeats in the second after the pipeline closed, want about ten", beats5-beats4)
		}
	})
}
