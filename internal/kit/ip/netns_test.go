package ip

// Tests against the real kernel. Each test builds its own network
// namespaces, named with this process's id, and removes them when it ends:
//
//	ns a: lbv0 10.213.0.1/24 fd00:213::1/64 ─┐
//	ns b: lbv0 10.213.0.2/24 fd00:213::2/64 ─┤ veth pairs into
//	ns c: br0  10.213.0.3/24 fd00:213::3/64 ─┘ a bridge in c
//
// a and b are the cluster nodes, c is the switch and a client on it. No
// packet leaves these namespaces: every interface the kit touches exists
// only inside them, and the kit's system is bound to a namespace handle.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

const (
	nsIfName = "lbv0" // a node's interface, in its own namespace
	vip4     = "10.213.0.100/24"
	vip6     = "fd00:213::100/64"
)

var labSeq atomic.Int32

// lab is one set of namespaces.
type lab struct {
	t       *testing.T
	prefix  string
	handles map[string]netns.NsHandle // "a", "b", "c"
}

// ipCmd runs ip(8) and fails the test on error.
func (l *lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (l *lab) ns(name string) string { return l.prefix + "-" + name }

// newLab builds the namespaces, or skips the test where that is not
// possible (not root, no ip(8), no namespace support).
func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the real-kernel tests need root to create network namespaces (run go test as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: ip(8) from iproute2 is not installed")
	}
	l := &lab{t: t, prefix: fmt.Sprintf("lbip-%d-%d", os.Getpid(), labSeq.Add(1)), handles: map[string]netns.NsHandle{}}
	for _, n := range []string{"a", "b", "c"} {
		name := l.ns(n)
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			if n == "a" {
				t.Skipf("skipping: cannot create network namespaces (ip netns add %s: %v: %s)", name, err, bytes.TrimSpace(out))
			}
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		})
		h, err := netns.GetFromName(name)
		if err != nil {
			t.Fatalf("open namespace %s: %v", name, err)
		}
		t.Cleanup(func() { h.Close() })
		l.handles[n] = h
		// Static addresses are usable at once: no duplicate address
		// detection on the test links.
		for _, conf := range []string{"all", "default"} {
			if out, err := exec.Command("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf."+conf+".accept_dad=0").CombinedOutput(); err != nil {
				t.Fatalf("disable DAD in %s: %v: %s", name, err, out)
			}
		}
		l.ip("-n", name, "link", "set", "lo", "up")
	}
	c := l.ns("c")
	l.ip("-n", c, "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
	l.ip("-n", c, "addr", "add", "10.213.0.3/24", "dev", "br0")
	l.ip("-n", c, "addr", "add", "fd00:213::3/64", "dev", "br0", "nodad")
	l.ip("-n", c, "link", "set", "br0", "up")
	for i, n := range []string{"a", "b"} {
		port := "p" + n
		l.ip("-n", l.ns(n), "link", "add", nsIfName, "type", "veth", "peer", "name", port, "netns", c)
		l.ip("-n", c, "link", "set", port, "master", "br0")
		l.ip("-n", c, "link", "set", port, "up")
		l.ip("-n", l.ns(n), "addr", "add", fmt.Sprintf("10.213.0.%d/24", i+1), "dev", nsIfName)
		l.ip("-n", l.ns(n), "addr", "add", fmt.Sprintf("fd00:213::%d/64", i+1), "dev", nsIfName, "nodad")
		l.ip("-n", l.ns(n), "link", "set", nsIfName, "up")
	}
	for _, n := range []string{"a", "b"} {
		l.waitForwarding("p" + n)
	}
	return l
}

// handle opens netlink in namespace n, for the test's own observations.
func (l *lab) handle(n string) *netlink.Handle {
	l.t.Helper()
	h, err := netlink.NewHandleAt(l.handles[n])
	if err != nil {
		l.t.Fatalf("netlink in %s: %v", n, err)
	}
	l.t.Cleanup(h.Close)
	return h
}

// waitForwarding waits until the bridge forwards through port.
func (l *lab) waitForwarding(port string) {
	l.t.Helper()
	l.eventually("bridge port "+port+" forwarding", func() (bool, string) {
		out, err := exec.Command("ip", "-n", l.ns("c"), "-d", "link", "show", "dev", port).CombinedOutput()
		return err == nil && bytes.Contains(out, []byte("state forwarding")) && bytes.Contains(out, []byte("LOWER_UP")), string(out)
	})
}

// eventually polls cond until it holds or 5 seconds pass.
func (l *lab) eventually(what string, cond func() (bool, string)) {
	l.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out waiting for %s (last: %s)", what, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// node is the kit on cluster node n ("a" or "b") with params.
func (l *lab) node(n string, params map[string]string) *instance {
	l.t.Helper()
	p := map[string]string{ParamInterface: nsIfName}
	for k, v := range params {
		p[k] = v
	}
	cfg, ps := parse(p)
	if len(ps) > 0 {
		l.t.Fatalf("parse(%v): %v", p, ps)
	}
	log := slog.New(slog.NewTextHandler(testWriter{l.t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "node-"+n)
	return newInstance(cfg, kit.Env{Node: "node-" + n, Logger: log}, &osNet{ns: l.handles[n]})
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// mac is the hardware address of n's interface.
func (l *lab) mac(n string) net.HardwareAddr {
	l.t.Helper()
	lk, err := l.handle(n).LinkByName(nsIfName)
	if err != nil {
		l.t.Fatal(err)
	}
	return lk.Attrs().HardwareAddr
}

// addrs lists the addresses on n's interface.
func (l *lab) addrs(n string) []string {
	l.t.Helper()
	h := l.handle(n)
	lk, err := h.LinkByName(nsIfName)
	if err != nil {
		l.t.Fatal(err)
	}
	as, err := h.AddrList(lk, netlink.FAMILY_ALL)
	if err != nil {
		l.t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	return out
}

func (l *lab) hasAddr(n, prefix string) bool {
	for _, a := range l.addrs(n) {
		if a == prefix {
			return true
		}
	}
	return false
}

// neighbour returns the MAC c's neighbour table holds for ip on br0.
func (l *lab) neighbour(ip netip.Addr) string {
	l.t.Helper()
	h := l.handle("c")
	br, err := h.LinkByName("br0")
	if err != nil {
		l.t.Fatal(err)
	}
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	ns, err := h.NeighList(br.Attrs().Index, fam)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

func mustHealth(t *testing.T, in *instance, want kit.Health, msg string) {
	t.Helper()
	h, err := in.QuickCheck(context.Background())
	if h != want {
		t.Fatalf("QuickCheck = %v (%v), want %v", h, err, want)
	}
	if msg == "" && err != nil {
		t.Fatalf("QuickCheck healthy with error %v", err)
	}
	if msg != "" && (err == nil || !strings.Contains(err.Error(), msg)) {
		t.Fatalf("QuickCheck error %v, want it to contain %q", err, msg)
	}
}

// testMove: the address moves from a to b and the client on c, which
// talked to it on a, follows it to b's MAC because of b's announcement.
func testMove(t *testing.T, vip string) {
	l := newLab(t)
	ctx := context.Background()
	a, b := l.node("a", map[string]string{ParamAddress: vip}), l.node("b", map[string]string{ParamAddress: vip})
	addr := netip.MustParsePrefix(vip).Addr()
	if err := a.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if !l.hasAddr("a", vip) {
		t.Fatalf("after restore on a, a has %v, want %s", l.addrs("a"), vip)
	}
	// The client talked to the address on a: its neighbour entry points
	// at a (stale, as after traffic some time ago). Announcements only
	// update entries that exist, as in the kernel's defaults.
	macA, macB := l.mac("a"), l.mac("b")
	l.ip("-n", l.ns("c"), "neigh", "replace", addr.String(), "lladdr", macA.String(), "dev", "br0", "nud", "stale")
	if err := a.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if l.hasAddr("a", vip) {
		t.Fatalf("after remove on a, a still has %s", vip)
	}
	if got := l.neighbour(addr); got != macA.String() {
		t.Fatalf("before the move the client maps %s to %q, want a's %s", addr, got, macA)
	}
	if err := b.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if !l.hasAddr("b", vip) {
		t.Fatalf("after restore on b, b has %v, want %s", l.addrs("b"), vip)
	}
	l.eventually("the client to map "+addr.String()+" to b's MAC "+macB.String(), func() (bool, string) {
		got := l.neighbour(addr)
		return got == macB.String(), got
	})
	mustHealth(t, b, kit.Healthy, "")
}

func TestNetnsMoveIPv4AnnouncesGratuitousARP(t *testing.T) { testMove(t, vip4) }
func TestNetnsMoveIPv6AnnouncesAdvertisement(t *testing.T) { testMove(t, vip6) }

func testLifecycle(t *testing.T, vip string) {
	l := newLab(t)
	ctx := context.Background()
	a := l.node("a", map[string]string{ParamAddress: vip})
	for i := range 2 {
		if err := a.Restore(ctx); err != nil {
			t.Fatalf("restore %d: %v", i+1, err)
		}
	}
	n := 0
	for _, s := range l.addrs("a") {
		if s == vip {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("after two restores a has %v, want %s once", l.addrs("a"), vip)
	}
	mustHealth(t, a, kit.Healthy, "")

	// Someone deletes the address: failed, and recover repairs it.
	l.ip("-n", l.ns("a"), "addr", "del", vip, "dev", nsIfName)
	mustHealth(t, a, kit.Failed, "is no longer on lbv0 on node-a")
	if err := a.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	mustHealth(t, a, kit.Healthy, "")

	// The cable is pulled (the switch end goes down): no carrier.
	l.ip("-n", l.ns("c"), "link", "set", "pa", "down")
	mustHealth(t, a, kit.Failed, "interface lbv0 on node-a has no carrier")
	l.ip("-n", l.ns("c"), "link", "set", "pa", "up")

	// An administrator sets the link down: failed, and restore refuses to
	// bring it up.
	l.ip("-n", l.ns("a"), "link", "set", nsIfName, "down")
	mustHealth(t, a, kit.Failed, "interface lbv0 on node-a is administratively down")
	if err := a.Restore(ctx); err == nil || !strings.Contains(err.Error(), "administratively down") {
		t.Fatalf("restore on a down link = %v, want a refusal naming the state", err)
	}
	lk, err := l.handle("a").LinkByName(nsIfName)
	if err != nil {
		t.Fatal(err)
	}
	if lk.Attrs().RawFlags&unix.IFF_UP != 0 {
		t.Fatal("restore brought the interface up")
	}
	l.ip("-n", l.ns("a"), "link", "set", nsIfName, "up")
	l.eventually("carrier on a", func() (bool, string) {
		lk, err := l.handle("a").LinkByName(nsIfName)
		return err == nil && lk.Attrs().RawFlags&unix.IFF_LOWER_UP != 0, fmt.Sprint(err)
	})
	if err := a.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	mustHealth(t, a, kit.Healthy, "")

	for i := range 2 {
		if err := a.Remove(ctx); err != nil {
			t.Fatalf("remove %d: %v", i+1, err)
		}
	}
	if l.hasAddr("a", vip) {
		t.Fatalf("after remove a still has %s", vip)
	}
	mustHealth(t, a, kit.Failed, "is no longer on")
}

func TestNetnsLifecycleIPv4(t *testing.T) { testLifecycle(t, vip4) }
func TestNetnsLifecycleIPv6(t *testing.T) { testLifecycle(t, vip6) }

func TestNetnsIPv6AddressIsUsableAtOnce(t *testing.T) {
	l := newLab(t)
	// With DAD on, an address without NODAD would stay tentative for a
	// second or more.
	l.ip("netns", "exec", l.ns("a"), "sysctl", "-qw", "net.ipv6.conf."+nsIfName+".accept_dad=1")
	a := l.node("a", map[string]string{ParamAddress: vip6})
	if err := a.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := l.handle("a")
	lk, _ := h.LinkByName(nsIfName)
	as, err := h.AddrList(lk, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range as {
		if x.IPNet.String() == vip6 {
			if x.Flags&unix.IFA_F_TENTATIVE != 0 || x.Flags&unix.IFA_F_NODAD == 0 {
				t.Fatalf("%s flags %#x, want NODAD and not tentative", vip6, x.Flags)
			}
			return
		}
	}
	t.Fatalf("%s not on a: %v", vip6, as)
}

func testReady(t *testing.T, vip string) {
	l := newLab(t)
	ctx := context.Background()
	a, b := l.node("a", map[string]string{ParamAddress: vip}), l.node("b", map[string]string{ParamAddress: vip})
	addr := netip.MustParsePrefix(vip).Addr()
	if r := b.Ready(ctx); !r.Ready {
		t.Fatalf("b.Ready with the address free = %+v, want ready", r)
	}
	if err := a.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	r := b.Ready(ctx)
	want := fmt.Sprintf("%s is answered by %s", addr, l.mac("a"))
	if r.Ready || r.Unknown || !strings.Contains(r.Reason, want) || !strings.Contains(r.Reason, "another host holds the address") {
		t.Fatalf("b.Ready while a holds the address = %+v, want not ready: %q", r, want)
	}
	if b.hasAddrNow(t) {
		t.Fatal("Ready added the address")
	}
	if r := a.Ready(ctx); !r.Ready {
		t.Fatalf("a.Ready as the owner = %+v, want ready", r)
	}
	if err := a.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if r := b.Ready(ctx); !r.Ready {
		t.Fatalf("b.Ready after a removed the address = %+v, want ready", r)
	}

	missing := l.node("b", map[string]string{ParamAddress: vip, ParamInterface: "lbnope"})
	if r := missing.Ready(ctx); r.Ready || r.Unknown || r.Reason != "interface lbnope does not exist on node-b" {
		t.Fatalf("Ready on a missing interface = %+v", r)
	}
	other := "10.9.0.100/24"
	if addr.Is6() {
		other = "fd00:9::100/64"
	}
	off := l.node("b", map[string]string{ParamAddress: other})
	if r := off.Ready(ctx); r.Ready || !strings.Contains(r.Reason, "is not in the subnet of any address on lbv0 on node-b") {
		t.Fatalf("Ready for an address outside the subnet = %+v", r)
	}
}

// hasAddrNow reports whether the instance's address is on its interface.
func (in *instance) hasAddrNow(t *testing.T) bool {
	t.Helper()
	l, err := in.sys.Link(in.cfg.ifname)
	if err != nil {
		t.Fatal(err)
	}
	return len(l.find(in.cfg.addr.Addr())) > 0
}

func TestNetnsReadyIPv4(t *testing.T) { testReady(t, vip4) }
func TestNetnsReadyIPv6(t *testing.T) { testReady(t, vip6) }

func testPeers(t *testing.T, vip, up, silent string) {
	l := newLab(t)
	ctx := context.Background()
	for _, tc := range []struct {
		peers string
		want  kit.Health
		msg   string
	}{
		{up, kit.Healthy, ""},
		{silent + "," + up, kit.Healthy, ""},
		{silent, kit.Failed, "none of the peers " + silent + " answered a ping through lbv0 within 300ms"},
	} {
		a := l.node("a", map[string]string{ParamAddress: vip, ParamPeers: tc.peers, ParamPeerTimeout: "300ms"})
		if err := a.Restore(ctx); err != nil {
			t.Fatal(err)
		}
		mustHealth(t, a, tc.want, tc.msg)
	}
	// The link to the switch goes away: the check fails on the link
	// before any ping.
	l.ip("-n", l.ns("c"), "link", "set", "pa", "down")
	a := l.node("a", map[string]string{ParamAddress: vip, ParamPeers: up, ParamPeerTimeout: "300ms"})
	mustHealth(t, a, kit.Failed, "no carrier")
}

func TestNetnsPeersIPv4(t *testing.T) { testPeers(t, vip4, "10.213.0.3", "10.213.0.77") }
func TestNetnsPeersIPv6(t *testing.T) { testPeers(t, vip6, "fd00:213::3", "fd00:213::77") }

// Reading an interface while restores add addresses to it: a dump the
// kernel marks interrupted is taken again, never an error (with 1,000
// virtual IPs on eth0 and 16 restores at once, one such error failed a
// hierarchy over).
func TestNetnsDumpWhileAddressesChange(t *testing.T) {
	l := newLab(t)
	sys := &osNet{ns: l.handles["a"]}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			h := l.handle("a")
			lk, err := h.LinkByName(nsIfName)
			if err != nil {
				t.Error(err)
				return
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a, _ := netlink.ParseAddr(fmt.Sprintf("10.77.%d.%d/32", g, i%250+1))
				if i/250%2 == 0 {
					_ = h.AddrAdd(lk, a)
				} else {
					_ = h.AddrDel(lk, a)
				}
			}
		})
	}
	for range 300 {
		if _, err := sys.Link(nsIfName); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("reading %s while addresses change: %v", nsIfName, err)
		}
	}
	close(stop)
	wg.Wait()
}
