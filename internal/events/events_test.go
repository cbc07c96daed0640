package events

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
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

// fileSize is the size of path, 0 when it does not exist.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// stands counts the events the entries stand for.
func stands(es []Event) int {
	n := 0
	for _, e := range es {
		n += max(e.Count, 1)
	}
	return n
}

// A runaway source (a check answering "unknown" every 10 ms) writes one
// entry per window after its first burst, and every event it wrote is
// counted in them.
func TestCoalesceRunawaySource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		l, err := OpenWith("n1", path, AgentOptions())
		if err != nil {
			t.Fatal(err)
		}
		unknown := Event{Kind: "action", Hierarchy: "web", Resource: "vip", Action: "quickcheck", Phase: "end", Epoch: 3, Message: "unknown", Error: "DescribeRouteTables: timeout"}
		const every, runFor = 10 * time.Millisecond, 10 * time.Minute
		added := 0
		for start := time.Now(); time.Since(start) < runFor; added++ {
			e := unknown
			e.Duration = fmt.Sprint(added%7, "ms") // differs each time; not part of identity
			l.Add(e)
			time.Sleep(every)
		}
		// Something else in between is recorded as it comes.
		if e := l.Add(Event{Kind: "cluster", Action: "leader"}); e.Seq == 0 {
			t.Fatal("a different event was held back")
		}
		time.Sleep(DefaultCoalesceWindow) // the last window ends
		synctest.Wait()
		evs := l.Since(0)
		var runaway []Event
		for _, e := range evs {
			if e.Action == "quickcheck" {
				runaway = append(runaway, e)
			}
		}
		windows := int(runFor / DefaultCoalesceWindow)
		if len(runaway) > DefaultCoalesceBurst+windows+1 {
			t.Errorf("%d entries for %d identical events, want at most %d (the burst, then one per window)", len(runaway), added, DefaultCoalesceBurst+windows+1)
		}
		if got := stands(runaway); got != added {
			t.Errorf("entries stand for %d events, want %d", got, added)
		}
		last := runaway[len(runaway)-1]
		if last.Count < 2 || last.First.IsZero() || !last.First.Before(last.Time) || last.Message != "unknown" || last.Error != unknown.Error {
			t.Errorf("last entry %+v: want a count, the first time before its time, the message and error kept", last)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq != evs[i-1].Seq+1 {
				t.Fatalf("sequence numbers not consecutive: %v", seqs(evs))
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		size := fileSize(t, path)
		perDay := size * int64(24*time.Hour/runFor)
		t.Logf("%d identical events in %s (one every %s): %d entries, %d bytes on disk; about %d KiB a day (was about %d MiB without coalescing)",
			added, runFor, every, len(runaway), size, perDay>>10, int64(24*time.Hour/every)*int64(len(encodeLen(t, unknown)))>>20)
		if perDay > DefaultMaxBytes/4 {
			t.Errorf("a runaway source would still write %d bytes a day", perDay)
		}
	})
}

func encodeLen(t *testing.T, e Event) []byte {
	t.Helper()
	e.Seq, e.Time, e.Node, e.Duration, e.Severity = 123456, time.Now(), "node1", "1.234ms", Warning
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// Closing the log records what it held back.
func TestCloseRecordsHeldEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		l, err := OpenWith("n1", path, Options{MaxBytes: 1 << 20, CoalesceWindow: time.Minute, CoalesceBurst: 2})
		if err != nil {
			t.Fatal(err)
		}
		var held int
		for range 10 {
			if l.Add(Event{Kind: "action", Message: "same"}).Seq == 0 {
				held++
			}
		}
		if held != 8 {
			t.Fatalf("%d held back, want 8 (10 less a burst of 2)", held)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l2, err := OpenWith("n1", path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Close()
		evs := l2.Since(0)
		if len(evs) != 3 || stands(evs) != 10 || evs[2].Count != 8 {
			t.Fatalf("reloaded %+v, want 2 events and one standing for 8", evs)
		}
	})
}

// However fast events come (all different: nothing to coalesce), the
// history on disk stays under MaxBytes; sequence numbers rise across
// rotations and a restart, and a reader's cursor keeps working.
func TestRotationBoundsTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	const maxBytes = 256 << 10
	opt := Options{Ring: 100, MaxBytes: maxBytes, CoalesceWindow: time.Second}
	l, err := OpenWith("n1", path, opt)
	if err != nil {
		t.Fatal(err)
	}
	var cursor uint64
	read := 0
	for i := range 20000 {
		l.Add(Event{Kind: "action", Hierarchy: "web", Action: "quickcheck", Message: fmt.Sprintf("attempt %d", i)})
		if total := fileSize(t, path) + fileSize(t, path+".1"); total > maxBytes {
			t.Fatalf("after %d events the history takes %d bytes, over %d", i+1, total, maxBytes)
		}
		if i%50 == 49 { // a reader following with a cursor
			evs, lost := l.Read(cursor, 0)
			if lost != 0 || len(evs) != 50 || evs[0].Seq != cursor+1 {
				t.Fatalf("read from cursor %d: %d events (first %v), %d lost; want the next 50", cursor, len(evs), seqs(evs[:1]), lost)
			}
			cursor = evs[len(evs)-1].Seq
			read += len(evs)
		}
	}
	if l.rotations < 10 {
		t.Fatalf("%d rotations, want many", l.rotations)
	}
	t.Logf("20000 events: %d rotations, %d + %d bytes on disk (limit %d)", l.rotations, fileSize(t, path), fileSize(t, path+".1"), maxBytes)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".2"); !os.IsNotExist(err) {
		t.Errorf("an older rotation kept: %v", err)
	}
	l2, err := OpenWith("n1", path, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if l2.Last() != 20000 {
		t.Fatalf("reopened at seq %d, want 20000", l2.Last())
	}
	if e := l2.Add(Event{Kind: "cluster", Action: "start"}); e.Seq != 20001 {
		t.Fatalf("first event after restart has seq %d, want 20001", e.Seq)
	}
	evs, lost := l2.Read(cursor, 0)
	if lost != 0 || len(evs) != 1 || evs[0].Seq != 20001 {
		t.Fatalf("read from cursor %d after restart: %v lost %d", cursor, seqs(evs), lost)
	}
}

// A file rotated away just before a restart (the new one still empty)
// keeps the sequence numbers rising.
func TestReloadAfterRotationWithEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenWith("n1", path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.Add(Event{Kind: "cluster"})
	}
	l.Close()
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l2, err := OpenWith("n1", path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if e := l2.Add(Event{Kind: "cluster"}); e.Seq != 6 {
		t.Fatalf("seq %d after reload, want 6", e.Seq)
	}
}

// The ring holds the last Ring events however many were added (the slice
// is trimmed only every Ring events, readers see the window).
func TestRingWindow(t *testing.T) {
	l, err := OpenWith("n", "", Options{Ring: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 35 {
		l.Add(Event{Kind: "action", Message: fmt.Sprint(i)})
		evs := l.Since(0)
		want := min(i+1, 10)
		if len(evs) != want || evs[len(evs)-1].Seq != uint64(i+1) || evs[0].Seq != uint64(i+2-want) {
			t.Fatalf("after %d events Since(0) holds %d (seq %d..%d), want the last %d", i+1, len(evs), evs[0].Seq, evs[len(evs)-1].Seq, want)
		}
	}
	evs, lost := l.Read(20, 0)
	if lost != 5 || len(evs) != 10 || evs[0].Seq != 26 {
		t.Errorf("Read(20) = %d events from seq %d, %d lost; want 10 from 26, 5 lost", len(evs), evs[0].Seq, lost)
	}
}
