package clustertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
)

// LeaseEvent is a change of one node's lease, as the monitor saw it.
type LeaseEvent struct {
	At    time.Time
	Node  string
	Gen   uint64
	Valid bool // the lease of Gen became valid (true) or ran out (false)
	// Killed: the event is the node's end (Valid false), not a lapse.
	Killed bool
}

func (e LeaseEvent) String() string {
	what := "lost"
	switch {
	case e.Killed:
		what = "killed holding"
	case e.Valid:
		what = "holds"
	}
	return fmt.Sprintf("%s %s %s gen %d", e.At.Format("15:04:05.000"), e.Node, what, e.Gen)
}

// Attestation is a fencing attestation: after the revoke of Node's
// generation Gen was applied, a majority of voters attested, at At, that
// the lease of that generation had run out.
type Attestation struct {
	Node string
	Gen  uint64
	At   time.Time
	// By is the leader that asked.
	By string
}

// Violation is a breach of the lease safety invariant: Node's lease of
// Gen lasted until Until, after the majority's attestation at At.
type Violation struct {
	Attestation
	Until time.Time
}

func (v Violation) Error() string {
	return fmt.Sprintf("lease safety: %s held its lease of generation %d until %s, but a majority attested it expired at %s (asked by %s)",
		v.Node, v.Gen, v.Until.Format("15:04:05.000"), v.At.Format("15:04:05.000"), v.By)
}

type genKey struct {
	node string
	gen  uint64
}

type incarnation struct {
	node   string
	leases *cluster.Leases
}

// monitor samples every node's lease (and every earlier incarnation's:
// their last lease matters to the invariant) and checks the invariant.
type monitor struct {
	c *Cluster

	mu         sync.Mutex
	running    map[string]*cluster.Leases
	all        []incarnation
	maxUntil   map[genKey]time.Time
	valid      map[string]genKey
	events     []LeaseEvent
	attests    []Attestation
	violations []Violation
	reported   map[Attestation]bool

	done    chan struct{}
	stopped chan struct{}
}

func newMonitor(c *Cluster) *monitor {
	return &monitor{c: c, running: map[string]*cluster.Leases{}, maxUntil: map[genKey]time.Time{},
		valid: map[string]genKey{}, reported: map[Attestation]bool{},
		done: make(chan struct{}), stopped: make(chan struct{})}
}

func (m *monitor) add(name string, cl *cluster.Cluster) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running[name] = cl.Leases
	m.all = append(m.all, incarnation{name, cl.Leases})
}

func (m *monitor) remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sample()
	if k, ok := m.valid[name]; ok {
		m.events = append(m.events, LeaseEvent{At: time.Now(), Node: name, Gen: k.gen, Killed: true})
		delete(m.valid, name)
	}
	delete(m.running, name)
}

func (m *monitor) run() {
	defer close(m.stopped)
	t := time.NewTicker(m.c.opts.Sample)
	defer t.Stop()
	for {
		m.mu.Lock()
		m.sample()
		m.check()
		m.mu.Unlock()
		select {
		case <-m.done:
			return
		case <-t.C:
		}
	}
}

func (m *monitor) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	close(m.done)
	<-m.stopped
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sample()
	m.check()
}

// sample records each incarnation's lease end and each running node's
// gains and losses. Called with m.mu held.
func (m *monitor) sample() {
	now := time.Now()
	for _, inc := range m.all {
		gen, until := inc.leases.Current()
		if gen == 0 {
			continue
		}
		k := genKey{inc.node, gen}
		if until.After(m.maxUntil[k]) {
			m.maxUntil[k] = until
		}
	}
	for name, l := range m.running {
		gen, until := l.Current()
		prev, had := m.valid[name]
		holds := gen != 0 && now.Before(until)
		switch {
		case holds && (!had || prev.gen != gen):
			if had {
				m.events = append(m.events, LeaseEvent{At: now, Node: name, Gen: prev.gen})
			}
			m.valid[name] = genKey{name, gen}
			m.events = append(m.events, LeaseEvent{At: now, Node: name, Gen: gen, Valid: true})
		case !holds && had:
			delete(m.valid, name)
			m.events = append(m.events, LeaseEvent{At: now, Node: name, Gen: prev.gen})
		}
	}
}

// check reports every attestation that a lease outlived. Called with m.mu
// held.
func (m *monitor) check() {
	for _, a := range m.attests {
		if m.reported[a] {
			continue
		}
		if u := m.maxUntil[genKey{a.Node, a.Gen}]; u.After(a.At) {
			m.reported[a] = true
			v := Violation{Attestation: a, Until: u}
			m.violations = append(m.violations, v)
			m.c.t.Error(v.Error())
		}
	}
}

func (m *monitor) attested(a Attestation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sample()
	m.attests = append(m.attests, a)
	m.check()
}

// LeaseEvents returns every lease gain and loss seen so far, in order.
func (c *Cluster) LeaseEvents() []LeaseEvent {
	c.mon.mu.Lock()
	defer c.mon.mu.Unlock()
	c.mon.sample()
	return append([]LeaseEvent(nil), c.mon.events...)
}

// Lapses returns the losses of a lease (not by a kill) of the named nodes
// (every node if none is named) at or after since.
func (c *Cluster) Lapses(since time.Time, names ...string) []LeaseEvent {
	var out []LeaseEvent
	for _, e := range c.LeaseEvents() {
		if e.Valid || e.Killed || e.At.Before(since) || len(names) > 0 && !contains(names, e.Node) {
			continue
		}
		out = append(out, e)
	}
	return out
}

func contains(names []string, n string) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

// Attestations returns every attestation Fence obtained.
func (c *Cluster) Attestations() []Attestation {
	c.mon.mu.Lock()
	defer c.mon.mu.Unlock()
	return append([]Attestation(nil), c.mon.attests...)
}

// Violations returns the breaches of the lease safety invariant found so
// far (each one has also failed the test).
func (c *Cluster) Violations() []Violation {
	c.mon.mu.Lock()
	defer c.mon.mu.Unlock()
	c.mon.sample()
	c.mon.check()
	return append([]Violation(nil), c.mon.violations...)
}

// LeaseEnd returns the latest end of name's lease of generation gen seen
// in any of its incarnations (zero if it never held it).
func (c *Cluster) LeaseEnd(name string, gen uint64) time.Time {
	c.mon.mu.Lock()
	defer c.mon.mu.Unlock()
	c.mon.sample()
	return c.mon.maxUntil[genKey{name, gen}]
}

// ErrNotExpired is Fence's error when the voters do not (yet) attest that
// the node's lease ran out.
var ErrNotExpired = errors.New("a majority does not attest the lease expired")

// Fence takes name's current lease generation away as the agent's leader
// does before it moves the node's hierarchies: a non-binding check that a
// majority of voters attest the lease ran out (each voter may hold its
// answer up to a lease threshold), the revoke committed through the
// leader, then a majority's attestation that it applied the revoke and
// that the lease ran out. The attestation is recorded, and the monitor
// fails the test if the node's lease of that generation outlives it.
func (c *Cluster) Fence(ctx context.Context, name string) (Attestation, error) {
	c.check(name)
	leader := c.Leader()
	if leader == "" {
		return Attestation{}, errors.New("fence: no leader")
	}
	lc := c.Node(leader)
	if lc == nil {
		return Attestation{}, errors.New("fence: no leader")
	}
	var gen uint64
	lc.FSM.View(func(s *cluster.State) {
		if n := s.Nodes[name]; n != nil {
			gen = n.Gen
		}
	})
	if gen == 0 {
		return Attestation{}, fmt.Errorf("fence: %s has not joined", name)
	}
	// As the agent's leader does (it fences again at its next placement
	// pass): a voter that granted the node at the very moment the
	// attestation reached it answers no at its deadline, which a grant
	// of that age reaches at the same moment.
	req := cluster.AttestRequest{Node: name, Gen: gen, WaitMS: lc.Leases.Threshold().Milliseconds()}
	for {
		ok, why := lc.Leases.Attest(ctx, req)
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return Attestation{}, fmt.Errorf("fence %s generation %d: %w: %v", name, gen, ErrNotExpired, why)
		case <-time.After(20 * time.Millisecond):
		}
	}
	_, idx, err := lc.Apply(cluster.Revoke{Node: name, Gen: gen, Reason: "clustertest: fence"}, 2*time.Second)
	if err != nil {
		return Attestation{}, fmt.Errorf("fence %s: revoke generation %d: %w", name, gen, err)
	}
	for {
		a, err := c.AttestExpired(ctx, leader, name, gen, idx)
		if err == nil {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return Attestation{}, fmt.Errorf("fence %s: %w", name, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// AttestExpired is the binding step of Fence, once: leader asks the voters
// to attest that they applied the revoke at index idx and that name's
// lease of gen ran out (each may hold its answer up to a lease
// threshold). On success the attestation is recorded for the monitor.
func (c *Cluster) AttestExpired(ctx context.Context, leader, name string, gen, idx uint64) (Attestation, error) {
	lc := c.Node(leader)
	if lc == nil {
		return Attestation{}, fmt.Errorf("attest: %s is not running", leader)
	}
	req := cluster.AttestRequest{Node: name, Gen: gen, MinIndex: idx, WaitMS: lc.Leases.Threshold().Milliseconds()}
	if ok, why := lc.Leases.Attest(ctx, req); !ok {
		return Attestation{}, fmt.Errorf("attest %s generation %d after revoke at %d: %w: %v", name, gen, idx, ErrNotExpired, why)
	}
	a := Attestation{Node: name, Gen: gen, At: time.Now(), By: leader}
	c.mon.attested(a)
	c.log.Info("clustertest: attested expiry", "node", name, "gen", gen, "by", leader)
	return a, nil
}
