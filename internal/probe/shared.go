package probe

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// maxAnswers bounds the answers kept (keys come from the configured
// resources, so this is far above what a node needs).
const maxAnswers = 1 << 14

// Shared keeps the answers of readiness calls for the probes of other
// hierarchies, for at most MaxAge. A probe sees them through a View, which
// says how fresh an answer must be for it.
type Shared struct {
	clock    Clock
	budget   *Budget
	interval time.Duration

	mu      sync.Mutex
	maxAge  time.Duration
	answers map[kit.ProbeKey]kit.ProbeAnswer

	reused atomic.Uint64
}

// NewShared returns an empty store whose calls wait for budget b (and run
// on its clock); an answer is shared for one interval.
func NewShared(b *Budget, interval time.Duration) *Shared {
	return &Shared{clock: b.clock, budget: b, interval: interval, maxAge: interval, answers: map[kit.ProbeKey]kit.ProbeAnswer{}}
}

// Stretch shares answers for period, the time the probes now take to come
// round to every hierarchy, when that is longer than the interval (the
// budget holds them back). A verdict cannot be fresher than the period
// anyway; answers that expired within it would be asked for again by the
// next hierarchy on the same resource, and the period would only grow.
func (s *Shared) Stretch(period time.Duration) {
	s.mu.Lock()
	s.maxAge = max(s.interval, period)
	s.mu.Unlock()
}

// MaxAge is how long an answer is shared now.
func (s *Shared) MaxAge() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxAge
}

// Reused counts the answers given to a probe that another probe's call
// had got (calls not made).
func (s *Shared) Reused() uint64 { return s.reused.Load() }

// View returns the calls of one probe: it reuses answers got after
// notBefore (the zero time: any answer still fresh).
func (s *Shared) View(notBefore time.Time) *View {
	return &View{s: s, notBefore: notBefore, wait: s.budget}
}

// ViewPaced is View for a run an operator waits for (lifeboat doctor):
// its calls wait for pace instead of the store's budget, so that they do
// not queue behind the probes the budget holds back. The requests are
// still counted against the budget where the clients are metered, and the
// probes pay them back.
func (s *Shared) ViewPaced(notBefore time.Time, pace *Budget) *View {
	return &View{s: s, notBefore: notBefore, wait: pace}
}

// keep reports whether an answer may be given to other probes: not when
// the cloud could not tell (throttled, unavailable, timed out) or the
// probe gave up (its context ended).
func keep(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	f := awsapi.Classify(err)
	return f == nil || (f.Kind != awsapi.KindThrottled && f.Kind != awsapi.KindUnavailable)
}

func (s *Shared) lookup(key kit.ProbeKey, notBefore time.Time) (kit.ProbeAnswer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.answers[key]
	if !ok || !notBefore.IsZero() && !a.At.After(notBefore) || s.clock.Now().Sub(a.At) > s.maxAge {
		return kit.ProbeAnswer{}, false
	}
	return a, true
}

func (s *Shared) store(key kit.ProbeKey, a kit.ProbeAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	for k, old := range s.answers {
		if now.Sub(old.At) > s.maxAge {
			delete(s.answers, k)
		}
	}
	if len(s.answers) < maxAnswers {
		s.answers[key] = a
	}
}

// View is the calls of one probe (kit.ProbeCalls). It is used by one
// goroutine at a time.
type View struct {
	s         *Shared
	wait      *Budget // what a call waits for
	notBefore time.Time
	oldest    time.Time
	calls     int
	reused    int
}

var _ kit.ProbeCalls = (*View)(nil)

// Call implements kit.ProbeCalls.
func (v *View) Call(ctx context.Context, key kit.ProbeKey, call func(context.Context) (any, error)) kit.ProbeAnswer {
	if a, ok := v.s.lookup(key, v.notBefore); ok {
		v.s.reused.Add(1)
		v.reused++
		a.Shared = true
		v.saw(a.At)
		return a
	}
	if err := v.wait.Wait(ctx); err != nil {
		return kit.ProbeAnswer{Err: err, At: v.s.clock.Now()}
	}
	at := v.s.clock.Now()
	val, err := call(ctx)
	a := kit.ProbeAnswer{Value: val, Err: err, At: at}
	v.calls++
	v.saw(at)
	if keep(err) {
		v.s.store(key, a)
	}
	return a
}

func (v *View) saw(at time.Time) {
	if v.oldest.IsZero() || at.Before(v.oldest) {
		v.oldest = at
	}
}

// Oldest is when the oldest answer the probe relied on was got (zero: it
// made no cloud call): how old the proof is.
func (v *View) Oldest() time.Time { return v.oldest }

// Calls counts the calls this probe started; Reused the answers it took
// from other probes.
func (v *View) Calls() int  { return v.calls }
func (v *View) Reused() int { return v.reused }
