package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func findings(t *testing.T, env *Env, id string) []Finding {
	t.Helper()
	return Run(context.Background(), env, LocalChecks(), map[string]bool{id: true})
}

func members(states ...string) []Member {
	var ms []Member
	for i, s := range states {
		ms = append(ms, Member{Name: "n" + string(rune('1'+i)), State: s, Version: "1.0"})
	}
	return ms
}

func TestQuorumChecks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    Env
		sev    string
		phrase string
	}{
		{"healthy", Env{Node: "n1", Leader: "n1", Members: members("alive", "alive", "alive")}, "", ""},
		{"no leader", Env{Node: "n1", Members: members("alive", "failed", "failed")}, Critical, "no raft leader: 1 of 3 voters alive, 2 needed"},
		{"one more failure", Env{Node: "n1", Leader: "n1", Members: members("alive", "alive", "failed")}, Warning, "one more failure loses it"},
		{"two voters", Env{Node: "n1", Leader: "n1", Members: members("alive", "alive")}, Critical, "two voters and no witness"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := findings(t, &tc.env, "cluster-quorum")
			if tc.sev == "" {
				if len(fs) != 0 {
					t.Fatalf("unexpected findings %+v", fs)
				}
				return
			}
			if len(fs) == 0 || fs[0].Severity != tc.sev || !strings.Contains(fs[0].Seen, tc.phrase) {
				t.Fatalf("findings %+v, want %s %q", fs, tc.sev, tc.phrase)
			}
		})
	}
}

func TestMembersAndVersions(t *testing.T) {
	env := &Env{Node: "n1", Leader: "n1", Members: members("alive", "suspect", "alive")}
	env.Members[2].Version = "1.1"
	fs := findings(t, env, "failure-detection")
	if len(fs) != 1 || !strings.Contains(fs[0].Seen, "n2 is suspect") {
		t.Fatalf("failure-detection: %+v", fs)
	}
	fs = findings(t, env, "version-skew")
	if len(fs) != 1 || fs[0].Command != "lifeboat iam-policy --since 1.0" || !strings.Contains(fs[0].Seen, "1.1 on n3") {
		t.Fatalf("version-skew: %+v", fs)
	}
	env.Members[2].Version = "1.0"
	if fs := findings(t, env, "version-skew"); len(fs) != 0 {
		t.Fatalf("same versions: %+v", fs)
	}
}

func TestLoggingAndDisk(t *testing.T) {
	fs := findings(t, &Env{Node: "n1", LogLevel: "info"}, "debug-logging")
	if len(fs) != 1 || fs[0].Command != "lifeboat log-level debug" {
		t.Fatalf("debug-logging: %+v", fs)
	}
	// A real data directory on a file system with room: no finding.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "raft.db"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if fs := findings(t, &Env{Node: "n1", DataDir: dir}, "disk"); len(fs) != 0 && fs[0].Severity == Critical {
		t.Fatalf("disk: %+v", fs)
	}
	if fs := findings(t, &Env{Node: "n1", DataDir: filepath.Join(dir, "missing")}, "disk"); len(fs) != 1 || !strings.Contains(fs[0].Seen, "cannot read free space") {
		t.Fatalf("disk on a missing directory: %+v", fs)
	}
	for _, tc := range []struct {
		free, total uint64
		sev         string
	}{
		{50 << 20, 100 << 30, Critical}, // 50 MiB left
		{5 << 30, 100 << 30, Warning},   // 5% left
		{50 << 30, 100 << 30, ""},       // plenty
	} {
		env := &Env{Node: "n1", DataDir: dir, DiskSpace: func(string) (uint64, uint64, error) { return tc.free, tc.total, nil }}
		fs := findings(t, env, "disk")
		switch {
		case tc.sev == "" && len(fs) != 0:
			t.Errorf("free %d of %d: unexpected %+v", tc.free, tc.total, fs)
		case tc.sev != "" && (len(fs) != 1 || fs[0].Severity != tc.sev || !strings.Contains(fs[0].Seen, "raft log 4 KiB")):
			t.Errorf("free %d of %d: %+v, want %s", tc.free, tc.total, fs, tc.sev)
		}
	}
}

func TestSecuritySoftware(t *testing.T) {
	proc := t.TempDir()
	for pid, comm := range map[string]string{"1": "systemd", "42": "falcon-sensor", "77": "clamd", "self": "x"} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "comm"), []byte(comm+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := &Env{Node: "n1", ProcDir: proc, Paths: []string{"/usr/bin/lifeboat", "/var/lib/lifeboat"}}
	fs := findings(t, env, "security-software")
	if len(fs) != 1 || !strings.Contains(fs[0].Seen, "CrowdStrike Falcon (falcon-sensor)") || !strings.Contains(fs[0].Seen, "ClamAV (clamd)") ||
		!strings.Contains(fs[0].Fix, "/var/lib/lifeboat") {
		t.Fatalf("security-software: %+v", fs)
	}
	os.RemoveAll(filepath.Join(proc, "42"))
	os.RemoveAll(filepath.Join(proc, "77"))
	if fs := findings(t, env, "security-software"); len(fs) != 0 {
		t.Fatalf("no agents running, but: %+v", fs)
	}
}

func TestRunSortsAndSurvivesPanics(t *testing.T) {
	checks := []Check{
		{ID: "boom", Run: func(context.Context, *Env) []Finding { panic("broken") }},
		{ID: "note", Run: func(context.Context, *Env) []Finding { return []Finding{{ID: "note", Severity: Info}} }},
		{ID: "bad", Run: func(context.Context, *Env) []Finding { return []Finding{{ID: "bad", Severity: Critical}} }},
	}
	fs := Run(context.Background(), &Env{Node: "n9"}, checks, nil)
	if len(fs) != 3 || fs[0].ID != "bad" || fs[1].ID != "boom" || fs[2].ID != "note" || fs[0].Node != "n9" {
		t.Fatalf("order or node: %+v", fs)
	}
	if ExitCode(fs) != 1 || ExitCode(fs[1:]) != 0 {
		t.Fatal("ExitCode")
	}
}

// A maintenance or standby is reported as information while young and
// as a warning once left on for MaintenanceWarnAfter, with the command
// that ends it.
func TestMaintenanceLeftOn(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	env := &Env{Node: "n1", Now: func() time.Time { return now }, Holds: []Hold{
		{What: "cluster maintenance", Off: "lifeboat maintenance off", Since: now.Add(-10 * time.Minute), By: "root on n1 (local socket)", Reason: "CHG-1"},
		{What: "standby of node n2", Off: "lifeboat node unstandby n2", Node: "n2", Since: now.Add(-MaintenanceWarnAfter - time.Minute)},
	}}
	fs := findings(t, env, "maintenance")
	if len(fs) != 2 {
		t.Fatalf("findings %+v, want 2", fs)
	}
	// Worst first: the standby left on.
	if fs[0].Severity != Warning || fs[0].Node != "n2" || fs[0].Command != "lifeboat node unstandby n2" || !strings.Contains(fs[0].Fix, "left on") {
		t.Errorf("old standby: %+v", fs[0])
	}
	if fs[1].Severity != Info || !strings.Contains(fs[1].Seen, "root on n1") || !strings.Contains(fs[1].Seen, "CHG-1") || fs[1].Command != "lifeboat maintenance off" {
		t.Errorf("young maintenance: %+v", fs[1])
	}
	if fs := findings(t, &Env{Node: "n1"}, "maintenance"); len(fs) != 0 {
		t.Errorf("findings without any maintenance: %+v", fs)
	}
}

// Membership: a removed node still running, a non-voter left half-added,
// and a config whose cluster.nodes no longer matches a membership that
// changed at run time.
func TestMembershipFindings(t *testing.T) {
	members := []Member{{Name: "n1", Suffrage: "voter"}, {Name: "n2", Suffrage: "voter"}, {Name: "n3", Suffrage: "voter"}, {Name: "n4", Suffrage: "nonvoter"}}
	fs := findings(t, &Env{Node: "n1", Members: members, Configured: []string{"n3", "n2", "n1"}, MembershipChanged: true}, "membership")
	if len(fs) != 2 {
		t.Fatalf("findings %+v, want 2", fs)
	}
	if fs[0].Severity != Warning || fs[0].Node != "n4" || fs[0].Command != "lifeboat node remove n4" {
		t.Errorf("non-voter: %+v", fs[0])
	}
	if fs[1].Severity != Info || !strings.Contains(fs[1].Seen, "n1, n2, n3, n4") || !strings.Contains(fs[1].Fix, "cluster.join") {
		t.Errorf("config drift: %+v", fs[1])
	}
	// The same lists, or a membership never changed: nothing.
	members[3].Suffrage = "voter"
	if fs := findings(t, &Env{Node: "n1", Members: members, Configured: []string{"n1", "n2", "n3", "n4"}, MembershipChanged: true}, "membership"); len(fs) != 0 {
		t.Errorf("matching config: %+v", fs)
	}
	if fs := findings(t, &Env{Node: "n1", Members: members, Configured: []string{"n1", "n2", "n3"}}, "membership"); len(fs) != 0 {
		t.Errorf("membership never changed: %+v", fs)
	}
	if fs := findings(t, &Env{Node: "n4", Removed: true, Members: members}, "membership"); len(fs) != 1 || fs[0].Severity != Warning || !strings.Contains(fs[0].Seen, "removed") {
		t.Errorf("removed node: %+v", fs)
	}
}
