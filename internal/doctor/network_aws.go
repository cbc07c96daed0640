package doctor

// ip-aws: on AWS a virtual IP on a local interface receives traffic only if
// the VPC delivers it to this instance's network interface: either a route
// table routes it there (an ec2 resource in route mode that moves the route
// with the hierarchy), or it is one of the interface's private addresses.
// Gratuitous ARP, which moves the address on a LAN, does nothing in a VPC.
//
// The route half is read from the hierarchy alone; the address half from
// the instance metadata service (no IAM permission needed, no EC2 API
// call): network/interfaces/macs/MAC/local-ipv4s (ipv6s).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// netOnAWS reports, without asking the network, whether this node runs on
// AWS and how that is known: its hierarchies use ec2 resources, the
// agent's config has an aws section, or the machine says it is an EC2
// instance (DMI vendor on Nitro, hypervisor UUID on Xen).
func netOnAWS(env *Env) (bool, string) {
	if env.AWS == nil {
		return false, ""
	}
	if awsUsed(env) {
		return true, "this node's hierarchies have ec2 resources"
	}
	s := env.AWSSettings
	if s.Region != "" || s.Endpoints != (awsapi.Endpoints{}) || s.HTTPProxy != "" || s.HTTPSProxy != "" {
		return true, "the agent's config has an aws section"
	}
	for _, p := range []string{"/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/board_vendor"} {
		if b, err := os.ReadFile(netRoot(env, p)); err == nil && strings.Contains(string(b), "Amazon EC2") {
			return true, "the machine is an EC2 instance (" + p + ")"
		}
	}
	if b, err := os.ReadFile(netRoot(env, "/sys/hypervisor/uuid")); err == nil && strings.HasPrefix(strings.ToLower(string(b)), "ec2") {
		return true, "the machine is an EC2 instance (/sys/hypervisor/uuid)"
	}
	return false, ""
}

// netRouted reports whether a resource of v's own hierarchy routes v's
// address (an ec2 resource in route mode: its kit is a kit.Router);
// elsewhere names another hierarchy of this node that has one (it moves
// independently, so it does not count).
func netRouted(env *Env, v vip) (routed bool, elsewhere string) {
	for _, h := range env.Hierarchies {
		for _, r := range h.Resources {
			k, _ := env.Kits.Lookup(r.Type)
			rt, ok := k.(kit.Router)
			if !ok {
				continue
			}
			p, ok := rt.Routed(r.Params)
			if !ok || !p.Contains(v.ip()) {
				continue
			}
			if h.Name == v.h.Name {
				return true, ""
			}
			elsewhere = h.Name
		}
	}
	return false, elsewhere
}

// netENI is what the metadata service says of one interface.
type netENI struct {
	mac, id string
	addrs   []string // private addresses of the family asked, the primary first
	err     error
}

func netNotFound(err error) bool {
	var st interface{ HTTPStatusCode() int }
	return errors.As(err, &st) && st.HTTPStatusCode() == http.StatusNotFound
}

// netInterface reads the interface with hardware address mac from the
// metadata service, or the primary interface when mac is not one of the
// instance's (a bond, a bridge, no link).
func (a *awsSession) netInterface(ctx context.Context, mac string, v4 bool) netENI {
	e := netENI{mac: mac}
	if mac != "" {
		id, err := a.meta(ctx, "network/interfaces/macs/"+mac+"/interface-id")
		switch {
		case err == nil:
			e.id = id
		case !netNotFound(err):
			e.err = err
			return e
		}
	}
	if e.id == "" {
		m, err := a.meta(ctx, "mac")
		if err != nil {
			e.err = err
			return e
		}
		e.mac = m
		if e.id, err = a.meta(ctx, "network/interfaces/macs/"+m+"/interface-id"); err != nil {
			e.err = err
			return e
		}
	}
	key := "local-ipv4s"
	if !v4 {
		key = "ipv6s"
	}
	list, err := a.meta(ctx, "network/interfaces/macs/"+e.mac+"/"+key)
	if err != nil && !netNotFound(err) {
		e.err = err
		return e
	}
	for _, l := range strings.Split(list, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			e.addrs = append(e.addrs, l)
		}
	}
	return e
}

// netRouteFix says how to bring v's traffic to the node: route it (the
// way that fails over), or assign it to the interface.
func netRouteFix(v vip, eni string) string {
	if !v.ip().Is4() {
		return fmt.Sprintf("assign the address to %s (aws ec2 assign-ipv6-addresses --network-interface-id %s --ipv6-addresses %s), which serves this node only: "+
			"lifeboat moves neither secondary addresses nor IPv6 routes", eni, eni, v.ip())
	}
	return netRouteOnly(v) + fmt.Sprintf("; or assign it to %s as a secondary private address (aws ec2 assign-private-ip-addresses --network-interface-id %s --private-ip-addresses %s), "+
		"which serves this node only: lifeboat does not move secondary addresses between interfaces", eni, eni, v.ip())
}

// netRouteOnly says how to route v with the hierarchy.
func netRouteOnly(v vip) string {
	return fmt.Sprintf("add to hierarchy %s an ec2 resource in route mode, so that the route follows the address (mode: route, cidr: %s/32, route_tables: the route tables of the clients' subnets), "+
		"make the ip resource depend on it and give it the address %s/32", v.h.Name, v.ip(), v.ip())
}

func checkIPAWS(ctx context.Context, env *Env) []Finding {
	vs := vips(env)
	if len(vs) == 0 {
		return nil
	}
	if on, _ := netOnAWS(env); !on {
		return nil
	}
	links, _ := netLinks(env) // without them, the primary interface is asked
	var a *awsSession
	seen := map[string]netENI{}
	var out []Finding
	for _, v := range vs {
		routed, elsewhere := netRouted(env, v)
		if routed {
			continue
		}
		if a == nil {
			a = awsOpen(ctx, env)
		}
		mac := ""
		if l, ok := links[v.ifname]; ok && len(l.MAC) > 0 {
			mac = strings.ToLower(l.MAC.String())
		}
		key := fmt.Sprintf("%s/%t", mac, v.ip().Is4())
		e, ok := seen[key]
		if !ok {
			e = a.netInterface(ctx, mac, v.ip().Is4())
			seen[key] = e
		}
		note := ""
		if elsewhere != "" {
			note = fmt.Sprintf(" (hierarchy %s has an ec2 route resource for it, but hierarchies move independently: the route follows that one, not %s)", elsewhere, v.h.Name)
		}
		macPart, list := e.mac, "local-ipv4s"
		if macPart == "" {
			macPart = "MAC" // meta-data/mac gives the primary one
		}
		if !v.ip().Is4() {
			list = "ipv6s"
		}
		cmd := awsCurlIMDS(a.s, "meta-data/network/interfaces/macs/"+macPart+"/"+list)
		if v.ip().Is4() {
			cmd += "\n" + a.cli("ec2", "describe-route-tables", "--filters", fmt.Sprintf("Name=route.destination-cidr-block,Values=%s/32", v.ip()))
		}
		if e.err != nil {
			f := v.finding(netIDAWS, Warning)
			f.Seen = fmt.Sprintf("no ec2 resource in route mode in hierarchy %s routes %s to this node%s, and whether it is a private address of this node's interface could not be read from the instance metadata service: %v",
				v.h.Name, v.ip(), note, e.err)
			f.Fix = "make the instance metadata service answer the agent (the command shows what it says); unless the address is a private address of this node's interface, " + netRouteFix(v, "ENI_ID")
			f.Command = cmd
			out = append(out, f)
			continue
		}
		idx := -1
		for i, x := range e.addrs {
			if y, err := netip.ParseAddr(x); err == nil && y == v.ip() {
				idx = i
			}
		}
		switch {
		case idx == 0:
			continue // the interface's own primary address
		case idx > 0:
			f := v.finding(netIDAWS, Info)
			f.Seen = fmt.Sprintf("%s is a secondary private address of %s: traffic to it reaches this node, but lifeboat does not move secondary addresses between interfaces, so no other node can take it over%s",
				v.ip(), e.id, note)
			f.Fix = "so that the address fails over, route it instead: " + netRouteOnly(v)
			if !v.ip().Is4() {
				f.Fix = "lifeboat's ec2 kit routes IPv4 addresses only: for an IPv6 address that fails over, use an IPv4 virtual IP in route mode"
			}
			f.Command = cmd
			out = append(out, f)
			continue
		}
		f := v.finding(netIDAWS, Critical)
		f.Seen = fmt.Sprintf("%s is neither routed to %s by a route table nor a secondary private address of it: traffic to it never reaches this node (a VPC ignores gratuitous ARP)%s",
			v.ip(), e.id, note)
		f.Fix = netRouteFix(v, e.id)
		f.Command = cmd
		out = append(out, f)
	}
	return out
}
