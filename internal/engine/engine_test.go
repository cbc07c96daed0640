package engine_test

// Every test here runs in a testing/synctest bubble: the engine reads
// time only through the time package, so its monitor intervals, action
// timeouts and lease bounds run on the bubble's fake clock (the tests
// take milliseconds and do not depend on the machine's load).

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

const (
	testNode = "node-7"
	interval = 20 * time.Millisecond
	// clockHier is an always-healthy hierarchy run next to the one under
	// test: its quickchecks measure elapsed intervals, so that "nothing
	// happens" can be asserted over several intervals without sleeping.
	clockHier = "clock"
	clockRes  = "tick"
)

type harness struct {
	fk  *fakeKit
	col *collector
	ev  *events.Log
	eng *engine.Engine
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// newHarnessWith lets edit change the engine's config first.
func newHarnessWith(t *testing.T, edit func(*engine.Config)) *harness {
	t.Helper()
	ev, err := events.Open(testNode, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{fk: newFakeKit(), col: newCollector(), ev: ev}
	cfg := engine.Config{
		Node:    testNode,
		DataDir: t.TempDir(),
		Logger:  slog.New(slog.DiscardHandler),
		Events:  ev,
		Report:  h.col.report,
		Lookup:  h.fk.lookup,
	}
	if edit != nil {
		edit(&cfg)
	}
	h.eng = engine.New(cfg)
	t.Cleanup(h.eng.Close)
	return h
}

// update hands the engine the given hierarchies plus the clock hierarchy.
func (h *harness) update(ds ...engine.Desired) {
	m := map[string]engine.Desired{
		clockHier: {Spec: hier(clockHier, res(clockRes, 1)), Epoch: 1, InService: true},
	}
	for _, d := range ds {
		m[d.Spec.Name] = d
	}
	h.eng.Update(m)
}

// ticks waits until the clock hierarchy has run n more quickchecks, that is
// until at least n monitor intervals have passed.
func (h *harness) ticks(t *testing.T, n int) {
	t.Helper()
	start := count(h.fk.journal(), clockHier, clockRes, kit.OpQuickCheck)
	h.fk.waitFor(t, fmt.Sprintf("%d clock ticks", n), func(c []call) bool {
		return count(c, clockHier, clockRes, kit.OpQuickCheck) >= start+n
	})
}

func res(name string, localRecovery int, deps ...string) spec.Resource {
	lr := localRecovery
	return spec.Resource{
		Name:            name,
		Type:            "fake",
		DependsOn:       deps,
		MonitorInterval: spec.Duration(interval),
		LocalRecovery:   &lr,
		Timeout:         spec.Duration(2 * time.Second),
	}
}

func hier(name string, rs ...spec.Resource) spec.Hierarchy {
	return spec.Hierarchy{Name: name, Nodes: []string{testNode}, Resources: rs}
}

// diamond: app depends on fs and ip, which both depend on disk
// (a -> b,c -> d).
func diamond(name string) spec.Hierarchy {
	return hier(name,
		res("app", 1, "fs", "ip"),
		res("fs", 1, "disk"),
		res("ip", 1, "disk"),
		res("disk", 1),
	)
}

// pair: app depends on ip; both with the given local recovery count.
func pair(name string, localRecovery int) spec.Hierarchy {
	return hier(name, res("app", localRecovery, "ip"), res("ip", localRecovery))
}

// checkChildrenFirst fails unless seq names every resource of h exactly
// once, each after everything it depends on.
func checkChildrenFirst(t *testing.T, h spec.Hierarchy, seq []string) {
	t.Helper()
	pos := positions(t, seq)
	if len(seq) != len(h.Resources) {
		t.Errorf("restore sequence %v: want each of the %d resources exactly once", seq, len(h.Resources))
	}
	for _, r := range h.Resources {
		p, ok := pos[r.Name]
		if !ok {
			t.Errorf("restore sequence %v lacks %s", seq, r.Name)
			continue
		}
		for _, d := range r.DependsOn {
			if q, ok := pos[d]; !ok || q > p {
				t.Errorf("restore sequence %v: %s restored before its dependency %s", seq, r.Name, d)
			}
		}
	}
}

// checkParentsFirst fails unless, among the resources in seq (each at most
// once), every resource comes before the ones it depends on.
func checkParentsFirst(t *testing.T, h spec.Hierarchy, seq []string) {
	t.Helper()
	pos := positions(t, seq)
	for _, r := range h.Resources {
		p, ok := pos[r.Name]
		if !ok {
			continue
		}
		for _, d := range r.DependsOn {
			if q, ok := pos[d]; ok && q < p {
				t.Errorf("remove sequence %v: %s removed before %s, which depends on it", seq, d, r.Name)
			}
		}
	}
}

func positions(t *testing.T, seq []string) map[string]int {
	t.Helper()
	pos := map[string]int{}
	for i, n := range seq {
		if _, dup := pos[n]; dup {
			t.Errorf("sequence %v names %s twice", seq, n)
		}
		pos[n] = i
	}
	return pos
}

func checkAll(t *testing.T, what string, got map[string]string, h spec.Hierarchy, state string) {
	t.Helper()
	if len(got) != len(h.Resources) {
		t.Errorf("%s: resources %v, want all %d resources %s", what, got, len(h.Resources), state)
	}
	for _, r := range h.Resources {
		if got[r.Name] != state {
			t.Errorf("%s: resource %s is %q, want %q (all: %v)", what, r.Name, got[r.Name], state, got)
		}
	}
}

// checkInterval fails unless the quickchecks of hier/res ran about one
// monitor interval apart (never sooner; the upper bound is loose).
func checkInterval(t *testing.T, calls []call, hier, res string) {
	t.Helper()
	var at []time.Time
	for _, c := range calls {
		if c.Hier == hier && c.Res == res && c.Op == kit.OpQuickCheck {
			at = append(at, c.At)
		}
	}
	if len(at) < 2 {
		t.Errorf("%d quickchecks of %s/%s, want several", len(at), hier, res)
	}
	for i := 1; i < len(at); i++ {
		if d := at[i].Sub(at[i-1]); d < interval*3/4 || d > time.Second {
			t.Errorf("quickchecks %d and %d of %s/%s ran %v apart, want about %v", i-1, i, hier, res, d, interval)
		}
	}
}

func equal(a, b []string) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// after returns the calls that follow the call with sequence number seq.
func after(calls []call, seq int) []call {
	if seq+1 >= len(calls) {
		return nil
	}
	return calls[seq+1:]
}

// seqOf returns the sequence number of the n-th (0-based) op on hier/res.
func seqOf(t *testing.T, calls []call, hier, res, op string, n int) int {
	t.Helper()
	for _, c := range calls {
		if c.Hier == hier && c.Res == res && c.Op == op {
			if n == 0 {
				return c.Seq
			}
			n--
		}
	}
	t.Fatalf("no %s of %s/%s in journal:\n%s", op, hier, res, formatCalls(calls))
	return -1
}

func TestDiamondRestoresChildrenFirstAndRemovesParentsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := diamond("web")

		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		on := h.col.waitState(t, "web", m, engine.StateOnline, 1)

		calls := h.fk.journal()
		checkChildrenFirst(t, hs, ops(calls, "web", kit.OpRestore))
		if rm := ops(calls, "web", kit.OpRemove); len(rm) != 0 {
			t.Errorf("removes %v while bringing the hierarchy in service", rm)
		}
		checkAll(t, "online report", on.Resources, hs, engine.StateOnline)
		if on.Error != "" {
			t.Errorf("online report has error %q", on.Error)
		}

		reps := h.col.since("web", m)
		if tr := transitions(reps); !equal(tr, []string{engine.StateRestoring, engine.StateOnline}) {
			t.Errorf("state transitions %v, want [restoring online]\n%s", tr, formatReports(reps))
		}
		if first := reps[0]; first.State == engine.StateRestoring {
			checkAll(t, "first restoring report", first.Resources, hs, engine.StateOffline)
		}
		prevOnline := 0
		for _, r := range reps {
			if r.Epoch != 1 {
				t.Errorf("report %s at epoch %d, want 1", r.State, r.Epoch)
			}
			n := 0
			for _, s := range r.Resources {
				if s == engine.StateOnline {
					n++
				}
			}
			if n < prevOnline {
				t.Errorf("online resources went down from %d to %d while restoring:\n%s", prevOnline, n, formatReports(reps))
			}
			prevOnline = n
		}

		cur, ok := h.eng.Reports()["web"]
		if !ok || cur.State != engine.StateOnline || cur.Epoch != 1 {
			t.Fatalf("Reports()[web] = %+v, %v; want online at epoch 1", cur, ok)
		}
		checkAll(t, "Reports()[web]", cur.Resources, hs, engine.StateOnline)

		// Take it out of service (a new epoch, as a move would).
		m = h.col.mark()
		nCalls := len(h.fk.journal())
		h.update(engine.Desired{Spec: hs, Epoch: 2, InService: false})
		off := h.col.waitState(t, "web", m, engine.StateOffline, 2)

		later := h.fk.journal()[nCalls:]
		removes := ops(later, "web", kit.OpRemove)
		if len(removes) != len(hs.Resources) {
			t.Errorf("removes %v, want each of the %d resources once", removes, len(hs.Resources))
		}
		checkParentsFirst(t, hs, removes)
		if rs := ops(later, "web", kit.OpRestore); len(rs) != 0 {
			t.Errorf("restores %v while taking the hierarchy out of service", rs)
		}
		checkAll(t, "offline report", off.Resources, hs, engine.StateOffline)
		if off.Error != "" {
			t.Errorf("offline report has error %q", off.Error)
		}
		reps = h.col.since("web", m)
		if tr := transitions(reps); !equal(tr, []string{engine.StateRemoving, engine.StateOffline}) {
			t.Errorf("state transitions %v, want [removing offline]\n%s", tr, formatReports(reps))
		}
		for _, r := range reps {
			if r.Epoch != 2 {
				t.Errorf("report %s at epoch %d, want 2", r.State, r.Epoch)
			}
		}
		if cur := h.eng.Reports()["web"]; cur.State != engine.StateOffline || cur.Epoch != 2 {
			t.Errorf("Reports()[web] = %+v; want offline at epoch 2", cur)
		}
	})
}

func TestRestoreFailureRemovesRestoredAndDoesNotRetryEpoch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := diamond("web")
		h.fk.script("web", "ip", func(s *script) { s.restoreErr = errors.New("address 10.0.0.9 already in use") })

		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		failed := h.col.waitState(t, "web", m, engine.StateFailed, 1)

		for _, want := range []string{"restore ip on " + testNode, "address 10.0.0.9 already in use"} {
			if !strings.Contains(failed.Error, want) {
				t.Errorf("failed report error %q does not contain %q", failed.Error, want)
			}
		}

		calls := h.fk.journal()
		ipSeq := seqOf(t, calls, "web", "ip", kit.OpRestore, 0)
		var restored []string // restored successfully before ip failed
		for _, c := range calls[:ipSeq] {
			if c.Hier == "web" && c.Op == kit.OpRestore {
				restored = append(restored, c.Res)
			}
		}
		if len(restored) == 0 {
			t.Fatalf("ip (which depends on disk) was restored first:\n%s", formatCalls(calls))
		}
		if n := count(calls, "web", "ip", kit.OpRestore); n != 1 {
			t.Errorf("ip restored %d times, want 1", n)
		}
		if n := count(calls, "web", "app", kit.OpRestore); n != 0 {
			t.Errorf("app restored %d times after its dependency ip failed", n)
		}
		removes := ops(after(calls, ipSeq), "web", kit.OpRemove)
		for _, r := range restored {
			if count(after(calls, ipSeq), "web", r, kit.OpRemove) != 1 {
				t.Errorf("%s was restored before the failure but not removed once after it; removes %v", r, removes)
			}
		}
		checkParentsFirst(t, hs, removes)
		if rm := ops(calls[:ipSeq], "web", kit.OpRemove); len(rm) != 0 {
			t.Errorf("removes %v before the failing restore", rm)
		}
		reps := h.col.since("web", m)
		if tr := transitions(reps); !equal(tr, []string{engine.StateRestoring, engine.StateRemoving, engine.StateOffline, engine.StateFailed}) {
			t.Errorf("state transitions %v, want [restoring removing offline failed]\n%s", tr, formatReports(reps))
		}
		if cur := h.eng.Reports()["web"]; cur.State != engine.StateFailed || cur.Epoch != 1 {
			t.Errorf("Reports()[web] = %+v; want failed at epoch 1", cur)
		}

		// The same epoch is not retried, however often the cluster repeats it.
		restores := len(ops(h.fk.journal(), "web", kit.OpRestore))
		mm := h.col.mark()
		for range 3 {
			h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
			h.ticks(t, 2)
		}
		if n := len(ops(h.fk.journal(), "web", kit.OpRestore)); n != restores {
			t.Errorf("failed epoch retried: %d restores, had %d", n, restores)
		}
		if reps := h.col.since("web", mm); len(reps) != 0 {
			t.Errorf("reports after the failure for the same epoch:\n%s", formatReports(reps))
		}

		// A new epoch is tried again.
		h.fk.script("web", "ip", func(s *script) { s.restoreErr = nil })
		m = h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 2, InService: true})
		on := h.col.waitState(t, "web", m, engine.StateOnline, 2)
		checkAll(t, "online report", on.Resources, hs, engine.StateOnline)
		calls = h.fk.journal()
		if n := count(calls, "web", "ip", kit.OpRestore); n != 2 {
			t.Errorf("ip restored %d times, want 2", n)
		}
		if n := count(calls, "web", "app", kit.OpRestore); n != 1 {
			t.Errorf("app restored %d times, want 1", n)
		}
	})
}

func TestQuickCheckLocalRecoveryThenFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 2)
		h.fk.script("svc", "app", func(s *script) { s.checks = []kit.Health{kit.Failed, kit.Failed, kit.Failed} })

		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		failed := h.col.waitState(t, "svc", m, engine.StateFailed, 1)

		calls := h.fk.journal()
		got := resOps(calls, "svc", "app", opNew, kit.OpRestore)
		want := []string{kit.OpQuickCheck, kit.OpRecover, kit.OpQuickCheck, kit.OpRecover, kit.OpQuickCheck, kit.OpRemove}
		if !equal(got, want) {
			t.Errorf("app operations after restore %v, want %v\n%s", got, want, formatCalls(calls))
		}
		if n := count(calls, "svc", "ip", kit.OpRecover); n != 0 {
			t.Errorf("ip (healthy) recovered %d times", n)
		}
		removes := ops(calls, "svc", kit.OpRemove)
		if !equal(removes, []string{"app", "ip"}) {
			t.Errorf("removes %v, want [app ip]", removes)
		}
		for _, want := range []string{"app", testNode, "2 local recovery attempts"} {
			if !strings.Contains(failed.Error, want) {
				t.Errorf("failed report error %q does not contain %q", failed.Error, want)
			}
		}
		reps := h.col.since("svc", m)
		if tr := transitions(reps); !equal(tr, []string{engine.StateRestoring, engine.StateOnline, engine.StateRemoving, engine.StateOffline, engine.StateFailed}) {
			t.Errorf("state transitions %v, want [restoring online removing offline failed]\n%s", tr, formatReports(reps))
		}

		checkInterval(t, calls, "svc", "app")

		var failover, recoverEnds int
		for _, e := range h.ev.Since(0) {
			if e.Hierarchy != "svc" {
				continue
			}
			if e.Kind == "failover" && e.Resource == "app" {
				failover++
			}
			if e.Kind == "action" && e.Action == kit.OpRecover && e.Phase == "end" && e.Resource == "app" {
				recoverEnds++
			}
		}
		if failover != 1 || recoverEnds != 2 {
			t.Errorf("events: %d failover and %d recover ends for app, want 1 and 2", failover, recoverEnds)
		}

		// The failed epoch stays failed: no more checks or restores.
		n := len(h.fk.journal())
		h.ticks(t, 3)
		for _, c := range h.fk.journal()[n:] {
			if c.Hier == "svc" {
				t.Errorf("call after the hierarchy failed: %v", c)
			}
		}
	})
}

func TestLocalRecoveryZeroFailsOverAtFirstFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 0)
		h.fk.script("svc", "app", func(s *script) { s.checks = []kit.Health{kit.Failed} })

		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 5, InService: true})
		failed := h.col.waitState(t, "svc", m, engine.StateFailed, 5)

		calls := h.fk.journal()
		if got, want := resOps(calls, "svc", "app", opNew, kit.OpRestore), []string{kit.OpQuickCheck, kit.OpRemove}; !equal(got, want) {
			t.Errorf("app operations after restore %v, want %v", got, want)
		}
		if rec := ops(calls, "svc", kit.OpRecover); len(rec) != 0 {
			t.Errorf("recoveries %v with local_recovery 0", rec)
		}
		if removes := ops(calls, "svc", kit.OpRemove); !equal(removes, []string{"app", "ip"}) {
			t.Errorf("removes %v, want [app ip]", removes)
		}
		for _, want := range []string{"resource app on " + testNode, "0 local recovery attempts"} {
			if !strings.Contains(failed.Error, want) {
				t.Errorf("failed report error %q does not contain %q", failed.Error, want)
			}
		}
	})
}

func TestUnknownQuickCheckKeepsHierarchyOnline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)
		h.fk.script("svc", "app", func(s *script) { s.checkDefault = kit.Unknown })

		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		calls := h.fk.waitFor(t, "6 unknown quickchecks of app", func(c []call) bool {
			return count(c, "svc", "app", kit.OpQuickCheck) >= 6
		})

		checkInterval(t, calls, "svc", "app")
		checkInterval(t, calls, "svc", "ip")
		if rec := ops(calls, "svc", kit.OpRecover); len(rec) != 0 {
			t.Errorf("recoveries %v after unknown checks", rec)
		}
		if rm := ops(calls, "svc", kit.OpRemove); len(rm) != 0 {
			t.Errorf("removes %v after unknown checks", rm)
		}
		reps := h.col.since("svc", m)
		if tr := transitions(reps); !equal(tr, []string{engine.StateRestoring, engine.StateOnline}) {
			t.Errorf("state transitions %v, want [restoring online]\n%s", tr, formatReports(reps))
		}
		if cur := h.eng.Reports()["svc"]; cur.State != engine.StateOnline {
			t.Errorf("Reports()[svc] = %+v; want online", cur)
		}
		unknown := 0
		for _, e := range h.ev.Since(0) {
			if e.Hierarchy == "svc" && e.Action == kit.OpQuickCheck && e.Message == "unknown" {
				unknown++
			}
		}
		if unknown < 5 {
			t.Errorf("%d unknown quickcheck events, want at least 5", unknown)
		}
	})
}

func TestHealthyCheckResetsRecoveryCounter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 2)
		h.fk.script("svc", "app", func(s *script) {
			s.checks = []kit.Health{kit.Failed, kit.Failed, kit.Healthy, kit.Failed, kit.Failed, kit.Healthy}
		})

		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		calls := h.fk.waitFor(t, "8 quickchecks of app", func(c []call) bool {
			return count(c, "svc", "app", kit.OpQuickCheck) >= 8
		})

		if n := count(calls, "svc", "app", kit.OpRecover); n != 4 {
			t.Errorf("app recovered %d times, want 4 (two per run of failures)\n%s", n, formatCalls(calls))
		}
		if rm := ops(calls, "svc", kit.OpRemove); len(rm) != 0 {
			t.Errorf("removes %v: the healthy check did not reset the recovery counter", rm)
		}
		reps := h.col.since("svc", m)
		if tr := transitions(reps); !equal(tr, []string{engine.StateRestoring, engine.StateOnline}) {
			t.Errorf("state transitions %v, want [restoring online]\n%s", tr, formatReports(reps))
		}
	})
}

// chain: r3 depends on r2, which depends on r1.
func chain(name string) spec.Hierarchy {
	return hier(name, res("r3", 1, "r2"), res("r2", 1, "r1"), res("r1", 1))
}

// interrupt brings chain "ch" in service, blocks the restore of r2 and,
// meanwhile, takes the hierarchy out of service at epoch 2. It returns the
// report mark taken before the update and the release function.
func interrupt(t *testing.T, h *harness) (int, func()) {
	t.Helper()
	hs := chain("ch")
	block := make(chan struct{})
	h.fk.script("ch", "r2", func(s *script) { s.restoreBlock = block })
	h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
	h.fk.waitFor(t, "restore of r2 to start", func(c []call) bool {
		return count(c, "ch", "r2", kit.OpRestore) == 1
	})
	m := h.col.mark()
	h.update(engine.Desired{Spec: hs, Epoch: 2, InService: false})
	return m, func() { close(block) }
}

func TestInterruptedRestoreStopsAndRemoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := chain("ch")
		m, release := interrupt(t, h)
		before := len(h.fk.journal())
		release()

		off := h.col.waitFor(t, "ch", m, "offline", func(r engine.Report) bool { return r.State == engine.StateOffline })
		checkAll(t, "offline report", off.Resources, hs, engine.StateOffline)
		h.ticks(t, 3) // let any wrongly continued restore show up

		calls := h.fk.journal()
		if n := count(calls, "ch", "r3", kit.OpRestore); n != 0 {
			t.Errorf("r3 restored %d times after the hierarchy was taken out of service", n)
		}
		if n := count(calls, "ch", "r2", opRestoreAborted); n != 0 {
			t.Errorf("the blocked restore was cancelled instead of finishing")
		}
		removes := ops(calls[before:], "ch", kit.OpRemove)
		for _, r := range []string{"r1", "r2"} {
			if count(calls[before:], "ch", r, kit.OpRemove) != 1 {
				t.Errorf("restored %s not removed once; removes %v", r, removes)
			}
		}
		checkParentsFirst(t, hs, removes)
		if n := len(ops(calls, "ch", kit.OpRestore)); n != 2 {
			t.Errorf("%d restores, want 2 (r1, r2)\n%s", n, formatCalls(calls))
		}
		if cur := h.eng.Reports()["ch"]; cur.State != engine.StateOffline {
			t.Errorf("Reports()[ch] = %+v; want offline", cur)
		}
	})
}

func TestRegressionInterruptedRestoreReportsStaleEpoch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		m, release := interrupt(t, h)
		release()
		h.col.waitStateWithin(t, "ch", m, engine.StateOffline, 2, 2*time.Second)
	})
}

func TestFrozenLeavesEverythingAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)

		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 3, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 3)
		h.fk.waitFor(t, "a quickcheck of app", func(c []call) bool { return count(c, "svc", "app", kit.OpQuickCheck) >= 1 })

		// Every check would fail from now on: a frozen hierarchy must not notice.
		h.fk.script("svc", "app", func(s *script) { s.checkDefault = kit.Failed })
		m = h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 3, Frozen: true})
		fr := h.col.waitState(t, "svc", m, engine.StateFrozen, 3)
		checkAll(t, "frozen report", fr.Resources, hs, engine.StateFrozen)
		if fr.Error == "" {
			t.Errorf("frozen report gives no reason")
		}

		n := len(h.fk.journal())
		h.ticks(t, 5)
		for _, c := range h.fk.journal()[n:] {
			if c.Hier == "svc" {
				t.Errorf("call while frozen: %v", c)
			}
		}
		if rm := ops(h.fk.journal(), "svc", kit.OpRemove); len(rm) != 0 {
			t.Errorf("removes %v while frozen", rm)
		}
		if cur := h.eng.Reports()["svc"]; cur.State != engine.StateFrozen || cur.Epoch != 3 {
			t.Errorf("Reports()[svc] = %+v; want frozen at epoch 3", cur)
		}
		if tr := transitions(h.col.since("svc", m)); !equal(tr, []string{engine.StateFrozen}) {
			t.Errorf("state transitions while frozen %v, want [frozen]", tr)
		}

		// The lease is back: checks (and so recovery) resume.
		h.fk.script("svc", "app", func(s *script) { s.checkDefault = kit.Healthy })
		h.update(engine.Desired{Spec: hs, Epoch: 3, InService: true})
		h.fk.waitFor(t, "quickchecks to resume", func(c []call) bool {
			return count(c[n:], "svc", "app", kit.OpQuickCheck) >= 2
		})
	})
}

func TestUnfrozenHierarchyReportsOnlineAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)
		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 3, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 3)
		h.update(engine.Desired{Spec: hs, Epoch: 3, Frozen: true})
		h.col.waitState(t, "svc", m, engine.StateFrozen, 3)
		m = h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 3, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 3)
		if cur := h.eng.Reports()["svc"]; cur.State != engine.StateOnline || cur.Error != "" {
			t.Errorf("Reports()[svc] = %+v; want online without error", cur)
		}
	})
}

func TestNewEpochWhileOnlineIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)
		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		h.update(engine.Desired{Spec: hs, Epoch: 2, InService: true})
		on := h.col.waitState(t, "svc", m, engine.StateOnline, 2)
		checkAll(t, "online report at epoch 2", on.Resources, hs, engine.StateOnline)
		if rs := ops(h.fk.journal(), "svc", kit.OpRestore); len(rs) != 2 {
			t.Errorf("restores %v: an unchanged spec at a new epoch was restored again", rs)
		}
		if rm := ops(h.fk.journal(), "svc", kit.OpRemove); len(rm) != 0 {
			t.Errorf("removes %v at the new epoch", rm)
		}
	})
}

func TestResourceDroppedFromSpecIsRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		full := hier("svc", res("app", 1, "ip"), res("ip", 1), res("extra", 1))
		m := h.col.mark()
		h.update(engine.Desired{Spec: full, Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)

		h.update(engine.Desired{Spec: pair("svc", 1), Epoch: 2, InService: true})
		n := count(h.fk.journal(), "svc", "app", kit.OpQuickCheck)
		calls := h.fk.waitFor(t, "3 more checks of app under the new spec", func(c []call) bool {
			return count(c, "svc", "app", kit.OpQuickCheck) >= n+3
		})
		if count(calls, "svc", "extra", kit.OpRemove) != 1 {
			t.Errorf("extra, dropped from the spec while in service, was not removed once:\n%s", formatCalls(calls))
		}
		for _, r := range []string{"app", "ip"} {
			if n := count(calls, "svc", r, kit.OpRemove); n != 0 {
				t.Errorf("%s, kept in the spec, removed %d times", r, n)
			}
		}
		if cur := h.eng.Reports()["svc"]; cur.State != engine.StateOnline || cur.Epoch != 2 || len(cur.Resources) != 2 {
			t.Errorf("Reports()[svc] = %+v; want online at epoch 2 with app and ip only", cur)
		}
		// Once the hierarchy leaves this node, extra must not be left behind.
		m = h.col.mark()
		h.update(engine.Desired{Spec: pair("svc", 1), Epoch: 3, InService: false})
		h.col.waitState(t, "svc", m, engine.StateOffline, 3)
		if n := count(h.fk.journal(), "svc", "extra", kit.OpRemove); n != 1 {
			t.Errorf("extra removed %d times in all, want 1", n)
		}
	})
}

func TestRegressionEqualSpecRecreatesInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		m := h.col.mark()
		h.update(engine.Desired{Spec: pair("svc", 1), Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		news := len(ops(h.fk.journal(), "svc", opNew))

		h.update(engine.Desired{Spec: pair("svc", 1), Epoch: 1, InService: true}) // equal, fresh pointers
		n := count(h.fk.journal(), "svc", "app", kit.OpQuickCheck)
		calls := h.fk.waitFor(t, "2 more checks of app", func(c []call) bool {
			return count(c, "svc", "app", kit.OpQuickCheck) >= n+2
		})
		if got := len(ops(calls, "svc", opNew)); got != news {
			t.Errorf("kit.New called %d times for an unchanged spec, had %d", got, news)
		}
	})
}

func TestDroppedHierarchyRemovedAndInitialCleanup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h1, h2 := diamond("one"), diamond("two")

		m := h.col.mark()
		h.update(
			engine.Desired{Spec: h1, Epoch: 3, InService: true},
			engine.Desired{Spec: h2, Epoch: 4, InService: false},
		)
		h.col.waitState(t, "one", m, engine.StateOnline, 3)
		off2 := h.col.waitState(t, "two", m, engine.StateOffline, 4)
		checkAll(t, "two offline report", off2.Resources, h2, engine.StateOffline)

		calls := h.fk.journal()
		if rs := ops(calls, "two", kit.OpRestore); len(rs) != 0 {
			t.Errorf("two (not in service) restored: %v", rs)
		}
		removes := ops(calls, "two", kit.OpRemove)
		if len(removes) != len(h2.Resources) {
			t.Errorf("initial cleanup removes %v, want every resource once", removes)
		}
		checkParentsFirst(t, h2, removes)
		if tr := transitions(h.col.since("two", m)); !equal(tr, []string{engine.StateRemoving, engine.StateOffline}) {
			t.Errorf("two transitions %v, want [removing offline]", tr)
		}

		reps := h.eng.Reports()
		if r := reps["one"]; r.State != engine.StateOnline || r.Epoch != 3 {
			t.Errorf("Reports()[one] = %+v; want online at epoch 3", r)
		} else {
			checkAll(t, "Reports()[one]", r.Resources, h1, engine.StateOnline)
		}
		if r := reps["two"]; r.State != engine.StateOffline || r.Epoch != 4 {
			t.Errorf("Reports()[two] = %+v; want offline at epoch 4", r)
		}

		// The cleanup happens once, not on every update.
		for range 3 {
			h.update(
				engine.Desired{Spec: h1, Epoch: 3, InService: true},
				engine.Desired{Spec: h2, Epoch: 4, InService: false},
			)
			h.ticks(t, 1)
		}
		if n := len(ops(h.fk.journal(), "two", kit.OpRemove)); n != len(removes) {
			t.Errorf("cleanup repeated: %d removes, had %d", n, len(removes))
		}

		// Drop "one" from the desired state: it is removed here.
		m = h.col.mark()
		before := len(h.fk.journal())
		h.update(engine.Desired{Spec: h2, Epoch: 4, InService: false})
		off1 := h.col.waitFor(t, "one", m, "offline", func(r engine.Report) bool { return r.State == engine.StateOffline })
		checkAll(t, "one offline report", off1.Resources, h1, engine.StateOffline)
		removes = ops(h.fk.journal()[before:], "one", kit.OpRemove)
		if len(removes) != len(h1.Resources) {
			t.Errorf("removes of dropped hierarchy %v, want every resource once", removes)
		}
		checkParentsFirst(t, h1, removes)

		reps = h.eng.Reports()
		if r, ok := reps["one"]; ok {
			t.Errorf("dropped and removed hierarchy still in Reports(): %+v", r)
		}
		if r := reps["two"]; r.State != engine.StateOffline {
			t.Errorf("Reports()[two] = %+v; want offline", r)
		}
	})
}

func TestReportsAndPromptClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)
		slow := hier("slow", res("r1", 1))
		block := make(chan struct{})
		defer close(block)
		h.fk.script("slow", "r1", func(s *script) { s.restoreBlock = block })

		m := h.col.mark()
		h.update(
			engine.Desired{Spec: hs, Epoch: 1, InService: true},
			engine.Desired{Spec: slow, Epoch: 7, InService: true},
		)
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		h.fk.waitFor(t, "the slow restore to start", func(c []call) bool { return count(c, "slow", "r1", kit.OpRestore) == 1 })
		h.fk.waitFor(t, "a quickcheck of svc", func(c []call) bool { return count(c, "svc", "app", kit.OpQuickCheck) >= 1 })

		reps := h.eng.Reports()
		if r := reps["svc"]; r.State != engine.StateOnline || r.Epoch != 1 || r.Resources["app"] != engine.StateOnline {
			t.Errorf("Reports()[svc] = %+v; want online at epoch 1", r)
		}
		if r := reps["slow"]; r.State != engine.StateRestoring || r.Epoch != 7 || r.Resources["r1"] != engine.StateOffline {
			t.Errorf("Reports()[slow] = %+v; want restoring at epoch 7 with r1 offline", r)
		}
		if r := reps[clockHier]; r.State != engine.StateOnline {
			t.Errorf("Reports()[clock] = %+v; want online", r)
		}
		// Reports returns copies.
		reps["svc"].Resources["app"] = "tampered"
		if r := h.eng.Reports()["svc"]; r.Resources["app"] != engine.StateOnline {
			t.Errorf("Reports() shares its resource map with the engine")
		}

		start := time.Now()
		done := make(chan struct{})
		go func() {
			h.eng.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Fatalf("Close did not return within %v", waitTimeout)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Close took %v", d)
		}
		calls := h.fk.journal()
		live := 0
		for _, c := range calls {
			if c.Hier == "slow" && c.Op == kit.OpRestore && !c.Cancelled {
				live++
			}
		}
		if n := count(calls, "slow", "r1", opRestoreAborted); n < 1 || live != 1 {
			t.Errorf("blocked restore not cancelled by Close (%d restores, %d aborts)\n%s", live, n, formatCalls(calls))
		}
		for _, hn := range []string{"svc", "slow"} {
			if rm := ops(calls, hn, kit.OpRemove); len(rm) != 0 {
				t.Errorf("Close removed %s resources %v", hn, rm)
			}
		}
		for _, r := range h.col.since("slow", m) {
			if r.State != engine.StateRestoring {
				t.Errorf("slow reported %s around Close", r.State)
			}
		}
	})
}

func TestActionEventsRecorded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)
		const delay = 3 * time.Millisecond
		h.fk.script("svc", "ip", func(s *script) { s.restoreDelay = delay })
		h.fk.script("svc", "app", func(s *script) { s.removeErr = errors.New("device busy") })

		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		h.update(engine.Desired{Spec: hs, Epoch: 2, InService: false})
		off := h.col.waitState(t, "svc", m, engine.StateOffline, 2)
		for _, want := range []string{"remove app on " + testNode, "device busy"} {
			if !strings.Contains(off.Error, want) {
				t.Errorf("offline report error %q does not contain %q", off.Error, want)
			}
		}
		if n := count(h.fk.journal(), "svc", "ip", kit.OpRemove); n != 1 {
			t.Errorf("ip removed %d times after app's remove failed, want 1", n)
		}

		type key struct{ res, action string }
		starts, ends := map[key][]events.Event{}, map[key][]events.Event{}
		for _, e := range h.ev.Since(0) {
			if e.Kind != "action" || e.Hierarchy != "svc" {
				continue
			}
			if e.Node != testNode {
				t.Errorf("event %+v has node %q", e, e.Node)
			}
			k := key{e.Resource, e.Action}
			switch e.Phase {
			case "start":
				starts[k] = append(starts[k], e)
			case "end":
				ends[k] = append(ends[k], e)
			}
		}
		for _, tc := range []struct {
			res, action string
			epoch       uint64
			minDur      time.Duration
			err         string
		}{
			{"ip", kit.OpRestore, 1, delay, ""},
			{"app", kit.OpRestore, 1, 0, ""},
			{"app", kit.OpRemove, 2, 0, "device busy"},
			{"ip", kit.OpRemove, 2, 0, ""},
		} {
			k := key{tc.res, tc.action}
			if len(starts[k]) != 1 || len(ends[k]) != 1 {
				t.Errorf("%s %s: %d start and %d end events, want 1 each", tc.action, tc.res, len(starts[k]), len(ends[k]))
				continue
			}
			s, e := starts[k][0], ends[k][0]
			if s.Seq >= e.Seq {
				t.Errorf("%s %s: start event #%d not before end #%d", tc.action, tc.res, s.Seq, e.Seq)
			}
			if s.Epoch != tc.epoch || e.Epoch != tc.epoch {
				t.Errorf("%s %s: epochs %d/%d, want %d", tc.action, tc.res, s.Epoch, e.Epoch, tc.epoch)
			}
			if s.Duration != "" {
				t.Errorf("%s %s: start event has duration %q", tc.action, tc.res, s.Duration)
			}
			d, err := time.ParseDuration(e.Duration)
			if err != nil {
				t.Errorf("%s %s: end event duration %q: %v", tc.action, tc.res, e.Duration, err)
			} else if d < tc.minDur {
				t.Errorf("%s %s: end event duration %v, want at least %v", tc.action, tc.res, d, tc.minDur)
			}
			if (tc.err == "") != (e.Error == "") || !strings.Contains(e.Error, tc.err) {
				t.Errorf("%s %s: end event error %q, want %q", tc.action, tc.res, e.Error, tc.err)
			}
		}
		// Children first in the history too: ip's restore ended before app's began.
		if s, e := starts[key{"app", kit.OpRestore}], ends[key{"ip", kit.OpRestore}]; len(s) == 1 && len(e) == 1 && e[0].Seq > s[0].Seq {
			t.Errorf("app restore started (#%d) before ip restore ended (#%d)", s[0].Seq, e[0].Seq)
		}
	})
}

func TestRegressionCloseCanStillCallTheKit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for i := range 20 {
			h := newHarness(t)
			_, release := interrupt(t, h) // r2's restore blocked, out of service pending
			h.eng.Close()
			release()
			calls := h.fk.journal()
			for _, c := range calls {
				// Only "ch": another worker may legitimately be in the middle
				// of a step when the context is cancelled.
				if c.Hier == "ch" && c.Cancelled && c.Op != opRestoreAborted {
					t.Fatalf("attempt %d: kit called after Close: %v\n%s", i, c, formatCalls(calls))
				}
			}
			if rm := ops(calls, "ch", kit.OpRemove); len(rm) != 0 {
				t.Fatalf("attempt %d: Close removed %v", i, rm)
			}
		}
	})
}

func TestRegressionNewEpochWhileOfflineNotReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)
		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 5, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 5)
		h.update(engine.Desired{Spec: hs, Epoch: 6, InService: false}) // move requested
		h.col.waitState(t, "svc", m, engine.StateOffline, 6)
		h.update(engine.Desired{Spec: hs, Epoch: 7, InService: false}) // delete requested
		h.col.waitStateWithin(t, "svc", m, engine.StateOffline, 7, 2*time.Second)
	})
}

func TestRegressionCloseDuringFailingCheckFailsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 0)
		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		h.fk.script("svc", "app", func(s *script) { s.checkUntilDone = true })
		n := count(h.fk.journal(), "svc", "app", kit.OpQuickCheck)
		h.fk.waitFor(t, "a check of app in flight", func(c []call) bool {
			return count(c, "svc", "app", kit.OpQuickCheck) > n
		})
		h.eng.Close()
		if rm := ops(h.fk.journal(), "svc", kit.OpRemove); len(rm) != 0 {
			t.Errorf("Close removed %v", rm)
		}
		for _, r := range h.col.since("svc", m) {
			if r.State != engine.StateRestoring && r.State != engine.StateOnline {
				t.Errorf("reported %s at epoch %d during Close: %s", r.State, r.Epoch, r.Error)
			}
		}
	})
}

// Under maintenance the engine checks every resource and reports what it
// finds, and restores, removes and recovers nothing, even when a check
// fails. When maintenance ends with the hierarchy wanted here, resources
// found healthy are adopted: only the others are restored.
func TestUnmanagedChecksOnlyThenAdopts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)
		// A restarted agent under maintenance: the service runs (every
		// check healthy), the engine has never restored it.
		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 3, Unmanaged: true})
		r := h.col.waitFor(t, "svc", m, "unmanaged with both resources online", func(r engine.Report) bool {
			return r.State == engine.StateUnmanaged && r.Running()
		})
		checkAll(t, "unmanaged report", r.Resources, hs, engine.StateOnline)

		// app stops by itself: reported, not recovered.
		h.fk.script("svc", "app", func(s *script) { s.checkDefault = kit.Failed })
		h.col.waitFor(t, "svc", m, "app offline", func(r engine.Report) bool {
			return r.State == engine.StateUnmanaged && r.Resources["app"] == engine.StateOffline && r.Resources["ip"] == engine.StateOnline
		})
		h.ticks(t, 5)
		for _, op := range []string{kit.OpRestore, kit.OpRemove, kit.OpRecover} {
			if got := ops(h.fk.journal(), "svc", op); len(got) != 0 {
				t.Errorf("%s under maintenance: %v", op, got)
			}
		}
		// The same while the cluster wants it in service here.
		h.update(engine.Desired{Spec: hs, Epoch: 3, InService: true, Unmanaged: true})
		h.ticks(t, 5)
		if got := ops(h.fk.journal(), "svc", kit.OpRecover); len(got) != 0 {
			t.Errorf("recover under maintenance while wanted here: %v", got)
		}

		// Maintenance off, adopted here at a new epoch: ip is up and stays,
		// app alone is restored. It is up again only once restored: made
		// healthy before the update, a check run meanwhile found it up and
		// it was adopted with no restore (found by CI, 2 runs in 120).
		h.fk.script("svc", "app", func(s *script) { s.upAfterRestore = true })
		m = h.col.mark()
		n := len(h.fk.journal())
		h.update(engine.Desired{Spec: hs, Epoch: 4, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 4)
		calls := h.fk.journal()[n:]
		if got := count(calls, "svc", "ip", kit.OpRestore); got != 0 {
			t.Errorf("ip restored %d times though its check found it up", got)
		}
		if got := count(calls, "svc", "app", kit.OpRestore); got != 1 {
			t.Errorf("app restored %d times, want 1", got)
		}
	})
}

// A service found running whole is adopted without any restore; one
// found running where the cluster does not want it is removed once
// maintenance ends.
func TestUnmanagedAdoptOrRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		a, b := pair("a", 1), pair("b", 1)
		m := h.col.mark()
		h.update(engine.Desired{Spec: a, Epoch: 2, Unmanaged: true}, engine.Desired{Spec: b, Epoch: 2, Unmanaged: true})
		for _, x := range []string{"a", "b"} {
			h.col.waitFor(t, x, m, "running", func(r engine.Report) bool { return r.State == engine.StateUnmanaged && r.Running() })
		}
		m = h.col.mark()
		h.update(engine.Desired{Spec: a, Epoch: 3, InService: true}, engine.Desired{Spec: b, Epoch: 3})
		h.col.waitState(t, "a", m, engine.StateOnline, 3)
		h.col.waitState(t, "b", m, engine.StateOffline, 3)
		if got := ops(h.fk.journal(), "a", kit.OpRestore); len(got) != 0 {
			t.Errorf("a restored though it ran whole: %v", got)
		}
		if got := ops(h.fk.journal(), "b", kit.OpRemove); len(got) != 2 {
			t.Errorf("b removes %v, want both resources", got)
		}
	})
}
