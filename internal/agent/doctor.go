package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/doctor"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// checks is the whole checklist: local, network, watchdog and AWS checks.
func checks() []doctor.Check {
	cs := append(doctor.LocalChecks(), doctor.NetworkChecks()...)
	cs = append(cs, doctor.WatchdogChecks()...)
	return append(cs, doctor.AWSChecks()...)
}

// doctorEnv describes this node for the checks; hierarchy limits them to
// one hierarchy. background: a run nobody waits for, whose AWS calls wait
// for readiness's budget; an operator's run is paced on its own (see
// readiness.operatorPace).
func (a *Agent) doctorEnv(hierarchy string, background bool) *doctor.Env {
	start := time.Now()
	probes := func() kit.ProbeCalls { return a.ready.shared.ViewPaced(start, a.ready.operatorPace) }
	if background {
		probes = func() kit.ProbeCalls { return a.ready.shared.View(start) }
	}
	env := &doctor.Env{Kits: a.kits, Node: a.cfg.Node, Witness: a.self.Witness, Version: Version, DataDir: a.cfg.DataDir,
		Leader: a.c.Leader(), AWSSettings: a.aws.settings, LogLevel: a.levelName(),
		// Doctor's AWS calls count against readiness's budget, and its
		// permission probes share readiness's answers, but only answers
		// to calls sent since this run began: a doctor run must see a
		// permission taken away a moment ago (TestDoctorOnTheSimulator).
		AWS: a.ready.clients, Probes: probes,
		WatchdogDevice: a.cfg.Watchdog.Device, WatchdogTimeout: a.cfg.Watchdog.Timeout.D(), Owners: map[string]string{}}
	exe, _ := os.Executable()
	env.Paths = []string{exe, a.cfg.DataDir, a.cfg.API.Socket}
	a.c.FSM.View(func(s *cluster.State) {
		for _, n := range s.HierarchyNames() {
			h := s.Hierarchies[n]
			if (hierarchy == "" || n == hierarchy) && h.Priority(a.cfg.Node) >= 0 {
				env.Hierarchies = append(env.Hierarchies, h)
				if as := s.Assignments[n]; as != nil && as.Online {
					env.Owners[n] = as.Node
				} else {
					env.Owners[n] = ""
				}
			}
		}
	})
	a.c.FSM.View(func(s *cluster.State) { env.Holds = holds(s) })
	members := a.c.Members()
	suffrage := a.c.Suffrage()
	for _, m := range a.c.MemberList() {
		ms := members[m.Name]
		st, v := ms.State, ms.Version
		if m.Name == a.cfg.Node {
			st, v = "alive", Version
		}
		env.Members = append(env.Members, doctor.Member{Name: m.Name, State: st, Witness: m.Witness, Version: v, Suffrage: suffrage[m.Name]})
	}
	env.Removed = a.c.Removed()
	if c, ok := a.tls.(interface{ NotAfter() time.Time }); ok {
		env.CertNotAfter = c.NotAfter()
	}
	a.c.FSM.View(func(s *cluster.State) { env.MembershipChanged = s.MembersChanged != nil })
	if !a.cfg.Cluster.Join {
		for _, n := range a.cfg.Cluster.Nodes {
			env.Configured = append(env.Configured, n.Name)
		}
	}
	return env
}

func (a *Agent) levelName() string {
	if a.level == nil {
		return a.cfg.LogLevel
	}
	switch l := a.level.Level(); {
	case l <= -4:
		return "debug"
	case l <= 0:
		return "info"
	case l <= 4:
		return "warn"
	}
	return "error"
}

// redactURL removes a password from a proxy URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = url.User(u.User.Username())
	return u.String()
}

// runDoctor runs the checklist here; a full run also records the counts
// in the cluster state (shown by lifeboat status).
// Concurrent callers for the same hierarchy share one run (fanout.go).
func (a *Agent) runDoctor(ctx context.Context, hierarchy string) api.NodeDoctor {
	return a.runDoctorAs(ctx, hierarchy, false)
}

// runDoctorAs is runDoctor, in the background (doctorLoop) or for an
// operator; the two do not share runs, so that an operator never waits
// for a background run's calls held back by the budget.
func (a *Agent) runDoctorAs(ctx context.Context, hierarchy string, background bool) api.NodeDoctor {
	key := "doctor " + hierarchy
	if background {
		key = "background " + key
	}
	rep, err := shared(ctx, a, a.localRuns, key, 2*time.Minute, func(ctx context.Context) (api.NodeDoctor, error) {
		return a.runDoctorNow(ctx, hierarchy, background), nil
	})
	if err != nil {
		return api.NodeDoctor{Node: a.cfg.Node, Version: Version, Error: err.Error()}
	}
	return rep
}

func (a *Agent) runDoctorNow(ctx context.Context, hierarchy string, background bool) api.NodeDoctor {
	fs := doctor.Run(ctx, a.doctorEnv(hierarchy, background), checks(), nil)
	if f, ok := a.ready.budgetFinding(); ok {
		fs = append(fs, f)
	}
	s := a.aws.settings
	rep := api.NodeDoctor{Node: a.cfg.Node, Version: Version, Findings: fs, Settings: api.DoctorSettings{
		HTTPProxy: redactURL(s.HTTPProxy), HTTPSProxy: redactURL(s.HTTPSProxy), NoProxy: s.NoProxyList(), Region: s.Region,
		Endpoints: map[string]string{"ec2": s.Endpoints.EC2, "sts": s.Endpoints.STS, "iam": s.Endpoints.IAM, "imds": s.Endpoints.IMDS}}}
	if hierarchy == "" {
		counts := map[string]int{}
		for _, f := range fs {
			if f.Severity != doctor.Info {
				counts[f.Severity]++
			}
		}
		a.doctorMu.Lock()
		changed := a.doctorCounts == nil || fmt.Sprint(counts) != fmt.Sprint(a.doctorCounts)
		a.doctorCounts = counts
		a.noteCriticalFindings(fs)
		a.doctorMu.Unlock()
		if changed {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = a.submit(sctx, cluster.SetFindings{Node: a.cfg.Node, Findings: counts})
			cancel()
		}
	}
	return rep
}

// handleDoctor runs the checklist on every node (or one) at once.
func (a *Agent) handleDoctor(w http.ResponseWriter, r *http.Request) {
	only, hierarchy := r.URL.Query().Get("node"), r.URL.Query().Get("hierarchy")
	if only != "" {
		if _, ok := a.c.Member(only); !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("no node %q in this cluster", only))
			return
		}
	}
	if hierarchy != "" {
		if _, _, ok := a.assignment(hierarchy); !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", hierarchy))
			return
		}
	}
	// Concurrent requests for the same run share it (fanout.go).
	out, err := shared(r.Context(), a, a.fanouts, "doctor node="+only+" hierarchy="+hierarchy, 3*time.Minute, func(ctx context.Context) (api.Doctor, error) {
		return a.doctorEveryNode(ctx, only, hierarchy), nil
	})
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("run doctor: %w; try again", err))
		return
	}
	writeJSON(w, out)
}

// doctorEveryNode runs the checklist on every node (or only one).
func (a *Agent) doctorEveryNode(ctx context.Context, only, hierarchy string) api.Doctor {
	out := api.Doctor{}
	members := a.c.Members()
	out.Nodes = eachMember(a, only, func(m cluster.Member) api.NodeDoctor {
		var rep api.NodeDoctor
		state := members[m.Name].State
		if m.Name == a.cfg.Node {
			rep = a.runDoctor(ctx, hierarchy)
		} else if state == "failed" || state == "left" {
			rep = api.NodeDoctor{Node: m.Name, Error: "node " + state, Findings: []doctor.Finding{{ID: "agent", Severity: doctor.Critical, Node: m.Name,
				Seen: fmt.Sprintf("the failure detector reports %s %s: its checks could not run", m.Name, state),
				Fix:  "check the machine and the agent there (systemctl status lifeboat), and the network between the nodes", Command: "lifeboat status"}}}
		} else {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := a.rpc.call(ctx, m.Name, "GET", "/v1/internal/doctor?hierarchy="+url.QueryEscape(hierarchy), nil, &rep)
			cancel()
			if err != nil {
				rep = api.NodeDoctor{Node: m.Name, Error: err.Error(), Findings: []doctor.Finding{{ID: "agent", Severity: doctor.Critical, Node: m.Name,
					Seen: "the agent did not answer: " + err.Error(), Fix: "check that lifeboat runs there (systemctl status lifeboat) and that its API port is reachable",
					Command: "lifeboat status"}}}
			}
		}
		return rep
	})
	return out
}

// doctorLoop runs the checklist in the background so that lifeboat status
// shows each node's finding counts: shortly after start, then every
// readiness interval (at least every minute's worth apart).
func (a *Agent) doctorLoop(ctx context.Context) {
	every := max(a.cfg.ReadinessInterval.D(), time.Minute)
	next := time.After(5 * time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case <-next:
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		a.runDoctorAs(rctx, "", true)
		cancel()
		next = time.After(every)
	}
}

// eachMember runs fn for every configured node (only that one, when only
// is set) at once, and returns the answers in node name order.
func eachMember[T any](a *Agent, only string, fn func(m cluster.Member) T) []T {
	var ms []cluster.Member
	for _, m := range a.c.MemberList() {
		if only == "" || m.Name == only {
			ms = append(ms, m)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	out := make([]T, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { out[i] = fn(m) })
	}
	wg.Wait()
	return out
}

// holds lists the maintenance modes and standbys in force, for doctor.
func holds(s *cluster.State) []doctor.Hold {
	var out []doctor.Hold
	add := func(h *cluster.Hold, what, off, node string) {
		if h != nil {
			out = append(out, doctor.Hold{What: what, Off: off, Node: node, Since: h.Since, By: h.By, Reason: h.Reason})
		}
	}
	add(s.Maintenance, "cluster maintenance", "lifeboat maintenance off", "")
	for _, n := range spec.SortedKeys(s.Nodes) {
		add(s.Nodes[n].Maintenance, "maintenance of node "+n, "lifeboat maintenance off --node "+n, n)
		add(s.Nodes[n].Standby, "standby of node "+n, "lifeboat node unstandby "+n, n)
	}
	for _, h := range s.HierarchyNames() {
		if as := s.Assignments[h]; as != nil {
			add(as.Maintenance, "maintenance of hierarchy "+h, "lifeboat maintenance off "+h, "")
		}
	}
	return out
}
