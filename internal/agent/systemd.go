package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/lifeboat-ha/lifeboat/internal/cluster"
)

// systemd integration, for a unit of Type=notify (packaging/lifeboat.service).
// Nothing of it runs unless systemd started the agent ($NOTIFY_SOCKET).
//
//   - READY=1 once this node holds quorum: its lease is granted by a
//     majority of the voters (a witness: once a raft leader is known). A
//     unit ordered after lifeboat.service therefore starts on a node that
//     is part of a working cluster. Until then STATUS= says what it waits
//     for; after, STATUS= shows the leader and the lease.
//   - WATCHDOG=1 (when the unit sets WatchdogSec=) every half watchdog
//     interval, but only after the agent's own state answers: the
//     replicated state's lock and the lease table's are taken on the way.
//     A deadlocked agent stops sending, and systemd restarts it.
//   - STOPPING=1 when the agent begins to shut down (Shutdown).
//
// The node watchdog (watchdog.device) and systemd's watchdog do not fight:
// the agent stops feeding the node watchdog on purpose when it loses its
// lease with addresses up (the machine must be reset), while it keeps
// answering systemd, which has no reason to restart a healthy agent. A
// hung agent stops both: if systemd kills it first, the node watchdog,
// closed without its magic character, still resets the machine, and the
// restarted agent does not feed it until it holds a lease again.

// systemdNotify sends state to systemd ($NOTIFY_SOCKET).
func systemdNotify(state string) (bool, error) { return daemon.SdNotify(false, state) }

// systemdLoop reports readiness, status and watchdog pings to systemd
// until ctx ends.
func (a *Agent) systemdLoop(ctx context.Context) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		a.log.Warn("systemd: WATCHDOG_USEC is not usable: no watchdog pings", "error", err)
	}
	a.runSystemd(ctx, interval/2)
}

// runSystemd is systemdLoop's body: ping is 0 without systemd's watchdog.
func (a *Agent) runSystemd(ctx context.Context, ping time.Duration) {
	tick := 250 * time.Millisecond // the status line's refresh while starting
	if ping > 0 {
		tick = min(tick, ping)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	ready, lastStatus, lastPing := false, "", time.Time{}
	for {
		status, quorum := a.systemdStatus()
		msg := ""
		if quorum && !ready {
			ready = true
			msg += "READY=1\n"
			a.log.Info("systemd: ready (this node holds quorum)")
		}
		if status != lastStatus {
			msg += "STATUS=" + status + "\n"
			lastStatus = status
		}
		if ping > 0 && time.Since(lastPing) >= ping {
			msg += "WATCHDOG=1\n"
			lastPing = time.Now()
		}
		if msg != "" {
			if _, err := systemdNotify(msg); err != nil {
				a.log.Warn("systemd: notify", "error", err)
			}
		}
		if ready && ping == 0 {
			// Only the status line is left to keep: every 5 s.
			t.Reset(5 * time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// systemdStatus is the unit's status line, and whether this node holds
// quorum. It takes the replicated state's and the lease table's locks: it
// does not return while the agent is deadlocked on them.
func (a *Agent) systemdStatus() (string, bool) {
	leader := ""
	var here int
	a.c.FSM.View(func(s *cluster.State) {
		for _, as := range s.Assignments {
			if as.Node == a.cfg.Node {
				here++
			}
		}
	})
	if a.c.Raft != nil {
		_, id := a.c.Raft.LeaderWithID()
		leader = string(id)
	}
	if a.self.Witness {
		if leader == "" {
			return "witness: waiting for a raft leader (quorum)", false
		}
		return "witness, leader " + leader, true
	}
	gen, _ := a.c.Leases.Current()
	if !a.c.Leases.Valid(gen) {
		if leader == "" {
			return "waiting for quorum: no raft leader yet (are a majority of the voters up and reachable?)", false
		}
		return "waiting for quorum: leader " + leader + ", lease not granted yet", false
	}
	return fmt.Sprintf("leader %s, lease generation %s held, %d hierarchies here", leader, strconv.FormatUint(gen, 10), here), true
}
