package events

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func seqs(es []Event) []uint64 {
	out := make([]uint64, 0, len(es))
	for _, e := range es {
		out = append(out, e.Seq)
	}
	return out
}

func TestAddStamps(t *testing.T) {
	l, err := Open("n1", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	e := l.Add(Event{Kind: "action", Hierarchy: "web", Action: "restore", Phase: "start"})
	if e.Seq != 1 || e.Node != "n1" || e.Time.Before(before) || e.Time.After(time.Now()) {
		t.Fatalf("first event %+v, want seq 1, node n1, time now", e)
	}
	if e.Kind != "action" || e.Hierarchy != "web" || e.Action != "restore" || e.Phase != "start" {
		t.Fatalf("fields lost: %+v", e)
	}
	// An explicit node and time are kept; a caller's Seq is overwritten.
	at := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	e = l.Add(Event{Seq: 99, Node: "n2", Time: at, Kind: "lease"})
	if e.Seq != 2 || e.Node != "n2" || !e.Time.Equal(at) {
		t.Fatalf("second event %+v, want seq 2, node n2, the given time", e)
	}
	got := l.Since(0)
	if len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 2 || got[1].Node != "n2" {
		t.Fatalf("Since(0) = %+v", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSince(t *testing.T) {
	l, _ := Open("n1", "", 100)
	for i := 0; i < 5; i++ {
		l.Add(Event{Kind: "cluster", Message: fmt.Sprint(i)})
	}
	for _, tt := range []struct {
		after uint64
		want  []uint64
	}{
		{0, []uint64{1, 2, 3, 4, 5}},
		{2, []uint64{3, 4, 5}},
		{4, []uint64{5}},
		{5, []uint64{}},
		{100, []uint64{}},
	} {
		got := seqs(l.Since(tt.after))
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Since(%d) = %v, want %v", tt.after, got, tt.want)
		}
	}
	// The result is a copy: changing it does not change the log.
	s := l.Since(0)
	s[0].Message = "changed"
	if l.Since(0)[0].Message != "0" {
		t.Fatal("Since returned the ring itself")
	}
}

func TestRingBound(t *testing.T) {
	l, _ := Open("n1", "", 3)
	for i := 0; i < 10; i++ {
		l.Add(Event{Kind: "cluster"})
		if n := len(l.Since(0)); n > 3 {
			t.Fatalf("ring holds %d events, max 3", n)
		}
	}
	if got := seqs(l.Since(0)); fmt.Sprint(got) != "[8 9 10]" {
		t.Fatalf("ring = %v, want the newest three", got)
	}
	if got := seqs(l.Since(9)); fmt.Sprint(got) != "[10]" {
		t.Fatalf("Since(9) = %v", got)
	}
	// Sequence numbers keep rising past the bound.
	if e := l.Add(Event{}); e.Seq != 11 {
		t.Fatalf("seq = %d, want 11", e.Seq)
	}
}

func TestOpenReloadsHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := Open("n1", path, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		l.Add(Event{Kind: "action", Hierarchy: "web", Message: fmt.Sprint("m", i), Duration: "1s", Error: "e"})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Every event is one JSON line.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %d: %v", lines+1, err)
		}
		lines++
	}
	f.Close()
	if lines != 4 {
		t.Fatalf("file has %d lines, want 4", lines)
	}

	// Reopen with a smaller ring: the newest events are kept, seq continues.
	l2, err := Open("n1", path, 3)
	if err != nil {
		t.Fatal(err)
	}
	got := l2.Since(0)
	if fmt.Sprint(seqs(got)) != "[2 3 4]" {
		t.Fatalf("reloaded %v, want [2 3 4]", seqs(got))
	}
	if got[2].Message != "m3" || got[2].Hierarchy != "web" || got[2].Node != "n1" || got[2].Duration != "1s" || got[2].Time.IsZero() {
		t.Fatalf("reloaded event %+v", got[2])
	}
	e := l2.Add(Event{Kind: "cluster", Message: "after restart"})
	if e.Seq != 5 {
		t.Fatalf("seq after reload = %d, want 5", e.Seq)
	}
	l2.Close()

	// Corrupt lines are skipped; the new event was appended to the file.
	if err := appendLine(path, "{torn"); err != nil {
		t.Fatal(err)
	}
	l3, err := Open("n1", path, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	got = l3.Since(0)
	if fmt.Sprint(seqs(got)) != "[1 2 3 4 5]" || got[4].Message != "after restart" {
		t.Fatalf("reloaded %+v", got)
	}
	if e := l3.Add(Event{}); e.Seq != 6 {
		t.Fatalf("seq = %d, want 6", e.Seq)
	}
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(line + "\n")
	return err
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open("n1", filepath.Join(dir, "missing", "events.jsonl"), 10); err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
	// A new file is created with private permissions.
	path := filepath.Join(dir, "events.jsonl")
	l, err := Open("n1", path, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("history file mode %v is readable by others", st.Mode().Perm())
	}
	if len(l.Since(0)) != 0 {
		t.Fatal("new history not empty")
	}
}

func TestWait(t *testing.T) {
	l, _ := Open("n1", "", 10)
	w1, w2 := l.Wait(), l.Wait()
	select {
	case <-w1:
		t.Fatal("Wait closed before any Add")
	default:
	}
	l.Add(Event{Kind: "cluster"})
	for i, w := range []<-chan struct{}{w1, w2} {
		select {
		case <-w:
		default:
			t.Fatalf("waiter %d not closed by Add", i)
		}
	}
	// A waiter taken after the Add waits for the next one.
	w3 := l.Wait()
	select {
	case <-w3:
		t.Fatal("new waiter already closed")
	default:
	}
	done := make(chan uint64)
	go func() {
		<-w3
		evs := l.Since(1)
		if len(evs) == 0 {
			done <- 0
			return
		}
		done <- evs[0].Seq
	}()
	l.Add(Event{Kind: "cluster"})
	select {
	case seq := <-done:
		if seq != 2 {
			t.Fatalf("woken waiter saw seq %d, want 2", seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken")
	}
}

func TestConcurrentAdd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := Open("n1", path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				l.Add(Event{Kind: "action"})
				l.Since(0)
			}
		}()
	}
	wg.Wait()
	l.Close()
	got := l.Since(0)
	if len(got) != 400 {
		t.Fatalf("%d events, want 400", len(got))
	}
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
	l2, err := Open("n1", path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if n := len(l2.Since(0)); n != 400 {
		t.Fatalf("reloaded %d events, want 400", n)
	}
}

func TestSeverityDefault(t *testing.T) {
	l, _ := Open("n1", "", 10)
	for _, tt := range []struct {
		in   Event
		want string
	}{
		{Event{Kind: "failover"}, Info},
		{Event{Kind: "maintenance", Error: "boom"}, Warning}, // an unknown kind too
		{Event{Kind: "quorum", Severity: Critical}, Critical},
		{Event{Kind: "x", Severity: "bogus", Error: "e"}, Warning},
	} {
		if got := l.Add(tt.in).Severity; got != tt.want {
			t.Errorf("Add(%+v).Severity = %q, want %q", tt.in, got, tt.want)
		}
	}
	if SeverityRank(Critical) <= SeverityRank(Warning) || SeverityRank(Warning) <= SeverityRank(Info) || SeverityRank("nope") != 0 {
		t.Fatal("severity ranks out of order")
	}
}

func TestReadLimitAndLost(t *testing.T) {
	l, _ := Open("n1", "", 3)
	for i := 0; i < 10; i++ {
		l.Add(Event{Kind: "cluster"})
	}
	if l.Last() != 10 {
		t.Fatalf("Last = %d, want 10", l.Last())
	}
	for _, tt := range []struct {
		seq      uint64
		limit    int
		want     string
		wantLost uint64
	}{
		{0, 0, "[8 9 10]", 0},  // from what the ring holds
		{2, 0, "[8 9 10]", 5},  // 3..7 fell out of the ring
		{7, 0, "[8 9 10]", 0},  // exactly caught up with the ring
		{8, 1, "[9]", 0},       // limited
		{10, 0, "[]", 0},       // nothing new
		{99, 0, "[8 9 10]", 0}, // a cursor from a wiped history restarts
	} {
		evs, lost := l.Read(tt.seq, tt.limit)
		if got := fmt.Sprint(seqs(evs)); got != tt.want || lost != tt.wantLost {
			t.Errorf("Read(%d, %d) = %s lost %d, want %s lost %d", tt.seq, tt.limit, got, lost, tt.want, tt.wantLost)
		}
	}
}
