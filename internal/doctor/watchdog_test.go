package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// testKit is a kit whose NodeFenced answer is its own (kit-level, unlike
// the ip kit's, which its instances give).
type testKit struct {
	typ    string
	fenced bool
}

func (k testKit) Type() string                                   { return k.typ }
func (testKit) Validate(map[string]string) []spec.Problem        { return nil }
func (testKit) New(spec.Resource, kit.Env) (kit.Instance, error) { return nil, os.ErrInvalid }
func (k testKit) NeedsNodeFencing() bool                         { return k.fenced }

// fencedKits are the built-in kits and two test kits, one node-fenced.
func fencedKits() *kit.Registry {
	r, err := kits.Builtin().With(testKit{typ: "doctor-test-fenced", fenced: true}, testKit{typ: "doctor-test-unfenced"})
	if err != nil {
		panic(err)
	}
	return r
}

// wdEnv is node1 running hs with the watchdog dev, /proc and root in
// temporary directories.
func wdEnv(t *testing.T, dev string, hs ...spec.Hierarchy) *Env {
	return &Env{Kits: fencedKits(), Node: "node1", Hierarchies: hs, WatchdogDevice: dev, WatchdogTimeout: time.Second,
		ProcDir: t.TempDir(), RootDir: t.TempDir(), AgentPID: 500}
}

// fakeProcess adds pid with comm and cmdline to proc, holding the files
// open as descriptors 3, 4, ...
func fakeProcess(t *testing.T, proc string, pid, comm, cmdline string, open ...string) {
	t.Helper()
	files(t, proc, map[string]string{pid + "/comm": comm + "\n", pid + "/cmdline": strings.ReplaceAll(cmdline, " ", "\x00") + "\x00"})
	fd := filepath.Join(proc, pid, "fd")
	if err := os.MkdirAll(fd, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, target := range append([]string{"/dev/null", "socket:[4242]"}, open...) {
		if err := os.Symlink(target, filepath.Join(fd, string(rune('0'+i)))); err != nil {
			t.Fatal(err)
		}
	}
}

// fifo makes a named pipe, which watchdog.Check accepts as the test fake.
func fifo(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWatchdogConfig(t *testing.T) {
	web := ipHierarchy("web", "10.1.2.100/24", "eth0")
	other := spec.Hierarchy{Name: "db", Nodes: []string{"node1"}, Resources: []spec.Resource{
		{Name: "db-route", Type: "ec2", Params: map[string]string{"mode": "route", "cidr": "10.0.100.10/32", "route_tables": "rtb-1"}},
		{Name: "db-unfenced", Type: "doctor-test-unfenced"}}}
	dir := t.TempDir()
	regular := filepath.Join(dir, "watchdog-file")
	files(t, "/", map[string]string{regular: ""})
	for _, tc := range []struct {
		name    string
		dev     string
		hs      []spec.Hierarchy
		sev     string
		phrases []string
	}{
		{"nothing fenced", "", []spec.Hierarchy{other}, "", nil},
		{"ip resource, no watchdog", "", []spec.Hierarchy{web, other}, Warning,
			[]string{"no watchdog device is configured", "hierarchies web (web-ip) may put local addresses on this node", "a frozen node keeps its addresses"}},
		{"a kit fenced by its type", "", []spec.Hierarchy{{Name: "x", Resources: []spec.Resource{{Name: "x-f", Type: "doctor-test-fenced"}}}}, Warning,
			[]string{"hierarchies x (x-f)"}},
		{"device missing", filepath.Join(dir, "watchdog"), []spec.Hierarchy{web}, Critical, []string{"does not exist", "not ready to take them over"}},
		{"not a character device", regular, []spec.Hierarchy{web}, Critical, []string{"is not a character device"}},
		{"usable", "/dev/null", []spec.Hierarchy{web}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := expect(t, runChecks(t, wdEnv(t, tc.dev, tc.hs...), WatchdogChecks(), wdID), tc.sev, tc.phrases...)
			if tc.sev == Warning && (!strings.Contains(f.Fix, "watchdog.device: /dev/watchdog") || !strings.Contains(f.Fix, "modprobe softdog")) {
				t.Errorf("fix: %s", f.Fix)
			}
		})
	}
}

func TestWatchdogHolders(t *testing.T) {
	web := ipHierarchy("web", "10.1.2.100/24", "eth0")
	dev := fifo(t, filepath.Join(t.TempDir(), "dev", "watchdog"))
	legacy0 := filepath.Join(filepath.Dir(dev), "watchdog0")
	for _, tc := range []struct {
		name          string
		pid, comm     string
		cmdline, open string
		phrases       []string
		fix           string
	}{
		{"the watchdog daemon", "812", "watchdog", "/usr/sbin/watchdog -F", dev, []string{"process 812 (watchdog: /usr/sbin/watchdog -F) holds " + dev + " open"}, "systemctl disable --now watchdog"},
		{"sbd through watchdog0", "913", "sbd", "sbd: inquisitor", legacy0, []string{"process 913 (sbd: sbd: inquisitor) holds " + legacy0 + " open"}, "SBD, Pacemaker's fencing daemon"},
		{"systemd's runtime watchdog", "1", "systemd", "/sbin/init", legacy0, []string{"process 1 (systemd: /sbin/init)"}, "RuntimeWatchdogSec=off"},
		{"only the agent itself", "500", "lifeboat", "lifeboat agent", dev, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := wdEnv(t, dev, web)
			fakeProcess(t, env.ProcDir, "77", "bash", "bash", "/dev/pts/0")
			fakeProcess(t, env.ProcDir, tc.pid, tc.comm, tc.cmdline, tc.open)
			sev := Critical
			if tc.fix == "" {
				sev = ""
			}
			f := expect(t, runChecks(t, env, WatchdogChecks(), wdID), sev, tc.phrases...)
			if sev != "" && (!strings.Contains(f.Fix, tc.fix) || !strings.Contains(f.Command, "fuser -v "+dev+" "+legacy0)) {
				t.Errorf("fix or command: %+v", f)
			}
		})
	}
}

// TestWatchdogHoldersRealProc holds a device open in this very process and
// looks through the real /proc: found when the agent is another process,
// not when it is this one.
func TestWatchdogHoldersRealProc(t *testing.T) {
	dev := fifo(t, filepath.Join(t.TempDir(), "watchdog"))
	f, err := os.OpenFile(dev, os.O_RDWR, 0) // read-write: does not wait for a writer
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := &Env{ProcDir: "/proc", AgentPID: os.Getpid()}
	if hs, _ := wdHolders(env, dev); len(hs) != 0 {
		t.Fatalf("the agent's own descriptor counted: %+v", hs)
	}
	env.AgentPID = -1
	hs, _ := wdHolders(env, dev)
	if len(hs) != 1 || hs[0].pid != os.Getpid() || hs[0].comm == "" {
		t.Fatalf("holders = %+v, want this process (%d)", hs, os.Getpid())
	}
}

func TestWatchdogNowayout(t *testing.T) {
	web := ipHierarchy("web", "10.1.2.100/24", "eth0")
	for _, tc := range []struct {
		nowayout string
		sev      string
	}{{"1\n", Critical}, {"0\n", ""}} {
		env := wdEnv(t, "", web)
		env.WatchdogDevice = fifo(t, filepath.Join(t.TempDir(), "watchdog"))
		files(t, env.RootDir, map[string]string{"/sys/class/watchdog/watchdog0/nowayout": tc.nowayout, "/sys/class/watchdog/watchdog0/identity": "Software Watchdog\n"})
		f := expect(t, runChecks(t, env, WatchdogChecks(), wdID), tc.sev, "(Software Watchdog) cannot be stopped once started", "resets the machine 1s later")
		if tc.sev != "" && !strings.Contains(f.Fix, "options softdog nowayout=0") {
			t.Errorf("fix: %s", f.Fix)
		}
	}
	if got := wdSysfsName("/dev/watchdog3"); got != "watchdog3" {
		t.Errorf("sysfs name of /dev/watchdog3 = %q", got)
	}
	if got := wdSysfsName("/dev/null"); got != "" {
		t.Errorf("sysfs name of /dev/null = %q", got)
	}
}
