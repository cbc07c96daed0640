package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

func maintenanceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "maintenance on|off [HIERARCHY] [--node NODE]",
		Short: "Leave the cluster, a node or a hierarchy unmanaged while you work on it",
		Long: `While maintenance is on, lifeboat starts, stops, recovers and fails over
nothing there; the checks still run and status shows what they find. Use it to
patch a service by hand, or to restart or upgrade an agent without touching
what it runs.

  lifeboat maintenance on               the whole cluster
  lifeboat maintenance on --node n2     one node: what it runs is left alone and
                                        nothing new is placed on it
  lifeboat maintenance on db            one hierarchy, wherever it runs

Turning it off adopts what runs: a hierarchy that its checks find running
whole on one of its nodes is assigned there and is not restarted; one found
nowhere is started as usual. While it is on, start, stop, switchover and
delete of what it covers are refused. lifeboat doctor warns about a
maintenance left on for over an hour.`,
		Example: `  lifeboat maintenance on --reason "kernel update, CHG-1234"
  systemctl restart lifeboat        # the service keeps running
  lifeboat maintenance off

  lifeboat maintenance on --node node2
  lifeboat maintenance on db --json
  lifeboat maintenance off db`,
	}
	for _, on := range []bool{true, false} {
		var node, reason string
		word := map[bool]string{true: "on", false: "off"}[on]
		sub := &cobra.Command{
			Use:   word + " [HIERARCHY] [--node NODE]",
			Short: map[bool]string{true: "Turn maintenance on: lifeboat acts on nothing there", false: "Turn maintenance off: adopt what runs and manage it again"}[on],
			Example: fmt.Sprintf(`  lifeboat maintenance %s
  lifeboat maintenance %s --node node2
  lifeboat maintenance %s db`, word, word, word),
			Args: cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				req := api.MaintenanceRequest{Scope: "cluster", On: on, Reason: reason}
				switch {
				case len(args) == 1 && node != "":
					return codeErr{exitUsage, fmt.Errorf("give a HIERARCHY or --node, not both")}
				case len(args) == 1:
					req.Scope, req.Name = "hierarchy", args[0]
				case node != "":
					req.Scope, req.Name = "node", node
				}
				var out api.MaintenanceOutcome
				if err := call(context.Background(), "POST", "/v1/maintenance", req, &out); err != nil {
					return err
				}
				if g.json {
					return printJSON(out)
				}
				fmt.Fprintln(stdout, out.Message)
				for _, h := range out.Hierarchies {
					line := fmt.Sprintf("  %-20s %-12s on %s", h.Hierarchy, h.State, dash(h.Owner))
					if h.Message != "" {
						line += ": " + h.Message
					}
					fmt.Fprintln(stdout, line)
				}
				return nil
			},
		}
		sub.Flags().StringVar(&node, "node", "", "one node instead of the whole cluster")
		if on {
			sub.Flags().StringVar(&reason, "reason", "", "why (kept in the history and shown by status and doctor)")
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func nodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node add|remove|standby|unstandby|confirm-failover NODE",
		Short: "Add and remove nodes; drain a node for patching, and take it back",
		Long: `add and remove change the cluster's membership at run time, one node at a
time (see lifeboat node add --help).

standby switches everything the node runs over to the next ready node (a
planned switchover each), then the node takes nothing until unstandby. It is
refused when something it runs has no other node to go to (--force puts the
node in standby anyway; that hierarchy stays where it is). It waits until
everything is online elsewhere (--timeout, --no-wait).`,
		Example: `  lifeboat node standby node1 --reason "patching"
  # ... patch and reboot node1 ...
  lifeboat node unstandby node1

  lifeboat node add node4 --raft 10.0.0.14:7101 --gossip 10.0.0.14:7102 --api 10.0.0.14:7103
  lifeboat node remove node4`,
	}
	cmd.AddCommand(nodeAddCmd(), nodeRemoveCmd(), nodeCertCmd())
	for _, on := range []bool{true, false} {
		var reason string
		var force, noWait bool
		verb := map[bool]string{true: "standby", false: "unstandby"}[on]
		sub := &cobra.Command{
			Use:     verb + " NODE",
			Short:   map[bool]string{true: "Drain a node: move what it runs, then place nothing on it", false: "Let a drained node take hierarchies again"}[on],
			Example: "  lifeboat node " + verb + " node1",
			Args:    cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var out api.StandbyOutcome
				req := api.StandbyRequest{Reason: reason, Force: force, NoWait: noWait, Timeout: spec.Duration(g.timeout)}
				if err := call(context.Background(), "POST", "/v1/nodes/"+args[0]+"/"+verb, req, &out); err != nil {
					return err
				}
				if g.json {
					return printJSON(out)
				}
				fmt.Fprintln(stdout, out.Message)
				for _, h := range out.Moved {
					fmt.Fprintf(stdout, "  %-20s %-12s on %s\n", h.Hierarchy, h.State, dash(h.Owner))
				}
				return nil
			},
		}
		if on {
			sub.Flags().StringVar(&reason, "reason", "", "why (kept in the history and shown by status and doctor)")
			sub.Flags().BoolVar(&force, "force", false, "standby even when something it runs has nowhere else to go (it stays)")
			sub.Flags().BoolVar(&noWait, "no-wait", false, "return once the standby is committed")
		}
		cmd.AddCommand(sub)
	}
	var reason string
	confirm := &cobra.Command{
		Use:   "confirm-failover NODE on|off",
		Short: "Make the failovers of what a node runs wait for an operator's confirmation",
		Long: `With confirm-failover on for a node, when a hierarchy it runs fails there or the
node is fenced, the hierarchy is taken off it as always and then waits, state
awaiting-confirmation, for lifeboat failover confirm|block HIERARCHY, up to the
hierarchy's confirm_timeout, then does its confirm_default (as a hierarchy's own
confirm_failover: true does).`,
		Example: `  lifeboat node confirm-failover node1 on --reason "DR site: a human decides"
  lifeboat node confirm-failover node1 off`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[1] != "on" && args[1] != "off" {
				return codeErr{exitUsage, fmt.Errorf("say on or off, not %q", args[1])}
			}
			var out api.NodeSettingOutcome
			if err := call(context.Background(), "POST", "/v1/nodes/"+args[0]+"/confirm-failover", api.NodeSettingRequest{On: args[1] == "on", Reason: reason}, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			fmt.Fprintln(stdout, out.Message)
			return nil
		},
	}
	confirm.Flags().StringVar(&reason, "reason", "", "why (kept in the history)")
	cmd.AddCommand(confirm)
	return cmd
}
