package agenttest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/backup"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
)

// leaderAndFollower waits for a leader at feature level 2.
func leaderAndFollower(t *testing.T, c *agenttest.Cluster) (leader, follower string) {
	t.Helper()
	c.Eventually(10*time.Second, "a leader at feature level 2", func() (bool, string) {
		st, err := c.Status("node1")
		if err != nil {
			return false, err.Error()
		}
		leader = st.Leader
		return leader != "" && st.FeatureLevel == cluster.LevelTyped, fmt.Sprintf("leader %q, level %d", st.Leader, st.FeatureLevel)
	})
	for _, n := range c.Nodes() {
		if n != leader {
			return leader, n
		}
	}
	return leader, ""
}

func takeBackup(t *testing.T, c *agenttest.Cluster, node string) (json.RawMessage, *backup.Backup) {
	t.Helper()
	var raw json.RawMessage
	if err := c.Call(node, "GET", "/v1/backup", nil, &raw); err != nil {
		t.Fatalf("backup through %s: %v", node, err)
	}
	b, err := backup.Decode("backup", raw, nil)
	if err != nil {
		t.Fatalf("the agent's backup does not read back: %v", err)
	}
	return raw, b
}

// Restore into the running cluster it came from, through a follower: the
// leader answers the backup with what was committed, a dry run changes
// nothing, and the restore brings back a stopped hierarchy's wish, a
// changed spec and (with prune) deletes what was added since.
func TestRestoreRunningCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := agenttest.MakeCluster(t, 3, agenttest.Setup{})
		leader, follower := leaderAndFollower(t, c)
		web, db := c.Service("web", c.Nodes()), c.Service("db", []string{"node2", "node1", "node3"})
		if err := c.Apply(web, db); err != nil {
			t.Fatal(err)
		}
		raw, b := takeBackup(t, c, follower)
		if b.Node != leader || len(b.Hierarchies) != 2 || b.Wishes["web"] != backup.Online || len(b.Members) != 3 {
			t.Fatalf("backup through %s: node %s (leader %s), %d hierarchies, wishes %v, members %v", follower, b.Node, leader, len(b.Hierarchies), b.Wishes, b.Members)
		}
		c.Eventually(10*time.Second, "web and db running", func() (bool, string) {
			return len(c.Running("web")) == 1 && len(c.Running("db")) == 1, fmt.Sprint(c.Running("web"), c.Running("db"))
		})

		// Since the backup: web stopped, db's priorities changed, extra added.
		if err := c.Call(follower, "POST", "/v1/hierarchies/web/stop", api.ActionRequest{}, nil); err != nil {
			t.Fatal(err)
		}
		db2 := c.Service("db", []string{"node3", "node2", "node1"})
		if err := c.Apply(db2, c.Service("extra", c.Nodes())); err != nil {
			t.Fatal(err)
		}
		var dry api.RestoreResponse
		if err := c.Call(follower, "POST", "/v1/restore", api.RestoreRequest{Backup: raw, DryRun: true, Prune: true}, &dry); err != nil {
			t.Fatal(err)
		}
		want := backup.Diff{Updated: []backup.Change{{Hierarchy: "db", Fields: []string{"nodes"}}}, Unchanged: []string{"web"}, Missing: []string{"extra"},
			Wishes: []backup.WishChange{{Hierarchy: "web", From: backup.Offline, To: backup.Online}}}
		if dry.Applied || !dry.SameCluster || !reflect.DeepEqual(dry.Diff, want) {
			t.Fatalf("dry run: %+v\nwant diff %+v", dry, want)
		}
		c.Eventually(10*time.Second, "web stopped, extra running", func() (bool, string) {
			return len(c.Running("web")) == 0 && len(c.Running("extra")) == 1, fmt.Sprint(c.Running("web"), c.Running("extra"))
		})

		var res api.RestoreResponse
		if err := c.Call(follower, "POST", "/v1/restore", api.RestoreRequest{Backup: raw, Prune: true}, &res); err != nil {
			t.Fatal(err)
		}
		if !res.Applied || res.Node != leader || res.RaftIndex <= dry.RaftIndex {
			t.Fatalf("restore: %+v", res)
		}
		c.Eventually(10*time.Second, "web back, extra gone, db with its old priorities", func() (bool, string) {
			st, err := c.Status(follower)
			if err != nil {
				return false, err.Error()
			}
			var names []string
			nodes := ""
			for _, h := range st.Hierarchies {
				names = append(names, h.Name)
				if h.Name == "db" {
					nodes = strings.Join(h.Nodes, ",")
				}
			}
			ok := len(c.Running("web")) == 1 && len(c.Running("extra")) == 0 && strings.Join(names, ",") == "db,web" && nodes == "node2,node1,node3"
			return ok, fmt.Sprintf("web on %v, extra on %v, hierarchies %v, db nodes %s", c.Running("web"), c.Running("extra"), names, nodes)
		})
		if d := c.DoubleOwners(); len(d) > 0 {
			t.Fatalf("double owners: %v", d)
		}
	})
}

// Without a quorum there is no leader to read or commit through: backup
// and restore are refused with what is wrong, and nothing is half done.
func TestBackupRestoreWithoutQuorum(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := agenttest.MakeCluster(t, 3, agenttest.Setup{})
		leaderAndFollower(t, c)
		if err := c.Apply(c.Service("web", c.Nodes())); err != nil {
			t.Fatal(err)
		}
		raw, _ := takeBackup(t, c, "node1")
		c.Kill("node2")
		c.Kill("node3")
		var se *api.StatusError
		var raw2 json.RawMessage
		err := c.Call("node1", "GET", "/v1/backup", nil, &raw2)
		if !errors.As(err, &se) || se.Code != 503 || !strings.Contains(se.Msg, "quorum") {
			t.Fatalf("backup without a quorum: %v", err)
		}
		t.Logf("backup without a quorum: %v", err)
		err = c.Call("node1", "POST", "/v1/restore", api.RestoreRequest{Backup: raw}, nil)
		if !errors.As(err, &se) || se.Code != 503 || !strings.Contains(se.Msg, "quorum") {
			t.Fatalf("restore without a quorum: %v", err)
		}
		t.Logf("restore without a quorum: %v", err)
		if st, err := c.Status("node1"); err != nil || len(st.Hierarchies) != 1 {
			t.Fatalf("after the refused restore: %v, %+v", err, st.Hierarchies)
		}
	})
}
