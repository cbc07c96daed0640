package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"
)

// ---- in-memory lease network ----

type linkMode int

const (
	linkOK linkMode = iota
	// linkCut fails at once without delivering the request.
	linkCut
	// linkHang delivers nothing and blocks until the caller gives up.
	linkHang
	// linkDropReply delivers the request but loses the answer.
	linkDropReply
)

var errUnreachable = errors.New("unreachable")

// lnet routes lease messages between Leases; links are directed (from, to).
type lnet struct {
	mu    sync.Mutex
	peers map[string]*Leases
	modes map[[2]string]linkMode
}

func (n *lnet) mode(from, to string) linkMode {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.modes[[2]string{from, to}]
}

// set sets the mode of both directions between a and b.
func (n *lnet) set(a, b string, m linkMode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.modes[[2]string{a, b}] = m
	n.modes[[2]string{b, a}] = m
}

// setDirected sets the mode of calls from -> to only.
func (n *lnet) setDirected(from, to string, m linkMode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.modes[[2]string{from, to}] = m
}

// isolate sets every link of node to m.
func (n *lnet) isolate(node string, m linkMode) {
	for p := range n.peers {
		if p != node {
			n.set(node, p, m)
		}
	}
}

// call runs fn on peer as seen over the link from -> peer.
func call[T any](ctx context.Context, n *lnet, from, peer string, fn func(*Leases) T) (T, error) {
	var zero T
	p := n.peers[peer]
	if p == nil {
		return zero, errors.New("no such peer " + peer)
	}
	switch n.mode(from, peer) {
	case linkCut:
		return zero, errUnreachable
	case linkHang:
		<-ctx.Done()
		return zero, ctx.Err()
	case linkDropReply:
		fn(p)
		return zero, errors.New("reply lost")
	}
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	return fn(p), nil
}

type ltrans struct {
	net  *lnet
	from string
}

func (t ltrans) Renew(ctx context.Context, peer string, req RenewRequest) (RenewResponse, error) {
	return call(ctx, t.net, t.from, peer, func(l *Leases) RenewResponse { return l.HandleRenew(req) })
}

func (t ltrans) Attest(ctx context.Context, peer string, req AttestRequest) (AttestResponse, error) {
	return call(ctx, t.net, t.from, peer, func(l *Leases) AttestResponse { return l.AwaitAttest(ctx, req) })
}

// ---- a three-voter lease cluster sharing replicated state ----

var voters3 = []string{"n1", "n2", "n3"}

type leaseCluster struct {
	net    *lnet
	fsms   map[string]*FSM
	leases map[string]*Leases

	amu sync.Mutex
	idx uint64
}

// newLeaseCluster builds n1..n3, each with its own FSM. started backdates
// every voter's start (0: started now).
func newLeaseCluster(lease, renew, started time.Duration) *leaseCluster {
	c := &leaseCluster{
		net:    &lnet{peers: map[string]*Leases{}, modes: map[[2]string]linkMode{}},
		fsms:   map[string]*FSM{},
		leases: map[string]*Leases{},
	}
	log := slog.New(slog.DiscardHandler)
	for _, name := range voters3 {
		c.fsms[name] = NewFSM()
	}
	for _, name := range voters3 {
		l := NewLeases(LeaseConfig{
			Node: name, Voters: voters3, Lease: lease, Renew: renew, Holder: true,
			FSM: c.fsms[name], Transport: ltrans{net: c.net, from: name}, Logger: log,
			Rejoin: func(ctx context.Context) (uint64, error) {
				r := c.applyAll(Command{Type: CmdJoin, Node: name})
				return r.Gen, r.Err
			},
		})
		l.started = l.started.Add(-started)
		c.leases[name] = l
		c.net.peers[name] = l
	}
	return c
}

// applyAll commits c on every voter's FSM (as raft would) and returns the
// result and the log index.
func (c *leaseCluster) applyAll(cmd Command) Result {
	r, _ := c.applyAllIdx(cmd)
	return r
}

func (c *leaseCluster) applyAllIdx(cmd Command) (Result, uint64) {
	b, err := json.Marshal(cmd)
	if err != nil {
		panic(err)
	}
	c.amu.Lock()
	defer c.amu.Unlock()
	c.idx++
	var res Result
	for _, name := range voters3 {
		res = c.fsms[name].Apply(&raft.Log{Index: c.idx, Type: raft.LogCommand, Data: b}).(Result)
	}
	return res, c.idx
}

// run starts n's renew loop until the test ends.
func (c *leaseCluster) run(t *testing.T, n string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.leases[n].Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (c *leaseCluster) gen(n string) uint64 {
	var g uint64
	c.fsms[n].View(func(s *State) {
		if ns := s.Nodes[n]; ns != nil {
			g = ns.Gen
		}
	})
	return g
}

// eventually polls cond every millisecond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// acquire starts n1's renew loop and waits for its lease.
func (c *leaseCluster) acquire(t *testing.T) uint64 {
	t.Helper()
	c.run(t, "n1")
	var gen uint64
	eventually(t, 3*time.Second, "n1 to hold a lease", func() bool {
		gen = c.gen("n1")
		return gen != 0 && c.leases["n1"].Valid(gen)
	})
	return gen
}

// setGrant backdates a voter's grant (the only test code that knows how
// grants are stored).
func setGrant(l *Leases, node string, gen uint64, at time.Time) {
	l.gmu.Lock()
	defer l.gmu.Unlock()
	l.grants[grantKey{node, gen}] = at
}

func lastOK(l *Leases) time.Time {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	return l.lastOK
}

const (
	testLease = 60 * time.Millisecond
	testRenew = 10 * time.Millisecond
)

// ---- voter side ----

func TestThresholdAndMajority(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct{ lease, wd, th, wdAge time.Duration }{
		{600 * ms, 200 * ms, 710 * ms, 864 * ms}, // default: + 10% + 50ms; (600-60+200) + 10% + 50ms
		{150 * ms, 75 * ms, 195 * ms, 261 * ms},  // fast: the slack is a fifth of the lease
		{testLease, 30 * ms, 78 * ms, 104*ms + 400*time.Microsecond},
	} {
		l := NewLeases(LeaseConfig{Lease: c.lease})
		if got := l.Threshold(); got != c.th {
			t.Errorf("lease %v: Threshold = %s, want %s", c.lease, got, c.th)
		}
		if got := l.WatchdogAge(c.wd); got != c.wdAge {
			t.Errorf("lease %v: WatchdogAge(%v) = %s, want %s", c.lease, c.wd, got, c.wdAge)
		}
		if l.Threshold() <= c.lease || l.WatchdogAge(c.wd) <= c.lease-l.ActMargin()+c.wd {
			t.Errorf("lease %v: Threshold and WatchdogAge must exceed what they wait for", c.lease)
		}
	}
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3} {
		l := NewLeases(LeaseConfig{Voters: make([]string, n)})
		if got := l.Majority(); got != want {
			t.Errorf("Majority of %d = %d, want %d", n, got, want)
		}
	}
}

func TestHandleRenew(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, 0)
	v := c.leases["n2"]

	// Unknown node: refused, not revoked.
	r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1})
	if r.Granted || r.Revoked || r.Reason == "" {
		t.Fatalf("unknown node: %+v", r)
	}
	c.applyAll(Command{Type: CmdJoin, Node: "n1"})
	c.applyAll(Command{Type: CmdJoin, Node: "n1"}) // gen 2

	// A generation this voter has not applied yet: refused, not revoked.
	r = v.HandleRenew(RenewRequest{Node: "n1", Gen: 3})
	if r.Granted || r.Revoked {
		t.Fatalf("future gen: %+v", r)
	}
	// An older generation: revoked.
	r = v.HandleRenew(RenewRequest{Node: "n1", Gen: 1})
	if r.Granted || !r.Revoked {
		t.Fatalf("older gen: %+v", r)
	}
	if _, ok := v.LastGrant("n1", 1); ok {
		t.Fatal("refused renewals recorded a grant")
	}
	// The current generation: granted and recorded.
	r = v.HandleRenew(RenewRequest{Node: "n1", Gen: 2})
	if !r.Granted || r.Revoked {
		t.Fatalf("current gen: %+v", r)
	}
	if ago, ok := v.LastGrant("n1", 2); !ok || ago < 0 || ago > time.Second {
		t.Fatalf("LastGrant = %s %v", ago, ok)
	}
	if _, ok := v.LastGrant("n1", 1); ok {
		t.Fatal("LastGrant for another generation")
	}
	// Revoked current generation: refused with Revoked.
	c.applyAll(Command{Type: CmdRevoke, Node: "n1", Gen: 2})
	r = v.HandleRenew(RenewRequest{Node: "n1", Gen: 2})
	if r.Granted || !r.Revoked || !strings.Contains(r.Reason, "fenced") {
		t.Fatalf("revoked gen: %+v", r)
	}
	// A rejoin makes the new generation grantable again.
	c.applyAll(Command{Type: CmdJoin, Node: "n1"})
	if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 3}); !r.Granted {
		t.Fatalf("after rejoin: %+v", r)
	}
}

func TestHandleAttest(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, 0)
	c.applyAll(Command{Type: CmdJoin, Node: "n1"})
	v := c.leases["n2"]
	th := v.Threshold()
	req := AttestRequest{Node: "n1", Gen: 1}

	// A voter that has just started may have granted before a restart.
	if r := v.HandleAttest(req); r.Expired || !strings.Contains(r.Reason, "started") {
		t.Fatalf("fresh voter: %+v", r)
	}
	v.started = time.Now().Add(-th - 10*time.Millisecond)

	// Up for longer than Threshold and never granted: expired.
	if r := v.HandleAttest(req); !r.Expired {
		t.Fatalf("no grant: %+v", r)
	}
	// Right after a grant: not expired.
	if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1}); !r.Granted {
		t.Fatal(r.Reason)
	}
	if r := v.HandleAttest(req); r.Expired || !strings.Contains(r.Reason, "granted") {
		t.Fatalf("after grant: %+v", r)
	}
	// Just inside Threshold: not expired; just beyond: expired.
	setGrant(v, "n1", 1, time.Now().Add(-th+20*time.Millisecond))
	if r := v.HandleAttest(req); r.Expired {
		t.Fatalf("grant inside threshold: %+v", r)
	}
	setGrant(v, "n1", 1, time.Now().Add(-th-time.Millisecond))
	if r := v.HandleAttest(req); !r.Expired {
		t.Fatalf("grant beyond threshold: %+v", r)
	}
	// State behind MinIndex: not expired whatever the grants say.
	idx := c.fsms["n2"].Index()
	if r := v.HandleAttest(AttestRequest{Node: "n1", Gen: 1, MinIndex: idx + 1}); r.Expired || !strings.Contains(r.Reason, "index") {
		t.Fatalf("behind MinIndex: %+v", r)
	}
	if r := v.HandleAttest(AttestRequest{Node: "n1", Gen: 1, MinIndex: idx}); !r.Expired {
		t.Fatalf("at MinIndex: %+v", r)
	}
}

// TestHandleAttestRealTime checks the timing of an attestation on the
// clock: a voter says expired only Threshold after it started and after its
// last grant.
func TestHandleAttestRealTime(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, 0)
	c.applyAll(Command{Type: CmdJoin, Node: "n1"})
	v := c.leases["n3"]
	th := v.Threshold()
	req := AttestRequest{Node: "n1", Gen: 1}

	eventually(t, 2*time.Second, "the voter to have been up for Threshold", func() bool {
		return v.HandleAttest(req).Expired
	})
	if up := time.Since(v.started); up < th {
		t.Fatalf("expired after the voter was up only %s < %s", up, th)
	}
	granted := time.Now()
	if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1}); !r.Granted {
		t.Fatal(r.Reason)
	}
	if v.HandleAttest(req).Expired {
		t.Fatal("expired right after a grant")
	}
	eventually(t, 2*time.Second, "the grant to run out", func() bool {
		return v.HandleAttest(req).Expired
	})
	if ago := time.Since(granted); ago < th {
		t.Fatalf("expired %s after the grant, before Threshold %s", ago, th)
	}
}

func TestAttestMajority(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, time.Hour)
	c.applyAll(Command{Type: CmdJoin, Node: "x"})
	n1, n2 := c.leases["n1"], c.leases["n2"]
	c.net.set("n1", "n3", linkCut)
	ctx := context.Background()

	// n1 and n2 never granted: a majority despite n3 being unreachable.
	ok, why := n1.Attest(ctx, AttestRequest{Node: "x", Gen: 1, MinIndex: 0})
	if !ok {
		t.Fatalf("Attest = false %v, want a majority of n1, n2", why)
	}
	for _, w := range why {
		if !strings.HasPrefix(w, "n3: ") {
			t.Fatalf("why = %v, want at most n3's error", why)
		}
	}

	// n2 granted recently: only n1 says expired, n3 is unreachable.
	if r := n2.HandleRenew(RenewRequest{Node: "x", Gen: 1}); !r.Granted {
		t.Fatal(r.Reason)
	}
	ok, why = n1.Attest(ctx, AttestRequest{Node: "x", Gen: 1, MinIndex: 0})
	if ok {
		t.Fatal("Attest = true with only one voter of three saying expired")
	}
	if len(why) != 2 || !strings.Contains(strings.Join(why, ";"), "n2: granted") {
		t.Fatalf("why = %v", why)
	}

	// With n3 reachable again, n1 and n3 make the majority.
	c.net.set("n1", "n3", linkOK)
	if ok, why := n1.Attest(ctx, AttestRequest{Node: "x", Gen: 1, MinIndex: 0}); !ok {
		t.Fatalf("Attest = false %v", why)
	}

	// The local voter's answer counts too: n1 granted, n2 granted.
	if r := n1.HandleRenew(RenewRequest{Node: "x", Gen: 1}); !r.Granted {
		t.Fatal(r.Reason)
	}
	if ok, _ := n1.Attest(ctx, AttestRequest{Node: "x", Gen: 1, MinIndex: 0}); ok {
		t.Fatal("Attest = true with two of three voters having granted")
	}

	// MinIndex beyond every voter's state: nobody attests.
	if ok, _ := n2.Attest(ctx, AttestRequest{Node: "y", Gen: 1, MinIndex: 1000}); ok {
		t.Fatal("Attest = true with every voter behind MinIndex")
	}

	// A voter that answers nothing (a dead machine) is not waited for:
	// the majority of the other two answers at once, long before the
	// caller's deadline.
	c.net.set("n2", "n1", linkHang)
	hctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ok, why = n2.Attest(hctx, AttestRequest{Node: "y", Gen: 1, MinIndex: 0})
	if !ok {
		t.Fatalf("Attest with one hanging voter = false %v", why)
	}
	if hctx.Err() != nil {
		t.Fatal("Attest waited for the hanging voter until the caller's deadline")
	}

	// Two voters hang: no majority is possible, and the caller's context
	// bounds the wait.
	c.net.set("n2", "n3", linkHang)
	sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer scancel()
	if ok, why := n2.Attest(sctx, AttestRequest{Node: "y", Gen: 1, MinIndex: 0}); ok || !strings.Contains(strings.Join(why, ";"), "answered before") {
		t.Fatalf("Attest with two hanging voters = %v %v", ok, why)
	}
}

// AwaitAttest holds its answer until the lease runs out, if that happens
// within the wait, and never says expired earlier than Threshold after the
// last grant.
func TestAwaitAttest(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, time.Hour)
	c.applyAll(Command{Type: CmdJoin, Node: "n1"})
	v := c.leases["n2"]
	th := v.Threshold()
	ctx := context.Background()

	granted := time.Now()
	if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1}); !r.Granted {
		t.Fatal(r.Reason)
	}
	// A short wait: the answer is no, at once.
	if r := v.AwaitAttest(ctx, AttestRequest{Node: "n1", Gen: 1, WaitMS: 1}); r.Expired || !strings.Contains(r.Reason, "granted") {
		t.Fatalf("short wait: %+v", r)
	}
	// A wait of a whole threshold: yes, once the grant is old enough.
	r := v.AwaitAttest(ctx, AttestRequest{Node: "n1", Gen: 1, WaitMS: (th + 100*time.Millisecond).Milliseconds()})
	if !r.Expired {
		t.Fatalf("long wait: %+v", r)
	}
	if ago := time.Since(granted); ago < th {
		t.Fatalf("expired %s after the grant, before Threshold %s", ago, th)
	}

	// Renewals during the wait push the answer back: a holder that keeps
	// renewing is never attested expired, however long the wait.
	lv := newLeaseCluster(300*time.Millisecond, testRenew, time.Hour)
	lv.applyAll(Command{Type: CmdJoin, Node: "n1"})
	v2 := lv.leases["n2"]
	v2.HandleRenew(RenewRequest{Node: "n1", Gen: 1})
	done := make(chan AttestResponse, 1)
	go func() {
		done <- v2.AwaitAttest(ctx, AttestRequest{Node: "n1", Gen: 1, WaitMS: (2 * v2.Threshold()).Milliseconds()})
	}()
	tick := time.NewTicker(testRenew)
	defer tick.Stop()
renew:
	for {
		select {
		case r := <-done:
			if r.Expired {
				t.Fatalf("expired although renewed during the wait: %+v", r)
			}
			break renew
		case <-tick.C:
			v2.HandleRenew(RenewRequest{Node: "n1", Gen: 1})
		}
	}

	// Behind MinIndex: the answer comes when the index is applied.
	setGrant(v, "n1", 1, time.Now().Add(-2*th))
	want := c.fsms["n2"].Index() + 1
	go func() {
		done <- v.AwaitAttest(ctx, AttestRequest{Node: "n1", Gen: 1, MinIndex: want, WaitMS: time.Minute.Milliseconds()})
	}()
	c.applyAll(Command{Type: CmdRevoke, Node: "n1", Gen: 1})
	select {
	case r := <-done:
		if !r.Expired {
			t.Fatalf("after the revoke was applied: %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AwaitAttest did not answer once the index was applied")
	}
}

// ---- holder side ----

func TestRunWitnessReturns(t *testing.T) {
	l := NewLeases(LeaseConfig{Node: "w", Voters: voters3, Lease: testLease, Renew: testRenew, Holder: false})
	done := make(chan struct{})
	go func() {
		l.Run(context.Background())
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run on a witness did not return")
	}
	if g, _ := l.Current(); g != 0 {
		t.Fatalf("witness holds generation %d", g)
	}
}

func TestLeaseAcquireAndLoseWhenCutOff(t *testing.T) {
	for _, m := range []struct {
		name string
		mode linkMode
	}{{"cut", linkCut}, {"hang", linkHang}} {
		t.Run(m.name, func(t *testing.T) {
			c := newLeaseCluster(testLease, testRenew, 0)
			n1 := c.leases["n1"]
			changed := n1.Changed()
			gen := c.acquire(t)
			if gen != 1 {
				t.Fatalf("first join gave generation %d", gen)
			}
			select {
			case <-changed:
			default:
				t.Fatal("Changed did not fire when the lease was acquired")
			}
			granted := 0
			for _, v := range voters3 {
				if _, ok := c.leases[v].LastGrant("n1", gen); ok {
					granted++
				}
			}
			if granted < 2 {
				t.Fatalf("lease valid with grants from only %d voters", granted)
			}
			if n1.Valid(0) || n1.Valid(gen+1) {
				t.Fatal("Valid for a generation the node does not hold")
			}

			lost := n1.Changed()
			c.net.isolate("n1", m.mode)
			cut := time.Now()

			select {
			case <-lost:
			case <-time.After(testLease + 500*time.Millisecond):
				t.Fatal("Changed did not fire as the lease was ending")
			}
			// First: ActMargin before the end, the node stops acting.
			if n1.Acting(gen) {
				t.Fatal("still acting after Changed fired for the lease's end")
			}
			if n1.Valid(gen) {
				ended := n1.Changed()
				if n1.Valid(gen) {
					select {
					case <-ended:
					case <-time.After(testLease + 500*time.Millisecond):
						t.Fatal("Changed did not fire after the lease ran out")
					}
				}
			}
			elapsed := time.Since(cut)
			if n1.Valid(gen) {
				t.Fatal("lease still valid after Changed fired")
			}
			g, until := n1.Current()
			if g != gen {
				t.Fatalf("Current gen = %d", g)
			}
			// No round that started after the cut can have succeeded.
			if until.After(cut.Add(testLease)) {
				t.Fatalf("lease extended to %s after the cut, beyond cut+Lease", until.Sub(cut))
			}
			if elapsed > testLease+200*time.Millisecond {
				t.Fatalf("lease loss noticed %s after the cut", elapsed)
			}

			// Reconnected: the lease comes back at the same generation.
			back := n1.Changed()
			c.net.isolate("n1", linkOK)
			eventually(t, 2*time.Second, "the lease to come back", func() bool { return n1.Valid(gen) })
			select {
			case <-back:
			default:
				t.Fatal("Changed did not fire when the lease came back")
			}
		})
	}
}

func TestLeaseSurvivesOneCutLink(t *testing.T) {
	for _, m := range []struct {
		name string
		mode linkMode
	}{{"cut", linkCut}, {"hang", linkHang}} {
		t.Run(m.name, func(t *testing.T) {
			c := newLeaseCluster(testLease, testRenew, 0)
			n1 := c.leases["n1"]
			gen := c.acquire(t)
			c.net.set("n1", "n3", m.mode)
			_, until0 := n1.Current()
			end := time.Now().Add(4 * testLease)
			for time.Now().Before(end) {
				if !n1.Valid(gen) {
					t.Fatal("lease lost with a majority (n1, n2) still connected")
				}
				time.Sleep(time.Millisecond) // sampling, not synchronisation
			}
			if _, until := n1.Current(); !until.After(until0.Add(2 * testLease)) {
				t.Fatalf("lease not being extended: %s then %s", until0, until)
			}
		})
	}
}

// TestAttestSafety: once the holder is cut off, another voter's Attest
// succeeds only after the holder's lease has run out.
func TestAttestSafety(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, time.Hour)
	n1, n2 := c.leases["n1"], c.leases["n2"]
	gen := c.acquire(t)
	ctx := context.Background()

	if ok, why := n2.Attest(ctx, AttestRequest{Node: "n1", Gen: gen, MinIndex: 0}); ok {
		t.Fatalf("Attest = true while n1 holds its lease (%v)", why)
	}
	c.net.isolate("n1", linkCut)
	cut := time.Now()
	if ok, _ := n2.Attest(ctx, AttestRequest{Node: "n1", Gen: gen, MinIndex: 0}); ok {
		t.Fatal("Attest = true right after the cut")
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := cut.Add(n2.Threshold() + 2*time.Second)
	for {
		ok, _ := n2.Attest(ctx, AttestRequest{Node: "n1", Gen: gen, MinIndex: 0})
		if ok {
			valid := n1.Valid(gen)
			since := time.Since(lastOK(n1))
			if valid {
				t.Fatal("a majority attests n1's lease ran out while n1 still holds it")
			}
			if since <= testLease {
				t.Fatalf("attested %s after n1's last successful round, within Lease %s", since, testLease)
			}
			if sc := time.Since(cut); sc < testLease {
				t.Fatalf("attested %s after the cut", sc)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the majority never attested the lease ran out")
		}
		<-tick.C
	}
}

func TestRevokeAndRejoin(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, 0)
	n1 := c.leases["n1"]
	gen := c.acquire(t)
	c.applyAll(Command{Type: CmdRevoke, Node: "n1", Gen: gen})
	eventually(t, 3*time.Second, "n1 to rejoin with a new lease", func() bool {
		g := c.gen("n1")
		return g > gen && n1.Valid(g)
	})
	if n1.Valid(gen) {
		t.Fatal("the revoked generation is still valid")
	}
	if r := c.leases["n2"].HandleRenew(RenewRequest{Node: "n1", Gen: gen}); r.Granted || !r.Revoked {
		t.Fatalf("old generation renewed: %+v", r)
	}
}

// TestAttestAfterNewerGeneration: a voter's grant to a newer generation
// makes it forget its grant to the older one, so it attests the old lease
// expired although it granted it a moment ago (regression test: grants are
// now kept per generation).
func TestAttestAfterNewerGeneration(t *testing.T) {
	t.Run("voter", func(t *testing.T) {
		c := newLeaseCluster(testLease, testRenew, time.Hour)
		v := c.leases["n2"]
		c.applyAll(Command{Type: CmdJoin, Node: "n1"})
		if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1}); !r.Granted {
			t.Fatal(r.Reason)
		}
		c.applyAll(Command{Type: CmdJoin, Node: "n1"})
		if r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 2}); !r.Granted {
			t.Fatal(r.Reason)
		}
		if r := v.HandleAttest(AttestRequest{Node: "n1", Gen: 1}); r.Expired {
			t.Fatal("voter attests generation 1 expired right after granting it")
		}
	})
	t.Run("holder", func(t *testing.T) {
		// n1 holds its lease through n1 and n2 (n3 cannot reach it). The
		// leader revokes generation 1; n1 rejoins as generation 2 and asks
		// n2, which grants but whose answer is lost. n3 then attests
		// generation 1 with MinIndex at the revoke.
		lease := 400 * time.Millisecond
		c := newLeaseCluster(lease, testRenew, time.Hour)
		n1, n3 := c.leases["n1"], c.leases["n3"]
		c.net.set("n1", "n3", linkCut)
		gen := c.acquire(t)
		c.net.setDirected("n1", "n2", linkDropReply)
		_, idx := c.applyAllIdx(Command{Type: CmdRevoke, Node: "n1", Gen: gen})
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(n3.Threshold() + 2*time.Second)
		for {
			if ok, _ := n3.Attest(context.Background(), AttestRequest{Node: "n1", Gen: gen, MinIndex: idx}); ok {
				if n1.Valid(gen) {
					_, until := n1.Current()
					t.Fatalf("a majority attests generation %d expired while n1 holds it for another %s",
						gen, time.Until(until).Round(time.Millisecond))
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("never attested")
			}
			<-tick.C
		}
	})
}

// Bound: refused without a valid lease of that generation; a bound context
// lives on while the lease is renewed, and ends with ErrLeaseExpired, margin
// before the lease's end, once renewals stop.
// Run in a bubble of fake time (testing/synctest): a loaded machine that
// pauses the test goroutine longer than the lease would otherwise end the
// bound context for the wrong reason.
func TestBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLeases(LeaseConfig{Node: "n1", Voters: voters3, Lease: 200 * time.Millisecond, Renew: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		extend := func(d time.Duration) time.Time {
			l.hmu.Lock()
			defer l.hmu.Unlock()
			l.gen, l.until = 5, time.Now().Add(d)
			return l.until
		}
		const margin = 30 * time.Millisecond
		if _, _, err := l.Bound(t.Context(), 5, margin); !errors.Is(err, ErrLeaseExpired) {
			t.Fatalf("Bound with no lease: %v", err)
		}
		extend(time.Second)
		if _, _, err := l.Bound(t.Context(), 4, margin); !errors.Is(err, ErrLeaseExpired) {
			t.Fatalf("Bound for an older generation: %v", err)
		}
		extend(margin / 2)
		if _, _, err := l.Bound(t.Context(), 5, margin); !errors.Is(err, ErrLeaseExpired) {
			t.Fatalf("Bound inside the margin: %v", err)
		}

		first := extend(100 * time.Millisecond)
		ctx, cancel, err := l.Bound(t.Context(), 5, margin)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		// Renew past the first lease's end: the context lives on.
		var last time.Time
		for time.Now().Before(first.Add(100 * time.Millisecond)) {
			last = extend(100 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Fatalf("bound context ended while the lease was being renewed: %v", context.Cause(ctx))
			case <-time.After(10 * time.Millisecond): // the renew cadence
			}
		}
		<-ctx.Done()
		ended := time.Now()
		if !errors.Is(context.Cause(ctx), ErrLeaseExpired) {
			t.Fatalf("cause %v, want ErrLeaseExpired", context.Cause(ctx))
		}
		if ended.Before(last.Add(-margin)) {
			t.Fatalf("ended %s before the lease's end, more than the margin %s", last.Sub(ended), margin)
		}
		// Once ended, no new action may start under that lease.
		if _, _, err := l.Bound(t.Context(), 5, margin); !errors.Is(err, ErrLeaseExpired) {
			t.Fatalf("Bound after the lease ran out: %v", err)
		}
	})
}

// MinAgeMS raises the age a grant must have, never lowers it.
func TestAttestMinAge(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, time.Hour)
	c.applyAll(Command{Type: CmdJoin, Node: "n1"})
	v := c.leases["n2"]
	th := v.Threshold()
	wd := v.WatchdogAge(300 * time.Millisecond)
	if wd <= th+300*time.Millisecond {
		t.Fatalf("WatchdogAge(300ms) = %v, want more than Threshold %v plus the timeout", wd, th)
	}
	setGrant(v, "n1", 1, time.Now().Add(-th-10*time.Millisecond))
	if r := v.HandleAttest(AttestRequest{Node: "n1", Gen: 1}); !r.Expired {
		t.Fatalf("beyond Threshold without MinAge: %+v", r)
	}
	if r := v.HandleAttest(AttestRequest{Node: "n1", Gen: 1, MinAgeMS: wd.Milliseconds()}); r.Expired || !strings.Contains(r.Reason, "granted") {
		t.Fatalf("beyond Threshold but inside MinAge: %+v", r)
	}
	setGrant(v, "n1", 1, time.Now().Add(-wd-10*time.Millisecond))
	if r := v.HandleAttest(AttestRequest{Node: "n1", Gen: 1, MinAgeMS: wd.Milliseconds()}); !r.Expired {
		t.Fatalf("beyond MinAge: %+v", r)
	}
	// A MinAge below the Threshold does not shorten it.
	setGrant(v, "n1", 1, time.Now().Add(-th/2))
	if r := v.HandleAttest(AttestRequest{Node: "n1", Gen: 1, MinAgeMS: 1}); r.Expired {
		t.Fatalf("MinAge below Threshold shortened it: %+v", r)
	}
}

// A library's warning that repeats is written once per repeatEvery, with
// the count of the lines held back; other lines pass.
func TestSlogWriterHoldsBackRepeats(t *testing.T) {
	var buf strings.Builder
	w := newSlogWriter(slog.New(slog.NewTextHandler(&buf, nil)), "raft")
	line := func(ts, backoff string) string {
		return ts + ` [ERROR] raft: failed to heartbeat to: peer=10.0.0.1:7101 backoff time=` + backoff + ` error="dial tcp 10.0.0.1:7101: i/o timeout"` + "\n"
	}
	for i, b := range []string{"10ms", "20ms", "40ms", "80ms"} {
		if _, err := w.Write([]byte(line(fmt.Sprintf("2026-12-02T06:00:0%dZ", i), b))); err != nil {
			t.Fatal(err)
		}
	}
	w.Write([]byte("2026-12-02T06:00:05Z [WARN]  raft: Election timeout reached, restarting election\n"))
	if n := strings.Count(buf.String(), "failed to heartbeat"); n != 1 {
		t.Fatalf("the repeated error was written %d times, want once:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "Election timeout") {
		t.Fatalf("a different warning was held back:\n%s", buf.String())
	}
	// Once repeatEvery has passed, it is written again with the count.
	w.mu.Lock()
	for _, r := range w.seen {
		r.last = r.last.Add(-repeatEvery)
	}
	w.mu.Unlock()
	w.Write([]byte(line("2026-12-02T06:00:31Z", "160ms")))
	if !strings.Contains(buf.String(), "repeated=3") {
		t.Fatalf("the count of held-back lines is missing:\n%s", buf.String())
	}
}

// slowVoter grants at once, except voter slow, which answers after 20 ms
// unless its call is cancelled first.
type slowVoter struct {
	slow                string
	cancelled, answered chan struct{}
}

func (s *slowVoter) Renew(ctx context.Context, peer string, req RenewRequest) (RenewResponse, error) {
	if peer == s.slow {
		select {
		case <-time.After(20 * time.Millisecond):
			close(s.answered)
		case <-ctx.Done():
			close(s.cancelled)
			return RenewResponse{}, ctx.Err()
		}
	}
	return RenewResponse{Granted: true}, nil
}

func (s *slowVoter) Attest(context.Context, string, AttestRequest) (AttestResponse, error) {
	return AttestResponse{}, errors.New("not used")
}

// A renewal round extends the lease once a majority granted, and leaves
// the calls still out to finish instead of cancelling them: a cancelled
// call closes its HTTP connection, and the next round would pay a new TLS
// handshake.
func TestRoundLeavesSlowVotersAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newLeaseCluster(testLease, testRenew, 0)
		c.applyAll(Command{Type: CmdJoin, Node: "n1"})
		l := c.leases["n1"]
		sv := &slowVoter{slow: "n3", cancelled: make(chan struct{}), answered: make(chan struct{})}
		l.cfg.Transport = sv
		l.startRound(context.Background(), 1)
		time.Sleep(time.Millisecond)
		if !l.Valid(1) {
			t.Fatal("no lease 1 ms after a majority granted")
		}
		select {
		case <-sv.cancelled:
			t.Fatal("the slow voter's call was cancelled once the majority granted")
		case <-sv.answered:
		}
	})
}

// Freshened fires at a grant to a lease this voter had not granted within
// a threshold (a node starting or coming back), not at every renewal.
func TestFreshened(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newLeaseCluster(testLease, testRenew, 0)
		v := c.leases["n2"]
		c.applyAll(Command{Type: CmdJoin, Node: "n1"})
		fired := func(ch <-chan struct{}) bool {
			select {
			case <-ch:
				return true
			default:
				return false
			}
		}
		ch := v.Freshened()
		if !v.HandleRenew(RenewRequest{Node: "n1", Gen: 1}).Granted || !fired(ch) {
			t.Fatal("first grant to n1 did not fire")
		}
		ch = v.Freshened()
		time.Sleep(testRenew)
		v.HandleRenew(RenewRequest{Node: "n1", Gen: 1})
		if fired(ch) {
			t.Fatal("a renewal of a fresh lease fired")
		}
		time.Sleep(v.Threshold())
		v.HandleRenew(RenewRequest{Node: "n1", Gen: 1})
		if !fired(ch) {
			t.Fatal("a grant after a threshold without one did not fire")
		}
	})
}

// A renewal that checked the state just before the revoke was applied,
// and recorded its grant just after an attestation (which required the
// revoke applied) found no grant and said the lease expired, must not be
// answered as granted: the two would not intersect. It is refused, and the
// grant it recorded is taken back.
func TestRenewalRacingARevokeIsRefused(t *testing.T) {
	c := newLeaseCluster(testLease, testRenew, time.Second)
	c.applyAll(Command{Type: CmdJoin, Node: "n1"})
	v := c.leases["n2"]
	var attested AttestResponse
	v.beforeGrant = func() {
		v.beforeGrant = nil
		_, idx := c.applyAllIdx(Command{Type: CmdRevoke, Node: "n1", Gen: 1})
		attested = v.HandleAttest(AttestRequest{Node: "n1", Gen: 1, MinIndex: idx})
	}
	r := v.HandleRenew(RenewRequest{Node: "n1", Gen: 1})
	if !attested.Expired {
		t.Fatalf("attestation between the renewal's check and its grant: %+v, want expired (no grant yet)", attested)
	}
	if r.Granted || !r.Revoked {
		t.Errorf("renewal answered %+v after the voter attested the lease expired: want refused as revoked", r)
	}
	if _, ok := v.LastGrant("n1", 1); ok {
		t.Errorf("the refused renewal's grant is still recorded")
	}
}

// roundClock records when renewals were sent and grants them at once.
type roundClock struct {
	mu   sync.Mutex
	sent []time.Time
}

func (r *roundClock) Renew(context.Context, string, RenewRequest) (RenewResponse, error) {
	return RenewResponse{Granted: true}, nil
}

func (r *roundClock) Attest(context.Context, string, AttestRequest) (AttestResponse, error) {
	return AttestResponse{}, errors.New("not used")
}

func (r *roundClock) SendRenew(peer string, req RenewRequest, timeout time.Duration, done func(RenewResponse, error)) {
	if peer == "n2" {
		r.mu.Lock()
		r.sent = append(r.sent, time.Now())
		r.mu.Unlock()
	}
	done(RenewResponse{Granted: true}, nil)
}

// Rounds start on the beat: on multiples of the renew interval, one per
// interval, never two at once (the first one aside, made at once when
// the node has joined).
func TestRoundsOnTheBeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newLeaseCluster(testLease, testRenew, time.Second)
		l := c.leases["n1"]
		rc := &roundClock{}
		l.cfg.Transport = rc
		time.Sleep(3 * time.Millisecond) // off the beat
		c.run(t, "n1")
		time.Sleep(testRenew * 20)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if len(rc.sent) < 18 || len(rc.sent) > 22 {
			t.Fatalf("%d rounds in 20 renew intervals", len(rc.sent))
		}
		for i, at := range rc.sent[2:] {
			if at.Truncate(testRenew) != at {
				t.Errorf("round %d at %v: not on a multiple of %v", i+2, at.Format("15:04:05.000000"), testRenew)
			}
			if gap := at.Sub(rc.sent[i+1]); gap < testRenew/2 {
				t.Errorf("rounds %d and %d %v apart", i+1, i+2, gap)
			}
		}
	})
}
