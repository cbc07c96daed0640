package ip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// Timing of announcements and probes.
const (
	// defaultAnnounceGap spaces the announcements: a switch or neighbour
	// that drops one sees the next.
	defaultAnnounceGap = 10 * time.Millisecond
	// defaultProbeWait is how long Ready waits for another host to answer
	// for the address (RFC 5227 waits seconds; a LAN answers in well under
	// a millisecond).
	defaultProbeWait = 200 * time.Millisecond
	// defaultProbeRounds: probes sent within probeWait.
	defaultProbeRounds = 2
	// defaultPeerRounds: echo requests sent to each peer within
	// peer_timeout.
	defaultPeerRounds = 3
)

// instance manages one virtual IP on this node.
type instance struct {
	cfg       config
	elsewhere bool   // kit.Env.ServedElsewhere: the owner answers for the address
	node      string // for messages: "node2", or "this node"
	sys       system
	log       *slog.Logger

	announceGap time.Duration
	probeWait   time.Duration
	probeRounds int
	peerRounds  int
	newEchoID   func() int

	// checks: the node's shared interface dumps for checks (nil: every
	// check reads its own); changedAt: this instance's last restore.
	checks    *linkCache
	changedAt atomic.Int64
}

// NeedsNodeFencing implements kit.NodeFenced: nothing outside the node
// takes a local address away from a frozen agent.
func (in *instance) NeedsNodeFencing() bool { return true }

// Restore adds the address to the interface, which must be up, and
// announces it to the neighbours.
func (in *instance) Restore(ctx context.Context) error { return in.restore(ctx, kit.OpRestore) }

// Recover is Restore: re-adding a removed address and announcing it again
// is the repair.
func (in *instance) Recover(ctx context.Context) error { return in.restore(ctx, kit.OpRecover) }

func (in *instance) restore(ctx context.Context, action string) error {
	defer in.changed()
	if err := ctx.Err(); err != nil {
		return in.wrap(action, err)
	}
	l, err := in.sys.Link(in.cfg.ifname)
	if errors.Is(err, errNoLink) {
		return in.wrap(action, in.missing())
	}
	if err != nil {
		return in.wrap(action, err)
	}
	if msg := in.down(l); msg != "" {
		return in.wrap(action, fmt.Errorf("%s: lifeboat does not bring interfaces up; bring it up (ip link set %s up) or fix the link", msg, l.Name))
	}
	added, err := in.ensureAddr(l)
	if err != nil {
		return in.wrap(action, err)
	}
	in.announce(ctx, l, action)
	in.log.Info("address in service", "action", action, "added", added)
	return nil
}

// ensureAddr adds the address unless it is already on l; added reports
// whether it was missing.
func (in *instance) ensureAddr(l link) (added bool, err error) {
	vip := in.cfg.addr
	present := l.find(vip.Addr())
	for _, la := range present {
		if la.Flags&unix.IFA_F_DADFAILED != 0 {
			// The kernel will not use an address whose duplicate address
			// detection failed: add it again, without detection.
			if err := in.sys.DelAddr(l, la.Prefix); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
				return false, fmt.Errorf("delete %s, marked as a duplicate, from %s on %s: %w", la.Prefix, l.Name, in.node, err)
			}
			present = nil
			break
		}
	}
	if len(present) > 0 {
		if present[0].Prefix.Bits() != vip.Bits() {
			in.log.Warn("address already on the interface with another prefix length; leaving it as it is",
				"found", present[0].Prefix.String())
		}
		return false, nil
	}
	flags := 0
	if in.cfg.v6() {
		flags = unix.IFA_F_NODAD // usable at once, no tentative second
	}
	err = in.sys.AddAddr(l, vip, flags)
	switch {
	case errors.Is(err, syscall.EEXIST):
		return false, nil // added meanwhile
	case err != nil:
		return false, fmt.Errorf("add %s to %s on %s: %w", vip, l.Name, in.node, err)
	}
	return true, nil
}

// announce tells the neighbours that the address is here now. Failures are
// logged, not returned: the address works without them, neighbours just
// learn the move when their cache entries expire.
func (in *instance) announce(ctx context.Context, l link, action string) {
	n := in.cfg.announceCount
	if n == 0 {
		return
	}
	if !l.ethernet() {
		in.log.Debug("interface has no Ethernet address: no announcement sent", "action", action)
		return
	}
	vip := in.cfg.addr.Addr()
	var err error
	if in.cfg.v6() {
		var c ndpConn
		if c, err = in.sys.OpenNDP(l, vip); err == nil {
			err = announceNDP(ctx, c, l.MAC, vip, n, in.announceGap)
			c.Close()
		}
	} else {
		var c arpConn
		if c, err = in.sys.OpenARP(l); err == nil {
			err = announceARP(ctx, c, l.MAC, vip, n, in.announceGap)
			c.Close()
		}
	}
	if err != nil {
		in.log.Warn("could not announce the address to the neighbours; they learn the new owner when their cache entries expire",
			"action", action, "error", err.Error())
		return
	}
	in.log.Debug("address announced", "action", action, "count", n, "mac", l.MAC.String())
}

// Remove deletes the address from the interface. An address or interface
// already gone is success.
func (in *instance) Remove(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return in.wrap(kit.OpRemove, err)
	}
	l, err := in.sys.Link(in.cfg.ifname)
	if errors.Is(err, errNoLink) {
		in.log.Info("interface does not exist: address already absent", "action", kit.OpRemove)
		return nil
	}
	if err != nil {
		return in.wrap(kit.OpRemove, err)
	}
	removed := 0
	for _, la := range l.find(in.cfg.addr.Addr()) {
		err := in.sys.DelAddr(l, la.Prefix)
		if err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return in.wrap(kit.OpRemove, fmt.Errorf("delete %s from %s on %s: %w", la.Prefix, l.Name, in.node, err))
		}
		removed++
	}
	in.log.Info("address out of service", "action", kit.OpRemove, "removed", removed)
	return nil
}

// QuickCheck observes: the address is on the interface, the interface is
// up with carrier and, with peers, at least one peer answers a ping.
func (in *instance) QuickCheck(ctx context.Context) (kit.Health, error) {
	const action = kit.OpQuickCheck
	l, err := in.checkLink()
	if errors.Is(err, errNoLink) {
		return kit.Failed, in.wrap(action, in.missing())
	}
	if err != nil {
		return kit.Unknown, in.wrap(action, err)
	}
	if msg := in.down(l); msg != "" {
		return kit.Failed, in.wrap(action, errors.New(msg))
	}
	present := l.find(in.cfg.addr.Addr())
	if len(present) == 0 {
		return kit.Failed, in.wrap(action, fmt.Errorf("%s is no longer on %s on %s: something else removed it",
			in.cfg.addr.Addr(), l.Name, in.node))
	}
	if !usable(present) {
		return kit.Failed, in.wrap(action, fmt.Errorf("the kernel marked %s on %s on %s as a duplicate: another host holds the address",
			in.cfg.addr.Addr(), l.Name, in.node))
	}
	if len(in.cfg.peers) == 0 {
		return kit.Healthy, nil
	}
	return in.checkPeers(ctx, l)
}

// usable reports whether one of the entries for the address is not marked
// as a failed duplicate.
func usable(present []linkAddr) bool {
	for _, la := range present {
		if la.Flags&unix.IFA_F_DADFAILED == 0 {
			return true
		}
	}
	return false
}

func (in *instance) checkPeers(ctx context.Context, l link) (kit.Health, error) {
	const action = kit.OpQuickCheck
	v6 := in.cfg.v6()
	c, err := in.sys.OpenICMP(l, v6)
	if err != nil {
		return kit.Unknown, in.wrap(action, fmt.Errorf("cannot ping the peers: %w", err))
	}
	defer c.Close()
	res, err := pingAny(ctx, c, v6, in.cfg.peers, in.newEchoID(), in.cfg.peerTimeout, in.peerRounds)
	if err != nil {
		return kit.Unknown, in.wrap(action, fmt.Errorf("ping the peers through %s: %w", l.Name, err))
	}
	if res.Answered.IsValid() {
		in.log.Debug("peer answered", "action", action, "peer", res.Answered.String())
		return kit.Healthy, nil
	}
	msg := fmt.Sprintf("none of the peers %s answered a ping through %s within %s", joinAddrs(in.cfg.peers), l.Name, in.cfg.peerTimeout)
	if len(res.Unreachable) > 0 {
		msg += " (cannot send to " + strings.Join(res.Unreachable, "; ") + ")"
	}
	return kit.Failed, in.wrap(action, fmt.Errorf("%s: %s looks cut off from its clients", msg, in.node))
}

// Ready implements kit.ReadinessProber. It changes nothing: it reads the
// interface and, unless this node holds the address already, asks the link
// whether another host answers for it.
func (in *instance) Ready(ctx context.Context) kit.Readiness {
	notReady := func(format string, args ...any) kit.Readiness {
		return kit.Readiness{Reason: fmt.Sprintf(format, args...)}
	}
	vip := in.cfg.addr.Addr()
	l, err := in.sys.Link(in.cfg.ifname)
	if errors.Is(err, errNoLink) {
		return notReady("%v", in.missing())
	}
	if err != nil {
		return kit.Readiness{Unknown: true, Reason: err.Error()}
	}
	if msg := in.down(l); msg != "" {
		return notReady("%s", msg)
	}
	if present := l.find(vip); len(present) > 0 && usable(present) {
		return kit.Readiness{Ready: true} // this node is the owner
	}
	if !in.cfg.hostRoute() && !fits(l, in.cfg.addr) {
		have := "no " + family(vip) + " address"
		if s := sameFamily(l, vip); len(s) > 0 {
			have = strings.Join(s, ", ")
		}
		return notReady("%s is not in the subnet of any address on %s on %s (it has %s): add an address in that subnet, or use a /%d for route-table mode",
			in.cfg.addr, l.Name, in.node, have, vip.BitLen())
	}
	if !in.cfg.duplicateCheck || in.elsewhere || (!in.cfg.v6() && !l.ethernet()) {
		return kit.Readiness{Ready: true}
	}
	cl, err := in.probe(ctx, l)
	if err != nil {
		return kit.Readiness{Unknown: true, Reason: fmt.Sprintf("check whether another host holds %s on %s: %v", vip, l.Name, err)}
	}
	if cl != nil {
		return notReady("%s is answered by %s on %s of %s (another host holds the address)", vip, cl, l.Name, in.node)
	}
	return kit.Readiness{Ready: true}
}

// probe asks the link whether another host answers for the address.
func (in *instance) probe(ctx context.Context, l link) (*claim, error) {
	vip := in.cfg.addr.Addr()
	if in.cfg.v6() {
		c, err := in.sys.OpenNDP(l, netip.Addr{})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return probeNDP(ctx, c, l.MAC, vip, in.probeWait, in.probeRounds)
	}
	c, err := in.sys.OpenARP(l)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return probeARP(ctx, c, l.MAC, vip, in.probeWait, in.probeRounds)
}

// fits reports whether vip lies in the subnet of another address of its
// family on l (link-local addresses do not count).
func fits(l link, vip netip.Prefix) bool {
	for _, la := range l.Addrs {
		a := la.Prefix.Addr()
		if a == vip.Addr() || a.Is4() != vip.Addr().Is4() || a.IsLinkLocalUnicast() {
			continue
		}
		if la.Prefix.Contains(vip.Addr()) {
			return true
		}
	}
	return false
}

// sameFamily lists l's addresses of a's family, link-local ones left out.
func sameFamily(l link, a netip.Addr) []string {
	var out []string
	for _, la := range l.Addrs {
		if la.Prefix.Addr().Is4() == a.Is4() && !la.Prefix.Addr().IsLinkLocalUnicast() {
			out = append(out, la.Prefix.String())
		}
	}
	return out
}

// down says in plain words why l cannot carry traffic, or "" when it can.
func (in *instance) down(l link) string {
	switch {
	case !l.AdminUp:
		return fmt.Sprintf("interface %s on %s is administratively down", l.Name, in.node)
	case !l.LowerUp:
		return fmt.Sprintf("interface %s on %s has no carrier (cable, switch port or the link's other end is down)", l.Name, in.node)
	}
	return ""
}

func (in *instance) missing() error {
	return fmt.Errorf("interface %s does not exist on %s", in.cfg.ifname, in.node)
}

// wrap names the action, the address and the interface.
func (in *instance) wrap(action string, err error) error {
	return fmt.Errorf("%s %s on %s: %w", action, in.cfg.addr, in.cfg.ifname, err)
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
