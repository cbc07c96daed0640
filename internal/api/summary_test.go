package api

import (
	"strings"
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/state"
)

func summaryStatus() Status {
	ready := Readiness{Ready: true}
	return Status{
		Leader: "node1",
		Nodes:  []NodeStatus{{Name: "node1", State: "alive"}, {Name: "node2", State: "alive"}, {Name: "node3", State: "alive"}},
		Hierarchies: []HierarchyStatus{
			{Name: "web", Owner: "node1", State: "online", Online: true, Nodes: []string{"node1", "node2", "node3"},
				Readiness: map[string]Readiness{"node2": ready, "node3": ready}},
			{Name: "db", Owner: "node2", State: "online", Online: true, Nodes: []string{"node2", "node1"},
				Readiness: map[string]Readiness{"node1": ready}},
		},
	}
}

// The first line of status: READY only when every hierarchy in service has
// a standby that could take it now, and otherwise the cause in a phrase.
func TestStatusSummary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Status)
		ok     bool
		want   string
	}{
		{"all ready", func(*Status) {}, true, "READY: all 2 hierarchies could fail over now"},
		{"both standbys out", func(st *Status) {
			st.Nodes[1].State = "failed"
			st.Hierarchies[0].Readiness["node3"] = Readiness{Missing: []string{"ec2:ReplaceRoute"}}
		}, false, "NOT READY: 1 of 2 hierarchies could not fail over now: web: node2 is failed; node3 is missing ec2:ReplaceRoute"},
		{"not in service", func(st *Status) { st.Hierarchies[1].Online, st.Hierarchies[1].State = false, "failed" }, false, "db: not in service (failed)"},
		{"web keeps node3", func(st *Status) {
			st.Hierarchies[0].Readiness["node2"] = Readiness{Missing: []string{"ec2:ReplaceRoute"}}
		}, true, "READY"},
		{"db's only standby lacks a permission", func(st *Status) {
			st.Hierarchies[1].Readiness["node1"] = Readiness{Missing: []string{"ec2:ReplaceRoute"}}
		}, false, "1 of 2 hierarchies could not fail over now: db: node1 is missing ec2:ReplaceRoute"},
		{"standby and maintenance", func(st *Status) {
			st.Nodes[1].Standby = &state.Hold{}
			st.Nodes[2].Maintenance = &state.Hold{}
		}, false, "web: node2 is in standby; node3 is in maintenance"},
		{"failure mark", func(st *Status) { st.Hierarchies[1].Failed = []string{"node1"} }, false, "db: node1 has a failure mark"},
		{"not proven", func(st *Status) { delete(st.Hierarchies[1].Readiness, "node1") }, false, "db: node1's readiness is not proven yet"},
		{"reason", func(st *Status) { st.Hierarchies[1].Readiness["node1"] = Readiness{Reason: "AWS unreachable"} }, false, "node1 is not ready (AWS unreachable)"},
		{"single node list", func(st *Status) { st.Hierarchies[1].Nodes = []string{"node2"} }, false, "db: no other node in its list"},
		{"stopped by request is not counted", func(st *Status) {
			st.Hierarchies[1].State, st.Hierarchies[1].Online, st.Hierarchies[1].Owner = "stopped", false, ""
		}, true, "READY: 1 hierarchy could fail over now"},
		{"hierarchy maintenance", func(st *Status) { st.Hierarchies[0].Maintenance = "maintenance on web" }, false, "web: in maintenance"},
		{"no leader", func(st *Status) { st.Leader = "" }, false, "NOT READY: no raft leader"},
		{"cluster maintenance", func(st *Status) { st.Maintenance = &state.Hold{} }, false, "the whole cluster is in maintenance"},
		{"no hierarchies", func(st *Status) { st.Hierarchies = nil }, true, "READY: no hierarchies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := summaryStatus()
			tc.change(&st)
			ok, line := FailoverSummary(st)
			if ok != tc.ok || !strings.Contains(line, tc.want) || strings.Contains(line, "\n") {
				t.Fatalf("got %v %q, want %v and %q", ok, line, tc.ok, tc.want)
			}
		})
	}
	// Many: the first few named, the rest counted.
	st := summaryStatus()
	st.Hierarchies = nil
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		st.Hierarchies = append(st.Hierarchies, HierarchyStatus{Name: n, Owner: "node1", State: "online", Online: true, Nodes: []string{"node1"}})
	}
	if _, line := FailoverSummary(st); !strings.HasSuffix(line, "c: no other node in its list; and 2 more") || !strings.Contains(line, "5 of 5") {
		t.Fatalf("many: %q", line)
	}
}

func TestDoctorSummary(t *testing.T) {
	info := Finding{ID: "quorum", Severity: Info, Node: "node1", Seen: "3 of 3 voters"}
	warn := Finding{ID: "disk", Severity: Warning, Node: "node2", Seen: "91% full"}
	crit := Finding{ID: "aws-permission", Severity: Critical, Node: "node2", Hierarchy: "web", Seen: "ec2:ReplaceRoute denied"}
	for _, tc := range []struct {
		in   []Finding
		ok   bool
		want string
	}{
		{nil, true, "READY: nothing found on 3 nodes would stop a failover"},
		{[]Finding{info, info}, true, "(2 notes: lifeboat doctor -v)"},
		{[]Finding{warn, info}, true, "(1 warning to look at)"},
		{[]Finding{crit, warn}, false, "NOT READY: 1 finding would stop a failover: node2 aws-permission web: ec2:ReplaceRoute denied"},
	} {
		ok, line := DoctorSummary(tc.in, 3)
		if ok != tc.ok || !strings.Contains(line, tc.want) {
			t.Errorf("%v: got %v %q, want %v %q", tc.in, ok, line, tc.ok, tc.want)
		}
	}
}
