// Package notify sends the events a node records to the operators'
// webhooks and commands (the agent config's notify: list), so that a
// failover, a node that fails, a NOT READY standby, a critical doctor
// finding or a lost quorum reach someone without anybody polling.
//
// Each node notifies only the events it records itself: every event is in
// exactly one node's history, so it is sent once cluster-wide (by the
// leader for what the leader decides: failovers, switchovers, nodes
// failing and joining; by the node concerned for its readiness, its
// doctor findings and its quorum). A dispatcher follows the node's event
// log from its own goroutine, so recording an event never waits for a
// notifier. Each notifier has a bounded queue (the oldest event is dropped
// and counted when it is full) and one worker that sends with a timeout
// per attempt and retries with exponential backoff: a receiver that hangs
// or fails costs its own queue, never a failover.
package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// Source is the node's event log (events.Log).
type Source interface {
	Read(seq uint64, limit int) ([]events.Event, uint64)
	Wait() <-chan struct{}
	Last() uint64
}

var _ Source = (*events.Log)(nil)

// Message is what a notifier sends: the event, and which cluster and node
// it comes from. Webhooks get it as the request body, commands on stdin.
type Message struct {
	Cluster string       `json:"cluster"`
	Node    string       `json:"node"`
	Event   events.Event `json:"event"`
}

// Sender makes one attempt to deliver a message; ctx carries the
// attempt's timeout.
type Sender interface {
	Send(ctx context.Context, body []byte, m Message) error
}

// permanent marks an error that a retry would not change (a 4xx answer).
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Config configures a Dispatcher.
type Config struct {
	Cluster, Node string
	Version       string
	Notifiers     []config.Notifier
	Logger        *slog.Logger
}

// Dispatcher hands a node's events to its notifiers.
type Dispatcher struct {
	cluster, node string
	log           *slog.Logger
	ns            []*notifier

	sent, failed, dropped *prometheus.CounterVec
}

type notifier struct {
	name    string
	filter  config.Filter
	sender  Sender
	retries int
	backoff time.Duration
	timeout time.Duration
	max     int

	mu       sync.Mutex
	queue    []events.Event
	wake     chan struct{}
	lastWarn time.Time
}

// New builds the notifiers of cfg (reading webhook headers files).
func New(cfg Config) (*Dispatcher, error) {
	d := &Dispatcher{cluster: cfg.Cluster, node: cfg.Node, log: cfg.Logger,
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_notify_sent_total",
			Help: "Events this node's notifier delivered (a 2xx answer, a command that exited 0)."}, []string{"notifier"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_notify_failed_total",
			Help: "Events this node's notifier gave up on after its retries."}, []string{"notifier"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lifeboat_notify_dropped_total",
			Help: "Events this node's notifier dropped unsent because its queue was full."}, []string{"notifier"}),
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	for i, nc := range cfg.Notifiers {
		n := &notifier{name: nc.Name, filter: nc.Filter, backoff: nc.Backoff.D(), timeout: nc.Timeout(), max: nc.Queue, wake: make(chan struct{}, 1)}
		if nc.Retries != nil {
			n.retries = *nc.Retries
		}
		switch {
		case nc.Webhook != nil:
			w, err := NewWebhook(*nc.Webhook, cfg.Version)
			if err != nil {
				return nil, fmt.Errorf("notify[%d] %s: %w", i, nc.Name, err)
			}
			n.sender = w
		case nc.Command != nil:
			n.sender = NewCommand(*nc.Command)
		default:
			return nil, fmt.Errorf("notify[%d] %s: neither webhook nor command", i, nc.Name)
		}
		d.ns = append(d.ns, n)
		d.sent.WithLabelValues(n.name)
		d.failed.WithLabelValues(n.name)
		d.dropped.WithLabelValues(n.name)
	}
	return d, nil
}

// Collectors returns the notifier metrics, for the agent's registry.
func (d *Dispatcher) Collectors() []prometheus.Collector {
	return []prometheus.Collector{d.sent, d.failed, d.dropped}
}

// Match reports whether f selects e: its kind and hierarchy are listed
// (an empty list matches all; with hierarchies listed, an event of no
// hierarchy does not match) and its severity is at least f.MinSeverity.
// A kind nobody listed when the filter was written (a newer agent's)
// matches an empty kinds list like any other.
func Match(f config.Filter, e events.Event) bool {
	if len(f.Kinds) > 0 && !slices.Contains(f.Kinds, e.Kind) {
		return false
	}
	if len(f.Hierarchies) > 0 && !slices.Contains(f.Hierarchies, e.Hierarchy) {
		return false
	}
	sev := e.Severity
	if !events.ValidSeverity(sev) {
		sev = events.DefaultSeverity(e)
	}
	return events.SeverityRank(sev) >= events.SeverityRank(f.MinSeverity)
}

// readBatch bounds one read of the log.
const readBatch = 500

// Run notifies the events src records after sequence number from, until
// ctx ends; events still queued then are not sent.
func (d *Dispatcher) Run(ctx context.Context, src Source, from uint64) {
	if len(d.ns) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, n := range d.ns {
		wg.Go(func() { d.work(ctx, n) })
	}
	defer wg.Wait()
	cursor := from
	for {
		woken := src.Wait()
		evs, lost := src.Read(cursor, readBatch)
		if lost > 0 {
			// Recorded faster than this loop reads (thousands at once):
			// they are gone from the ring.
			for _, n := range d.ns {
				d.dropped.WithLabelValues(n.name).Add(float64(lost))
			}
			d.log.Warn("notify: events dropped before they could be queued", "count", lost)
		}
		for _, e := range evs {
			cursor = e.Seq
			for _, n := range d.ns {
				if Match(n.filter, e) {
					d.enqueue(n, e)
				}
			}
		}
		if len(evs) > 0 || lost > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-woken:
		}
	}
}

func (d *Dispatcher) enqueue(n *notifier, e events.Event) {
	n.mu.Lock()
	var drop *events.Event
	if len(n.queue) >= n.max {
		drop = &n.queue[0]
		n.queue = slices.Delete(n.queue, 0, 1)
	}
	n.queue = append(n.queue, e)
	warn := drop != nil && time.Since(n.lastWarn) > 30*time.Second
	if warn {
		n.lastWarn = time.Now()
	}
	n.mu.Unlock()
	if drop != nil {
		d.dropped.WithLabelValues(n.name).Inc()
		if warn {
			d.log.Warn("notify: queue full, oldest event dropped (the receiver is slow or down)", "notifier", n.name, "queue", n.max, "dropped_kind", drop.Kind, "dropped_seq", drop.Seq)
		}
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) pop() (events.Event, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.queue) == 0 {
		return events.Event{}, false
	}
	e := n.queue[0]
	n.queue = slices.Delete(n.queue, 0, 1)
	return e, true
}

// maxBackoff caps the wait between two attempts.
const maxBackoff = time.Minute

func (d *Dispatcher) work(ctx context.Context, n *notifier) {
	for {
		e, ok := n.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-n.wake:
			}
			continue
		}
		m := Message{Cluster: d.cluster, Node: d.node, Event: e}
		body, err := json.Marshal(m)
		if err != nil {
			d.failed.WithLabelValues(n.name).Inc()
			continue
		}
		wait := n.backoff
		for attempt := 0; ; attempt++ {
			actx, cancel := context.WithTimeout(ctx, n.timeout)
			err = n.sender.Send(actx, body, m)
			cancel()
			if err == nil {
				d.sent.WithLabelValues(n.name).Inc()
				break
			}
			if ctx.Err() != nil {
				return
			}
			_, perm := err.(permanent)
			if perm || attempt >= n.retries {
				d.failed.WithLabelValues(n.name).Inc()
				d.log.Warn("notify: giving up on an event", "notifier", n.name, "kind", e.Kind, "seq", e.Seq, "attempts", attempt+1, "error", err)
				break
			}
			d.log.Debug("notify: attempt failed, retrying", "notifier", n.name, "kind", e.Kind, "seq", e.Seq, "attempt", attempt+1, "wait", wait, "error", err)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait = min(2*wait, maxBackoff)
		}
	}
}
