package ec2

import (
	"net/netip"
	"slices"
	"testing"
)

// What doctor reads through kit.ProbeExplainer and kit.Router.
func TestKitDescribesItsProbeAndRoutes(t *testing.T) {
	k := &Kit{}
	route := map[string]string{ParamMode: ModeRoute, ParamCIDR: " 10.0.100.10/32 ", ParamRouteTables: "rtb-1,rtb-2"}
	asked := 0
	primary := func() string { asked++; return "eni-primary" }
	cmds := k.ProbeCommands(route, primary)
	if asked != 1 || len(cmds) == 0 {
		t.Fatalf("no eni parameter: primary asked %d times, %d commands", asked, len(cmds))
	}
	want := ProbeCommands(route, "eni-primary")
	for i, c := range cmds {
		if c.Service != "ec2" || c.Action != want[i].Action || !slices.Equal(c.Args, want[i].Args) {
			t.Errorf("command %d = %+v, want %+v", i, c, want[i])
		}
	}
	own := map[string]string{ParamMode: ModeEIP, ParamAllocationID: "eipalloc-1", ParamENI: "eni-own"}
	for _, c := range k.ProbeCommands(own, primary) {
		if slices.Contains(c.Args, "eni-primary") {
			t.Errorf("eni parameter set, command uses the primary interface: %v", c.Args)
		}
	}
	if asked != 1 {
		t.Errorf("eni parameter set: primary asked again")
	}

	if p, ok := k.Routed(route); !ok || p != netip.MustParsePrefix("10.0.100.10/32") {
		t.Errorf("Routed(route mode) = %v, %v", p, ok)
	}
	if _, ok := k.Routed(own); ok {
		t.Errorf("Routed(eip mode) routes something")
	}
	if _, ok := k.Routed(map[string]string{ParamMode: ModeRoute, ParamCIDR: "nonsense"}); ok {
		t.Errorf("Routed(bad cidr) routes something")
	}
}
