package cluster

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// FSM is the raft state machine. Readers take snapshots of the state
// through View; watchers are woken after every apply.
type FSM struct {
	mu      sync.RWMutex
	state   *State
	waiters []chan struct{}
	// halt, once set, stops every further apply: a command this binary
	// does not know was committed, and applying on would diverge.
	halt *Halt
	// Logger receives the halt (set before raft starts).
	Logger *slog.Logger
	// ReadLevel, when below LevelTyped, makes the FSM read only what a
	// version before feature levels reads (tests stand in for one).
	ReadLevel int
	// members is a copy of State.Members, read without the lock: the
	// membership is asked for from inside View callbacks (through the
	// failure detector's view), where taking the read lock again would
	// deadlock against a waiting Apply.
	members atomic.Pointer[[]state.Member]
	// specGen counts the applies that may have changed a hierarchy's
	// spec (changesSpecs) and the snapshots restored, so that a reader
	// of the specs (readiness) need not compare them all at every change
	// of the state (found at 1,000 hierarchies: 14% of a new owner's CPU
	// went to encoding every spec at every assignment and report).
	specGen atomic.Uint64
}

// SpecGen returns a number that changes whenever a hierarchy's spec may
// have: read it before the specs, and read them again once it differs.
func (f *FSM) SpecGen() uint64 { return f.specGen.Load() }

// changesSpecs reports whether c may change State.Hierarchies. A command
// that writes State.Hierarchies must be listed here (TestSpecGen).
func changesSpecs(c Cmd) bool {
	switch c := c.(type) {
	case PutHierarchies, Purge, Restore:
		return true
	case Batch:
		return slices.ContainsFunc(c.Cmds, changesSpecs)
	}
	return false
}

// Members returns the replicated membership (empty until a run-time
// change set it). It takes no lock.
func (f *FSM) Members() []state.Member {
	if p := f.members.Load(); p != nil {
		return *p
	}
	return nil
}

// syncMembers refreshes the lock-free copy of the membership; f.mu held.
func (f *FSM) syncMembers() {
	if cur := f.members.Load(); cur == nil || !slices.Equal(*cur, f.state.Members) {
		m := slices.Clone(f.state.Members)
		f.members.Store(&m)
	}
}

// Halt says why and where the state machine stopped applying.
type Halt struct {
	Index uint64 `json:"index"`
	Err   string `json:"error"`
}

func (h *Halt) String() string {
	return fmt.Sprintf("stopped applying the replicated log at index %d: %s; the cluster state here is frozen and this node holds and grants nothing until it runs a lifeboat version that reads it", h.Index, h.Err)
}

// ErrHalted is the result of every command after a halt.
var ErrHalted = errors.New("state machine halted: this node's version cannot read the replicated log")

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM with empty state.
func NewFSM() *FSM { return &FSM{state: NewState()} }

// View calls fn with the current state under a read lock. fn must not keep
// references.
func (f *FSM) View(fn func(*State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Copy returns a deep copy of the state.
func (f *FSM) Copy() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// Index is the last applied raft index.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Index
}

// Changed returns a channel closed after the next applied command.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	// One channel shared by every waiter until the next change: a loop
	// that wakes on a timer and asks again does not grow the list.
	if len(f.waiters) == 0 {
		f.waiters = append(f.waiters, make(chan struct{}))
	}
	return f.waiters[0]
}

// Halted returns why the state machine stopped applying, or nil.
func (f *FSM) Halted() *Halt {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.halt == nil {
		return nil
	}
	h := *f.halt
	return &h
}

// Level is the cluster's feature level in the applied state.
func (f *FSM) Level() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.FeatureLevel()
}

// Apply applies one raft log entry.
func (f *FSM) Apply(l *raft.Log) any {
	c, at, err := Decode(l.Data)
	if f.ReadLevel > 0 && f.ReadLevel < LevelTyped && len(l.Data) > 0 && l.Data[0] == typedMagic {
		c, err = nil, UnknownCommandError{Kind: "typed entry"}
	}
	f.mu.Lock()
	if f.halt != nil {
		f.mu.Unlock()
		return Result{Err: ErrHalted}
	}
	var res Result
	var unknown UnknownCommandError
	var undecodable DecodeError
	switch {
	case errors.As(err, &unknown) || errors.As(err, &undecodable):
		f.halt = &Halt{Index: l.Index, Err: err.Error()}
		res = Result{Err: fmt.Errorf("%w: %v", ErrHalted, err)}
		lg := f.Logger
		if lg == nil {
			lg = slog.Default()
		}
		lg.Error("replicated log: "+f.halt.String(), "index", l.Index)
	case err != nil:
		// A command every version rejects the same way (a report
		// without its body): an error result, nothing applied.
		res = Result{Err: fmt.Errorf("command at index %d: %w", l.Index, err)}
		f.state.Index = l.Index
	case c == nil:
		// An ignorable command of a newer version: skipped.
		f.state.Index = l.Index
	default:
		res = c.apply(f.state, at)
		f.state.Index = l.Index
		f.syncMembers()
		if changesSpecs(c) {
			f.specGen.Add(1)
		}
	}
	ws := f.waiters
	f.waiters = nil
	f.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
	return res
}

// ApplyCmd applies c to the state directly (tests and tools without raft).
func ApplyCmd(s *State, c Cmd, at time.Time) Result { return c.apply(s, at) }

// stateHeader starts a snapshot written at LevelTyped or later. Versions
// before feature levels read snapshots as bare JSON and fail on it, so
// an older binary started on an upgraded data directory refuses to start
// instead of replaying a log it cannot read.
const stateHeader = "lifeboat-state "

// stateFormat is the snapshot format this binary writes and reads up to.
const stateFormat = 2

// Snapshot implements raft.FSM.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.halt != nil {
		// The state is frozen at the halt: a snapshot would let raft
		// drop the entries this node must apply once upgraded.
		return nil, fmt.Errorf("snapshot state: %w", ErrHalted)
	}
	b, err := json.Marshal(f.state)
	if err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	if f.state.FeatureLevel() >= LevelTyped {
		b = append([]byte(fmt.Sprintf("%s%d (lifeboat 0.2 or later; older versions cannot read it)\n", stateHeader, stateFormat)), b...)
	}
	return snapshot(b), nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := readState(bufio.NewReader(rc))
	if err != nil {
		return err
	}
	if s.Hierarchies == nil {
		s.Hierarchies = map[string]spec.Hierarchy{}
	}
	if s.Assignments == nil {
		s.Assignments = map[string]*Assignment{}
	}
	if s.Nodes == nil {
		s.Nodes = map[string]*NodeState{}
	}
	f.mu.Lock()
	f.state = s
	f.syncMembers()
	f.specGen.Add(1)
	ws := f.waiters
	f.waiters = nil
	f.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
	return nil
}

// readState reads a snapshot in either form.
func readState(r *bufio.Reader) (*State, error) {
	s := NewState()
	if head, _ := r.Peek(len(stateHeader)); string(head) == stateHeader {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("restore state from snapshot: read header: %w", err)
		}
		var format int
		if _, err := fmt.Sscanf(line, stateHeader+"%d", &format); err != nil {
			return nil, fmt.Errorf("restore state from snapshot: header %q: %w", strings.TrimSpace(line), err)
		}
		if format > stateFormat {
			return nil, fmt.Errorf("restore state from snapshot: it was written by a newer lifeboat (state format %d; this binary reads up to %d): run that version or later", format, stateFormat)
		}
	}
	if err := json.NewDecoder(r).Decode(s); err != nil {
		return nil, fmt.Errorf("restore state from snapshot: %w", err)
	}
	return s, nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}
