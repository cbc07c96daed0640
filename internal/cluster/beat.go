package cluster

import "time"

// The cluster's periodic messages (lease renewals, raft's paced
// heartbeats) leave at the same moments on every node: multiples of their
// period on the wall clock. An idle agent's cost is the number of times
// it wakes, not the work it does when awake (issue 11: about 20-30 µs of
// CPU per wake-up, most of it the Go scheduler's and the kernel's), so a
// renewal round, the answers to the other nodes' rounds and a heartbeat
// that arrive within the same millisecond cost one wake-up instead of
// one each. Only the phase is taken from the wall clock: every wait is at
// most one period long, so a clock that jumps changes nothing but the
// phase, and nothing that decides safety reads these moments (leases
// count on the monotonic clock).

// NextBeat is how long from now until the first multiple of every on the
// wall clock that is at least minWait away; every when the wall clock
// disagrees with the monotonic one (it was set meanwhile).
func NextBeat(now time.Time, every, minWait time.Duration) time.Duration {
	if every <= 0 {
		return minWait
	}
	at := now.Add(minWait)
	next := at.Truncate(every)
	if next.Before(at) {
		next = next.Add(every)
	}
	d := next.Sub(now.Round(0))
	if d < minWait || d > every+minWait {
		// The wall clock moved under us: keep the rhythm, lose the phase.
		return every
	}
	return d
}

// OnBeat is how long until the next beat of a period of about every: the
// first multiple of the cluster's beat at least every long, at least half
// of it from now. For periodic work that can wait: it then wakes the
// process together with the renewals instead of on its own.
func (c *Cluster) OnBeat(every time.Duration) time.Duration {
	return onBeat(time.Now(), c.cfg.Timing.Renew, every)
}

func onBeat(now time.Time, beat, every time.Duration) time.Duration {
	if beat <= 0 {
		return every
	}
	period := beat * max(1, (every+beat-1)/beat)
	return NextBeat(now, period, period/2)
}
