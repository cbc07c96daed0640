package probe

import (
	"sort"
	"time"
)

// Scheduler decides when each hierarchy's readiness is proven next. It is
// pure: the caller passes the time in, runs the probe Next names and tells
// Done how it went.
//
// In the steady state every hierarchy is proven once per Interval, and the
// probes are spread evenly over it (one every Interval/N), not sent in a
// burst: a probe's next turn is Interval after it ran, and never sooner
// than Interval/N after the turn handed out last. A hierarchy that was NOT
// READY comes back after Retry, with fresh answers. When the budget makes
// probes late, each one still runs in the order of its turn: the period
// stretches to what the budget allows, and Late says by how much.
type Scheduler struct {
	Interval time.Duration
	Retry    time.Duration

	turns   map[string]Turn
	lastDue time.Time
}

// Turn is a hierarchy's next probe: when it is due, and how fresh the
// answers it may share must be (answers got before NotBefore are called
// again; the zero time: the Interval's freshness).
type Turn struct {
	Name      string
	Due       time.Time
	NotBefore time.Time
}

// NewScheduler returns an empty schedule.
func NewScheduler(interval, retry time.Duration) *Scheduler {
	return &Scheduler{Interval: interval, Retry: retry, turns: map[string]Turn{}}
}

// Sync makes names the hierarchies to prove: new ones are due now, those
// no longer named are dropped. It reports whether any was new.
func (s *Scheduler) Sync(names []string, now time.Time) bool {
	want := map[string]bool{}
	added := false
	for _, n := range names {
		want[n] = true
		if _, ok := s.turns[n]; !ok {
			s.turns[n] = Turn{Name: n, Due: now}
			added = true
		}
	}
	for n := range s.turns {
		if !want[n] {
			delete(s.turns, n)
		}
	}
	return added
}

// All makes every hierarchy due now (a spec change, the join, a refresh);
// fresh: their answers must be got from now on (a refresh proves now, not
// as of a shared answer).
func (s *Scheduler) All(now time.Time, fresh bool) {
	for n, t := range s.turns {
		t.Due = now
		if fresh {
			t.NotBefore = now
		}
		s.turns[n] = t
	}
}

// Len is the number of hierarchies scheduled.
func (s *Scheduler) Len() int { return len(s.turns) }

// Next returns the earliest turn (by due time, then name); false when
// nothing is scheduled.
func (s *Scheduler) Next() (Turn, bool) {
	var best Turn
	found := false
	for _, t := range s.turns {
		if !found || t.Due.Before(best.Due) || t.Due.Equal(best.Due) && t.Name < best.Name {
			best, found = t, true
		}
	}
	return best, found
}

// Due lists the turns due at now, earliest first.
func (s *Scheduler) Due(now time.Time) []Turn {
	var out []Turn
	for _, t := range s.turns {
		if !t.Due.After(now) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Due.Equal(out[j].Due) {
			return out[i].Due.Before(out[j].Due)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Done records that name was proven at now (ready: not NOT READY) and
// hands out its next turn.
func (s *Scheduler) Done(name string, now time.Time, ready bool) Turn {
	t, ok := s.turns[name]
	if !ok {
		return Turn{}
	}
	if !ready {
		t.Due, t.NotBefore = now.Add(min(s.Retry, s.Interval)), now
		s.turns[name] = t
		return t
	}
	spacing := s.Interval / time.Duration(max(len(s.turns), 1))
	due := now.Add(s.Interval)
	if next := s.lastDue.Add(spacing); next.After(due) && next.Before(now.Add(2*s.Interval)) {
		due = next
	}
	s.lastDue = due
	t.Due, t.NotBefore = due, time.Time{}
	s.turns[name] = t
	return t
}

// Late is how far behind its turn the most overdue probe is at now (0:
// none is).
func (s *Scheduler) Late(now time.Time) time.Duration {
	t, ok := s.Next()
	if !ok || !t.Due.Before(now) {
		return 0
	}
	return now.Sub(t.Due)
}

// Hurry puts the named hierarchies first in line (before any late turn),
// with answers got after notBefore: a refresh proves now.
func (s *Scheduler) Hurry(names []string, notBefore time.Time) {
	for _, n := range names {
		if t, ok := s.turns[n]; ok {
			t.Due, t.NotBefore = time.Time{}, notBefore
			s.turns[n] = t
		}
	}
}

// Period is the time the probes take to come round to every hierarchy at
// now: the interval, or more when they run late.
func (s *Scheduler) Period(now time.Time) time.Duration {
	return s.Interval + s.Late(now)
}

// Reschedule makes the named hierarchies due at now (their specs changed).
func (s *Scheduler) Reschedule(names []string, now time.Time) {
	for _, n := range names {
		if t, ok := s.turns[n]; ok && t.Due.After(now) {
			t.Due = now
			s.turns[n] = t
		}
	}
}
