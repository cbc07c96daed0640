// Package logring keeps an agent's most recent log records in memory, in a
// ring bounded by record count and bytes, for support bundles (`lifeboat
// report`). The ring sits behind the agent's own log handler: it holds a
// record only when that handler would print it (same level, same
// attributes, same ReplaceAttr), so it never holds anything the logs would
// not otherwise show.
package logring

import (
	"context"
	"log/slog"
	"sync"
)

// Defaults: the last 2,000 records, at most 1 MiB of text.
const (
	DefaultRecords = 2000
	DefaultBytes   = 1 << 20
	// MaxLine bounds one record's text; a longer one is cut and marked.
	MaxLine = 8 << 10
)

// Ring is a bounded buffer of formatted log lines, oldest first. It is
// safe for concurrent use.
type Ring struct {
	maxRecords, maxBytes int

	mu      sync.Mutex
	lines   []string // lines[start:] are kept, oldest first
	start   int
	bytes   int
	dropped uint64
}

// New returns a ring that keeps at most maxRecords lines and maxBytes of
// text (values below 1 take the defaults).
func New(maxRecords, maxBytes int) *Ring {
	if maxRecords < 1 {
		maxRecords = DefaultRecords
	}
	if maxBytes < 1 {
		maxBytes = DefaultBytes
	}
	return &Ring{maxRecords: maxRecords, maxBytes: maxBytes}
}

// add appends one line, dropping the oldest until both bounds hold.
func (r *Ring) add(line string) {
	if len(line) > MaxLine {
		line = line[:MaxLine-len(cutMark)] + cutMark
	}
	if len(line) > r.maxBytes {
		line = line[:r.maxBytes]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	r.bytes += len(line)
	for n := len(r.lines) - r.start; n > 1 && (n > r.maxRecords || r.bytes > r.maxBytes); n-- {
		r.bytes -= len(r.lines[r.start])
		r.lines[r.start] = ""
		r.start++
		r.dropped++
	}
	if r.start > 64 && r.start > len(r.lines)/2 {
		r.lines = append(r.lines[:0:0], r.lines[r.start:]...)
		r.start = 0
	}
}

const cutMark = " …(cut)\n"

// Lines returns the kept lines, oldest first, and how many older ones were
// dropped to respect the bounds.
func (r *Ring) Lines() (lines []string, dropped uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines[r.start:]...), r.dropped
}

// Size is the number of bytes kept.
func (r *Ring) Size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Handler wraps next: every record next handles is also formatted as a
// text line (slog's text format, with opts' ReplaceAttr and AddSource)
// into the ring. Whether a record is logged at all is next's decision
// (Enabled), so the ring holds only what next prints.
func (r *Ring) Handler(next slog.Handler, opts *slog.HandlerOptions) slog.Handler {
	o := slog.HandlerOptions{Level: slog.LevelDebug - 8}
	if opts != nil {
		o.AddSource, o.ReplaceAttr = opts.AddSource, opts.ReplaceAttr
	}
	return &handler{next: next, text: slog.NewTextHandler(sink{r}, &o)}
}

// sink receives the text handler's output: one whole line per Write.
type sink struct{ r *Ring }

func (s sink) Write(p []byte) (int, error) {
	s.r.add(string(p))
	return len(p), nil
}

type handler struct {
	next slog.Handler
	text slog.Handler
}

var _ slog.Handler = (*handler)(nil)

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	_ = h.text.Handle(ctx, rec.Clone())
	return h.next.Handle(ctx, rec)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{next: h.next.WithAttrs(as), text: h.text.WithAttrs(as)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), text: h.text.WithGroup(name)}
}
