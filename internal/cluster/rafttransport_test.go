package cluster

import (
	"errors"
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
	beats, appends []time.Time
	piped          []*raft.AppendEntriesRequest
}

func (f *fakeRaftTransport) AppendEntries(_ raft.ServerID, _ raft.ServerAddress, req *raft.AppendEntriesRequest, _ *raft.AppendEntriesResponse) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if isHeartbeat(req) {
		f.beats = append(f.beats, time.Now())
	} else {
		f.appends = append(f.appends, time.Now())
	}
	if f.down {
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeRaftTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return &fakePipeline{f: f}, nil
}

func (f *fakeRaftTransport) setDown(v bool) {
	f.mu.Lock()
	f.down = v
	f.mu.Unlock()
}

type fakePipeline struct {
	raft.AppendPipeline
	f *fakeRaftTransport
}

func (p *fakePipeline) AppendEntries(req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.f.mu.Lock()
	p.f.piped = append(p.f.piped, req)
	p.f.mu.Unlock()
	return skippedAppend{req: req, resp: resp}, nil
}

func heartbeatReq() *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte("a1")}, Term: 3}
}

func TestPaceTransportSpacesHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{}
		pt := newPaceTransport(f, 300*time.Millisecond)
		start := time.Now()
		// raft's heartbeat goroutine: a heartbeat, then 30-60 ms, again.
		for time.Since(start) < 3*time.Second {
			if err := pt.AppendEntries("n2", "a2", heartbeatReq(), &raft.AppendEntriesResponse{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Millisecond)
		}
		if n := len(f.beats); n < 28 || n > 31 {
			t.Errorf("%d heartbeats in 3 s, want one per 100 ms (30)", n)
		}
		for i := 1; i < len(f.beats); i++ {
			if gap := f.beats[i].Sub(f.beats[i-1]); gap < 100*time.Millisecond {
				t.Fatalf("heartbeats %d and %d %v apart, want at least 100ms", i-1, i, gap)
			}
		}
	})
}

func TestQuietPipelineDropsOnlyRepeats(t *testing.T) {
	f := &fakeRaftTransport{}
	pt := newPaceTransport(f, 300*time.Millisecond)
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
}

// A replication call to a follower that is down fails only once a
// heartbeat reaches the follower again: raft counts one failure per outage
// instead of backing off further with every retry.
func TestPaceTransportHoldsFailedAppendUntilFollowerAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRaftTransport{down: true}
		pt := newPaceTransport(f, 300*time.Millisecond)
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
