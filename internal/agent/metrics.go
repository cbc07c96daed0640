package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/placement"
)

// Failover reasons (the reason label of lifeboat_failovers_total).
const (
	failoverFailed    = "failed"     // the hierarchy failed on its owner
	failoverOwnerLost = "owner-lost" // its owner was fenced (died, hung, cut off)
)

func newFailoverCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_failovers_total",
		Help: "Automatic failovers this node carried out as raft leader (sum over the nodes for the cluster's), by hierarchy, the node it left, the node it went to and why (failed, owner-lost)."},
		[]string{"hierarchy", "from", "to", "reason"})
}

// noteFailovers remembers that a fence of node releases hierarchies.
func (a *Agent) noteFailovers(node string, hierarchies []string) {
	a.lostMu.Lock()
	defer a.lostMu.Unlock()
	for _, h := range hierarchies {
		a.lostFrom[h] = node
	}
}

// countFailover counts a committed assignment that is a failover: one
// that leaves a failed owner, or places a hierarchy its fenced owner lost.
// It reports whether it was one.
func (a *Agent) countFailover(act placement.Action) bool {
	from, reason := act.From, failoverFailed
	if !act.MarkFailed {
		a.lostMu.Lock()
		from = a.lostFrom[act.Hierarchy]
		delete(a.lostFrom, act.Hierarchy)
		a.lostMu.Unlock()
		reason = failoverOwnerLost
	}
	if from == "" {
		return false // a first placement, a start or a switchover
	}
	a.failovers.WithLabelValues(act.Hierarchy, from, act.Node, reason).Inc()
	return true
}

// stateCollector exports what the replicated state says of every
// hierarchy, the same on every node: readiness per node, where it is in
// service, its failure marks and its last automatic failover.
type stateCollector struct{ a *Agent }

var (
	descReady = prometheus.NewDesc("lifeboat_hierarchy_ready", "1 when the node proved it could take the hierarchy over (readiness), 0 when NOT READY or not yet proven.",
		[]string{"hierarchy", "node"}, nil)
	descInService = prometheus.NewDesc("lifeboat_hierarchy_in_service", "1 on the node whose report says the hierarchy is online there at its current assignment.",
		[]string{"hierarchy", "node"}, nil)
	descMarks = prometheus.NewDesc("lifeboat_hierarchy_failure_marks", "Nodes the hierarchy failed on that placement skips until the marks expire.",
		[]string{"hierarchy"}, nil)
	descLastFailover = prometheus.NewDesc("lifeboat_hierarchy_last_failover_timestamp_seconds", "When the hierarchy last failed over automatically (Unix time; time() minus this is the time since), within its failover_window.",
		[]string{"hierarchy"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReady, descInService, descMarks, descLastFailover} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.a.c.FSM.View(func(s *cluster.State) {
		for _, name := range s.HierarchyNames() {
			h, as := s.Hierarchies[name], s.Assignments[name]
			for _, n := range h.Nodes {
				ready := 0.0
				if ns := s.Nodes[n]; ns != nil && !ns.Unproven {
					if rd, ok := ns.Readiness[name]; ok && rd.Ready {
						ready = 1
					}
				}
				ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready, name, n)
				on := 0.0
				if as != nil && as.Node == n && hierarchyState(s, as) == engine.StateOnline {
					on = 1
				}
				if r, ok := s.Nodes[n]; ok && as != nil && s.MaintenanceOf(name, n) != "" && r.Reports[name].Running() {
					on = 1 // unmanaged, and its checks find it running there
				}
				ch <- prometheus.MustNewConstMetric(descInService, prometheus.GaugeValue, on, name, n)
			}
			if as == nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descMarks, prometheus.GaugeValue, float64(len(as.Failed)), name)
			if k := len(as.Failovers); k > 0 {
				ch <- prometheus.MustNewConstMetric(descLastFailover, prometheus.GaugeValue, float64(as.Failovers[k-1].UnixNano())/1e9, name)
			}
		}
	})
}

// metrics registers this agent's gauges on a registry of its own.
func (a *Agent) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.notify.Collectors()...)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeboat_raft_leader", Help: "1 when this node is the raft leader."}, func() float64 {
		if a.c.IsLeader() {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeboat_lease_held", Help: "1 while this node holds a lease granted by a majority of voters."}, func() float64 {
		g, _ := a.c.Leases.Current()
		if a.c.Leases.Valid(g) {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeboat_hierarchies_in_service", Help: "Hierarchies in service on this node."}, func() float64 {
		n := 0
		for _, r := range a.eng.Reports() {
			if r.State == engine.StateOnline {
				n++
			}
		}
		return float64(n)
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeboat_raft_applied_index", Help: "Last raft index applied on this node."}, func() float64 {
		return float64(a.c.FSM.Index())
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeboat_state_halted", Help: "1 when this node stopped applying the replicated log (a command its version does not know): it holds and grants nothing until upgraded."}, func() float64 {
		if a.c.FSM.Halted() != nil {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeboat_feature_level", Help: "The cluster's feature level as this node applied it."}, func() float64 {
		return float64(a.c.FSM.Level())
	}))
	reg.MustRegister(a.failovers, stateCollector{a}, listenerCollector{a}, readinessCollector{a.ready})
	for _, sev := range []string{"critical", "warning"} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lifeboat_doctor_findings", Help: "Findings of this node's last doctor run, by severity.",
			ConstLabels: prometheus.Labels{"severity": sev}}, func() float64 {
			a.doctorMu.Lock()
			defer a.doctorMu.Unlock()
			return float64(a.doctorCounts[sev])
		}))
	}
	return reg
}
