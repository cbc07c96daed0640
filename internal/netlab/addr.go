package netlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// AddAddr adds an address (CIDR, e.g. VIPPrefix(1)) to a host's eth0 and
// announces it with a gratuitous ARP, as a failover tool does when it
// takes a virtual IP over: neighbours that cached the previous holder's
// MAC switch at once.
func (l *Lab) AddAddr(host, prefix string) error {
	if err := l.known(host); err != nil {
		return err
	}
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("add address %q to %s: not an IPv4 CIDR", prefix, host)
	}
	if err := ipCmd("-n", l.NS(host), "addr", "add", prefix, "dev", "eth0"); err != nil {
		return fmt.Errorf("add address to %s: %w", host, err)
	}
	if err := l.InHost(host, func() error { return gratuitousARP("eth0", p.Addr()) }); err != nil {
		return fmt.Errorf("announce %s from %s: %w", p.Addr(), host, err)
	}
	l.log.Info("address added", "host", host, "address", prefix)
	return nil
}

// DelAddr removes an address (CIDR) from a host's eth0.
func (l *Lab) DelAddr(host, prefix string) error {
	if err := l.known(host); err != nil {
		return err
	}
	if err := ipCmd("-n", l.NS(host), "addr", "del", prefix, "dev", "eth0"); err != nil {
		return fmt.Errorf("delete address from %s: %w", host, err)
	}
	l.log.Info("address deleted", "host", host, "address", prefix)
	return nil
}

// HoldsAddr reports whether any interface of a host holds ip right now.
func (l *Lab) HoldsAddr(host, ip string) (bool, error) {
	want, err := netip.ParseAddr(ip)
	if err != nil {
		return false, fmt.Errorf("check address %q on %s: %w", ip, host, err)
	}
	var held bool
	err = l.InHost(host, func() error {
		addrs, err := net.InterfaceAddrs() // netlink, in the host's namespace
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if got, ok := netip.AddrFromSlice(n.IP); ok && got.Unmap() == want {
					held = true
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", host, err)
	}
	return held, nil
}

// gratuitousARP broadcasts an ARP request for ip from ip on ifname (in the
// current namespace): the form Linux neighbours accept to update an entry.
func gratuitousARP(ifname string, ip netip.Addr) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("%s has no Ethernet address", ifname)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto))
	if err != nil {
		return fmt.Errorf("open packet socket: %w", err)
	}
	defer unix.Close(fd)
	bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f := make([]byte, 60) // minimum Ethernet frame, zero padded
	copy(f[0:6], bcast)
	copy(f[6:12], ifi.HardwareAddr)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(f[14:16], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(f[16:18], 0x0800) // protocol: IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:22], 1) // request
	copy(f[22:28], ifi.HardwareAddr)
	a := ip.As4()
	copy(f[28:32], a[:]) // sender IP
	copy(f[38:42], a[:]) // target IP: the same, target MAC zero
	sa := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index, Halen: 6}
	copy(sa.Addr[:], bcast)
	if err := unix.Sendto(fd, f, 0, sa); err != nil {
		return fmt.Errorf("send gratuitous ARP on %s: %w", ifname, err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
