package demo

import (
	"strings"
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/sim"
)

const baseAgent = `node: node1
data_dir: /tmp/lifeboat-test
cluster:
  key: "iLsmckBzHgDA4pGjDyPK4YssDTrXbjfWK4fSwtg4ZAo="
  nodes:
    - {name: node1, raft: 10.0.0.1:7101, gossip: 10.0.0.1:7102, api: 10.0.0.1:7103}
`

// TestNodeConfigInsecureOnlyOffLoopback: the simulator's aws section is
// accepted as it is on loopback, and opts in to plain http explicitly when
// the simulator runs on a namespace address (the config refuses it
// otherwise).
func TestNodeConfigInsecureOnlyOffLoopback(t *testing.T) {
	w := sim.DefaultWorld([]string{"node1"})
	for _, c := range []struct {
		endpoint, imds string
		optIn          bool
	}{
		{"http://127.0.0.1:4566", "http://127.0.0.1:4567", false},
		{"http://10.0.99.1:4566", "http://10.0.99.1:4567", true},
	} {
		e := &SimEnv{World: w, Endpoint: c.endpoint, IMDS: map[string]string{"node1": c.imds}}
		section := e.NodeConfig("node1")
		if got := strings.Contains(section, "allow_insecure_endpoints: true"); got != c.optIn {
			t.Errorf("%s: opt-in %v, want %v:\n%s", c.endpoint, got, c.optIn, section)
		}
		if _, err := config.ParseAgent("agent.yaml", []byte(baseAgent+section)); err != nil {
			t.Errorf("%s: %v", c.endpoint, err)
		}
		without := strings.Replace(section, "  allow_insecure_endpoints: true\n", "", 1)
		if _, err := config.ParseAgent("agent.yaml", []byte(baseAgent+without)); (err != nil) != c.optIn {
			t.Errorf("%s without the opt-in: %v", c.endpoint, err)
		}
	}
}
