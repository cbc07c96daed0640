package ip

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

var (
	peerUp   = netip.MustParseAddr("10.1.2.1")
	peerDown = netip.MustParseAddr("10.1.2.9")
)

// answerPings makes the ICMP socket answer echo requests sent to any of up.
func answerPings(c *fakeConn, v6 bool, up ...netip.Addr) {
	c.respond = func(msg any, to netip.Addr) []packetIn {
		if !slices.Contains(up, to) {
			return nil
		}
		proto, reply := protoICMP, icmp.Type(ipv4.ICMPTypeEchoReply)
		if v6 {
			proto, reply = protoICMPv6, ipv6.ICMPTypeEchoReply
		}
		m, err := icmp.ParseMessage(proto, msg.([]byte))
		if err != nil {
			panic(err)
		}
		b, _ := (&icmp.Message{Type: reply, Body: m.Body}).Marshal(nil)
		return []packetIn{{b, to}}
	}
}

func echoReply(id int, from netip.Addr) packetIn {
	b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEchoReply, Body: &icmp.Echo{ID: id, Seq: 1}}).Marshal(nil)
	return packetIn{b, from}
}

func TestQuickCheckPeers(t *testing.T) {
	peers := ParamPeers
	for _, tc := range []struct {
		name    string
		params  map[string]string
		setup   func(f *fakeNet)
		want    kit.Health
		msg     []string
		elapsed time.Duration // how long the check took, in the bubble's time
	}{
		{"one of two answers", v4Params(peers, "10.1.2.9, 10.1.2.1"),
			func(f *fakeNet) { answerPings(f.icmp, false, peerUp) }, kit.Healthy, nil, 0},
		{"none answers", v4Params(peers, "10.1.2.9,10.1.2.8"),
			func(f *fakeNet) { answerPings(f.icmp, false, peerUp) }, kit.Failed,
			[]string{"none of the peers 10.1.2.9, 10.1.2.8 answered a ping through eth0 within 1s", "node2 looks cut off"}, time.Second},
		{"custom timeout", v4Params(peers, "10.1.2.9", ParamPeerTimeout, "300ms"),
			func(*fakeNet) {}, kit.Failed, []string{"within 300ms"}, 300 * time.Millisecond},
		{"reply with another id is not an answer", v4Params(peers, "10.1.2.1"),
			func(f *fakeNet) { f.icmp.deliver(echoReply(0x4321, peerUp)) }, kit.Failed, []string{"none of the peers"}, time.Second},
		{"reply from a non-peer is not an answer", v4Params(peers, "10.1.2.1"),
			func(f *fakeNet) { f.icmp.deliver(echoReply(0x1234, peerDown)) }, kit.Failed, []string{"none of the peers"}, time.Second},
		{"unreachable peer counts as silent", v4Params(peers, "10.1.2.9"),
			func(f *fakeNet) { f.icmp.writeErr = func(netip.Addr) error { return syscall.ENETUNREACH } }, kit.Failed,
			[]string{"cannot send to 10.1.2.9: network is unreachable"}, time.Second},
		{"socket cannot be opened", v4Params(peers, "10.1.2.1"),
			func(f *fakeNet) { f.icmpOp = syscall.EPERM }, kit.Unknown, []string{"cannot ping the peers"}, 0},
		{"send fails", v4Params(peers, "10.1.2.1"),
			func(f *fakeNet) { f.icmp.writeErr = func(netip.Addr) error { return syscall.ENOBUFS } }, kit.Unknown,
			[]string{"send echo request to 10.1.2.1"}, 0},
		{"IPv6", v6Params(peers, "fd00:1::1"),
			func(f *fakeNet) { answerPings(f.icmp, true, netip.MustParseAddr("fd00:1::1")) }, kit.Healthy, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeNet("10.1.2.5/24", "10.1.2.100/24", "fd00:1::5/64", "fd00:1::100/64")
				tc.setup(f)
				in, _ := newTestInstance(t, f, tc.params)
				start := time.Now()
				h, err := in.QuickCheck(context.Background())
				if h != tc.want {
					t.Fatalf("health = %v (%v), want %v", h, err, tc.want)
				}
				if tc.msg == nil && err != nil {
					t.Fatalf("healthy with error %v", err)
				}
				mustContainAll(t, err, tc.msg)
				if got := time.Since(start); got != tc.elapsed {
					t.Errorf("check took %s, want %s", got, tc.elapsed)
				}
				if tc.want == kit.Failed && f.icmp.writeErr == nil {
					// Sent in rounds: a lost request is sent again.
					if n, want := len(f.icmp.sent()), defaultPeerRounds*len(in.cfg.peers); n != want {
						t.Errorf("sent %d echo requests, want %d (%d rounds to each peer)", n, want, defaultPeerRounds)
					}
				}
			})
		})
	}
}

func mustContainAll(t *testing.T, err error, parts []string) {
	t.Helper()
	if len(parts) > 0 {
		mustContain(t, err, parts...)
	}
}

func TestQuickCheckPeersCanceledIsUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet("10.1.2.5/24", "10.1.2.100/24")
		in, _ := newTestInstance(t, f, v4Params(ParamPeers, "10.1.2.9", ParamPeerTimeout, "10s"))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		h, err := in.QuickCheck(ctx)
		if h != kit.Unknown || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("health = %v, %v; want unknown with the context's error", h, err)
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("returned after %s, want when the context ended (100ms)", d)
		}
	})
}
