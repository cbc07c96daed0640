package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// LocalChecks are the checks that need no cloud access.
func LocalChecks() []Check {
	return []Check{
		{ID: "cluster-quorum", Run: checkQuorum},
		{ID: "failure-detection", Run: checkMembers},
		{ID: "version-skew", Run: checkVersions},
		{ID: "disk", Run: checkDisk},
		{ID: "debug-logging", Run: checkLogging},
		{ID: "security-software", Run: checkSecuritySoftware},
		{ID: "maintenance", Run: checkMaintenance},
		{ID: "membership", Run: checkMembership},
		{ID: "node-certificate", Run: checkNodeCert},
	}
}

// checkMembership reports a node removed from the cluster that still
// runs, a member that raft holds as a non-voter (added, but it did not
// catch up) or not at all, and, once the membership was changed at run
// time, a cluster.nodes in this node's config that no longer matches it.
func checkMembership(_ context.Context, env *Env) []Finding {
	var out []Finding
	if env.Removed {
		out = append(out, Finding{ID: "membership", Severity: Warning, Node: env.Node,
			Seen: env.Node + " was removed from the cluster (lifeboat node remove) and its agent still runs; it holds and grants nothing",
			Fix:  "stop its agent and clear its data directory; to bring it back, start it with cluster.join: true and run lifeboat node add"})
		return out
	}
	var names []string
	for _, m := range env.Members {
		names = append(names, m.Name)
		switch m.Suffrage {
		case "nonvoter":
			out = append(out, Finding{ID: "membership", Severity: Warning, Node: m.Name,
				Seen:    m.Name + " is a raft non-voter: it was added but did not catch up, so it votes on nothing and the cluster's quorum does not count it",
				Fix:     "make sure its agent runs (cluster.join: true, the cluster key) and run lifeboat node add again with its addresses, or remove it",
				Command: "lifeboat node remove " + m.Name})
		case "":
			if env.MembershipChanged {
				out = append(out, Finding{ID: "membership", Severity: Warning, Node: m.Name,
					Seen: m.Name + " is in the cluster's membership but not in raft's configuration (a node add or remove that stopped half way)",
					Fix:  "run the same lifeboat node add or lifeboat node remove again"})
			}
		}
	}
	if env.MembershipChanged && env.Configured != nil {
		cfg := append([]string(nil), env.Configured...)
		sort.Strings(cfg)
		sort.Strings(names)
		if strings.Join(cfg, ",") != strings.Join(names, ",") {
			out = append(out, Finding{ID: "membership", Severity: Info, Node: env.Node,
				Seen: fmt.Sprintf("cluster.nodes in %s's config lists %s; the cluster's membership, changed at run time, is %s", env.Node, strings.Join(cfg, ", "), strings.Join(names, ", ")),
				Fix:  "the running cluster uses its replicated membership; update cluster.nodes in the configs so that a node rebuilt from scratch finds the cluster (a new node: cluster.join: true)"})
		}
	}
	return out
}

// MaintenanceWarnAfter is how long a maintenance mode or standby may be
// on before doctor warns that it was left on: while on, the hierarchies
// it covers have no failover.
const MaintenanceWarnAfter = time.Hour

func checkMaintenance(_ context.Context, env *Env) []Finding {
	var out []Finding
	for _, h := range env.Holds {
		age := env.Now().Sub(h.Since).Round(time.Second)
		seen := fmt.Sprintf("%s on since %s (%s ago)", h.What, h.Since.UTC().Format(time.RFC3339), age)
		if h.By != "" {
			seen += ", asked by " + h.By
		}
		if h.Reason != "" {
			seen += ": " + h.Reason
		}
		f := Finding{ID: "maintenance", Severity: Info, Seen: seen, Command: h.Off, Node: h.Node}
		if age >= MaintenanceWarnAfter {
			f.Severity = Warning
			f.Seen += "; what it covers is not failed over while it lasts"
			f.Fix = fmt.Sprintf("left on for over %s: end it when the work is done (%s)", MaintenanceWarnAfter, h.Off)
		}
		out = append(out, f)
	}
	return out
}

func checkQuorum(_ context.Context, env *Env) []Finding {
	voters, alive, witnesses := len(env.Members), 0, 0
	for _, m := range env.Members {
		if m.State == "alive" {
			alive++
		}
		if m.Witness {
			witnesses++
		}
	}
	var out []Finding
	majority := voters/2 + 1
	switch {
	case env.Leader == "":
		out = append(out, Finding{ID: "cluster-quorum", Severity: Critical,
			Seen:    fmt.Sprintf("no raft leader: %d of %d voters alive, %d needed", alive, voters, majority),
			Fix:     "bring voters back until a majority runs (check their agents and the network between them); nothing can fail over without a quorum",
			Command: "lifeboat status"})
	case alive < voters && alive-1 < majority:
		out = append(out, Finding{ID: "cluster-quorum", Severity: Warning,
			Seen: fmt.Sprintf("quorum held by %d of %d voters: one more failure loses it", alive, voters),
			Fix:  "bring the failed voters back before maintenance on another node"})
	}
	if voters-witnesses == 2 && witnesses == 0 || voters == 2 {
		out = append(out, Finding{ID: "cluster-quorum", Severity: Critical,
			Seen: "two voters and no witness: losing either node loses the quorum, so nothing can fail over",
			Fix:  "add a third voter: a small node with witness: true in cluster.nodes"})
	}
	return out
}

func checkMembers(_ context.Context, env *Env) []Finding {
	var out []Finding
	for _, m := range env.Members {
		if m.State == "alive" || m.Name == env.Node {
			continue
		}
		out = append(out, Finding{ID: "failure-detection", Severity: Warning,
			Seen: fmt.Sprintf("%s is %s as seen from %s", m.Name, m.State, env.Node),
			Fix:  fmt.Sprintf("check the agent on %s (systemctl status lifeboat) and the gossip and raft ports between the nodes", m.Name)})
	}
	return out
}

func checkVersions(_ context.Context, env *Env) []Finding {
	byVersion := map[string][]string{}
	for _, m := range env.Members {
		if m.Version != "" {
			byVersion[m.Version] = append(byVersion[m.Version], m.Name)
		}
	}
	if len(byVersion) < 2 {
		return nil
	}
	var parts, versions []string
	for v, ns := range byVersion {
		sort.Strings(ns)
		versions = append(versions, v)
		parts = append(parts, fmt.Sprintf("%s on %s", v, strings.Join(ns, ", ")))
	}
	sort.Strings(versions)
	sort.Strings(parts)
	return []Finding{{ID: "version-skew", Severity: Warning,
		Seen:    "nodes run different lifeboat versions: " + strings.Join(parts, "; "),
		Fix:     "finish the rolling upgrade; before it, grant every role the permissions the newer version needs",
		Command: "lifeboat iam-policy --since " + versions[0]}}
}

func checkDisk(_ context.Context, env *Env) []Finding {
	if env.DataDir == "" {
		return nil
	}
	space := env.DiskSpace
	if space == nil {
		space = statfs
	}
	free, total, err := space(env.DataDir)
	if err != nil {
		return []Finding{{ID: "disk", Severity: Warning, Seen: fmt.Sprintf("cannot read free space of %s: %v", env.DataDir, err)}}
	}
	var raftSize int64
	if fi, err := os.Stat(filepath.Join(env.DataDir, "raft.db")); err == nil {
		raftSize = fi.Size()
	}
	seen := fmt.Sprintf("%s: %s free of %s; raft log %s", env.DataDir, bytesText(free), bytesText(total), bytesText(uint64(raftSize)))
	switch {
	case free < 100<<20:
		return []Finding{{ID: "disk", Severity: Critical, Seen: seen, Fix: "free space in the data directory's file system: the raft log cannot grow when it is full", Command: "df -h " + env.DataDir}}
	case total > 0 && free*10 < total:
		return []Finding{{ID: "disk", Severity: Warning, Seen: seen, Fix: "less than 10% free: free space before the raft log fills it", Command: "df -h " + env.DataDir}}
	}
	return nil
}

func bytesText(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

func checkLogging(_ context.Context, env *Env) []Finding {
	if env.LogLevel == "debug" {
		return []Finding{{ID: "debug-logging", Severity: Info, Seen: "debug logging is on", Fix: "turn it off when done: lifeboat log-level info", Command: "lifeboat log-level info"}}
	}
	return []Finding{{ID: "debug-logging", Severity: Info,
		Seen:    fmt.Sprintf("log level is %s", env.LogLevel),
		Fix:     "to see every cloud call and decision, turn on debug logging at run time, without a restart",
		Command: "lifeboat log-level debug"}}
}

// securityAgents are process names of antivirus and endpoint agents known
// to interfere with HA software (locked or scanned binaries, blocked
// sockets), with the product's name.
var securityAgents = map[string]string{
	"clamd": "ClamAV", "freshclam": "ClamAV", "falcon-sensor": "CrowdStrike Falcon", "falcond": "CrowdStrike Falcon",
	"sentinelagent": "SentinelOne", "s1-agent": "SentinelOne", "wdavdaemon": "Microsoft Defender for Endpoint",
	"mdatp": "Microsoft Defender for Endpoint", "ds_agent": "Trend Micro Deep Security", "cbagentd": "Carbon Black",
	"cbdaemon": "Carbon Black", "savd": "Sophos", "sophos-spl": "Sophos", "mfetpd": "McAfee/Trellix ENS",
	"isectpd": "McAfee/Trellix ENS", "symcfgd": "Symantec", "rtvscand": "Symantec", "esets_daemon": "ESET",
	"osqueryd": "osquery", "auditbeat": "Elastic Auditbeat", "elastic-endpoint": "Elastic Defend",
	"qualys-cloud-agent": "Qualys", "wazuh-agentd": "Wazuh", "ossec-agentd": "OSSEC",
}

func checkSecuritySoftware(_ context.Context, env *Env) []Finding {
	entries, err := os.ReadDir(env.ProcDir)
	if err != nil {
		return nil
	}
	found := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() || e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join(env.ProcDir, e.Name(), "comm"))
		if err != nil {
			continue
		}
		if product, ok := securityAgents[strings.TrimSpace(string(b))]; ok {
			found[product+" ("+strings.TrimSpace(string(b))+")"] = true
		}
	}
	if len(found) == 0 {
		return nil
	}
	var names []string
	for n := range found {
		names = append(names, n)
	}
	sort.Strings(names)
	return []Finding{{ID: "security-software", Severity: Warning,
		Seen: "security software runs on this node: " + strings.Join(names, ", "),
		Fix:  "exclude lifeboat's paths from scanning and blocking: " + strings.Join(env.Paths, ", ")}}
}

func statfs(path string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}
