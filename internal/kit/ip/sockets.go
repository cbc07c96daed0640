package ip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv6"
)

// sockets opens the raw sockets the kit announces and probes with, each
// bound to one interface. The caller closes them.
type sockets interface {
	// OpenARP opens an AF_PACKET socket for ARP frames on l.
	OpenARP(l link) (arpConn, error)
	// OpenNDP opens an ICMPv6 socket for neighbour discovery on l, sending
	// from src (an address on l), or from l's link-local address when src
	// is the zero Addr.
	OpenNDP(l link, src netip.Addr) (ndpConn, error)
	// OpenICMP opens a raw ICMP (v6: ICMPv6) socket bound to l.
	OpenICMP(l link, v6 bool) (icmpConn, error)
}

// arpConn sends and receives ARP packets on one interface.
type arpConn interface {
	// WriteARP sends p in an Ethernet broadcast frame from p's sender
	// hardware address.
	WriteARP(p *arp.Packet) error
	// ReadARP returns the next ARP packet received; after the read
	// deadline it fails with os.ErrDeadlineExceeded.
	ReadARP() (*arp.Packet, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// ndpConn is the part of *ndp.Conn the kit uses.
type ndpConn interface {
	WriteTo(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error
	ReadFrom() (ndp.Message, *ipv6.ControlMessage, netip.Addr, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// icmpConn sends and receives ICMP messages (without IP headers).
type icmpConn interface {
	WriteTo(b []byte, dst netip.Addr) error
	ReadFrom(b []byte) (int, netip.Addr, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

var (
	_ sockets  = (*osNet)(nil)
	_ links    = (*osNet)(nil)
	_ ndpConn  = (*ndp.Conn)(nil)
	_ arpConn  = (*packetARP)(nil)
	_ icmpConn = (*rawICMP)(nil)
)

// inNamespace runs fn with the calling thread in s's namespace, so the
// sockets fn creates belong to it (a socket stays in the namespace it was
// created in). In the agent's own namespace it just runs fn.
func (s *osNet) inNamespace(fn func() error) error {
	if !s.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("read this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(s.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread exits with this goroutine instead of
			// running others in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// etherTypeARP is ARP's EtherType.
const etherTypeARP = 0x0806

// OpenARP implements sockets.
func (s *osNet) OpenARP(l link) (arpConn, error) {
	var c *packet.Conn
	err := s.inNamespace(func() (err error) {
		c, err = packet.Listen(l.netInterface(), packet.Raw, etherTypeARP, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", l.Name, err)
	}
	return &packetARP{c: c}, nil
}

// OpenNDP implements sockets.
func (s *osNet) OpenNDP(l link, src netip.Addr) (ndpConn, error) {
	from := ndp.LinkLocal
	if src.IsValid() {
		from = ndp.Addr(src.String())
	}
	var c *ndp.Conn
	err := s.inNamespace(func() (err error) {
		c, _, err = ndp.Listen(l.netInterface(), from)
		if err != nil && from == ndp.LinkLocal {
			// No link-local address: let the kernel choose the source.
			c, _, err = ndp.Listen(l.netInterface(), ndp.Unspecified)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open neighbour discovery socket on %s from %s: %w", l.Name, from, err)
	}
	// Only advertisements are read; keep the rest of ICMPv6 out.
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, fmt.Errorf("filter neighbour discovery socket on %s: %w", l.Name, err)
	}
	return c, nil
}

// OpenICMP implements sockets.
func (s *osNet) OpenICMP(l link, v6 bool) (icmpConn, error) {
	network, laddr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.BindToDevice(int(fd), l.Name) }); err != nil {
			return err
		}
		return serr
	}}
	var c net.PacketConn
	err := s.inNamespace(func() (err error) {
		c, err = lc.ListenPacket(context.Background(), network, laddr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open %s socket on %s: %w", network, l.Name, err)
	}
	return &rawICMP{c: c.(*net.IPConn), zone: l.Name}, nil
}

// packetARP is an arpConn on an AF_PACKET socket.
type packetARP struct{ c *packet.Conn }

func (p *packetARP) WriteARP(a *arp.Packet) error {
	pb, err := a.MarshalBinary()
	if err != nil {
		return err
	}
	f := &ethernet.Frame{Destination: ethernet.Broadcast, Source: a.SenderHardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: pb}
	fb, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = p.c.WriteTo(fb, &packet.Addr{HardwareAddr: ethernet.Broadcast})
	return err
}

func (p *packetARP) ReadARP() (*arp.Packet, error) {
	buf := make([]byte, 256)
	for {
		n, _, err := p.c.ReadFrom(buf)
		if err != nil {
			return nil, err
		}
		var f ethernet.Frame
		if err := f.UnmarshalBinary(buf[:n]); err != nil || f.EtherType != ethernet.EtherTypeARP {
			continue
		}
		var a arp.Packet
		if err := a.UnmarshalBinary(f.Payload); err != nil {
			continue // not Ethernet/IPv4 ARP
		}
		return &a, nil
	}
}

func (p *packetARP) SetReadDeadline(t time.Time) error { return p.c.SetReadDeadline(t) }
func (p *packetARP) Close() error                      { return p.c.Close() }

// rawICMP is an icmpConn on a raw IP socket; link-local destinations get
// the interface as their zone.
type rawICMP struct {
	c    *net.IPConn
	zone string
}

func (r *rawICMP) WriteTo(b []byte, dst netip.Addr) error {
	to := &net.IPAddr{IP: dst.AsSlice()}
	if dst.Is6() && dst.IsLinkLocalUnicast() {
		to.Zone = r.zone
	}
	_, err := r.c.WriteToIP(b, to)
	return err
}

func (r *rawICMP) ReadFrom(b []byte) (int, netip.Addr, error) {
	n, from, err := r.c.ReadFromIP(b)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	a, _ := netip.AddrFromSlice(from.IP)
	return n, a.Unmap(), nil
}

func (r *rawICMP) SetReadDeadline(t time.Time) error { return r.c.SetReadDeadline(t) }
func (r *rawICMP) Close() error                      { return r.c.Close() }
