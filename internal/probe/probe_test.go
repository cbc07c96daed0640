package probe

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// maxInWindow is the most of the times ts (sorted) within any window.
func maxInWindow(ts []time.Time, window time.Duration) int {
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= window {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// The budget: calls wait for it, none is refused, and no 60 s window ever
// holds more calls than the budget, however many are asked for at once.
func TestBudgetBoundsCallsPerMinute(t *testing.T) {
	for _, perMinute := range []int{2, 10, 60, 600} {
		t.Run(fmt.Sprint(perMinute), func(t *testing.T) {
			clock := NewFakeClock()
			b := NewBudget(clock, perMinute)
			start := clock.Now()
			var sent []time.Time
			n := 5*perMinute + 3
			for range n {
				if err := b.Wait(context.Background()); err != nil {
					t.Fatal(err)
				}
				b.Spend()
				sent = append(sent, clock.Now())
			}
			if got := maxInWindow(sent, time.Minute); got > perMinute {
				t.Fatalf("%d calls within one minute, budget %d", got, perMinute)
			}
			if b.Made() != uint64(n) {
				t.Fatalf("made %d, want %d", b.Made(), n)
			}
			// Every call beyond the burst waited.
			if d := b.Deferred(); d == 0 || d >= uint64(n) {
				t.Fatalf("deferred %d of %d", d, n)
			}
			// And the budget is used, not wasted: at least half of it
			// (the burst is held back from the refill).
			took := clock.Now().Sub(start)
			if want := time.Duration(float64(n) / float64(perMinute) * 2 * float64(time.Minute)); took > want {
				t.Fatalf("%d calls took %s at %d a minute", n, took, perMinute)
			}
		})
	}
}

// A call's retries are paid back: the bucket goes into debt and the next
// call waits for it.
func TestBudgetRetriesArePaidBack(t *testing.T) {
	clock := NewFakeClock()
	b := NewBudget(clock, 60) // burst 15, refill 45 a minute
	for range 15 {
		b.Spend()
	}
	for range 3 {
		b.Spend() // three retries of the last call
	}
	before := clock.Now()
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	// 3 tokens of debt plus the one to spend: 4 at 0.75/s.
	if waited := clock.Now().Sub(before); waited < 5*time.Second || waited > 6*time.Second {
		t.Fatalf("waited %s after three retries beyond the burst", waited)
	}
}

func TestBudgetWaitEndsWithTheContext(t *testing.T) {
	b := NewBudget(blockingClock{}, 2)
	b.Spend()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v", err)
	}
}

type blockingClock struct{}

func (blockingClock) Now() time.Time                       { return time.Unix(0, 0) }
func (blockingClock) After(time.Duration) <-chan time.Time { return nil }

type apiErr struct{ code string }

func (e apiErr) Error() string                 { return e.code }
func (e apiErr) ErrorCode() string             { return e.code }
func (e apiErr) ErrorMessage() string          { return e.code }
func (e apiErr) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

// Shared answers: one call per key while fresh; different keys never
// share; a view that wants newer answers calls again; answers of a cloud
// that could not tell are not kept.
func TestSharedAnswers(t *testing.T) {
	clock := NewFakeClock()
	s := NewShared(NewBudget(clock, 600), 5*time.Minute)
	calls := map[kit.ProbeKey]int{}
	answer := map[kit.ProbeKey]error{}
	do := func(v *View, k kit.ProbeKey) kit.ProbeAnswer {
		return v.Call(context.Background(), k, func(context.Context) (any, error) {
			calls[k]++
			return k.Resource, answer[k]
		})
	}
	rtb1 := kit.ProbeKey{Action: "ec2:ReplaceRoute", Resource: "arn:aws:ec2:r:*:route-table/rtb-1", Detail: "to eni-1"}
	rtb2 := kit.ProbeKey{Action: "ec2:ReplaceRoute", Resource: "arn:aws:ec2:r:*:route-table/rtb-2", Detail: "to eni-1"}
	other := kit.ProbeKey{Action: "ec2:ReplaceRoute", Resource: rtb1.Resource, Detail: "to eni-2"}
	answer[rtb1] = apiErr{"DryRunOperation"}
	answer[rtb2] = apiErr{"UnauthorizedOperation"}

	first := s.View(time.Time{})
	a := do(first, rtb1)
	if a.Shared || a.Value != rtb1.Resource || !errors.Is(a.Err, answer[rtb1]) {
		t.Fatalf("first answer %+v", a)
	}
	made := clock.Now()
	for range 999 {
		clock.Advance(250 * time.Millisecond)
		v := s.View(time.Time{})
		if a := do(v, rtb1); !a.Shared || !a.At.Equal(made) || !errors.Is(a.Err, answer[rtb1]) {
			t.Fatalf("answer %+v, want the one made at %s", a, made)
		}
		if v.Oldest() != made || v.Calls() != 0 || v.Reused() != 1 {
			t.Fatalf("view: oldest %s, %d calls, %d reused", v.Oldest(), v.Calls(), v.Reused())
		}
	}
	do(s.View(time.Time{}), rtb2)
	do(s.View(time.Time{}), rtb2)
	do(s.View(time.Time{}), other)
	if calls[rtb1] != 1 || calls[rtb2] != 1 || calls[other] != 1 {
		t.Fatalf("calls %v: want one per key", calls)
	}
	// A NOT READY hierarchy's retry wants answers newer than its verdict.
	if a := do(s.View(clock.Now()), rtb2); a.Shared || calls[rtb2] != 2 {
		t.Fatalf("a view wanting fresh answers got %+v (%d calls)", a, calls[rtb2])
	}
	// Past the freshness window: called again.
	clock.Advance(5*time.Minute + time.Second)
	if a := do(s.View(time.Time{}), rtb1); a.Shared || calls[rtb1] != 2 {
		t.Fatalf("an answer past its window was shared: %+v", a)
	}
	// Throttled: not kept.
	thr := kit.ProbeKey{Action: "ec2:CreateRoute", Resource: rtb1.Resource}
	answer[thr] = apiErr{"RequestLimitExceeded"}
	do(s.View(time.Time{}), thr)
	do(s.View(time.Time{}), thr)
	if calls[thr] != 2 {
		t.Fatalf("a throttled answer was shared (%d calls)", calls[thr])
	}
	if s.Reused() != 1000 {
		t.Fatalf("reused %d", s.Reused())
	}
}

// A paced view (an operator's run) waits for its own pace, not for the
// store's budget: with the budget spent and its clock never advancing, a
// plain view's call waits until its context ends, a paced one's is made.
func TestViewPacedDoesNotQueueBehindTheBudget(t *testing.T) {
	budget := NewBudget(blockingClock{}, 2)
	budget.Spend()
	s := NewShared(budget, time.Minute)
	key := kit.ProbeKey{Action: "ec2:DescribeRouteTables", Resource: "rtb-1"}
	made := 0
	call := func(context.Context) (any, error) { made++; return "ok", nil }

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if a := s.View(time.Time{}).Call(ctx, key, call); a.Err == nil || made != 0 {
		t.Fatalf("a view behind a spent budget answered %+v after %d calls", a, made)
	}
	if a := s.ViewPaced(time.Time{}, NewBudget(blockingClock{}, 300)).Call(context.Background(), key, call); a.Err != nil || made != 1 {
		t.Fatalf("a paced view answered %+v after %d calls", a, made)
	}
	if budget.Deferred() != 1 {
		t.Errorf("the budget deferred %d calls, want the plain view's one", budget.Deferred())
	}
}
