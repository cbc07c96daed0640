package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/events"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// receiver is a webhook endpoint that records what it gets.
type receiver struct {
	mu      sync.Mutex
	got     []Message
	headers []http.Header
	times   []time.Time
	arrived chan Message
	answer  func(n int, r *http.Request) int // status for the n-th request (from 0)
}

func newReceiver(t *testing.T, answer func(int, *http.Request) int) (*receiver, *httptest.Server) {
	rc := &receiver{arrived: make(chan Message, 100), answer: answer}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m Message
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("webhook body %q: %v", b, err)
		}
		rc.mu.Lock()
		n := len(rc.got)
		rc.got = append(rc.got, m)
		rc.headers = append(rc.headers, r.Header.Clone())
		rc.times = append(rc.times, time.Now())
		rc.mu.Unlock()
		code := http.StatusOK
		if rc.answer != nil {
			code = rc.answer(n, r)
		}
		w.WriteHeader(code)
		if code == http.StatusOK {
			rc.arrived <- m
		}
	}))
	t.Cleanup(srv.Close)
	return rc, srv
}

func retries(n int) *int { return &n }

func start(t *testing.T, ncs ...config.Notifier) (*Dispatcher, *events.Log, context.CancelFunc) {
	t.Helper()
	d, err := New(Config{Cluster: "prod", Node: "n1", Version: "test", Notifiers: ncs})
	if err != nil {
		t.Fatal(err)
	}
	log, _ := events.Open("n1", "", 1000)
	log.Add(events.Event{Kind: "failover", Severity: events.Warning, Message: "before the dispatcher: not sent"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	from := log.Last()
	go func() {
		defer close(done)
		d.Run(ctx, log, from)
	}()
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return d, log, stop
}

func webhook(url string) config.Notifier {
	return config.Notifier{Name: "hook", Webhook: &config.Webhook{URL: url, Timeout: spec.Duration(2 * time.Second)},
		Retries: retries(0), Backoff: spec.Duration(10 * time.Millisecond), Queue: 100, Filter: config.Filter{MinSeverity: "warning"}}
}

func await[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
	var zero T
	return zero
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The webhook gets the event with the cluster and node, the headers of the
// headers file; the filter holds back what it does not select.
func TestWebhookDeliversFiltered(t *testing.T) {
	rc, srv := newReceiver(t, nil)
	hf := filepath.Join(t.TempDir(), "headers")
	if err := os.WriteFile(hf, []byte("Authorization: Bearer tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nc := webhook(srv.URL)
	nc.Webhook.HeadersFile = hf
	nc.Filter = config.Filter{Kinds: []string{"failover", "maintenance"}, Hierarchies: []string{"web"}, MinSeverity: "warning"}
	d, log, _ := start(t, nc)
	log.Add(events.Event{Kind: "failover", Hierarchy: "web", Message: "info: below min_severity"})
	log.Add(events.Event{Kind: "failover", Hierarchy: "db", Severity: events.Critical, Message: "other hierarchy"})
	log.Add(events.Event{Kind: "action", Hierarchy: "web", Error: "other kind"})
	log.Add(events.Event{Kind: "quorum", Severity: events.Critical, Message: "no hierarchy"})
	want := log.Add(events.Event{Kind: "failover", Hierarchy: "web", Action: "assign", Severity: events.Warning, Message: "failed over"})
	log.Add(events.Event{Kind: "maintenance", Hierarchy: "web", Error: "a kind this package never heard of, with an error: warning"})
	m := await(t, rc.arrived, "the failover")
	if m.Cluster != "prod" || m.Node != "n1" || m.Event.Seq != want.Seq || m.Event.Message != "failed over" || m.Event.Severity != events.Warning {
		t.Fatalf("webhook got %+v, want the failover from prod/n1", m)
	}
	m = await(t, rc.arrived, "the maintenance event")
	if m.Event.Kind != "maintenance" {
		t.Fatalf("second message %+v", m)
	}
	rc.mu.Lock()
	h := rc.headers[0]
	n := len(rc.got)
	rc.mu.Unlock()
	if h.Get("Authorization") != "Bearer tok-123" || h.Get("Content-Type") != "application/json" || !strings.HasPrefix(h.Get("User-Agent"), "lifeboat/") {
		t.Errorf("headers %v", h)
	}
	// One more, then nothing else came in between.
	log.Add(events.Event{Kind: "failover", Hierarchy: "web", Severity: events.Critical, Message: "last"})
	if m := await(t, rc.arrived, "the last event"); m.Event.Message != "last" {
		t.Fatalf("got %+v", m)
	}
	if n != 2 {
		t.Fatalf("receiver got %d messages before the last, want 2 (filtered out: the rest)", n)
	}
	eventually(t, "sent_total 3", func() bool { return value(d.sent.WithLabelValues("hook")) == 3 })
}

// A 5xx is retried with a doubling wait; a 4xx is not.
func TestWebhookRetryBackoff(t *testing.T) {
	rc, srv := newReceiver(t, func(n int, r *http.Request) int {
		switch n {
		case 0, 1:
			return http.StatusServiceUnavailable
		case 3:
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	nc := webhook(srv.URL)
	nc.Retries, nc.Backoff = retries(3), spec.Duration(100*time.Millisecond)
	d, log, _ := start(t, nc)
	log.Add(events.Event{Kind: "failover", Severity: events.Warning, Message: "one"})
	await(t, rc.arrived, "the event after two failures")
	rc.mu.Lock()
	times := append([]time.Time(nil), rc.times...)
	rc.mu.Unlock()
	if len(times) != 3 {
		t.Fatalf("%d attempts, want 3", len(times))
	}
	if g1, g2 := times[1].Sub(times[0]), times[2].Sub(times[1]); g1 < 100*time.Millisecond || g2 < 200*time.Millisecond {
		t.Errorf("waits between attempts %v, %v: want at least 100ms then 200ms", g1, g2)
	}
	log.Add(events.Event{Kind: "failover", Severity: events.Warning, Message: "refused"})
	eventually(t, "the refused event counted failed", func() bool { return value(d.failed.WithLabelValues("hook")) == 1 })
	rc.mu.Lock()
	n := len(rc.got)
	rc.mu.Unlock()
	if n != 4 {
		t.Errorf("%d requests, want 4: a 400 is not retried", n)
	}
	if v := value(d.sent.WithLabelValues("hook")); v != 1 {
		t.Errorf("sent_total = %v, want 1", v)
	}
}

// A receiver that hangs costs its own queue: recording never waits, the
// attempt times out, the queue keeps the newest events and counts the
// dropped ones.
func TestHangingReceiverBoundedQueue(t *testing.T) {
	release := make(chan struct{})
	first := make(chan struct{})
	rc, srv := newReceiver(t, func(n int, r *http.Request) int {
		if n == 0 {
			close(first)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	defer close(release)
	nc := webhook(srv.URL)
	nc.Queue = 3
	nc.Webhook.Timeout = spec.Duration(300 * time.Millisecond)
	d, log, _ := start(t, nc)
	log.Add(events.Event{Kind: "failover", Severity: events.Warning, Message: "1"})
	await(t, first, "the first request")
	began := time.Now()
	for i := 2; i <= 10; i++ {
		log.Add(events.Event{Kind: "failover", Severity: events.Warning, Message: string(rune('0' + i))})
	}
	if took := time.Since(began); took > 100*time.Millisecond {
		t.Errorf("recording 9 events with a hung receiver took %v", took)
	}
	var got []string
	for len(got) < 3 {
		got = append(got, await(t, rc.arrived, "the queued events").Event.Message)
	}
	if strings.Join(got, ",") != "8,9,:" {
		t.Errorf("delivered %v after the hang, want the newest three 8,9,:", got)
	}
	if v := value(d.dropped.WithLabelValues("hook")); v != 6 {
		t.Errorf("dropped_total = %v, want 6", v)
	}
	if v := value(d.failed.WithLabelValues("hook")); v != 1 {
		t.Errorf("failed_total = %v, want 1 (the attempt that timed out)", v)
	}
}

// A command gets the event on stdin and in its environment; one that
// outlives its timeout is killed and counted failed.
func TestCommandNotifier(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := filepath.Join(dir, "notify.sh")
	body := "#!/bin/sh\nset -e\n{ cat; echo; echo \"$LIFEBOAT_CLUSTER $LIFEBOAT_NODE $LIFEBOAT_EVENT_KIND $LIFEBOAT_EVENT_SEVERITY $LIFEBOAT_EVENT_HIERARCHY\"; } > " + out + ".tmp\nmv " + out + ".tmp " + out + "\n"
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	slow := filepath.Join(dir, "slow.sh")
	if err := os.WriteFile(slow, []byte("#!/bin/sh\nsleep 30 &\nwait\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := config.Notifier{Name: "cmd", Command: &config.Command{Argv: []string{script}, Timeout: spec.Duration(5 * time.Second)},
		Retries: retries(0), Backoff: spec.Duration(10 * time.Millisecond), Queue: 10, Filter: config.Filter{MinSeverity: "critical"}}
	hang := config.Notifier{Name: "slow", Command: &config.Command{Argv: []string{slow}, Timeout: spec.Duration(200 * time.Millisecond)},
		Retries: retries(0), Backoff: spec.Duration(10 * time.Millisecond), Queue: 10, Filter: config.Filter{MinSeverity: "critical"}}
	d, log, _ := start(t, cmd, hang)
	log.Add(events.Event{Kind: "quorum", Action: "lost", Severity: events.Critical, Hierarchy: "web", Message: "quorum lost"})
	var b []byte
	eventually(t, "the command's output", func() bool {
		var err error
		b, err = os.ReadFile(out)
		return err == nil
	})
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var m Message
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil || m.Event.Message != "quorum lost" || m.Cluster != "prod" {
		t.Fatalf("stdin %q: %v", lines[0], err)
	}
	if lines[len(lines)-1] != "prod n1 quorum critical web" {
		t.Errorf("environment seen %q", lines[len(lines)-1])
	}
	start := time.Now()
	eventually(t, "the slow command counted failed", func() bool { return value(d.failed.WithLabelValues("slow")) == 1 })
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the slow command took %v to give up on, timeout 200ms", took)
	}
	if v := value(d.sent.WithLabelValues("cmd")); v != 1 {
		t.Errorf("cmd sent_total = %v, want 1", v)
	}
}

func TestNewRefusesReadableHeaders(t *testing.T) {
	hf := filepath.Join(t.TempDir(), "headers")
	if err := os.WriteFile(hf, []byte("Authorization: Bearer tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(hf, 0o644); err != nil {
		t.Fatal(err)
	}
	nc := webhook("http://127.0.0.1:1/")
	nc.Webhook.HeadersFile = hf
	_, err := New(Config{Notifiers: []config.Notifier{nc}})
	if err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), "tok-123") {
		t.Fatalf("New with a world-readable headers file: %v", err)
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		f    config.Filter
		e    events.Event
		want bool
	}{
		{config.Filter{MinSeverity: "info"}, events.Event{Kind: "anything"}, true},
		{config.Filter{MinSeverity: "warning"}, events.Event{Kind: "anything"}, false},
		{config.Filter{MinSeverity: "warning"}, events.Event{Kind: "anything", Error: "x"}, true}, // no severity recorded: from the error
		{config.Filter{MinSeverity: "critical"}, events.Event{Kind: "doctor", Severity: events.Critical}, true},
		{config.Filter{Kinds: []string{"node"}, MinSeverity: "info"}, events.Event{Kind: "nodes"}, false},
		{config.Filter{Hierarchies: []string{"web"}, MinSeverity: "info"}, events.Event{Kind: "quorum"}, false},
		{config.Filter{Hierarchies: []string{"web"}, MinSeverity: "info"}, events.Event{Kind: "failover", Hierarchy: "web"}, true},
	} {
		if got := Match(tc.f, tc.e); got != tc.want {
			t.Errorf("Match(%+v, %+v) = %v, want %v", tc.f, tc.e, got, tc.want)
		}
	}
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
