package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/upgrade"
)

// defaultAgentConfig is where `upgrade check` looks for the agent's config.
const defaultAgentConfig = "/etc/lifeboat/agent.yaml"

func upgradeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Prepare a rolling upgrade: prove each node has what the new version needs",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(upgradeCheckCmd())
	return cmd
}

func upgradeCheckCmd() *cobra.Command {
	var cfgPath string
	var files []string
	var all bool
	cmd := &cobra.Command{
		Use:   "check [--config FILE] [-f SPEC]... | --all",
		Short: "Prove, before a node's agent is replaced, that the node has what this version needs",
		Long: `Run this with the NEW binary on a node before its agent is replaced. It reads the
agent's config file (keys this version renamed, removed or would reject, with file
and line), the hierarchies this node may run (from the running agent, which may be the
old version, or from the spec files given with -f), and the cluster's feature level
(which this version must support). Then it proves, with this node's own credentials
and the agent's own AWS settings (region, endpoints, proxy), every cloud action this
version needs for those hierarchies, by the kits' readiness probes (dry runs; nothing
is changed).

For every gap it prints the missing action, the hierarchy and resource that need it,
the version that first needed it, and the IAM statement to add to the node's role.

With --all, every node's agent runs the check with its own binary (agents from 0.2.0
on); a node whose agent is older, or runs another version than this binary, is named
with the advice to run the check there with the new binary. This node is checked with
this binary when its config is readable.

Exit status: 0 ready to upgrade, 1 a gap (fix it first), 2 the check could not be
completed (the agent did not answer, the config could not be read, a probe could not
tell).`,
		Example: `  # on each node, with the new binary, before replacing the agent
  ./lifeboat-new upgrade check --config /etc/lifeboat/agent.yaml
  ./lifeboat-new upgrade check -f web.yaml -f db.yaml     # an agent before 0.2.0 does not hand out its specs
  lifeboat upgrade check --all                            # every node, through the agents
  lifeboat upgrade check --json | jq '.nodes[].gaps[]?.statements'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
			defer cancel()
			explicitAddr := cmd.Flags().Changed("addr") || os.Getenv("LIFEBOAT_ADDR") != ""
			agentClient := func(cfg *config.Agent) (*api.Client, error) {
				if explicitAddr || cfg == nil {
					return client()
				}
				return api.NewClient(cfg.API.Socket, "", g.timeout+5*time.Second, nil)
			}
			local := upgrade.Local{Target: version, ConfigPath: cfgPath, SpecFiles: files, Client: agentClient,
				Logger: slog.New(slog.DiscardHandler)}
			var reports []upgrade.Report
			if all {
				if len(files) > 0 {
					return codeErr{exitUsage, fmt.Errorf("-f and --all do not go together: every agent checks the specs in the cluster state")}
				}
				rs, err := checkAll(ctx, local, cmd.Flags().Changed("config"), agentClient)
				if err != nil {
					return err
				}
				reports = rs
			} else {
				reports = []upgrade.Report{local.Run(ctx)}
			}
			if g.json {
				_ = printJSON(upgrade.ClusterReport{Nodes: reports})
			} else {
				printUpgrade(reports)
			}
			switch upgrade.ExitCode(reports) {
			case upgrade.ExitGap:
				n := 0
				for _, r := range reports {
					n += len(r.Gaps)
				}
				return codeErr{exitFailure, fmt.Errorf("%d gap(s) to fix before the upgrade", n)}
			case upgrade.ExitError:
				return codeErr{exitUsage, fmt.Errorf("the upgrade check could not be completed (see above)")}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", defaultAgentConfig, "the agent's config file (YAML)")
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "spec file with hierarchies to check instead of the agent's (repeatable)")
	cmd.Flags().BoolVar(&all, "all", false, "check every node through its agent")
	return cmd
}

// checkAll asks the agent to check every node, and checks this node with
// this binary when its config can be read.
func checkAll(ctx context.Context, local upgrade.Local, configGiven bool, agentClient func(*config.Agent) (*api.Client, error)) ([]upgrade.Report, error) {
	var cfg *config.Agent
	if c, err := config.LoadAgent(local.ConfigPath); err == nil {
		cfg = c
	} else if configGiven {
		if _, statErr := os.Stat(local.ConfigPath); statErr != nil {
			return nil, codeErr{exitUsage, fmt.Errorf("--config %s: %w", local.ConfigPath, statErr)}
		}
	}
	cl, err := agentClient(cfg)
	if err != nil {
		return nil, err
	}
	var cr upgrade.ClusterReport
	if err := cl.Do(ctx, "POST", upgrade.CheckPath, upgrade.Request{All: true}, &cr); err != nil {
		var se *api.StatusError
		if errors.As(err, &se) && se.Code == 404 {
			return nil, codeErr{exitUsage, fmt.Errorf("the agent at %s predates the upgrade check (--all needs agents from 0.2.0 on): %s", cl.Base(), upgrade.RunOnNode("each node"))}
		}
		// Whatever kept the agent from answering prevented the check.
		return nil, codeErr{exitUsage, fmt.Errorf("the upgrade check could not run: %w", err)}
	}
	rs := cr.Nodes
	if _, err := os.Stat(local.ConfigPath); err == nil {
		mine := local.Run(ctx)
		replaced := false
		for i := range rs {
			if rs[i].Node == mine.Node {
				rs[i], replaced = mine, true
			}
		}
		if !replaced {
			rs = append(rs, mine)
		}
	}
	for i := range rs {
		r := &rs[i]
		if r.Target != "" && r.Target != version && !r.TooOld {
			r.Errors = append(r.Errors, fmt.Sprintf("checked against lifeboat %s (the agent's own version), not %s: %s", r.Target, version, upgrade.RunOnNode(r.Node)))
			r.Finish()
		}
	}
	return rs, nil
}

func printUpgrade(rs []upgrade.Report) {
	ready := 0
	for _, r := range rs {
		var facts []string
		if r.Running != "" {
			facts = append(facts, "running lifeboat "+r.Running)
		}
		facts = append(facts, "checked for "+r.Target)
		if r.FeatureLevel > 0 {
			facts = append(facts, fmt.Sprintf("cluster feature level %d, this version supports %d-%d", r.FeatureLevel, r.MinLevel, r.SupportedLevel))
		}
		if len(r.Hierarchies) > 0 {
			facts = append(facts, "hierarchies "+strings.Join(r.Hierarchies, ", "))
		}
		head := "ready to upgrade"
		switch {
		case len(r.Gaps) > 0:
			head = fmt.Sprintf("%d gap(s)", len(r.Gaps))
		case !r.Ready:
			head = "NOT CHECKED"
		default:
			ready++
		}
		fmt.Fprintf(stdout, "%s: %s (%s)\n", r.Node, head, strings.Join(facts, "; "))
		for _, gp := range r.Gaps {
			printGap(r.Node, gp)
		}
		for _, e := range r.Errors {
			fmt.Fprintf(stdout, "  %-8s %s\n", "ERROR", indent(e, 11))
		}
		for _, n := range r.Needs {
			if len(n.New) > 0 {
				fmt.Fprintf(stdout, "  %-8s %s/%s needs what %s did not: %s\n", "NEW", n.Hierarchy, n.Resource, r.Running, strings.Join(n.New, ", "))
			}
		}
		for _, n := range r.Notes {
			fmt.Fprintf(stdout, "  %-8s %s\n", "NOTE", n)
		}
	}
	fmt.Fprintf(stdout, "%d of %d node(s) ready to upgrade\n", ready, len(rs))
}

func printGap(node string, gp upgrade.Gap) {
	where := gp.Hierarchy
	if gp.Resource != "" {
		where += "/" + gp.Resource
	}
	switch gp.Kind {
	case upgrade.GapPermission:
		since := gp.FirstNeeded
		if since == "" {
			since = "an unknown version"
		}
		fmt.Fprintf(stdout, "  %-8s %s for %s (needed since %s)\n", "MISSING", gp.Action, where, since)
		if gp.Message != "" {
			fmt.Fprintf(stdout, "           %s\n", indent(gp.Message, 11))
		}
		fmt.Fprintf(stdout, "           add to %s's role:\n", node)
		for _, st := range gp.Statements {
			b, _ := json.MarshalIndent(st, "             ", "  ")
			fmt.Fprintf(stdout, "             %s\n", b)
		}
	case upgrade.GapConfig:
		loc := gp.File
		if gp.Line > 0 {
			loc = fmt.Sprintf("%s:%d", gp.File, gp.Line)
		}
		fmt.Fprintf(stdout, "  %-8s %s: %s\n", "CONFIG", loc, gp.Message)
		if gp.Fix != "" {
			fmt.Fprintf(stdout, "           fix: %s\n", gp.Fix)
		}
	default:
		label := map[string]string{upgrade.GapNotReady: "NOTREADY", upgrade.GapSpec: "SPEC", upgrade.GapFeatureLevel: "LEVEL"}[gp.Kind]
		if where != "" {
			where += ": "
		}
		fmt.Fprintf(stdout, "  %-8s %s%s\n", label, where, indent(gp.Message, 11))
		if gp.Fix != "" {
			fmt.Fprintf(stdout, "           fix: %s\n", gp.Fix)
		}
	}
}

func indent(s string, n int) string {
	return strings.ReplaceAll(s, "\n", "\n"+strings.Repeat(" ", n))
}
