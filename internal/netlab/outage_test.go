package netlab

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// samplesOf builds a probe run from a pattern, one request every 10ms from
// t0: a letter is the host that answered (after 1ms), "." a lost request.
func samplesOf(t0 time.Time, pattern string) []Sample {
	out := make([]Sample, len(pattern))
	for i, c := range pattern {
		s := Sample{Seq: uint64(i), Sent: t0.Add(time.Duration(i) * 10 * time.Millisecond)}
		if c != '.' {
			s.Answered, s.From = s.Sent.Add(time.Millisecond), string(c)
		}
		out[i] = s
	}
	return out
}

func TestOutageAt(t *testing.T) {
	t0 := time.Now()
	at := func(i int) time.Time { return t0.Add(time.Duration(i)*10*time.Millisecond + 5*time.Millisecond) }
	for _, tc := range []struct {
		name    string
		pattern string
		fault   time.Time // between request i and i+1
		want    Outage    // Duration, Lost, hosts via LastBefore/FirstAfter Seq
		before  uint64
		after   uint64
		err     string
	}{
		{name: "failover", pattern: "aaaa.....bbb", fault: at(3), before: 3, after: 9, want: Outage{Duration: 60 * time.Millisecond, Lost: 5}},
		{name: "request lost in flight before the fault counts", pattern: "aaa......bbb", fault: at(4), before: 2, after: 9, want: Outage{Duration: 70 * time.Millisecond, Lost: 6}},
		{name: "fault recorded before it bit", pattern: "aaaaaa...bbb", fault: at(2), before: 5, after: 9, want: Outage{Duration: 40 * time.Millisecond, Lost: 3}},
		{name: "an earlier loss is not this outage", pattern: "a.aaaa..bbbb", fault: at(4), before: 5, after: 8, want: Outage{Duration: 30 * time.Millisecond, Lost: 2}},
		{name: "nothing lost", pattern: "aaaabbbb", fault: at(3), before: 3, after: 4, want: Outage{Duration: 10 * time.Millisecond}},
		{name: "fault at the very first request", pattern: "...bb", fault: t0.Add(-time.Millisecond), after: 3, err: "no answer before the fault"},
		{name: "never recovered", pattern: "aa....", fault: at(1), before: 1, err: "no answer after the fault (4 requests lost"},
		{name: "no samples", pattern: "", fault: t0, err: "no answer before the fault (0 requests sent)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := OutageAt(samplesOf(t0, tc.pattern), tc.fault)
			if tc.err != "" {
				if !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want ErrNoAnswer with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Duration != tc.want.Duration || got.Lost != tc.want.Lost || got.LastBefore.Seq != tc.before || got.FirstAfter.Seq != tc.after {
				t.Fatalf("got %v (requests %d to %d), want %v lost %d (requests %d to %d)",
					got.Duration, got.LastBefore.Seq, got.FirstAfter.Seq, tc.want.Duration, tc.want.Lost, tc.before, tc.after)
			}
			if b, a := got.Before(), got.After(); b != string(tc.pattern[tc.before]) || a != string(tc.pattern[tc.after]) {
				t.Fatalf("hosts %s -> %s", b, a)
			}
		})
	}
}

func TestGaps(t *testing.T) {
	t0 := time.Now()
	got := Gaps(samplesOf(t0, "a.aa...b..bb"), 15*time.Millisecond)
	want := []struct {
		from, to uint64
		lost     int
	}{{0, 2, 1}, {3, 7, 3}, {7, 10, 2}}
	if len(got) != len(want) {
		t.Fatalf("got %d gaps %v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.LastBefore.Seq != w.from || g.FirstAfter.Seq != w.to || g.Lost != w.lost || g.Duration != time.Duration(w.to-w.from)*10*time.Millisecond {
			t.Errorf("gap %d: %d to %d lost %d (%v), want %d to %d lost %d", i, g.LastBefore.Seq, g.FirstAfter.Seq, g.Lost, g.Duration, w.from, w.to, w.lost)
		}
	}
	if g := Gaps(samplesOf(t0, "aaaa"), 15*time.Millisecond); len(g) != 0 {
		t.Fatalf("no loss, got gaps %v", g)
	}
}
