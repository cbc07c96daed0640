package downtime

import (
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/netlab"
)

func TestQuantile(t *testing.T) {
	xs := []float64{900, 100, 500, 300, 700, 200, 800, 400, 600, 1000}
	for _, c := range []struct{ q, want float64 }{{0.5, 500}, {0.95, 1000}, {0.9, 900}, {0, 100}, {1, 1000}} {
		if got := quantile(xs, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing is not 0")
	}
	if xs[0] != 900 {
		t.Error("quantile sorted its input in place")
	}
}

func TestAnsweredBy(t *testing.T) {
	t0 := time.Now()
	s := []netlab.Sample{
		{Seq: 0, Sent: t0, Answered: t0.Add(time.Millisecond), From: "node1"},
		{Seq: 1, Sent: t0.Add(10 * time.Millisecond)},
		{Seq: 2, Sent: t0.Add(20 * time.Millisecond), Answered: t0.Add(21 * time.Millisecond), From: "node2"},
	}
	other := func(h string) bool { return h != "node1" }
	if !answeredBy(s, t0, other) {
		t.Error("node2's answer after t0 not found")
	}
	if answeredBy(s, t0.Add(15*time.Millisecond), func(h string) bool { return h == "node1" }) {
		t.Error("node1's answer to a request sent before the time counted")
	}
	if answeredBy(s, t0.Add(25*time.Millisecond), other) {
		t.Error("an answer to a request sent before the time counted")
	}
}
