package doctor

// The IPv4 sysctls that decide whether traffic for a virtual IP is accepted
// and answered after it moves (Documentation/networking/ip-sysctl.rst): for
// rp_filter, arp_ignore and arp_announce the kernel uses the larger of
// conf/all and conf/INTERFACE.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// netConf is one conf/ sysctl of an interface: the value of all, of the
// interface, and the one the kernel uses (the larger).
type netConf struct {
	key              string
	iface            string
	all, own, larger int
}

// netSysctlName is the sysctl(8) name of conf/iface/key (dots in interface
// names such as VLANs are written as slashes).
func netSysctlName(iface, key string) string {
	return "net.ipv4.conf." + strings.ReplaceAll(iface, ".", "/") + "." + key
}

func netReadConf(env *Env, iface, key string) (int, error) {
	b, err := os.ReadFile(netProc(env, filepath.Join("sys/net/ipv4/conf", iface, key)))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// netConfOf reads key for iface; ok is false when it cannot be read (no
// such interface: ip-interface reports it).
func netConfOf(env *Env, iface, key string) (netConf, bool) {
	all, err := netReadConf(env, "all", key)
	if err != nil {
		return netConf{}, false
	}
	own, err := netReadConf(env, iface, key)
	if err != nil {
		return netConf{}, false
	}
	return netConf{key: key, iface: iface, all: all, own: own, larger: max(all, own)}, true
}

// values says what the kernel was seen using.
func (c netConf) values() string {
	return fmt.Sprintf("%s=%d and %s=%d; the kernel uses the larger, %d", netSysctlName("all", c.key), c.all, netSysctlName(c.iface, c.key), c.own, c.larger)
}

// command shows both values by hand.
func (c netConf) command() string {
	return fmt.Sprintf("sysctl %s %s", netSysctlName("all", c.key), netSysctlName(c.iface, c.key))
}

// netPersist is how to keep sysctl settings across reboots.
func netPersist(lines ...string) string {
	return "make it permanent with the line" + map[bool]string{true: "s", false: ""}[len(lines) > 1] + " " + strings.Join(lines, "; ") +
		" in /etc/sysctl.d/90-lifeboat.conf (a file sorting after the distribution's own)"
}

// netGroup is the IPv4 ip resources on one interface.
type netGroup struct {
	link Link
	vips []vip
}

func (g netGroup) first() vip { return g.vips[0] }

// addresses lists the group's addresses with their hierarchies.
func (g netGroup) addresses() string {
	var s []string
	for _, v := range g.vips {
		s = append(s, fmt.Sprintf("%s (hierarchy %s)", v.ip(), v.h.Name))
	}
	return strings.Join(s, ", ")
}

// netV4Groups groups the node's IPv4 ip resources by interface, for the
// interfaces that exist, and returns every interface too.
func netV4Groups(env *Env) ([]netGroup, map[string]Link) {
	vs := vips(env)
	if len(vs) == 0 {
		return nil, nil
	}
	links, err := netLinks(env)
	if err != nil {
		return nil, nil // ip-interface reports it
	}
	byName := map[string]*netGroup{}
	var names []string
	for _, v := range vs {
		l, ok := links[v.ifname]
		if !ok || !v.ip().Is4() {
			continue
		}
		g := byName[v.ifname]
		if g == nil {
			g = &netGroup{link: l}
			byName[v.ifname] = g
			names = append(names, v.ifname)
		}
		g.vips = append(g.vips, v)
	}
	sort.Strings(names)
	out := make([]netGroup, 0, len(names))
	for _, n := range names {
		out = append(out, *byName[n])
	}
	return out, links
}

// netOtherV4 lists the other up, non-loopback interfaces with an IPv4
// address (not link-local) and those addresses.
func netOtherV4(links map[string]Link, iface string) []string {
	var out []string
	for name, l := range links {
		if name == iface || l.Loopback || !l.Up {
			continue
		}
		var as []string
		for _, p := range l.Addrs {
			if p.Addr().Is4() && !p.Addr().IsLinkLocalUnicast() {
				as = append(as, p.String())
			}
		}
		if len(as) > 0 {
			out = append(out, name+" "+strings.Join(as, " "))
		}
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// rp-filter

func checkRPFilter(_ context.Context, env *Env) []Finding {
	groups, links := netV4Groups(env)
	var out []Finding
	for _, g := range groups {
		c, ok := netConfOf(env, g.link.Name, "rp_filter")
		if !ok || c.larger != 1 {
			continue
		}
		v := g.first()
		others := netOtherV4(links, g.link.Name)
		f := v.finding(netIDRPFilter, Warning)
		f.Seen = fmt.Sprintf("reverse-path filtering is strict on %s (%s), which carries %s", g.link.Name, c.values(), g.addresses())
		if len(others) > 0 {
			f.Seen += fmt.Sprintf(", and this node has other interfaces (%s): after a move, packets to the address from a client whose route back leaves through another interface are dropped, so asymmetric replies never arrive",
				strings.Join(others, "; "))
		} else {
			f.Severity = Info
			f.Seen += ": harmless while this is the node's only interface, but once another one is added, packets whose route back leaves through it are dropped"
		}
		line := netSysctlName(g.link.Name, "rp_filter") + " = 2"
		f.Fix = fmt.Sprintf("use loose mode (2) on %s; since the kernel takes the larger value, 2 there wins over all=1: sysctl -w %s=2, and %s",
			g.link.Name, netSysctlName(g.link.Name, "rp_filter"), netPersist(line))
		f.Command = c.command()
		out = append(out, f)
	}
	return out
}

// ---------------------------------------------------------------------------
// arp-ignore

func checkARPIgnore(_ context.Context, env *Env) []Finding {
	if on, _ := netOnAWS(env); on {
		return nil // the VPC answers ARP, not the instance
	}
	groups, _ := netV4Groups(env)
	var out []Finding
	for _, g := range groups {
		c, ok := netConfOf(env, g.link.Name, "arp_ignore")
		if !ok {
			continue
		}
		fix := fmt.Sprintf("set arp_ignore to 1 (answer for addresses of the interface the request came in on) or 0 in both: sysctl -w %s=1 %s=1, and %s",
			netSysctlName("all", "arp_ignore"), netSysctlName(g.link.Name, "arp_ignore"),
			netPersist(netSysctlName("all", "arp_ignore")+" = 1", netSysctlName(g.link.Name, "arp_ignore")+" = 1"))
		switch c.larger {
		case 8:
			v := g.first()
			f := v.finding(netIDARPIgnore, Critical)
			f.Seen = fmt.Sprintf("arp_ignore is 8 on %s (%s): the kernel answers no ARP request for any local address, so no neighbour can resolve %s after it moves here; only the gratuitous ARP of the move reaches the neighbours that already knew it",
				g.link.Name, c.values(), g.addresses())
			f.Fix = fix
			f.Command = c.command()
			out = append(out, f)
		case 2:
			for _, v := range g.vips {
				if g.link.fits(v.ip()) {
					continue
				}
				f := v.finding(netIDARPIgnore, Critical)
				f.Seen = fmt.Sprintf("arp_ignore is 2 on %s (%s): the kernel answers an ARP request only when the sender is in the same subnet of %s as the requested address, and %s is in no subnet of %s (it has %s), so no neighbour or router gets an answer for it",
					g.link.Name, c.values(), g.link.Name, v.addr, g.link.Name, orNone(g.link.family(v.ip())))
				f.Fix = fix + "; or give the address the prefix length of the clients' subnet"
				f.Command = c.command()
				out = append(out, f)
			}
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// arp-announce

func checkARPAnnounce(_ context.Context, env *Env) []Finding {
	if on, _ := netOnAWS(env); on {
		return nil // the VPC answers ARP, not the instance
	}
	groups, links := netV4Groups(env)
	var out []Finding
	for _, g := range groups {
		c, ok := netConfOf(env, g.link.Name, "arp_announce")
		if !ok || c.larger != 0 {
			continue
		}
		var why []string
		if others := netOtherV4(links, g.link.Name); len(others) > 0 {
			why = append(why, fmt.Sprintf("this node has addresses on other interfaces too (%s), and an ARP request sent through one may name an address of another as its sender, so neighbours there learn that address at the wrong interface's MAC",
				strings.Join(others, "; ")))
		}
		var outside []string
		for _, v := range g.vips {
			if !g.link.fits(v.ip()) {
				outside = append(outside, v.ip().String())
			}
		}
		if len(outside) > 0 {
			why = append(why, fmt.Sprintf("%s is in no subnet of %s, so ARP requests for the gateway and clients sent from it carry a sender outside their subnet, which many hosts and routers ignore",
				strings.Join(outside, ", "), g.link.Name))
		}
		if len(why) == 0 {
			continue
		}
		v := g.first()
		f := v.finding(netIDARPAnnounce, Warning)
		f.Seen = fmt.Sprintf("arp_announce is 0 on %s (%s: any local address, of any interface, may be the sender of an ARP request); %s", g.link.Name, c.values(), strings.Join(why, "; and "))
		f.Fix = fmt.Sprintf("use 2, the recommended value for hosts with several addresses (the sender is the best local address for the target, a primary address of the outgoing interface): sysctl -w %s=2, and %s",
			netSysctlName("all", "arp_announce"), netPersist(netSysctlName("all", "arp_announce")+" = 2"))
		f.Command = c.command()
		out = append(out, f)
	}
	return out
}
