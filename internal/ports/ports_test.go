package ports

import (
	"fmt"
	"net"
	"testing"
)

// Free's ports are distinct, below the ephemeral range, and free for TCP
// and UDP.
func TestFree(t *testing.T) {
	ps, err := Free(20)
	if err != nil {
		t.Fatal(err)
	}
	high := ephemeralLow()
	seen := map[int]bool{}
	for _, p := range ps {
		if p < lowest || p >= high || seen[p] {
			t.Fatalf("port %d: outside [%d, %d) or repeated: %v", p, lowest, high, ps)
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not free for TCP: %v", p, err)
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not free for UDP: %v", p, err)
		}
		u.Close()
		l.Close()
	}
}
