package timerslack

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

const envHelper = "TIMERSLACK_TEST_HELPER"

// report is what the helper process prints about itself.
type report struct {
	PID     int
	Err     string
	Threads map[string]int64 // thread id -> its timer slack in ns
	Child   int64            // the slack a command started through Start reads
	Env     bool             // EnvInherited still in the environment
}

// TestMain runs the helper when the test re-executes itself: Ensure then
// executes the test binary once more, with the same arguments, and the
// second image reports.
func TestMain(m *testing.M) {
	if v := os.Getenv(envHelper); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			panic(err)
		}
		helper(d)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helper(d time.Duration) {
	r := report{PID: os.Getpid(), Threads: map[string]int64{}}
	if err := Ensure(d); err != nil {
		r.Err = err.Error()
	}
	// Threads the runtime starts from here on inherit from their creator.
	done := make(chan struct{})
	for range 4 {
		go func() { runtime.LockOSThread(); <-done }()
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		panic(err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + t.Name() + "/timerslack_ns")
		if err != nil {
			panic(err)
		}
		r.Threads[t.Name()], _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	r.Child = childSlack()
	_, r.Env = os.LookupEnv(EnvInherited)
	close(done)
	json.NewEncoder(os.Stdout).Encode(r)
}

func childSlack() int64 {
	cmd := exec.Command("/bin/cat", "/proc/self/timerslack_ns")
	var out strings.Builder
	cmd.Stdout = &out
	if err := Start(cmd); err != nil {
		panic(err)
	}
	if err := cmd.Wait(); err != nil {
		panic(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	if err != nil {
		panic(fmt.Sprintf("child read %q", out.String()))
	}
	return n
}

// runHelper starts the helper with a timer slack of started (set on the
// thread it is forked from) and asks it to Ensure d.
func runHelper(t *testing.T, started, d time.Duration) (report, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"="+d.String())
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	runtime.LockOSThread()
	prev, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	if err := set(started); err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	if set(prev) == nil {
		runtime.UnlockOSThread()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, errb.String())
	}
	var r report
	if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
		t.Fatalf("helper's report %q: %v\n%s", out.String(), err, errb.String())
	}
	return r, cmd.Process.Pid
}

func TestEnsureGivesEveryThreadTheSlackAndCommandsTheOriginal(t *testing.T) {
	const started = 70 * time.Microsecond
	r, pid := runHelper(t, started, time.Millisecond)
	if r.Err != "" {
		t.Fatalf("Ensure: %s", r.Err)
	}
	if r.PID != pid {
		t.Errorf("the helper reported pid %d, started as %d: the re-execution must keep the process", r.PID, pid)
	}
	if len(r.Threads) < 3 {
		t.Errorf("only %d threads read: %v", len(r.Threads), r.Threads)
	}
	for tid, ns := range r.Threads {
		if ns != time.Millisecond.Nanoseconds() {
			t.Errorf("thread %s has a timer slack of %d ns, want 1ms on every thread (the runtime's own included)", tid, ns)
		}
	}
	if r.Child != started.Nanoseconds() {
		t.Errorf("a command started through Start has a slack of %d ns, want the %d ns the agent was started with", r.Child, started.Nanoseconds())
	}
	if r.Env {
		t.Errorf("%s is still in the environment after Ensure", EnvInherited)
	}
}

func TestEnsureZeroLeavesTheSlack(t *testing.T) {
	const started = 70 * time.Microsecond
	r, _ := runHelper(t, started, 0)
	if r.Err != "" {
		t.Fatalf("Ensure: %s", r.Err)
	}
	for tid, ns := range r.Threads {
		if ns != started.Nanoseconds() {
			t.Errorf("thread %s has a timer slack of %d ns, want the %d it was started with", tid, ns, started.Nanoseconds())
		}
	}
	if r.Child != started.Nanoseconds() {
		t.Errorf("child slack %d ns, want %d", r.Child, started.Nanoseconds())
	}
}

func TestEnsureKeepsASlackAlreadyInPlace(t *testing.T) {
	// Started with the slack asked for (systemd's TimerSlackNSec=): no
	// second image, and commands inherit it like everything else.
	r, _ := runHelper(t, time.Millisecond, time.Millisecond)
	if r.Err != "" {
		t.Fatalf("Ensure: %s", r.Err)
	}
	if r.Child != time.Millisecond.Nanoseconds() {
		t.Errorf("child slack %d ns, want the 1ms the agent was started with", r.Child)
	}
}
