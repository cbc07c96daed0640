// Package app is the generic application kit (type "app"): it manages a
// resource through four shell commands supplied in the spec.
//
// Parameters:
//
//	restore     required  brings the application into service
//	remove      required  takes it out of service
//	quickcheck  required  checks it; see "Health" below
//	recover     optional  repairs it in place; when absent, Recover runs
//	                      remove and then restore
//	dir         optional  absolute working directory for the commands
//	                      (default "/")
//	env.NAME    optional  sets the environment variable NAME for the commands
//	                      (e.g. env.PORT: "8080" sets PORT=8080)
//	run_as.user   optional  runs the commands as this user (a name or a
//	                        numeric id) instead of root
//	run_as.group  optional  with run_as.user: the primary group (default:
//	                        the user's own)
//	umask       optional  the file mode creation mask of the commands, in
//	                      octal (default 022: files they create are
//	                      readable by all, as from a login shell; the
//	                      agent itself runs with 077)
//
// Any other parameter is a validation error. Each command runs as
// /bin/sh -c CMD (after a shell that sets the umask and execs it), bounded by the resource's timeout (spec.DefaultActionTimeout
// when unset) and by the caller's context.
//
// # User
//
// The agent runs as root, and so do the commands unless run_as.user names
// another user: they then run with that user's id, the group run_as.group
// names (or the user's primary group) and the user's supplementary groups,
// and HOME is the user's home directory. Validate checks the names' form
// only (it runs in the CLI too); the agent that receives an apply checks
// that the user and group exist on its node (ValidateHost) and refuses the
// spec when they do not, and New fails on a node that lacks them.
//
// # Environment
//
// Commands do NOT inherit the agent's environment. This is deliberate: what a
// command sees is exactly what the spec says, never whatever happened to be
// set in the shell or unit that started the agent. A command gets only:
//
//	PATH            /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
//	HOME            the agent's $HOME ("/" if unset); with run_as.user,
//	                that user's home directory
//	LB_NODE         this node's name
//	LB_HIERARCHY    the hierarchy's name
//	LB_RESOURCE     the resource's name
//	LB_ACTION       restore, remove, quickcheck or recover
//	LB_DATA_DIR     the agent's data directory
//	LB_AGENT_PID    the agent's process id (a service may stop with its agent)
//	LB_PARAM_<KEY>  every parameter other than env.*, the key upper-cased with
//	                anything but letters and digits turned into "_"
//	                (LB_PARAM_RESTORE, LB_PARAM_DIR, ...)
//	NAME            for every env.NAME parameter (these may override PATH and
//	                HOME; names starting with LB_ are reserved)
//
// # Health
//
// QuickCheck maps the exit status of the quickcheck command: 0 is
// kit.Healthy; 2 is kit.Unknown, meaning "the check could not tell" (the
// resource stays in service and the check is retried); a timeout is also
// kit.Unknown; any other status, a kill by a signal, or a command that cannot
// be started is kit.Failed. Every result other than Healthy comes with an
// error describing it.
//
// # Processes and output
//
// Each command runs in its own process group. On timeout or cancellation the
// whole group is killed with SIGKILL, so children the script started die with
// it. A command that exits normally is never killed: a restore script may
// leave a daemon running in the background. If that daemon keeps the
// command's stdout or stderr open, the action still returns about two seconds
// after the script exits, but the daemon's output pipe is then closed under
// it (later writes get SIGPIPE): daemons should redirect their output, e.g.
// "mydaemon >/var/log/mydaemon.log 2>&1 &".
//
// Combined stdout and stderr (the last 8 KiB) is logged through the kit's
// logger, and the last line of it is included in errors, for example
// "restore web: command exited with status 3: port 8080 already in use".
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/timerslack"
)

// Type is the resource type name of this kit.
const Type = "app"

// Parameter keys.
const (
	ParamRestore    = "restore"
	ParamRemove     = "remove"
	ParamQuickCheck = "quickcheck"
	ParamRecover    = "recover"
	ParamDir        = "dir"
	// ParamEnvPrefix starts keys that set environment variables.
	ParamEnvPrefix  = "env."
	ParamRunAsUser  = "run_as.user"
	ParamRunAsGroup = "run_as.group"
	ParamUmask      = "umask"
)

// DefaultUmask is the commands' umask unless the umask parameter says
// otherwise: that of a login shell, not the agent's 077, so that what a
// restore command creates (a pid file, a socket, a log) is as readable as
// when an operator runs it by hand.
const DefaultUmask = "022"

// ExitUnknown is the quickcheck exit status meaning "the check could not
// tell"; it maps to kit.Unknown.
const ExitUnknown = 2

const (
	basePath         = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	outputLimit      = 8 << 10         // bytes of output kept per command
	tailLimit        = 200             // bytes of the last output line put in errors
	defaultWaitDelay = 2 * time.Second // how long output may stay open after exit
)

const validParams = "restore, remove, quickcheck, recover, dir, run_as.user, run_as.group, umask, and env.NAME for environment variables"

var required = []struct{ key, what string }{
	{ParamRestore, "brings the application into service"},
	{ParamRemove, "takes the application out of service"},
	{ParamQuickCheck, "checks the application (exit 0 when healthy, 2 when it cannot tell, anything else when it has failed)"},
}

// Kit is the app resource type.
type Kit struct{}

var (
	_ kit.Kit           = Kit{}
	_ kit.HostValidator = Kit{}
)

// Type returns "app".
func (Kit) Type() string { return Type }

// Validate checks the parameters; it reports every problem, not only the
// first.
func (Kit) Validate(params map[string]string) []spec.Problem {
	var ps []spec.Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, spec.Problem{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	for _, r := range required {
		if _, ok := params[r.key]; !ok {
			add(r.key, "is required: give the shell command that %s", r.what)
		}
	}
	for _, k := range spec.SortedKeys(params) {
		v := params[k]
		if strings.ContainsRune(v, 0) {
			add(k, "must not contain a NUL byte")
			continue
		}
		switch {
		case k == ParamRestore || k == ParamRemove || k == ParamQuickCheck:
			if strings.TrimSpace(v) == "" {
				add(k, "is empty: give the shell command to run")
			}
		case k == ParamRecover:
			if strings.TrimSpace(v) == "" {
				add(k, "is empty: give the shell command to run, or leave recover out to run remove and then restore instead")
			}
		case k == ParamDir:
			if !filepath.IsAbs(v) {
				add(k, "%q is not an absolute path: give the working directory as a full path such as /srv/myapp", v)
			}
		case k == ParamRunAsUser || k == ParamRunAsGroup:
			if !validAccountName(v) {
				add(k, "%q is not a user or group name (letters, digits, '_', '-', '.', not starting with '-'; or a numeric id)", v)
			}
			if k == ParamRunAsGroup && params[ParamRunAsUser] == "" {
				add(k, "is set without run_as.user: name the user the commands run as")
			}
		case k == ParamUmask:
			if !validUmask(v) {
				add(k, "%q is not a umask: give 3 or 4 octal digits such as 022 or 027", v)
			}
		case strings.HasPrefix(k, ParamEnvPrefix):
			name := strings.TrimPrefix(k, ParamEnvPrefix)
			if !validEnvName(name) {
				add(k, "%q is not a valid environment variable name: use letters, digits and '_', not starting with a digit", name)
			} else if strings.HasPrefix(strings.ToUpper(name), "LB_") {
				add(k, "names starting with LB_ are reserved for the variables lifeboat sets: choose another name")
			}
		default:
			add(k, "unknown parameter: the valid parameters are %s", validParams)
		}
	}
	return ps
}

// ValidateHost checks that run_as.user and run_as.group exist on this
// node.
func (Kit) ValidateHost(params map[string]string) []spec.Problem {
	if params[ParamRunAsUser] == "" {
		return nil
	}
	if _, _, err := lookupRunAs(params[ParamRunAsUser], params[ParamRunAsGroup]); err != nil {
		field := ParamRunAsUser
		var ge groupError
		if errors.As(err, &ge) {
			field = ParamRunAsGroup
		}
		return []spec.Problem{{Field: field, Message: err.Error()}}
	}
	return nil
}

// validUmask reports whether s is a umask: 3 or 4 octal digits, at most
// 0777.
func validUmask(s string) bool {
	if len(s) < 3 || len(s) > 4 {
		return false
	}
	n, err := strconv.ParseUint(s, 8, 16)
	return err == nil && n <= 0o777
}

// validAccountName reports whether s has the form of a user or group name
// (as useradd accepts it) or a numeric id.
func validAccountName(s string) bool {
	if s == "" || len(s) > 32 || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c == '-' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// groupError marks a lookup failure of run_as.group.
type groupError struct{ error }

// lookupRunAs resolves the user (and group) commands run as: the
// credential and the user's home directory.
func lookupRunAs(userName, groupName string) (*syscall.Credential, string, error) {
	lookupUser := user.Lookup
	if isNumeric(userName) {
		lookupUser = user.LookupId
	}
	u, err := lookupUser(userName)
	if err != nil {
		return nil, "", fmt.Errorf("run_as.user %q: no such user on this node (%v): create it (useradd --system %s) or name an existing user", userName, err, userName)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, "", fmt.Errorf("run_as.user %q: user id %q or group id %q is not numeric", userName, u.Uid, u.Gid)
	}
	if groupName != "" {
		lookupGroup := user.LookupGroup
		if isNumeric(groupName) {
			lookupGroup = user.LookupGroupId
		}
		g, err := lookupGroup(groupName)
		if err != nil {
			return nil, "", groupError{fmt.Errorf("run_as.group %q: no such group on this node (%v): create it (groupadd --system %s) or name an existing group", groupName, err, groupName)}
		}
		if gid, err = strconv.ParseUint(g.Gid, 10, 32); err != nil {
			return nil, "", groupError{fmt.Errorf("run_as.group %q: group id %q is not numeric", groupName, g.Gid)}
		}
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, "", fmt.Errorf("run_as.user %q: list its groups: %w", userName, err)
	}
	for _, id := range ids {
		if n, err := strconv.ParseUint(id, 10, 32); err == nil {
			cred.Groups = append(cred.Groups, uint32(n))
		}
	}
	return cred, u.HomeDir, nil
}

func isNumeric(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

func validEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// New makes the instance for one resource. It fails if the parameters do
// not validate.
func (k Kit) New(res spec.Resource, env kit.Env) (kit.Instance, error) {
	if ps := k.Validate(res.Params); len(ps) > 0 {
		errs := make([]error, len(ps))
		for i, p := range ps {
			errs[i] = p
		}
		return nil, fmt.Errorf("app resource %q: invalid parameters: %w", res.Name, errors.Join(errs...))
	}
	in := &instance{
		node:      env.Node,
		hierarchy: env.Hierarchy,
		resource:  res.Name,
		cmds:      map[string]string{},
		dir:       "/",
		umask:     DefaultUmask,
		timeout:   res.Timeout.D(),
		waitDelay: defaultWaitDelay,
		log:       env.Logger,
	}
	if in.timeout <= 0 {
		in.timeout = spec.DefaultActionTimeout
	}
	if in.log == nil {
		in.log = slog.New(slog.DiscardHandler)
	}
	home := os.Getenv("HOME")
	if home == "" {
		home = "/"
	}
	vars := map[string]string{
		"PATH":         basePath,
		"HOME":         home,
		"LB_NODE":      env.Node,
		"LB_HIERARCHY": env.Hierarchy,
		"LB_RESOURCE":  res.Name,
		"LB_DATA_DIR":  env.DataDir,
		"LB_AGENT_PID": strconv.Itoa(os.Getpid()),
	}
	if name := res.Params[ParamRunAsUser]; name != "" {
		cred, userHome, err := lookupRunAs(name, res.Params[ParamRunAsGroup])
		if err != nil {
			return nil, fmt.Errorf("app resource %q on %s: %w", res.Name, env.Node, err)
		}
		in.cred = cred
		if userHome != "" {
			vars["HOME"] = userHome
		}
	}
	for key, v := range res.Params {
		switch {
		case strings.HasPrefix(key, ParamEnvPrefix):
			continue // set last, so they may override PATH and HOME
		case key == ParamDir:
			in.dir = v
		case key == ParamUmask:
			in.umask = v
		case key == ParamRunAsUser || key == ParamRunAsGroup:
		default:
			in.cmds[key] = v
		}
		vars["LB_PARAM_"+paramVarName(key)] = v
	}
	for key, v := range res.Params {
		if name, ok := strings.CutPrefix(key, ParamEnvPrefix); ok {
			vars[name] = v
		}
	}
	for _, name := range spec.SortedKeys(vars) {
		in.env = append(in.env, name+"="+vars[name])
	}
	return in, nil
}

// paramVarName upper-cases key and turns anything but letters and digits
// into "_".
func paramVarName(key string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		default:
			return '_'
		}
	}, key)
}

type instance struct {
	node, hierarchy, resource string
	cmds                      map[string]string // action -> shell command
	dir                       string
	umask                     string              // octal, validated
	env                       []string            // without LB_ACTION
	cred                      *syscall.Credential // run_as; nil: the agent's own (root)
	timeout                   time.Duration
	waitDelay                 time.Duration
	log                       *slog.Logger
}

var _ kit.Instance = (*instance)(nil)

// Restore runs the restore command.
func (in *instance) Restore(ctx context.Context) error { return in.run(ctx, kit.OpRestore).err }

// Remove runs the remove command.
func (in *instance) Remove(ctx context.Context) error { return in.run(ctx, kit.OpRemove).err }

// QuickCheck runs the quickcheck command and maps its exit status to a
// Health (see the package documentation).
func (in *instance) QuickCheck(ctx context.Context) (kit.Health, error) {
	o := in.run(ctx, kit.OpQuickCheck)
	switch {
	case o.err == nil:
		return kit.Healthy, nil
	case o.interrupted || o.code == ExitUnknown:
		return kit.Unknown, o.err
	default:
		return kit.Failed, o.err
	}
}

// Recover runs the recover command if there is one, otherwise remove and
// then restore.
func (in *instance) Recover(ctx context.Context) error {
	if _, ok := in.cmds[kit.OpRecover]; ok {
		return in.run(ctx, kit.OpRecover).err
	}
	if err := in.run(ctx, kit.OpRemove).err; err != nil {
		return err
	}
	return in.run(ctx, kit.OpRestore).err
}

// outcome is the result of one command.
type outcome struct {
	code        int  // exit status; -1 if the command did not exit on its own
	interrupted bool // timed out or canceled
	err         error
}

func (in *instance) run(ctx context.Context, action string) outcome {
	cctx, cancel := context.WithTimeout(ctx, in.timeout)
	defer cancel()

	out := &tailBuffer{}
	// The agent's umask is 077; the command gets its own: a first shell
	// sets it and execs the command's shell (so that the command's own
	// line numbers and $0 are as with a plain sh -c).
	cmd := exec.CommandContext(cctx, "/bin/sh", "-c", "umask "+in.umask+` && exec /bin/sh -c "$0"`, in.cmds[action])
	cmd.Dir = in.dir
	cmd.Env = append(slices.Clip(in.env), "LB_ACTION="+action)
	cmd.Stdout, cmd.Stderr = out, out // same writer: exec serialises writes
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: in.cred}
	cmd.Cancel = func() error {
		// Kill the whole process group, not just the shell.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return os.ErrProcessDone
			}
			return err
		}
		return nil
	}
	// Bound the wait for output pipes held open by background processes,
	// after the shell has exited or after the group has been killed.
	cmd.WaitDelay = in.waitDelay

	start := time.Now()
	// Started with the agent's original timer slack, not its own.
	runErr := timerslack.Start(cmd)
	if runErr == nil {
		runErr = cmd.Wait()
	}
	dur := time.Since(start)

	o := outcome{code: -1}
	st := cmd.ProcessState
	var msg string
	switch {
	case cctx.Err() != nil && (st == nil || !st.Exited()):
		o.interrupted = true
		if ctx.Err() != nil {
			msg = fmt.Sprintf("canceled: %v", context.Cause(ctx))
		} else {
			msg = fmt.Sprintf("timed out after %s", in.timeout)
		}
	case st == nil:
		msg = fmt.Sprintf("could not run the command: %v", runErr)
	case st.Exited():
		o.code = st.ExitCode()
		if o.code != 0 {
			msg = fmt.Sprintf("command exited with status %d", o.code)
		}
	default:
		msg = "command was killed"
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			msg = fmt.Sprintf("command was killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
		}
	}
	if msg != "" {
		if tail := out.lastLine(); tail != "" {
			msg += ": " + tail
		}
		o.err = fmt.Errorf("%s %s: %s", action, in.resource, msg)
	}

	attrs := []any{
		"action", action, "duration", dur, "exit_code", o.code, "output", out.String(),
	}
	switch {
	case o.err != nil:
		in.log.Warn("app command failed", append(attrs, "error", o.err.Error())...)
	case action == kit.OpQuickCheck:
		in.log.Debug("app command succeeded", attrs...)
	default:
		in.log.Info("app command succeeded", attrs...)
	}
	if o.err == nil && errors.Is(runErr, exec.ErrWaitDelay) {
		in.log.Warn("app command exited but a background process kept its output open; "+
			"redirect that process's output (for example >/dev/null 2>&1) or it may be killed by SIGPIPE",
			"action", action)
	}
	return o
}

// tailBuffer keeps the last outputLimit bytes written to it.
type tailBuffer struct {
	buf     []byte
	dropped bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= outputLimit {
		b.dropped = b.dropped || len(b.buf) > 0 || len(p) > outputLimit
		b.buf = append(b.buf[:0], p[len(p)-outputLimit:]...)
		return n, nil
	}
	if over := len(b.buf) + len(p) - outputLimit; over > 0 {
		b.buf = b.buf[:copy(b.buf, b.buf[over:])]
		b.dropped = true
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

// String returns the kept output, marked when earlier output was dropped.
func (b *tailBuffer) String() string {
	s := strings.ToValidUTF8(string(b.buf), "\uFFFD")
	if b.dropped {
		return "[earlier output dropped]\n" + s
	}
	return s
}

// lastLine returns the last non-blank line of output, shortened for errors.
func (b *tailBuffer) lastLine() string {
	s := strings.TrimRight(string(b.buf), " \t\r\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(s)
	if len(s) > tailLimit {
		s = s[:tailLimit] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
