package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/doctor"
)

func doctorCmd() *cobra.Command {
	var node, hierarchy string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "doctor [--node N] [--hierarchy H] [-v]",
		Short: "Run the troubleshooting checklist on every node and say what is wrong and how to fix it",
		Long: `Run the whole "the resource will not start" checklist on every node of the cluster at
once, through the agents: the permissions each configured hierarchy needs (by dry run,
with the policy statement to add), permissions beyond what lifeboat needs, credentials
and their expiry, the instance metadata service, AWS API reachability through the agent's
own proxy, clock skew, version skew between nodes, quorum and failure detection, disk
space, debug logging, and security software that should exclude lifeboat's paths. It
also compares the proxy and AWS_* variables of this shell with each agent's own settings:
lifeboat uses the agent's.

The first line says whether anything found would stop a failover (READY or NOT READY, and
why, in a phrase); then the critical findings and the warnings, worst node first. Notes
(INFO findings: what was checked and found in order) are printed only with -v; --json
always has them all. Every finding says what was seen, how to fix it, and, for cloud
checks, the AWS CLI command that reproduces it by hand.

Exit status: 0 nothing would stop a failover, 1 a finding would, 2 doctor could not run.`,
		Example: `  lifeboat doctor
  lifeboat doctor --node node2 --hierarchy web
  lifeboat doctor -v          # the notes too
  lifeboat doctor --json | jq '.findings[] | select(.severity=="critical")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if node != "" {
				q.Set("node", node)
			}
			if hierarchy != "" {
				q.Set("hierarchy", hierarchy)
			}
			var rep api.Doctor
			if err := call(context.Background(), "GET", "/v1/doctor?"+q.Encode(), nil, &rep); err != nil {
				var ce codeErr
				if asCode(err, &ce) && ce.code == exitUsage {
					return err
				}
				return codeErr{exitUsage, fmt.Errorf("doctor could not run: %w", err)}
			}
			var all []doctor.Finding
			for i := range rep.Nodes {
				rep.Nodes[i].Findings = append(rep.Nodes[i].Findings, proxyDrift(rep.Nodes[i])...)
				doctor.Sort(rep.Nodes[i].Findings)
				all = append(all, rep.Nodes[i].Findings...)
			}
			doctor.Sort(all)
			if g.json {
				_ = printJSON(struct {
					Findings []doctor.Finding `json:"findings"`
					Nodes    []api.NodeDoctor `json:"nodes"`
				}{all, rep.Nodes})
			} else {
				printDoctor(rep, all, verbose)
			}
			if code := doctor.ExitCode(all); code != 0 {
				return codeErr{code, fmt.Errorf("%d finding(s) would stop a failover", countSev(all, doctor.Critical))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "only this node")
	cmd.Flags().StringVar(&hierarchy, "hierarchy", "", "only this hierarchy")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the notes (INFO findings) too")
	return cmd
}

func asCode(err error, ce *codeErr) bool {
	c, ok := err.(codeErr)
	if ok {
		*ce = c
	}
	return ok
}

func countSev(fs []doctor.Finding, sev string) int {
	n := 0
	for _, f := range fs {
		if f.Severity == sev {
			n++
		}
	}
	return n
}

func printDoctor(rep api.Doctor, all []doctor.Finding, verbose bool) {
	_, line := api.DoctorSummary(all, len(rep.Nodes))
	fmt.Fprintln(stdout, line)
	// nodes worst first
	worst := func(n api.NodeDoctor) int {
		w := 3
		for _, f := range n.Findings {
			w = min(w, doctor.Rank(f.Severity))
		}
		return w
	}
	nodes := append([]api.NodeDoctor(nil), rep.Nodes...)
	for i := 1; i < len(nodes); i++ {
		for j := i; j > 0 && worst(nodes[j]) < worst(nodes[j-1]); j-- {
			nodes[j], nodes[j-1] = nodes[j-1], nodes[j]
		}
	}
	for _, n := range nodes {
		v := n.Version
		if v == "" {
			v = "?"
		}
		var shown []doctor.Finding
		for _, f := range n.Findings {
			if verbose || f.Severity != doctor.Info {
				shown = append(shown, f)
			}
		}
		notes := len(n.Findings) - len(shown)
		if len(shown) == 0 && !verbose {
			continue // nothing to look at on this node (counted below)
		}
		fmt.Fprintf(stdout, "\n%s (lifeboat %s)\n", n.Node, v)
		if len(n.Findings) == 0 {
			fmt.Fprintln(stdout, "  nothing found")
		}
		for _, f := range shown {
			where := ""
			if f.Hierarchy != "" {
				where = " " + f.Hierarchy
				if f.Resource != "" {
					where += "/" + f.Resource
				}
			}
			fmt.Fprintf(stdout, "  %-8s %s%s: %s\n", strings.ToUpper(f.Severity), f.ID, where, f.Seen)
			if f.Fix != "" {
				fmt.Fprintf(stdout, "           fix: %s\n", f.Fix)
			}
			if f.Command != "" {
				fmt.Fprintf(stdout, "           try: %s\n", strings.ReplaceAll(f.Command, "\n", "\n                "))
			}
		}
		if notes > 0 {
			fmt.Fprintf(stdout, "  (%s more: lifeboat doctor -v)\n", api.Plural(notes, "note", "%d notes"))
		}
	}
	fmt.Fprintf(stdout, "\n%d critical, %d warning(s), %d note(s) on %d node(s)\n", countSev(all, doctor.Critical), countSev(all, doctor.Warning), countSev(all, doctor.Info), len(rep.Nodes))
}

// redactProxy hides a password in a proxy URL.
func redactProxy(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = url.User(u.User.Username())
	return u.String()
}

func firstEnv(names ...string) (string, string) {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return n, v
		}
	}
	return "", ""
}

// proxyDrift compares this shell's proxy and AWS_* variables with the
// agent's own settings. The agent never reads its environment for AWS, so
// a difference explains why a command typed by hand behaves unlike the agent.
func proxyDrift(n api.NodeDoctor) []doctor.Finding {
	var out []doctor.Finding
	agentUses := func(v string) string {
		if v == "" {
			return "no proxy"
		}
		return v
	}
	for _, p := range []struct {
		names []string
		agent string
		key   string
	}{
		{[]string{"https_proxy", "HTTPS_PROXY"}, n.Settings.HTTPSProxy, "aws.https_proxy"},
		{[]string{"http_proxy", "HTTP_PROXY"}, n.Settings.HTTPProxy, "aws.http_proxy"},
	} {
		name, v := firstEnv(p.names...)
		if redactProxy(v) == p.agent {
			continue
		}
		shell := "not set"
		if name != "" {
			shell = name + "=" + redactProxy(v)
		}
		out = append(out, doctor.Finding{ID: "proxy-drift", Severity: doctor.Warning, Node: n.Node,
			Seen: fmt.Sprintf("this shell has %s but the agent on %s uses %s (%s in its config); lifeboat uses the agent's", shell, n.Node, agentUses(p.agent), p.key),
			Fix:  fmt.Sprintf("if AWS is reached through a proxy, set %s in the agent's config on %s; a proxy in root's shell does not reach the agent", p.key, n.Node)})
	}
	if name, v := firstEnv("no_proxy", "NO_PROXY"); name != "" && !strings.Contains(v, "169.254.169.254") && (os.Getenv("https_proxy") != "" || os.Getenv("HTTPS_PROXY") != "" || os.Getenv("http_proxy") != "" || os.Getenv("HTTP_PROXY") != "") {
		out = append(out, doctor.Finding{ID: "proxy-drift", Severity: doctor.Warning, Node: n.Node,
			Seen: fmt.Sprintf("this shell's %s lacks 169.254.169.254: metadata calls made from it go to the proxy (the agent's list always has it: %s)", name, n.Settings.NoProxy),
			Fix:  "add 169.254.169.254 to no_proxy wherever AWS tools run by hand"})
	}
	if name, v := firstEnv("AWS_REGION", "AWS_DEFAULT_REGION"); name != "" && n.Settings.Region != "" && v != n.Settings.Region {
		out = append(out, doctor.Finding{ID: "proxy-drift", Severity: doctor.Warning, Node: n.Node,
			Seen: fmt.Sprintf("this shell has %s=%s but the agent on %s uses region %s", name, v, n.Node, n.Settings.Region),
			Fix:  "commands typed by hand act on another region than lifeboat: unset it or match aws.region"})
	}
	if v := os.Getenv("AWS_ACCESS_KEY_ID"); v != "" {
		tail := v
		if len(tail) > 4 {
			tail = tail[len(tail)-4:]
		}
		out = append(out, doctor.Finding{ID: "proxy-drift", Severity: doctor.Info, Node: n.Node,
			Seen: fmt.Sprintf("this shell uses static keys (AWS_ACCESS_KEY_ID …%s); the agent uses its instance role, so commands typed here may be allowed what the node is not", tail),
			Fix:  "to test what the node can do, run the suggested commands without AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY on the node"})
	}
	if name, v := firstEnv("AWS_PROFILE"); name != "" {
		out = append(out, doctor.Finding{ID: "proxy-drift", Severity: doctor.Info, Node: n.Node,
			Seen: fmt.Sprintf("this shell selects AWS_PROFILE=%s; the agent reads no profile", v)})
	}
	return out
}
