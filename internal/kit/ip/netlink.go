package ip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// system is everything the kit touches in the operating system: the
// interface and its addresses (links) and the raw sockets it announces and
// probes with (sockets). osNet is the real one; tests use fakes.
type system interface {
	links
	sockets
}

// links reads and changes interfaces and their addresses.
type links interface {
	// Link describes the named interface; the error wraps errNoLink when
	// there is no such interface.
	Link(name string) (link, error)
	// AddAddr adds an address with IFA_F_* flags. An address already there
	// is reported as syscall.EEXIST.
	AddAddr(l link, a netip.Prefix, flags int) error
	// DelAddr deletes an address. One not there is reported as
	// syscall.EADDRNOTAVAIL.
	DelAddr(l link, a netip.Prefix) error
}

// errNoLink: the interface does not exist.
var errNoLink = errors.New("no such interface")

// link is what the kit needs to know about an interface.
type link struct {
	Name    string
	Index   int
	MTU     int
	MAC     net.HardwareAddr // empty on links without one (tun, wireguard)
	AdminUp bool             // IFF_UP: set up by the administrator
	LowerUp bool             // IFF_LOWER_UP: carrier
	Addrs   []linkAddr
}

// linkAddr is one address on an interface.
type linkAddr struct {
	Prefix netip.Prefix
	Flags  int // IFA_F_*
}

// find returns the entries of l's addresses equal to a (whatever their
// prefix length).
func (l link) find(a netip.Addr) []linkAddr {
	var out []linkAddr
	for _, la := range l.Addrs {
		if la.Prefix.Addr() == a {
			out = append(out, la)
		}
	}
	return out
}

// ethernet reports whether the link has a 6-byte hardware address to
// announce with.
func (l link) ethernet() bool { return len(l.MAC) == 6 }

func (l link) netInterface() *net.Interface {
	return &net.Interface{Index: l.Index, MTU: l.MTU, Name: l.Name, HardwareAddr: l.MAC}
}

// netlinkTimeout bounds every netlink request: a wedged kernel call must not
// hang an action past its own timeout.
const netlinkTimeout = 5 * time.Second

// osNet is the real system: netlink and raw sockets in one network
// namespace, the agent's own unless ns names another one.
type osNet struct {
	// ns is the namespace to act in; netns.None() is the namespace the
	// agent runs in.
	ns netns.NsHandle
}

// hostNet acts in the agent's own network namespace.
func hostNet() *osNet { return &osNet{ns: netns.None()} }

// handle opens a netlink handle in s's namespace.
func (s *osNet) handle() (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(s.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set netlink socket timeout: %w", err)
	}
	return h, nil
}

// Link implements links.
// dumpAttempts bounds the dumps of an interface's addresses that address
// changes interrupt.
const dumpAttempts = 20

func (s *osNet) Link(name string) (link, error) {
	h, err := s.handle()
	if err != nil {
		return link{}, err
	}
	defer h.Close()
	nl, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return link{}, fmt.Errorf("interface %s: %w", name, errNoLink)
		}
		return link{}, fmt.Errorf("look up interface %s: %w", name, err)
	}
	at := nl.Attrs()
	l := link{
		Name:    at.Name,
		Index:   at.Index,
		MTU:     at.MTU,
		MAC:     at.HardwareAddr,
		AdminUp: at.RawFlags&unix.IFF_UP != 0,
		LowerUp: at.RawFlags&unix.IFF_LOWER_UP != 0,
	}
	// A dump that an address change interrupted (NLM_F_DUMP_INTR) is
	// taken again: with many addresses on one interface and restores
	// adding more, it happens (1,000 virtual IPs on eth0, 16 restores at
	// once: a restore failed on it, and the hierarchy was failed over).
	var addrs []netlink.Addr
	for attempt := 1; ; attempt++ {
		addrs, err = h.AddrList(nl, netlink.FAMILY_ALL)
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == dumpAttempts {
			break
		}
		time.Sleep(time.Duration(attempt) * time.Millisecond) // let the burst of changes pass
	}
	if err != nil {
		return link{}, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		bits, _ := a.Mask.Size()
		l.Addrs = append(l.Addrs, linkAddr{Prefix: netip.PrefixFrom(ip.Unmap(), bits), Flags: a.Flags})
	}
	return l, nil
}

// AddAddr implements links.
func (s *osNet) AddAddr(l link, a netip.Prefix, flags int) error {
	h, err := s.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	return h.AddrAdd(nil, nlAddr(l, a, flags))
}

// DelAddr implements links.
func (s *osNet) DelAddr(l link, a netip.Prefix) error {
	h, err := s.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	return h.AddrDel(nil, nlAddr(l, a, 0))
}

func nlAddr(l link, a netip.Prefix, flags int) *netlink.Addr {
	total := 128
	if a.Addr().Is4() {
		total = 32
	}
	return &netlink.Addr{
		IPNet:     &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), total)},
		Flags:     flags,
		LinkIndex: l.Index,
	}
}
