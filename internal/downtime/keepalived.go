package downtime

import (
	"context"
	"fmt"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/netlab"
)

// keepalivedSetup runs keepalived on every node with unicast VRRP for the
// same VIP: at its defaults (VRRPv2, 1 s adverts) or tuned (VRRPv3, 0.1 s).
type keepalivedSetup struct {
	b       *bench
	profile string
	addr    string
	procs   map[string]*netlab.Keepalived
}

func newKeepalived(b *bench, profile, vip string) *keepalivedSetup {
	return &keepalivedSetup{b: b, profile: profile, addr: vip}
}

func (s *keepalivedSetup) name() (string, string, string) { return ToolKeepalived, s.profile, KitIP }
func (s *keepalivedSetup) vip() string                    { return s.addr }

func (s *keepalivedSetup) options() netlab.KeepalivedOptions {
	if s.profile == "tuned" {
		return netlab.KeepalivedTuned(s.addr + "/24")
	}
	return netlab.KeepalivedDefaults(s.addr + "/24")
}

func (s *keepalivedSetup) start(ctx context.Context) error {
	s.procs = map[string]*netlab.Keepalived{}
	for _, n := range s.b.lab.Nodes() {
		if err := s.restart(ctx, n); err != nil {
			return err
		}
	}
	return s.settle(ctx)
}

func (s *keepalivedSetup) pid(node string) int {
	if k := s.procs[node]; k != nil && k.Running() {
		return k.PID
	}
	return 0
}

func (s *keepalivedSetup) restart(_ context.Context, node string) error {
	if k := s.procs[node]; k != nil && k.Running() {
		_ = k.Kill()
	}
	k, err := s.b.lab.StartKeepalived(node, s.options())
	if err != nil {
		return fmt.Errorf("start keepalived on %s: %w", node, err)
	}
	s.procs[node] = k
	return nil
}

// fired: keepalived has no watchdog.
func (s *keepalivedSetup) fired(string) bool { return false }

// settle waits until one connected host holds the VIP and answers, and
// then a further three adverts, so that a preempting master has taken it
// back before the next fault.
func (s *keepalivedSetup) settle(ctx context.Context) error {
	if err := s.b.settleHolder(ctx, s.addr, ""); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(3 * s.options().Advert):
	}
	return s.b.settleHolder(ctx, s.addr, "")
}

func (s *keepalivedSetup) stop() {
	for _, k := range s.procs {
		_ = k.Stop(5 * time.Second)
	}
	s.procs = nil
	s.b.clearVIP(s.addr)
}
