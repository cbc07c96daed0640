package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// TestMaintenanceCLI drives maintenance and standby through the CLI, as
// an operator would: what status, events and doctor show, the JSON
// answers, and the refusals with their exit codes. (What the agents do
// under maintenance and standby is proven by the scenarios.)
func TestMaintenanceCLI(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("web", []string{"node1", "node2", "node3"}, "", 1, ""))
	waitFor(t, c, "node2", 15*time.Second, "web online on node1", onlineOn("web", "node1"))

	// Unknown names are refused as bad input (exit 2), naming what exists.
	if out, errOut, code := lifeboat(t, c, "node2", "maintenance", "on", "nosuch"); code != 2 || !strings.Contains(errOut, `"nosuch" does not exist`) {
		t.Errorf("maintenance on nosuch: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := lifeboat(t, c, "node2", "node", "unstandby", "nosuch"); code != 2 || !strings.Contains(errOut, "no node") || !strings.Contains(errOut, "node1") {
		t.Errorf("node unstandby nosuch: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := lifeboat(t, c, "node2", "maintenance", "on", "web", "--node", "node1"); code != 2 || !strings.Contains(errOut, "not both") {
		t.Errorf("maintenance on HIERARCHY --node: exit %d: %s", code, errOut)
	}

	// Node maintenance, through a follower, with a reason.
	out, errOut, code := lifeboat(t, c, "node3", "maintenance", "on", "--node", "node1", "--reason", "kernel update CHG-1", "--json")
	var mo api.MaintenanceOutcome
	if err := json.Unmarshal([]byte(out), &mo); err != nil || code != 0 {
		t.Fatalf("maintenance on --node node1: exit %d %v\n%s%s", code, err, out, errOut)
	}
	if !mo.Changed || mo.Scope != "node" || mo.Name != "node1" || len(mo.Hierarchies) != 1 || mo.Hierarchies[0].Hierarchy != "web" {
		t.Fatalf("maintenance outcome: %+v", mo)
	}
	out, _, code = lifeboat(t, c, "node3", "maintenance", "on", "--node", "node1")
	if code != 0 || !strings.Contains(out, "already on") {
		t.Errorf("maintenance on twice: exit %d: %s", code, out)
	}
	st := waitFor(t, c, "node2", 10*time.Second, "web unmanaged", func(s api.Status) bool { return hier(s, "web").State == "unmanaged" })
	if h := hier(st, "web"); !strings.Contains(h.Maintenance, "node node1") {
		t.Errorf("status says web is unmanaged because %q", h.Maintenance)
	}
	out, _, _ = lifeboat(t, c, "node2", "status")
	for _, want := range []string{"node1 in maintenance", "kernel update CHG-1", "unmanaged"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not show %q:\n%s", want, out)
		}
	}
	// A switchover of what it runs is refused (exit 1) and says why.
	if _, errOut, code := lifeboat(t, c, "node2", "switchover", "web", "--to", "node2"); code != 1 || !strings.Contains(errOut, "maintenance") {
		t.Errorf("switchover under node maintenance: exit %d: %s", code, errOut)
	}
	// The history names who asked and why.
	out, _, _ = lifeboat(t, c, "node3", "events", "--json", "--limit", "0")
	found := false
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e events.Event
		if json.Unmarshal([]byte(line), &e) == nil && e.Kind == "maintenance" && e.Action == "maintenance-on" {
			found = strings.Contains(e.By, "local socket") && strings.Contains(e.Message, "CHG-1")
		}
	}
	if !found {
		t.Errorf("no maintenance-on event naming who asked and why:\n%s", out)
	}
	// doctor reports it (as information while it is young).
	out, _, _ = lifeboat(t, c, "node2", "doctor", "--json")
	if !strings.Contains(out, `"id": "maintenance"`) || !strings.Contains(out, "maintenance off --node node1") {
		t.Errorf("doctor does not report the maintenance:\n%s", out)
	}
	if out, errOut, code := lifeboat(t, c, "node2", "maintenance", "off", "--node", "node1"); code != 0 || !strings.Contains(out, "is off") {
		t.Fatalf("maintenance off: exit %d\n%s%s", code, out, errOut)
	}
	waitFor(t, c, "node2", 10*time.Second, "web online on node1 again", onlineOn("web", "node1"))

	// Standby drains node1; the JSON says where web went.
	out, errOut, code = lifeboat(t, c, "node2", "node", "standby", "node1", "--reason", "patching", "--json")
	var so api.StandbyOutcome
	if err := json.Unmarshal([]byte(out), &so); err != nil || code != 0 {
		t.Fatalf("node standby node1: exit %d %v\n%s%s", code, err, out, errOut)
	}
	if !so.Standby || !so.Changed || len(so.Moved) != 1 || so.Moved[0].Owner != "node2" || so.Moved[0].State != "online" {
		t.Fatalf("standby outcome: %+v", so)
	}
	out, _, _ = lifeboat(t, c, "node3", "status")
	if !strings.Contains(out, "(standby)") || !strings.Contains(out, "lifeboat node unstandby node1") {
		t.Errorf("status does not show the standby:\n%s", out)
	}
	if out, errOut, code := lifeboat(t, c, "node2", "node", "unstandby", "node1"); code != 0 || !strings.Contains(out, "out of standby") {
		t.Fatalf("unstandby: exit %d\n%s%s", code, out, errOut)
	}

	// A node's failovers may wait for a human.
	out, errOut, code = lifeboat(t, c, "node2", "node", "confirm-failover", "node2", "on", "--json")
	var no api.NodeSettingOutcome
	if err := json.Unmarshal([]byte(out), &no); err != nil || code != 0 || !no.Changed || !no.On {
		t.Fatalf("node confirm-failover node2 on: exit %d %v\n%s%s", code, err, out, errOut)
	}
	waitFor(t, c, "node3", 5*time.Second, "node2 with confirm-failover", func(s api.Status) bool {
		for _, n := range s.Nodes {
			if n.Name == "node2" {
				return n.ConfirmFailover != nil
			}
		}
		return false
	})
	if _, errOut, code := lifeboat(t, c, "node2", "node", "confirm-failover", "node2", "maybe"); code != 2 || !strings.Contains(errOut, "on or off") {
		t.Errorf("confirm-failover maybe: exit %d: %s", code, errOut)
	}
	if out, errOut, code := lifeboat(t, c, "node2", "node", "confirm-failover", "node2", "off"); code != 0 || !strings.Contains(out, "is off") {
		t.Fatalf("confirm-failover off: exit %d\n%s%s", code, out, errOut)
	}
}
