package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-ha/lifeboat/internal/engine"
)

// metrics registers this agent's gauges on a registry of its own.
func (a *Agent) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
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
