package doctor

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// ipHierarchy is a hierarchy named name with one ip resource name-ip.
func ipHierarchy(name, address, iface string, more ...spec.Resource) spec.Hierarchy {
	r := spec.Resource{Name: name + "-ip", Type: "ip", Params: map[string]string{"address": address, "interface": iface}}
	return spec.Hierarchy{Name: name, Nodes: []string{"node1", "node2"}, Resources: append([]spec.Resource{r}, more...)}
}

// link is an interface; addrs are CIDRs.
func link(name string, index int, up, running bool, addrs ...string) Link {
	l := Link{Name: name, Index: index, Up: up, Running: running, MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(index)}}
	for _, a := range addrs {
		l.Addrs = append(l.Addrs, netip.MustParsePrefix(a))
	}
	return l
}

// noProbe fails the test if the ip kit's probe is asked.
func noProbe(t *testing.T) func(context.Context, spec.Hierarchy, spec.Resource) kit.Readiness {
	return func(_ context.Context, h spec.Hierarchy, r spec.Resource) kit.Readiness {
		t.Errorf("probe asked for %s/%s", h.Name, r.Name)
		return kit.Readiness{Ready: true}
	}
}

// netEnv is node1 running hs on links, with empty /proc and root.
func netEnv(t *testing.T, hs []spec.Hierarchy, links ...Link) *Env {
	return &Env{Kits: kits.Builtin(), Node: "node1", Hierarchies: hs, ProcDir: t.TempDir(), RootDir: t.TempDir(),
		Links:        func() ([]Link, error) { return links, nil },
		ProbeAddress: noProbe(t)}
}

// runChecks runs one check of checks and logs what it found.
func runChecks(t *testing.T, env *Env, checks []Check, id string) []Finding {
	t.Helper()
	fs := Run(context.Background(), env, checks, map[string]bool{id: true})
	for _, f := range fs {
		t.Logf("%s %s [%s/%s] %s\n    fix: %s\n    cmd: %s", f.Severity, f.ID, f.Hierarchy, f.Resource, f.Seen, f.Fix, f.Command)
	}
	return fs
}

// expect checks that fs is exactly one finding of sev whose Seen contains
// every phrase, or none when sev is "".
func expect(t *testing.T, fs []Finding, sev string, phrases ...string) Finding {
	t.Helper()
	if sev == "" {
		if len(fs) != 0 {
			t.Fatalf("want no finding, got %+v", fs)
		}
		return Finding{}
	}
	if len(fs) != 1 || fs[0].Severity != sev {
		t.Fatalf("want one %s finding, got %+v", sev, fs)
	}
	for _, p := range phrases {
		if !strings.Contains(fs[0].Seen, p) {
			t.Errorf("seen %q lacks %q", fs[0].Seen, p)
		}
	}
	if fs[0].Node != "node1" || fs[0].Fix == "" {
		t.Errorf("finding without node or fix: %+v", fs[0])
	}
	return fs[0]
}

func TestIPInterface(t *testing.T) {
	web := []spec.Hierarchy{ipHierarchy("web", "10.1.2.100/24", "eth0")}
	for _, tc := range []struct {
		name    string
		links   []Link
		sev     string
		phrases []string
	}{
		{"up with carrier", []Link{link("eth0", 2, true, true, "10.1.2.10/24")}, "", nil},
		{"missing", []Link{{Name: "lo", Loopback: true, Up: true, Running: true}, link("ens5", 2, true, true, "10.1.2.10/24")}, Critical,
			[]string{"interface eth0 does not exist on node1 (it has ens5)", "10.1.2.100"}},
		{"administratively down", []Link{link("eth0", 2, false, false, "10.1.2.10/24")}, Critical, []string{"eth0 on node1 is administratively down"}},
		{"no carrier", []Link{link("eth0", 2, true, false, "10.1.2.10/24")}, Critical, []string{"eth0 on node1 is up but has no carrier"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := expect(t, runChecks(t, netEnv(t, web, tc.links...), NetworkChecks(), netIDInterface), tc.sev, tc.phrases...)
			if tc.sev != "" && (f.Hierarchy != "web" || f.Resource != "web-ip" || f.Command == "") {
				t.Errorf("finding does not name the resource or a command: %+v", f)
			}
		})
	}
	env := netEnv(t, web)
	env.Links = func() ([]Link, error) { return nil, errors.New("netlink: permission denied") }
	expect(t, runChecks(t, env, NetworkChecks(), netIDInterface), Warning, "cannot list this node's network interfaces: netlink: permission denied")
	// No ip resource: nothing is looked at.
	env.Hierarchies = nil
	expect(t, runChecks(t, env, NetworkChecks(), netIDInterface), "")
}

func TestIPSubnet(t *testing.T) {
	eth0 := link("eth0", 2, true, true, "10.1.2.10/24", "fe80::1/64", "fd00:1::10/64")
	for _, tc := range []struct {
		name, address string
		sev           string
		phrases       []string
	}{
		{"in the subnet", "10.1.2.100/24", "", nil},
		{"route-table mode /32 outside", "192.168.50.10/32", "", nil},
		{"outside every subnet", "10.1.3.100/24", Critical, []string{"10.1.3.100/24 is not in the subnet of any address on eth0 on node1 (it has 10.1.2.10/24)"}},
		{"IPv6 in the subnet", "fd00:1::100/64", "", nil},
		{"IPv6 outside, link-local does not count", "fd00:2::100/64", Critical, []string{"it has fd00:1::10/64)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := netEnv(t, []spec.Hierarchy{ipHierarchy("web", tc.address, "eth0")}, eth0)
			f := expect(t, runChecks(t, env, NetworkChecks(), netIDSubnet), tc.sev, tc.phrases...)
			if tc.sev != "" && !strings.Contains(f.Fix, "/32 for route-table mode") && !strings.Contains(f.Fix, "/128 for route-table mode") {
				t.Errorf("fix does not offer route-table mode: %s", f.Fix)
			}
		})
	}
	// A missing interface is ip-interface's finding, not this one's.
	env := netEnv(t, []spec.Hierarchy{ipHierarchy("web", "10.1.3.100/24", "eth1")}, eth0)
	expect(t, runChecks(t, env, NetworkChecks(), netIDSubnet), "")
}

func TestIPConflict(t *testing.T) {
	answered := kit.Readiness{Reason: "10.1.2.100 is answered by 52:54:00:aa:bb:cc on eth0 of node1 (another host holds the address)"}
	free := link("eth0", 2, true, true, "10.1.2.10/24")
	held := link("eth0", 2, true, true, "10.1.2.10/24", "10.1.2.100/24")
	for _, tc := range []struct {
		name    string
		owners  map[string]string
		eth0    Link
		probe   *kit.Readiness // nil: the probe must not be asked
		sev     string
		phrases []string
	}{
		{"nobody answers", map[string]string{"web": ""}, free, &kit.Readiness{Ready: true}, "", nil},
		{"answered while in service nowhere", map[string]string{"web": ""}, free, &answered, Critical,
			[]string{"another host answers for 10.1.2.100 while hierarchy web is in service on no node", "52:54:00:aa:bb:cc"}},
		{"answered while assigned here", map[string]string{"web": "node1"}, free, &answered, Critical,
			[]string{"hierarchy web is assigned to node1 itself, which does not hold the address"}},
		{"owner unknown", nil, free, &answered, Warning, []string{"unless another node of the cluster has hierarchy web in service now", "52:54:00:aa:bb:cc"}},
		{"in service on node2: its answer is expected", map[string]string{"web": "node2"}, free, nil, "", nil},
		{"held here while in service here", map[string]string{"web": "node1"}, held, nil, "", nil},
		{"held here while in service on node2", map[string]string{"web": "node2"}, held, nil, Warning,
			[]string{"10.1.2.100 is on eth0 on node1 right now, but hierarchy web is in service on node2"}},
		{"probe cannot tell", map[string]string{"web": ""}, free, &kit.Readiness{Unknown: true, Reason: "open ARP socket: operation not permitted"}, Info,
			[]string{"could not ask the link whether another host answers for 10.1.2.100: open ARP socket: operation not permitted"}},
		{"interface down: not probed", map[string]string{"web": ""}, link("eth0", 2, true, false, "10.1.2.10/24"), nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := netEnv(t, []spec.Hierarchy{ipHierarchy("web", "10.1.2.100/24", "eth0")}, tc.eth0)
			env.Owners = tc.owners
			asked := 0
			if tc.probe != nil {
				env.ProbeAddress = func(_ context.Context, h spec.Hierarchy, r spec.Resource) kit.Readiness {
					asked++
					if h.Name != "web" || r.Name != "web-ip" {
						t.Errorf("probe asked for %s/%s", h.Name, r.Name)
					}
					return *tc.probe
				}
			}
			f := expect(t, runChecks(t, env, NetworkChecks(), netIDConflict), tc.sev, tc.phrases...)
			if tc.probe != nil && asked != 1 {
				t.Errorf("probe asked %d times, want 1", asked)
			}
			if tc.sev == Critical && !strings.Contains(f.Command, "arping -D -c 2 -I eth0 10.1.2.100") {
				t.Errorf("command %q does not reproduce the probe", f.Command)
			}
		})
	}
}
