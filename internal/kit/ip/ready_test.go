package ip

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

func TestReady(t *testing.T) {
	vip := netip.MustParseAddr("10.1.2.100")
	holderReplies := func(f *fakeNet) {
		f.arp.respond = func(msg any, _ netip.Addr) []packetIn {
			p := msg.(*arp.Packet)
			if p.TargetIP != vip {
				return nil
			}
			r, _ := arp.NewPacket(arp.OperationReply, macB, vip, p.SenderHardwareAddr, p.SenderIP)
			return []packetIn{{msg: r}}
		}
	}
	for _, tc := range []struct {
		name   string
		addrs  []string
		params map[string]string
		setup  func(f *fakeNet)
		want   kit.Readiness
		probed bool
	}{
		{"free", []string{"10.1.2.5/24"}, v4Params(), func(*fakeNet) {}, kit.Readiness{Ready: true}, true},
		{"held by another host", []string{"10.1.2.5/24"}, v4Params(), holderReplies,
			kit.Readiness{Reason: "10.1.2.100 is answered by 52:54:00:bb:bb:02 on eth0 of node2 (another host holds the address)"}, true},
		{"our own answer does not count", []string{"10.1.2.5/24"}, v4Params(), func(f *fakeNet) {
			r, _ := arp.NewPacket(arp.OperationReply, macA, vip, macA, netip.IPv4Unspecified())
			f.arp.deliver(packetIn{msg: r})
		}, kit.Readiness{Ready: true}, true},
		{"owner skips the probe", []string{"10.1.2.5/24", "10.1.2.100/24"}, v4Params(), holderReplies, kit.Readiness{Ready: true}, false},
		{"no such interface", nil, v4Params(ParamInterface, "eth1"), func(*fakeNet) {},
			kit.Readiness{Reason: "interface eth1 does not exist on node2"}, false},
		{"down", []string{"10.1.2.5/24"}, v4Params(), func(f *fakeNet) { f.eth0().LowerUp = false },
			kit.Readiness{Reason: "interface eth0 on node2 has no carrier (cable, switch port or the link's other end is down)"}, false},
		{"outside every subnet", []string{"10.9.0.5/24", "fd00:1::5/64"}, v4Params(), func(*fakeNet) {},
			kit.Readiness{Reason: "10.1.2.100/24 is not in the subnet of any address on eth0 on node2 (it has 10.9.0.5/24): add an address in that subnet, or use a /32 for route-table mode"}, false},
		{"no address of the family", []string{"fd00:1::5/64"}, v4Params(), func(*fakeNet) {},
			kit.Readiness{Reason: "10.1.2.100/24 is not in the subnet of any address on eth0 on node2 (it has no IPv4 address): add an address in that subnet, or use a /32 for route-table mode"}, false},
		{"route-table mode fits anywhere", []string{"10.9.0.5/24"}, v4Params(ParamAddress, "10.1.2.100/32"), func(*fakeNet) {}, kit.Readiness{Ready: true}, true},
		{"duplicate check off", []string{"10.1.2.5/24"}, v4Params(ParamDuplicateCheck, "false"), holderReplies, kit.Readiness{Ready: true}, false},
		{"served elsewhere: the holder is the owner", []string{"10.1.2.5/24"}, v4Params(), func(f *fakeNet) {
			holderReplies(f)
			f.servedElsewhere = true
		}, kit.Readiness{Ready: true}, false},
		{"probe socket fails", []string{"10.1.2.5/24"}, v4Params(), func(f *fakeNet) { f.openARPErr = syscall.EPERM },
			kit.Readiness{Unknown: true, Reason: "check whether another host holds 10.1.2.100 on eth0: operation not permitted"}, true},
		{"netlink fails", []string{"10.1.2.5/24"}, v4Params(), func(f *fakeNet) { f.linkErr = errors.New("netlink: timeout") },
			kit.Readiness{Unknown: true, Reason: "netlink: timeout"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeNet(tc.addrs...)
				tc.setup(f)
				in, _ := newTestInstance(t, f, tc.params)
				in.elsewhere = f.servedElsewhere
				start := time.Now()
				got := in.Ready(context.Background())
				if got.Ready != tc.want.Ready || got.Unknown != tc.want.Unknown || got.Reason != tc.want.Reason {
					t.Fatalf("Ready = %+v\nwant    %+v", got, tc.want)
				}
				_, _, opened := f.calls()
				if probed := slices.Contains(opened, "arp"); probed != tc.probed {
					t.Fatalf("probed = %v, want %v", probed, tc.probed)
				}
				if adds, dels, _ := f.calls(); len(adds)+len(dels) != 0 {
					t.Errorf("Ready changed addresses: adds %v dels %v", adds, dels)
				}
				if tc.want.Ready && tc.probed {
					if d := time.Since(start); d != defaultProbeWait {
						t.Errorf("a free address was declared free after %s, want after the full %s", d, defaultProbeWait)
					}
					out := f.arp.sent()
					if len(out) != defaultProbeRounds {
						t.Fatalf("sent %d probes, want %d", len(out), defaultProbeRounds)
					}
					p := out[0].msg.(*arp.Packet)
					if p.Operation != arp.OperationRequest || p.SenderIP != netip.IPv4Unspecified() || p.TargetIP != vip ||
						p.SenderHardwareAddr.String() != macA.String() || p.TargetHardwareAddr.String() != zeroMAC.String() {
						t.Errorf("probe = %+v, want an RFC 5227 probe (sender 0.0.0.0) for %s", p, vip)
					}
					if gap := out[1].at.Sub(out[0].at); gap != defaultProbeWait/defaultProbeRounds {
						t.Errorf("probes %s apart, want %s", gap, defaultProbeWait/defaultProbeRounds)
					}
				}
			})
		})
	}
}

func TestReadyIPv6(t *testing.T) {
	vip := netip.MustParseAddr("fd00:1::100")
	holder := netip.MustParseAddr("fe80::bb")
	for _, tc := range []struct {
		name  string
		reply func(f *fakeNet)
		want  kit.Readiness
	}{
		{"free", func(*fakeNet) {}, kit.Readiness{Ready: true}},
		{"held", func(f *fakeNet) {
			f.ndp.respond = func(msg any, to netip.Addr) []packetIn {
				ns := msg.(*ndp.NeighborSolicitation)
				return []packetIn{{&ndp.NeighborAdvertisement{Solicited: true, Override: true, TargetAddress: ns.TargetAddress,
					Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: macB}}}, holder}}
			}
		}, kit.Readiness{Reason: "fd00:1::100 is answered by 52:54:00:bb:bb:02 (from fe80::bb) on eth0 of node2 (another host holds the address)"}},
		{"advertisement for another address", func(f *fakeNet) {
			f.ndp.deliver(packetIn{&ndp.NeighborAdvertisement{TargetAddress: netip.MustParseAddr("fd00:1::7")}, holder})
		}, kit.Readiness{Ready: true}},
		{"socket fails", func(f *fakeNet) { f.openNDPErr = syscall.EPERM },
			kit.Readiness{Unknown: true, Reason: "check whether another host holds fd00:1::100 on eth0: operation not permitted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeNet("fd00:1::5/64", "fe80::5/64")
				tc.reply(f)
				in, _ := newTestInstance(t, f, v6Params())
				got := in.Ready(context.Background())
				if got.Ready != tc.want.Ready || got.Unknown != tc.want.Unknown || got.Reason != tc.want.Reason {
					t.Fatalf("Ready = %+v\nwant    %+v", got, tc.want)
				}
				if tc.want.Unknown {
					return
				}
				if !slices.Equal(f.ndpFrom, []netip.Addr{{}}) {
					t.Errorf("NDP socket opened from %v, want the link-local address (zero Addr)", f.ndpFrom)
				}
				snm, _ := ndp.SolicitedNodeMulticast(vip)
				out := f.ndp.sent()
				ns, ok := out[0].msg.(*ndp.NeighborSolicitation)
				if !ok || ns.TargetAddress != vip || out[0].to != snm {
					t.Fatalf("sent %+v to %s, want a solicitation for %s to %s", out[0].msg, out[0].to, vip, snm)
				}
			})
		})
	}
}

func TestReadyCanceledIsUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet("10.1.2.5/24")
		in, _ := newTestInstance(t, f, v4Params())
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(50 * time.Millisecond) // fake time inside the bubble
			cancel()
		}()
		got := in.Ready(ctx)
		if !got.Unknown || got.Ready || !strings.Contains(got.Reason, "context canceled") {
			t.Fatalf("Ready after cancel = %+v, want unknown naming the cancellation", got)
		}
	})
}
