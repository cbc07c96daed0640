package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
)

func benchRejoinCmd() *cobra.Command {
	var runs int
	var dir, profile string
	var down time.Duration
	cmd := &cobra.Command{
		Use:   "rejoin [--runs N] [--down D]",
		Short: "Measure how soon a restarted agent holds its lease again",
		Long: `Start a three-node cluster on 127.0.0.1 (real agent processes, default settings),
then N times: kill -9 one agent (the raft leader every other run, a follower
otherwise), leave it down for --down, start it again and measure from the start
of its process until its own status says it holds its lease, and until every
node sees it alive with a fresh lease. Prints every run and the medians.`,
		Example: `  lifeboat bench rejoin --runs 10 --down 6s`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if profile != config.ProfileDefault && profile != config.ProfileFast {
				return codeErr{exitUsage, fmt.Errorf("--profile %q: use %s or %s", profile, config.ProfileDefault, config.ProfileFast)}
			}
			res, err := runRejoinBench(runs, dir, down, profile)
			if err != nil {
				return codeErr{exitFailure, err}
			}
			if g.json {
				return printJSON(res)
			}
			for i := range res.LeaseMS {
				fmt.Fprintf(stdout, "run %2d: %s (was leader: %v) down %s: lease held after %.0f ms, seen by all after %.0f ms\n",
					i+1, res.Killed[i], res.WasLeader[i], down, res.LeaseMS[i], res.AllMS[i])
			}
			fmt.Fprintf(stdout, "\nlease held again: median %.0f ms, min %.0f ms, max %.0f ms over %d runs\n", res.LeaseMedianMS, res.LeaseMinMS, res.LeaseMaxMS, len(res.LeaseMS))
			fmt.Fprintf(stdout, "seen alive with a fresh lease by every node: median %.0f ms\n", res.AllMedianMS)
			return nil
		},
	}
	cmd.Flags().IntVar(&runs, "runs", 10, "number of restarts to measure")
	cmd.Flags().StringVar(&dir, "dir", "", "working directory (default: a new temporary directory)")
	cmd.Flags().DurationVar(&down, "down", 6*time.Second, "how long the killed agent stays down")
	cmd.Flags().StringVar(&profile, "profile", config.ProfileDefault, "timing profile of the agents: default or fast")
	return cmd
}

type rejoinResult struct {
	DownMS    float64  `json:"down_ms"`
	Killed    []string `json:"killed"`
	WasLeader []bool   `json:"was_leader"`
	// LeaseMS: process started -> its own status says it holds its lease.
	LeaseMS []float64 `json:"lease_ms"`
	// AllMS: process started -> every node sees it alive, with a lease
	// it granted recently (demo.Cluster.WaitReady).
	AllMS         []float64 `json:"all_ms"`
	LeaseMedianMS float64   `json:"lease_median_ms"`
	LeaseMinMS    float64   `json:"lease_min_ms"`
	LeaseMaxMS    float64   `json:"lease_max_ms"`
	AllMedianMS   float64   `json:"all_median_ms"`
}

func runRejoinBench(runs int, dir string, down time.Duration, profile string) (*rejoinResult, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "lifeboat-bench-rejoin-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	c, err := demo.Start(demo.Options{Dir: dir, Nodes: 3, ExtraConfig: "timing:\n  profile: " + profile + "\n"})
	if err != nil {
		return nil, err
	}
	defer c.Kill()
	sctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sctx, time.Duration(runs)*(down+time.Minute)+time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		return nil, err
	}
	res := &rejoinResult{DownMS: float64(down.Milliseconds())}
	for i := 0; i < runs; i++ {
		st, err := c.Status(ctx, c.Nodes[0].Name)
		if err != nil {
			return nil, err
		}
		victim := st.Leader
		if i%2 == 0 || victim == "" {
			victim = otherThan(c, st.Leader)
		}
		if err := c.Signal(victim, syscall.SIGKILL); err != nil {
			return nil, err
		}
		_ = c.WaitExit(ctx, victim)
		time.Sleep(down) // the outage being measured after, not a synchronisation
		started := time.Now()
		if err := c.StartNode(victim); err != nil {
			return nil, err
		}
		var lease time.Duration
		for lease == 0 {
			if s, err := c.Status(ctx, victim); err == nil && s.Local.LeaseHeld {
				lease = time.Since(started)
				break
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("run %d: %s holds no lease: %w", i+1, victim, ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
		if err := c.WaitReady(ctx); err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		all := time.Since(started)
		res.Killed = append(res.Killed, victim)
		res.WasLeader = append(res.WasLeader, victim == st.Leader)
		res.LeaseMS = append(res.LeaseMS, float64(lease.Microseconds())/1000)
		res.AllMS = append(res.AllMS, float64(all.Microseconds())/1000)
	}
	res.LeaseMedianMS, res.LeaseMinMS, res.LeaseMaxMS = median(res.LeaseMS)
	res.AllMedianMS, _, _ = median(res.AllMS)
	return res, nil
}
