package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
)

// nodeAddCmd is lifeboat node add: grow the cluster at run time.
func nodeAddCmd() *cobra.Command {
	var req api.MemberRequest
	cmd := &cobra.Command{
		Use:   "add NAME --raft HOST:PORT --gossip HOST:PORT --api HOST:PORT [--witness]",
		Short: "Add a node to the running cluster (raft voter once it has caught up)",
		Long: `Adds a node to the running cluster, one at a time. First start the new node's
agent with the cluster key and, in its config, cluster.join: true and
cluster.nodes listing itself and at least one running node: it then waits to
be added instead of forming a cluster of its own. Then run node add on any
member. lifeboat records the node in the replicated membership, adds it to raft
as a non-voter, waits until it has caught up with the cluster's state (up to
25 s), and promotes it to voter. Every node learns its addresses from the
replicated membership; cluster.nodes in the other configs is only how they
formed the cluster and need not change.

Refused: a name or an address already in use, a membership that would be
invalid, a cluster below feature level 2. Run again after a node that did
not catch up (its agent was not running): it resumes.

The new node takes no hierarchy until a hierarchy lists it (lifeboat apply).`,
		Example: `  # on node4: /etc/lifeboat/agent.yaml has cluster.join: true, then
  systemctl start lifeboat
  # on any member:
  lifeboat node add node4 --raft 10.0.0.14:7101 --gossip 10.0.0.14:7102 --api 10.0.0.14:7103
  lifeboat node add witness2 --raft 10.0.0.15:7101 --gossip 10.0.0.15:7102 --api 10.0.0.15:7103 --witness --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			for _, f := range []struct{ name, v string }{{"--raft", req.Raft}, {"--gossip", req.Gossip}, {"--api", req.API}} {
				if f.v == "" {
					return codeErr{exitUsage, fmt.Errorf("%s is required: the address other nodes reach %s at, host:port", f.name, req.Name)}
				}
			}
			return memberCall("/v1/nodes", req)
		},
	}
	cmd.Flags().StringVar(&req.Raft, "raft", "", "the new node's raft address, host:port (as in its cluster.nodes entry)")
	cmd.Flags().StringVar(&req.Gossip, "gossip", "", "the new node's gossip (failure detection) address, host:port")
	cmd.Flags().StringVar(&req.API, "api", "", "the new node's API address, host:port")
	cmd.Flags().BoolVar(&req.Witness, "witness", false, "the node votes but runs no resources")
	cmd.Flags().StringVar(&req.Reason, "reason", "", "why (kept in the history)")
	return cmd
}

// nodeRemoveCmd is lifeboat node remove: shrink the cluster at run time.
func nodeRemoveCmd() *cobra.Command {
	var req api.MemberRequest
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a node from the running cluster",
		Long: `Removes a node from the running cluster: from the replicated membership, then
from raft's voters. Refused when a hierarchy lists the node or runs on it (take
it out of their node lists first: edit and lifeboat apply), when the voters
left that are alive would not be a majority of them, when it would remove the
last witness beside two resource nodes, and for an unknown name. Removing the
leader hands leadership to another voter first.

Afterwards stop the removed node's agent and clear its data directory before
reusing the machine.`,
		Example: `  lifeboat node remove node4 --reason "decommissioned"
  lifeboat node remove node4 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return memberCall("/v1/nodes/"+args[0]+"/remove", req)
		},
	}
	cmd.Flags().StringVar(&req.Reason, "reason", "", "why (kept in the history)")
	return cmd
}

func memberCall(path string, req api.MemberRequest) error {
	var out api.MemberOutcome
	if err := call(context.Background(), "POST", path, req, &out); err != nil {
		return err
	}
	if g.json {
		return printJSON(out)
	}
	for _, s := range out.Steps {
		fmt.Fprintln(stdout, "  "+s)
	}
	fmt.Fprintf(stdout, "%s (%s)\n\n", out.Message, out.Duration)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSUFFRAGE\tROLE\tRAFT\tGOSSIP\tAPI")
	for _, m := range out.Members {
		role := "resources"
		if m.Witness {
			role = "witness"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, dash(m.Suffrage), role, m.Raft, m.Gossip, m.API)
	}
	return tw.Flush()
}
