package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/demo"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Disaster recovery: a backup taken of a running cluster brings the same
// hierarchies back, started or stopped as they were, into a fresh cluster
// whose every data directory was destroyed; a backup with one byte changed
// is refused with a clear message and changes nothing.
func TestBackupRestore(t *testing.T) {
	c := startCluster(t, demo.Options{})
	apply(t, c, flagHierarchy("bk-web", three, spec.SwitchbackIntelligent, 1, ""), flagHierarchy("bk-db", []string{"node2", "node1", "node3"}, spec.SwitchbackIntelligent, 1, ""))
	waitFor(t, c, "node1", 10*time.Second, "bk-web online on node1", onlineOn("bk-web", "node1"))
	waitFor(t, c, "node1", 10*time.Second, "bk-db online on node2", onlineOn("bk-db", "node2"))
	if out, errOut, code := lifeboat(t, c, "node3", "stop", "bk-db"); code != 0 {
		t.Fatalf("stop bk-db: exit %d\n%s%s", code, out, errOut)
	}
	waitFor(t, c, "node1", 10*time.Second, "bk-db stopped", func(st api.Status) bool { return hier(st, "bk-db").State == "stopped" })

	// The backup, asked of a follower (the leader answers).
	file := filepath.Join(t.TempDir(), "cluster.json")
	out, errOut, code := lifeboat(t, c, "node3", "backup", "-o", file, "--json")
	var info api.BackupInfo
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	if info.Hierarchies != 2 || info.Members != 3 || info.RaftIndex == 0 || info.FeatureLevel != 2 {
		t.Fatalf("backup: %+v", info)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v", err, fi.Mode())
	}
	saved, _ := os.ReadFile(file)
	if _, errOut, code := lifeboat(t, c, "node3", "backup", "-o", file); code == 0 || !strings.Contains(errOut, "exists") {
		t.Fatalf("backup over an existing file without --force: exit %d: %s", code, errOut)
	}
	if now, _ := os.ReadFile(file); !bytes.Equal(now, saved) {
		t.Fatal("a refused backup changed the existing file")
	}

	// Disaster: every agent gone, every data directory with it.
	c.Kill()
	for _, n := range c.Nodes {
		if err := os.RemoveAll(filepath.Join(c.Dir, n.Name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		if err := c.StartNode(n.Name); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, c, "node1", 10*time.Second, "the fresh cluster at feature level 2", func(st api.Status) bool { return st.FeatureLevel == 2 })
	if len(st.Hierarchies) != 0 {
		t.Fatalf("the fresh cluster has hierarchies: %+v", st.Hierarchies)
	}

	// One byte changed: refused by the CLI, and by the agent if sent
	// anyway; nothing changes.
	corrupt := bytes.Clone(saved)
	i := bytes.Index(corrupt, []byte(`"bk-web-res"`))
	if i < 0 {
		t.Fatalf("no bk-web-res in the backup:\n%s", saved)
	}
	corrupt[i+4] = 'X'
	bad := filepath.Join(t.TempDir(), "corrupt.json")
	writeFile(t, bad, string(corrupt))
	out, errOut, code = lifeboat(t, c, "node2", "restore", "-f", bad)
	if code != 2 || !strings.Contains(errOut, bad+": checksum mismatch") || !strings.Contains(errOut, "nothing was changed") {
		t.Fatalf("restore of a corrupt backup: exit %d, want 2 with the file named and a checksum mismatch\n%s%s", code, out, errOut)
	}
	t.Logf("restore of a corrupt backup: exit %d: %s", code, errOut)
	err = c.Client("node2").Do(ctx, "POST", "/v1/restore", api.RestoreRequest{Backup: corrupt, Name: "corrupt.json"}, nil)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Msg, "corrupt.json: checksum mismatch") {
		t.Fatalf("the agent took a corrupt backup: %v", err)
	}
	// A dry run shows what would be created and creates nothing.
	out, errOut, code = lifeboat(t, c, "node2", "restore", "-f", file, "--dry-run")
	if code != 0 || !strings.Contains(out, "+ bk-db   create, offline") || !strings.Contains(out, "+ bk-web  create, online") ||
		!strings.Contains(out, "membership: as in the backup") || !strings.Contains(out, "dry run: nothing was changed") {
		t.Fatalf("restore --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("restore --dry-run:\n%s", out)
	if st, _ := c.Status(ctx, "node1"); len(st.Hierarchies) != 0 {
		t.Fatalf("a refused restore or a dry run changed the cluster: %+v", st.Hierarchies)
	}

	// The restore, through a follower.
	out, errOut, code = lifeboat(t, c, "node3", "restore", "-f", file, "--json")
	var resp api.RestoreResponse
	if code != 0 || json.Unmarshal([]byte(out), &resp) != nil {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	if !resp.Applied || !resp.SameCluster || strings.Join(resp.Diff.Created, ",") != "bk-db,bk-web" || len(resp.Diff.Members) != 0 {
		t.Fatalf("restore: %+v", resp)
	}
	waitFor(t, c, "node2", 10*time.Second, "bk-web back online on node1", onlineOn("bk-web", "node1"))
	if _, err := os.Stat(filepath.Join(c.Dir, "node1", "bk-web.up")); err != nil {
		t.Fatalf("bk-web is not in service on node1: %v", err)
	}
	st = waitFor(t, c, "node2", 10*time.Second, "bk-db restored stopped", func(st api.Status) bool {
		h := hier(st, "bk-db")
		return h.Name == "bk-db" && !h.Online && h.Owner == ""
	})
	if h := hier(st, "bk-db"); strings.Join(h.Nodes, ",") != "node2,node1,node3" {
		t.Fatalf("bk-db came back with nodes %v", h.Nodes)
	}
	// bk-db was never restored anywhere: no node ran it, not for a moment.
	var evs api.EventsResponse
	if err := c.Client("node1").Do(ctx, "GET", "/v1/events", nil, &evs); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Events {
		if e.Hierarchy == "bk-db" && e.Action == "restore" {
			t.Fatalf("bk-db was restored on %s after the disaster: %+v", e.Node, e)
		}
	}
	for _, n := range three {
		if _, err := os.Stat(filepath.Join(c.Dir, n, "bk-db.up")); err == nil {
			t.Fatalf("bk-db runs on %s", n)
		}
	}

	// The same restore again: nothing to do.
	out, errOut, code = lifeboat(t, c, "node1", "restore", "-f", file)
	t.Logf("second restore:\n%s", out)
	if code != 0 || !strings.Contains(out, "nothing to restore") || !strings.Contains(out, "= bk-web  unchanged, online") {
		t.Fatalf("second restore: exit %d\n%s%s", code, out, errOut)
	}
}
