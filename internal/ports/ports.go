// Package ports finds free TCP/UDP ports on 127.0.0.1 for local clusters
// (the demo, tests) that stay free across a node's restart.
//
// A port the kernel hands out for ":0" comes from the ephemeral range,
// the same range it takes the local port of every outgoing connection
// from: once a node stops, any connection on the machine may take its
// port, and the node cannot listen there again when it restarts ("address
// already in use"; seen in CI while other tests ran). Free picks ports
// below the ephemeral range instead, which only listeners take.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// lowest is the lowest port Free hands out.
const lowest = 10000

// ephemeralLow returns the first port of the kernel's ephemeral range
// (32768 when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lowest+1000 {
				return n
			}
		}
	}
	return 32768
}

// Free returns n distinct ports free on 127.0.0.1 for both TCP and UDP
// (memberlist uses both), outside the ephemeral range.
func Free(n int) ([]int, error) {
	high := ephemeralLow()
	seen := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000*n {
			return nil, fmt.Errorf("no %d free ports between %d and %d on 127.0.0.1", n, lowest, high)
		}
		p := lowest + rand.IntN(high-lowest)
		if seen[p] {
			continue
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, p)
	}
	return ports, nil
}
