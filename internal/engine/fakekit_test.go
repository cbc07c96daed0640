package engine_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// waitTimeout bounds every wait on an asynchronous condition. Conditions are
// awaited by watching the journal and the reports, never by sleeping.
const waitTimeout = 5 * time.Second

// Operations recorded in the journal besides the kit operations.
const (
	opNew            = "new"
	opRestoreAborted = "restore-aborted" // a blocked restore ended by its context
)

// call is one journal entry.
type call struct {
	Seq    int
	At     time.Time
	Hier   string
	Res    string
	Op     string     // opNew or a kit.Op* name
	Health kit.Health // quickcheck result
	// Cancelled: the action's context was already done when it was called.
	Cancelled bool
}

func (c call) String() string {
	s := fmt.Sprintf("#%d %s/%s %s", c.Seq, c.Hier, c.Res, c.Op)
	if c.Op == kit.OpQuickCheck {
		s += "=" + c.Health.String()
	}
	if c.Cancelled {
		s += " (context already done)"
	}
	return s
}

// script is the scripted behaviour of one resource.
type script struct {
	restoreErr error
	// assignedAt: what the last restore's context said about when the
	// hierarchy was assigned here (kit.WithAssignedAt).
	assignedAt time.Time
	// restoreErrs are the next restores' results, consumed in order
	// before restoreErr applies.
	restoreErrs  []error
	removeErr    error
	recoverErr   error
	restoreDelay time.Duration // simulated duration of a restore
	// restoreBlock, when set, makes Restore wait until it is closed (or the
	// action's context ends).
	restoreBlock chan struct{}
	// checks are the next quickcheck results, consumed in order; once they
	// are used up every check returns checkDefault.
	checks       []kit.Health
	checkDefault kit.Health
	// upAfterRestore: a successful restore turns checkDefault Healthy (a
	// stopped service that a restore starts).
	upAfterRestore bool
	// checkUntilDone makes QuickCheck wait for its context to end and then
	// report Failed, like a kit that treats an interrupted probe as a failure.
	checkUntilDone bool
	// checkBlock, when set, makes the next QuickCheck wait until it is
	// closed (an owner paused inside its monitor interval), then answer as
	// scripted.
	checkBlock chan struct{}
}

// fakeKit is the "fake" resource type: it journals every call in time order
// and behaves per resource as scripted.
type fakeKit struct {
	mu      sync.Mutex
	calls   []call
	changed chan struct{} // closed and replaced on every journal entry
	scripts map[string]*script
}

func newFakeKit() *fakeKit {
	return &fakeKit{changed: make(chan struct{}), scripts: map[string]*script{}}
}

func (f *fakeKit) lookup(typ string) (kit.Kit, bool) {
	if typ == "fake" {
		return f, true
	}
	return nil, false
}

// Type implements kit.Kit.
func (f *fakeKit) Type() string { return "fake" }

// Validate implements kit.Kit.
func (f *fakeKit) Validate(map[string]string) []spec.Problem { return nil }

// New implements kit.Kit.
func (f *fakeKit) New(res spec.Resource, env kit.Env) (kit.Instance, error) {
	f.record(env.Hierarchy, res.Name, opNew, 0, false)
	return &fakeInstance{k: f, hier: env.Hierarchy, res: res.Name}, nil
}

// script edits the behaviour of hier/res under the journal lock.
func (f *fakeKit) script(hier, res string, edit func(*script)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	edit(f.scriptLocked(hier, res))
}

func (f *fakeKit) scriptLocked(hier, res string) *script {
	key := hier + "/" + res
	s := f.scripts[key]
	if s == nil {
		s = &script{}
		f.scripts[key] = s
	}
	return s
}

func (f *fakeKit) record(hier, res, op string, h kit.Health, cancelled bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordLocked(hier, res, op, h, cancelled)
}

func (f *fakeKit) recordLocked(hier, res, op string, h kit.Health, cancelled bool) {
	f.calls = append(f.calls, call{Seq: len(f.calls), At: time.Now(), Hier: hier, Res: res, Op: op, Health: h, Cancelled: cancelled})
	close(f.changed)
	f.changed = make(chan struct{})
}

// journal returns a copy of every call so far.
func (f *fakeKit) journal() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// waitFor waits until cond holds for the journal and returns the journal.
func (f *fakeKit) waitFor(t *testing.T, what string, cond func([]call) bool) []call {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		calls := append([]call(nil), f.calls...)
		ch := f.changed
		f.mu.Unlock()
		if cond(calls) {
			return calls
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; journal:\n%s", waitTimeout, what, formatCalls(calls))
		}
	}
}

type fakeInstance struct {
	k         *fakeKit
	hier, res string
}

func (i *fakeInstance) Restore(ctx context.Context) error {
	i.k.mu.Lock()
	i.k.recordLocked(i.hier, i.res, kit.OpRestore, 0, ctx.Err() != nil)
	s := i.k.scriptLocked(i.hier, i.res)
	err, delay, block := s.restoreErr, s.restoreDelay, s.restoreBlock
	if len(s.restoreErrs) > 0 {
		err, s.restoreErrs = s.restoreErrs[0], s.restoreErrs[1:]
	}
	s.assignedAt = awsapi.ReadsSince(ctx)
	i.k.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			i.k.record(i.hier, i.res, opRestoreAborted, 0, true)
			return ctx.Err()
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err == nil {
		i.k.mu.Lock()
		if s.upAfterRestore {
			s.checkDefault = kit.Healthy
		}
		i.k.mu.Unlock()
	}
	return err
}

func (i *fakeInstance) Remove(ctx context.Context) error {
	i.k.mu.Lock()
	defer i.k.mu.Unlock()
	i.k.recordLocked(i.hier, i.res, kit.OpRemove, 0, ctx.Err() != nil)
	return i.k.scriptLocked(i.hier, i.res).removeErr
}

func (i *fakeInstance) QuickCheck(ctx context.Context) (kit.Health, error) {
	i.k.mu.Lock()
	s := i.k.scriptLocked(i.hier, i.res)
	h := s.checkDefault
	if len(s.checks) > 0 {
		h = s.checks[0]
		s.checks = s.checks[1:]
	}
	untilDone := s.checkUntilDone
	if untilDone {
		h = kit.Failed
	}
	block := s.checkBlock
	s.checkBlock = nil
	i.k.recordLocked(i.hier, i.res, kit.OpQuickCheck, h, ctx.Err() != nil)
	i.k.mu.Unlock()
	if block != nil {
		<-block
	}
	if untilDone {
		<-ctx.Done()
		return kit.Failed, ctx.Err()
	}
	var err error
	switch h {
	case kit.Failed:
		err = fmt.Errorf("scripted check failure of %s", i.res)
	case kit.Unknown:
		err = fmt.Errorf("scripted check timeout of %s", i.res)
	}
	return h, err
}

func (i *fakeInstance) Recover(ctx context.Context) error {
	i.k.mu.Lock()
	defer i.k.mu.Unlock()
	i.k.recordLocked(i.hier, i.res, kit.OpRecover, 0, ctx.Err() != nil)
	return i.k.scriptLocked(i.hier, i.res).recoverErr
}

// Journal queries.

// ops lists, in time order, the resources of hier on which op was called.
func ops(calls []call, hier, op string) []string {
	var out []string
	for _, c := range calls {
		if c.Hier == hier && c.Op == op {
			out = append(out, c.Res)
		}
	}
	return out
}

// count counts op calls on hier/res.
func count(calls []call, hier, res, op string) int {
	n := 0
	for _, c := range calls {
		if c.Hier == hier && c.Res == res && c.Op == op {
			n++
		}
	}
	return n
}

// resOps lists the operations on hier/res in time order, leaving out the
// ones named in skip.
func resOps(calls []call, hier, res string, skip ...string) []string {
	var out []string
next:
	for _, c := range calls {
		if c.Hier != hier || c.Res != res {
			continue
		}
		for _, s := range skip {
			if c.Op == s {
				continue next
			}
		}
		out = append(out, c.Op)
	}
	return out
}

func formatCalls(calls []call) string {
	var b strings.Builder
	for _, c := range calls {
		b.WriteString("  " + c.String() + "\n")
	}
	return b.String()
}

// collector gathers the engine's reports.
type collector struct {
	mu      sync.Mutex
	reps    []engine.Report
	changed chan struct{}
}

func newCollector() *collector { return &collector{changed: make(chan struct{})} }

// report is the engine's Report callback; it never blocks for long.
func (c *collector) report(r engine.Report) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reps = append(c.reps, r)
	close(c.changed)
	c.changed = make(chan struct{})
}

// mark returns a position in the report stream, for since and waitFrom.
func (c *collector) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.reps)
}

// since returns the reports on hier from mark on.
func (c *collector) since(hier string, mark int) []engine.Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []engine.Report
	for _, r := range c.reps[mark:] {
		if r.Hierarchy == hier {
			out = append(out, r)
		}
	}
	return out
}

// waitState waits for a report on hier, from mark on, with state and epoch
// and returns it.
func (c *collector) waitState(t *testing.T, hier string, mark int, state string, epoch uint64) engine.Report {
	t.Helper()
	return c.waitStateWithin(t, hier, mark, state, epoch, waitTimeout)
}

func (c *collector) waitStateWithin(t *testing.T, hier string, mark int, state string, epoch uint64, limit time.Duration) engine.Report {
	t.Helper()
	return c.wait(t, hier, mark, fmt.Sprintf("%s at epoch %d", state, epoch), limit, func(r engine.Report) bool {
		return r.State == state && r.Epoch == epoch
	})
}

// waitFor waits for a report on hier, from mark on, that satisfies pred.
func (c *collector) waitFor(t *testing.T, hier string, mark int, what string, pred func(engine.Report) bool) engine.Report {
	t.Helper()
	return c.wait(t, hier, mark, what, waitTimeout, pred)
}

func (c *collector) wait(t *testing.T, hier string, mark int, what string, limit time.Duration, pred func(engine.Report) bool) engine.Report {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ch := c.changed
		var all []engine.Report
		for _, r := range c.reps[mark:] {
			if r.Hierarchy == hier {
				all = append(all, r)
			}
		}
		c.mu.Unlock()
		for _, r := range all {
			if pred(r) {
				return r
			}
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s to report %s; its reports since the mark:\n%s", limit, hier, what, formatReports(all))
		}
	}
}

// transitions returns the successive distinct states in reps.
func transitions(reps []engine.Report) []string {
	var out []string
	for _, r := range reps {
		if len(out) == 0 || out[len(out)-1] != r.State {
			out = append(out, r.State)
		}
	}
	return out
}

func formatReports(reps []engine.Report) string {
	var b strings.Builder
	for _, r := range reps {
		fmt.Fprintf(&b, "  %s epoch=%d state=%s resources=%v error=%q\n", r.Hierarchy, r.Epoch, r.State, r.Resources, r.Error)
	}
	return b.String()
}
