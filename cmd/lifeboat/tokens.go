package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
)

func tokensCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens list|reload",
		Short: "List the API tokens an agent accepts, or reload its token file",
		Long: `Remote callers of the API present a bearer token. Each token has a name, which
the history records as who asked, and a role:

  read      status, events, doctor, iam-policy, metrics
  operate   read, and switchover, start, stop, failover confirm|block,
            maintenance, node standby|unstandby|confirm-failover
  admin     operate, and apply, delete, node add|remove, log-level, backup,
            restore, report, tokens

The tokens live in the file api.token_file names, one per line:

  # NAME       ROLE     SECRET
  grafana      read     <at least 16 characters>
  oncall-anna  operate  <...>
  deploy-ci    admin    <...>

Each agent reads its own file at start, on SIGHUP and on lifeboat tokens reload,
so a token rotates without a restart: change the file on every node, then reload
each. A file that does not parse is refused and the tokens in force stay. Without
api.token_file the agent accepts one admin token derived from the cluster key:
for a local demo only. The local socket is root on the node and may do
everything.`,
		Example: `  lifeboat tokens list
  lifeboat tokens reload              # after editing api.token_file on this node
  lifeboat tokens list --json`,
	}
	for _, verb := range []string{"list", "reload"} {
		method, path := "GET", "/v1/tokens"
		short := "List the tokens this agent accepts: names and roles, no secrets"
		if verb == "reload" {
			method, path = "POST", "/v1/tokens/reload"
			short = "Read this agent's api.token_file again (each node reads its own)"
		}
		cmd.AddCommand(&cobra.Command{
			Use:     verb,
			Short:   short,
			Example: "  lifeboat tokens " + verb,
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				var out api.TokenList
				if err := call(context.Background(), method, path, nil, &out); err != nil {
					return err
				}
				if g.json {
					return printJSON(out)
				}
				if verb == "reload" {
					fmt.Printf("reloaded on %s from %s\n", out.Node, out.Source)
				} else {
					fmt.Printf("tokens of %s, from %s\n", out.Node, out.Source)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE")
				for _, t := range out.Tokens {
					fmt.Fprintf(tw, "%s\t%s\n", t.Name, t.Role)
				}
				return tw.Flush()
			},
		})
	}
	return cmd
}
