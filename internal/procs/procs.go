// Package procs runs the agent's Go code on one CPU while the agent is
// idle and on every CPU it may use (GOMAXPROCS's default) while it is busy.
//
// An idle agent's cost is its wake-ups, and with two or more Ps each one
// costs more than it needs: a goroutine made ready by the network while
// another P is idle makes the runtime wake a second thread to look for
// work, which finds none and sleeps again. With one P there is no one to
// hand off to: on the idle three-node bench the CPU drops by a quarter to a
// third (docs/benchmarks.md, "Idle cost, fifth round"). A node that takes
// over a thousand hierarchies is another matter: it is CPU-bound for
// seconds and one P made that failover half again as long. So the Governor
// samples the process's CPU time on the cluster's beat: a beat interval
// spent more than half busy gives the runtime every P at once; five
// seconds under a tenth of a CPU take it back to one.
//
// GOMAXPROCS set in the agent's environment fixes the number: the Governor
// then changes nothing.
package procs

import (
	"context"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Thresholds, as fractions of one CPU over the interval measured.
const (
	// Busy: one interval at least this busy raises to every P.
	Busy = 0.5
	// Quiet: below this for QuietFor lowers to one P.
	Quiet = 0.1
	// QuietFor is how long the agent stays quiet before it goes back to
	// one P.
	QuietFor = 5 * time.Second
)

// Governor decides the number of Ps from the CPU time used.
type Governor struct {
	max    int  // Ps when busy
	fixed  bool // GOMAXPROCS was set: change nothing
	set    func(int) int
	cpu    func() time.Duration // the process's CPU time so far
	procs  atomic.Int32         // the Ps in force
	raises atomic.Int64         // times raised

	lastCPU    time.Duration
	lastAt     time.Time
	quietSince time.Time // zero: not quiet
}

// New returns a governor for this process: max is the runtime's GOMAXPROCS
// at the time (its default: the CPUs the process may use); fixed when the
// environment sets GOMAXPROCS or there is one CPU only.
func New() *Governor {
	g := &Governor{max: runtime.GOMAXPROCS(0), set: runtime.GOMAXPROCS, cpu: cpuTime}
	_, env := os.LookupEnv("GOMAXPROCS")
	g.fixed = env || g.max <= 1
	g.procs.Store(int32(g.max))
	return g
}

// Procs returns the Ps in force, the Ps used when busy, and whether the
// governor is off (GOMAXPROCS fixed by the environment).
func (g *Governor) Procs() (now, busy int, fixed bool) {
	return int(g.procs.Load()), g.max, g.fixed
}

// Raises is how many times the governor went from one P to every P.
func (g *Governor) Raises() int64 { return g.raises.Load() }

// Run starts at one P and samples the process's CPU time at each of next's
// waits (the cluster's beat) until ctx ends, then restores every P.
func (g *Governor) Run(ctx context.Context, next func() time.Duration) {
	if g.fixed {
		return
	}
	defer g.apply(g.max)
	g.Observe(time.Now(), g.cpu())
	g.apply(1)
	t := time.NewTimer(next())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := g.Observe(time.Now(), g.cpu()); n != int(g.procs.Load()) {
			g.apply(n)
		}
		t.Reset(next())
	}
}

func (g *Governor) apply(n int) {
	if int(g.procs.Load()) == 1 && n > 1 {
		g.raises.Add(1)
	}
	g.procs.Store(int32(n))
	g.set(n)
}

// Observe takes the process's CPU time at now and returns the Ps it should
// run with: every P after an interval at least Busy, one after QuietFor
// below Quiet, else as it is.
func (g *Governor) Observe(now time.Time, cpu time.Duration) int {
	cur := int(g.procs.Load())
	prevCPU, prevAt := g.lastCPU, g.lastAt
	g.lastCPU, g.lastAt = cpu, now
	if prevAt.IsZero() || !now.After(prevAt) {
		return cur
	}
	load := float64(cpu-prevCPU) / float64(now.Sub(prevAt))
	switch {
	case load >= Busy:
		g.quietSince = time.Time{}
		return g.max
	case load >= Quiet:
		g.quietSince = time.Time{}
		return cur
	}
	if g.quietSince.IsZero() {
		g.quietSince = prevAt
	}
	if cur > 1 && now.Sub(g.quietSince) >= QuietFor {
		return 1
	}
	return cur
}

// cpuTime is the CPU time the process has used (user and system, its
// children not included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
