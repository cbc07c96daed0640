package downtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/netlab"
)

// ChaosOptions configure a randomized fault run.
type ChaosOptions struct {
	Binary string
	Dir    string
	// Duration of fault injection (default 2m).
	Duration time.Duration
	// Seed makes the fault sequence reproducible (0: random).
	Seed uint64
	// Profile is lifeboat's timing profile (default "default").
	Profile string
	// Recovery bounds how long the service may stay down once a quorum
	// is healthy and connected (default 10s).
	Recovery time.Duration
	Progress func(string)
}

// ChaosFault is one injected fault.
type ChaosFault struct {
	At    time.Duration `json:"at"` // since the start
	Kind  string        `json:"kind"`
	Nodes []string      `json:"nodes"`
	For   time.Duration `json:"for"`
	Owner bool          `json:"owner"` // it hit the host serving at the time
	// Alone: no other fault was active when it began.
	Alone bool `json:"alone"`
	// OutageMS is the client's outage that began with this fault (0:
	// none).
	OutageMS float64 `json:"outage_ms"`
}

// ChaosReport is what a chaos run saw.
type ChaosReport struct {
	Seed   uint64       `json:"seed"`
	Faults []ChaosFault `json:"faults"`
	// Violations of the invariants, in plain words (empty: none).
	Violations []string `json:"violations"`
	// DoubleOwner counts 10 ms instants with two connected holders.
	DoubleOwner int `json:"double_owner"`
	// StaleAnswers counts answers from a host after another host had
	// started answering and while that host still held the VIP.
	StaleAnswers int `json:"stale_answers"`
	// LateAnswers counts answers of the old host that came after the new
	// host's first answer to requests sent before it: no violation.
	LateAnswers int `json:"late_answers,omitempty"`
	// OutagesMS are the client-observed outages, in order.
	OutagesMS []float64 `json:"outages_ms"`
	Requests  int       `json:"requests"`
	Answered  int       `json:"answered"`
	// Evidence, when an invariant broke at a known instant: around it,
	// every answer and change of holders seen from outside, and each
	// agent's log lines (what the agents did; issues and CI logs carry
	// only this, not the run's directory).
	Evidence []string `json:"evidence,omitempty"`
}

// Chaos faults: kill (with link down, then a restart), freeze, link
// down, and a cut between two nodes.
const (
	chaosKill   = "kill"
	chaosFreeze = "freeze"
	chaosLink   = "link-down"
	chaosCut    = "cut"
)

// holderSample is who held the VIP at one instant.
type holderSample struct {
	at      time.Time
	holders []string // connected hosts holding it
}

// Chaos runs lifeboat (ip kit, fake watchdogs) on a netlab network and, for
// Duration, injects faults at random — at most two at once, so that now and
// then a node is cut off while another is frozen — while a client probes
// the VIP every 10 ms and a sampler records every 10 ms which connected
// hosts hold it. It then heals everything and checks the invariants: never
// two connected holders; no answer from an old owner after a new one
// answered while the new one still held the VIP; the service back within
// Recovery whenever at most one node was impaired, and at the end; every
// node agreeing on the owner; no agent exited unless killed.
func Chaos(ctx context.Context, o ChaosOptions) (*ChaosReport, error) {
	if o.Duration <= 0 {
		o.Duration = 2 * time.Minute
	}
	if o.Recovery <= 0 {
		o.Recovery = 10 * time.Second
	}
	if o.Profile == "" {
		o.Profile = "default"
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	b, closeBench, err := newBench(Options{Binary: o.Binary, Dir: o.Dir, Interval: 10 * time.Millisecond, Progress: o.Progress}, "lifeboat-chaos-")
	if err != nil {
		return nil, err
	}
	defer closeBench()
	lab := b.lab
	s := newLifeboat(b, o.Profile, KitIP, lanAddr(lab, 100))
	p, err := lab.StartProber(netlab.Client, fmt.Sprintf("%s:%d", s.vip(), b.port), netlab.ProbeOptions{})
	if err != nil {
		return nil, err
	}
	b.prober = p
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	err = s.start(sctx)
	cancel()
	defer s.stop()
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("start the cluster: %w", err)
	}
	c := &chaos{b: b, s: s, o: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)),
		rep: &ChaosReport{Seed: o.Seed}, active: map[string]*activeFault{}, start: time.Now()}
	stopHolders := c.sampleHolders()
	c.run(ctx)
	c.healAll(ctx)
	sctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	settleErr := s.settle(sctx)
	cancel()
	holders := stopHolders()
	samples := p.Stop()
	b.prober = nil
	if settleErr != nil {
		c.violate("no agreement after healing every fault: %v", settleErr)
	} else if err := c.agree(ctx); err != nil {
		c.violate("%v", err)
	}
	c.check(samples, holders)
	if !c.brokeAt.IsZero() {
		c.rep.Evidence = c.evidence(samples, holders)
	}
	for _, n := range lab.Nodes() {
		if !c.s.cluster.Node(n).Running() {
			c.violate("the agent on %s is not running at the end although every fault was healed (see its log)", n)
		}
	}
	return c.rep, ctx.Err()
}

type activeFault struct {
	kind  string
	nodes []string
	pid   int
	until time.Time
	index int // in rep.Faults
}

type chaos struct {
	b     *bench
	s     *lifeboatSetup
	o     ChaosOptions
	rng   *rand.Rand
	rep   *ChaosReport
	start time.Time

	mu     sync.Mutex
	active map[string]*activeFault // by node (a cut is filed under both)
	killed map[string]bool         // agents the run killed and has not restarted
	// windows in which at most one node was impaired: the service must
	// come back within Recovery after their start
	faultAt []time.Time
	brokeAt time.Time // the instant of the first violation with one
}

func (c *chaos) violate(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rep.Violations = append(c.rep.Violations, fmt.Sprintf(format, args...))
}

func (c *chaos) run(ctx context.Context) {
	nodes := c.b.lab.Nodes()
	c.killed = map[string]bool{}
	end := c.start.Add(c.o.Duration)
	for time.Now().Before(end) && ctx.Err() == nil {
		c.expire(ctx)
		if len(c.impaired()) < 2 && c.rng.IntN(3) > 0 {
			c.inject(ctx, nodes)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(100+c.rng.IntN(900)) * time.Millisecond):
		}
	}
}

// impaired lists the nodes under a fault now.
func (c *chaos) impaired() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.active {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (c *chaos) inject(ctx context.Context, nodes []string) {
	kinds := []string{chaosKill, chaosFreeze, chaosLink, chaosCut}
	kind := kinds[c.rng.IntN(len(kinds))]
	free := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return slices.Contains(c.impaired(), n) })
	if len(free) == 0 || (kind == chaosCut && len(free) < 2) {
		return
	}
	// Most faults hit the host serving: that is where they matter.
	owner := c.servingHost()
	target := free[c.rng.IntN(len(free))]
	if slices.Contains(free, owner) && c.rng.IntN(3) > 0 {
		target = owner
	}
	f := &activeFault{kind: kind, nodes: []string{target}, until: time.Now().Add(time.Duration(200+c.rng.IntN(2800)) * time.Millisecond)}
	var err error
	switch kind {
	case chaosKill:
		f.pid = c.s.pid(target)
		if f.pid == 0 {
			return
		}
		c.b.linkDown(target)
		err = c.b.signalGroup(f.pid, syscall.SIGKILL, c.b.lab.Kill)
		c.mu.Lock()
		c.killed[target] = true
		c.mu.Unlock()
	case chaosFreeze:
		f.pid = c.s.pid(target)
		if f.pid == 0 {
			return
		}
		err = c.b.signalGroup(f.pid, syscall.SIGSTOP, c.b.lab.Freeze)
	case chaosLink:
		c.b.linkDown(target)
	case chaosCut:
		other := free[c.rng.IntN(len(free))]
		for other == target {
			other = free[c.rng.IntN(len(free))]
		}
		f.nodes = append(f.nodes, other)
		err = c.b.lab.Cut(target, other)
	}
	if err != nil {
		c.violate("inject %s on %v: %v", kind, f.nodes, err)
		return
	}
	c.mu.Lock()
	f.index = len(c.rep.Faults)
	c.rep.Faults = append(c.rep.Faults, ChaosFault{At: time.Since(c.start).Round(time.Millisecond), Kind: kind, Nodes: f.nodes,
		For: time.Until(f.until).Round(time.Millisecond), Owner: target == owner, Alone: len(c.active) == 0})
	for _, n := range f.nodes {
		c.active[n] = f
	}
	if len(c.active) <= 1 {
		c.faultAt = append(c.faultAt, time.Now())
	}
	c.mu.Unlock()
	if c.o.Progress != nil {
		c.o.Progress(fmt.Sprintf("%6s %-9s %s for %s%s", time.Since(c.start).Round(time.Millisecond), kind, strings.Join(f.nodes, "-"),
			time.Until(f.until).Round(time.Millisecond), map[bool]string{true: " (the serving host)"}[target == owner]))
	}
	_ = ctx
}

// servingHost is the host that answered the client last.
func (c *chaos) servingHost() string {
	s := c.b.prober.Samples()
	for i := len(s) - 1; i >= 0 && i > len(s)-50; i-- {
		if s[i].OK() {
			return s[i].From
		}
	}
	return ""
}

// expire heals the faults whose time is up. A node its watchdog reset
// outside any fault (a starved watchdog) is recorded as a fault of its own
// and brought back a second later.
func (c *chaos) expire(ctx context.Context) {
	c.mu.Lock()
	for _, n := range c.b.lab.Nodes() {
		if c.active[n] == nil && c.s.wasReset(n) {
			f := &activeFault{kind: "watchdog-reset", nodes: []string{n}, until: time.Now().Add(time.Second), index: len(c.rep.Faults)}
			c.rep.Faults = append(c.rep.Faults, ChaosFault{At: time.Since(c.start).Round(time.Millisecond), Kind: f.kind, Nodes: f.nodes, For: time.Second})
			c.active[n] = f
		}
	}
	var due []*activeFault
	for _, f := range c.active {
		if time.Now().After(f.until) && !slices.Contains(due, f) {
			due = append(due, f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		c.heal(ctx, f)
	}
}

func (c *chaos) heal(ctx context.Context, f *activeFault) {
	n := f.nodes[0]
	var err error
	fired := c.s.fired(n)
	switch {
	case f.kind == chaosKill || fired:
		// A reset machine comes back with a clean kernel.
		c.b.clearVIPOn(n, c.s.vip())
		c.b.linkUp(n)
		err = c.s.restart(ctx, n)
		c.mu.Lock()
		c.killed[n] = false
		c.mu.Unlock()
		if f.kind == chaosCut {
			err = errors.Join(err, c.b.lab.Heal(f.nodes[0], f.nodes[1]))
		}
	case f.kind == chaosFreeze:
		err = c.b.signalGroup(f.pid, syscall.SIGCONT, c.b.lab.Thaw)
	case f.kind == chaosLink:
		c.b.linkUp(n)
	case f.kind == chaosCut:
		err = c.b.lab.Heal(f.nodes[0], f.nodes[1])
	}
	if err != nil {
		c.violate("heal %s on %v: %v", f.kind, f.nodes, err)
	}
	c.mu.Lock()
	for _, x := range f.nodes {
		if c.active[x] == f {
			delete(c.active, x)
		}
	}
	c.mu.Unlock()
}

func (c *chaos) healAll(ctx context.Context) {
	c.mu.Lock()
	var all []*activeFault
	for _, f := range c.active {
		if !slices.Contains(all, f) {
			all = append(all, f)
		}
	}
	c.mu.Unlock()
	for _, f := range all {
		c.heal(ctx, f)
	}
	// A watchdog may have reset a node whose fault was healed already.
	for _, n := range c.b.lab.Nodes() {
		if c.s.fired(n) {
			c.b.clearVIPOn(n, c.s.vip())
			c.b.linkUp(n)
			if err := c.s.restart(ctx, n); err != nil {
				c.violate("restart %s after its watchdog reset it: %v", n, err)
			}
		}
	}
}

// sampleHolders records every 10 ms which connected hosts hold the VIP.
func (c *chaos) sampleHolders() func() []holderSample {
	stop := make(chan struct{})
	done := make(chan []holderSample)
	go func() {
		var out []holderSample
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- out
				return
			case <-t.C:
			}
			hs := holderSample{at: time.Now()}
			for _, h := range c.b.lab.Nodes() {
				if !c.b.connected(h) {
					continue
				}
				if held, err := c.b.lab.HoldsAddr(h, c.s.vip()); err == nil && held && c.b.connected(h) {
					hs.holders = append(hs.holders, h)
				}
			}
			out = append(out, hs)
		}
	}()
	return func() []holderSample {
		close(stop)
		return <-done
	}
}

// check evaluates the invariants over the whole run.
func (c *chaos) check(samples []netlab.Sample, holders []holderSample) {
	r := c.rep
	r.Requests = len(samples)
	for _, s := range samples {
		if s.OK() {
			r.Answered++
		}
	}
	// Never two connected holders.
	var firstDouble *holderSample
	for i := range holders {
		if len(holders[i].holders) > 1 {
			r.DoubleOwner++
			if firstDouble == nil {
				firstDouble = &holders[i]
			}
		}
	}
	if firstDouble != nil {
		c.brokeAt = firstDouble.at
		c.violate("%d instants with two connected hosts holding the VIP, first at %s: %v", r.DoubleOwner,
			firstDouble.at.Sub(c.start).Round(time.Millisecond), firstDouble.holders)
	}
	// No answer from an old owner after a new one answered while the new
	// one still held the VIP.
	held := func(h string, from, to time.Time) bool {
		i := sort.Search(len(holders), func(i int) bool { return !holders[i].at.Before(from) })
		for ; i < len(holders) && !holders[i].at.After(to); i++ {
			if !slices.Contains(holders[i].holders, h) {
				return false
			}
		}
		return true
	}
	var ok []netlab.Sample
	for _, s := range samples {
		if s.OK() {
			ok = append(ok, s)
		}
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i].Answered.Before(ok[j].Answered) })
	for i := 1; i < len(ok); i++ {
		prev, cur := ok[i-1], ok[i]
		if cur.From == prev.From {
			continue
		}
		// cur is the first answer of a new host: look for a later answer
		// of prev's host to a request sent after cur's answer came, while
		// cur's host held the VIP throughout: prev's host then held the
		// VIP when the request reached it, after cur's host had it. An
		// answer to a request sent before proves nothing: prev's host may
		// have answered before the move and the answer been held up (a
		// reply waits for the client's address to be resolved again after
		// a link flap).
		for j := i + 1; j < len(ok); j++ {
			if ok[j].From == cur.From {
				continue
			}
			if ok[j].From == prev.From && !ok[j].Sent.After(cur.Answered) {
				r.LateAnswers++
				continue
			}
			if ok[j].From == prev.From && held(cur.From, cur.Answered, ok[j].Answered) {
				r.StaleAnswers++
				if r.StaleAnswers == 1 {
					c.brokeAt = cur.Answered
					c.violate("%s answered at %s after %s had taken over at %s and still held the VIP", prev.From,
						ok[j].Answered.Sub(c.start).Round(time.Millisecond), cur.From, cur.Answered.Sub(c.start).Round(time.Millisecond))
				}
			}
			break
		}
	}
	// Outages, attributed to the fault that started them; each must end
	// within Recovery when it began with at most one node impaired.
	for _, g := range netlab.Gaps(samples, 50*time.Millisecond) {
		r.OutagesMS = append(r.OutagesMS, float64(g.Duration.Microseconds())/1000)
		for i := len(r.Faults) - 1; i >= 0; i-- {
			at := c.start.Add(r.Faults[i].At)
			if !at.After(g.LastBefore.Answered) {
				if r.Faults[i].OutageMS == 0 {
					r.Faults[i].OutageMS = float64(g.Duration.Microseconds()) / 1000
				}
				break
			}
		}
	}
	for _, g := range netlab.Gaps(samples, c.o.Recovery) {
		if at, ok := c.unrecovered(g.LastBefore.Answered, g.FirstAfter.Answered); ok {
			c.violate("the service was down %s from %s, not back %s after %s, when at most one node was impaired and no other fault came for as long",
				g.Duration.Round(time.Millisecond), g.LastBefore.Answered.Sub(c.start).Round(time.Millisecond), c.o.Recovery, at.Sub(c.start).Round(time.Millisecond))
		}
	}
}

// unrecovered reports whether an outage from down to back outlasted a
// window of one impaired node by more than Recovery: a window begins
// when a fault is injected while no other is active and ends with the
// next fault injected. The recovery is owed from the window's start, or
// from the outage's if it began later, and only while no other fault
// comes before it is due (a second fault may take the quorum away). It
// returns the start of the first such window.
func (c *chaos) unrecovered(down, back time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var starts []time.Time
	for _, f := range c.rep.Faults {
		starts = append(starts, c.start.Add(f.At))
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	for _, at := range c.faultAt {
		next := time.Time{} // no later fault
		for _, s := range starts {
			// (A fault's own start, rounded to the millisecond, may
			// fall just after the moment its window was recorded.)
			if s.After(at.Add(time.Millisecond)) {
				next = s
				break
			}
		}
		from := at
		if down.After(from) {
			from = down
		}
		if !next.IsZero() && !next.After(from) {
			continue // the window ended before the outage
		}
		due := from.Add(c.o.Recovery)
		if back.After(due) && (next.IsZero() || next.After(due)) {
			return at, true
		}
	}
	return time.Time{}, false
}

// agree checks that every node reports the same owner and epoch, and that
// the owner is the one host holding the VIP.
func (c *chaos) agree(ctx context.Context) error {
	var owner string
	var epoch uint64
	for _, n := range c.s.cluster.Nodes {
		st, err := c.s.cluster.Status(ctx, n.Name)
		if err != nil {
			return fmt.Errorf("status of %s at the end: %w", n.Name, err)
		}
		for _, h := range st.Hierarchies {
			if h.Name != "vip" {
				continue
			}
			if owner == "" {
				owner, epoch = h.Owner, h.Epoch
			} else if h.Owner != owner || h.Epoch != epoch {
				return fmt.Errorf("nodes disagree at the end: %s sees the vip on %s at epoch %d, another on %s at epoch %d", n.Name, h.Owner, h.Epoch, owner, epoch)
			}
		}
	}
	return nil
}

// clearVIPOn removes vip from one host.
func (b *bench) clearVIPOn(h, vip string) {
	for _, l := range []string{"/32", "/24"} {
		_ = b.lab.DelAddr(h, vip+l)
	}
}

// evidenceBefore and evidenceAfter bound the window around the first
// violation that evidence reports; evidenceLines caps each agent's lines.
const (
	evidenceBefore = 1500 * time.Millisecond
	evidenceAfter  = 300 * time.Millisecond
	evidenceLines  = 80
)

// evidence tells what was seen around c.brokeAt: the answers (when the
// answering host changed), the holders (when they changed), and each
// agent's log lines in the window, request logs left out.
func (c *chaos) evidence(samples []netlab.Sample, holders []holderSample) []string {
	from, to := c.brokeAt.Add(-evidenceBefore), c.brokeAt.Add(evidenceAfter)
	at := func(t time.Time) string { return t.Sub(c.start).Round(time.Millisecond).String() }
	type entry struct {
		t    time.Time
		line string
	}
	var all []entry
	last := "-"
	for _, s := range samples {
		if !s.OK() || s.Answered.Before(from) || s.Answered.After(to) || s.From == last {
			continue
		}
		last = s.From
		all = append(all, entry{s.Answered, fmt.Sprintf("answered by %s (sent at %s)", s.From, at(s.Sent))})
	}
	prev := "?"
	for _, h := range holders {
		if h.at.Before(from) || h.at.After(to) {
			continue
		}
		if now := strings.Join(h.holders, ","); now != prev {
			all = append(all, entry{h.at, fmt.Sprintf("holders: [%s]", now)})
			prev = now
		}
	}
	for _, n := range c.b.lab.Nodes() {
		node := c.s.cluster.Node(n)
		if node == nil {
			continue
		}
		data, err := os.ReadFile(node.Log)
		if err != nil {
			all = append(all, entry{from, fmt.Sprintf("%s: log: %v", n, err)})
			continue
		}
		var lines []entry
		for _, line := range strings.Split(string(data), "\n") {
			ts, ok := strings.CutPrefix(line, "time=")
			if !ok || strings.Contains(line, `msg="api request"`) {
				continue
			}
			ts, rest, _ := strings.Cut(ts, " ")
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || t.Before(from) || t.After(to) {
				continue
			}
			lines = append(lines, entry{t, n + ": " + rest})
		}
		if len(lines) > evidenceLines {
			lines = slices.Delete(lines, evidenceLines/2, len(lines)-evidenceLines/2)
		}
		all = append(all, lines...)
	}
	slices.SortStableFunc(all, func(a, b entry) int { return a.t.Compare(b.t) })
	out := make([]string, len(all))
	for i, e := range all {
		out[i] = at(e.t) + " " + e.line
	}
	return out
}
