package ip

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// fakeNet is an in-memory system: interfaces with addresses, and sockets
// whose replies a test scripts. Build it inside the synctest bubble that
// uses it.
type fakeNet struct {
	mu    sync.Mutex
	links map[string]*link

	// servedElsewhere: the test builds the instance with
	// kit.Env.ServedElsewhere (the hierarchy runs on another node).
	servedElsewhere bool

	linkErr, addErr, delErr error // returned instead of doing the call
	adds                    []addCall
	dels                    []netip.Prefix

	arp, ndp                       *fakeConn
	icmp                           *fakeConn
	openARPErr, openNDPErr, icmpOp error
	ndpFrom                        []netip.Addr // src asked of each OpenNDP
	opened                         []string     // "arp", "ndp", "icmp4", "icmp6"
}

type addCall struct {
	Prefix netip.Prefix
	Flags  int
}

var (
	macA = net.HardwareAddr{0x52, 0x54, 0, 0xaa, 0xaa, 0x01}
	macB = net.HardwareAddr{0x52, 0x54, 0, 0xbb, 0xbb, 0x02}
)

// newFakeNet has eth0, up with carrier, holding the given addresses.
func newFakeNet(addrs ...string) *fakeNet {
	l := &link{Name: "eth0", Index: 2, MTU: 1500, MAC: macA, AdminUp: true, LowerUp: true}
	for _, a := range addrs {
		l.Addrs = append(l.Addrs, linkAddr{Prefix: netip.MustParsePrefix(a)})
	}
	return &fakeNet{links: map[string]*link{"eth0": l}, arp: newFakeConn(), ndp: newFakeConn(), icmp: newFakeConn()}
}

func (f *fakeNet) eth0() *link { return f.links["eth0"] }

func (f *fakeNet) Link(name string) (link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.linkErr != nil {
		return link{}, f.linkErr
	}
	l, ok := f.links[name]
	if !ok {
		return link{}, errNoLink
	}
	c := *l
	c.Addrs = slices.Clone(l.Addrs)
	return c, nil
}

func (f *fakeNet) AddAddr(l link, a netip.Prefix, flags int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds = append(f.adds, addCall{a, flags})
	if f.addErr != nil {
		return f.addErr
	}
	fl := f.links[l.Name]
	for _, la := range fl.Addrs {
		if la.Prefix.Addr() == a.Addr() {
			return syscall.EEXIST
		}
	}
	fl.Addrs = append(fl.Addrs, linkAddr{Prefix: a})
	return nil
}

func (f *fakeNet) DelAddr(l link, a netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dels = append(f.dels, a)
	if f.delErr != nil {
		return f.delErr
	}
	fl := f.links[l.Name]
	for i, la := range fl.Addrs {
		if la.Prefix == a {
			fl.Addrs = slices.Delete(fl.Addrs, i, i+1)
			return nil
		}
	}
	return syscall.EADDRNOTAVAIL
}

func (f *fakeNet) OpenARP(l link) (arpConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened = append(f.opened, "arp")
	if f.openARPErr != nil {
		return nil, f.openARPErr
	}
	return fakeARP{f.arp}, nil
}

func (f *fakeNet) OpenNDP(l link, src netip.Addr) (ndpConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened = append(f.opened, "ndp")
	f.ndpFrom = append(f.ndpFrom, src)
	if f.openNDPErr != nil {
		return nil, f.openNDPErr
	}
	return fakeNDP{f.ndp}, nil
}

func (f *fakeNet) OpenICMP(l link, v6 bool) (icmpConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened = append(f.opened, map[bool]string{false: "icmp4", true: "icmp6"}[v6])
	if f.icmpOp != nil {
		return nil, f.icmpOp
	}
	return fakeICMP{f.icmp}, nil
}

func (f *fakeNet) calls() (adds []addCall, dels []netip.Prefix, opened []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.adds), slices.Clone(f.dels), slices.Clone(f.opened)
}

// packetIn is one packet a fake socket receives.
type packetIn struct {
	msg  any // *arp.Packet, ndp.Message or []byte (ICMP)
	from netip.Addr
}

// sent is one packet a fake socket sent, and when.
type sent struct {
	msg any
	to  netip.Addr
	at  time.Time
}

// fakeConn is a socket: it records what is sent, lets a responder answer
// it, and hands answers to reads until the read deadline.
type fakeConn struct {
	mu       sync.Mutex
	out      []sent
	in       []packetIn
	deadline time.Time
	changed  chan struct{} // closed and replaced when in or deadline change
	closes   int

	writeErr func(to netip.Addr) error
	// respond answers a sent packet with packets to receive.
	respond func(msg any, to netip.Addr) []packetIn
}

func newFakeConn() *fakeConn { return &fakeConn{changed: make(chan struct{})} }

func (c *fakeConn) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeConn) write(msg any, to netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writeErr != nil {
		if err := c.writeErr(to); err != nil {
			return err
		}
	}
	c.out = append(c.out, sent{msg, to, time.Now()})
	if c.respond != nil {
		c.in = append(c.in, c.respond(msg, to)...)
		c.notify()
	}
	return nil
}

// deliver queues a packet as if it arrived unasked.
func (c *fakeConn) deliver(p packetIn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in = append(c.in, p)
	c.notify()
}

func (c *fakeConn) read() (packetIn, error) {
	for {
		c.mu.Lock()
		if len(c.in) > 0 {
			p := c.in[0]
			c.in = c.in[1:]
			c.mu.Unlock()
			return p, nil
		}
		dl, ch := c.deadline, c.changed
		c.mu.Unlock()
		var expired <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return packetIn{}, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			expired = t.C
		}
		select {
		case <-ch:
			if t != nil {
				t.Stop()
			}
		case <-expired:
			return packetIn{}, os.ErrDeadlineExceeded
		}
	}
}

func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	c.notify()
	return nil
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closes++
	return nil
}

func (c *fakeConn) sent() []sent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.out)
}

type fakeARP struct{ *fakeConn }

func (c fakeARP) WriteARP(p *arp.Packet) error { return c.write(p, netip.Addr{}) }
func (c fakeARP) ReadARP() (*arp.Packet, error) {
	p, err := c.read()
	if err != nil {
		return nil, err
	}
	return p.msg.(*arp.Packet), nil
}

type fakeNDP struct{ *fakeConn }

func (c fakeNDP) WriteTo(m ndp.Message, _ *ipv6.ControlMessage, dst netip.Addr) error {
	return c.write(m, dst)
}

func (c fakeNDP) ReadFrom() (ndp.Message, *ipv6.ControlMessage, netip.Addr, error) {
	p, err := c.read()
	if err != nil {
		return nil, nil, netip.Addr{}, err
	}
	return p.msg.(ndp.Message), nil, p.from, nil
}

type fakeICMP struct{ *fakeConn }

func (c fakeICMP) WriteTo(b []byte, dst netip.Addr) error { return c.write(slices.Clone(b), dst) }
func (c fakeICMP) ReadFrom(b []byte) (int, netip.Addr, error) {
	p, err := c.read()
	if err != nil {
		return 0, netip.Addr{}, err
	}
	return copy(b, p.msg.([]byte)), p.from, nil
}
