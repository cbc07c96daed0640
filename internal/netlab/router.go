package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// MirrorRoutes returns a function for sim.Options.RouteHook that copies
// every route the simulator creates or replaces into the router (router
// layout only): enis maps network interface ids to node names, and a route
// to a node's interface becomes `ip route replace CIDR via NODE_IP` on the
// router. A route to anything else (a gateway, an unknown interface)
// becomes a blackhole: no node gets the traffic. Failures are logged; read
// the result with RouterRoute.
func (l *Lab) MirrorRoutes(enis map[string]string) (func(routeTableID, cidr, eniID string), error) {
	if !l.opts.Router {
		return nil, errors.New("mirror routes: the lab has no router (Options.Router)")
	}
	for eni, node := range enis {
		if err := l.known(node); err != nil {
			return nil, fmt.Errorf("mirror routes: interface %s: %w", eni, err)
		}
	}
	m := make(map[string]string, len(enis))
	for k, v := range enis {
		m[k] = v
	}
	return func(rtb, cidr, eni string) {
		node := m[eni]
		if err := l.SetRoute(cidr, node); err != nil {
			l.log.Error("mirror route", "route_table", rtb, "cidr", cidr, "interface", eni, "err", err)
		}
	}, nil
}

// SetRoute points the router's route for cidr at a node ("" for a
// blackhole), as a cloud route table change would.
func (l *Lab) SetRoute(cidr, node string) error {
	if !l.opts.Router {
		return errors.New("set route: the lab has no router (Options.Router)")
	}
	if _, err := netip.ParsePrefix(cidr); err != nil {
		return fmt.Errorf("set route %q: %w", cidr, err)
	}
	args := []string{"-n", l.NS(Router), "route", "replace"}
	if node == "" {
		args = append(args, "blackhole", cidr)
	} else {
		if err := l.known(node); err != nil {
			return fmt.Errorf("set route %s: %w", cidr, err)
		}
		args = append(args, cidr, "via", l.IP(node), "dev", "eth0")
	}
	if err := ipCmd(args...); err != nil {
		return fmt.Errorf("set route %s to %q: %w", cidr, node, err)
	}
	l.log.Info("router route set", "cidr", cidr, "node", node)
	return nil
}

// RouterRoute returns the node the router's route for cidr leads to: ""
// with ok for a blackhole, "" without ok when there is no such route.
func (l *Lab) RouterRoute(cidr string) (node string, ok bool, err error) {
	if !l.opts.Router {
		return "", false, errors.New("router route: the lab has no router (Options.Router)")
	}
	out, err := exec.Command("ip", "-n", l.NS(Router), "-4", "route", "show", "exact", cidr).CombinedOutput()
	if err != nil {
		return "", false, fmt.Errorf("router route %s: %v: %s", cidr, err, strings.TrimSpace(string(out)))
	}
	f := strings.Fields(string(out))
	switch {
	case len(f) == 0:
		return "", false, nil
	case f[0] == "blackhole":
		return "", true, nil
	}
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			for _, n := range l.Nodes() {
				if l.IP(n) == f[i+1] {
					return n, true, nil
				}
			}
			return "", false, fmt.Errorf("router route %s: via %s, which is no node", cidr, f[i+1])
		}
	}
	return "", false, fmt.Errorf("router route %s: unexpected %q", cidr, strings.TrimSpace(string(out)))
}
