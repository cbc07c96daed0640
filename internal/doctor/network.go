package doctor

// The network part of the checklist: the traps behind "the virtual IP does
// not switch", for every ip resource this node may run. Each check reads
// the node's own state (interfaces, /proc/sys, files under /etc and /run)
// and changes nothing; the one that sends anything, ip-conflict, uses the
// ip kit's readiness probe (an ARP probe from 0.0.0.0, or a neighbour
// solicitation), which teaches no neighbour anything.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	kitip "github.com/lifeboat-ha/lifeboat/internal/kit/ip" // registers the ip kit; its parameter names
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// IDs of the network checks.
const (
	netIDInterface      = "ip-interface"
	netIDSubnet         = "ip-subnet"
	netIDConflict       = "ip-conflict"
	netIDRPFilter       = "rp-filter"
	netIDARPIgnore      = "arp-ignore"
	netIDARPAnnounce    = "arp-announce"
	netIDNetworkManager = "network-manager"
	netIDAWS            = "ip-aws"
)

// netProbeTimeout bounds one readiness probe of the ip kit.
const netProbeTimeout = 10 * time.Second

// NetworkChecks are the checks of the ip resources this node may run: the
// interface exists and is up, the address fits its subnets, no other host
// answers for it, the reverse-path filter and the ARP sysctls do not drop
// its traffic, no network manager removes it, and on AWS a route table or
// the interface brings its traffic here. They report nothing when the node
// runs no ip resource.
func NetworkChecks() []Check {
	return []Check{
		{ID: netIDInterface, Run: checkIPInterface},
		{ID: netIDSubnet, Run: checkIPSubnet},
		{ID: netIDConflict, Run: checkIPConflict},
		{ID: netIDRPFilter, Run: checkRPFilter},
		{ID: netIDARPIgnore, Run: checkARPIgnore},
		{ID: netIDARPAnnounce, Run: checkARPAnnounce},
		{ID: netIDNetworkManager, Run: checkNetworkManager},
		{ID: netIDAWS, Run: checkIPAWS},
	}
}

// Link is one network interface of the node.
type Link struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	// Up: administratively up (IFF_UP). Running: up with a carrier
	// (IFF_RUNNING).
	Up, Running, Loopback bool
	// Addrs are its addresses with their prefix lengths.
	Addrs []netip.Prefix
}

// hostLinks lists the kernel's interfaces (in the calling thread's network
// namespace).
func hostLinks() ([]Link, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	out := make([]Link, 0, len(ifs))
	for _, ifi := range ifs {
		l := Link{Name: ifi.Name, Index: ifi.Index, MAC: ifi.HardwareAddr,
			Up: ifi.Flags&net.FlagUp != 0, Running: ifi.Flags&net.FlagRunning != 0, Loopback: ifi.Flags&net.FlagLoopback != 0}
		as, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("list the addresses of %s: %w", ifi.Name, err)
		}
		for _, a := range as {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			bits, _ := n.Mask.Size()
			l.Addrs = append(l.Addrs, netip.PrefixFrom(ip.Unmap(), bits))
		}
		out = append(out, l)
	}
	return out, nil
}

// vip is one ip resource this node may run.
type vip struct {
	h      spec.Hierarchy
	r      spec.Resource
	addr   netip.Prefix // as configured, e.g. 10.1.2.100/24
	ifname string
}

func (v vip) ip() netip.Addr { return v.addr.Addr() }

// hostRoute: a /32 or /128, which need not fit a subnet of the interface.
func (v vip) hostRoute() bool { return v.addr.IsSingleIP() }

func (v vip) finding(id, sev string) Finding {
	return Finding{ID: id, Severity: sev, Hierarchy: v.h.Name, Resource: v.r.Name}
}

// vips lists the ip resources of the node's hierarchies whose parameters
// parse (the spec's validation reports the others).
func vips(env *Env) []vip {
	var out []vip
	for _, h := range env.Hierarchies {
		for _, r := range h.Resources {
			if r.Type != kitip.Type {
				continue
			}
			p, err := netip.ParsePrefix(strings.TrimSpace(r.Params[kitip.ParamAddress]))
			ifname := strings.TrimSpace(r.Params[kitip.ParamInterface])
			if err != nil || ifname == "" {
				continue
			}
			out = append(out, vip{h: h, r: r, addr: netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), ifname: ifname})
		}
	}
	return out
}

// netLinks returns the node's interfaces by name.
func netLinks(env *Env) (map[string]Link, error) {
	list := env.Links
	if list == nil {
		list = hostLinks
	}
	ls, err := list()
	if err != nil {
		return nil, err
	}
	m := make(map[string]Link, len(ls))
	for _, l := range ls {
		m[l.Name] = l
	}
	return m, nil
}

// holds reports whether l carries a.
func (l Link) holds(a netip.Addr) bool {
	for _, p := range l.Addrs {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

// fits reports whether a lies in the subnet of another address
// of its family on l (link-local addresses do not count), as the ip kit
// requires of any address that is not a /32 or /128.
func (l Link) fits(a netip.Addr) bool {
	for _, p := range l.Addrs {
		if p.Addr() == a || p.Addr().Is4() != a.Is4() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// family lists l's addresses of a's family other than a, link-local ones
// left out.
func (l Link) family(a netip.Addr) []string {
	var out []string
	for _, p := range l.Addrs {
		if p.Addr() != a && p.Addr().Is4() == a.Is4() && !p.Addr().IsLinkLocalUnicast() {
			out = append(out, p.String())
		}
	}
	return out
}

// netRoot is path under the node's root (RootDir).
func netRoot(env *Env, path string) string {
	if env.RootDir == "" {
		return path
	}
	return filepath.Join(env.RootDir, path)
}

// netProc is path under /proc (ProcDir).
func netProc(env *Env, path string) string {
	dir := env.ProcDir
	if dir == "" {
		dir = "/proc"
	}
	return filepath.Join(dir, path)
}

// netCommands maps the command names (comm) of the running processes to
// their process ids.
func netCommands(env *Env) map[string][]int {
	entries, err := os.ReadDir(netProc(env, ""))
	if err != nil {
		return nil
	}
	out := map[string][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(netProc(env, filepath.Join(e.Name(), "comm")))
		if err != nil {
			continue
		}
		c := strings.TrimSpace(string(b))
		out[c] = append(out[c], pid)
	}
	return out
}

// ---------------------------------------------------------------------------
// ip-interface

func checkIPInterface(_ context.Context, env *Env) []Finding {
	vs := vips(env)
	if len(vs) == 0 {
		return nil
	}
	links, err := netLinks(env)
	if err != nil {
		return []Finding{{ID: netIDInterface, Severity: Warning, Seen: "cannot list this node's network interfaces: " + err.Error(),
			Fix: "the network checks need them; check them by hand", Command: "ip -br address"}}
	}
	var out []Finding
	for _, v := range vs {
		l, ok := links[v.ifname]
		f := v.finding(netIDInterface, Critical)
		f.Command = "ip -br link show dev " + v.ifname
		switch {
		case !ok:
			var names []string
			for n, l := range links {
				if !l.Loopback {
					names = append(names, n)
				}
			}
			sort.Strings(names)
			f.Seen = fmt.Sprintf("interface %s does not exist on %s (it has %s): %s cannot be brought up here", v.ifname, env.Node, orNone(names), v.ip())
			f.Fix = fmt.Sprintf("every node must have the interface the resource names: rename the interface on %s (a systemd .link file or udev rule), or use an interface name all nodes share", env.Node)
			f.Command = "ip -br link"
		case !l.Up:
			f.Seen = fmt.Sprintf("interface %s on %s is administratively down: %s cannot be brought up here (lifeboat never brings interfaces up)", v.ifname, env.Node, v.ip())
			f.Fix = fmt.Sprintf("bring it up (ip link set %s up) and make that permanent in the node's network configuration", v.ifname)
		case !l.Running:
			f.Seen = fmt.Sprintf("interface %s on %s is up but has no carrier: %s would be added here but reach no one", v.ifname, env.Node, v.ip())
			f.Fix = "check the cable, the switch port or the virtual NIC's link (ethtool " + v.ifname + ")"
		default:
			continue
		}
		out = append(out, f)
	}
	return out
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

// ---------------------------------------------------------------------------
// ip-subnet

func checkIPSubnet(_ context.Context, env *Env) []Finding {
	vs := vips(env)
	if len(vs) == 0 {
		return nil
	}
	links, err := netLinks(env)
	if err != nil {
		return nil // ip-interface reports it
	}
	var out []Finding
	for _, v := range vs {
		l, ok := links[v.ifname]
		if !ok || v.hostRoute() || l.fits(v.ip()) {
			continue
		}
		f := v.finding(netIDSubnet, Critical)
		f.Seen = fmt.Sprintf("%s is not in the subnet of any address on %s on %s (it has %s): the ip kit refuses to restore it here, and neighbours would not reach it",
			v.addr, v.ifname, env.Node, orNone(l.family(v.ip())))
		f.Fix = fmt.Sprintf("give %s an address in the subnet of %s, correct the address's prefix length, or use %s/%d for route-table mode (the cloud's route table, not the subnet, then brings traffic to it)",
			v.ifname, v.addr.Masked(), v.ip(), v.ip().BitLen())
		f.Command = "ip -br address show dev " + v.ifname
		out = append(out, f)
	}
	return out
}

// ---------------------------------------------------------------------------
// ip-conflict

// netOwner says where v's hierarchy is in service: ("", true) on no node,
// (node, true) on that node, ("", false) when unknown.
func netOwner(env *Env, v vip) (string, bool) {
	if env.Owners == nil {
		return "", false
	}
	n, ok := env.Owners[v.h.Name]
	return n, ok
}

// netKitProbe runs the ip kit's readiness probe for r.
func netKitProbe(ctx context.Context, env *Env, h spec.Hierarchy, r spec.Resource) kit.Readiness {
	k, ok := env.Kits.Lookup(r.Type)
	if !ok {
		return kit.Readiness{Unknown: true, Reason: "the ip kit is not built into this lifeboat binary"}
	}
	inst, err := k.New(r, kit.Env{Node: env.Node, Hierarchy: h.Name})
	if err != nil {
		return kit.Readiness{Unknown: true, Reason: err.Error()}
	}
	p, ok := inst.(kit.ReadinessProber)
	if !ok {
		return kit.Readiness{Unknown: true, Reason: "the ip kit has no readiness probe"}
	}
	pctx, cancel := context.WithTimeout(ctx, netProbeTimeout)
	defer cancel()
	return p.Ready(pctx)
}

// netProbeCommand asks the link by hand whether a host answers for v.
func netProbeCommand(v vip) string {
	if v.ip().Is4() {
		return fmt.Sprintf("arping -D -c 2 -I %s %s   # exit status 1 and a reply: another host holds it", v.ifname, v.ip())
	}
	return fmt.Sprintf("ndisc6 -1 %s %s   # a reply names the MAC of the host that holds it", v.ip(), v.ifname)
}

func checkIPConflict(ctx context.Context, env *Env) []Finding {
	vs := vips(env)
	if len(vs) == 0 {
		return nil
	}
	links, err := netLinks(env)
	if err != nil {
		return nil // ip-interface reports it
	}
	probe := env.ProbeAddress
	if probe == nil {
		probe = func(ctx context.Context, h spec.Hierarchy, r spec.Resource) kit.Readiness {
			return netKitProbe(ctx, env, h, r)
		}
	}
	var out []Finding
	for _, v := range vs {
		l, ok := links[v.ifname]
		if !ok || !l.Up || !l.Running || (!v.hostRoute() && !l.fits(v.ip())) {
			continue // ip-interface or ip-subnet reports it
		}
		owner, known := netOwner(env, v)
		if l.holds(v.ip()) {
			if known && owner != "" && owner != env.Node {
				f := v.finding(netIDConflict, Warning)
				f.Seen = fmt.Sprintf("%s is on %s on %s right now, but hierarchy %s is in service on %s: two nodes may answer for the address",
					v.ip(), v.ifname, env.Node, v.h.Name, owner)
				f.Fix = fmt.Sprintf("if it stays, the remove on %s failed: see lifeboat events, and delete it by hand (ip address del %s dev %s)", env.Node, v.addr, v.ifname)
				f.Command = "ip -br address show dev " + v.ifname
				out = append(out, f)
			}
			continue
		}
		if known && owner != "" && owner != env.Node {
			continue // its owner answers for it: nothing to ask
		}
		rd := probe(ctx, v.h, v.r)
		switch {
		case rd.Ready:
			continue
		case rd.Unknown:
			f := v.finding(netIDConflict, Info)
			f.Seen = fmt.Sprintf("could not ask the link whether another host answers for %s: %s", v.ip(), rd.Reason)
			f.Fix = "the probe needs raw sockets (CAP_NET_RAW, which the agent has as root); ask by hand"
			f.Command = netProbeCommand(v)
			out = append(out, f)
			continue
		}
		f := v.finding(netIDConflict, Critical)
		where := fmt.Sprintf("hierarchy %s is in service on no node", v.h.Name)
		if owner == env.Node {
			where = fmt.Sprintf("hierarchy %s is assigned to %s itself, which does not hold the address", v.h.Name, env.Node)
		}
		if !known {
			f.Severity = Warning
			where = fmt.Sprintf("unless another node of the cluster has hierarchy %s in service now, ", v.h.Name)
			f.Seen = fmt.Sprintf("%sanother host uses the address: %s", where, rd.Reason)
		} else {
			f.Seen = fmt.Sprintf("another host answers for %s while %s: %s", v.ip(), where, rd.Reason)
		}
		f.Fix = fmt.Sprintf("find the host by the MAC address in the answer (the switch's MAC table, or ip neigh on a neighbour) and remove %s there, or choose a free address; "+
			"restoring it here would have two hosts answer for it, and clients would follow whichever announced last", v.ip())
		f.Command = netProbeCommand(v)
		out = append(out, f)
	}
	return out
}
