package agent

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-ha/lifeboat/internal/doctor"
	"github.com/lifeboat-ha/lifeboat/internal/probe"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

// paceMeter measures how the probes keep up, over windows of one
// interval: the longest time between two scheduled proofs of one
// hierarchy, how late the scheduler ran, and the calls a minute.
type paceMeter struct {
	budget   *probe.Budget
	interval time.Duration
	last     map[string]time.Time
	count    map[string]int

	windowStart    time.Time
	made, deferred uint64 // the budget's counters at the window's start
	gap, late      time.Duration
	prevGap        time.Duration
	prevLate       time.Duration
	prevDeferred   bool
	perMinute      int
}

func newPaceMeter(b *probe.Budget, interval time.Duration) *paceMeter {
	return &paceMeter{budget: b, interval: interval, last: map[string]time.Time{}, count: map[string]int{}, windowStart: time.Now()}
}

// proven records a proof of t's hierarchy at now, when the scheduler was
// late behind its turns.
func (p *paceMeter) proven(t probe.Turn, now time.Time, late time.Duration) {
	// The period: between scheduled turns (not a retry or a refresh),
	// from the third proof on (the first round runs at once, the second
	// spreads the turns out).
	if prev, ok := p.last[t.Name]; ok && t.NotBefore.IsZero() && p.count[t.Name] >= 2 {
		p.gap = max(p.gap, now.Sub(prev))
	}
	p.last[t.Name] = now
	p.count[t.Name]++
	p.late = max(p.late, late)
}

// forget drops hierarchies no longer proven here.
func (p *paceMeter) forget(keep map[string]spec.Hierarchy) {
	for n := range p.last {
		if _, ok := keep[n]; !ok {
			delete(p.last, n)
			delete(p.count, n)
		}
	}
}

// report is the pace now.
func (p *paceMeter) report() state.ReadinessPace {
	now := time.Now()
	if d := now.Sub(p.windowStart); d >= p.interval {
		made, deferred := p.budget.Made(), p.budget.Deferred()
		p.perMinute = int(float64(made-p.made)/d.Minutes() + 0.5)
		p.prevDeferred = deferred > p.deferred
		p.made, p.deferred = made, deferred
		p.prevGap, p.gap = p.gap, 0
		p.prevLate, p.late = p.late, 0
		p.windowStart = now
	}
	late := max(p.late, p.prevLate)
	var period time.Duration
	if len(p.last) > 0 {
		period = max(p.gap, p.prevGap, p.interval+late)
	}
	// Held back by the budget: turns ran late by more than a tenth of the
	// interval, and calls waited for the budget.
	bound := late > p.interval/10 && (p.prevDeferred || p.budget.Deferred() > p.deferred)
	return state.ReadinessPace{BudgetPerMinute: p.budget.PerMinute(), IntervalMS: p.interval.Milliseconds(), PeriodMS: period.Milliseconds(),
		CallsPerMinute: p.perMinute, BudgetBound: bound}
}

// readinessCollector exports how this node's readiness probes use AWS.
type readinessCollector struct{ r *readiness }

var (
	descProbeCalls = prometheus.NewDesc("lifeboat_readiness_aws_calls_total",
		"AWS API requests this node's readiness probes and doctor checks sent (retries and the decoding of refusals included).", nil, nil)
	descProbeDeferred = prometheus.NewDesc("lifeboat_readiness_aws_calls_deferred_total",
		"Readiness calls that waited for the AWS call budget (aws.readiness_calls_per_minute).", nil, nil)
	descProbeShared = prometheus.NewDesc("lifeboat_readiness_aws_answers_shared_total",
		"Readiness calls not made: the answer another hierarchy's probe got for the same call on the same resource was still fresh.", nil, nil)
	descProbeBudget = prometheus.NewDesc("lifeboat_readiness_aws_budget_calls_per_minute",
		"The AWS call budget of this node's readiness probes.", nil, nil)
	descProbePeriod = prometheus.NewDesc("lifeboat_readiness_period_seconds",
		"The longest time lately between two proofs of one hierarchy's readiness on this node (readiness_interval, or longer when the budget holds the probes back).", nil, nil)
)

func (c readinessCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descProbeCalls, descProbeDeferred, descProbeShared, descProbeBudget, descProbePeriod} {
		ch <- d
	}
}

func (c readinessCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.r.budget
	ch <- prometheus.MustNewConstMetric(descProbeCalls, prometheus.CounterValue, float64(b.Made()))
	ch <- prometheus.MustNewConstMetric(descProbeDeferred, prometheus.CounterValue, float64(b.Deferred()))
	ch <- prometheus.MustNewConstMetric(descProbeShared, prometheus.CounterValue, float64(c.r.shared.Reused()))
	ch <- prometheus.MustNewConstMetric(descProbeBudget, prometheus.GaugeValue, float64(b.PerMinute()))
	ch <- prometheus.MustNewConstMetric(descProbePeriod, prometheus.GaugeValue, float64(c.r.Pace().PeriodMS)/1000)
}

// probeTimeout bounds one resource's probe: 30 s, plus the wait for the
// budget of a dozen calls (an ec2 resource makes up to seven, more with
// several route tables). A probe cut off waiting is unknown: the last
// verdict stays, and the answers it got are shared with the next probe.
func (r *readiness) probeTimeout() time.Duration {
	return 30*time.Second + 12*time.Minute/time.Duration(r.budget.PerMinute())
}

// budgetFinding is doctor's finding when the AWS call budget holds this
// node's readiness probes back.
func (r *readiness) budgetFinding() (doctor.Finding, bool) {
	p := r.Pace()
	if !p.BudgetBound {
		return doctor.Finding{}, false
	}
	period := time.Duration(p.PeriodMS) * time.Millisecond
	interval := time.Duration(p.IntervalMS) * time.Millisecond
	perPass := int(float64(p.CallsPerMinute)*period.Minutes() + 0.5)
	need := int(float64(perPass)/interval.Minutes()*1.15) + 1
	return doctor.Finding{ID: "readiness-budget", Severity: doctor.Warning, Node: r.a.cfg.Node,
		Seen: fmt.Sprintf("readiness verdicts here are up to %s old, not %s (readiness_interval): the probes need about %d AWS calls to prove every hierarchy once, and the budget of %d calls a minute covers that only every %s",
			period.Round(time.Second), interval, perPass, p.BudgetPerMinute, period.Round(time.Second)),
		Fix: fmt.Sprintf("raise aws.readiness_calls_per_minute to about %d (EC2 throttles each account per region and action: leave room for failovers and other tools), or readiness_interval to %s; hierarchies on the same route table, interface or Elastic IP share their dry runs",
			need, period.Round(time.Minute)),
		Command: "lifeboat status --json | jq '.nodes[] | {name, readiness_pace}'"}, true
}
