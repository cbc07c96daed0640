package logring

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestRingKeepsTheNewestWithinRecordAndByteBounds(t *testing.T) {
	r := New(10, 1000)
	for i := range 25 {
		r.add(fmt.Sprintf("line %02d\n", i))
	}
	lines, dropped := r.Lines()
	if len(lines) != 10 || dropped != 15 {
		t.Fatalf("kept %d, dropped %d; want 10 and 15", len(lines), dropped)
	}
	if lines[0] != "line 15\n" || lines[9] != "line 24\n" {
		t.Fatalf("kept %q..%q, want lines 15..24 oldest first", lines[0], lines[9])
	}
	// bytes: 100-byte lines, 1000 bytes allowed -> 10 lines, whatever the count bound
	r = New(1000, 1000)
	for i := range 50 {
		r.add(fmt.Sprintf("%03d%s\n", i, strings.Repeat("x", 96)))
	}
	lines, dropped = r.Lines()
	if len(lines) != 10 || dropped != 40 || r.Size() != 1000 || !strings.HasPrefix(lines[0], "040") {
		t.Fatalf("byte bound: kept %d (first %.3s), dropped %d, size %d", len(lines), lines[0], dropped, r.Size())
	}
	// one huge line is cut, never kept whole
	r = New(10, 1<<20)
	r.add(strings.Repeat("y", 3*MaxLine))
	lines, _ = r.Lines()
	if len(lines[0]) != MaxLine || !strings.HasSuffix(lines[0], cutMark) {
		t.Fatalf("huge line kept with %d bytes", len(lines[0]))
	}
}

func TestRingBoundedUnderConcurrentLogging(t *testing.T) {
	r := New(100, 4096)
	log := slog.New(r.Handler(slog.NewTextHandler(&bytes.Buffer{}, nil), nil))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				log.Info("msg", "g", g, "i", i, "pad", strings.Repeat("p", i%200))
			}
		})
	}
	wg.Wait()
	lines, dropped := r.Lines()
	size := 0
	for _, l := range lines {
		size += len(l)
	}
	if len(lines) > 100 || size > 4096 || size != r.Size() || uint64(len(lines))+dropped != 4000 {
		t.Fatalf("kept %d lines (%d bytes, ring says %d), dropped %d", len(lines), size, r.Size(), dropped)
	}
}

// The ring holds exactly what the wrapped handler prints: nothing below its
// level, the same attributes (With, groups), the same ReplaceAttr.
func TestRingHoldsOnlyWhatTheLogPrints(t *testing.T) {
	var out bytes.Buffer
	level := new(slog.LevelVar)
	hide := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == "password" {
			return slog.String("password", "[hidden]")
		}
		return a
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: hide}
	r := New(0, 0)
	log := slog.New(r.Handler(slog.NewTextHandler(&out, opts), opts)).With("node", "n1")
	log.Debug("debug detail", "secret-ish", "s3cr3t-debug-value")
	log.WithGroup("aws").Info("call", "password", "hunter2", "op", "ReplaceRoute")
	level.Set(slog.LevelDebug)
	log.Debug("now debug")
	lines, _ := r.Lines()
	if len(lines) != 2 {
		t.Fatalf("ring holds %d lines, want 2: %q", len(lines), lines)
	}
	printed := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(printed) != 2 {
		t.Fatalf("printed %q", printed)
	}
	for i := range lines {
		// same text apart from the time stamp
		_, a, _ := strings.Cut(lines[i], " level=")
		_, b, _ := strings.Cut(printed[i], " level=")
		if strings.TrimSpace(a) != strings.TrimSpace(b) {
			t.Fatalf("ring %q, printed %q", a, b)
		}
	}
	all := strings.Join(lines, "")
	if strings.Contains(all, "s3cr3t-debug-value") || strings.Contains(all, "hunter2") {
		t.Fatalf("ring holds what the log did not print: %q", all)
	}
	if !strings.Contains(lines[0], "node=n1") || !strings.Contains(lines[0], "aws.op=ReplaceRoute") || !strings.Contains(lines[1], "now debug") {
		t.Fatalf("ring lost attributes: %q", lines)
	}
}
