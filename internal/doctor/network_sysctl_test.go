package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// writeConf writes /proc/sys/net/ipv4/conf/IFACE/KEY under proc.
func writeConf(t *testing.T, proc, iface, key string, v int) {
	t.Helper()
	dir := filepath.Join(proc, "sys/net/ipv4/conf", iface)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, key), []byte(strconv.Itoa(v)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sysctlCase is one node: the resource's address, whether eth1 carries
// another subnet, and values of all and eth0.
type sysctlCase struct {
	name     string
	address  string
	eth1     bool
	all, own int
	sev      string
	phrases  []string
}

func runSysctlCases(t *testing.T, id, key string, cases []sysctlCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			links := []Link{{Name: "lo", Index: 1, Up: true, Running: true, Loopback: true, Addrs: link("lo", 1, true, true, "127.0.0.1/8").Addrs},
				link("eth0", 2, true, true, "10.1.2.10/24")}
			if tc.eth1 {
				links = append(links, link("eth1", 3, true, true, "10.9.0.5/24"))
			}
			env := netEnv(t, []spec.Hierarchy{ipHierarchy("web", tc.address, "eth0")}, links...)
			writeConf(t, env.ProcDir, "all", key, tc.all)
			writeConf(t, env.ProcDir, "eth0", key, tc.own)
			f := expect(t, runChecks(t, env, NetworkChecks(), id), tc.sev, tc.phrases...)
			if tc.sev != "" && (f.Hierarchy != "web" || !strings.Contains(f.Command, "sysctl net.ipv4.conf.all."+key+" net.ipv4.conf.eth0."+key)) {
				t.Errorf("finding lacks the resource or the command: %+v", f)
			}
		})
	}
}

func TestRPFilter(t *testing.T) {
	runSysctlCases(t, netIDRPFilter, "rp_filter", []sysctlCase{
		{"off", "10.1.2.100/24", true, 0, 0, "", nil},
		{"loose", "10.1.2.100/24", true, 2, 2, "", nil},
		{"strict on all, multi-homed", "10.1.2.100/24", true, 1, 0, Warning,
			[]string{"reverse-path filtering is strict on eth0 (net.ipv4.conf.all.rp_filter=1 and net.ipv4.conf.eth0.rp_filter=0; the kernel uses the larger, 1)", "eth1 10.9.0.5/24"}},
		{"strict on the interface, multi-homed", "10.1.2.100/24", true, 0, 1, Warning, []string{"asymmetric replies"}},
		{"strict, single interface", "10.1.2.100/24", false, 1, 1, Info, []string{"harmless while this is the node's only interface"}},
		{"all strict but loose on the interface wins", "10.1.2.100/24", true, 1, 2, "", nil},
		{"IPv6 only", "fd00::100/64", true, 1, 1, "", nil},
	})
}

func TestARPIgnore(t *testing.T) {
	runSysctlCases(t, netIDARPIgnore, "arp_ignore", []sysctlCase{
		{"default", "10.1.2.100/24", false, 0, 0, "", nil},
		{"incoming interface only", "10.1.2.100/32", false, 1, 1, "", nil},
		{"never answer", "10.1.2.100/24", false, 0, 8, Critical, []string{"arp_ignore is 8 on eth0", "answers no ARP request"}},
		{"same subnet, /32 inside the primary subnet", "10.1.2.100/32", false, 2, 0, "", nil},
		{"same subnet, /32 outside every subnet", "192.168.50.10/32", false, 2, 0, Critical,
			[]string{"arp_ignore is 2 on eth0", "192.168.50.10/32 is in no subnet of eth0 (it has 10.1.2.10/24)"}},
		{"scope host only", "192.168.50.10/32", false, 3, 3, "", nil},
	})
	// On AWS the VPC answers ARP: nothing to say.
	env := netEnv(t, []spec.Hierarchy{ipHierarchy("web", "10.1.2.100/24", "eth0")}, link("eth0", 2, true, true, "10.1.2.10/24"))
	env.AWS = func(context.Context) (*awsapi.Clients, error) { t.Error("AWS asked"); return nil, nil }
	env.AWSSettings.Region = "us-east-1"
	writeConf(t, env.ProcDir, "all", "arp_ignore", 8)
	writeConf(t, env.ProcDir, "eth0", "arp_ignore", 8)
	expect(t, runChecks(t, env, NetworkChecks(), netIDARPIgnore), "")
}

func TestARPAnnounce(t *testing.T) {
	runSysctlCases(t, netIDARPAnnounce, "arp_announce", []sysctlCase{
		{"any address, one interface, address in its subnet", "10.1.2.100/24", false, 0, 0, "", nil},
		{"any address, several interfaces", "10.1.2.100/24", true, 0, 0, Warning,
			[]string{"arp_announce is 0 on eth0", "other interfaces too (eth1 10.9.0.5/24)"}},
		{"any address, /32 outside the subnets", "192.168.50.10/32", false, 0, 0, Warning, []string{"192.168.50.10 is in no subnet of eth0"}},
		{"best address", "192.168.50.10/32", true, 2, 0, "", nil},
		{"avoid other subnets", "192.168.50.10/32", true, 0, 1, "", nil},
	})
	env := netEnv(t, []spec.Hierarchy{ipHierarchy("web", "10.1.2.100/24", "eth0")}, link("eth0", 2, true, true, "10.1.2.10/24"), link("eth1", 3, true, true, "10.9.0.5/24"))
	writeConf(t, env.ProcDir, "all", "arp_announce", 0)
	writeConf(t, env.ProcDir, "eth0", "arp_announce", 0)
	f := expect(t, runChecks(t, env, NetworkChecks(), netIDARPAnnounce), Warning)
	if !strings.Contains(f.Fix, "use 2") || !strings.Contains(f.Fix, "net.ipv4.conf.all.arp_announce = 2") {
		t.Errorf("fix does not recommend 2: %s", f.Fix)
	}
}

func TestSysctlNames(t *testing.T) {
	if got := netSysctlName("eth0.100", "rp_filter"); got != "net.ipv4.conf.eth0/100.rp_filter" {
		t.Errorf("VLAN sysctl name = %s", got)
	}
	// An interface without its sysctls (gone meanwhile): no finding.
	env := netEnv(t, []spec.Hierarchy{ipHierarchy("web", "10.1.2.100/24", "eth0")}, link("eth0", 2, true, true, "10.1.2.10/24"), link("eth1", 3, true, true, "10.9.0.5/24"))
	writeConf(t, env.ProcDir, "all", "rp_filter", 1)
	expect(t, runChecks(t, env, NetworkChecks(), netIDRPFilter), "")
}
