// Package cluster owns the replicated cluster state and the machinery that
// keeps it: the raft finite-state machine (typed commands, one apply function
// each, no clock reads and no cloud calls inside Apply), the raft and
// memberlist wiring, and the quorum leases that fence a node which can no
// longer prove it is part of the majority.
package cluster

import "github.com/lifeboat-ha/lifeboat/internal/state"

// The state's types live in the leaf package state (placement reads them
// without knowing raft); these names keep the cluster's API whole.
type (
	// State is the whole replicated state.
	State = state.State
	// Assignment says where a hierarchy should be in service.
	Assignment = state.Assignment
	// NodeState is what the cluster knows of a node.
	NodeState = state.NodeState
	// HierarchyReport is a node's account of one hierarchy.
	HierarchyReport = state.HierarchyReport
	// Readiness is a node's proof that it could take over a hierarchy.
	Readiness = state.Readiness
	// Hold is an operator's maintenance or standby.
	Hold = state.Hold
)

// NewState returns an empty state.
func NewState() *State { return state.New() }
