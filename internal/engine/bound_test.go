package engine_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// restoring lists the hierarchies among names whose restore has started.
func restoring(calls []call, names []string) []string {
	var out []string
	for _, n := range names {
		if count(calls, n, "r", kit.OpRestore) > 0 {
			out = append(out, n)
		}
	}
	return out
}

func TestRestoresBoundedPerNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit, n = 2, 5
		h := newHarnessWith(t, func(c *engine.Config) { c.MaxRestores = limit })
		blocks := map[string]chan struct{}{}
		var names []string
		var ds []engine.Desired
		for i := range n {
			name := fmt.Sprintf("h%d", i)
			names = append(names, name)
			b := make(chan struct{})
			blocks[name] = b
			h.fk.script(name, "r", func(s *script) { s.restoreBlock = b })
			ds = append(ds, engine.Desired{Spec: hier(name, res("r", 1)), Epoch: 1, InService: true})
		}
		m := h.col.mark()
		h.update(ds...)
		synctest.Wait()
		if got := restoring(h.fk.journal(), names); len(got) != limit {
			t.Fatalf("restores started at once: %v, want %d", got, limit)
		}
		// Each hierarchy waiting its turn says it is being restored.
		for _, name := range names {
			h.col.waitState(t, name, m, engine.StateRestoring, 1)
		}
		done := map[string]bool{}
		for len(done) < n {
			var next string
			for _, name := range restoring(h.fk.journal(), names) {
				if !done[name] {
					next = name
					break
				}
			}
			if next == "" {
				t.Fatalf("no restore running with %d of %d done: the waiting ones never got a turn", len(done), n)
			}
			close(blocks[next])
			done[next] = true
			h.col.waitState(t, next, m, engine.StateOnline, 1)
			synctest.Wait()
			running := len(restoring(h.fk.journal(), names)) - len(done)
			if want := min(limit, n-len(done)); running != want {
				t.Fatalf("after %d restores ended, %d running, want %d", len(done), running, want)
			}
		}
		for _, name := range names {
			if c := count(h.fk.journal(), name, "r", kit.OpRestore); c != 1 {
				t.Errorf("%s restored %d times, want once", name, c)
			}
		}
	})
}

func TestRestoreWaitingForATurnIsDroppedWhenNoLongerWanted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, func(c *engine.Config) { c.MaxRestores = 1 })
		block := make(chan struct{})
		h.fk.script("busy", "r", func(s *script) { s.restoreBlock = block })
		busy := engine.Desired{Spec: hier("busy", res("r", 1)), Epoch: 1, InService: true}
		waiting := engine.Desired{Spec: hier("waiting", res("r", 1)), Epoch: 1, InService: true}
		m := h.col.mark()
		h.update(busy)
		h.fk.waitFor(t, "busy's restore", func(c []call) bool { return count(c, "busy", "r", kit.OpRestore) == 1 })
		h.update(busy, waiting)
		h.col.waitState(t, "waiting", m, engine.StateRestoring, 1)
		// Taken out of service while it waits: it goes offline without
		// waiting for the turn it no longer needs.
		waiting.Epoch, waiting.InService = 2, false
		h.update(busy, waiting)
		h.col.waitState(t, "waiting", m, engine.StateOffline, 2)
		close(block)
		h.col.waitState(t, "busy", m, engine.StateOnline, 1)
		h.ticks(t, 3)
		if c := count(h.fk.journal(), "waiting", "r", kit.OpRestore); c != 0 {
			t.Errorf("waiting restored %d times after it was taken out of service", c)
		}
	})
}

// A restore held up past its timeout by the cloud API's request limit is
// tried again, not failed: no failed report, no failover, and once tokens
// come the hierarchy is online.
func TestThrottledRestoreIsTriedAgainNotFailed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		throttled := fmt.Errorf("%w: RequestLimitExceeded", kit.ErrThrottled)
		h.fk.script("th", "r", func(s *script) { s.restoreErrs = []error{throttled, throttled} })
		m := h.col.mark()
		h.update(engine.Desired{Spec: hier("th", res("r", 1)), Epoch: 1, InService: true})
		h.col.waitState(t, "th", m, engine.StateOnline, 1)
		for _, r := range h.col.since("th", m) {
			if r.State == engine.StateFailed {
				t.Fatalf("reported failed on a throttled restore: %+v", r)
			}
		}
		if c := count(h.fk.journal(), "th", "r", kit.OpRestore); c != 3 {
			t.Errorf("%d restores, want 3 (two throttled, then through)", c)
		}
		if c := count(h.fk.journal(), "th", "r", kit.OpRemove); c > 1 {
			t.Errorf("%d removes: a throttled restore took the hierarchy down", c)
		}
	})
}

// A restore tells the kit when the hierarchy was assigned here: when the
// desired state asked for it in service, not when its turn came.
func TestRestoreCarriesWhenItWasAssigned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, func(c *engine.Config) { c.MaxRestores = 1 })
		block := make(chan struct{})
		h.fk.script("first", "r", func(s *script) { s.restoreBlock = block })
		m := h.col.mark()
		first := engine.Desired{Spec: hier("first", res("r", 1)), Epoch: 1, InService: true}
		h.update(first)
		h.fk.waitFor(t, "first's restore", func(c []call) bool { return count(c, "first", "r", kit.OpRestore) == 1 })
		asked := time.Now()
		h.update(first, engine.Desired{Spec: hier("second", res("r", 1)), Epoch: 1, InService: true})
		synctest.Wait()
		time.Sleep(time.Second) // second waits its turn meanwhile
		close(block)
		h.col.waitState(t, "second", m, engine.StateOnline, 1)
		var got time.Time
		h.fk.script("second", "r", func(s *script) { got = s.assignedAt })
		if !got.Equal(asked) {
			t.Errorf("restore carried assigned-at %v, want %v (when the update asked for it)", got, asked)
		}
	})
}
