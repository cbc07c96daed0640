// Package ip is the kit for a virtual IP address on a local interface (type
// "ip"), IPv4 or IPv6: the address clients reach a service by, moved with
// the hierarchy from node to node.
//
// Parameters:
//
//	address          required  the virtual IP in CIDR form: 10.1.2.100/24,
//	                           a /32 for AWS route-table mode (the route
//	                           table, not the subnet, brings traffic to it),
//	                           or IPv6 such as fd00::100/64
//	interface        required  the interface that carries it (eth0)
//	peers            optional  comma-separated IPs of hosts that must answer
//	                           a ping through the interface for the node to
//	                           count as connected to its clients; a check
//	                           fails only when none of them answers
//	peer_timeout     optional  how long a check waits for a peer to answer
//	                           (default 1s)
//	announce_count   optional  gratuitous ARP (IPv4) or unsolicited neighbour
//	                           advertisements (IPv6) sent after the address
//	                           is added (default 3; 0 sends none)
//	duplicate_check  optional  "false" turns off the readiness probe that
//	                           asks whether another host answers for the
//	                           address; for networks whose fabric answers
//	                           ARP for every address (default true)
//
// Any other parameter is a validation error.
//
// # Actions
//
// Restore adds the address with netlink (IPv6 without duplicate address
// detection, so it is usable at once) on an interface that must already be
// up: the kit never brings interfaces up or down. It then tells the
// neighbours the address moved: gratuitous ARP for IPv4, an unsolicited
// neighbour advertisement with the override flag for IPv6. A failed
// announcement is logged; it does not fail the restore. Remove deletes the
// address. Both are idempotent. Recover is Restore.
//
// QuickCheck observes only: the address must still be on the interface and
// the interface up with carrier, otherwise the resource has Failed. With
// peers, an echo request goes to each of them through the interface and the
// check fails only when none answers. When the check itself cannot run
// (a socket cannot be opened, the context ends) the answer is Unknown.
//
// Ready (kit.ReadinessProber) tells, without changing anything, whether this
// node could take the address over: the interface exists and is up, the
// address fits the subnet of an address already on it (any /32 or /128
// fits), and no other host answers for it (an RFC 5227 ARP probe for IPv4, a
// neighbour solicitation for IPv6). A node that holds the address already
// skips the last test.
//
// The kit implements kit.NodeFenced: a frozen agent leaves the address in
// its kernel, answering for it, so a node holding one must be fenced by its
// watchdog before the address is restored elsewhere.
package ip

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Type is the resource type name of this kit.
const Type = "ip"

// Parameter keys.
const (
	ParamAddress        = "address"
	ParamInterface      = "interface"
	ParamPeers          = "peers"
	ParamPeerTimeout    = "peer_timeout"
	ParamAnnounceCount  = "announce_count"
	ParamDuplicateCheck = "duplicate_check"
)

// Defaults and limits.
const (
	DefaultAnnounceCount = 3
	DefaultPeerTimeout   = time.Second
	maxAnnounceCount     = 20
	minPeerTimeout       = 10 * time.Millisecond
	maxPeerTimeout       = time.Minute
	maxIfNameLen         = 15 // IFNAMSIZ - 1
)

const validParams = "address, interface, peers, peer_timeout, announce_count and duplicate_check"

// Kit is the ip resource type.
type Kit struct{}

// NeedsNodeFencing implements kit.NodeFenced for the type: every resource
// of it is a local address that a frozen agent leaves in its kernel.
func (Kit) NeedsNodeFencing() bool { return true }

var (
	_ kit.Kit             = Kit{}
	_ kit.Instance        = (*instance)(nil)
	_ kit.ReadinessProber = (*instance)(nil)
	_ kit.NodeFenced      = (*instance)(nil)
	_ kit.NodeFenced      = Kit{}
)

// Type returns "ip".
func (Kit) Type() string { return Type }

// Validate checks the parameters without side effects; it reports every
// problem, not only the first.
func (Kit) Validate(params map[string]string) []spec.Problem {
	_, ps := parse(params)
	return ps
}

// New makes the instance for one resource on this node, acting in the
// agent's own network namespace. It fails if the parameters do not
// validate.
func (Kit) New(res spec.Resource, env kit.Env) (kit.Instance, error) {
	cfg, ps := parse(res.Params)
	if len(ps) > 0 {
		errs := make([]error, len(ps))
		for i, p := range ps {
			errs[i] = p
		}
		return nil, fmt.Errorf("ip resource %q: invalid parameters: %w", res.Name, errors.Join(errs...))
	}
	in := newInstance(cfg, env, hostNet())
	in.checks = hostLinks
	return in, nil
}

// config is a resource's parameters, parsed.
type config struct {
	addr           netip.Prefix // the virtual IP and its prefix length
	ifname         string
	peers          []netip.Addr
	peerTimeout    time.Duration
	announceCount  int
	duplicateCheck bool
}

// v6 reports whether the virtual IP is IPv6.
func (c config) v6() bool { return c.addr.Addr().Is6() }

// hostRoute reports whether the address is a /32 or /128 (route-table mode:
// it need not fit a subnet of the interface).
func (c config) hostRoute() bool { return c.addr.IsSingleIP() }

// parse turns parameters into a config and lists every problem found.
func parse(p map[string]string) (config, []spec.Problem) {
	cfg := config{
		peerTimeout:    DefaultPeerTimeout,
		announceCount:  DefaultAnnounceCount,
		duplicateCheck: true,
	}
	var ps []spec.Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, spec.Problem{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if _, ok := p[ParamAddress]; !ok {
		add(ParamAddress, "is required: give the virtual IP in CIDR form, such as 10.1.2.100/24, 10.1.2.100/32 for route-table mode or fd00::100/64")
	}
	if _, ok := p[ParamInterface]; !ok {
		add(ParamInterface, "is required: name the interface that carries the address, such as eth0")
	}
	for _, k := range spec.SortedKeys(p) {
		v := strings.TrimSpace(p[k])
		switch k {
		case ParamAddress:
			a, msg := parseAddress(v)
			if msg != "" {
				add(k, "%s", msg)
			}
			cfg.addr = a
		case ParamInterface:
			if msg := checkIfName(v); msg != "" {
				add(k, "%s", msg)
			}
			cfg.ifname = v
		case ParamPeers:
			if v == "" {
				add(k, "is empty: list the IPs that must answer, comma-separated, or leave peers out")
			}
		case ParamPeerTimeout:
			d, err := spec.ParseDuration(v)
			switch {
			case err != nil:
				add(k, "%v", err)
			case d.D() < minPeerTimeout || d.D() > maxPeerTimeout:
				add(k, "%s is out of range: give a duration from %s to %s", v, minPeerTimeout, maxPeerTimeout)
			default:
				cfg.peerTimeout = d.D()
			}
		case ParamAnnounceCount:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > maxAnnounceCount {
				add(k, "%q is not a whole number from 0 to %d (0 sends no announcement)", v, maxAnnounceCount)
			} else {
				cfg.announceCount = n
			}
		case ParamDuplicateCheck:
			switch v {
			case "true":
				cfg.duplicateCheck = true
			case "false":
				cfg.duplicateCheck = false
			default:
				add(k, "%q must be true or false", v)
			}
		default:
			add(k, "unknown parameter: the valid parameters are %s", validParams)
		}
	}
	// Peers are checked last: they are compared with the address.
	if v, ok := p[ParamPeers]; ok && strings.TrimSpace(v) != "" {
		seen := map[netip.Addr]bool{}
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			a, msg := parsePeer(s, cfg.addr)
			if msg != "" {
				add(ParamPeers, "%s", msg)
				continue
			}
			if !seen[a] {
				seen[a] = true
				cfg.peers = append(cfg.peers, a)
			}
		}
	}
	return cfg, ps
}

// parseAddress parses the address parameter; a non-empty message says what
// is wrong.
func parseAddress(s string) (netip.Prefix, string) {
	const form = "give the virtual IP in CIDR form, such as 10.1.2.100/24, 10.1.2.100/32 or fd00::100/64"
	if s == "" {
		return netip.Prefix{}, "is empty: " + form
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		if _, aerr := netip.ParseAddr(s); aerr == nil {
			return netip.Prefix{}, fmt.Sprintf("%q has no prefix length: %s", s, form)
		}
		return netip.Prefix{}, fmt.Sprintf("%q is not in CIDR form: %s", s, form)
	}
	a := pfx.Addr()
	switch {
	case a.Is4In6():
		return pfx, fmt.Sprintf("%q is an IPv4-mapped IPv6 address: write IPv4 addresses in dotted form (%s/%d)", s, a.Unmap(), pfx.Bits()-96)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a == broadcast:
		return pfx, fmt.Sprintf("%s is %s address, not one clients can reach as a virtual IP", a, kind(a))
	}
	if a.Is4() && pfx.Bits() <= 30 {
		if a == pfx.Masked().Addr() {
			return pfx, fmt.Sprintf("%s is the network address of %s, not a host address", a, pfx.Masked())
		}
		if a == lastAddr(pfx) {
			return pfx, fmt.Sprintf("%s is the broadcast address of %s, not a host address", a, pfx.Masked())
		}
	}
	if a.Is6() && pfx.Bits() <= 126 && a == pfx.Masked().Addr() {
		return pfx, fmt.Sprintf("%s is the subnet-router anycast address of %s, not a host address", a, pfx.Masked())
	}
	return pfx, ""
}

// parsePeer parses one entry of the peers list, checked against the
// virtual IP (which may be invalid when the address did not parse).
func parsePeer(s string, vip netip.Prefix) (netip.Addr, string) {
	if s == "" {
		return netip.Addr{}, "has an empty entry: list IPs separated by single commas"
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Sprintf("%q is not an IP address", s)
	}
	switch {
	case a.Zone() != "":
		return a, fmt.Sprintf("%q has a zone: leave out %%%s, peers are reached through the resource's interface", s, a.Zone())
	case a.Is4In6():
		return a, fmt.Sprintf("%q is an IPv4-mapped IPv6 address: write it as %s", s, a.Unmap())
	case a.IsUnspecified(), a.IsMulticast(), a == broadcast:
		return a, fmt.Sprintf("%s is %s address, not a host that can answer", a, kind(a))
	}
	if vip.IsValid() {
		if a == vip.Addr() {
			return a, fmt.Sprintf("%s is the virtual IP itself: peers are other hosts, such as the gateway or clients", a)
		}
		if a.Is4() != vip.Addr().Is4() {
			return a, fmt.Sprintf("%s is %s but the address is %s: list peers of the same IP version", a, family(a), family(vip.Addr()))
		}
	}
	return a, ""
}

// checkIfName returns what is wrong with an interface name, or "".
func checkIfName(s string) string {
	switch {
	case s == "":
		return "is empty: name the interface that carries the address, such as eth0"
	case s == "." || s == "..":
		return fmt.Sprintf("%q is not an interface name", s)
	case len(s) > maxIfNameLen:
		return fmt.Sprintf("%q is longer than %d characters, the longest interface name Linux allows", s, maxIfNameLen)
	case strings.Contains(s, ":"):
		return fmt.Sprintf("%q is an address label, not an interface: name the interface itself (%s)", s, s[:strings.Index(s, ":")])
	case strings.ContainsAny(s, "/ \t\n\r\x00"):
		return fmt.Sprintf("%q is not an interface name: it contains '/', a space or a control character", s)
	}
	return ""
}

// broadcast is IPv4's limited broadcast address.
var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// kind names what a special address is, with its article.
func kind(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "an unspecified"
	case a.IsLoopback():
		return "a loopback"
	case a.IsMulticast():
		return "a multicast"
	case a == broadcast:
		return "the broadcast"
	default:
		return "a link-local"
	}
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// lastAddr returns the highest address of p's subnet.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// newInstance builds an instance acting through sys.
func newInstance(cfg config, env kit.Env, sys system) *instance {
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &instance{
		cfg:         cfg,
		elsewhere:   env.ServedElsewhere,
		node:        nodeName(env.Node),
		sys:         sys,
		log:         log.With("address", cfg.addr.String(), "interface", cfg.ifname),
		announceGap: defaultAnnounceGap,
		probeWait:   defaultProbeWait,
		probeRounds: defaultProbeRounds,
		peerRounds:  defaultPeerRounds,
		newEchoID:   randomEchoID,
	}
}

func nodeName(n string) string {
	if n == "" {
		return "this node"
	}
	return n
}
