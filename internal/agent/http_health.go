package agent

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
	"github.com/lifeboat-ha/lifeboat/internal/engine"
)

// serveHealth starts the optional plain health listener (health_listen):
// GET /health/HIERARCHY answers 200 on the node that has the hierarchy in
// service (it holds it under a valid lease and its engine reports it
// online), 503 elsewhere and 404 for an unknown hierarchy. It serves
// nothing else and says nothing a load balancer does not need. nil when
// not configured.
func (a *Agent) serveHealth() (*http.Server, error) {
	if a.cfg.HealthListen == "" || a.net != nil {
		return nil, nil
	}
	l, err := net.Listen("tcp", a.cfg.HealthListen)
	if err != nil {
		return nil, fmt.Errorf("listen for health checks on %s (health_listen): %w", a.cfg.HealthListen, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/{name}", a.handleHealth)
	// Its answers are short: whole-request and write timeouts are safe
	// here, unlike on the API.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: apiHeaderTimeout, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: apiIdleTimeout, MaxHeaderBytes: 8 << 10}
	l = a.boundedListener("health", l)
	go func() { _ = srv.Serve(l) }()
	return srv, nil
}

// healthOf is the health answer for one hierarchy on this node.
func (a *Agent) healthOf(name string) (int, string) {
	known := false
	a.c.FSM.View(func(s *cluster.State) { _, known = s.Hierarchies[name] })
	if !known {
		return http.StatusNotFound, "unknown hierarchy\n"
	}
	d, ok := a.desired()[name]
	if r, rok := a.eng.Reports()[name]; ok && d.InService && rok && r.State == engine.StateOnline && r.Epoch == d.Epoch {
		return http.StatusOK, "in service here\n"
	}
	if r, rok := a.eng.Reports()[name]; ok && d.Unmanaged && rok && r.Running() {
		// Maintenance: lifeboat does not act, but its checks find the
		// service running here.
		return http.StatusOK, "running here (unmanaged: maintenance)\n"
	}
	return http.StatusServiceUnavailable, "not in service here\n"
}

func (a *Agent) handleHealth(w http.ResponseWriter, r *http.Request) {
	code, body := a.healthOf(r.PathValue("name"))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
