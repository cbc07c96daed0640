package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// rawRPC encodes one request as raft's NetworkTransport puts it on the
// wire (type byte, msgpack), followed by extra (snapshot data).
func rawRPC(t *testing.T, kind uint8, req any, extra []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	_ = w.WriteByte(kind)
	if err := codec.NewEncoder(w, &codec.MsgpackHandle{}).Encode(req); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	return append(b.Bytes(), extra...)
}

func header(id, addr string) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}
}

// readThrough sends wire through a checkedConn for peer and returns what
// a reader of the checked side got, and the error that ended it.
func readThrough(t *testing.T, peer raftPeer, wire []byte) ([]byte, error) {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		_, _ = client.Write(wire)
		_ = client.Close()
	}()
	cc := newCheckedConn(server, peer, slog.New(slog.DiscardHandler))
	defer cc.Close()
	var got bytes.Buffer
	buf := make([]byte, 1000) // smaller than a snapshot: reads come in pieces
	for {
		n, err := cc.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			return got.Bytes(), err
		}
	}
}

// Every kind of raft request from the node the certificate names passes
// byte for byte, snapshot data included; the first one claiming another
// node (or another address) cuts the connection before raft reads it.
func TestCheckedConnPassesOnlyTheCertificatesNode(t *testing.T) {
	const addr = "10.9.0.2:7000"
	peer := raftPeer{name: "node2", addrs: []string{addr}}
	snap := bytes.Repeat([]byte("snapshot-bytes;"), 700) // 10.5 kB
	entries := []*raft.Log{{Index: 7, Term: 3, Type: raft.LogCommand, Data: bytes.Repeat([]byte{0xc1, 0x00, 0xff}, 500), AppendedAt: time.Unix(1700000000, 5)}}
	good := [][]byte{
		//lint:ignore SA1019 raft 1.8 still sends the deprecated address fields
		rawRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("node2", addr), Term: 3, Leader: []byte(addr), PrevLogEntry: 6, PrevLogTerm: 3, Entries: entries, LeaderCommitIndex: 6}, nil),
		rawRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("node2", addr), Term: 3}, nil), // heartbeat
		//lint:ignore SA1019 raft 1.8 still sends the deprecated address fields
		rawRPC(t, rpcRequestVote, &raft.RequestVoteRequest{RPCHeader: header("node2", addr), Term: 4, Candidate: []byte(addr), LastLogIndex: 7, LastLogTerm: 3}, nil),
		rawRPC(t, rpcRequestPreVote, &raft.RequestPreVoteRequest{RPCHeader: header("node2", addr), Term: 5, LastLogIndex: 7, LastLogTerm: 3}, nil),
		rawRPC(t, rpcInstallSnapshot, &raft.InstallSnapshotRequest{RPCHeader: header("node2", addr), SnapshotVersion: 1, Term: 5, Leader: []byte(addr), LastLogIndex: 7, LastLogTerm: 3, Size: int64(len(snap))}, snap),
		rawRPC(t, rpcTimeoutNow, &raft.TimeoutNowRequest{RPCHeader: header("node2", addr)}, nil),
	}
	wire := bytes.Join(good, nil)
	got, err := readThrough(t, peer, wire)
	if !errors.Is(err, io.EOF) || !bytes.Equal(got, wire) {
		t.Fatalf("a member's own RPCs: got %d of %d bytes (equal=%v), err %v", len(got), len(wire), bytes.Equal(got, wire), err)
	}

	bad := []struct {
		name, want string
		rpc        []byte
	}{
		{"heartbeat as another node", `claims to come from node "node3"`,
			rawRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("node3", addr), Term: 9}, nil)},
		{"vote request as another node", `claims to come from node "node1"`,
			rawRPC(t, rpcRequestVote, &raft.RequestVoteRequest{RPCHeader: header("node1", "10.9.0.1:7000"), Term: 9}, nil)},
		{"own name, another address", `names address "10.9.0.3:7000"`,
			rawRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("node2", "10.9.0.3:7000"), Term: 9}, nil)},
		{"old leader field elsewhere", `names address "10.9.0.3:7000"`,
			rawRPC(t, rpcInstallSnapshot, &raft.InstallSnapshotRequest{RPCHeader: header("node2", addr), Leader: []byte("10.9.0.3:7000"), Size: 1}, []byte{0})},
		{"unknown type", "unknown RPC type 9", []byte{9, 0x80}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			// A good RPC first: it passes; the bad one after it does not.
			got, err := readThrough(t, peer, append(append([]byte(nil), good[1]...), tc.rpc...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !bytes.Equal(got, good[1]) {
				t.Fatalf("raft read %d bytes, want exactly the good RPC's %d", len(got), len(good[1]))
			}
		})
	}
}

// checkedStream is a raft stream layer over plain TCP whose accepted
// connections may speak only for peer.
type checkedStream struct {
	net.Listener
	peer raftPeer
}

func (s *checkedStream) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newCheckedConn(c, s.peer, slog.New(slog.DiscardHandler)), nil
}

func (s *checkedStream) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(a), timeout)
}

// Through raft's own transport on both sides: the server answers the
// certificate's node, and a request in another node's name fails.
func TestCheckedConnUnderRaftTransport(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const clientAddr = "127.0.0.1:1"
	server := raft.NewNetworkTransport(&checkedStream{Listener: ln, peer: raftPeer{name: "node2", addrs: []string{clientAddr}}}, 1, 5*time.Second, io.Discard)
	defer server.Close()
	served := make(chan string, 10)
	go func() {
		for rpc := range server.Consumer() {
			switch req := rpc.Command.(type) {
			case *raft.AppendEntriesRequest:
				served <- string(req.ID)
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil)
			case *raft.InstallSnapshotRequest:
				data, err := io.ReadAll(rpc.Reader)
				served <- string(req.ID) + ":" + string(data)
				rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: true}, err)
			}
		}
	}()
	cln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer cln.Close()
	client := raft.NewNetworkTransport(&checkedStream{Listener: cln}, 1, 5*time.Second, io.Discard)
	defer client.Close()
	target := raft.ServerAddress(ln.Addr().String())

	var resp raft.AppendEntriesResponse
	if err := client.AppendEntries("node1", target, &raft.AppendEntriesRequest{RPCHeader: header("node2", clientAddr), Term: 2}, &resp); err != nil || !resp.Success {
		t.Fatalf("own name: %v %+v", err, resp)
	}
	var sresp raft.InstallSnapshotResponse
	if err := client.InstallSnapshot("node1", target, &raft.InstallSnapshotRequest{RPCHeader: header("node2", clientAddr), Term: 2, Size: 5}, &sresp, strings.NewReader("state")); err != nil || !sresp.Success {
		t.Fatalf("snapshot in own name: %v %+v", err, sresp)
	}
	resp = raft.AppendEntriesResponse{}
	err = client.AppendEntries("node1", target, &raft.AppendEntriesRequest{RPCHeader: header("node3", clientAddr), Term: 2}, &resp)
	if err == nil || resp.Success {
		t.Fatalf("a request in node3's name over node2's connection was answered: %+v", resp)
	}
	if err := client.AppendEntries("node1", target, &raft.AppendEntriesRequest{RPCHeader: header("node2", clientAddr), Term: 3}, &resp); err != nil || !resp.Success {
		t.Fatalf("own name after a refused one: %v %+v", err, resp)
	}
	var got []string
	for len(served) > 0 {
		got = append(got, <-served)
	}
	if want := "node2 node2:state node2"; strings.Join(got, " ") != want {
		t.Fatalf("served %q, want %q", strings.Join(got, " "), want)
	}
}
