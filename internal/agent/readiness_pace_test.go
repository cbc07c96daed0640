package agent

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/probe"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// The pace says the budget holds readiness back only when turns run late
// and calls waited for the budget: not when the probes keep up, not when
// they are late for another reason (a slow API). Doctor then names the
// budget and what would cover a pass.
func TestPaceSaysWhenTheBudgetHoldsReadinessBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		interval := time.Minute
		b := probe.NewBudget(probe.Real, 60)
		m := newPaceMeter(b, interval)
		names := []string{"a", "b", "c", "d", "e", "f"}
		prove := func(late time.Duration) {
			for _, n := range names {
				time.Sleep(interval / time.Duration(len(names)))
				m.proven(probe.Turn{Name: n, Due: time.Now().Add(-late)}, time.Now(), late)
			}
		}
		for range 4 {
			prove(0)
		}
		if p := m.report(); p.BudgetBound || p.PeriodMS < interval.Milliseconds() || p.PeriodMS > (interval+interval/10).Milliseconds() {
			t.Fatalf("probes on time: pace %+v", p)
		}
		// Late by 30 s, and nothing waited for the budget: a slow API.
		prove(30 * time.Second)
		if p := m.report(); p.BudgetBound || p.PeriodMS < (90*time.Second).Milliseconds() {
			t.Fatalf("late without the budget: pace %+v", p)
		}
		// Late, with calls that waited for the budget.
		for range 30 {
			if err := b.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			b.Spend()
		}
		prove(30 * time.Second)
		p := m.report()
		if !p.BudgetBound || p.BudgetPerMinute != 60 || p.CallsPerMinute == 0 {
			t.Fatalf("late, calls deferred: pace %+v", p)
		}

		r := newReadiness(&Agent{cfg: &config.Agent{Node: "node1"}})
		r.pace = state.ReadinessPace{BudgetPerMinute: 60, IntervalMS: 300_000, PeriodMS: 37 * 60_000, CallsPerMinute: 54, BudgetBound: true}
		f, ok := r.budgetFinding()
		if !ok || f.Severity != "warning" || !strings.Contains(f.Seen, "37m0s") || !strings.Contains(f.Fix, "aws.readiness_calls_per_minute to about 460") {
			t.Fatalf("doctor's finding: %+v", f)
		}
		r.pace.BudgetBound = false
		if _, ok := r.budgetFinding(); ok {
			t.Fatal("a finding while the budget keeps up")
		}
	})
}
