package engine_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// fakeLease is this node's lease as the engine sees it through
// Config.Authority: valid or not, and every context it handed out ends when
// it expires.
type fakeLease struct {
	mu      sync.Mutex
	valid   bool
	gens    []uint64
	cancels []context.CancelCauseFunc
}

var errExpired = errors.New("lease expired (test)")

func (l *fakeLease) authority(ctx context.Context, gen uint64) (context.Context, context.CancelFunc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gens = append(l.gens, gen)
	if !l.valid {
		return nil, nil, errExpired
	}
	c, cancel := context.WithCancelCause(ctx)
	l.cancels = append(l.cancels, cancel)
	return c, func() { cancel(context.Canceled) }, nil
}

func (l *fakeLease) set(valid bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.valid = valid
	if !valid {
		for _, c := range l.cancels {
			c(errExpired)
		}
		l.cancels = nil
	}
}

func newLeasedHarness(t *testing.T) (*harness, *fakeLease) {
	l := &fakeLease{valid: true}
	return newHarnessWith(t, func(c *engine.Config) { c.Authority = l.authority }), l
}

// An owner paused inside its monitor interval (its quickcheck hangs) whose
// lease runs out meanwhile must not recover when it resumes, even though
// the check it resumes with says failed: by then the hierarchy may run
// elsewhere.
func TestNoRecoverAfterLeaseExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, lease := newLeasedHarness(t)
		hs := pair("svc", 2)
		resume := make(chan struct{})
		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, Gen: 7, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		h.fk.script("svc", "app", func(s *script) {
			s.checkBlock = resume
			s.checks = []kit.Health{kit.Failed}
		})
		// Wait until the owner is inside the blocked check ...
		n := count(h.fk.journal(), "svc", "app", kit.OpQuickCheck)
		h.fk.waitFor(t, "app's check to start", func(c []call) bool {
			return count(c, "svc", "app", kit.OpQuickCheck) > n
		})
		// ... let its lease run out (the clock hierarchy in service first: it
		// is restored under the same lease), then resume it with a failed check.
		h.ticks(t, 1)
		lease.set(false)
		close(resume)
		waitEvent(t, h, "the skipped recover", func() bool { return skipped(h, "svc", "app", kit.OpRecover) })
		h.ticks(t, 3)
		if got := count(h.fk.journal(), "svc", "app", kit.OpRecover); got != 0 {
			t.Fatalf("recover ran %d times after the lease expired:\n%s", got, formatCalls(h.fk.journal()))
		}
		lease.mu.Lock()
		defer lease.mu.Unlock()
		if !slices.Contains(lease.gens, 7) {
			t.Fatalf("authority asked for generations %v, never for the assignment's 7", lease.gens)
		}
	})
}

// A restore in progress when the lease runs out is cut off: it is not the
// resource's failure (no failed report, no failure mark), nothing is
// restored while the lease is gone, and the restore goes on once the lease
// is back.
func TestRestoreCutOffAtLeaseEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, lease := newLeasedHarness(t)
		hs := pair("svc", 0)
		block := make(chan struct{})
		h.fk.script("svc", "app", func(s *script) { s.restoreBlock = block })
		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, Gen: 3, InService: true})
		h.fk.waitFor(t, "app's restore to start", func(c []call) bool { return count(c, "svc", "app", kit.OpRestore) == 1 })
		// The clock hierarchy is restored under the same lease: it must be in
		// service (ticking) before the lease goes, or no tick ever comes.
		h.ticks(t, 1)
		lease.set(false)
		h.fk.waitFor(t, "the restore to be cut off", func(c []call) bool { return count(c, "svc", "app", opRestoreAborted) == 1 })
		r := h.col.waitFor(t, "svc", m, "a restoring report naming the lease", func(r engine.Report) bool {
			return r.State == engine.StateRestoring && strings.Contains(r.Error, "lease")
		})
		if !strings.Contains(r.Error, errExpired.Error()) {
			t.Errorf("report error %q does not name the cause", r.Error)
		}
		h.ticks(t, 3)
		calls := h.fk.journal()
		if got := count(calls, "svc", "app", kit.OpRestore); got != 1 {
			t.Fatalf("app restored %d times while the lease was gone:\n%s", got, formatCalls(calls))
		}
		for _, rep := range h.col.since("svc", m) {
			if rep.State == engine.StateFailed {
				t.Fatalf("a lapsed lease was reported as a failed hierarchy: %+v", rep)
			}
		}
		close(block)
		lease.set(true)
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
	})
}

// waitEvent waits until cond holds for the event history.
func waitEvent(t *testing.T, h *harness, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		ch := h.ev.Wait()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// skipped reports whether the events hold a skipped action.
func skipped(h *harness, hier, res, action string) bool {
	for _, e := range h.ev.Since(0) {
		if e.Hierarchy == hier && e.Resource == res && e.Action == action && e.Phase == "skipped" {
			return true
		}
	}
	return false
}

// A check that hangs (an API that no longer answers) does not hold up the
// removal when the hierarchy is no longer wanted here, and its cut-short
// answer is not taken for a failure.
func TestHangingCheckInterruptedByRemoval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		hs := pair("svc", 1)
		m := h.col.mark()
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: true})
		h.col.waitState(t, "svc", m, engine.StateOnline, 1)
		h.fk.script("svc", "app", func(s *script) { s.checkUntilDone = true })
		n := count(h.fk.journal(), "svc", "app", kit.OpQuickCheck)
		h.fk.waitFor(t, "the hanging check to start", func(c []call) bool {
			return count(c, "svc", "app", kit.OpQuickCheck) > n
		})
		h.update(engine.Desired{Spec: hs, Epoch: 1, InService: false})
		h.col.waitState(t, "svc", m, engine.StateOffline, 1)
		calls := h.fk.journal()
		if got := count(calls, "svc", "app", kit.OpRecover); got != 0 {
			t.Errorf("the interrupted check led to %d recoveries", got)
		}
		for _, r := range h.col.since("svc", m) {
			if r.State == engine.StateFailed {
				t.Errorf("the interrupted check was reported as a failure: %+v", r)
			}
		}
	})
}
