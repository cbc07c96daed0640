package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
)

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
