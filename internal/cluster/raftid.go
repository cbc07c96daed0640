package cluster

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// Raft's network transport trusts the sender named inside each RPC: the
// header's ID and address say which server sent it, and raft acts on them
// (a heartbeat names the leader, a vote request names the candidate). With
// node certificates every member has its own identity, so a connection
// may speak only for the node its certificate names: checkedConn reads
// each RPC off the wire before raft does, and cuts the connection at the
// first one that claims to come from another node (or from an address that
// is not that node's).
//
// The wire format is hashicorp/raft's NetworkTransport: one byte of RPC
// type, the request encoded with msgpack, and for InstallSnapshot the
// snapshot's bytes (Size of them) after it. Only the fields that name the
// sender are decoded; the bytes raft reads are exactly those received.

// raft RPC types (hashicorp/raft net_transport.go).
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

// rpcClaims are the fields of any raft request that name its sender (the
// header's ID and Addr, and the deprecated Leader and Candidate address
// fields), and InstallSnapshot's Size. Other fields are skipped.
type rpcClaims struct {
	ID        []byte
	Addr      []byte
	Leader    []byte
	Candidate []byte
	Size      int64
}

// raftPeer is who a raft connection may speak for: the node its
// certificate names, at the addresses that node has.
type raftPeer struct {
	name  string
	addrs []string // the member's raft address, as configured and resolved; none while unknown
}

// check returns why c is not allowed on a connection of p, or nil.
func (p raftPeer) check(kind uint8, c *rpcClaims) error {
	if string(c.ID) != p.name {
		return fmt.Errorf("raft %s from node %s's certificate claims to come from node %q", rpcName(kind), p.name, c.ID)
	}
	for _, a := range [][]byte{c.Addr, c.Leader, c.Candidate} {
		if len(a) > 0 && len(p.addrs) > 0 && !slices.Contains(p.addrs, string(a)) {
			return fmt.Errorf("raft %s from node %s's certificate names address %q, not %s's raft address %s", rpcName(kind), p.name, a, p.name, p.addrs[0])
		}
	}
	return nil
}

func rpcName(kind uint8) string {
	switch kind {
	case rpcAppendEntries:
		return "AppendEntries"
	case rpcRequestVote:
		return "RequestVote"
	case rpcInstallSnapshot:
		return "InstallSnapshot"
	case rpcTimeoutNow:
		return "TimeoutNow"
	case rpcRequestPreVote:
		return "RequestPreVote"
	}
	return fmt.Sprintf("RPC type %d", kind)
}

// checkedConn hands raft the bytes of an RPC only once the RPC has been
// read whole and its sender checked against the connection's peer.
type checkedConn struct {
	net.Conn
	peer raftPeer
	log  *slog.Logger
	in   *recorder
	dec  *codec.Decoder
	out  []byte // checked bytes not yet read by raft
	raw  int64  // snapshot bytes to pass through after out
	err  error  // sticky
}

func newCheckedConn(conn net.Conn, peer raftPeer, log *slog.Logger) *checkedConn {
	in := &recorder{r: bufio.NewReaderSize(conn, 64<<10)}
	return &checkedConn{Conn: conn, peer: peer, log: log, in: in, dec: codec.NewDecoder(in, &codec.MsgpackHandle{})}
}

func (c *checkedConn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.raw > 0 {
			n, err := c.in.r.Read(p[:min(int64(len(p)), c.raw)])
			c.raw -= int64(n)
			return n, err
		}
		if c.err != nil {
			return 0, c.err
		}
		c.err = c.next()
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// next reads one RPC into c.out and checks its sender.
func (c *checkedConn) next() error {
	c.in.buf = c.in.buf[:0]
	kind, err := c.in.ReadByte()
	if err != nil {
		return err
	}
	if kind > rpcRequestPreVote {
		return c.refuse(fmt.Errorf("raft connection from node %s's certificate: unknown RPC type %d", c.peer.name, kind))
	}
	var claims rpcClaims
	if err := c.dec.Decode(&claims); err != nil {
		return fmt.Errorf("raft %s from node %s: %w", rpcName(kind), c.peer.name, err)
	}
	if err := c.peer.check(kind, &claims); err != nil {
		return c.refuse(err)
	}
	if kind == rpcInstallSnapshot {
		if claims.Size < 0 {
			return c.refuse(fmt.Errorf("raft InstallSnapshot from node %s: negative size %d", c.peer.name, claims.Size))
		}
		c.raw = claims.Size
	}
	c.out = c.in.buf
	return nil
}

// refuse logs why the connection is cut and closes it: raft sees the
// error as a broken connection.
func (c *checkedConn) refuse(err error) error {
	c.log.Warn("raft connection refused: "+err.Error(), "peer", c.peer.name, "remote", c.Conn.RemoteAddr().String())
	_ = c.Conn.Close()
	return err
}

// recorder is the decoder's reader: it keeps every byte the decoder
// consumes (an unread byte is given back), so that raft reads the same.
type recorder struct {
	r   *bufio.Reader
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

func (r *recorder) ReadByte() (byte, error) {
	b, err := r.r.ReadByte()
	if err == nil {
		r.buf = append(r.buf, b)
	}
	return b, err
}

func (r *recorder) UnreadByte() error {
	if err := r.r.UnreadByte(); err != nil {
		return err
	}
	r.buf = r.buf[:len(r.buf)-1]
	return nil
}

var _ io.ByteScanner = (*recorder)(nil)

// raftPeerOf returns who a connection accepted on the raft port may speak
// for: ok is false when the identity cannot tell members apart (the
// derived shared certificate), and err when the peer cannot be named.
func (c *Cluster) raftPeerOf(conn net.Conn) (peer raftPeer, ok bool, err error) {
	tc, isTLS := conn.(interface{ ConnectionState() tls.ConnectionState })
	if !isTLS {
		return raftPeer{}, false, fmt.Errorf("raft connection from %s is not TLS", conn.RemoteAddr())
	}
	cs := tc.ConnectionState()
	name, err := c.cfg.TLS.PeerNode(&cs)
	if err != nil || name == "" {
		return raftPeer{}, false, err
	}
	peer.name = name
	if m, found := c.Member(name); found && m.Raft != "" {
		peer.addrs = []string{m.Raft}
		if a, err := net.ResolveTCPAddr("tcp", m.Raft); err == nil && a.String() != m.Raft {
			peer.addrs = append(peer.addrs, a.String())
		}
	}
	return peer, true, nil
}
