package netlab

import (
	"fmt"
	"os/exec"
	"strings"
)

// LinkDown sets the bridge side of every interface of a host down: the
// host keeps its addresses and processes but nothing reaches it and
// nothing it sends leaves, like a machine that lost power.
func (l *Lab) LinkDown(host string) error { return l.setLink(host, "down") }

// LinkUp undoes LinkDown. Neighbour lookups that failed meanwhile are
// retried on the kernel's schedule (every second), as on a real network.
func (l *Lab) LinkUp(host string) error { return l.setLink(host, "up") }

func (l *Lab) setLink(host, state string) error {
	if err := l.known(host); err != nil {
		return err
	}
	for i := range l.ips[host] {
		port := bridgePort(host, fmt.Sprintf("eth%d", i))
		if err := ipCmd("-n", l.bridgeNS(), "link", "set", port, state); err != nil {
			return fmt.Errorf("set link of %s %s: %w", host, state, err)
		}
	}
	l.log.Info("link "+state, "host", host)
	return nil
}

// Cut drops all traffic between hosts a and b, both ways, with firewall
// rules inside both hosts: each drops packets from and to the other's own
// addresses (input, output and forward), which also covers a virtual IP
// either of them holds. Traffic between them is not otherwise touched:
// cutting node1 from node2 leaves both reachable from every other host.
// Cut is idempotent.
func (l *Lab) Cut(a, b string) error { return l.cut(a, b, true) }

// Heal undoes Cut.
func (l *Lab) Heal(a, b string) error { return l.cut(a, b, false) }

func (l *Lab) cut(a, b string, drop bool) error {
	verb := map[bool]string{true: "cut", false: "heal"}[drop]
	for _, h := range []string{a, b} {
		if err := l.known(h); err != nil {
			return fmt.Errorf("%s %s-%s: %w", verb, a, b, err)
		}
	}
	if a == b {
		return fmt.Errorf("%s %s-%s: a host cannot be cut from itself", verb, a, b)
	}
	fw, err := l.firewall()
	if err != nil {
		return fmt.Errorf("%s %s-%s: %w", verb, a, b, err)
	}
	pair := [2]string{min(a, b), max(a, b)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cuts[pair] == drop {
		return nil
	}
	for _, side := range [][2]string{{a, b}, {b, a}} {
		self, other := side[0], side[1]
		if drop && !l.fwReady[self] {
			if err := fw.setup(l.NS(self)); err != nil {
				return fmt.Errorf("%s %s-%s: set up firewall in %s: %w", verb, a, b, self, err)
			}
			l.fwReady[self] = true
		}
		for _, ip := range l.ips[other] {
			if err := fw.rule(l.NS(self), ip, drop); err != nil {
				return fmt.Errorf("%s %s-%s: in %s: %w", verb, a, b, self, err)
			}
		}
	}
	l.cuts[pair] = drop
	l.log.Info("path "+verb, "host", a, "peer", b, "firewall", fw.name())
	return nil
}

// firewall adds and removes the rules that drop a peer's traffic inside
// one namespace.
type firewall interface {
	name() string
	setup(ns string) error
	rule(ns, peer string, drop bool) error
}

// firewall picks the backend Options.Firewall asks for.
func (l *Lab) firewall() (firewall, error) {
	has := func(bin string) bool { _, err := exec.LookPath(bin); return err == nil }
	switch want := l.opts.Firewall; {
	case want == "nft" || (want == "" && has("nft")):
		if !has("nft") {
			return nil, fmt.Errorf("nft not installed (apt-get install nftables)")
		}
		return nftables{}, nil
	case has("iptables"):
		return iptables{}, nil
	case want == "iptables":
		return nil, fmt.Errorf("iptables not installed (apt-get install iptables)")
	default:
		return nil, fmt.Errorf("neither nft (apt-get install nftables) nor iptables (apt-get install iptables) is installed")
	}
}

// nftables keeps the peers to drop in a set of its own table.
type nftables struct{}

const nftTable = `table inet netlab {
	set cut { type ipv4_addr; }
	chain input { type filter hook input priority 0; policy accept; ip saddr @cut drop; }
	chain output { type filter hook output priority 0; policy accept; ip daddr @cut drop; }
	chain forward { type filter hook forward priority 0; policy accept; ip saddr @cut drop; ip daddr @cut drop; }
}
`

func (nftables) name() string { return "nft" }

func (nftables) setup(ns string) error {
	return run([]byte(nftTable), "ip", "netns", "exec", ns, "nft", "-f", "-")
}

func (nftables) rule(ns, peer string, drop bool) error {
	op := map[bool]string{true: "add", false: "delete"}[drop]
	return run(nil, "ip", "netns", "exec", ns, "nft", op, "element", "inet", "netlab", "cut", "{", peer, "}")
}

// iptables inserts one DROP rule per chain and direction.
type iptables struct{}

func (iptables) name() string       { return "iptables" }
func (iptables) setup(string) error { return nil }

func (iptables) rule(ns, peer string, drop bool) error {
	op := map[bool]string{true: "-I", false: "-D"}[drop]
	for _, r := range []string{"INPUT -s", "OUTPUT -d", "FORWARD -s", "FORWARD -d"} {
		args := append([]string{"netns", "exec", ns, "iptables", "-w", op}, strings.Fields(r)...)
		if err := run(nil, "ip", append(args, peer, "-j", "DROP")...); err != nil {
			return err
		}
	}
	return nil
}
