package agent

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-ha/lifeboat/internal/connlimit"
)

// Bounds of the agent's HTTP servers (the API on TCP and on the socket,
// and the health listener). See docs/security.md, "Bounded resources".
//
// There is no server-wide ReadTimeout or WriteTimeout: net/http cancels
// a request's context when a ReadTimeout expires while the handler runs
// (its background read fails), and a WriteTimeout cuts any response that
// takes longer; both would end the event stream (GET /v1/events?follow=1)
// and long waits (switchover, node add: up to about a minute). A request
// body instead gets its own read deadline (bodyDeadline), and the stream
// sets write deadlines per write.
const (
	// apiHeaderTimeout bounds reading a request's headers, and with it
	// the TLS handshake (net/http bounds that by the smallest timeout
	// set): a slow-loris client is cut after it.
	apiHeaderTimeout = 5 * time.Second
	// apiBodyTimeout bounds reading a request's body.
	apiBodyTimeout = time.Minute
	// apiIdleTimeout closes a keep-alive connection idle that long.
	apiIdleTimeout = time.Minute
	// apiMaxHeaderBytes bounds a request's headers.
	apiMaxHeaderBytes = 64 << 10
)

// boundedServer is an http.Server for h with the agent's bounds.
func boundedServer(h http.Handler) *http.Server {
	return &http.Server{Handler: bodyDeadline(h, apiBodyTimeout), ReadHeaderTimeout: apiHeaderTimeout,
		IdleTimeout: apiIdleTimeout, MaxHeaderBytes: apiMaxHeaderBytes}
}

// boundedListener caps the connections open at once on ln, and makes the
// agent's metrics count them under name.
func (a *Agent) boundedListener(name string, ln net.Listener) net.Listener {
	// The members (lease renewals, forwarded commands) have a budget of
	// their own, and no other address may hold more than a quarter.
	// api.max_connections caps the connections open at once on each.
	limit := a.cfg.API.MaxConnections
	if limit <= 0 {
		limit = connlimit.DefaultMax
	}
	cfg := connlimit.Config{Name: name, Max: limit, Logger: a.log, PerHost: limit / 4}
	if a.c != nil {
		cfg.Reserved = a.c.MemberAddr
	}
	l := connlimit.Wrap(ln, cfg)
	a.listeners.add(name, l)
	return l
}

// bodyDeadline gives a request with a body until timeout to send it; once
// the body is read to its end the deadline is lifted, so that a long
// handler is not cut (net/http's background read of the connection would
// cancel the request's context at the deadline).
func bodyDeadline(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			// Not a connection with deadlines (tests): nothing to bound.
			next.ServeHTTP(w, r)
			return
		}
		r.Body = &liftAtEOF{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		next.ServeHTTP(w, r)
	})
}

// liftAtEOF calls lift once the body has been read to its end.
type liftAtEOF struct {
	io.ReadCloser
	lift func()
	once sync.Once
}

func (b *liftAtEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.once.Do(b.lift)
	}
	return n, err
}

// boundedListeners are the agent's bounded listeners by name, for metrics.
type boundedListeners struct {
	mu sync.Mutex
	m  map[string]func() connlimit.Stats
}

func (b *boundedListeners) add(name string, l *connlimit.Listener) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]func() connlimit.Stats{}
	}
	b.m[name] = l.Stats
}

func (b *boundedListeners) stats() map[string]connlimit.Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]connlimit.Stats, len(b.m))
	for name, f := range b.m {
		out[name] = f()
	}
	return out
}

var (
	descConnsOpen = prometheus.NewDesc("lifeboat_listener_connections_open", "Connections open now on the listener (raft, api, socket, health), those in their handshake included.",
		[]string{"listener"}, nil)
	descConnsRefused = prometheus.NewDesc("lifeboat_listener_connections_refused_total", "Connections the listener closed at once because its cap of open connections was reached.",
		[]string{"listener"}, nil)
	descHandshakeFailed = prometheus.NewDesc("lifeboat_listener_handshakes_failed_total", "TLS handshakes that failed or timed out on the raft listener.",
		[]string{"listener"}, nil)
)

// listenerCollector exports the counts of the bounded listeners.
type listenerCollector struct{ a *Agent }

func (listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnsOpen
	ch <- descConnsRefused
	ch <- descHandshakeFailed
}

func (c listenerCollector) Collect(ch chan<- prometheus.Metric) {
	all := c.a.listeners.stats()
	if c.a.c != nil {
		all["raft"] = c.a.c.RaftListenerStats()
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := all[n]
		ch <- prometheus.MustNewConstMetric(descConnsOpen, prometheus.GaugeValue, float64(st.Open), n)
		ch <- prometheus.MustNewConstMetric(descConnsRefused, prometheus.CounterValue, float64(st.Refused), n)
		if n == "raft" {
			ch <- prometheus.MustNewConstMetric(descHandshakeFailed, prometheus.CounterValue, float64(st.HandshakeFailed), n)
		}
	}
}

var _ prometheus.Collector = listenerCollector{}
