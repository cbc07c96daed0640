package procs

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func governor(max int) (*Governor, *[]int) {
	var mu sync.Mutex
	var calls []int
	g := &Governor{max: max, set: func(n int) int { mu.Lock(); calls = append(calls, n); mu.Unlock(); return 0 },
		cpu: func() time.Duration { return 0 }}
	g.procs.Store(int32(max))
	return g, &calls
}

func TestObserve(t *testing.T) {
	g, _ := governor(4)
	g.procs.Store(1)
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	step := 150 * ms
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * step) }
	cpu := time.Duration(0)
	// the first sample only sets the baseline
	if n := g.Observe(at(0), cpu); n != 1 {
		t.Fatalf("first sample: %d Ps, want 1", n)
	}
	// idle: 1% of a CPU stays at one P
	for i := 1; i <= 40; i++ {
		cpu += step / 100
		if n := g.Observe(at(i), cpu); n != 1 {
			t.Fatalf("idle beat %d: %d Ps, want 1", i, n)
		}
	}
	// a beat 60% busy: every P at once
	cpu += step * 6 / 10
	if n := g.Observe(at(41), cpu); n != 4 {
		t.Fatalf("busy beat: %d Ps, want 4", n)
	}
	g.procs.Store(4)
	// 40% busy (between the thresholds): stays
	cpu += step * 4 / 10
	if n := g.Observe(at(42), cpu); n != 4 {
		t.Fatalf("40%% beat: %d Ps, want 4", n)
	}
	// quiet, but not yet for QuietFor: stays; then one P
	beats := int((QuietFor + step - 1) / step)
	for i := 1; i < beats; i++ {
		cpu += step / 20
		if n := g.Observe(at(42+i), cpu); n != 4 {
			t.Fatalf("quiet beat %d of %d: %d Ps, want still 4", i, beats, n)
		}
	}
	cpu += step / 20
	if n := g.Observe(at(42+beats), cpu); n != 1 {
		t.Fatalf("after %v quiet: %d Ps, want 1", QuietFor, n)
	}
	g.procs.Store(4)
	// a busy beat in the middle of a quiet spell starts it again
	g.quietSince = time.Time{}
	base := 42 + beats
	for i := 1; i <= beats; i++ {
		d := step / 20
		if i == beats/2 {
			d = step / 5 // 20%: not quiet
		}
		cpu += d
		if n := g.Observe(at(base+i), cpu); n != 4 {
			t.Fatalf("quiet spell broken at %d: beat %d gave %d Ps, want 4", beats/2, i, n)
		}
	}
}

func TestRunStartsAtOnePAndRestoresEveryPAtTheEnd(t *testing.T) {
	g, calls := governor(2)
	var busy atomic.Bool
	var cpu atomic.Int64
	g.cpu = func() time.Duration {
		if busy.Load() {
			return time.Duration(cpu.Add(int64(time.Second))) // a second of CPU per sample: busy
		}
		return time.Duration(cpu.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	ticks := make(chan struct{}) // each wait handed out in turn: what the test saw was sampled
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx, func() time.Duration {
			select {
			case ticks <- struct{}{}:
			case <-ctx.Done():
			}
			return time.Millisecond
		})
	}()
	for range 3 {
		<-ticks
	}
	if now, most, fixed := g.Procs(); now != 1 || most != 2 || fixed {
		t.Errorf("idle: Procs() = %d, %d, %v; want 1, 2, false", now, most, fixed)
	}
	busy.Store(true)
	<-ticks // the sample after this tick's wait sees the load
	<-ticks
	if now, _, _ := g.Procs(); now != 2 || g.Raises() != 1 {
		t.Errorf("busy: %d Ps after %d raises, want 2 after 1", now, g.Raises())
	}
	cancel()
	<-done
	if n := len(*calls); n < 2 || (*calls)[0] != 1 || (*calls)[n-1] != 2 {
		t.Errorf("GOMAXPROCS set to %v: want 1 first and 2 last", *calls)
	}
}

func TestFixedChangesNothing(t *testing.T) {
	g, calls := governor(2)
	g.fixed = true
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.Run(ctx, func() time.Duration { return time.Millisecond })
	if len(*calls) != 0 {
		t.Errorf("a fixed governor set GOMAXPROCS to %v", *calls)
	}
	t.Setenv("GOMAXPROCS", "3")
	if !New().fixed {
		t.Error("GOMAXPROCS in the environment: the governor is not fixed")
	}
}
