package ip

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
)

// zeroMAC is the target hardware address of announcements and probes
// (RFC 5227: ignored, set to zero).
var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// announceARP sends count gratuitous ARP requests for vip from mac (sender
// and target IP both vip, RFC 5227's ARP announcement), gap apart. Hosts
// that have vip in their neighbour table point it at mac.
func announceARP(ctx context.Context, c arpConn, mac net.HardwareAddr, vip netip.Addr, count int, gap time.Duration) error {
	p, err := arp.NewPacket(arp.OperationRequest, mac, vip, zeroMAC, vip)
	if err != nil {
		return fmt.Errorf("build gratuitous ARP for %s from %s: %w", vip, mac, err)
	}
	return repeat(ctx, count, gap, func(i int) error {
		if err := c.WriteARP(p); err != nil {
			return fmt.Errorf("send gratuitous ARP %d of %d for %s: %w", i+1, count, vip, err)
		}
		return nil
	})
}

// probeARP sends an RFC 5227 ARP probe for vip (sender IP 0.0.0.0, so no
// host learns anything from it) and returns the host that answers for vip
// within wait, or nil when none does. Any ARP packet
// whose sender IP is vip and whose sender is not mac is an answer: a reply,
// or that host's own announcement.
func probeARP(ctx context.Context, c arpConn, mac net.HardwareAddr, vip netip.Addr, wait time.Duration, rounds int) (*claim, error) {
	p, err := arp.NewPacket(arp.OperationRequest, mac, netip.IPv4Unspecified(), zeroMAC, vip)
	if err != nil {
		return nil, fmt.Errorf("build ARP probe for %s from %s: %w", vip, mac, err)
	}
	var holder net.HardwareAddr
	send := func() error {
		if err := c.WriteARP(p); err != nil {
			return fmt.Errorf("send ARP probe for %s: %w", vip, err)
		}
		return nil
	}
	recv := func() (bool, error) {
		r, err := c.ReadARP()
		if err != nil {
			return false, err
		}
		if r.SenderIP == vip && !bytes.Equal(r.SenderHardwareAddr, mac) {
			holder = r.SenderHardwareAddr
			return true, nil
		}
		return false, nil
	}
	found, err := exchange(ctx, c, wait, rounds, send, recv)
	if err != nil {
		return nil, fmt.Errorf("ARP probe for %s: %w", vip, err)
	}
	if !found {
		return nil, nil
	}
	return &claim{MAC: holder}, nil
}

// repeat calls fn count times, gap apart, stopping early when ctx ends or
// fn fails.
func repeat(ctx context.Context, count int, gap time.Duration, fn func(i int) error) error {
	for i := range count {
		if i > 0 {
			t := time.NewTimer(gap)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("after %d of %d: %w", i, count, context.Cause(ctx))
			case <-t.C:
			}
		}
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}
