package doctor

// The network checks against the real kernel, as root, in two network
// namespaces of this test's own (named with the process id), joined by a
// veth pairs:
//
//	ns a (this node): lbd0 10.214.0.1/24 ── ns b (another host): lbd1 10.214.0.2/24
//	                  lbd9 10.99.0.1/24  ──                     lbd8 (a second link)
//
// The checks run on a thread inside ns a, with the real ip kit probe; no
// packet leaves the namespaces.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

type nsPair struct {
	t    *testing.T
	a, b string
}

func (p *nsPair) ip(args ...string) {
	p.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		p.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newNSPair(t *testing.T) *nsPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the real-kernel network checks need root to create network namespaces (run go test as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: ip(8) from iproute2 is not installed")
	}
	p := &nsPair{t: t, a: fmt.Sprintf("lbdoc-%d-a", os.Getpid()), b: fmt.Sprintf("lbdoc-%d-b", os.Getpid())}
	for i, n := range []string{p.a, p.b} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			if i == 0 {
				t.Skipf("skipping: cannot create network namespaces (ip netns add %s: %v: %s)", n, err, bytes.TrimSpace(out))
			}
			t.Fatalf("ip netns add %s: %v: %s", n, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", n, err, out)
			}
		})
		p.ip("-n", n, "link", "set", "lo", "up")
	}
	p.ip("-n", p.a, "link", "add", "lbd0", "type", "veth", "peer", "name", "lbd1", "netns", p.b)
	p.ip("-n", p.a, "addr", "add", "10.214.0.1/24", "dev", "lbd0")
	p.ip("-n", p.b, "addr", "add", "10.214.0.2/24", "dev", "lbd1")
	p.ip("-n", p.a, "link", "add", "lbd9", "type", "veth", "peer", "name", "lbd8", "netns", p.b)
	p.ip("-n", p.a, "addr", "add", "10.99.0.1/24", "dev", "lbd9")
	for _, l := range [][2]string{{p.a, "lbd0"}, {p.b, "lbd1"}, {p.a, "lbd9"}, {p.b, "lbd8"}} {
		p.ip("-n", l[0], "link", "set", l[1], "up")
	}
	p.waitRunning(p.a, "lbd0")
	return p
}

// waitRunning polls until the kernel reports a carrier on the interface
// (link state changes are applied asynchronously).
func (p *nsPair) waitRunning(ns, ifname string) {
	p.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", ns, "link", "show", "dev", ifname).CombinedOutput()
		if err == nil && bytes.Contains(out, []byte("LOWER_UP")) && bytes.Contains(out, []byte("state UP")) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s in %s never came up: %s", ifname, ns, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run runs the checks on a thread inside ns a: the interfaces, the sysctls
// under /proc/sys/net and the kit's sockets are that namespace's.
func (p *nsPair) run(env *Env, ids ...string) []Finding {
	p.t.Helper()
	only := map[string]bool{}
	for _, id := range ids {
		only[id] = true
	}
	target, err := netns.GetFromName(p.a)
	if err != nil {
		p.t.Fatal(err)
	}
	defer target.Close()
	type result struct {
		fs  []Finding
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		fs := Run(ctx, env, NetworkChecks(), only)
		cancel()
		if err := unix.Setns(int(orig), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread ends with the goroutine.
			done <- result{fs: fs, err: fmt.Errorf("leave %s: %w", p.a, err)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{fs: fs}
	}()
	r := <-done
	if r.err != nil {
		p.t.Fatal(r.err)
	}
	for _, f := range r.fs {
		p.t.Logf("%s %s [%s/%s] %s", f.Severity, f.ID, f.Hierarchy, f.Resource, f.Seen)
	}
	return r.fs
}

func pick(fs []Finding, id string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

func TestNetworkChecksInNamespaces(t *testing.T) {
	p := newNSPair(t)
	p.ip("netns", "exec", p.a, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.lbd0.rp_filter=0")
	env := &Env{Kits: kits.Builtin(), Node: "node1", Hierarchies: []spec.Hierarchy{ipHierarchy("web", "10.214.0.100/24", "lbd0")},
		Owners: map[string]string{"web": ""}, ProcDir: "/proc", RootDir: t.TempDir()}
	ids := []string{netIDInterface, netIDSubnet, netIDConflict, netIDRPFilter}

	// Nobody holds the address; the sysctls of ns a are read, not the
	// host's.
	fs := p.run(env, ids...)
	if got := pick(fs, netIDRPFilter); len(got) != 1 || got[0].Severity != Warning ||
		!strings.Contains(got[0].Seen, "net.ipv4.conf.all.rp_filter=1 and net.ipv4.conf.lbd0.rp_filter=0") || !strings.Contains(got[0].Seen, "lbd9 10.99.0.1/24") {
		t.Errorf("rp-filter in ns a: %+v", got)
	}
	if len(fs) != 1 {
		t.Errorf("want only the rp-filter finding, got %+v", fs)
	}

	// Another host takes the address: the probe hears it.
	p.ip("-n", p.b, "addr", "add", "10.214.0.100/24", "dev", "lbd1")
	out, err := exec.Command("ip", "-n", p.b, "-br", "link", "show", "dev", "lbd1").Output()
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(out))
	mac, err := net.ParseMAC(fields[len(fields)-2])
	if err != nil {
		t.Fatalf("MAC of lbd1 in %q: %v", out, err)
	}
	got := pick(p.run(env, netIDConflict), netIDConflict)
	if len(got) != 1 || got[0].Severity != Critical || !strings.Contains(got[0].Seen, "in service on no node") || !strings.Contains(got[0].Seen, mac.String()) {
		t.Errorf("conflict with ns b holding the address: %+v", got)
	}

	// While the cluster has the hierarchy on another node, that answer is
	// its owner's.
	env.Owners = map[string]string{"web": "node2"}
	if got := p.run(env, netIDConflict); len(got) != 0 {
		t.Errorf("owner elsewhere: %+v", got)
	}

	// The interface goes down, or does not exist.
	p.ip("-n", p.a, "link", "set", "lbd0", "down")
	got = pick(p.run(env, ids...), netIDInterface)
	if len(got) != 1 || got[0].Severity != Critical || !strings.Contains(got[0].Seen, "lbd0 on node1 is administratively down") {
		t.Errorf("interface down: %+v", got)
	}
	env.Hierarchies = []spec.Hierarchy{ipHierarchy("web", "10.214.0.100/24", "lbd7")}
	got = pick(p.run(env, ids...), netIDInterface)
	if len(got) != 1 || !strings.Contains(got[0].Seen, "interface lbd7 does not exist on node1 (it has lbd0, lbd9)") {
		t.Errorf("interface missing: %+v", got)
	}
}
