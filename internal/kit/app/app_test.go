package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

func base(extra map[string]string) map[string]string {
	p := map[string]string{"restore": "true", "remove": "true", "quickcheck": "true"}
	for k, v := range extra {
		if v == "<delete>" {
			delete(p, k)
		} else {
			p[k] = v
		}
	}
	return p
}

func TestRegistered(t *testing.T) {
	reg, _ := kit.NewRegistry(Kit{})
	k, ok := reg.Lookup("app")
	if !ok {
		t.Fatal(`kit "app" is not registered`)
	}
	if k.Type() != "app" {
		t.Fatalf("Type() = %q", k.Type())
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		params map[string]string
		want   map[string]string // field -> substring of message
	}{
		{"minimal", base(nil), nil},
		{"all", base(map[string]string{"recover": "x", "dir": "/srv", "env.PORT": "8080", "env._x9": ""}), nil},
		{"nil params", nil, map[string]string{
			"restore": "is required", "remove": "is required", "quickcheck": "is required",
		}},
		{"missing restore", base(map[string]string{"restore": "<delete>"}), map[string]string{"restore": "brings the application into service"}},
		{"missing quickcheck", base(map[string]string{"quickcheck": "<delete>"}), map[string]string{"quickcheck": "exit 0 when healthy"}},
		{"blank remove", base(map[string]string{"remove": "  "}), map[string]string{"remove": "is empty"}},
		{"blank recover", base(map[string]string{"recover": ""}), map[string]string{"recover": "leave recover out"}},
		{"relative dir", base(map[string]string{"dir": "srv"}), map[string]string{"dir": "absolute path"}},
		{"empty dir", base(map[string]string{"dir": ""}), map[string]string{"dir": "absolute path"}},
		{"unknown", base(map[string]string{"restart": "x"}), map[string]string{"restart": "unknown parameter: the valid parameters are restore, remove, quickcheck, recover, dir, run_as.user, run_as.group, umask, and env.NAME"}},
		{"bad env name", base(map[string]string{"env.1A": "x"}), map[string]string{"env.1A": "not a valid environment variable name"}},
		{"env name with dash", base(map[string]string{"env.A-B": "x"}), map[string]string{"env.A-B": "not a valid environment variable name"}},
		{"empty env name", base(map[string]string{"env.": "x"}), map[string]string{"env.": "not a valid environment variable name"}},
		{"reserved env name", base(map[string]string{"env.lb_node": "x"}), map[string]string{"env.lb_node": "reserved"}},
		{"NUL", base(map[string]string{"restore": "a\x00b"}), map[string]string{"restore": "NUL"}},
		{"run as", base(map[string]string{"run_as.user": "www-data", "run_as.group": "1000"}), nil},
		{"run as a bad name", base(map[string]string{"run_as.user": "-rf /"}), map[string]string{"run_as.user": "not a user or group name"}},
		{"umask", base(map[string]string{"umask": "0027"}), nil},
		{"umask not octal", base(map[string]string{"umask": "089"}), map[string]string{"umask": "3 or 4 octal digits"}},
		{"umask too large", base(map[string]string{"umask": "1022"}), map[string]string{"umask": "3 or 4 octal digits"}},
		{"umask short", base(map[string]string{"umask": "22"}), map[string]string{"umask": "3 or 4 octal digits"}},
		{"run as group alone", base(map[string]string{"run_as.group": "www-data"}), map[string]string{"run_as.group": "without run_as.user"}},
		{"several", base(map[string]string{"remove": "<delete>", "x": "1", "dir": "rel"}), map[string]string{
			"remove": "is required", "x": "unknown parameter", "dir": "absolute path",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := Kit{}.Validate(tt.params)
			got := map[string]string{}
			for _, p := range ps {
				if _, dup := got[p.Field]; dup {
					t.Errorf("two problems for %q: %v", p.Field, ps)
				}
				got[p.Field] = p.Message
			}
			if len(got) != len(tt.want) {
				t.Errorf("problems = %v, want fields %v", ps, tt.want)
			}
			for f, sub := range tt.want {
				if !strings.Contains(got[f], sub) {
					t.Errorf("problem for %q = %q, want it to contain %q", f, got[f], sub)
				}
			}
		})
	}
}

func TestNewRejectsInvalidParams(t *testing.T) {
	_, err := Kit{}.New(spec.Resource{Name: "web", Type: "app", Params: map[string]string{"restore": "x"}}, kit.Env{})
	if err == nil || !strings.Contains(err.Error(), "remove: is required") {
		t.Fatalf("err = %v, want a missing remove problem", err)
	}
}

// logBuffer is a goroutine-safe buffer for a JSON slog handler.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var rs []map[string]any
	for line := range strings.Lines(l.b.String()) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("bad log line %q: %v", line, err)
		}
		rs = append(rs, r)
	}
	return rs
}

func newInstance(t *testing.T, params map[string]string, timeout time.Duration) (*instance, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	env := kit.Env{
		Node: "n1", Hierarchy: "h1", DataDir: "/var/lib/lifeboat-test",
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "n1", "hierarchy", "h1", "resource", "web"),
	}
	res := spec.Resource{Name: "web", Type: "app", Params: params, Timeout: spec.Duration(timeout)}
	in, err := Kit{}.New(res, env)
	if err != nil {
		t.Fatal(err)
	}
	return in.(*instance), logs
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEnvironment(t *testing.T) {
	t.Setenv("LB_TEST_AGENT_SECRET", "leak")
	out := filepath.Join(t.TempDir(), "env")
	in, _ := newInstance(t, base(map[string]string{
		"restore":  `env > "$OUT"`,
		"dir":      "/tmp",
		"env.OUT":  out,
		"env.PORT": "8080",
	}), 0)
	if err := in.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for line := range strings.Lines(readFile(t, out)) {
		k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		got[k] = v
	}
	home := os.Getenv("HOME")
	if home == "" {
		home = "/"
	}
	want := map[string]string{
		"PATH":                 "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME":                 home,
		"LB_NODE":              "n1",
		"LB_HIERARCHY":         "h1",
		"LB_RESOURCE":          "web",
		"LB_ACTION":            "restore",
		"LB_DATA_DIR":          "/var/lib/lifeboat-test",
		"LB_AGENT_PID":         strconv.Itoa(os.Getpid()),
		"LB_PARAM_RESTORE":     `env > "$OUT"`,
		"LB_PARAM_REMOVE":      "true",
		"LB_PARAM_QUICKCHECK":  "true",
		"LB_PARAM_DIR":         "/tmp",
		"OUT":                  out,
		"PORT":                 "8080",
		"LB_TEST_AGENT_SECRET": "",
		"LB_PARAM_ENV_PORT":    "",
		"LB_PARAM_ENV_OUT":     "",
		"LB_PARAM_RECOVER":     "",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// The shell may add a few variables of its own (PWD, SHLVL, _), but
	// nothing else from the agent's environment may appear.
	for k := range got {
		if _, ok := want[k]; !ok && !slices.Contains([]string{"PWD", "OLDPWD", "SHLVL", "_"}, k) {
			t.Errorf("unexpected variable %s=%q in the command's environment", k, got[k])
		}
	}
}

func TestEnvOverridesPath(t *testing.T) {
	out := filepath.Join(t.TempDir(), "path")
	in, _ := newInstance(t, base(map[string]string{
		"restore": `echo "$PATH" > ` + out, "env.PATH": "/opt/bin:/bin",
	}), 0)
	if err := in.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, out); got != "/opt/bin:/bin\n" {
		t.Errorf("PATH = %q", got)
	}
}

func TestActionNames(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	cmd := `echo "$LB_ACTION" >> "$LOG"`
	in, _ := newInstance(t, map[string]string{
		"restore": cmd, "remove": cmd, "quickcheck": cmd, "recover": cmd, "env.LOG": log,
	}, 0)
	ctx := context.Background()
	if err := in.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := in.QuickCheck(ctx); h != kit.Healthy || err != nil {
		t.Fatalf("QuickCheck = %v, %v", h, err)
	}
	if err := in.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, log); got != "restore\nremove\nquickcheck\nrecover\n" {
		t.Errorf("actions run = %q", got)
	}
}

func TestWorkingDir(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "pwd")
	for _, tt := range []struct{ dir, want string }{{dir, dir}, {"", "/"}} {
		params := base(map[string]string{"restore": "pwd -P > " + out})
		if tt.dir != "" {
			params["dir"] = tt.dir
		}
		in, _ := newInstance(t, params, 0)
		if err := in.Restore(context.Background()); err != nil {
			t.Fatal(err)
		}
		want, err := filepath.EvalSymlinks(tt.want)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(readFile(t, out)); got != want {
			t.Errorf("dir %q: working directory = %q, want %q", tt.dir, got, want)
		}
	}
}

// The commands get the umask of a login shell (or the umask parameter),
// not the agent's 077; their own $0 and line numbers are as with sh -c.
func TestUmask(t *testing.T) {
	old := syscall.Umask(0o077) // as the agent runs
	defer syscall.Umask(old)
	for _, tt := range []struct {
		umask string
		want  os.FileMode
	}{{"", 0o644}, {"027", 0o640}, {"0077", 0o600}} {
		f := filepath.Join(t.TempDir(), "created")
		params := base(map[string]string{"restore": "touch " + f + "\necho \"$0\" > " + f + ".0"})
		if tt.umask != "" {
			params["umask"] = tt.umask
		}
		in, _ := newInstance(t, params, 0)
		if err := in.Restore(context.Background()); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != tt.want {
			t.Errorf("umask %q: created a file with mode %v, want %v", tt.umask, got, tt.want)
		}
		if got := strings.TrimSpace(readFile(t, f+".0")); got != "/bin/sh" {
			t.Errorf("$0 = %q, want /bin/sh", got)
		}
	}
	// A shell error names the command's own line.
	in, _ := newInstance(t, base(map[string]string{"restore": "true\nno-such-command-lb"}), 0)
	if err := in.Restore(context.Background()); err == nil || !strings.Contains(err.Error(), "2: no-such-command-lb") {
		t.Errorf("error %v, want the command's line 2 named", err)
	}
}

func TestMissingDir(t *testing.T) {
	in, _ := newInstance(t, base(map[string]string{"dir": "/nonexistent/lifeboat-test"}), 0)
	if err := in.Restore(context.Background()); err == nil || !strings.Contains(err.Error(), "restore web: could not run the command") {
		t.Errorf("Restore err = %v", err)
	}
	if h, err := in.QuickCheck(context.Background()); h != kit.Failed || err == nil {
		t.Errorf("QuickCheck = %v, %v; want failed with an error", h, err)
	}
}

func TestQuickCheckHealth(t *testing.T) {
	tests := []struct {
		cmd     string
		timeout time.Duration
		want    kit.Health
		errSub  string // "" means no error
	}{
		{"exit 0", 0, kit.Healthy, ""},
		{"echo fine", 0, kit.Healthy, ""},
		{"echo nope; exit 1", 0, kit.Failed, "quickcheck web: command exited with status 1: nope"},
		{"echo 'api throttled' >&2; exit 2", 0, kit.Unknown, "quickcheck web: command exited with status 2: api throttled"},
		{"exit 3", 0, kit.Failed, "command exited with status 3"},
		{"no-such-command-lifeboat", 0, kit.Failed, "status 127"},
		{"kill -TERM $$", 0, kit.Failed, "killed by signal"},
		{"sleep 30", 200 * time.Millisecond, kit.Unknown, "quickcheck web: timed out after 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			t.Parallel()
			in, _ := newInstance(t, base(map[string]string{"quickcheck": tt.cmd}), tt.timeout)
			h, err := in.QuickCheck(context.Background())
			if h != tt.want {
				t.Errorf("health = %v, want %v", h, tt.want)
			}
			switch {
			case tt.errSub == "" && err != nil:
				t.Errorf("err = %v, want nil", err)
			case tt.errSub != "" && (err == nil || !strings.Contains(err.Error(), tt.errSub)):
				t.Errorf("err = %v, want it to contain %q", err, tt.errSub)
			}
		})
	}
}

// gone reports whether pid no longer runs. A zombie counts as gone: the
// killed child may be reparented to a PID 1 that does not reap.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return os.IsNotExist(err)
	}
	// Format: pid (comm) state ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, path)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	in, logs := newInstance(t, base(map[string]string{
		"restore":     `echo starting; sleep 30 & echo $! > "$PIDFILE"; wait`,
		"env.PIDFILE": pidFile,
	}), 300*time.Millisecond)
	start := time.Now()
	err := in.Restore(context.Background())
	elapsed := time.Since(start)
	if err == nil || err.Error() != "restore web: timed out after 300ms: starting" {
		t.Fatalf("err = %v", err)
	}
	if elapsed > 5*time.Second {
		t.Fatalf("Restore took %v, want well under the 30s sleep", elapsed)
	}
	pid := readPid(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	waitGone(t, pid)

	rs := logs.records(t)
	if len(rs) != 1 || rs[0]["level"] != "WARN" || rs[0]["exit_code"] != float64(-1) || rs[0]["action"] != "restore" {
		t.Errorf("log records = %v", rs)
	}
}

func TestCancelKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	in, _ := newInstance(t, base(map[string]string{
		"remove":      `sleep 30 & echo $! > "$PIDFILE.tmp"; mv "$PIDFILE.tmp" "$PIDFILE"; wait`,
		"env.PIDFILE": pidFile,
	}), 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- in.Remove(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(pidFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("remove command did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	pid := readPid(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "remove web: canceled: context canceled") {
			t.Errorf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Remove did not return after cancellation")
	}
	waitGone(t, pid)
}

func TestBackgroundDaemonHoldingOutput(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	in, logs := newInstance(t, base(map[string]string{
		"restore":     `sleep 30 & echo $! > "$PIDFILE"; echo started`,
		"env.PIDFILE": pidFile,
	}), 20*time.Second)
	in.waitDelay = 300 * time.Millisecond
	start := time.Now()
	err := in.Restore(context.Background())
	elapsed := time.Since(start)
	pid := readPid(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err != nil {
		t.Fatalf("Restore = %v, want success: the script exited 0", err)
	}
	if elapsed > 5*time.Second {
		t.Fatalf("Restore took %v, want about the wait delay", elapsed)
	}
	// The daemon was left running: a restore that exits normally is not
	// killed.
	if gone(pid) {
		t.Error("background daemon was killed")
	}
	rs := logs.records(t)
	if len(rs) != 2 || rs[0]["output"] != "started\n" || !strings.Contains(rs[1]["msg"].(string), "kept its output open") {
		t.Errorf("log records = %v", rs)
	}
}

func TestDefaultWaitDelayBoundsBackgroundDaemon(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	in, _ := newInstance(t, base(map[string]string{
		"restore":     `sleep 30 & echo $! > "$PIDFILE"`,
		"env.PIDFILE": pidFile,
	}), 0)
	start := time.Now()
	err := in.Restore(context.Background())
	elapsed := time.Since(start)
	pid := readPid(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err != nil || elapsed > defaultWaitDelay+3*time.Second {
		t.Fatalf("Restore = %v after %v", err, elapsed)
	}
}

func TestRecoverFallsBackToRemoveRestore(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	params := map[string]string{
		"restore":    `echo "restore $LB_ACTION" >> "$LOG"`,
		"remove":     `echo "remove $LB_ACTION" >> "$LOG"`,
		"quickcheck": "true",
		"env.LOG":    log,
	}
	in, _ := newInstance(t, params, 0)
	if err := in.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, log); got != "remove remove\nrestore restore\n" {
		t.Errorf("recover without a recover command ran %q", got)
	}

	// A failing remove stops the fallback before restore.
	os.Remove(log)
	params["remove"] = `echo "remove" >> "$LOG"; echo "busy" >&2; exit 1`
	in, _ = newInstance(t, params, 0)
	err := in.Recover(context.Background())
	if err == nil || err.Error() != "remove web: command exited with status 1: busy" {
		t.Errorf("err = %v", err)
	}
	if got := readFile(t, log); got != "remove\n" {
		t.Errorf("ran %q, want only remove", got)
	}

	// With a recover command, only it runs.
	os.Remove(log)
	params["recover"] = `echo "recover $LB_ACTION" >> "$LOG"`
	in, _ = newInstance(t, params, 0)
	if err := in.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, log); got != "recover recover\n" {
		t.Errorf("recover ran %q", got)
	}
}

func TestOutputInErrorAndLog(t *testing.T) {
	in, logs := newInstance(t, base(map[string]string{
		"restore": `echo first; echo "port 8080 already in use" >&2; printf '\n\n'; exit 3`,
	}), 0)
	err := in.Restore(context.Background())
	if err == nil || err.Error() != "restore web: command exited with status 3: port 8080 already in use" {
		t.Fatalf("err = %v", err)
	}
	rs := logs.records(t)
	if len(rs) != 1 {
		t.Fatalf("log records = %v", rs)
	}
	r := rs[0]
	for k, want := range map[string]any{
		"node": "n1", "hierarchy": "h1", "resource": "web", "action": "restore",
		"exit_code": float64(3), "output": "first\nport 8080 already in use\n\n\n", "level": "WARN",
	} {
		if r[k] != want {
			t.Errorf("log %s = %#v, want %#v", k, r[k], want)
		}
	}
	if _, ok := r["duration"]; !ok {
		t.Error("log has no duration")
	}
}

func TestErrorWithoutOutput(t *testing.T) {
	in, _ := newInstance(t, base(map[string]string{"remove": "exit 4"}), 0)
	if err := in.Remove(context.Background()); err == nil || err.Error() != "remove web: command exited with status 4" {
		t.Errorf("err = %v", err)
	}
}

func TestOutputIsBounded(t *testing.T) {
	in, logs := newInstance(t, base(map[string]string{
		"restore": `i=0; while [ $i -lt 2000 ]; do echo "line $i of noise"; i=$((i+1)); done; echo "the end"; exit 1`,
	}), 0)
	err := in.Restore(context.Background())
	if err == nil || !strings.HasSuffix(err.Error(), ": the end") {
		t.Fatalf("err = %v", err)
	}
	out := logs.records(t)[0]["output"].(string)
	if !strings.HasPrefix(out, "[earlier output dropped]\n") || !strings.HasSuffix(out, "line 1999 of noise\nthe end\n") {
		t.Errorf("output starts %q and ends %q", out[:40], out[len(out)-40:])
	}
	if len(out) > outputLimit+len("[earlier output dropped]\n") {
		t.Errorf("output is %d bytes, want at most %d", len(out), outputLimit)
	}
}

func TestTailBuffer(t *testing.T) {
	var b tailBuffer
	b.Write([]byte("abc"))
	if b.String() != "abc" || b.dropped {
		t.Fatalf("got %q", b.String())
	}
	big := bytes.Repeat([]byte("x"), outputLimit-1)
	b.Write(big)
	b.Write([]byte("yz"))
	if len(b.buf) != outputLimit || !b.dropped || !bytes.HasSuffix(b.buf, []byte("xyz")) || b.buf[0] != 'x' {
		t.Fatalf("len %d dropped %v", len(b.buf), b.dropped)
	}
	var c tailBuffer
	huge := append(bytes.Repeat([]byte("a"), 2*outputLimit), "\nlast words\n"...)
	c.Write(huge)
	if len(c.buf) != outputLimit || !c.dropped || c.lastLine() != "last words" {
		t.Fatalf("len %d dropped %v last %q", len(c.buf), c.dropped, c.lastLine())
	}
	var d tailBuffer
	d.Write([]byte(strings.Repeat("é", tailLimit)))
	if l := d.lastLine(); len(l) > tailLimit+len("…") || !strings.HasSuffix(l, "…") {
		t.Errorf("lastLine = %q", l)
	}
}

func TestDefaultTimeout(t *testing.T) {
	in, _ := newInstance(t, base(nil), 0)
	if in.timeout != spec.DefaultActionTimeout {
		t.Errorf("timeout = %v", in.timeout)
	}
}

// run_as: the commands run as the user named, with its home; an unknown
// user or group is refused on the node (ValidateHost, New) with the fix.
func TestRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running a command as another user needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody here: %v", err)
	}
	in, _ := newInstance(t, base(map[string]string{
		"run_as.user": "nobody",
		"restore":     `echo "$(id -u):$(id -g):$HOME:$LB_PARAM_RUN_AS_USER"; exit 3`,
	}), 5*time.Second)
	err = in.Restore(context.Background())
	want := fmt.Sprintf("%s:%s:%s:nobody", nobody.Uid, nobody.Gid, nobody.HomeDir)
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("restore as nobody: %v, want it to end with %q", err, want)
	}
	// By numeric id, with a group.
	g, err := user.LookupGroupId(nobody.Gid)
	if err != nil {
		t.Skipf("nobody's group: %v", err)
	}
	in, _ = newInstance(t, base(map[string]string{
		"run_as.user": nobody.Uid, "run_as.group": g.Name,
		"quickcheck": fmt.Sprintf(`test "$(id -u)" = %s && test "$(id -g)" = %s`, nobody.Uid, g.Gid),
	}), 5*time.Second)
	if h, err := in.QuickCheck(context.Background()); h != kit.Healthy {
		t.Fatalf("quickcheck as uid %s: %v %v", nobody.Uid, h, err)
	}
	// Without run_as the commands stay root.
	in, _ = newInstance(t, base(map[string]string{"quickcheck": `test "$(id -u)" = 0`}), 5*time.Second)
	if h, err := in.QuickCheck(context.Background()); h != kit.Healthy {
		t.Fatalf("quickcheck as root: %v %v", h, err)
	}

	for _, c := range []struct {
		params       map[string]string
		field, words string
	}{
		{map[string]string{"run_as.user": "no-such-user-lb"}, "run_as.user", `run_as.user "no-such-user-lb": no such user on this node`},
		{map[string]string{"run_as.user": "nobody", "run_as.group": "no-such-group-lb"}, "run_as.group", `run_as.group "no-such-group-lb": no such group on this node`},
	} {
		ps := Kit{}.ValidateHost(base(c.params))
		if len(ps) != 1 || ps[0].Field != c.field || !strings.Contains(ps[0].Message, c.words) || !strings.Contains(ps[0].Message, "create it") {
			t.Errorf("ValidateHost(%v) = %v", c.params, ps)
		}
		if ps := (Kit{}).Validate(base(c.params)); len(ps) != 0 {
			t.Errorf("Validate (no I/O) refused %v: %v", c.params, ps)
		}
		_, err := Kit{}.New(spec.Resource{Name: "web", Type: "app", Params: base(c.params)}, kit.Env{Node: "n1"})
		if err == nil || !strings.Contains(err.Error(), c.words) {
			t.Errorf("New(%v): %v", c.params, err)
		}
	}
	if ps := (Kit{}).ValidateHost(base(map[string]string{"run_as.user": "nobody"})); len(ps) != 0 {
		t.Errorf("ValidateHost(nobody) = %v", ps)
	}
}
