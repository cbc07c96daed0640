package cluster

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// countingStore counts the reads that reach the store.
type countingStore struct {
	*raft.InmemStore
	reads int
}

func (s *countingStore) GetLog(index uint64, log *raft.Log) error {
	s.reads++
	return s.InmemStore.GetLog(index, log)
}

func TestReadCache(t *testing.T) {
	inner := &countingStore{InmemStore: raft.NewInmemStore()}
	for i := uint64(1); i <= 5; i++ {
		if err := inner.InmemStore.StoreLog(&raft.Log{Index: i, Term: 1, Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	c := newReadCache(inner) // as after a restart: nothing kept yet
	var l raft.Log
	for range 3 { // the idle leader reading the same entry again and again
		if err := c.GetLog(5, &l); err != nil || l.Data[0] != 5 {
			t.Fatalf("GetLog(5): %+v, %v", l, err)
		}
	}
	if inner.reads != 1 {
		t.Errorf("%d reads of entry 5 reached the store, want 1", inner.reads)
	}
	// Written entries are kept; an entry overwritten (a follower's log
	// truncated and rewritten) is read as written last.
	if err := c.StoreLogs([]*raft.Log{{Index: 6, Term: 2, Data: []byte{6}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.GetLog(6, &l); err != nil || l.Term != 2 || inner.reads != 1 {
		t.Errorf("GetLog(6) after StoreLogs: %+v, %v, %d store reads", l, err, inner.reads)
	}
	if err := c.DeleteRange(5, 6); err != nil {
		t.Fatal(err)
	}
	if err := c.GetLog(5, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Errorf("GetLog(5) after DeleteRange: %+v, %v; want not found", l, err)
	}
	if err := c.StoreLog(&raft.Log{Index: 5, Term: 3, Data: []byte{9}}); err != nil {
		t.Fatal(err)
	}
	if err := c.GetLog(5, &l); err != nil || l.Term != 3 {
		t.Errorf("GetLog(5) after rewrite: %+v, %v", l, err)
	}
}
