// Package events records what a node did and why: every action's start, end,
// duration and error, every failover decision and lease change. Events are
// kept in a bounded in-memory ring for the API and appended to a JSON-lines
// file in the data directory so the history survives a restart.
package events

import (
	"bufio"
	"encoding/json"
	"fmt"
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

// Log is a node's event history. It is safe for concurrent use.
type Log struct {
	node string
	max  int

	mu      sync.Mutex
	seq     uint64
	ring    []Event
	file    *os.File
	waiters []chan struct{}
}

// Open loads the history kept in path (if any) and appends new events to it.
// An empty path keeps events in memory only.
func Open(node, path string, max int) (*Log, error) {
	l := &Log{node: node, max: max}
	if path == "" {
		return l, nil
	}
	if f, err := os.Open(path); err == nil {
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
		f.Close()
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open event history %s: %w", path, err)
	}
	l.file = f
	return l, nil
}

func (l *Log) push(e Event) {
	l.ring = append(l.ring, e)
	if len(l.ring) > l.max {
		l.ring = append(l.ring[:0:0], l.ring[len(l.ring)-l.max:]...)
	}
}

// Add records an event, stamping node, time and sequence number.
func (l *Log) Add(e Event) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Node == "" {
		e.Node = l.node
	}
	if !ValidSeverity(e.Severity) {
		e.Severity = DefaultSeverity(e)
	}
	l.push(e)
	if l.file != nil {
		if b, err := json.Marshal(e); err == nil {
			l.file.Write(append(b, '\n')) //nolint:errcheck // history is best effort; the log line is authoritative
		}
	}
	for _, w := range l.waiters {
		close(w)
	}
	l.waiters = nil
	return e
}

// Since returns the events with a sequence number above seq.
func (l *Log) Since(seq uint64) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.ring {
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
	if seq > 0 && len(l.ring) > 0 && l.ring[0].Seq > seq+1 {
		lost = l.ring[0].Seq - seq - 1
	}
	for _, e := range l.ring {
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

// Close closes the history file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		return nil
	}
	err := l.file.Close()
	l.file = nil
	return err
}
