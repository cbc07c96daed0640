package api

import (
	"fmt"
	"strings"
)

// The first line of status, doctor and the console answers the question an operator
// asks first: could every hierarchy fail over right now, and if not, why
// (in a phrase). The details follow.

// maxNamed is how many hierarchies or findings a summary line names.
const maxNamed = 3

// FailoverSummary says whether every hierarchy in service has a standby that
// could take it over now: a node of its list, other than the owner, alive,
// not in standby or maintenance, without a failure mark, and READY.
func FailoverSummary(st Status) (ok bool, line string) {
	switch {
	case st.Leader == "":
		return false, "NOT READY: no raft leader (no quorum?): nothing can fail over until a majority of the voters is back"
	case st.Maintenance != nil:
		return false, "NOT READY: the whole cluster is in maintenance: nothing fails over (lifeboat maintenance off)"
	case len(st.Hierarchies) == 0:
		return true, "READY: no hierarchies to fail over (create one with lifeboat apply -f FILE)"
	}
	nodes := map[string]NodeStatus{}
	for _, n := range st.Nodes {
		nodes[n.Name] = n
	}
	var why []string
	counted := 0
	for _, h := range st.Hierarchies {
		if h.State == "stopped" {
			continue // out of service by request: nothing to fail over
		}
		counted++
		if r := hierarchyBlocker(h, nodes); r != "" {
			why = append(why, h.Name+": "+r)
		}
	}
	if counted == 0 {
		return true, "READY: every hierarchy is stopped by request: nothing to fail over"
	}
	if len(why) == 0 {
		return true, fmt.Sprintf("READY: %s could fail over now (each has a ready standby)", Plural(counted, "hierarchy", "all %d hierarchies"))
	}
	return false, fmt.Sprintf("NOT READY: %d of %d hierarchies could not fail over now: %s", len(why), counted, firstFew(why))
}

// hierarchyBlocker says why h could not fail over now ("" if it could).
func hierarchyBlocker(h HierarchyStatus, nodes map[string]NodeStatus) string {
	if h.Maintenance != "" {
		return "in maintenance (" + h.Maintenance + ")"
	}
	if h.Owner == "" || !h.Online {
		return "not in service (" + h.State + ")"
	}
	var reasons []string
	for _, n := range h.Nodes {
		if n == h.Owner {
			continue
		}
		r := standbyBlocker(h, n, nodes[n])
		if r == "" {
			return ""
		}
		reasons = append(reasons, r)
	}
	if len(reasons) == 0 {
		return "no other node in its list"
	}
	return strings.Join(reasons, "; ")
}

// standbyBlocker says why node could not take h over now ("" if it could).
func standbyBlocker(h HierarchyStatus, node string, n NodeStatus) string {
	switch {
	case n.Name == "":
		return node + " is not a member"
	case n.State != "alive":
		return node + " is " + n.State
	case n.Standby != nil:
		return node + " is in standby"
	case n.Maintenance != nil:
		return node + " is in maintenance"
	}
	for _, f := range h.Failed {
		if f == node {
			return node + " has a failure mark"
		}
	}
	rd, ok := h.Readiness[node]
	switch {
	case !ok:
		return node + "'s readiness is not proven yet"
	case rd.Ready:
		return ""
	case len(rd.Missing) > 0:
		return node + " is missing " + strings.Join(rd.Missing, ", ")
	case rd.Reason != "":
		return node + " is not ready (" + rd.Reason + ")"
	}
	return node + " is not ready"
}

// DoctorSummary says whether any finding would stop a failover, naming
// the first few.
func DoctorSummary(all []Finding, nodes int) (ok bool, line string) {
	var crit []string
	for _, f := range all {
		if f.Severity == Critical {
			what := f.Node + " " + f.ID
			if f.Hierarchy != "" {
				what += " " + f.Hierarchy
			}
			crit = append(crit, what+": "+f.Seen)
		}
	}
	if len(crit) > 0 {
		return false, fmt.Sprintf("NOT READY: %s would stop a failover: %s", Plural(len(crit), "finding", "%d findings"), firstFew(crit))
	}
	w, n := countSeverity(all, Warning), countSeverity(all, Info)
	line = fmt.Sprintf("READY: nothing found on %s would stop a failover", Plural(nodes, "node", "%d nodes"))
	switch {
	case w > 0:
		line += fmt.Sprintf(" (%s to look at)", Plural(w, "warning", "%d warnings"))
	case n > 0:
		line += fmt.Sprintf(" (%s: lifeboat doctor -v)", Plural(n, "note", "%d notes"))
	}
	return true, line
}

// Plural is "1 one" or many formatted with n.
func Plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf(many, n)
}

func countSeverity(fs []Finding, sev string) int {
	n := 0
	for _, f := range fs {
		if f.Severity == sev {
			n++
		}
	}
	return n
}

// firstFew joins the first maxNamed items and counts the rest.
func firstFew(items []string) string {
	if len(items) <= maxNamed {
		return strings.Join(items, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(items[:maxNamed], "; "), len(items)-maxNamed)
}
