package agenttest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

// streamReader collects one stream's messages.
type streamReader struct {
	msgs chan api.StreamMessage
	done chan error
}

func openStream(t *testing.T, c *agenttest.Cluster, ctx context.Context, node, lastID string) *streamReader {
	t.Helper()
	body, err := c.Stream(ctx, node, lastID)
	if err != nil {
		t.Fatalf("open the event stream of %s: %v", node, err)
	}
	r := &streamReader{msgs: make(chan api.StreamMessage, 10000), done: make(chan error, 1)}
	go func() {
		defer body.Close()
		r.done <- api.ReadStream(body, func(m api.StreamMessage) error {
			r.msgs <- m
			return nil
		})
	}()
	return r
}

// next returns the next message for which want holds, checking every
// event on the way with seen; it fails after timeout.
func (r *streamReader) next(t *testing.T, timeout time.Duration, what string, want func(api.StreamMessage, events.Event) bool, seen func(events.Event)) api.StreamMessage {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-r.msgs:
			var e events.Event
			if m.Type == api.StreamEvent {
				if err := json.Unmarshal(m.Data, &e); err != nil {
					t.Fatalf("event data %q: %v", m.Data, err)
				}
				seen(e)
			}
			if want(m, e) {
				return m
			}
		case err := <-r.done:
			t.Fatalf("waiting for %s: the stream ended: %v", what, err)
		case <-deadline:
			t.Fatalf("waiting for %s: nothing after %s", what, timeout)
		}
	}
}

// TestEventStream: the stream carries every node's events as they happen,
// reports a node that goes down and comes back, resumes it from its cursor
// (each node's sequence numbers arrive with no gap and no repeat), and a
// client that reconnects with the last id gets only what came after.
func TestEventStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := agenttest.MakeCluster(t, 3, agenttest.Setup{})
		c.Eventually(10*time.Second, "form", func() (bool, string) {
			st, err := c.Status("node1")
			return err == nil && st.Leader != "", ""
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := openStream(t, c, ctx, "node1", "")
		last := map[string]uint64{}
		seen := func(e events.Event) {
			if prev, ok := last[e.Node]; ok && e.Seq != prev+1 {
				t.Errorf("%s's events arrived as #%d after #%d: want each once, in order", e.Node, e.Seq, prev)
			}
			last[e.Node] = e.Seq
		}
		started := func(node string) func(api.StreamMessage, events.Event) bool {
			return func(m api.StreamMessage, e events.Event) bool {
				return m.Type == api.StreamEvent && e.Node == node && e.Kind == "cluster" && e.Action == "start"
			}
		}
		s.next(t, 10*time.Second, "node2's start from its history", started("node2"), seen)

		c.Kill("node3")
		m := s.next(t, 10*time.Second, "node3 reported unreachable", func(m api.StreamMessage, _ events.Event) bool {
			return m.Type == api.StreamUnreachable && notice(t, m).Node == "node3"
		}, seen)
		if notice(t, m).Error == "" {
			t.Error("the unreachable notice says no why")
		}
		before := last["node3"]
		restarted := time.Now()
		c.Start("node3")
		s.next(t, 20*time.Second, "node3 reachable again", func(m api.StreamMessage, _ events.Event) bool {
			return m.Type == api.StreamReachable && notice(t, m).Node == "node3"
		}, seen)
		m = s.next(t, 20*time.Second, "node3's new start", func(m api.StreamMessage, e events.Event) bool {
			return started("node3")(m, e) && !e.Time.Before(restarted)
		}, seen)
		if last["node3"] <= before {
			t.Fatalf("node3's restart event #%d, not after #%d", last["node3"], before)
		}
		cursors := parseID(t, m.ID)
		if cursors["node3"] != last["node3"] || cursors["node1"] != last["node1"] {
			t.Fatalf("id %q does not match the events delivered %v", m.ID, last)
		}

		// Reconnect with the last id: the next events of each node follow
		// on from it.
		cancel()
		ctx2, cancel2 := context.WithCancel(context.Background())
		defer cancel2()
		s2 := openStream(t, c, ctx2, "node2", m.ID)
		if err := c.Apply(c.Service("svc", c.Nodes())); err != nil {
			t.Fatal(err)
		}
		s2.next(t, 20*time.Second, "svc restored after the resume", func(m api.StreamMessage, e events.Event) bool {
			return m.Type == api.StreamEvent && e.Hierarchy == "svc" && e.Kind == "action" && e.Phase == "end"
		}, func(e events.Event) {
			if e.Seq <= cursors[e.Node] {
				t.Errorf("resumed stream repeated %s#%d (cursor %d)", e.Node, e.Seq, cursors[e.Node])
			}
			seen(e)
		})
	})
}

func notice(t *testing.T, m api.StreamMessage) api.StreamNotice {
	t.Helper()
	var n api.StreamNotice
	if err := json.Unmarshal(m.Data, &n); err != nil {
		t.Fatalf("%s data %q: %v", m.Type, m.Data, err)
	}
	return n
}

func parseID(t *testing.T, id string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, part := range splitComma(id) {
		var n string
		var seq uint64
		i := len(part) - 1
		for i >= 0 && part[i] != ':' {
			i--
		}
		n = part[:max(i, 0)]
		if _, err := fmt.Sscan(part[i+1:], &seq); err != nil || i < 0 {
			t.Fatalf("id %q: bad part %q", id, part)
		}
		out[n] = seq
	}
	return out
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
