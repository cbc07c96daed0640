// Package downtime measures what a client sees when the node serving a
// virtual IP fails: a client in its own network namespace sends a request
// to the VIP every 10 ms to a responder on every node that answers with its
// node's name; the outage is the time from the last answer before a fault
// to the first answer after it. It runs lifeboat (default and fast timing;
// the ip kit on the LAN, and the ec2 kit in route-table mode through a
// router the AWS simulator programs) and keepalived (defaults and tuned)
// on the same network (internal/netlab), interleaved run by run, under
// three faults: the owner's daemon killed with its link down (a dead
// machine), its daemon frozen for a while (SIGSTOP), and its link cut. It
// also counts the instants at which two hosts still connected to the
// network hold the VIP at once. `lifeboat bench downtime` prints the
// result.
package downtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/netlab"
)

// Faults.
const (
	// FaultKill kills the owner's daemon and drops its link at once: a
	// machine that lost power answers nothing.
	FaultKill = "kill"
	// FaultStop freezes the owner's daemon (SIGSTOP) for Options.StopFor.
	FaultStop = "stop"
	// FaultCut drops the owner's link; its daemon keeps running.
	FaultCut = "cut"
)

// Tools, profiles and kits.
const (
	ToolLifeboat   = "lifeboat"
	ToolKeepalived = "keepalived"
	KitIP          = "ip"
	KitEC2         = "ec2"
)

// Options configure a measurement.
type Options struct {
	// Runs per (tool, profile, kit, fault) (default 5).
	Runs int
	// Binary is the lifeboat executable; it must have the hidden
	// `bench responder ADDR NAME` command.
	Binary string
	// Dir holds the lab's logs and the clusters' data (default: a
	// temporary directory, removed at the end).
	Dir string
	// Faults, Kits and Tools to run (default: all). Profiles names the
	// lifeboat timing profiles ("default", "fast") and keepalived's
	// ("default", "tuned"); default all.
	Faults, Kits, Tools, Profiles []string
	// StopFor is how long FaultStop freezes the daemon (default 5s).
	StopFor time.Duration
	// Interval between the client's requests (default 10ms).
	Interval time.Duration
	// Progress, if set, gets one line per measured fault.
	Progress func(string)
}

// Row is the result for one (tool, profile, kit, fault).
type Row struct {
	Tool    string `json:"tool"`
	Profile string `json:"profile"`
	Kit     string `json:"kit"`
	Fault   string `json:"fault"`
	Runs    int    `json:"runs"`
	// MedianMS and P95MS of the client-observed outages.
	MedianMS float64 `json:"median_ms"`
	P95MS    float64 `json:"p95_ms"`
	// DoubleOwner counts the sampled instants (one every 10 ms) at which
	// two hosts still connected to the network both held the VIP; a host
	// cut off by its watchdog does not count.
	DoubleOwner int `json:"double_owner"`
	// WatchdogFired counts the runs in which the owner's watchdog reset it.
	WatchdogFired int       `json:"watchdog_fired,omitempty"`
	OutagesMS     []float64 `json:"outages_ms"`
	// Errors: runs that could not be measured, and why.
	Errors []string `json:"errors,omitempty"`
}

// setup is one system under test on the lab: a tool with a profile and a
// kit, started for a round of faults and stopped after it.
type setup interface {
	name() (tool, profile, kit string)
	// vip is the address the client probes and the hosts hold.
	vip() string
	start(ctx context.Context) error
	// pid of the HA daemon on node.
	pid(node string) int
	// restart the daemon on node (after a kill or a watchdog reset).
	restart(ctx context.Context, node string) error
	// fired reports and clears whether node's watchdog reset it.
	fired(node string) bool
	// settle waits until every node is back and one host serves.
	settle(ctx context.Context) error
	stop()
}

// bench holds what every setup shares: the lab, the client's prober and
// which hosts are cut off.
type bench struct {
	opts   Options
	lab    *netlab.Lab
	dir    string
	port   int
	prober *netlab.Prober

	mu   sync.Mutex
	down map[string]bool // link down: the host does not count as an owner
}

const probePort = 7999

// newBench builds the lab (three nodes, a client and a router, in
// opts.Dir or a new temporary directory named after prefix) and starts a
// responder on every node. The returned function removes all of it.
func newBench(opts Options, prefix string) (*bench, func(), error) {
	dir := opts.Dir
	cleanDir := func() {}
	if dir == "" {
		d, err := os.MkdirTemp("", prefix)
		if err != nil {
			return nil, nil, err
		}
		dir, cleanDir = d, func() { os.RemoveAll(d) }
	}
	lab, err := netlab.New(netlab.Options{Nodes: 3, Router: true, Dir: filepath.Join(dir, "lab")})
	if err != nil {
		cleanDir()
		return nil, nil, err
	}
	done := func() {
		lab.Close()
		cleanDir()
	}
	b := &bench{opts: opts, lab: lab, dir: dir, port: probePort, down: map[string]bool{}}
	for _, n := range lab.Nodes() {
		if _, err := lab.StartResponder(n, fmt.Sprintf("0.0.0.0:%d", b.port), opts.Binary, "bench", "responder"); err != nil {
			done()
			return nil, nil, err
		}
	}
	return b, done, nil
}

// Run measures every combination Options selects and returns one row each,
// in a stable order.
func Run(ctx context.Context, opts Options) ([]Row, error) {
	if opts.Runs <= 0 {
		opts.Runs = 5
	}
	if opts.StopFor <= 0 {
		opts.StopFor = 5 * time.Second
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Millisecond
	}
	if opts.Binary == "" {
		return nil, errors.New("downtime: no lifeboat binary")
	}
	def := func(v *[]string, all ...string) error {
		if len(*v) == 0 {
			*v = all
			return nil
		}
		for _, x := range *v {
			if !slices.Contains(all, x) {
				return fmt.Errorf("downtime: unknown %q (use %s)", x, strings.Join(all, ", "))
			}
		}
		return nil
	}
	for _, e := range []error{
		def(&opts.Faults, FaultKill, FaultStop, FaultCut),
		def(&opts.Kits, KitIP, KitEC2),
		def(&opts.Tools, ToolLifeboat, ToolKeepalived),
		def(&opts.Profiles, "default", "fast", "tuned"),
	} {
		if e != nil {
			return nil, e
		}
	}
	b, closeBench, err := newBench(opts, "lifeboat-downtime-")
	if err != nil {
		return nil, err
	}
	defer closeBench()
	setups := b.setups()
	if len(setups) == 0 {
		return nil, errors.New("downtime: nothing selected to measure")
	}
	rows := map[string]*Row{}
	var order []string
	for run := 1; run <= opts.Runs && ctx.Err() == nil; run++ {
		for _, s := range setups {
			tool, profile, kit := s.name()
			if err := b.round(ctx, run, s, func(fault string) *Row {
				k := tool + "/" + profile + "/" + kit + "/" + fault
				if rows[k] == nil {
					rows[k] = &Row{Tool: tool, Profile: profile, Kit: kit, Fault: fault}
					order = append(order, k)
				}
				return rows[k]
			}); err != nil {
				return nil, err
			}
		}
	}
	var out []Row
	for _, k := range order {
		r := rows[k]
		r.Runs = len(r.OutagesMS)
		r.MedianMS, r.P95MS = quantile(r.OutagesMS, 0.5), quantile(r.OutagesMS, 0.95)
		out = append(out, *r)
	}
	return out, ctx.Err()
}

// setups lists the selected systems, interleaved: lifeboat and keepalived
// alternate.
func (b *bench) setups() []setup {
	var out []setup
	has := func(list []string, v string) bool { return slices.Contains(list, v) }
	lanVIP := lanAddr(b.lab, 100)
	routed := b.lab.VIP(1)
	type pair struct{ lb, ka string }
	for _, p := range []pair{{"default", "default"}, {"fast", "tuned"}} {
		if has(b.opts.Tools, ToolLifeboat) && has(b.opts.Profiles, p.lb) {
			if has(b.opts.Kits, KitIP) {
				out = append(out, newLifeboat(b, p.lb, KitIP, lanVIP))
			}
		}
		if has(b.opts.Tools, ToolKeepalived) && has(b.opts.Profiles, p.ka) && has(b.opts.Kits, KitIP) {
			out = append(out, newKeepalived(b, p.ka, lanVIP))
		}
		if has(b.opts.Tools, ToolLifeboat) && has(b.opts.Profiles, p.lb) && has(b.opts.Kits, KitEC2) {
			out = append(out, newLifeboat(b, p.lb, KitEC2, routed))
		}
	}
	return out
}

// lanAddr is the node LAN's address ending in last.
func lanAddr(l *netlab.Lab, last int) string {
	ip := l.IP(l.Nodes()[0])
	return ip[:strings.LastIndex(ip, ".")+1] + fmt.Sprint(last)
}

// round starts s, measures each fault once and stops s.
func (b *bench) round(ctx context.Context, run int, s setup, row func(string) *Row) error {
	tool, profile, kit := s.name()
	b.setDownAll(false)
	p, err := b.lab.StartProber(netlab.Client, fmt.Sprintf("%s:%d", s.vip(), b.port), netlab.ProbeOptions{Interval: b.opts.Interval})
	if err != nil {
		return err
	}
	b.prober = p
	defer func() {
		p.Stop()
		b.prober = nil
	}()
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	err = s.start(sctx)
	cancel()
	defer s.stop()
	if err != nil {
		for _, f := range b.opts.Faults {
			r := row(f)
			r.Errors = append(r.Errors, fmt.Sprintf("run %d: start: %v", run, err))
		}
		b.progress(fmt.Sprintf("run %d %s/%s/%s: start failed: %v", run, tool, profile, kit, err))
		return nil
	}
	for _, f := range b.opts.Faults {
		r := row(f)
		ms, doubles, fired, err := b.fault(ctx, s, f)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.DoubleOwner += doubles
		if fired {
			r.WatchdogFired++
		}
		if err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("run %d: %v", run, err))
			b.progress(fmt.Sprintf("run %d %s/%s/%s %s: %v", run, tool, profile, kit, f, err))
			return nil // the setup is in an unknown state: on to the next
		}
		r.OutagesMS = append(r.OutagesMS, ms)
		b.progress(fmt.Sprintf("run %d %s/%s/%s %s: outage %.0f ms, double owner %d, watchdog fired %v", run, tool, profile, kit, f, ms, doubles, fired))
	}
	return nil
}

func (b *bench) progress(s string) {
	if b.opts.Progress != nil {
		b.opts.Progress(s)
	}
}

// stableOwner waits until the last ten answers come from one host.
func (b *bench) stableOwner(ctx context.Context) (string, error) {
	var owner string
	err := b.prober.Wait(ctx, func(s []netlab.Sample) bool {
		if len(s) < 12 {
			return false
		}
		tail := s[len(s)-11 : len(s)-1] // the newest may be in flight
		for _, x := range tail {
			if !x.OK() || x.From != tail[0].From {
				return false
			}
		}
		owner = tail[0].From
		return true
	})
	if err != nil {
		return "", fmt.Errorf("no host serves %s steadily: %w", "the VIP", err)
	}
	return owner, nil
}

// fault injects one fault on the current owner, measures the outage and
// the double ownership, and heals.
func (b *bench) fault(ctx context.Context, s setup, kind string) (ms float64, doubles int, fired bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	owner, err := b.stableOwner(wctx)
	if err != nil {
		return 0, 0, false, err
	}
	pid := s.pid(owner)
	if pid == 0 {
		return 0, 0, false, fmt.Errorf("%s serves but runs no daemon", owner)
	}
	sampler := b.sampleOwners(s.vip())
	defer func() {
		if d := sampler(); err == nil {
			doubles = d
		}
	}()
	var at time.Time
	switch kind {
	case FaultKill:
		b.linkDown(owner)
		err = b.signalGroup(pid, syscall.SIGKILL, b.lab.Kill)
		at = time.Now()
	case FaultStop:
		err = b.signalGroup(pid, syscall.SIGSTOP, b.lab.Freeze)
		at = time.Now()
	case FaultCut:
		b.linkDown(owner)
		at = time.Now()
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("%s %s: %w", kind, owner, err)
	}
	if err := b.prober.Wait(wctx, func(smp []netlab.Sample) bool {
		return answeredBy(smp, at, func(h string) bool { return h != owner })
	}); err != nil {
		return 0, 0, false, fmt.Errorf("%s %s: no other host answered within 30s: %w", kind, owner, err)
	}
	// A watchdog fires at the latest its timeout after the owner stopped
	// feeding it, which is before the others could take over: by now, or
	// half a second on, it has fired if it is going to.
	wait := 500 * time.Millisecond
	if kind == FaultStop {
		wait = max(wait, time.Until(at.Add(b.opts.StopFor)))
	}
	select {
	case <-ctx.Done():
		return 0, 0, false, ctx.Err()
	case <-time.After(wait):
	}
	fired = s.fired(owner)
	// Heal: a machine that was reset (power loss, watchdog) comes back
	// with a clean kernel: its address is gone.
	switch {
	case kind == FaultKill || fired:
		if err := b.lab.DelAddr(owner, s.vip()+"/32"); err != nil {
			_ = b.lab.DelAddr(owner, s.vip()+"/24")
		}
		b.linkUp(owner)
		err = s.restart(ctx, owner)
	case kind == FaultStop:
		err = b.signalGroup(pid, syscall.SIGCONT, b.lab.Thaw)
	case kind == FaultCut:
		b.linkUp(owner)
	}
	if err != nil {
		return 0, 0, fired, fmt.Errorf("heal %s after %s: %w", owner, kind, err)
	}
	sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
	err = s.settle(sctx)
	scancel()
	if err != nil {
		return 0, 0, fired, fmt.Errorf("settle after %s of %s: %w", kind, owner, err)
	}
	// Measured once settled and a request sent since has been answered:
	// the answer that ends the outage may have been in flight a moment
	// ago, and the last request before the measurement may have been lost
	// (keepalived, thawed after a stop, fights over the address for a
	// moment: found by CI as "no answer after the fault").
	settled := time.Now()
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	_ = b.prober.Wait(actx, func(smp []netlab.Sample) bool {
		return answeredBy(smp, settled, func(string) bool { return true })
	})
	acancel()
	o, oerr := netlab.OutageAt(b.prober.Samples(), at)
	if oerr != nil {
		return 0, 0, fired, fmt.Errorf("outage after %s of %s: %w", kind, owner, oerr)
	}
	return float64(o.Duration.Microseconds()) / 1000, 0, fired, nil
}

// answeredBy reports whether a request sent at or after t was answered by
// a host ok accepts.
func answeredBy(s []netlab.Sample, t time.Time, ok func(string) bool) bool {
	for i := sort.Search(len(s), func(i int) bool { return !s[i].Sent.Before(t) }); i < len(s); i++ {
		if s[i].OK() && ok(s[i].From) {
			return true
		}
	}
	return false
}

// signalGroup signals the daemon's whole process group (keepalived's VRRP
// work is done by a child process), then lets the lab signal and wait for
// the leader.
func (b *bench) signalGroup(pid int, sig syscall.Signal, wait func(int) error) error {
	_ = syscall.Kill(-pid, sig)
	return wait(pid)
}

func (b *bench) linkDown(h string) {
	_ = b.lab.LinkDown(h)
	b.mu.Lock()
	b.down[h] = true
	b.mu.Unlock()
}

func (b *bench) linkUp(h string) {
	b.mu.Lock()
	b.down[h] = false
	b.mu.Unlock()
	_ = b.lab.LinkUp(h)
}

func (b *bench) setDownAll(v bool) {
	for _, n := range b.lab.Nodes() {
		if v {
			b.linkDown(n)
		} else {
			b.linkUp(n)
		}
	}
}

// connected reports whether h's link is up.
func (b *bench) connected(h string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.down[h]
}

// sampleOwners looks every 10 ms at which connected hosts hold vip until
// the returned function is called, which returns the number of instants
// at which two or more did.
func (b *bench) sampleOwners(vip string) func() int {
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			case <-t.C:
			}
			holders := 0
			for _, h := range b.lab.Nodes() {
				if !b.connected(h) {
					continue
				}
				held, err := b.lab.HoldsAddr(h, vip)
				// the host may have been cut off while we looked
				if err == nil && held && b.connected(h) {
					holders++
				}
			}
			if holders > 1 {
				n++
			}
		}
	}()
	return func() int {
		close(stop)
		return <-done
	}
}

// quantile of xs by the nearest-rank method (0 for none).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}
