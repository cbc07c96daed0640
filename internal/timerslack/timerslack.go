// Package timerslack gives the agent's threads a timer slack: how late the
// kernel may end a sleep, so that it ends several at once and an idle agent
// wakes less often.
//
// An idle agent's cost is its wake-ups (renewals, heartbeats, probes, a few
// a second each), and with Linux's default slack of 50 µs most of them come
// in pairs or more: Go's network poller sleeps in whole milliseconds rounded
// down, so it wakes just before every timer is due, finds nothing to do and
// sleeps once more; and the runtime's monitor thread (sysmon), once the
// process is awake, polls in 20 µs sleeps until it is idle again. A slack of
// a millisecond lets the first sleep end when the timer is due and the
// monitor's polls cover the whole wake-up: on the idle three-node bench the
// context switches halve and the CPU drops by a fifth to a third (docs/benchmarks.md,
// "Idle cost, fifth round"). Nothing in the agent keeps time to the
// millisecond: a node stops acting timing.lease/10 before its lease ends.
//
// Slack is a per-thread setting that new threads inherit from the thread
// that creates them, and the Go runtime has created its monitor thread
// before any of lifeboat's code runs. So Ensure sets it on the calling
// thread and executes the agent's binary again (same process, same
// arguments): every thread of the new image inherits it. Commands the agent
// starts (app resources, notification commands) get the slack the agent was
// started with, through Start.
package timerslack

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EnvInherited carries, across the agent's own re-execution, the timer
// slack it was started with (in nanoseconds). Ensure removes it from the
// environment.
const EnvInherited = "LIFEBOAT_INHERITED_TIMER_SLACK_NS"

var (
	// own is the slack Ensure gave the agent's threads; inherited is the
	// slack the agent was started with, for the commands it starts. Both
	// zero: Ensure changed nothing and commands inherit as usual.
	own, inherited atomic.Int64
)

// Current returns the calling thread's timer slack.
func Current() (time.Duration, error) {
	n, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("read the timer slack: %w", err)
	}
	return time.Duration(n), nil
}

func set(d time.Duration) error {
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d.Nanoseconds()), 0, 0, 0); err != nil {
		return fmt.Errorf("set the timer slack to %v: %w", d, err)
	}
	return nil
}

// Ensure makes every thread of the process run with a timer slack of d,
// and the commands it starts through Start with the slack the process was
// started with. When the calling thread's slack differs from d, Ensure sets
// it and executes the running binary again with the same arguments and
// environment (plus EnvInherited): on success it does not return. Call it
// first, before the process has done anything it would do twice. d zero
// leaves the slack as it is. An error says why the slack is unchanged: the
// caller goes on without it.
func Ensure(d time.Duration) error {
	if v, ok := os.LookupEnv(EnvInherited); ok {
		// The second image: the first set the slack and recorded the
		// original.
		os.Unsetenv(EnvInherited)
		n, err := strconv.ParseInt(v, 10, 64)
		cur, cerr := Current()
		if err == nil && n > 0 && cerr == nil && cur == d && n != int64(d) {
			own.Store(int64(d))
			inherited.Store(n)
			return nil
		}
		// Set by someone else, or the slack did not carry over: do not
		// execute again (it would not help), go on as started.
		return fmt.Errorf("%s=%q in the environment, timer slack %v: left as it is", EnvInherited, v, cur)
	}
	if d <= 0 {
		return nil
	}
	cur, err := Current()
	if err != nil {
		return err
	}
	if cur == d {
		return nil
	}
	// The same file as the running image, even if the path now names
	// another (a package upgrade under way).
	const exe = "/proc/self/exe"
	// The slack is the thread's: hold this goroutine on it from the
	// setting to the exec, which the kernel does from this thread.
	runtime.LockOSThread()
	if err := set(d); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	os.Setenv(EnvInherited, strconv.FormatInt(cur.Nanoseconds(), 10))
	err = syscall.Exec(exe, os.Args, os.Environ())
	// Still the first image: undo.
	os.Unsetenv(EnvInherited)
	if rerr := set(cur); rerr == nil {
		runtime.UnlockOSThread()
	} // else the thread stays locked and ends with this goroutine
	return fmt.Errorf("execute %s again with a timer slack of %v: %w", exe, d, err)
}

// Slack returns the slack Ensure gave the process and the one it was started
// with (both zero when Ensure changed nothing).
func Slack() (agent, started time.Duration) {
	return time.Duration(own.Load()), time.Duration(inherited.Load())
}

// Start starts cmd (cmd.Start) with the timer slack the process was started
// with, not the one Ensure gave it: an application lifeboat starts keeps the
// timing it would have without lifeboat.
func Start(cmd *exec.Cmd) error {
	mine, theirs := own.Load(), inherited.Load()
	if theirs == 0 {
		return cmd.Start()
	}
	// The child is forked from the calling thread and inherits its slack:
	// hold the goroutine on that thread while it carries the child's.
	runtime.LockOSThread()
	if err := set(time.Duration(theirs)); err != nil {
		runtime.UnlockOSThread()
		return cmd.Start()
	}
	err := cmd.Start()
	if set(time.Duration(mine)) == nil {
		runtime.UnlockOSThread()
	} // else the thread stays locked and ends with this goroutine
	return err
}
