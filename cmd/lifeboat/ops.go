package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/kit/kits"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

func applyCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update resources and hierarchies from a YAML or JSON file",
		Long: `Create or update hierarchies declaratively. The file is checked locally first
(every problem is reported with file, line and field), then on the agent.`,
		Example: `  lifeboat apply -f web.yaml
  cat web.yaml | lifeboat apply -f -

  # web.yaml
  hierarchies:
    - name: web
      nodes: [node1, node2, node3]     # priority order, preferred first
      switchback: intelligent          # or automatic
      monitor_interval: 1s
      local_recovery: 2
      failure_timeout: 10m             # a node where it failed is skipped this long
      migration_threshold: 1           # failures on a node before it is skipped
      max_failovers: 5                 # anti-flap: more within failover_window stops it
      failover_window: 1h
      confirm_failover: false          # true: a failover waits for lifeboat failover confirm|block
      resources:
        - name: web-app
          type: app
          params:
            restore: /usr/local/bin/web start
            remove: /usr/local/bin/web stop
            quickcheck: /usr/local/bin/web check`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return codeErr{exitUsage, fmt.Errorf("-f FILE is required (use - for standard input)")}
			}
			var data []byte
			var err error
			name := file
			if file == "-" {
				name = "<stdin>"
				data, err = readAll(os.Stdin)
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return codeErr{exitUsage, fmt.Errorf("read %s: %w", name, err)}
			}
			hs, err := config.ParseSpec(name, data, kits.Builtin().ValidateHierarchy)
			if err != nil {
				return codeErr{exitUsage, err}
			}
			var resp api.ApplyResponse
			if err := call(context.Background(), "POST", "/v1/apply", api.ApplyRequest{Hierarchies: hs}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(resp)
			}
			for _, n := range resp.Created {
				fmt.Fprintf(stdout, "hierarchy %s created\n", n)
			}
			for _, n := range resp.Updated {
				fmt.Fprintf(stdout, "hierarchy %s updated\n", n)
			}
			for _, n := range resp.Unchanged {
				fmt.Fprintf(stdout, "hierarchy %s unchanged\n", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "spec file (YAML or JSON), - for stdin")
	return cmd
}

func readAll(f *os.File) ([]byte, error) {
	var b strings.Builder
	buf := make([]byte, 32*1024)
	for {
		n, err := f.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			if err.Error() == "EOF" {
				return []byte(b.String()), nil
			}
			return nil, err
		}
	}
}

func outcome(o api.Outcome, verb string) error {
	if g.json {
		return printJSON(o)
	}
	switch {
	case o.Message != "":
		fmt.Fprintf(stdout, "%s %s: %s (%s, owner %s, epoch %d, %s)\n", verb, o.Hierarchy, o.Message, o.State, dash(o.Owner), o.Epoch, o.Duration)
	default:
		fmt.Fprintf(stdout, "%s %s: %s on %s (epoch %d) in %s\n", verb, o.Hierarchy, o.State, dash(o.Owner), o.Epoch, o.Duration)
	}
	return nil
}

func switchoverCmd() *cobra.Command {
	var to string
	var force bool
	cmd := &cobra.Command{
		Use:   "switchover HIERARCHY --to NODE",
		Short: "Move a hierarchy to another node (remove here, then restore there)",
		Long: `A planned move: the owner takes the hierarchy out of service (parents first),
then the target restores it (children first). The command waits and reports the
outcome; it fails (exit 1) if the target could not take it.`,
		Example: `  lifeboat switchover web --to node2
  lifeboat switchover web --to node2 --json --timeout 30s`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return codeErr{exitUsage, fmt.Errorf("--to NODE is required")}
			}
			var o api.Outcome
			err := call(context.Background(), "POST", "/v1/hierarchies/"+args[0]+"/switchover", api.MoveRequest{To: to, Force: force, Timeout: spec.Duration(g.timeout)}, &o)
			if err != nil {
				return err
			}
			return outcome(o, "switchover")
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "target node")
	cmd.Flags().BoolVar(&force, "force", false, "move even to a node that is NOT READY")
	return cmd
}

func startStopCmd(start bool) *cobra.Command {
	verb, short := "stop", "Take a hierarchy out of service (it stays stopped until started)"
	if start {
		verb, short = "start", "Bring a hierarchy into service on its best ready node (clears failure marks)"
	}
	var noWait bool
	cmd := &cobra.Command{
		Use:     verb + " HIERARCHY",
		Short:   short,
		Example: fmt.Sprintf("  lifeboat %s web\n  lifeboat %s web --no-wait --json", verb, verb),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var o api.Outcome
			err := call(context.Background(), "POST", "/v1/hierarchies/"+args[0]+"/"+verb, api.ActionRequest{NoWait: noWait, Timeout: spec.Duration(g.timeout)}, &o)
			if err != nil {
				return err
			}
			return outcome(o, verb)
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the request is committed")
	return cmd
}

func failoverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "failover confirm|block HIERARCHY",
		Short: "Decide a failover that waits for confirmation (confirm_failover)",
		Long: `A hierarchy with confirm_failover: true does not fail over on its own: once its
owner has failed or been fenced, status shows it awaiting-confirmation, and it
waits for an operator's decision up to confirm_timeout, then does confirm_default.

  confirm  place it on the best ready node now (waits until it is online there)
  block    leave it out of service until lifeboat start`,
		Example: `  lifeboat failover confirm db
  lifeboat failover block db --json`,
	}
	for _, d := range []string{"confirm", "block"} {
		var noWait bool
		sub := &cobra.Command{
			Use:     d + " HIERARCHY",
			Short:   map[string]string{"confirm": "Let the failover go on now", "block": "Keep the hierarchy out of service (until lifeboat start)"}[d],
			Example: "  lifeboat failover " + d + " db",
			Args:    cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var o api.Outcome
				if err := call(context.Background(), "POST", "/v1/hierarchies/"+args[0]+"/failover/"+d, api.ActionRequest{NoWait: noWait, Timeout: spec.Duration(g.timeout)}, &o); err != nil {
					return err
				}
				return outcome(o, "failover "+d)
			},
		}
		if d == "confirm" {
			sub.Flags().BoolVar(&noWait, "no-wait", false, "return once the decision is committed")
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func deleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete HIERARCHY",
		Short:   "Take a hierarchy out of service and forget it",
		Example: "  lifeboat delete web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var o api.Outcome
			if err := call(context.Background(), "DELETE", "/v1/hierarchies/"+args[0], api.ActionRequest{Timeout: spec.Duration(g.timeout)}, &o); err != nil {
				return err
			}
			if g.json {
				return printJSON(o)
			}
			fmt.Fprintf(stdout, "hierarchy %s deleted in %s\n", o.Hierarchy, o.Duration)
			return nil
		},
	}
}

func eventsCmd() *cobra.Command {
	var follow bool
	var limit int
	cmd := &cobra.Command{
		Use:   "events [-f]",
		Short: "Show the action and failover history of every node",
		Long: `Show the history of every node, oldest first. With -f, keep printing new events
as they happen: the agent streams them (server-sent events) from every node it
can reach, says which node it cannot reach, and the stream resumes where it
stopped when the agent restarts.`,
		Example: `  lifeboat events
  lifeboat events -f
  lifeboat events -f --json | jq 'select(.severity == "critical")'
  lifeboat events --json | jq 'select(.error != null)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp api.EventsResponse
			if err := call(context.Background(), "GET", "/v1/events", nil, &resp); err != nil {
				return err
			}
			evs := resp.Events
			if limit > 0 && len(evs) > limit {
				evs = evs[len(evs)-limit:]
			}
			for _, e := range evs {
				printEvent(e)
			}
			for n, why := range resp.Unreachable {
				fmt.Fprintf(stderr, "note: history of %s not available: %s\n", n, why)
			}
			if !follow {
				return nil
			}
			var parts []string
			for n, s := range resp.Cursors {
				parts = append(parts, fmt.Sprintf("%s:%d", n, s))
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return followEvents(ctx, strings.Join(parts, ","))
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events as they happen")
	cmd.Flags().IntVar(&limit, "limit", 200, "show at most this many past events (0: all)")
	return cmd
}

func versionCmd() *cobra.Command {
	var remote bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the binary's version (and, with --agent, the agent's)",
		Example: "  lifeboat version\n  lifeboat version --agent --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := map[string]string{"cli": version}
			if remote {
				var v api.Version
				if err := call(context.Background(), "GET", "/v1/version", nil, &v); err != nil {
					return err
				}
				out["agent"], out["node"] = v.Version, v.Node
			}
			if g.json {
				return printJSON(out)
			}
			fmt.Fprintln(stdout, "lifeboat", version)
			if remote {
				fmt.Fprintf(stdout, "agent on %s: %s\n", out["node"], out["agent"])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&remote, "agent", false, "also ask the agent")
	return cmd
}

func logLevelCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "log-level LEVEL",
		Short:   "Change the agent's log level at run time (debug, info, warn, error)",
		Example: "  lifeboat log-level debug\n  lifeboat log-level info",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]string
			if err := call(context.Background(), "POST", "/v1/log-level", map[string]string{"level": args[0]}, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			fmt.Fprintln(stdout, "log level is now", out["level"])
			return nil
		},
	}
}

func iamPolicyCmd() *cobra.Command {
	var since string
	cmd := &cobra.Command{
		Use:   "iam-policy [HIERARCHY]",
		Short: "Print the least-privilege IAM policy for what is configured",
		Long: `Print the IAM policy (JSON) that the nodes' instance role needs for the configured
hierarchies (or one of them): every action each kit uses, with resource ARNs where
EC2 supports them, plus sts:DecodeAuthorizationMessage so that a denial can be
named in plain words. Attach it to each node's role.`,
		Example: `  lifeboat iam-policy
  lifeboat iam-policy web > web-policy.json
  lifeboat iam-policy --since 0.1.0     # what an upgrade from 0.1.0 adds
  aws iam put-role-policy --role-name db-ha --policy-name lifeboat --policy-document file://web-policy.json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if len(args) == 1 {
				q.Set("hierarchy", args[0])
			}
			if since != "" {
				q.Set("since", since)
			}
			path := "/v1/iam-policy?" + q.Encode()
			var doc map[string]any
			if err := call(context.Background(), "GET", path, nil, &doc); err != nil {
				return err
			}
			return printJSON(doc)
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "only the permissions that versions after this one need (the upgrade check)")
	return cmd
}
