package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// The event stream (GET /v1/events?follow=1).
//
// The agent asked follows every node's history by long polls of the
// internal GET /v1/events?local=1&wait=... (its own directly): one
// goroutine per node, each with its own cursor. A long poll, rather than a
// nested stream per peer, keeps one request shape for the history and the
// stream, answers an older peer that ignores wait (it is then polled at
// the old 300 ms pace), and makes a peer that restarts or comes back after
// an outage a plain retry from the same cursor: nothing lost, nothing
// repeated. Memory stays bounded whatever the reader does: events are read
// from each node's ring only when the previous batch has been written, so
// a slow reader falls behind in the rings, not in a buffer; once it falls
// behind by more than a ring holds it gets a "dropped" message with the
// count, and a reader that stops reading altogether is disconnected by a
// write deadline. events.Log.Add never waits for any of this.
const (
	streamHeartbeat    = 15 * time.Second
	streamPollWait     = 20 * time.Second // under the internal client's 30 s timeout
	streamBatch        = 500
	streamWriteTimeout = 10 * time.Second
	streamRetryMax     = 5 * time.Second
	maxLocalWait       = 25 * time.Second
)

// handleEvents returns the history; without ?local=1 it merges every
// node's history; with ?follow=1 it streams events as they happen.
func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cursor := q.Get("cursor")
	if q.Get("follow") == "1" {
		if id := r.Header.Get("Last-Event-ID"); id != "" {
			cursor = id
		}
		a.streamEvents(w, r, parseCursors(cursor))
		return
	}
	cursors := parseCursors(cursor)
	if q.Get("local") == "1" {
		limit, _ := strconv.Atoi(q.Get("limit"))
		waitMS, _ := strconv.Atoi(q.Get("wait"))
		wait := min(time.Duration(max(waitMS, 0))*time.Millisecond, maxLocalWait)
		evs, lost := a.readLocal(r.Context(), cursors[a.cfg.Node], min(max(limit, 0), 5000), wait)
		resp := api.EventsResponse{Events: evs, Cursors: map[string]uint64{a.cfg.Node: cursors[a.cfg.Node]}}
		if len(evs) > 0 {
			resp.Cursors[a.cfg.Node] = evs[len(evs)-1].Seq
		}
		if lost > 0 {
			resp.Lost = map[string]uint64{a.cfg.Node: lost}
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
	nodes := a.c.MemberList()
	for _, n := range nodes {
		go func() {
			p := part{node: n.Name}
			path := fmt.Sprintf("/v1/events?local=1&cursor=%s:%d", n.Name, cursors[n.Name])
			if n.Name == a.cfg.Node {
				evs := a.events.Since(cursors[n.Name])
				p.resp.Events = evs
			} else {
				ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
				p.err = a.rpc.call(ctx, n.Name, "GET", path, nil, &p.resp)
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

// readLocal reads this node's events after seq, waiting up to wait for
// one when there is none yet.
func (a *Agent) readLocal(ctx context.Context, seq uint64, limit int, wait time.Duration) ([]events.Event, uint64) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		woken := a.events.Wait() // before the read: an Add in between wakes it
		evs, lost := a.events.Read(seq, limit)
		if len(evs) > 0 || lost > 0 || wait <= 0 {
			return evs, lost
		}
		select {
		case <-woken:
		case <-timeout:
			return nil, 0
		case <-ctx.Done():
			return nil, 0
		}
	}
}

// streamPart is what one node's follower hands the stream: a batch of
// events, or a change of the node's reachability.
type streamPart struct {
	node      string
	evs       []events.Event
	lost      uint64
	err       error // the node became unreachable
	reachable bool  // the node answers again
}

func (a *Agent) streamEvents(w http.ResponseWriter, r *http.Request, cursors map[string]uint64) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	ctx, cancel := context.WithCancel(r.Context())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	cur := map[string]uint64{}
	parts := make(chan streamPart) // unbuffered: a follower reads on once its batch is written
	for _, n := range a.c.MemberList() {
		cur[n.Name] = cursors[n.Name]
		wg.Go(func() { a.followNode(ctx, n.Name, cursors[n.Name], parts) })
	}
	write := func(typ string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		_, err = fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", encodeCursors(cur), typ, b)
		return err
	}
	// A comment first: the client sees the stream open at once.
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := fmt.Fprint(w, ": lifeboat event stream\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	hb := time.NewTicker(streamHeartbeat)
	defer hb.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
			_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			_, err = fmt.Fprint(w, ": keepalive\n\n")
		case p := <-parts:
			switch {
			case p.err != nil:
				err = write(api.StreamUnreachable, api.StreamNotice{Node: p.node, Error: p.err.Error()})
			case p.reachable:
				err = write(api.StreamReachable, api.StreamNotice{Node: p.node})
			}
			if p.lost > 0 && err == nil {
				err = write(api.StreamDropped, api.StreamNotice{Node: p.node, Dropped: p.lost})
			}
			for _, e := range p.evs {
				if err != nil {
					break
				}
				cur[p.node] = e.Seq
				err = write(api.StreamEvent, e)
			}
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return // the reader went away or stopped reading
		}
	}
}

// followNode hands node's events after cursor to out as they happen,
// retrying with backoff while the node does not answer (said once per
// outage).
func (a *Agent) followNode(ctx context.Context, node string, cursor uint64, out chan<- streamPart) {
	send := func(p streamPart) bool {
		select {
		case out <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}
	pause := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	retry := 200 * time.Millisecond
	down := false
	for ctx.Err() == nil {
		start := time.Now()
		evs, lost, err := a.fetchEvents(ctx, node, cursor)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !down && !send(streamPart{node: node, err: err}) {
				return
			}
			down = true
			if !pause(retry) {
				return
			}
			retry = min(2*retry, streamRetryMax)
			continue
		}
		retry = 200 * time.Millisecond
		p := streamPart{node: node, evs: evs, lost: lost, reachable: down}
		down = false
		if len(evs) > 0 {
			cursor = evs[len(evs)-1].Seq
		}
		if (len(evs) > 0 || lost > 0 || p.reachable) && !send(p) {
			return
		}
		// A peer that answers an empty long poll at once ignores wait
		// (an older version): poll it at the old pace.
		if len(evs) == 0 && time.Since(start) < time.Second && !pause(300*time.Millisecond) {
			return
		}
	}
}

// fetchEvents long-polls node's history after cursor.
func (a *Agent) fetchEvents(ctx context.Context, node string, cursor uint64) ([]events.Event, uint64, error) {
	if node == a.cfg.Node {
		evs, lost := a.readLocal(ctx, cursor, streamBatch, streamPollWait)
		return evs, lost, nil
	}
	var resp api.EventsResponse
	path := fmt.Sprintf("/v1/events?local=1&cursor=%s:%d&limit=%d&wait=%d", node, cursor, streamBatch, streamPollWait.Milliseconds())
	c, ok := a.rpc.slow(node)
	if !ok {
		return nil, 0, fmt.Errorf("node %s is not in the configured membership", node)
	}
	if err := c.Do(ctx, "GET", path, nil, &resp); err != nil {
		return nil, 0, fmt.Errorf("follow the events of %s: %w", node, err)
	}
	return resp.Events, resp.Lost[node], nil
}

// encodeCursors writes cursors as "node:seq,node:seq" in name order.
func encodeCursors(c map[string]uint64) string {
	names := make([]string, 0, len(c))
	for n := range c {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ":" + strconv.FormatUint(c[n], 10)
	}
	return strings.Join(parts, ",")
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
