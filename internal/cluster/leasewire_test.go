package cluster

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestLeaseFramesRoundTrip(t *testing.T) {
	for _, req := range []RenewRequest{
		{Node: "node1", Gen: 7},
		{Node: "node1", Gen: 1<<64 - 1, Voters: []string{}},
		{Node: "node1", Gen: 3, Voters: []string{"node1", "node2", "witness-3"}},
	} {
		b, err := AppendRenewFrame(nil, 42, req)
		if err != nil {
			t.Fatal(err)
		}
		kind, p, _, err := ReadLeaseFrame(bytes.NewReader(b), nil)
		if err != nil || kind != FrameRenew {
			t.Fatalf("read %v: kind %d, %v", req, kind, err)
		}
		id, got, err := DecodeRenewFrame(p, "node1")
		if err != nil || id != 42 || !reflect.DeepEqual(got, req) {
			t.Errorf("round trip of %#v: id %d, %#v, %v", req, id, got, err)
		}
	}
	for _, r := range []RenewResponse{{Granted: true}, {Revoked: true, Reason: "generation 3 of node1 was fenced"}, {Reason: strings.Repeat("x", 5000)}} {
		b, err := AppendAnswerFrame(nil, 9, r)
		if err != nil {
			t.Fatal(err)
		}
		kind, p, _, err := ReadLeaseFrame(bytes.NewReader(b), nil)
		if err != nil || kind != FrameAnswer {
			t.Fatalf("read answer: kind %d, %v", kind, err)
		}
		id, got, err := DecodeAnswerFrame(p)
		want := r
		if len(want.Reason) > MaxLeaseFrame-5 {
			want.Reason = want.Reason[:MaxLeaseFrame-5] // cut to fit
		}
		if err != nil || id != 9 || !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of answer: id %d, granted %v revoked %v reason of %d bytes, %v", id, got.Granted, got.Revoked, len(got.Reason), err)
		}
	}
	// Nil voters (a cluster below LevelTyped: not checked) stay nil: the
	// voter's check tells nil from empty.
	b, _ := AppendRenewFrame(nil, 1, RenewRequest{Gen: 1})
	_, p, _, _ := ReadLeaseFrame(bytes.NewReader(b), nil)
	if _, got, _ := DecodeRenewFrame(p, "n"); got.Voters != nil {
		t.Errorf("nil voters decoded as %#v", got.Voters)
	}
}

func TestLeaseFramesRefuseMalformed(t *testing.T) {
	big := []byte{FrameRenew, 0xff, 0xff}
	if _, _, _, err := ReadLeaseFrame(bytes.NewReader(big), nil); !errors.Is(err, ErrLeaseFrame) {
		t.Errorf("a frame of 65535 bytes: %v, want refused", err)
	}
	good, _ := AppendRenewFrame(nil, 1, RenewRequest{Gen: 2, Voters: []string{"a", "b"}})
	for i := frameHeader; i < len(good); i++ { // every shorter payload
		if _, _, err := DecodeRenewFrame(good[frameHeader:i], "n"); err == nil {
			t.Errorf("renewal cut to %d bytes decoded", i-frameHeader)
		}
	}
	if _, _, err := DecodeRenewFrame(append(good[frameHeader:len(good):len(good)], 0), "n"); err == nil {
		t.Error("renewal with a trailing byte decoded")
	}
	if _, _, err := DecodeAnswerFrame([]byte{0, 0, 0, 1, 0x80}); err == nil {
		t.Error("answer with unknown flags decoded")
	}
}

// FuzzLeaseFrames feeds arbitrary bytes to the stream's decoders: they
// must never panic, and what decodes must encode back to the same bytes.
func FuzzLeaseFrames(f *testing.F) {
	seed, _ := AppendRenewFrame(nil, 1, RenewRequest{Gen: 2, Voters: []string{"node1", "node2"}})
	f.Add(seed)
	ans, _ := AppendAnswerFrame(nil, 1, RenewResponse{Reason: "no"})
	f.Add(ans)
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, p, _, err := ReadLeaseFrame(bytes.NewReader(b), nil)
		if err != nil {
			return
		}
		switch kind {
		case FrameRenew:
			id, req, err := DecodeRenewFrame(p, "n")
			if err != nil {
				return
			}
			again, err := AppendRenewFrame(nil, id, req)
			if err != nil || !bytes.Equal(again[frameHeader:], p) {
				t.Errorf("renewal %x re-encoded as %x (%v)", p, again, err)
			}
		case FrameAnswer:
			id, r, err := DecodeAnswerFrame(p)
			if err != nil {
				return
			}
			again, err := AppendAnswerFrame(nil, id, r)
			if err != nil || !bytes.Equal(again[frameHeader:], p) {
				t.Errorf("answer %x re-encoded as %x (%v)", p, again, err)
			}
		}
	})
}
