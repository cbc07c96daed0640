package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// netnsLab gives each node its own network namespace, joined by a bridge
// that lives in a namespace of its own: nothing reaches the host's network.
type netnsLab struct {
	t      *testing.T
	prefix string
	ips    []string
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func newNetnsLab(t *testing.T, nodes int) *netnsLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed")
	}
	l := &netnsLab{t: t, prefix: fmt.Sprintf("lbt%d", os.Getpid()%100000)}
	br := l.prefix + "br"
	if err := ipCmd("netns", "add", br); err != nil {
		t.Skipf("cannot create network namespaces here: %v", err)
	}
	t.Cleanup(func() {
		for i := 1; i <= nodes; i++ {
			_ = ipCmd("netns", "del", l.ns(i))
		}
		_ = ipCmd("netns", "del", br)
	})
	must := func(args ...string) {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("-n", br, "link", "add", "br0", "type", "bridge")
	must("-n", br, "link", "set", "br0", "up")
	for i := 1; i <= nodes; i++ {
		ns := l.ns(i)
		must("netns", "add", ns)
		must("-n", br, "link", "add", fmt.Sprintf("v%d", i), "type", "veth", "peer", "name", "eth0", "netns", ns)
		must("-n", br, "link", "set", fmt.Sprintf("v%d", i), "master", "br0", "up")
		ip := fmt.Sprintf("10.213.77.%d", i)
		must("-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
		must("-n", ns, "link", "set", "eth0", "up")
		must("-n", ns, "link", "set", "lo", "up")
		l.ips = append(l.ips, ip)
	}
	return l
}

func (l *netnsLab) ns(i int) string { return fmt.Sprintf("%sn%d", l.prefix, i) }

func (l *netnsLab) wrap(node string) []string {
	return []string{"ip", "netns", "exec", l.prefix + "n" + strings.TrimPrefix(node, "node")}
}

// cut drops all traffic between nodes i and j (both directions).
func (l *netnsLab) cut(i, j int) {
	l.t.Helper()
	if err := ipCmd("-n", l.ns(i), "route", "add", "blackhole", l.ips[j-1]+"/32"); err != nil {
		l.t.Fatal(err)
	}
	if err := ipCmd("-n", l.ns(j), "route", "add", "blackhole", l.ips[i-1]+"/32"); err != nil {
		l.t.Fatal(err)
	}
}

// One broken link between the owner and another node does not fail the
// owner over: indirect probes and the third voter keep it alive and leased.
// Then, cut off from both others, the owner is fenced and the hierarchy
// moves.
func TestSingleLinkLossNoFailover(t *testing.T) {
	lab := newNetnsLab(t, 3)
	c := startCluster(t, demo.Options{IPs: lab.ips, Wrap: lab.wrap})
	apply(t, c, flagHierarchy("vip", three, spec.SwitchbackIntelligent, 1, ""))
	st := waitFor(t, c, "node2", 10*time.Second, "vip online on node1", onlineOn("vip", "node1"))
	epoch := hier(st, "vip").Epoch

	lab.cut(1, 2)
	// Observe for ten lease periods: nothing moves, node1 keeps its lease
	// and nobody declares it failed.
	deadline := time.Now().Add(10 * 600 * time.Millisecond)
	samples := 0
	for time.Now().Before(deadline) {
		for _, n := range []string{"node1", "node2", "node3"} {
			st, err := c.Status(t.Context(), n)
			if err != nil {
				continue
			}
			samples++
			h := hier(st, "vip")
			if h.Owner != "node1" || h.Epoch != epoch {
				t.Fatalf("after one link was cut, %s sees vip on %q at epoch %d (was node1, %d): %s", n, h.Owner, h.Epoch, epoch, h.Reason)
			}
			if n == "node1" && !st.Local.Hierarchies["vip"].Holding {
				t.Fatalf("node1 stopped holding vip after one link was cut (lease held: %v)", st.Local.LeaseHeld)
			}
			if n != "node1" {
				// node2 cannot reach node1 directly: indirect probes
				// through node3 must keep it alive.
				for _, ns := range st.Nodes {
					if ns.Name == "node1" && ns.State == "failed" {
						t.Fatalf("%s declared node1 failed though it is reachable (directly or through node3)", n)
					}
				}
			}
		}
		time.Sleep(50 * time.Millisecond) // sampling interval of an observation window
	}
	if samples < 20 {
		t.Fatalf("only %d status samples during the window", samples)
	}

	// Now isolate node1 entirely: it loses its lease and vip moves.
	lab.cut(1, 3)
	waitFor(t, c, "node2", 10*time.Second, "vip online on node2", onlineOn("vip", "node2"))
	waitFor(t, c, "node1", 5*time.Second, "node1 took vip out of service", func(st api.Status) bool {
		l := st.Local.Hierarchies["vip"]
		return !st.Local.LeaseHeld && !l.Holding && l.State == "offline"
	})
}
