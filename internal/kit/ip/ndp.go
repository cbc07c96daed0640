package ip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
)

// allNodes is ff02::1, where unsolicited advertisements go.
var allNodes = netip.MustParseAddr("ff02::1")

// announceNDP sends count unsolicited neighbour advertisements for vip
// with the override flag and mac as the target link-layer address, gap
// apart (RFC 4861 7.2.6). Hosts that have vip in their neighbour cache
// point it at mac. The conn should send from vip itself.
func announceNDP(ctx context.Context, c ndpConn, mac net.HardwareAddr, vip netip.Addr, count int, gap time.Duration) error {
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: vip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	return repeat(ctx, count, gap, func(i int) error {
		if err := c.WriteTo(na, nil, allNodes); err != nil {
			return fmt.Errorf("send neighbour advertisement %d of %d for %s: %w", i+1, count, vip, err)
		}
		return nil
	})
}

// claim is another host answering for the virtual IP.
type claim struct {
	MAC  net.HardwareAddr // may be nil for IPv6 answers without the option
	From netip.Addr       // the answer's source (IPv6)
}

func (c claim) String() string {
	switch {
	case c.MAC != nil && c.From.IsValid():
		return fmt.Sprintf("%s (from %s)", c.MAC, c.From)
	case c.MAC != nil:
		return c.MAC.String()
	default:
		return c.From.String()
	}
}

// probeNDP sends a neighbour solicitation for vip to its solicited-node
// multicast address, from the conn's address with mac as the source
// link-layer address, and returns the host that advertises vip within
// wait, or nil when none does.
func probeNDP(ctx context.Context, c ndpConn, mac net.HardwareAddr, vip netip.Addr, wait time.Duration, rounds int) (*claim, error) {
	snm, err := ndp.SolicitedNodeMulticast(vip)
	if err != nil {
		return nil, fmt.Errorf("solicited-node address of %s: %w", vip, err)
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: vip}
	if len(mac) == 6 {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}
	}
	var holder *claim
	send := func() error {
		if err := c.WriteTo(ns, nil, snm); err != nil {
			return fmt.Errorf("send neighbour solicitation for %s: %w", vip, err)
		}
		return nil
	}
	recv := func() (bool, error) {
		m, _, from, err := c.ReadFrom()
		if err != nil {
			return false, err
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok || na.TargetAddress.WithZone("") != vip {
			return false, nil
		}
		cl := &claim{From: from.WithZone("")}
		for _, o := range na.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
				cl.MAC = lla.Addr
			}
		}
		if cl.MAC != nil && len(mac) > 0 && cl.MAC.String() == mac.String() {
			return false, nil // our own advertisement
		}
		holder = cl
		return true, nil
	}
	found, err := exchange(ctx, c, wait, rounds, send, recv)
	if err != nil {
		return nil, fmt.Errorf("neighbour solicitation for %s: %w", vip, err)
	}
	if !found {
		return nil, nil
	}
	return holder, nil
}
