package doctor

// The watchdog check: a node that may hold resources nothing outside it
// arbitrates (kit.NodeFenced: the ip kit's local addresses) keeps them
// when its agent freezes, so only its watchdog stops it from answering for
// them after the cluster restored them elsewhere. The check reads the
// agent's watchdog settings, the device (internal/watchdog's Check), the
// file descriptors of the other processes, and the device's sysfs
// attributes; it never opens the device, which would start its timer.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/watchdog"
)

const wdID = "watchdog"

// WatchdogChecks are the checks of the node's watchdog, for the
// hierarchies with node-fenced resources. They report nothing when the
// node runs none.
func WatchdogChecks() []Check {
	return []Check{{ID: wdID, Run: checkWatchdog}}
}

// wdFenced lists, as "hierarchy (resource)", the resources this node may
// run whose kit needs node fencing: the kit or its instance implements
// kit.NodeFenced (making an instance has no side effects).
func wdFenced(env *Env) []string {
	var out []string
	for _, h := range env.Hierarchies {
		for _, r := range h.Resources {
			k, ok := env.Kits.Lookup(r.Type)
			if !ok {
				continue
			}
			nf, ok := k.(kit.NodeFenced)
			if !ok {
				inst, err := k.New(r, kit.Env{Node: env.Node, Hierarchy: h.Name})
				if err != nil {
					continue
				}
				if nf, ok = inst.(kit.NodeFenced); !ok {
					continue
				}
			}
			if nf.NeedsNodeFencing() {
				out = append(out, fmt.Sprintf("%s (%s)", h.Name, r.Name))
			}
		}
	}
	return out
}

func checkWatchdog(_ context.Context, env *Env) []Finding {
	fenced := wdFenced(env)
	if len(fenced) == 0 {
		return nil
	}
	what := fmt.Sprintf("hierarchies %s may put local addresses on this node, which nothing outside it takes away", strings.Join(fenced, ", "))
	dev := env.WatchdogDevice
	if dev == "" {
		return []Finding{{ID: wdID, Severity: Warning,
			Seen:    "no watchdog device is configured, and " + what + ": a frozen node keeps its addresses, answering for them while the cluster restores them on another node",
			Fix:     "configure watchdog.device: /dev/watchdog in the agent config; without a hardware watchdog load the software one (modprobe softdog, and echo softdog > /etc/modules-load.d/softdog.conf to load it at boot)",
			Command: "ls -l /dev/watchdog*; cat /sys/class/watchdog/*/identity"}}
	}
	if err := watchdog.Check(dev); err != nil {
		return []Finding{{ID: wdID, Severity: Critical,
			Seen:    fmt.Sprintf("%v; %s: lifeboat cannot arm the watchdog, so this node is not ready to take them over", err, what),
			Fix:     "point watchdog.device at the watchdog's character device (/dev/watchdog, or /dev/watchdogN) and run the agent as root; load softdog when the machine has no hardware watchdog",
			Command: "ls -l " + dev + "; lsmod | grep -i -e wdt -e dog"}}
	}
	var out []Finding
	holders, unreadable := wdHolders(env, dev)
	for _, h := range holders {
		out = append(out, Finding{ID: wdID, Severity: Critical,
			Seen: fmt.Sprintf("%s holds %s open: only one process may, so lifeboat cannot arm it (the device is busy), and %s: a frozen node would keep them",
				h.name(), h.device, what),
			Fix:     wdHolderFix(h),
			Command: "fuser -v " + strings.Join(wdAliases(dev), " ")})
	}
	if len(holders) == 0 && unreadable > 0 {
		out = append(out, Finding{ID: wdID, Severity: Info,
			Seen:    fmt.Sprintf("could not read the open files of %d processes to see whether another one holds %s", unreadable, dev),
			Fix:     "the agent runs as root normally; ask by hand",
			Command: "fuser -v " + strings.Join(wdAliases(dev), " ")})
	}
	if name := wdSysfsName(dev); name != "" {
		dir := "/sys/class/watchdog/" + name
		b, err := os.ReadFile(netRoot(env, dir+"/nowayout"))
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			identity, _ := os.ReadFile(netRoot(env, dir+"/identity"))
			id := strings.TrimSpace(string(identity))
			if id != "" {
				id = " (" + id + ")"
			}
			timeout := watchdog.Effective(dev, env.WatchdogTimeout)
			out = append(out, Finding{ID: wdID, Severity: Critical,
				Seen: fmt.Sprintf("%s%s cannot be stopped once started (%s/nowayout is 1): when lifeboat disarms it after the last local address left this node (a switchover, a stop), its timer keeps running and resets the machine %s later",
					dev, id, dir, timeout),
				Fix: "load the driver with nowayout=0: for softdog, options softdog nowayout=0 in /etc/modprobe.d/softdog.conf, then modprobe -r softdog && modprobe softdog; " +
					"a kernel built with CONFIG_WATCHDOG_NOWAYOUT=y needs the driver's nowayout=0 parameter the same way",
				Command: "cat " + dir + "/nowayout " + dir + "/identity"})
		}
	}
	return out
}

// wdHolder is a process holding the watchdog device open.
type wdHolder struct {
	pid                   int
	comm, cmdline, device string
}

func (h wdHolder) name() string {
	s := fmt.Sprintf("process %d (%s", h.pid, h.comm)
	if h.cmdline != "" && h.cmdline != h.comm {
		s += ": " + h.cmdline
	}
	return s + ")"
}

// wdHolderFix says how to free the device from h.
func wdHolderFix(h wdHolder) string {
	const other = "or give lifeboat another watchdog device (watchdog.device: /dev/watchdog1, or softdog beside a hardware one)"
	switch {
	case h.pid == 1:
		return "systemd feeds the watchdog itself (RuntimeWatchdogSec= in /etc/systemd/system.conf or system.conf.d/): set RuntimeWatchdogSec=off there and run systemctl daemon-reexec, " + other
	case h.comm == "watchdog" || h.comm == "watchdogd":
		return "the watchdog daemon feeds it: stop and disable it (systemctl disable --now watchdog), since lifeboat feeds the device itself, " + other
	case strings.HasPrefix(h.comm, "sbd"):
		return "SBD, Pacemaker's fencing daemon, feeds it: the two cannot share the device; stop SBD (systemctl disable --now sbd) on a node lifeboat manages, " + other
	case h.comm == "wdmd":
		return "wdmd, sanlock's watchdog multiplexer, feeds it: stop it (systemctl disable --now wdmd) where sanlock is not needed, " + other
	}
	return fmt.Sprintf("stop process %d (%s) or make it close the device, %s", h.pid, h.comm, other)
}

var wdNumbered = regexp.MustCompile(`^watchdog[0-9]+$`)

// wdAliases are the paths naming the device: the configured one, its
// target when it is a link, and /dev/watchdog and /dev/watchdog0, which
// are the same watchdog (the legacy node drives the first device).
func wdAliases(dev string) []string {
	set := map[string]bool{filepath.Clean(dev): true}
	if real, err := filepath.EvalSymlinks(dev); err == nil {
		set[real] = true
	}
	for p := range set {
		switch dir, base := filepath.Split(p); base {
		case "watchdog":
			set[filepath.Join(dir, "watchdog0")] = true
		case "watchdog0":
			set[filepath.Join(dir, "watchdog")] = true
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// wdSysfsName is the device's name under /sys/class/watchdog ("" when the
// path does not name a watchdog).
func wdSysfsName(dev string) string {
	paths := []string{dev}
	if real, err := filepath.EvalSymlinks(dev); err == nil {
		paths = append(paths, real)
	}
	for _, p := range paths {
		base := filepath.Base(p)
		if base == "watchdog" {
			return "watchdog0"
		}
		if wdNumbered.MatchString(base) {
			return base
		}
	}
	return ""
}

// wdHolders lists the processes other than the agent with the device open
// (their /proc/PID/fd links name it), and counts those whose descriptors
// could not be read.
func wdHolders(env *Env, dev string) ([]wdHolder, int) {
	self := env.AgentPID
	if self == 0 {
		self = os.Getpid()
	}
	names := map[string]bool{}
	for _, a := range wdAliases(dev) {
		names[a] = true
	}
	entries, err := os.ReadDir(netProc(env, ""))
	if err != nil {
		return nil, 0
	}
	var out []wdHolder
	unreadable := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		fdDir := netProc(env, filepath.Join(e.Name(), "fd"))
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				unreadable++
			}
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !names[target] {
				continue
			}
			h := wdHolder{pid: pid, device: target}
			if b, err := os.ReadFile(netProc(env, filepath.Join(e.Name(), "comm"))); err == nil {
				h.comm = strings.TrimSpace(string(b))
			}
			if b, err := os.ReadFile(netProc(env, filepath.Join(e.Name(), "cmdline"))); err == nil {
				h.cmdline = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
			}
			out = append(out, h)
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out, unreadable
}
