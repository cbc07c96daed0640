package netlab

import (
	"context"
	"testing"
	"time"
)

// The prober measures the outage between a responder killed on the node
// holding a virtual IP and another node taking the address over.
func TestProberMeasuresOutage(t *testing.T) {
	l := newLab(t, Options{Nodes: 2})
	argv := responderArgv(t)
	r1, err := l.StartResponder("node1", "0.0.0.0:"+port, argv...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartResponder("node2", "0.0.0.0:"+port, argv...); err != nil {
		t.Fatal(err)
	}
	cidr := l.VIPPrefix(1)
	if err := l.AddAddr("node1", cidr); err != nil {
		t.Fatal(err)
	}
	const interval = 10 * time.Millisecond
	p, err := l.StartProber(Client, l.VIP(1)+":"+port, ProbeOptions{Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := p.WaitAnswer(ctx, "node1", time.Now()); err != nil {
		t.Fatal(err)
	}

	if err := l.Kill(r1.PID); err != nil {
		t.Fatal(err)
	}
	fault := time.Now()
	// Let the outage last 20 requests before the address moves.
	const lostAfterFault = 20
	if err := p.Wait(ctx, func(s []Sample) bool {
		return len(s) >= lostAfterFault && !s[len(s)-lostAfterFault].Sent.Before(fault)
	}); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	if err := l.DelAddr("node1", cidr); err != nil {
		t.Fatal(err)
	}
	if err := l.AddAddr("node2", cidr); err != nil {
		t.Fatal(err)
	}
	first, err := p.WaitAnswer(ctx, "node2", moved)
	if err != nil {
		t.Fatal(err)
	}
	samples := p.Stop()

	o, err := OutageAt(samples, fault)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v (fault to move %v, move to first answer %v)", o, moved.Sub(fault).Round(time.Millisecond), first.Answered.Sub(moved).Round(time.Millisecond))
	if o.Before() != "node1" || o.After() != "node2" || o.FirstAfter.Seq != first.Seq {
		t.Fatalf("outage from %s to %s ending at request %d, want node1 to node2 ending at %d", o.Before(), o.After(), o.FirstAfter.Seq, first.Seq)
	}
	if o.Lost < lostAfterFault {
		t.Fatalf("%d requests lost, want at least the %d sent after the fault", o.Lost, lostAfterFault)
	}
	// 20 requests a tick apart span at least 18 intervals after the fault.
	if o.Duration < 18*interval || o.Duration > moved.Sub(fault)+time.Second {
		t.Fatalf("outage %v, want between %v and %v", o.Duration, 18*interval, moved.Sub(fault)+time.Second)
	}
	// The gratuitous ARP sends the client to node2 within a few requests.
	if d := first.Answered.Sub(moved); d > 500*time.Millisecond {
		t.Fatalf("node2 answered %v after taking the address", d)
	}
	if g := Gaps(samples, 15*interval); len(g) != 1 || g[0] != o {
		t.Fatalf("gaps %v, want just %v", g, o)
	}
}
