package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a process the lab started inside a host.
type Proc struct {
	Host string
	PID  int
	// Log holds the process's stdout and stderr.
	Log string

	lab  *Lab
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// Start runs name with args inside a host (ip netns exec, which execs the
// command itself: PID is the command's). The process leads its own process
// group; its output goes to a log file in Dir. Close kills it.
func (l *Lab) Start(host, name string, args ...string) (*Proc, error) {
	if err := l.known(host); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("start %s in %s: lab closed", name, host)
	}
	key := host + "-" + filepath.Base(name)
	l.logSeq[key]++
	logPath := filepath.Join(l.dir, fmt.Sprintf("%s-%d.log", key, l.logSeq[key]))
	l.mu.Unlock()

	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, host, err)
	}
	argv := append(l.Wrap(host), name)
	cmd := exec.Command(argv[0], append(argv[1:], args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, host, err)
	}
	p := &Proc{Host: host, PID: cmd.Process.Pid, Log: logPath, lab: l, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs[p.PID] = p
	closed := l.closed
	l.mu.Unlock()
	if closed { // Close ran meanwhile and did not see p
		_ = p.Kill()
		return nil, fmt.Errorf("start %s in %s: lab closed", name, host)
	}
	l.log.Info("started process", "host", host, "pid", p.PID, "command", name+" "+strings.Join(args, " "), "log", logPath)
	return p, nil
}

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Wait waits for the process to exit and returns how it ended.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("wait for pid %d in %s: %w", p.PID, p.Host, ctx.Err())
	}
}

// Stop sends SIGTERM (after SIGCONT, in case it is frozen) and waits up to
// timeout for the process to exit, then kills its process group.
func (p *Proc) Stop(timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop pid %d in %s: %w", p.PID, p.Host, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		p.killGroup() // children it left behind
		return nil
	case <-t.C:
		p.lab.log.Warn("process ignored SIGTERM, killing it", "host", p.Host, "pid", p.PID, "timeout", timeout)
		return p.Kill()
	}
}

// Kill sends SIGKILL to the process's group and waits until the process
// is reaped.
func (p *Proc) Kill() error {
	p.killGroup()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("kill pid %d in %s: still running after 10s", p.PID, p.Host)
	}
}

// killGroup sends SIGKILL to the process group the process leads (it
// was started with Setpgid, so the group's id is its PID).
func (p *Proc) killGroup() {
	_ = syscall.Kill(-p.PID, syscall.SIGKILL)
}

// Freeze stops a process with SIGSTOP and waits until it is stopped. It
// works on any PID (an agent started through demo with Wrap, too).
func (l *Lab) Freeze(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("freeze pid %d: %w", pid, err)
	}
	l.log.Info("froze process", "pid", pid)
	return waitState(pid, func(s byte) bool { return s == 'T' || s == 't' }, "stopped")
}

// Thaw resumes a frozen process with SIGCONT and waits until it runs.
func (l *Lab) Thaw(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("thaw pid %d: %w", pid, err)
	}
	l.log.Info("thawed process", "pid", pid)
	return waitState(pid, func(s byte) bool { return s != 'T' && s != 't' }, "resumed")
}

// Kill sends SIGKILL to a process and waits until it is dead: reaped when
// the lab started it, else gone or a zombie.
func (l *Lab) Kill(pid int) error {
	l.mu.Lock()
	p := l.procs[pid]
	l.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	l.log.Info("killed process", "pid", pid)
	if p != nil {
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-p.done:
			return nil
		case <-t.C:
			return fmt.Errorf("kill pid %d: not reaped after 10s", pid)
		}
	}
	return waitState(pid, func(s byte) bool { return s == 'Z' || s == 'X' || s == 0 }, "dead")
}

// waitState polls /proc/PID/stat until the process state satisfies ok
// (state 0: the process is gone), for up to 10 seconds.
func waitState(pid int, ok func(byte) bool, what string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := procState(pid)
		if err != nil {
			return err
		}
		if ok(s) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d not %s after 10s (state %c)", pid, what, s)
		}
		time.Sleep(time.Millisecond) // polling the kernel's view of the process
	}
}

// procState returns the state letter of /proc/PID/stat, 0 if the process
// does not exist.
func procState(pid int) (byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	// ESRCH: the file opened, but the process exited before the read
	// (found by CI: a kill's wait failed on a process dying under it).
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read state of pid %d: %w", pid, err)
	}
	// pid (comm) S ...: comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, b)
	}
	return b[i+2], nil
}
