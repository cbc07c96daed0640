package agenttest_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/agent"
	"github.com/lifeboat-ha/lifeboat/internal/agent/agenttest"
	"github.com/lifeboat-ha/lifeboat/internal/report"
)

// TestReportWithASilentNode: the support bundle is gathered from every
// node; a node that is cut off (it answers nothing) is listed unreachable
// once its bound runs out and the rest of the bundle is complete. The
// cluster key sits inline in every node's config: it appears nowhere in the
// bundle, nor do the tokens derived from it.
func TestReportWithASilentNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := agenttest.MakeCluster(t, 3, agenttest.Setup{})
		c.Eventually(10*time.Second, "every lease fresh", func() (bool, string) {
			st, err := c.Status("node1")
			if err != nil {
				return false, err.Error()
			}
			for _, n := range st.Nodes {
				if !n.LeaseFresh {
					return false, n.Name + " has no fresh lease"
				}
			}
			return st.Leader != "", "no leader"
		})
		if err := c.Apply(c.Service("web", c.Nodes())); err != nil {
			t.Fatal(err)
		}
		c.Eventually(10*time.Second, "web running", func() (bool, string) {
			r := c.Running("web")
			return len(r) == 1, strings.Join(r, ",")
		})
		if err := c.Hang("node3"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var buf bytes.Buffer
		if err := c.Fetch("node1", "/v1/report", &buf); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		m, files, err := report.Read(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Nodes) != 3 || !m.Nodes[0].Reached || !m.Nodes[1].Reached || m.Nodes[2].Reached || m.Nodes[2].Error == "" {
			t.Fatalf("nodes %+v", m.Nodes)
		}
		// node3 is silent from the start: the wait follows the failure
		// detector (failed within about a second, then the dead-peer
		// bound of 3 s), not the 45 s given to a live node (nor the
		// in-memory network's 10 s dial timeout).
		if took > 6*time.Second {
			t.Fatalf("the report waited %s for a silent node", took)
		}
		if !strings.HasPrefix(m.RequestedBy, "token derived (admin) from ") {
			t.Fatalf("requested_by %q", m.RequestedBy)
		}
		for _, n := range []string{"node1", "node2"} {
			for _, part := range []string{"version.json", "runtime.json", "events.jsonl", "doctor.json", "config.json", "logs.txt"} {
				if len(files["nodes/"+n+"/"+part]) == 0 {
					t.Errorf("no nodes/%s/%s", n, part)
				}
			}
		}
		if cfg := files["nodes/node2/config.json"]; !bytes.Contains(cfg, []byte(`"key": "[REDACTED]"`)) {
			t.Errorf("node2's inline cluster key is not shown redacted:\n%s", cfg)
		}
		if !bytes.Contains(files["nodes/node1/logs.txt"], []byte("leading the cluster")) && !bytes.Contains(files["nodes/node2/logs.txt"], []byte("leading the cluster")) {
			t.Errorf("no leader's log line in the logs of node1 or node2")
		}
		zr, err := gzip.NewReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		key := c.Key()
		for what, s := range map[string]string{
			"cluster key": base64.StdEncoding.EncodeToString(key), "cluster key (hex)": hex.EncodeToString(key),
			"API token": agent.DeriveToken(key, "lifeboat-api"), "internal token": agent.DeriveToken(key, "lifeboat-internal"),
		} {
			if bytes.Contains(all, []byte(s)) {
				t.Errorf("the bundle contains the %s", what)
			}
		}
		if err := c.Resume("node3"); err != nil {
			t.Fatal(err)
		}
	})
}
