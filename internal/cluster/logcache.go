package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// readCache keeps the log entries raft read or wrote last in memory. In
// pipeline mode the leader builds an AppendEntries for each follower
// every CommitTimeout (10-20 ms) even when nothing changed, and each one
// reads the entry before the next to send from the log store: a BoltDB
// read and a msgpack decode, most of an idle leader's raft cost. raft's
// own LogCache fills only on writes, so after a restart it would miss on
// the same entry forever; this one also keeps what it read.
type readCache struct {
	raft.LogStore

	mu   sync.Mutex
	ring [64]*raft.Log
	gen  uint64 // bumped by DeleteRange: a read begun before it is not kept
}

func newReadCache(store raft.LogStore) *readCache { return &readCache{LogStore: store} }

// GetLog returns the entry at index from memory when it is there.
func (c *readCache) GetLog(index uint64, log *raft.Log) error {
	c.mu.Lock()
	l := c.ring[index%uint64(len(c.ring))]
	gen := c.gen
	c.mu.Unlock()
	if l != nil && l.Index == index {
		*log = *l
		return nil
	}
	if err := c.LogStore.GetLog(index, log); err != nil {
		return err
	}
	kept := *log
	c.mu.Lock()
	if c.gen == gen {
		c.ring[index%uint64(len(c.ring))] = &kept
	}
	c.mu.Unlock()
	return nil
}

// StoreLog stores one entry.
func (c *readCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

// StoreLogs stores entries and keeps them.
func (c *readCache) StoreLogs(logs []*raft.Log) error {
	err := c.LogStore.StoreLogs(logs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.forget()
		return err
	}
	for _, l := range logs {
		kept := *l
		c.ring[l.Index%uint64(len(c.ring))] = &kept
	}
	return nil
}

// DeleteRange deletes entries and forgets every kept one.
func (c *readCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	c.forget()
	c.mu.Unlock()
	err := c.LogStore.DeleteRange(min, max)
	c.mu.Lock()
	c.forget() // a read that raced the delete
	c.mu.Unlock()
	return err
}

func (c *readCache) forget() {
	c.ring = [64]*raft.Log{}
	c.gen++
}

var _ raft.LogStore = (*readCache)(nil)
