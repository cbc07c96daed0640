// Package events records what a node did and why: every action's start, end,
// duration and error, every failover decision and lease change. Events are
// kept in a bounded in-memory ring for the API and appended to a JSON-lines
// file in the data directory so the history survives a restart.
//
// Nothing a node does can make the history grow without bound: the file is
// rotated (events.jsonl to events.jsonl.1, the older one dropped) so that
// both stay under Options.MaxBytes together, and a burst of identical
// events (a check that answers "unknown" every 10 ms) is coalesced into one
// entry per window with a count. Sequence numbers rise across rotations
// and restarts, so cursors keep working.
package events

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

// Event is one entry of the history.
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Node      string    `json:"node"`
	Kind      string    `json:"kind"` // action, failover, lease, cluster
	Hierarchy string    `json:"hierarchy,omitempty"`
	Resource  string    `json:"resource,omitempty"`
	Action    string    `json:"action,omitempty"` // restore, remove, quickcheck, recover, assign, ...
	Phase     string    `json:"phase,omitempty"`  // start, end
	Epoch     uint64    `json:"epoch,omitempty"`
	Duration  string    `json:"duration,omitempty"`
	Error     string    `json:"error,omitempty"`
	Message   string    `json:"message,omitempty"`
	// By names who asked for an operator's action: "root on NODE (local
	// socket)" or "API token" (issue 10 brings named tokens).
	By string `json:"by,omitempty"`
	// Severity is Info, Warning or Critical: set by whoever records the
	// event, or by Add from the error (Warning) or its absence (Info).
	Severity string `json:"severity,omitempty"`
	// Count is the number of identical events this entry stands for when
	// more than one (coalesced: see Options.CoalesceWindow); First is
	// then when the first of them happened, Time when the last did.
	Count int       `json:"count,omitempty"`
	First time.Time `json:"first,omitzero"`
}

// Severities of an event, from least to most urgent.
const (
	Info     = "info"
	Warning  = "warning"
	Critical = "critical"
)

// SeverityRank orders severities: Info 0, Warning 1, Critical 2; an
// unknown one ranks as Info.
func SeverityRank(s string) int {
	switch s {
	case Warning:
		return 1
	case Critical:
		return 2
	}
	return 0
}

// ValidSeverity reports whether s is one of Info, Warning, Critical.
func ValidSeverity(s string) bool { return s == Info || s == Warning || s == Critical }

// DefaultSeverity is the severity of an event recorded without one: any
// kind, known or not, is a Warning when it carries an error, else Info.
func DefaultSeverity(e Event) string {
	if e.Error != "" {
		return Warning
	}
	return Info
}

// Defaults of Options for an agent's history.
const (
	DefaultRing           = 5000
	DefaultMaxBytes       = 16 << 20
	DefaultCoalesceWindow = 10 * time.Second
	DefaultCoalesceBurst  = 5
	// maxRuns bounds the identical-event runs followed at once; beyond
	// it new kinds of events are recorded as they come.
	maxRuns = 1024
)

// Options bound a history.
type Options struct {
	// Ring is the number of events kept in memory (0: DefaultRing).
	Ring int
	// MaxBytes bounds the history on disk: the file and its one rotated
	// predecessor (path.1) together stay under it, each rotating at half
	// of it. 0: the file is never rotated.
	MaxBytes int64
	// CoalesceWindow, when set, coalesces identical events (same node,
	// kind, hierarchy, resource, action, phase, epoch, message, error,
	// severity and by): within a window, the first CoalesceBurst are
	// recorded as they come, the others are held and recorded at the
	// window's end as one event with their Count. While they keep
	// coming, each further window yields one such event.
	CoalesceWindow time.Duration
	// CoalesceBurst is how many identical events a window records as
	// they come (0: DefaultCoalesceBurst).
	CoalesceBurst int
}

// AgentOptions are the bounds of an agent's history.
func AgentOptions() Options {
	return Options{Ring: DefaultRing, MaxBytes: DefaultMaxBytes, CoalesceWindow: DefaultCoalesceWindow, CoalesceBurst: DefaultCoalesceBurst}
}

// Log is a node's event history. It is safe for concurrent use.
type Log struct {
	node string
	opt  Options
	path string

	mu        sync.Mutex
	seq       uint64
	ring      []Event
	file      *os.File
	size      int64 // of file
	waiters   []chan struct{}
	runs      map[runKey]*run
	rotations int // times the file was rotated
}

// runKey is what makes two events identical for coalescing.
type runKey struct {
	node, kind, hierarchy, resource, action, phase, message, err, severity, by string
	epoch                                                                      uint64
}

func keyOf(e Event) runKey {
	return runKey{node: e.Node, kind: e.Kind, hierarchy: e.Hierarchy, resource: e.Resource, action: e.Action, phase: e.Phase,
		message: e.Message, err: e.Error, severity: e.Severity, by: e.By, epoch: e.Epoch}
}

// run is a window of identical events.
type run struct {
	recorded int   // recorded as they came in this window
	held     int   // held back in this window
	first    Event // the first held
	last     Event // the last held
	timer    *time.Timer
}

// Open loads the history kept in path (if any) and appends new events to it,
// keeping max events in memory, never rotating nor coalescing. An empty path
// keeps events in memory only.
func Open(node, path string, max int) (*Log, error) {
	return OpenWith(node, path, Options{Ring: max})
}

// OpenWith loads the history kept in path and path.1 (if any) and appends
// new events to path, bounded as opt says. An empty path keeps events in
// memory only.
func OpenWith(node, path string, opt Options) (*Log, error) {
	if opt.Ring <= 0 {
		opt.Ring = DefaultRing
	}
	if opt.CoalesceBurst <= 0 {
		opt.CoalesceBurst = DefaultCoalesceBurst
	}
	l := &Log{node: node, opt: opt, path: path, runs: map[runKey]*run{}}
	if path == "" {
		return l, nil
	}
	for _, p := range []string{path + ".1", path} {
		if err := l.load(p); err != nil {
			return nil, err
		}
	}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	return l, nil
}

// load reads the events kept in p into the ring.
func (l *Log) load(p string) error {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read event history %s: %w", p, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var e Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			l.push(e)
			if e.Seq > l.seq {
				l.seq = e.Seq
			}
		}
	}
	return nil
}

func (l *Log) openFile() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open event history %s: %w", l.path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open event history %s: %w", l.path, err)
	}
	l.file, l.size = f, fi.Size()
	return nil
}

// push appends e. The slice grows to twice the ring before the oldest
// are dropped, so an event costs a constant share of one copy: dropping
// one event per push copied the whole ring (5,000 events) every time, 30%
// of a node's CPU while it restored 1,000 hierarchies (pprof, scale
// bench). Readers see only the last Ring events (window).
func (l *Log) push(e Event) {
	l.ring = append(l.ring, e)
	if len(l.ring) > 2*l.opt.Ring {
		l.ring = append(l.ring[:0:0], l.ring[len(l.ring)-l.opt.Ring:]...)
	}
}

// window is the ring: the last Ring events.
func (l *Log) window() []Event {
	if len(l.ring) > l.opt.Ring {
		return l.ring[len(l.ring)-l.opt.Ring:]
	}
	return l.ring
}

// Add records an event, stamping node, time and sequence number. An event
// identical to others just recorded may be held back to be recorded later
// as one with a count (see Options.CoalesceWindow): Add then returns it
// with sequence number 0.
func (l *Log) Add(e Event) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Node == "" {
		e.Node = l.node
	}
	if !ValidSeverity(e.Severity) {
		e.Severity = DefaultSeverity(e)
	}
	e.Seq, e.Count, e.First = 0, 0, time.Time{}
	if l.opt.CoalesceWindow > 0 && l.hold(e) {
		return e
	}
	return l.record(e)
}

// hold reports whether e is held back as a repeat of the events just
// recorded.
func (l *Log) hold(e Event) bool {
	k := keyOf(e)
	r := l.runs[k]
	switch {
	case r == nil:
		if len(l.runs) < maxRuns {
			r = &run{recorded: 1}
			r.timer = time.AfterFunc(l.opt.CoalesceWindow, func() { l.windowEnd(k, r) })
			l.runs[k] = r
		}
		return false
	case r.recorded < l.opt.CoalesceBurst:
		r.recorded++
		return false
	}
	if r.held == 0 {
		r.first = e
	}
	r.held++
	r.last = e
	return true
}

// windowEnd records the events held in a run's window as one, and starts
// the next window; a window with nothing held ends the run.
func (l *Log) windowEnd(k runKey, r *run) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.runs[k] != r {
		return // closed
	}
	if r.held == 0 {
		delete(l.runs, k)
		return
	}
	l.recordHeld(r)
	// They keep coming: each later window yields one event.
	r.recorded = l.opt.CoalesceBurst
	r.timer.Reset(l.opt.CoalesceWindow)
}

func (l *Log) recordHeld(r *run) {
	e := r.last
	if r.held > 1 {
		e.Count, e.First = r.held, r.first.Time
	}
	r.held = 0
	l.record(e)
}

// record gives e the next sequence number, keeps it and writes it.
func (l *Log) record(e Event) Event {
	l.seq++
	e.Seq = l.seq
	l.push(e)
	if l.file != nil {
		if b, err := json.Marshal(e); err == nil {
			l.write(append(b, '\n'))
		}
	}
	for _, w := range l.waiters {
		close(w)
	}
	l.waiters = nil
	return e
}

// write appends a line to the file, rotating it first when the line would
// take it past half of MaxBytes. History is best effort: the log line is
// authoritative, so failures here are not reported.
func (l *Log) write(line []byte) {
	if l.opt.MaxBytes > 0 && l.size > 0 && l.size+int64(len(line)) > l.opt.MaxBytes/2 {
		l.rotate()
		if l.file == nil {
			return
		}
	}
	n, _ := l.file.Write(line)
	l.size += int64(n)
}

// rotate moves the file to path.1, dropping the older one, and starts a
// new file.
func (l *Log) rotate() {
	_ = l.file.Close()
	l.file = nil
	_ = os.Rename(l.path, l.path+".1")
	if err := l.openFile(); err != nil {
		return
	}
	l.rotations++
}

// Since returns the events with a sequence number above seq.
func (l *Log) Since(seq uint64) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.window() {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	return out
}

// Last returns the sequence number of the newest event (0: none yet).
func (l *Log) Last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// Read returns at most limit events with a sequence number above seq
// (limit <= 0: all), and how many events after seq the ring no longer
// holds (a reader that fell behind by more than the ring). A cursor above
// the newest sequence number (the history was wiped) reads from the start;
// a cursor of 0 reads what the ring holds and reports nothing lost.
// It never blocks on anything but the log's lock.
func (l *Log) Read(seq uint64, limit int) (evs []Event, lost uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq > l.seq {
		seq = 0
	}
	if w := l.window(); seq > 0 && len(w) > 0 && w[0].Seq > seq+1 {
		lost = w[0].Seq - seq - 1
	}
	for _, e := range l.window() {
		if e.Seq > seq {
			evs = append(evs, e)
			if limit > 0 && len(evs) == limit {
				break
			}
		}
	}
	return evs, lost
}

// Wait returns a channel closed at the next Add.
func (l *Log) Wait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := make(chan struct{})
	l.waiters = append(l.waiters, c)
	return c
}

// Close records the events still held back, stops coalescing and closes
// the history file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, r := range l.runs {
		r.timer.Stop()
		delete(l.runs, k)
		if r.held > 0 {
			l.recordHeld(r)
		}
	}
	l.opt.CoalesceWindow = 0
	if l.file == nil {
		return nil
	}
	err := l.file.Close()
	l.file = nil
	return err
}
