package ip

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Protocol numbers for icmp.ParseMessage.
const (
	protoICMP   = 1
	protoICMPv6 = 58
)

// echoPayload marks lifeboat's echo requests for anyone capturing them.
var echoPayload = []byte("lifeboat ip peer check")

// randomEchoID picks the identifier that tells this check's echo replies
// from those of other pings on the node.
func randomEchoID() int {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return int(binary.BigEndian.Uint16(b[:]))
}

// pingResult is what a peer check learned.
type pingResult struct {
	// Answered is the first peer that answered; the zero Addr when none
	// did.
	Answered netip.Addr
	// Unreachable lists the peers the kernel could not send to through the
	// interface (no route, no source address), with why.
	Unreachable []string
}

// pingAny sends echo requests with identifier id to every peer through c in
// rounds spread over wait and returns as soon as one answers. Peers the
// kernel refuses to send to count as not answering; any other failure of
// the socket is returned as an error.
func pingAny(ctx context.Context, c icmpConn, v6 bool, peers []netip.Addr, id int, wait time.Duration, rounds int) (pingResult, error) {
	var res pingResult
	reqType, replyType, proto := icmp.Type(ipv4.ICMPTypeEcho), icmp.Type(ipv4.ICMPTypeEchoReply), protoICMP
	if v6 {
		reqType, replyType, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, protoICMPv6
	}
	unreachable := map[netip.Addr]bool{}
	seq := 0
	send := func() error {
		seq++
		m := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: echoPayload}}
		// With no pseudo-header the ICMPv6 checksum is left to the kernel.
		b, err := m.Marshal(nil)
		if err != nil {
			return fmt.Errorf("build echo request: %w", err)
		}
		for _, p := range peers {
			if unreachable[p] {
				continue
			}
			if err := c.WriteTo(b, p); err != nil {
				if cannotReach(err) {
					unreachable[p] = true
					res.Unreachable = append(res.Unreachable, fmt.Sprintf("%s: %v", p, unwrapErrno(err)))
					continue
				}
				return fmt.Errorf("send echo request to %s: %w", p, err)
			}
		}
		return nil
	}
	buf := make([]byte, 1500)
	recv := func() (bool, error) {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return false, err
		}
		if !slices.Contains(peers, from) {
			return false, nil
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != replyType {
			return false, nil
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
			res.Answered = from
			return true, nil
		}
		return false, nil
	}
	if _, err := exchange(ctx, c, wait, rounds, send, recv); err != nil {
		return res, err
	}
	return res, nil
}

// cannotReach reports whether a send failed because there is no way to the
// peer through the interface: a fact about the network, not a failure of
// the check.
func cannotReach(err error) bool {
	for _, e := range []syscall.Errno{syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.EHOSTDOWN, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func unwrapErrno(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
