package agent

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

type httpServers struct {
	unix, tcp *http.Server
}

func (h *httpServers) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.unix.Shutdown(ctx)
	_ = h.tcp.Shutdown(ctx)
}

type ctxKey int

const authKey ctxKey = 0

// access levels of a request
const (
	accessLocal    = "local" // the root-only socket
	accessAPI      = "api"
	accessInternal = "internal"
)

// serveHTTP listens on the Unix socket (root only) and the TCP address.
func (a *Agent) serveHTTP() (*httpServers, error) {
	mux := a.routes()
	sock := a.cfg.API.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory for %s: %w", sock, err)
	}
	if fi, err := os.Lstat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(sock)
	}
	ul, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen on socket %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ul.Close()
		return nil, fmt.Errorf("restrict socket %s to root: %w", sock, err)
	}
	tcp, err := net.Listen("tcp", a.self.API)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("listen for the API on %s: %w", a.self.API, err)
	}
	tl := tls.NewListener(tcp, a.tls.ServerConfig(false))
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), authKey, accessLocal)))
	})
	remote := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		level := ""
		switch {
		case tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(a.internalToken)) == 1:
			// Members also present the cluster certificate (pinned by
			// the TLS layer when given).
			if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
				writeErr(w, http.StatusUnauthorized, errors.New("internal calls need the cluster certificate"))
				return
			}
			level = accessInternal
		case tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(a.apiToken)) == 1:
			level = accessAPI
		case r.URL.Path == "/metrics":
			level = accessAPI // metrics carry no secrets
		default:
			writeErr(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
			return
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), authKey, level)))
	})
	// Requests end with the agent: a long wait (switchover) does not
	// outlive Shutdown.
	base := func(net.Listener) context.Context { return a.ctx }
	h := &httpServers{
		unix: &http.Server{Handler: local, ReadHeaderTimeout: 5 * time.Second, BaseContext: base},
		tcp:  &http.Server{Handler: remote, ReadHeaderTimeout: 5 * time.Second, BaseContext: base},
	}
	go func() { _ = h.unix.Serve(ul) }()
	go func() { _ = h.tcp.Serve(tl) }()
	return h, nil
}

// catchUpWithLeader waits (briefly) until this node has applied everything
// the leader had applied when asked. After a refresh, the readiness results
// were committed through the leader, which applies a command before it
// answers; a follower learns that they are committed only with the leader's
// next message, so its own commit index may not cover them yet.
func (a *Agent) catchUpWithLeader(ctx context.Context) {
	leader := a.c.Leader()
	c, ok := a.rpc.slow[leader]
	if leader == "" || leader == a.cfg.Node || !ok {
		return
	}
	var st api.Status
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := c.Do(sctx, "GET", "/v1/status", nil, &st)
	cancel()
	if err != nil {
		a.log.Debug("status --refresh: ask the leader for its applied index", "leader", leader, "error", err)
		return
	}
	_ = a.waitFor(ctx, 2*time.Second, func(s *cluster.State) (bool, error) { return s.Index >= st.Index, nil })
}

func internalOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(authKey) != accessInternal {
			writeErr(w, http.StatusForbidden, errors.New("internal endpoint: only cluster members may call it"))
			return
		}
		next(w, r)
	}
}

func (a *Agent) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, api.Version{Node: a.cfg.Node, Version: Version})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("refresh") == "1" {
			a.refreshAll(r.Context())
			a.catchUpWithLeader(r.Context())
		}
		writeJSON(w, a.status())
	})
	mux.HandleFunc("GET /v1/iam-policy", a.handleIAMPolicy)
	mux.HandleFunc("GET /v1/doctor", a.handleDoctor)
	a.upgradeRoutes(mux)
	mux.HandleFunc("GET /v1/internal/doctor", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.runDoctor(r.Context(), r.URL.Query().Get("hierarchy")))
	}))
	mux.HandleFunc("POST /v1/internal/readiness/refresh", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		res, err := a.ready.Refresh(r.Context())
		if err != nil {
			writeErr(w, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, res)
	}))
	mux.HandleFunc("POST /v1/apply", a.handleApply)
	mux.HandleFunc("POST /v1/hierarchies/{name}/switchover", a.handleSwitchover)
	mux.HandleFunc("POST /v1/hierarchies/{name}/start", a.handleStartStop(true))
	mux.HandleFunc("POST /v1/hierarchies/{name}/stop", a.handleStartStop(false))
	mux.HandleFunc("DELETE /v1/hierarchies/{name}", a.handleDelete)
	mux.HandleFunc("GET /v1/events", a.handleEvents)
	mux.HandleFunc("POST /v1/log-level", a.handleLogLevel)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics(), promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /v1/internal/lease/renew", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		var req cluster.RenewRequest
		if !readJSON(w, r, &req) {
			return
		}
		writeJSON(w, a.c.Leases.HandleRenew(req))
	}))
	mux.HandleFunc("POST /v1/internal/lease/attest", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		var req cluster.AttestRequest
		if !readJSON(w, r, &req) {
			return
		}
		// Bounded: nobody needs to wait longer than the age asked for.
		limit := max(a.c.Leases.Threshold().Milliseconds(), min(req.MinAgeMS, time.Hour.Milliseconds()))
		req.WaitMS = min(req.WaitMS, limit)
		writeJSON(w, a.c.Leases.AwaitAttest(r.Context(), req))
	}))
	mux.HandleFunc("POST /v1/internal/apply", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		var raw json.RawMessage
		if !readJSON(w, r, &raw) {
			return
		}
		writeJSON(w, a.handleInternalApply(raw))
	}))
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 8<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return false
	}
	return true
}

// status assembles the cluster status from this node's replicated state and
// failure detector.
func (a *Agent) status() api.Status {
	members := a.c.Members()
	leader := a.c.Leader()
	s := a.c.FSM.Copy()
	st := api.Status{Node: a.cfg.Node, Leader: leader, Index: s.Index, Fingerprint: a.tls.Fingerprint(),
		FeatureLevel: s.FeatureLevel(), SupportedLevel: a.c.SupportedLevel()}
	if h := a.c.FSM.Halted(); h != nil {
		st.Halted = h.String()
	}
	gen, until := a.c.Leases.Current()
	st.Local = api.LocalStatus{LeaseHeld: a.c.Leases.Valid(gen), LeaseGen: gen, Hierarchies: map[string]api.LocalHierarchy{}}
	want := a.desired()
	for name, r := range a.eng.Reports() {
		st.Local.Hierarchies[name] = api.LocalHierarchy{State: r.State, Epoch: r.Epoch, Holding: want[name].InService}
	}
	for _, m := range a.c.MemberList() {
		ms := members[m.Name]
		ns := api.NodeStatus{Name: m.Name, State: ms.State, Leader: m.Name == leader, Witness: m.Witness, Version: ms.Version, Level: ms.Level}
		if n := s.Nodes[m.Name]; n != nil {
			ns.Gen, ns.Fenced, ns.Leaving = n.Gen, n.Revoked, n.Leaving
			ns.Findings = n.Findings
			if ns.Version == "" {
				ns.Version = n.Version
			}
			if ns.Level == 0 {
				ns.Level = n.Level
			}
		}
		if m.Name == a.cfg.Node {
			ns.State = "alive"
			ns.Version = Version
			ns.Level = a.c.SupportedLevel()
			switch {
			case m.Witness:
				ns.Lease = "witness (grants only)"
			case a.c.Leases.Valid(gen):
				ns.Lease, ns.LeaseFresh = "held", true
			case gen != 0:
				ns.Lease = fmt.Sprintf("expired %s ago", time.Since(until).Round(time.Millisecond))
			default:
				ns.Lease = "none"
			}
		} else if !m.Witness {
			if ago, ok := a.c.Leases.LastGrant(m.Name, ns.Gen); ok {
				ns.Lease = fmt.Sprintf("renewed %s ago", ago.Round(time.Millisecond))
				ns.LeaseFresh = ago < a.c.Leases.Threshold()
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	for _, name := range s.HierarchyNames() {
		h := s.Hierarchies[name]
		as := s.Assignments[name]
		hs := api.HierarchyStatus{Name: name, Nodes: h.Nodes, Switchback: h.Switchback, Resources: map[string]map[string]string{}, Errors: map[string]string{}}
		if as != nil {
			hs.Owner, hs.Epoch, hs.Online, hs.MoveTo, hs.Failed, hs.Reason = as.Node, as.Epoch, as.Online, as.MoveTo, as.Failed, as.Reason
			if !as.Since.IsZero() {
				hs.Since = as.Since.Format(time.RFC3339Nano)
			}
		}
		for _, n := range spec.SortedKeys(s.Nodes) {
			if r, ok := s.Nodes[n].Reports[name]; ok {
				hs.Resources[n] = r.Resources
				if r.Error != "" {
					hs.Errors[n] = r.Error
				}
			}
		}
		hs.State = hierarchyState(s, as)
		hs.Readiness = map[string]api.Readiness{}
		for _, n := range h.Nodes {
			if ns := s.Nodes[n]; ns != nil {
				if rd, ok := ns.Readiness[name]; ok {
					hs.Readiness[n] = api.Readiness{Ready: rd.Ready, Missing: rd.Missing, Reason: rd.Reason, At: rd.At.Format(time.RFC3339)}
				}
			}
		}
		st.Hierarchies = append(st.Hierarchies, hs)
	}
	return st
}

func hierarchyState(s *cluster.State, as *cluster.Assignment) string {
	switch {
	case as == nil:
		return "unknown"
	case as.Deleting:
		return "deleting"
	case as.Node == "" && as.Online && len(as.Failed) > 0:
		return "failed"
	case as.Node == "" && as.Online:
		return "unplaced"
	case as.MoveTo != "":
		return "moving"
	}
	r, ok := s.Report(as.Node, as.Hierarchy, as.Epoch)
	switch {
	case !as.Online && (!ok || r.State == engine.StateOffline):
		return "stopped"
	case !ok:
		return "pending"
	}
	return r.State
}

func (a *Agent) handleApply(w http.ResponseWriter, r *http.Request) {
	var req api.ApplyRequest
	if !readJSON(w, r, &req) {
		return
	}
	if len(req.Hierarchies) == 0 {
		writeErr(w, http.StatusBadRequest, errors.New("nothing to apply: the request has no hierarchies"))
		return
	}
	var problems []string
	resNodes := map[string]bool{}
	for _, n := range a.cfg.Cluster.Nodes {
		if !n.Witness {
			resNodes[n.Name] = true
		}
	}
	for i := range req.Hierarchies {
		h := &req.Hierarchies[i]
		for _, p := range kit.ValidateHierarchy(h) {
			problems = append(problems, fmt.Sprintf("hierarchy %q: %s", h.Name, p.Error()))
		}
		for j, n := range h.Nodes {
			if !resNodes[n] {
				problems = append(problems, fmt.Sprintf("hierarchy %q: nodes[%d]: %q is not a cluster node that runs resources (known: %s)", h.Name, j, n, strings.Join(spec.SortedKeys(resNodes), ", ")))
			}
		}
		h.Normalize()
	}
	if len(problems) > 0 {
		writeErr(w, http.StatusBadRequest, errors.New(strings.Join(problems, "\n")))
		return
	}
	var resp api.ApplyResponse
	var changed []spec.Hierarchy
	a.c.FSM.View(func(s *cluster.State) {
		for _, h := range req.Hierarchies {
			old, ok := s.Hierarchies[h.Name]
			switch {
			case !ok:
				resp.Created = append(resp.Created, h.Name)
				changed = append(changed, h)
			case string(encodeJSON(old)) != string(encodeJSON(h)):
				resp.Updated = append(resp.Updated, h.Name)
				changed = append(changed, h)
			default:
				resp.Unchanged = append(resp.Unchanged, h.Name)
			}
		}
	})
	if len(changed) > 0 {
		if _, err := a.submit(r.Context(), cluster.PutHierarchies{Hierarchies: changed}); err != nil {
			writeErr(w, http.StatusServiceUnavailable, err)
			return
		}
	}
	writeJSON(w, resp)
}

func (a *Agent) assignment(name string) (cluster.Assignment, spec.Hierarchy, bool) {
	var as cluster.Assignment
	var h spec.Hierarchy
	var ok bool
	a.c.FSM.View(func(s *cluster.State) {
		if p := s.Assignments[name]; p != nil {
			as, h, ok = *p, s.Hierarchies[name], true
		}
	})
	return as, h, ok
}

// waitFor blocks until cond holds on the local state or the timeout ends.
func (a *Agent) waitFor(ctx context.Context, timeout time.Duration, cond func(*cluster.State) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ch := a.c.FSM.Changed()
		var done bool
		var err error
		a.c.FSM.View(func(s *cluster.State) { done, err = cond(s) })
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s", timeout)
		case <-ch:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func timeoutOr(d spec.Duration, def time.Duration) time.Duration {
	if d > 0 {
		return d.D()
	}
	return def
}

func (a *Agent) handleSwitchover(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.MoveRequest
	if !readJSON(w, r, &req) {
		return
	}
	as, h, ok := a.assignment(name)
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", name))
		return
	}
	if h.Priority(req.To) < 0 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("node %q is not in hierarchy %s's node list (%s)", req.To, name, strings.Join(h.Nodes, ", ")))
		return
	}
	start := time.Now()
	if as.Node == req.To && as.Online && as.MoveTo == "" && !as.FailedOn(req.To) {
		if rep, ok := a.report(req.To, name, as.Epoch); ok && rep.State == engine.StateOnline {
			writeJSON(w, api.Outcome{Hierarchy: name, Owner: req.To, State: rep.State, Epoch: as.Epoch, Duration: "0s", Message: "already in service on " + req.To})
			return
		}
		// Already assigned there (still restoring): wait for it, no move.
		a.finishWait(w, r, name, start, as.Epoch-1, timeoutOr(req.Timeout, 2*time.Minute), onlineOrFailedOn(req.To))
		return
	}
	// Prove the target ready now, not as of its last scheduled probe.
	if rd, err := a.refreshNode(r.Context(), req.To); err != nil {
		if !req.Force {
			writeErr(w, http.StatusConflict, fmt.Errorf("switchover to %s refused: its readiness could not be checked: %v (use --force to move anyway)", req.To, err))
			return
		}
	} else if x, ok := rd[name]; ok && !x.Ready && !req.Force {
		writeErr(w, http.StatusConflict, fmt.Errorf("switchover to %s refused: %s is NOT READY for %s: %s (fix it, or use --force to move anyway)", req.To, req.To, name, x.Reason))
		return
	}
	before := as.Epoch
	if _, err := a.submit(r.Context(), cluster.RequestMove{Hierarchy: name, To: req.To, Force: req.Force, ClearFailed: true, Reason: "switchover to " + req.To + " requested"}); err != nil {
		writeErr(w, http.StatusConflict, err)
		return
	}
	a.events.Add(events.Event{Kind: "failover", Hierarchy: name, Action: "switchover", Message: "switchover to " + req.To + " requested"})
	a.finishWait(w, r, name, start, before, timeoutOr(req.Timeout, 2*time.Minute), func(s *cluster.State, as *cluster.Assignment) (bool, error) {
		if as.Node != req.To {
			if as.MoveTo == "" && as.Node != "" {
				if rep, ok := s.Report(as.Node, name, as.Epoch); ok && rep.State == engine.StateOnline {
					return false, fmt.Errorf("switchover to %s did not happen: %s; %s stays on %s", req.To, as.Reason, name, as.Node)
				}
			}
			return false, nil
		}
		return onlineOrFailed(s, as)
	})
}

func onlineOrFailedOn(node string) func(*cluster.State, *cluster.Assignment) (bool, error) {
	return func(s *cluster.State, as *cluster.Assignment) (bool, error) {
		if as.Node != node {
			return false, fmt.Errorf("%s moved to %q: %s", as.Hierarchy, as.Node, as.Reason)
		}
		return onlineOrFailed(s, as)
	}
}

func onlineOrFailed(s *cluster.State, as *cluster.Assignment) (bool, error) {
	rep, ok := s.Report(as.Node, as.Hierarchy, as.Epoch)
	if !ok {
		return false, nil
	}
	switch rep.State {
	case engine.StateOnline:
		return true, nil
	case engine.StateFailed:
		return false, fmt.Errorf("%s failed on %s: %s", as.Hierarchy, as.Node, rep.Error)
	}
	return false, nil
}

func (a *Agent) report(node, h string, epoch uint64) (cluster.HierarchyReport, bool) {
	var rep cluster.HierarchyReport
	var ok bool
	a.c.FSM.View(func(s *cluster.State) { rep, ok = s.Report(node, h, epoch) })
	return rep, ok
}

// finishWait waits for cond and writes the outcome.
// Only states after the request's own change (epoch above before) count:
// a follower's state may lag the leader's commit.
func (a *Agent) finishWait(w http.ResponseWriter, r *http.Request, name string, start time.Time, before uint64, timeout time.Duration, cond func(*cluster.State, *cluster.Assignment) (bool, error)) {
	err := a.waitFor(r.Context(), timeout, func(s *cluster.State) (bool, error) {
		as := s.Assignments[name]
		if as == nil {
			return true, nil
		}
		if as.Epoch <= before {
			return false, nil
		}
		return cond(s, as)
	})
	as, _, _ := a.assignment(name)
	out := api.Outcome{Hierarchy: name, Owner: as.Node, Epoch: as.Epoch, Duration: time.Since(start).Round(time.Millisecond).String()}
	var st string
	a.c.FSM.View(func(s *cluster.State) { st = hierarchyState(s, s.Assignments[name]) })
	out.State = st
	if err != nil {
		out.Message = err.Error()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(struct {
			api.Outcome
			Error string `json:"error"`
		}{out, err.Error()})
		return
	}
	writeJSON(w, out)
}

func (a *Agent) handleStartStop(online bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var req api.ActionRequest
		if !readJSON(w, r, &req) {
			return
		}
		cur, _, ok := a.assignment(name)
		if !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", name))
			return
		}
		verb := map[bool]string{true: "start", false: "stop"}[online]
		start := time.Now()
		if _, err := a.submit(r.Context(), cluster.SetOnline{Hierarchy: name, Online: online, ClearFailed: online, Reason: verb + " requested"}); err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		a.events.Add(events.Event{Kind: "failover", Hierarchy: name, Action: verb, Message: verb + " requested"})
		if req.NoWait {
			as, _, _ := a.assignment(name)
			writeJSON(w, api.Outcome{Hierarchy: name, Owner: as.Node, Epoch: as.Epoch, State: "requested"})
			return
		}
		a.finishWait(w, r, name, start, cur.Epoch, timeoutOr(req.Timeout, 2*time.Minute), func(s *cluster.State, as *cluster.Assignment) (bool, error) {
			if online {
				if as.Node == "" {
					if len(as.Failed) > 0 {
						return false, fmt.Errorf("no node could take %s", name)
					}
					return false, nil
				}
				return onlineOrFailed(s, as)
			}
			if as.Node == "" {
				return true, nil
			}
			rep, ok := s.Report(as.Node, name, as.Epoch)
			return ok && (rep.State == engine.StateOffline || rep.State == engine.StateFailed), nil
		})
	}
}

func (a *Agent) handleDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.ActionRequest
	if !readJSON(w, r, &req) {
		return
	}
	if _, _, ok := a.assignment(name); !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("hierarchy %q does not exist", name))
		return
	}
	start := time.Now()
	if _, err := a.submit(r.Context(), cluster.Delete{Hierarchy: name}); err != nil {
		writeErr(w, http.StatusConflict, err)
		return
	}
	err := a.waitFor(r.Context(), timeoutOr(req.Timeout, 2*time.Minute), func(s *cluster.State) (bool, error) {
		return s.Assignments[name] == nil, nil
	})
	out := api.Outcome{Hierarchy: name, State: "deleted", Duration: time.Since(start).Round(time.Millisecond).String()}
	if err != nil {
		writeErr(w, http.StatusConflict, fmt.Errorf("delete %s: still being taken out of service: %w", name, err))
		return
	}
	writeJSON(w, out)
}

// handleEvents returns the history; without ?local=1 it merges every
// node's history.
func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	cursors := parseCursors(r.URL.Query().Get("cursor"))
	if r.URL.Query().Get("local") == "1" {
		evs := a.events.Since(cursors[a.cfg.Node])
		resp := api.EventsResponse{Events: evs, Cursors: map[string]uint64{a.cfg.Node: cursors[a.cfg.Node]}}
		if len(evs) > 0 {
			resp.Cursors[a.cfg.Node] = evs[len(evs)-1].Seq
		}
		writeJSON(w, resp)
		return
	}
	type part struct {
		node string
		resp api.EventsResponse
		err  error
	}
	ch := make(chan part)
	nodes := a.cfg.Cluster.Nodes
	for _, n := range nodes {
		go func() {
			p := part{node: n.Name}
			path := fmt.Sprintf("/v1/events?local=1&cursor=%s:%d", n.Name, cursors[n.Name])
			if n.Name == a.cfg.Node {
				evs := a.events.Since(cursors[n.Name])
				p.resp.Events = evs
			} else {
				ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
				p.err = a.rpc.slow[n.Name].Do(ctx, "GET", path, nil, &p.resp)
				cancel()
			}
			ch <- p
		}()
	}
	out := api.EventsResponse{Cursors: map[string]uint64{}, Unreachable: map[string]string{}}
	for range nodes {
		p := <-ch
		out.Cursors[p.node] = cursors[p.node]
		if p.err != nil {
			out.Unreachable[p.node] = p.err.Error()
			continue
		}
		out.Events = append(out.Events, p.resp.Events...)
		for _, e := range p.resp.Events {
			if e.Seq > out.Cursors[p.node] {
				out.Cursors[p.node] = e.Seq
			}
		}
	}
	sort.SliceStable(out.Events, func(i, j int) bool { return out.Events[i].Time.Before(out.Events[j].Time) })
	writeJSON(w, out)
}

func (a *Agent) handleLogLevel(w http.ResponseWriter, r *http.Request) {
	if r.Context().Value(authKey) == accessInternal {
		writeErr(w, http.StatusForbidden, errors.New("not for internal callers"))
		return
	}
	var req struct {
		Level string `json:"level"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if a.level == nil {
		writeErr(w, http.StatusConflict, errors.New("this agent's log level cannot be changed at run time"))
		return
	}
	if err := a.level.UnmarshalText([]byte(req.Level)); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("unknown log level %q: use debug, info, warn or error", req.Level))
		return
	}
	a.log.Info("log level changed", "level", req.Level)
	writeJSON(w, req)
}

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
