package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// Status says how old a readiness verdict is once it is older than its
// node's interval allows, and that the AWS call budget is why when it is.
func TestStatusShowsStaleReadiness(t *testing.T) {
	bound := &state.ReadinessPace{BudgetPerMinute: 60, IntervalMS: 300_000, PeriodMS: 37 * 60_000, BudgetBound: true}
	onTime := &state.ReadinessPace{BudgetPerMinute: 60, IntervalMS: 300_000, PeriodMS: 300_000}
	st := api.Status{Nodes: []api.NodeStatus{{Name: "node1", State: "alive", ReadinessPace: onTime}, {Name: "node2", State: "alive", ReadinessPace: bound}},
		Hierarchies: []api.HierarchyStatus{{Name: "web", Owner: "node1", State: "online", Nodes: []string{"node1", "node2"},
			Resources: map[string]map[string]string{"node1": {"vip": "online"}},
			Readiness: map[string]api.Readiness{
				"node1": {Ready: true, At: time.Now().Add(-4 * time.Minute)},
				"node2": {Ready: true, At: time.Now().Add(-40 * time.Minute)},
			}}}}
	var out bytes.Buffer
	saved := stdout
	stdout = &out
	defer func() { stdout = saved }()
	printStatus(st)
	text := out.String()
	for _, want := range []string{
		"node2 proves its readiness only every 37m0s, not every 5m0s (readiness_interval): its AWS call budget of 60 calls a minute holds the probes back",
		"node1 READY; node2 READY (proven 40m0s ago, held back by the AWS call budget)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "node1 READY (proven") || strings.Contains(text, "node node1 proves") {
		t.Errorf("status calls node1's verdict stale:\n%s", text)
	}
}
