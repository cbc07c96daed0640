package probe

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// run drives s from start to end as the agent does: the earliest turn
// runs when due (at once when late); each probe takes cost(name) and
// proves ready(name). It returns when each name was proven.
func run(s *Scheduler, start, end time.Time, cost func(string) time.Duration, ready func(string) bool) map[string][]time.Time {
	proven := map[string][]time.Time{}
	now := start
	for {
		t, ok := s.Next()
		if !ok {
			return proven
		}
		if t.Due.After(now) {
			now = t.Due
		}
		if now.After(end) {
			return proven
		}
		now = now.Add(cost(t.Name))
		proven[t.Name] = append(proven[t.Name], now)
		s.Done(t.Name, now, ready(t.Name))
	}
}

func names(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("h%04d", i))
	}
	return out
}

// Steady state: every hierarchy is proven once per interval, and the
// probes are spread evenly over it rather than sent in a burst.
func TestSchedulerSpreadsProbesOverTheInterval(t *testing.T) {
	const n = 100
	interval := 5 * time.Minute
	s := NewScheduler(interval, 3*time.Second)
	start := time.Unix(1_700_000_000, 0)
	if !s.Sync(names(n), start) || s.Len() != n {
		t.Fatal("Sync did not add the hierarchies")
	}
	if due := s.Due(start); len(due) != n || due[0].Name != "h0000" {
		t.Fatalf("at start %d due (first %v), want all %d", len(due), due[0], n)
	}
	fast := func(string) time.Duration { return 10 * time.Millisecond }
	always := func(string) bool { return true }
	proven := run(s, start, start.Add(4*interval), fast, always)
	var all []time.Time
	for _, name := range names(n) {
		ts := proven[name]
		if len(ts) < 4 {
			t.Fatalf("%s proven %d times in 4 intervals", name, len(ts))
		}
		for i := 2; i < len(ts); i++ { // after the first spread-out turn
			if gap := ts[i].Sub(ts[i-1]); gap < interval || gap > interval+time.Second {
				t.Fatalf("%s proven again after %s, interval %s", name, gap, interval)
			}
		}
		all = append(all, ts[1:]...)
	}
	slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
	// After the first round (at start, all at once), never two probes
	// closer than the spacing, interval/n, allowing for their own length.
	spacing := interval / n
	for i := 1; i < len(all); i++ {
		if gap := all[i].Sub(all[i-1]); gap < spacing-20*time.Millisecond {
			t.Fatalf("two probes %s apart, spacing %s", gap, spacing)
		}
	}
	if late := s.Late(start.Add(4 * interval)); late != 0 {
		t.Fatalf("late %s with probes that fit", late)
	}
}

// Probes that cannot all fit in the interval (each waits for the budget):
// the period stretches, every hierarchy still gets its turn in order, and
// Late says by how much.
func TestSchedulerStretchesThePeriod(t *testing.T) {
	const n = 50
	interval := time.Minute
	s := NewScheduler(interval, 3*time.Second)
	start := time.Unix(1_700_000_000, 0)
	s.Sync(names(n), start)
	// 3 s a probe: 150 s for all of them, against a 60 s interval.
	slow := func(string) time.Duration { return 3 * time.Second }
	end := start.Add(10 * time.Minute)
	proven := run(s, start, end, slow, func(string) bool { return true })
	for _, name := range names(n) {
		ts := proven[name]
		if len(ts) < 3 {
			t.Fatalf("%s proven %d times in 10 minutes", name, len(ts))
		}
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap < 145*time.Second || gap > 155*time.Second {
				t.Fatalf("%s proven again after %s, want about 150 s (the stretched period)", name, gap)
			}
		}
	}
	if late := s.Late(end); late < 60*time.Second {
		t.Fatalf("late %s, want about the 90 s the period is stretched by", late)
	}
}

// A NOT READY hierarchy comes back after Retry with fresh answers; new
// hierarchies are due at once, removed ones dropped; All makes every
// hierarchy due (fresh for a refresh).
func TestSchedulerRetryAndChanges(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	s := NewScheduler(5*time.Minute, 3*time.Second)
	s.Sync([]string{"a", "b"}, start)
	s.Done("a", start, true)
	tb := s.Done("b", start, false)
	if !tb.Due.Equal(start.Add(3*time.Second)) || !tb.NotBefore.Equal(start) {
		t.Fatalf("NOT READY b: next turn %+v", tb)
	}
	if next, _ := s.Next(); next.Name != "b" {
		t.Fatalf("next %+v, want b's retry", next)
	}
	// Ready again: back to the interval, any fresh answer.
	if tb = s.Done("b", start.Add(3*time.Second), true); tb.Due.Before(start.Add(5*time.Minute)) || !tb.NotBefore.IsZero() {
		t.Fatalf("b ready again: next turn %+v", tb)
	}
	now := start.Add(10 * time.Second)
	if !s.Sync([]string{"b", "c"}, now) || s.Len() != 2 {
		t.Fatalf("Sync: %d scheduled", s.Len())
	}
	if due := s.Due(now); len(due) != 1 || due[0].Name != "c" {
		t.Fatalf("due after adding c: %+v", due)
	}
	s.All(now, true)
	due := s.Due(now)
	if len(due) != 2 || !due[0].NotBefore.Equal(now) || !due[1].NotBefore.Equal(now) {
		t.Fatalf("after a refresh: %+v", due)
	}
	if s.Sync([]string{"b", "c"}, now) {
		t.Fatal("Sync with nothing new reported an addition")
	}
	// A changed spec: that hierarchy alone is due again.
	later := now.Add(time.Second)
	s.Done("b", later, true)
	s.Done("c", later, true)
	s.Reschedule([]string{"c"}, later)
	if due := s.Due(later); len(due) != 1 || due[0].Name != "c" {
		t.Fatalf("after c's spec changed: due %+v", due)
	}
}
