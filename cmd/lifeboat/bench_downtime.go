package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/downtime"
	"github.com/lifeboat-ha/lifeboat/internal/netlab"
)

func benchDowntimeCmd() *cobra.Command {
	var o downtime.Options
	cmd := &cobra.Command{
		Use:   "downtime [--runs N]",
		Short: "Measure client-observed outages on a real network, lifeboat beside keepalived (root)",
		Long: `Build three hosts, a client and a router as network namespaces on a bridge (on
addresses that exist only inside them), and a responder on every host that
answers with its name. A client sends a request to the virtual IP every 10 ms.
Then, run by run and interleaved, for lifeboat (timing profiles default and
fast; the ip kit on the LAN, and the ec2 kit in route-table mode through a
router the AWS simulator programs) and keepalived (defaults: VRRPv2, 1 s
adverts; tuned: VRRPv3, 0.1 s adverts), inject each fault on the host that
serves:

  kill  the daemon killed and the host's link dropped at once (a dead machine)
  stop  the daemon frozen with SIGSTOP for --stop-for (default 5s)
  cut   the host's link dropped, the daemon still running

The outage is the time from the last answer before the fault to the first
answer after it. double_owner counts the 10 ms instants at which two hosts
still connected to the network both held the VIP; lifeboat's hosts have a
(fake) watchdog, and a host it reset does not count. Needs root, iproute2,
nftables or iptables, and keepalived for its rows. Everything it creates is
removed at the end.`,
		Example: `  sudo lifeboat bench downtime --runs 20
  sudo lifeboat bench downtime --runs 5 --tools lifeboat --kits ip --faults kill,stop --json
  sudo lifeboat bench downtime --profiles fast,tuned --runs 10`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return codeErr{exitFailure, err}
			}
			o.Binary = exe
			o.Progress = func(s string) { fmt.Fprintln(stderr, s) } // stderr: --json output stays clean
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rows, err := downtime.Run(ctx, o)
			if errors.Is(err, netlab.ErrUnavailable) {
				return codeErr{exitUsage, err}
			}
			if err != nil && rows == nil {
				return codeErr{exitFailure, err}
			}
			if g.json {
				return printJSON(rows)
			}
			fmt.Fprintf(stdout, "%-10s %-8s %-4s %-5s %4s %10s %10s %12s %8s\n", "TOOL", "PROFILE", "KIT", "FAULT", "RUNS", "MEDIAN", "P95", "DOUBLE-OWNER", "RESETS")
			for _, r := range rows {
				fmt.Fprintf(stdout, "%-10s %-8s %-4s %-5s %4d %8.0fms %8.0fms %12d %8d\n", r.Tool, r.Profile, r.Kit, r.Fault, r.Runs, r.MedianMS, r.P95MS, r.DoubleOwner, r.WatchdogFired)
				for _, e := range r.Errors {
					fmt.Fprintf(stdout, "    not measured: %s\n", e)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Runs, "runs", 5, "runs per tool, profile, kit and fault")
	f.StringVar(&o.Dir, "dir", "", "keep logs and cluster data here (default: a temporary directory, removed)")
	f.StringSliceVar(&o.Faults, "faults", nil, "faults to inject: kill, stop, cut (default all)")
	f.StringSliceVar(&o.Kits, "kits", nil, "lifeboat kits: ip, ec2 (default both)")
	f.StringSliceVar(&o.Tools, "tools", nil, "lifeboat, keepalived (default both)")
	f.StringSliceVar(&o.Profiles, "profiles", nil, "lifeboat's default and fast, keepalived's default and tuned (default all)")
	f.DurationVar(&o.StopFor, "stop-for", 5*time.Second, "how long the stop fault freezes the daemon")
	return cmd
}

// benchResponderCmd is the responder the downtime benchmark runs on every
// host: it answers each UDP request with the host's name.
func benchResponderCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "responder ADDR NAME",
		Short:  "Answer UDP requests on ADDR with NAME (used by bench downtime)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return netlab.Respond(ctx, args[0], args[1])
		},
	}
}
