package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KeepalivedOptions describe one VRRP instance run on every node, for
// comparing lifeboat with keepalived on the same network.
type KeepalivedOptions struct {
	// VIP is the virtual IP with its prefix length, added on eth0 (e.g.
	// Lab.VIPPrefix(1)).
	VIP string
	// Version is the VRRP version, 2 or 3 (default 2).
	Version int
	// Advert is advert_int (default 1s): whole seconds for VRRPv2,
	// multiples of 10ms for VRRPv3.
	Advert time.Duration
	// Priority is this node's priority (1-254; default 200 for node1, 180
	// for node2, ... and 1 from node11 on).
	Priority int
	// RouterID is virtual_router_id (1-255, default 51).
	RouterID int
	// Peers are the hosts adverts go to, by unicast (default every other
	// node).
	Peers []string
}

// KeepalivedDefaults is keepalived as installed: VRRPv2, one advert a
// second, a failover after about 3.5 s.
func KeepalivedDefaults(vip string) KeepalivedOptions {
	return KeepalivedOptions{VIP: vip, Version: 2, Advert: time.Second}
}

// KeepalivedTuned is keepalived as a performance-minded user runs it:
// VRRPv3 with an advert every 100ms, a failover after about 0.35 s.
func KeepalivedTuned(vip string) KeepalivedOptions {
	return KeepalivedOptions{VIP: vip, Version: 3, Advert: 100 * time.Millisecond}
}

// KeepalivedConfig renders keepalived.conf for the node named name with
// address self, sending adverts to peers. o must have its defaults filled
// (Priority and Peers are used as given).
func KeepalivedConfig(name, self string, peers []string, o KeepalivedOptions) (string, error) {
	var probs []string
	vip, err := netip.ParsePrefix(o.VIP)
	if err != nil || !vip.Addr().Is4() {
		probs = append(probs, fmt.Sprintf("VIP %q is not an IPv4 address with a prefix length", o.VIP))
	}
	switch o.Version {
	case 2:
		if o.Advert < time.Second || o.Advert%time.Second != 0 {
			probs = append(probs, fmt.Sprintf("advert interval %v: VRRPv2 takes whole seconds", o.Advert))
		}
	case 3:
		if o.Advert < 10*time.Millisecond || o.Advert%(10*time.Millisecond) != 0 {
			probs = append(probs, fmt.Sprintf("advert interval %v: VRRPv3 takes multiples of 10ms", o.Advert))
		}
	default:
		probs = append(probs, fmt.Sprintf("VRRP version %d (want 2 or 3)", o.Version))
	}
	if o.Advert > 40*time.Second {
		probs = append(probs, fmt.Sprintf("advert interval %v is over 40s", o.Advert))
	}
	if o.Priority < 1 || o.Priority > 254 {
		probs = append(probs, fmt.Sprintf("priority %d (want 1-254)", o.Priority))
	}
	if o.RouterID < 1 || o.RouterID > 255 {
		probs = append(probs, fmt.Sprintf("virtual router id %d (want 1-255)", o.RouterID))
	}
	if len(peers) == 0 {
		probs = append(probs, "no unicast peers")
	}
	for _, a := range append([]string{self}, peers...) {
		if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
			probs = append(probs, fmt.Sprintf("address %q is not IPv4", a))
		}
	}
	if len(probs) > 0 {
		return "", fmt.Errorf("keepalived config for %s: %s", name, strings.Join(probs, "; "))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by netlab for %s.\nglobal_defs {\n\trouter_id %s\n\tvrrp_version %d\n", name, name, o.Version)
	b.WriteString("\tscript_user root\n\tenable_script_security\n}\n\n")
	fmt.Fprintf(&b, "vrrp_instance netlab {\n\tstate BACKUP\n\tinterface eth0\n\tvirtual_router_id %d\n\tpriority %d\n", o.RouterID, o.Priority)
	fmt.Fprintf(&b, "\tadvert_int %s\n", strconv.FormatFloat(o.Advert.Seconds(), 'f', -1, 64))
	fmt.Fprintf(&b, "\tunicast_src_ip %s\n\tunicast_peer {\n", self)
	for _, p := range peers {
		fmt.Fprintf(&b, "\t\t%s\n", p)
	}
	fmt.Fprintf(&b, "\t}\n\tvirtual_ipaddress {\n\t\t%s dev eth0\n\t}\n}\n", o.VIP)
	return b.String(), nil
}

// Keepalived is a keepalived daemon running in a node.
type Keepalived struct {
	*Proc
	// Conf is its configuration file.
	Conf string
}

// StartKeepalived writes a config for a node and starts keepalived in it,
// in the foreground, VRRP only, logging to its log file, with pid files of
// its own so that several instances run side by side. It fails with
// ErrUnavailable when keepalived is not installed.
func (l *Lab) StartKeepalived(node string, o KeepalivedOptions) (*Keepalived, error) {
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		return nil, fmt.Errorf("keepalived not installed (apt-get install keepalived): %w", ErrUnavailable)
	}
	i := slices.Index(l.Nodes(), node)
	if i < 0 {
		return nil, fmt.Errorf("start keepalived: %q is not a node (have %s)", node, strings.Join(l.Nodes(), ", "))
	}
	if o.Version == 0 {
		o.Version = 2
	}
	if o.Advert == 0 {
		o.Advert = time.Second
	}
	if o.Priority == 0 {
		o.Priority = max(200-20*i, 1)
	}
	if o.RouterID == 0 {
		o.RouterID = 51
	}
	if o.Peers == nil {
		o.Peers = slices.DeleteFunc(l.Nodes(), func(n string) bool { return n == node })
	}
	var peers []string
	for _, p := range o.Peers {
		if err := l.known(p); err != nil {
			return nil, fmt.Errorf("start keepalived on %s: peer: %w", node, err)
		}
		peers = append(peers, l.IP(p))
	}
	conf, err := KeepalivedConfig(node, l.IP(node), peers, o)
	if err != nil {
		return nil, err
	}
	base := filepath.Join(l.dir, "keepalived-"+node)
	k := &Keepalived{Conf: base + ".conf"}
	if err := os.WriteFile(k.Conf, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("start keepalived on %s: %w", node, err)
	}
	for _, f := range []string{".pid", "-vrrp.pid", "-checkers.pid"} {
		if err := os.Remove(base + f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("start keepalived on %s: stale pid file: %w", node, err)
		}
	}
	k.Proc, err = l.Start(node, bin, KeepalivedArgs(k.Conf, base)...)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// KeepalivedArgs are the flags netlab runs keepalived with: in the
// foreground (-n), logging to the console (-l) in detail (-D) and not to
// syslog (-G), VRRP only (-P), with this config (-f) and pid files for the
// parent (-p), the VRRP child (-r) and the checker child (-c) named after
// base.
func KeepalivedArgs(conf, base string) []string {
	return []string{"-n", "-l", "-D", "-G", "-P", "-f", conf,
		"-p", base + ".pid", "-r", base + "-vrrp.pid", "-c", base + "-checkers.pid"}
}
