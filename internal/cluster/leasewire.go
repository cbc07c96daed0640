package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Lease renewals on a stream.
//
// A node renews its lease with every voter ten times a second. Over
// HTTP with JSON each renewal cost a request through net/http on both
// sides; on a stream it is one small binary frame each way on a
// connection kept open per peer (the agent opens it with an HTTP upgrade
// on the API port, after the usual member authentication: the stream
// speaks for the one node the upgrade named, which the caller's
// certificate must be). The frames:
//
//	frame   = kind(1) length(2, big-endian) payload(length)
//	renew   (kind 1) = id(4) gen(8) flags(1) [count(1) (len(1) name)*count]
//	          flags bit 0: the voter set follows (RenewRequest.Voters non-nil)
//	answer  (kind 2) = id(4) flags(1) reason(rest)
//	          flags bit 0: granted, bit 1: revoked
//
// id pairs an answer with its renewal; answers may come in any order.

// LeaseProto is the protocol name of the renewal stream's HTTP upgrade.
const LeaseProto = "lifeboat-lease/1"

// Frame kinds of the renewal stream.
const (
	FrameRenew  byte = 1
	FrameAnswer byte = 2
)

// MaxLeaseFrame bounds a frame's payload.
const MaxLeaseFrame = 4096

const frameHeader = 3

// AppendRenewFrame appends the renewal frame for req to b.
func AppendRenewFrame(b []byte, id uint32, req RenewRequest) ([]byte, error) {
	start := len(b)
	b = append(b, FrameRenew, 0, 0)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint64(b, req.Gen)
	if req.Voters == nil {
		b = append(b, 0)
	} else {
		if len(req.Voters) > 255 {
			return nil, fmt.Errorf("encode lease renewal: %d voters", len(req.Voters))
		}
		b = append(b, 1, byte(len(req.Voters)))
		for _, v := range req.Voters {
			if len(v) > 255 {
				return nil, fmt.Errorf("encode lease renewal: voter name of %d bytes", len(v))
			}
			b = append(b, byte(len(v)))
			b = append(b, v...)
		}
	}
	return finishFrame(b, start)
}

// AppendAnswerFrame appends the answer frame for r to b.
func AppendAnswerFrame(b []byte, id uint32, r RenewResponse) ([]byte, error) {
	start := len(b)
	b = append(b, FrameAnswer, 0, 0)
	b = binary.BigEndian.AppendUint32(b, id)
	var flags byte
	if r.Granted {
		flags |= 1
	}
	if r.Revoked {
		flags |= 2
	}
	b = append(b, flags)
	reason := r.Reason
	if room := MaxLeaseFrame - (len(b) - start - frameHeader); len(reason) > room {
		reason = reason[:room]
	}
	b = append(b, reason...)
	return finishFrame(b, start)
}

func finishFrame(b []byte, start int) ([]byte, error) {
	n := len(b) - start - frameHeader
	if n > MaxLeaseFrame {
		return nil, fmt.Errorf("lease frame of %d bytes, more than %d", n, MaxLeaseFrame)
	}
	binary.BigEndian.PutUint16(b[start+1:], uint16(n))
	return b, nil
}

// ErrLeaseFrame marks a frame that is not well formed.
var ErrLeaseFrame = errors.New("malformed lease frame")

// ReadLeaseFrame reads one frame into buf (grown as needed, at most
// MaxLeaseFrame) and returns its kind and payload, which aliases buf.
func ReadLeaseFrame(r io.Reader, buf []byte) (kind byte, payload, next []byte, err error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, buf, err
	}
	n := int(binary.BigEndian.Uint16(h[1:]))
	if n > MaxLeaseFrame {
		return 0, nil, buf, fmt.Errorf("%w: %d bytes, more than %d", ErrLeaseFrame, n, MaxLeaseFrame)
	}
	if cap(buf) < n {
		buf = make([]byte, n, MaxLeaseFrame)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, buf, err
	}
	return h[0], buf, buf, nil
}

// DecodeRenewFrame reads a renewal's payload. The node is the stream's.
func DecodeRenewFrame(p []byte, node string) (uint32, RenewRequest, error) {
	if len(p) < 13 {
		return 0, RenewRequest{}, fmt.Errorf("%w: renewal of %d bytes", ErrLeaseFrame, len(p))
	}
	id := binary.BigEndian.Uint32(p)
	req := RenewRequest{Node: node, Gen: binary.BigEndian.Uint64(p[4:])}
	flags, p := p[12], p[13:]
	if flags&^1 != 0 {
		return 0, RenewRequest{}, fmt.Errorf("%w: unknown renewal flags %#x", ErrLeaseFrame, flags)
	}
	if flags&1 != 0 {
		if len(p) < 1 {
			return 0, RenewRequest{}, fmt.Errorf("%w: voter count missing", ErrLeaseFrame)
		}
		count := int(p[0])
		p = p[1:]
		req.Voters = make([]string, 0, count)
		for range count {
			if len(p) < 1 || len(p) < 1+int(p[0]) {
				return 0, RenewRequest{}, fmt.Errorf("%w: voter name cut short", ErrLeaseFrame)
			}
			req.Voters = append(req.Voters, string(p[1:1+int(p[0])]))
			p = p[1+int(p[0]):]
		}
	}
	if len(p) != 0 {
		return 0, RenewRequest{}, fmt.Errorf("%w: %d bytes after the renewal", ErrLeaseFrame, len(p))
	}
	return id, req, nil
}

// DecodeAnswerFrame reads an answer's payload.
func DecodeAnswerFrame(p []byte) (uint32, RenewResponse, error) {
	if len(p) < 5 {
		return 0, RenewResponse{}, fmt.Errorf("%w: answer of %d bytes", ErrLeaseFrame, len(p))
	}
	flags := p[4]
	if flags&^3 != 0 {
		return 0, RenewResponse{}, fmt.Errorf("%w: unknown answer flags %#x", ErrLeaseFrame, flags)
	}
	return binary.BigEndian.Uint32(p), RenewResponse{Granted: flags&1 != 0, Revoked: flags&2 != 0, Reason: string(p[5:])}, nil
}
