package ip

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// syncBuffer is a log sink safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestInstance builds node2's instance of params over f.
func newTestInstance(t *testing.T, f system, params map[string]string) (*instance, *syncBuffer) {
	t.Helper()
	cfg, ps := parse(params)
	if len(ps) > 0 {
		t.Fatalf("parse(%v): %v", params, ps)
	}
	logs := &syncBuffer{}
	in := newInstance(cfg, kit.Env{Node: "node2", Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, f)
	in.newEchoID = func() int { return 0x1234 }
	return in, logs
}

func v4Params(extra ...string) map[string]string {
	p := map[string]string{ParamAddress: "10.1.2.100/24", ParamInterface: "eth0"}
	for i := 0; i+1 < len(extra); i += 2 {
		p[extra[i]] = extra[i+1]
	}
	return p
}

func v6Params(extra ...string) map[string]string {
	p := v4Params(extra...)
	p[ParamAddress] = "fd00:1::100/64"
	return p
}

func mustContain(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func TestRestoreAddsIPv4AndAnnouncesGratuitousARP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet("10.1.2.5/24")
		in, _ := newTestInstance(t, f, v4Params())
		start := time.Now()
		if err := in.Restore(context.Background()); err != nil {
			t.Fatal(err)
		}
		adds, _, _ := f.calls()
		if want := []addCall{{netip.MustParsePrefix("10.1.2.100/24"), 0}}; !slices.Equal(adds, want) {
			t.Fatalf("adds = %v, want %v", adds, want)
		}
		out := f.arp.sent()
		if len(out) != DefaultAnnounceCount {
			t.Fatalf("sent %d ARP packets, want %d", len(out), DefaultAnnounceCount)
		}
		vip := netip.MustParseAddr("10.1.2.100")
		for i, s := range out {
			p := s.msg.(*arp.Packet)
			if p.Operation != arp.OperationRequest || p.SenderIP != vip || p.TargetIP != vip || p.SenderHardwareAddr.String() != macA.String() {
				t.Errorf("packet %d = %+v, want a gratuitous request for %s from %s", i, p, vip, macA)
			}
			if got, want := s.at.Sub(start), time.Duration(i)*defaultAnnounceGap; got != want {
				t.Errorf("packet %d sent at +%s, want +%s", i, got, want)
			}
		}
		if f.arp.closes != 1 {
			t.Errorf("ARP socket closed %d times, want 1", f.arp.closes)
		}
	})
}

func TestRestoreAddsIPv6WithoutDADAndAdvertises(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet("fd00:1::5/64")
		in, _ := newTestInstance(t, f, v6Params(ParamAnnounceCount, "2"))
		if err := in.Restore(context.Background()); err != nil {
			t.Fatal(err)
		}
		vip := netip.MustParseAddr("fd00:1::100")
		adds, _, _ := f.calls()
		if want := []addCall{{netip.MustParsePrefix("fd00:1::100/64"), unix.IFA_F_NODAD}}; !slices.Equal(adds, want) {
			t.Fatalf("adds = %v, want %v (IPv6 with IFA_F_NODAD)", adds, want)
		}
		if !slices.Equal(f.ndpFrom, []netip.Addr{vip}) {
			t.Errorf("NDP socket opened from %v, want the virtual IP", f.ndpFrom)
		}
		out := f.ndp.sent()
		if len(out) != 2 {
			t.Fatalf("sent %d advertisements, want 2", len(out))
		}
		for _, s := range out {
			na, ok := s.msg.(*ndp.NeighborAdvertisement)
			if !ok || !na.Override || na.Solicited || na.TargetAddress != vip || s.to != allNodes {
				t.Fatalf("sent %+v to %s, want an unsolicited override NA for %s to ff02::1", s.msg, s.to, vip)
			}
			lla, ok := na.Options[0].(*ndp.LinkLayerAddress)
			if !ok || lla.Direction != ndp.Target || lla.Addr.String() != macA.String() {
				t.Errorf("options = %v, want the target link-layer address %s", na.Options, macA)
			}
		}
	})
}

func TestRestoreIsIdempotent(t *testing.T) {
	f := newFakeNet("10.1.2.5/24", "10.1.2.100/24")
	in, _ := newTestInstance(t, f, v4Params(ParamAnnounceCount, "0"))
	if err := in.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	if adds, _, opened := f.calls(); len(adds) != 0 || len(opened) != 0 {
		t.Fatalf("restore of a present address added %v and opened %v, want nothing (announce_count 0)", adds, opened)
	}
	// Added by someone else between the look-up and the add.
	f = newFakeNet("10.1.2.5/24")
	f.addErr = syscall.EEXIST
	in, _ = newTestInstance(t, f, v4Params(ParamAnnounceCount, "0"))
	if err := in.Restore(context.Background()); err != nil {
		t.Fatalf("EEXIST from the kernel: %v, want success", err)
	}
}

func TestRestoreReaddsAddressMarkedDuplicate(t *testing.T) {
	f := newFakeNet("fd00:1::5/64", "fd00:1::100/64")
	f.eth0().Addrs[1].Flags = unix.IFA_F_DADFAILED | unix.IFA_F_TENTATIVE
	in, _ := newTestInstance(t, f, v6Params(ParamAnnounceCount, "0"))
	if err := in.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	adds, dels, _ := f.calls()
	if len(dels) != 1 || len(adds) != 1 || adds[0].Flags != unix.IFA_F_NODAD {
		t.Fatalf("dels %v adds %v, want the duplicate-marked address deleted and added again with NODAD", dels, adds)
	}
}

func TestRestoreFailsClearly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fakeNet)
		want  []string
		is    error
	}{
		{"no such interface", func(f *fakeNet) { delete(f.links, "eth0") },
			[]string{"restore 10.1.2.100/24 on eth0", "interface eth0 does not exist on node2"}, nil},
		{"administratively down", func(f *fakeNet) { f.eth0().AdminUp = false },
			[]string{"interface eth0 on node2 is administratively down", "does not bring interfaces up"}, nil},
		{"no carrier", func(f *fakeNet) { f.eth0().LowerUp = false },
			[]string{"interface eth0 on node2 has no carrier"}, nil},
		{"netlink refuses", func(f *fakeNet) { f.addErr = syscall.EPERM },
			[]string{"restore 10.1.2.100/24 on eth0: add 10.1.2.100/24 to eth0 on node2"}, syscall.EPERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeNet("10.1.2.5/24")
			tc.setup(f)
			in, _ := newTestInstance(t, f, v4Params())
			err := in.Restore(context.Background())
			mustContain(t, err, tc.want...)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if _, _, opened := f.calls(); len(opened) != 0 {
				t.Errorf("a failed restore announced (opened %v)", opened)
			}
		})
	}
	t.Run("down interface is not touched", func(t *testing.T) {
		f := newFakeNet("10.1.2.5/24")
		f.eth0().AdminUp = false
		in, _ := newTestInstance(t, f, v4Params())
		_ = in.Recover(context.Background())
		if adds, _, _ := f.calls(); len(adds) != 0 {
			t.Fatalf("added %v to a down interface", adds)
		}
	})
}

func TestRestoreSurvivesAnnouncementFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet("10.1.2.5/24")
		f.arp.writeErr = func(netip.Addr) error { return syscall.ENOBUFS }
		in, logs := newTestInstance(t, f, v4Params())
		if err := in.Restore(context.Background()); err != nil {
			t.Fatalf("restore failed because the announcement did: %v", err)
		}
		if !strings.Contains(logs.String(), "could not announce") || !strings.Contains(logs.String(), "no buffer space") {
			t.Errorf("announcement failure not logged with its cause:\n%s", logs)
		}
		f = newFakeNet("10.1.2.5/24")
		f.openARPErr = syscall.EPERM
		in, logs = newTestInstance(t, f, v4Params())
		if err := in.Restore(context.Background()); err != nil {
			t.Fatalf("restore failed because the ARP socket could not be opened: %v", err)
		}
		if !strings.Contains(logs.String(), "could not announce") {
			t.Errorf("socket failure not logged:\n%s", logs)
		}
	})
}

func TestRemove(t *testing.T) {
	t.Run("deletes every entry of the address", func(t *testing.T) {
		f := newFakeNet("10.1.2.5/24", "10.1.2.100/24", "10.1.2.100/32")
		in, _ := newTestInstance(t, f, v4Params())
		if err := in.Remove(context.Background()); err != nil {
			t.Fatal(err)
		}
		if l, _ := f.Link("eth0"); len(l.find(netip.MustParseAddr("10.1.2.100"))) != 0 || len(l.Addrs) != 1 {
			t.Fatalf("addresses after remove: %v", l.Addrs)
		}
	})
	t.Run("absent address, absent interface, concurrent delete", func(t *testing.T) {
		f := newFakeNet("10.1.2.5/24")
		in, _ := newTestInstance(t, f, v4Params())
		if err := in.Remove(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, dels, _ := f.calls(); len(dels) != 0 {
			t.Errorf("deleted %v though the address was absent", dels)
		}
		delete(f.links, "eth0")
		if err := in.Remove(context.Background()); err != nil {
			t.Fatalf("remove with the interface gone: %v", err)
		}
		f = newFakeNet("10.1.2.5/24", "10.1.2.100/24")
		f.delErr = syscall.EADDRNOTAVAIL
		in, _ = newTestInstance(t, f, v4Params())
		if err := in.Remove(context.Background()); err != nil {
			t.Fatalf("EADDRNOTAVAIL from the kernel: %v, want success", err)
		}
	})
	t.Run("kernel refuses", func(t *testing.T) {
		f := newFakeNet("10.1.2.5/24", "10.1.2.100/24")
		f.delErr = syscall.EPERM
		in, _ := newTestInstance(t, f, v4Params())
		err := in.Remove(context.Background())
		mustContain(t, err, "remove 10.1.2.100/24 on eth0", "delete 10.1.2.100/24 from eth0 on node2")
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%v does not wrap EPERM", err)
		}
	})
}

func TestQuickCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fakeNet)
		want  kit.Health
		msg   string
	}{
		{"healthy", func(*fakeNet) {}, kit.Healthy, ""},
		{"address removed", func(f *fakeNet) { f.eth0().Addrs = f.eth0().Addrs[:1] }, kit.Failed, "10.1.2.100 is no longer on eth0 on node2"},
		{"admin down", func(f *fakeNet) { f.eth0().AdminUp = false }, kit.Failed, "administratively down"},
		{"no carrier", func(f *fakeNet) { f.eth0().LowerUp = false }, kit.Failed, "has no carrier"},
		{"interface gone", func(f *fakeNet) { delete(f.links, "eth0") }, kit.Failed, "interface eth0 does not exist on node2"},
		{"netlink fails", func(f *fakeNet) { f.linkErr = errors.New("netlink: timeout") }, kit.Unknown, "netlink: timeout"},
		{"duplicate", func(f *fakeNet) { f.eth0().Addrs[1].Flags = unix.IFA_F_DADFAILED }, kit.Failed, "as a duplicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeNet("10.1.2.5/24", "10.1.2.100/24")
			tc.setup(f)
			in, _ := newTestInstance(t, f, v4Params())
			h, err := in.QuickCheck(context.Background())
			if h != tc.want {
				t.Fatalf("health = %v (%v), want %v", h, err, tc.want)
			}
			if tc.msg == "" && err != nil {
				t.Fatalf("healthy with error %v", err)
			}
			if tc.msg != "" {
				mustContain(t, err, "quickcheck 10.1.2.100/24 on eth0", tc.msg)
			}
			if adds, dels, opened := f.calls(); len(adds)+len(dels)+len(opened) != 0 {
				t.Errorf("quickcheck acted: adds %v dels %v opened %v", adds, dels, opened)
			}
		})
	}
}

func TestNodeFenced(t *testing.T) {
	in, _ := newTestInstance(t, newFakeNet(), v4Params())
	var i kit.Instance = in
	nf, ok := i.(kit.NodeFenced)
	if !ok || !nf.NeedsNodeFencing() {
		t.Fatal("the ip kit's instances must ask for node fencing: a frozen node keeps its address")
	}
	if _, ok := i.(kit.ReadinessProber); !ok {
		t.Fatal("the ip kit's instances must probe readiness")
	}
}
