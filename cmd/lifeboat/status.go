package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
	"github.com/lifeboat-ha/lifeboat/internal/state"
)

func statusCmd() *cobra.Command {
	var refresh bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show nodes, hierarchies and each resource's state on each node",
		Long: `Show the cluster as the answering node sees it. The first line says whether every
hierarchy could fail over right now (READY), or which could not and why (NOT READY: no
standby alive, in standby or maintenance, a failure mark, a missing permission, readiness
not proven yet); then the nodes, the hierarchies, and each resource's state on each node.
--json prints the same state, machine-readable (the summary is computed from it).`,
		Example: `  lifeboat status
  lifeboat status --json | jq '.hierarchies[] | {name, owner, state}'
  LIFEBOAT_ADDR=10.0.0.2:7100 LIFEBOAT_TOKEN=... lifeboat status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var st api.Status
			path := "/v1/status"
			if refresh {
				path += "?refresh=1"
			}
			if err := call(context.Background(), "GET", path, nil, &st); err != nil {
				return err
			}
			if g.json {
				return printJSON(st)
			}
			printStatus(st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&refresh, "refresh", false, "make every node prove its readiness now before answering")
	return cmd
}

func printStatus(st api.Status) {
	_, line := api.FailoverSummary(st)
	fmt.Fprintln(stdout, line)
	leader := st.Leader
	if leader == "" {
		leader = "NONE (no quorum?)"
	}
	fmt.Fprintf(stdout, "Cluster: leader %s, raft index %d (answered by %s)\n", leader, st.Index, st.Node)
	if st.FeatureLevel > 0 {
		lv := fmt.Sprintf("Feature level: %d", st.FeatureLevel)
		if st.SupportedLevel > st.FeatureLevel {
			lv += fmt.Sprintf(" (this node supports %d; it rises once every voter does)", st.SupportedLevel)
		}
		fmt.Fprintln(stdout, lv)
	}
	if st.Halted != "" {
		fmt.Fprintf(stdout, "HALTED: %s: %s\n", st.Node, st.Halted)
	}
	if st.Removed {
		fmt.Fprintf(stdout, "REMOVED: %s was removed from the cluster (lifeboat node remove): it holds and grants nothing; stop its agent\n", st.Node)
	}
	if st.Joining {
		fmt.Fprintf(stdout, "JOINING: %s waits to be added to the cluster: run lifeboat node add %s ... on a member\n", st.Node, st.Node)
	}
	if m := st.Maintenance; m != nil {
		fmt.Fprintf(stdout, "MAINTENANCE: the whole cluster, %s: nothing is started, stopped or failed over (lifeboat maintenance off)\n", holdText(m))
	}
	fmt.Fprintf(stdout, "API TLS fingerprint: %s\n\n", st.Fingerprint)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tROLE\tVERSION\tGEN\tLEASE\tDOCTOR")
	for _, n := range st.Nodes {
		role := "voter"
		switch {
		case n.Leader:
			role = "leader"
		case n.Witness:
			role = "witness"
		}
		if n.Suffrage == "nonvoter" {
			role += " (non-voter, catching up)"
		}
		state := n.State
		if n.Fenced {
			state += " (fenced)"
		}
		if n.Leaving {
			state += " (leaving)"
		}
		if n.Maintenance != nil {
			state += " (maintenance)"
		}
		if n.Standby != nil {
			state += " (standby)"
		}
		if n.ConfirmFailover != nil {
			state += " (confirm-failover)"
		}
		doc := "ok"
		switch {
		case n.Findings == nil:
			doc = "-"
		case n.Findings["critical"] > 0 || n.Findings["warning"] > 0:
			doc = fmt.Sprintf("%d critical, %d warning", n.Findings["critical"], n.Findings["warning"])
		}
		ver := dash(n.Version)
		if n.Level > 0 {
			ver = fmt.Sprintf("%s (level %d)", ver, n.Level)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Name, state, role, ver, n.Gen, dash(n.Lease), doc)
	}
	tw.Flush()
	for _, n := range st.Nodes {
		if n.Maintenance != nil {
			fmt.Fprintf(stdout, "node %s in maintenance, %s (lifeboat maintenance off --node %s)\n", n.Name, holdText(n.Maintenance), n.Name)
		}
		if n.Standby != nil {
			fmt.Fprintf(stdout, "node %s in standby, %s (lifeboat node unstandby %s)\n", n.Name, holdText(n.Standby), n.Name)
		}
		if p := n.ReadinessPace; p != nil && p.BudgetBound {
			fmt.Fprintf(stdout, "node %s proves its readiness only every %s, not every %s (readiness_interval): its AWS call budget of %d calls a minute holds the probes back (raise aws.readiness_calls_per_minute); its verdicts may be that old\n",
				n.Name, roundAge(time.Duration(p.PeriodMS)*time.Millisecond), roundAge(time.Duration(p.IntervalMS)*time.Millisecond), p.BudgetPerMinute)
		}
	}
	if len(st.Hierarchies) == 0 {
		fmt.Fprintln(stdout, "\nNo hierarchies. Create one with: lifeboat apply -f FILE")
		return
	}
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HIERARCHY\tOWNER\tSTATE\tEPOCH\tNODES (priority)\tSWITCHBACK\tREASON")
	for _, h := range st.Hierarchies {
		reason := h.Reason
		if h.Maintenance != "" {
			reason = h.Maintenance + ": unmanaged, checks only"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", h.Name, dash(h.Owner), h.State, h.Epoch, strings.Join(h.Nodes, ","), h.Switchback, reason)
	}
	tw.Flush()
	nodeState := map[string]string{}
	pace := map[string]*state.ReadinessPace{}
	for _, n := range st.Nodes {
		nodeState[n.Name] = n.State
		pace[n.Name] = n.ReadinessPace
	}
	for _, h := range st.Hierarchies {
		if len(h.Resources) == 0 {
			continue
		}
		fmt.Fprintf(stdout, "\nResources of %s:\n", h.Name)
		for _, node := range spec.SortedKeys(h.Resources) {
			var parts []string
			for _, r := range spec.SortedKeys(h.Resources[node]) {
				parts = append(parts, r+"="+h.Resources[node][r])
			}
			mark := " "
			if node == h.Owner {
				mark = "*"
			}
			note := ""
			if s := nodeState[node]; s != "alive" {
				note = "  (node " + s + ": last report)"
			}
			fmt.Fprintf(stdout, " %s %-10s %s%s\n", mark, node, strings.Join(parts, " "), note)
			if e := h.Errors[node]; e != "" {
				fmt.Fprintf(stdout, "   %-10s last error: %s\n", "", e)
			}
		}
		var rd []string
		for _, n := range h.Nodes {
			x, ok := h.Readiness[n]
			var v string
			switch {
			case !ok:
				continue
			case x.Ready:
				v = n + " READY"
			case len(x.Missing) > 0:
				v = fmt.Sprintf("%s NOT READY (missing %s)", n, strings.Join(x.Missing, ", "))
			default:
				v = fmt.Sprintf("%s NOT READY (%s)", n, x.Reason)
			}
			rd = append(rd, v+staleness(x.At, pace[n]))
		}
		if len(rd) > 0 {
			fmt.Fprintf(stdout, "   readiness: %s\n", strings.Join(rd, "; "))
		}
		if len(h.Failed) > 0 {
			var marks []string
			for _, n := range h.Failed {
				if until, ok := h.FailedUntil[n]; ok {
					marks = append(marks, fmt.Sprintf("%s (until %s)", n, until))
				} else {
					marks = append(marks, n)
				}
			}
			fmt.Fprintf(stdout, "   failed on: %s (the marks expire after failure_timeout; lifeboat start %s or a switchover clears them now)\n", strings.Join(marks, ", "), h.Name)
		}
	}
}

// holdText says since when, by whom and why a maintenance or standby is on.
func holdText(h *state.Hold) string {
	t := "since " + h.Since.Local().Format("2006-01-02 15:04:05")
	if h.By != "" {
		t += ", by " + h.By
	}
	if h.Reason != "" {
		t += ": " + h.Reason
	}
	return t
}

// staleness says how old a readiness verdict is when it is older than its
// node's readiness interval allows (p nil: a node that does not say), and
// why when the node's AWS call budget is the cause.
func staleness(at time.Time, p *state.ReadinessPace) string {
	if p == nil || at.IsZero() || p.IntervalMS <= 0 {
		return ""
	}
	age := time.Since(at)
	interval := time.Duration(p.IntervalMS) * time.Millisecond
	// A verdict rests on answers up to one interval old when it is
	// reached, is reached again an interval later, and the proof times
	// are committed once an interval: up to three intervals is on time.
	if age <= 3*interval+interval/10 {
		return ""
	}
	why := ""
	if p.BudgetBound {
		why = ", held back by the AWS call budget"
	}
	return fmt.Sprintf(" (proven %s ago%s)", roundAge(age), why)
}

// roundAge rounds a duration for reading.
func roundAge(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	case d >= time.Minute:
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
