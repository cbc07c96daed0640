// Package probe paces this node's readiness probes: a budget of AWS calls
// per minute (Budget), answers shared between the probes of different
// hierarchies that make the same call on the same resource while they are
// fresh (Shared), and one schedule (Scheduler) that spreads the probes of
// every hierarchy over the readiness interval and stretches the period when
// the budget cannot cover them.
//
// Only readiness goes through it. The calls a failover makes (restore,
// remove, recover) use the node's clients directly: they never wait for
// the budget and never queue behind a probe.
package probe

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the time the package works in: the real one (Real) in the
// agent, a fake one in tests.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Real is the wall clock.
var Real Clock = realClock{}

// FakeClock is a clock for tests: it moves only when told to (Advance),
// or when someone waits on it: After moves it forward by the wait at once,
// so a test of the budget runs in no real time.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock starts at a fixed time.
func NewFakeClock() *FakeClock { return &FakeClock{now: time.Unix(1_700_000_000, 0)} }

// Now implements Clock.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(max(d, 0))
	c.mu.Unlock()
}

// After implements Clock: it moves the clock by d and returns a channel
// that has the new time.
func (c *FakeClock) After(d time.Duration) <-chan time.Time {
	c.Advance(d)
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}

// DefaultPerMinute is the default budget: AWS calls per minute one node's
// readiness probes may make. MinPerMinute is the least a budget can be
// (one call in a burst and one refilled a minute).
const (
	DefaultPerMinute = 60
	MinPerMinute     = 2
)

// Budget is a token bucket of AWS calls: it holds a burst of a quarter of
// the budget (at least one call, at most 20: the first round after a
// start, which the engine's takeovers wait for, should not wait for the
// budget on a small cluster), and refills at the rest of the budget a
// minute: over any 60 s, burst and refill together stay within PerMinute.
//
// A probe waits (Wait) until a token is there before it starts a call, and
// every request actually sent (retries and the decoding of a refusal
// included) spends one (Spend), which may leave the bucket in debt: the
// next call then waits longer. So the calls sent in any minute stay within
// PerMinute, plus the retries of a call in flight, which the next calls
// pay back.
type Budget struct {
	clock     Clock
	perMinute int
	rate      float64 // tokens per second
	burst     float64

	mu     sync.Mutex
	tokens float64
	last   time.Time

	made, deferred atomic.Uint64
}

// NewBudget returns a full bucket of perMinute calls a minute
// (DefaultPerMinute when perMinute <= 0) on clock.
func NewBudget(clock Clock, perMinute int) *Budget {
	if perMinute <= 0 {
		perMinute = DefaultPerMinute
	}
	perMinute = max(perMinute, MinPerMinute)
	burst := min(max(float64(perMinute)/4, 1), 20)
	return &Budget{clock: clock, perMinute: perMinute, rate: (float64(perMinute) - burst) / 60, burst: burst, tokens: burst, last: clock.Now()}
}

// PerMinute is the budget.
func (b *Budget) PerMinute() int { return b.perMinute }

// refill adds the tokens earned since the last look; b.mu is held.
func (b *Budget) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
}

// Wait returns once a call may be sent (a token is there; it is not taken:
// Spend takes it when the request goes out), or with ctx's error. A call
// that had to wait is counted as deferred.
func (b *Budget) Wait(ctx context.Context) error {
	counted := false
	for {
		b.mu.Lock()
		b.refill(b.clock.Now())
		short := 1 - b.tokens
		b.mu.Unlock()
		if short <= 1e-9 { // a token, but for float rounding
			return nil
		}
		if !counted {
			counted = true
			b.deferred.Add(1)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.clock.After(time.Duration(math.Ceil(short / b.rate * float64(time.Second)))):
		}
	}
}

// Spend records one request sent.
func (b *Budget) Spend() {
	b.mu.Lock()
	b.refill(b.clock.Now())
	b.tokens--
	b.mu.Unlock()
	b.made.Add(1)
}

// Made counts the requests sent; Deferred the calls that waited for the
// budget.
func (b *Budget) Made() uint64     { return b.made.Load() }
func (b *Budget) Deferred() uint64 { return b.deferred.Load() }
