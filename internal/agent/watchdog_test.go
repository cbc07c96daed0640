package agent

import (
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// A hierarchy with a local address needs its node fenced; one of only
// cloud-arbitrated or application resources does not.
func TestNodeFenced(t *testing.T) {
	ip := spec.Resource{Name: "addr", Type: "ip", Params: map[string]string{"address": "10.1.2.3/24", "interface": "eth0"}}
	app := spec.Resource{Name: "app", Type: "app"}
	if !nodeFenced(kits.Builtin(), spec.Hierarchy{Resources: []spec.Resource{app, ip}}) {
		t.Error("a hierarchy with an ip resource is not node-fenced")
	}
	if nodeFenced(kits.Builtin(), spec.Hierarchy{Resources: []spec.Resource{app}}) {
		t.Error("an app-only hierarchy is node-fenced")
	}
}
