package api

import (
	"encoding/json"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/backup"
)

// GET /v1/backup answers with the backup file itself (see package backup):
// the leader's state after a raft barrier.

// RestoreRequest is the body of POST /v1/restore.
type RestoreRequest struct {
	// Backup is the backup file as `lifeboat backup` wrote it.
	Backup json.RawMessage `json:"backup"`
	// Name names the file in messages.
	Name string `json:"name,omitempty"`
	// DryRun: compare and validate only.
	DryRun bool `json:"dry_run,omitempty"`
	// Prune deletes the hierarchies the backup lacks (otherwise kept).
	Prune bool `json:"prune,omitempty"`
}

// BackupInfo describes a backup file.
type BackupInfo struct {
	Checksum        string    `json:"checksum"`
	Created         time.Time `json:"created"`
	Cluster         string    `json:"cluster"`
	LifeboatVersion string    `json:"lifeboat_version"`
	Node            string    `json:"node"`
	FeatureLevel    int       `json:"feature_level"`
	RaftIndex       uint64    `json:"raft_index"`
	Hierarchies     int       `json:"hierarchies"`
	Members         int       `json:"members"`
}

// InfoOf describes a backup read back.
func InfoOf(b *backup.Backup) BackupInfo {
	return BackupInfo{Checksum: b.Checksum, Created: b.Created, Cluster: b.Cluster, LifeboatVersion: b.LifeboatVersion, Node: b.Node,
		FeatureLevel: b.FeatureLevel, RaftIndex: b.RaftIndex, Hierarchies: len(b.Hierarchies), Members: len(b.Members)}
}

// RestoreResponse is the answer to POST /v1/restore.
type RestoreResponse struct {
	DryRun bool `json:"dry_run,omitempty"`
	// Applied: the restore was committed (false on a dry run and when
	// the cluster already matched the backup).
	Applied bool `json:"applied"`
	Prune   bool `json:"prune,omitempty"`
	// Node is the raft leader that compared and committed.
	Node string `json:"node"`
	// RaftIndex is the restore's log index, or the index compared with
	// when nothing was committed.
	RaftIndex uint64     `json:"raft_index"`
	Backup    BackupInfo `json:"backup"`
	// SameCluster: the backup was taken of this cluster (same key).
	SameCluster bool        `json:"same_cluster"`
	Diff        backup.Diff `json:"diff"`
}
