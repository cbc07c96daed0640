package downtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/watchdog"
)

// lifeboatSetup runs three lifeboat agents, one in each node's namespace,
// each with a fake watchdog whose firing resets the node (its link is cut
// and its agent killed), and one hierarchy: the VIP on eth0 (ip kit), or,
// for the ec2 kit, the VIP as a /32 on eth0 under a VPC route that the
// simulator mirrors into the router.
type lifeboatSetup struct {
	b       *bench
	profile string
	kit     string
	addr    string

	seq     int
	cluster *demo.Cluster
	sim     *demo.SimEnv
	dogs    map[string]*watchdog.Fake

	mu    sync.Mutex
	reset map[string]bool
}

func newLifeboat(b *bench, profile, kit, vip string) *lifeboatSetup {
	return &lifeboatSetup{b: b, profile: profile, kit: kit, addr: vip}
}

func (s *lifeboatSetup) name() (string, string, string) { return ToolLifeboat, s.profile, s.kit }
func (s *lifeboatSetup) vip() string                    { return s.addr }

// watchdogTimeout: the shortest the config accepts for the profile (two
// renew intervals and a fifth of the lease): 60 ms fast, 300 ms default.
func (s *lifeboatSetup) watchdogTimeout() time.Duration {
	t := config.ProfileTiming(s.profile)
	return max(2*t.RenewInterval.D(), t.Lease.D()/5)
}

func (s *lifeboatSetup) start(ctx context.Context) error {
	s.seq++
	dir := filepath.Join(s.b.dir, fmt.Sprintf("lifeboat-%s-%s-%d", s.profile, s.kit, s.seq))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	lab := s.b.lab
	nodes := lab.Nodes()
	s.reset = map[string]bool{}
	s.dogs = map[string]*watchdog.Fake{}
	for _, n := range nodes {
		node := n
		d, err := watchdog.NewFake(filepath.Join(dir, node+".watchdog"), s.watchdogTimeout(), func() { s.fire(node) })
		if err != nil {
			return err
		}
		s.dogs[node] = d
	}
	h := spec.Hierarchy{Name: "vip", Nodes: nodes, Switchback: spec.SwitchbackIntelligent,
		MonitorInterval: spec.Duration(time.Second)}
	prefix := s.addr + "/24"
	if s.kit == KitEC2 {
		prefix = s.addr + "/32"
	}
	h.Resources = append(h.Resources, spec.Resource{Name: "vip-addr", Type: "ip", Params: map[string]string{
		"address": prefix, "interface": "eth0"}})
	if s.kit == KitEC2 {
		var err error
		if s.sim, err = demo.StartSimInRouter(lab, nodes); err != nil {
			return err
		}
		st := s.sim.World.State()
		h.Resources = append(h.Resources, spec.Resource{Name: "vip-route", Type: "ec2", DependsOn: []string{"vip-addr"},
			Timeout: spec.Duration(10 * time.Second), Params: map[string]string{
				"mode": "route", "cidr": prefix, "route_tables": st.RouteTables[0].ID}})
		if err := s.sim.GrantLeastPrivilege(nodes, []spec.Hierarchy{h}); err != nil {
			return err
		}
	}
	extra := ""
	if s.profile == "fast" {
		extra = "timing:\n  profile: fast\n"
	}
	c, err := demo.Start(demo.Options{Binary: s.b.opts.Binary, Dir: dir, Nodes: len(nodes), Witness: false,
		IPs: lab.NodeIPs(), Wrap: lab.Wrap, ExtraConfig: extra,
		NodeConfig: func(node string) string {
			cfg := fmt.Sprintf("watchdog:\n  device: %s\n  timeout: %s\n", s.dogs[node].Path, s.watchdogTimeout())
			if s.sim != nil {
				cfg += s.sim.NodeConfig(node)
			}
			return cfg
		}})
	if err != nil {
		return err
	}
	s.cluster = c
	if err := c.WaitReady(ctx); err != nil {
		return err
	}
	if err := c.Apply(ctx, api.ApplyRequest{Hierarchies: []spec.Hierarchy{h}}); err != nil {
		return fmt.Errorf("apply the vip hierarchy: %w", err)
	}
	return s.settle(ctx)
}

// fire is a fake watchdog running out: the machine is reset.
func (s *lifeboatSetup) fire(node string) {
	s.b.linkDown(node)
	if n := s.cluster.Node(node); n != nil && n.Running() {
		_ = s.b.lab.Kill(n.PID)
	}
	s.mu.Lock()
	s.reset[node] = true
	s.mu.Unlock()
}

// wasReset reports, without clearing it, whether node's watchdog reset it.
func (s *lifeboatSetup) wasReset(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reset[node]
}

func (s *lifeboatSetup) fired(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.reset[node]
	s.reset[node] = false
	return f
}

func (s *lifeboatSetup) pid(node string) int {
	if n := s.cluster.Node(node); n != nil && n.Running() {
		return n.PID
	}
	return 0
}

func (s *lifeboatSetup) restart(ctx context.Context, node string) error {
	n := s.cluster.Node(node)
	if n == nil {
		return fmt.Errorf("no node %s", node)
	}
	if n.Running() {
		_ = s.b.lab.Kill(n.PID)
	}
	if err := demo.Wait(ctx, node+"'s agent to exit", func() bool { return !n.Running() }); err != nil {
		return err
	}
	return s.cluster.StartNode(node)
}

// settle waits until every agent runs with its lease, the hierarchy is
// online on one node, exactly one connected host holds the VIP and the
// client gets its answers from that host.
func (s *lifeboatSetup) settle(ctx context.Context) error {
	c := s.cluster
	if err := c.WaitReady(ctx); err != nil {
		return err
	}
	var owner string
	err := demo.Wait(ctx, "the vip hierarchy online on one node", func() bool {
		st, err := c.Status(ctx, c.Nodes[0].Name)
		if err != nil {
			return false
		}
		for _, h := range st.Hierarchies {
			if h.Name == "vip" && h.Online && h.State == "online" && h.Owner != "" {
				owner = h.Owner
				return true
			}
		}
		return false
	})
	if err != nil {
		return err
	}
	return s.b.settleHolder(ctx, s.addr, owner)
}

func (s *lifeboatSetup) stop() {
	if s.cluster != nil {
		s.cluster.Kill()
		s.cluster = nil
	}
	for _, d := range s.dogs {
		_ = d.Close()
	}
	s.dogs = nil
	if s.sim != nil {
		s.sim.Close()
		s.sim = nil
	}
	s.b.clearVIP(s.addr)
}

// settleHolder waits until owner ("" for any) is the only connected host
// holding vip and the client's last ten answers came from it.
func (b *bench) settleHolder(ctx context.Context, vip, owner string) error {
	var last string
	err := demo.Wait(ctx, "one host holding "+vip+" and answering", func() bool {
		holder := ""
		for _, h := range b.lab.Nodes() {
			if held, err := b.lab.HoldsAddr(h, vip); err == nil && held && b.connected(h) {
				if holder != "" {
					last = "two hosts hold it"
					return false
				}
				holder = h
			}
		}
		if holder == "" || (owner != "" && holder != owner) {
			last = fmt.Sprintf("held by %q, want %q", holder, owner)
			return false
		}
		s := b.prober.Samples()
		if len(s) < 12 {
			return false
		}
		for _, x := range s[len(s)-11 : len(s)-1] { // the newest may be in flight
			if !x.OK() || x.From != holder {
				last = fmt.Sprintf("%s holds it, the client's answers come from %q", holder, x.From)
				return false
			}
		}
		return true
	})
	if err != nil && last != "" {
		return fmt.Errorf("%w: %s", err, last)
	}
	return err
}

// clearVIP removes vip from every node (a setup's leftovers).
func (b *bench) clearVIP(vip string) {
	for _, h := range b.lab.Nodes() {
		for _, l := range []string{"/32", "/24"} {
			if err := b.lab.DelAddr(h, vip+l); err != nil && !errors.Is(err, os.ErrNotExist) {
				continue
			}
		}
	}
}
