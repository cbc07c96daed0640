package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/config"
)

// lifeboat init writes a config the agent accepts, a key and a token file,
// all 0600; a second node given the first one's key gets the same key;
// bad input is refused before anything is written.
func TestInit(t *testing.T) {
	members := []string{"db1=10.0.1.10", "db2=10.0.2.10", "quorum=fd00::3,witness"}
	first := filepath.Join(t.TempDir(), "etc")
	if _, err := writeInit(initOptions{Node: "db1", Members: members, Dir: first, DataDir: "/var/lib/lifeboat"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"agent.yaml", "cluster.key", "api.tokens"} {
		st, err := os.Stat(filepath.Join(first, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, st)
		}
	}
	cfg, err := config.LoadAgent(filepath.Join(first, "agent.yaml"))
	if err != nil {
		t.Fatalf("the agent refuses init's config: %v", err)
	}
	if cfg.Node != "db1" || len(cfg.Cluster.Nodes) != 3 || !cfg.Cluster.Nodes[2].Witness || cfg.Cluster.Nodes[2].Raft != "[fd00::3]:7101" || cfg.Cluster.Nodes[0].API != "10.0.1.10:7100" || len(cfg.KeyBytes()) != 32 {
		t.Fatalf("config: %+v", cfg.Cluster)
	}
	tokens, _ := os.ReadFile(filepath.Join(first, "api.tokens"))
	if !strings.Contains(string(tokens), "\nadmin admin ") {
		t.Fatalf("tokens: %q", tokens)
	}

	second := filepath.Join(t.TempDir(), "etc")
	if _, err := writeInit(initOptions{Node: "db2", Members: members, Dir: second, DataDir: "/var/lib/lifeboat", KeyFile: filepath.Join(first, "cluster.key")}); err != nil {
		t.Fatal(err)
	}
	k1, _ := os.ReadFile(filepath.Join(first, "cluster.key"))
	k2, _ := os.ReadFile(filepath.Join(second, "cluster.key"))
	if string(k1) != string(k2) {
		t.Fatal("the second node's key differs from the one given")
	}
	// Run again: refused without --force; with it, the key and tokens stay.
	if _, err := writeInit(initOptions{Node: "db1", Members: members, Dir: first, DataDir: "/d"}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init: %v", err)
	}
	res, err := writeInit(initOptions{Node: "db1", Members: members, Dir: first, DataDir: "/d", Force: true})
	if k, _ := os.ReadFile(filepath.Join(first, "cluster.key")); err != nil || string(k) != string(k1) || len(res.kept) != 2 {
		t.Fatalf("init --force: %v, kept %v", err, res.kept)
	}
	// Another node's key where one is already: refused.
	other := filepath.Join(t.TempDir(), "k")
	_ = os.WriteFile(other, []byte("aGVsbG8gd29ybGQgMTIzNA==\n"), 0o600)
	if _, err := writeInit(initOptions{Node: "db1", Members: members, Dir: first, DataDir: "/d", Force: true, KeyFile: other}); err == nil || !strings.Contains(err.Error(), "not the key given") {
		t.Fatalf("key mismatch: %v", err)
	}

	for _, tc := range []struct {
		node    string
		members []string
		key     string
		want    string
	}{
		{"db1", []string{"db1"}, "", "give NAME=ADDRESS"},
		{"db1", []string{"db1=10.0.0.1,primary"}, "", `"primary" is not a flag`},
		{"db1", []string{"db/1=10.0.0.1"}, "", "not a valid node name"},
		{"db1", []string{"db1=10.0.0.1", "db2=10.0.0.2"}, "", "witness"},
		{"db9", members, "", "db9"},
		{"db1", members, "/nonexistent/key", "--key-file"},
	} {
		dir := filepath.Join(t.TempDir(), "etc")
		_, err := writeInit(initOptions{Node: tc.node, Members: tc.members, Dir: dir, DataDir: "/d", KeyFile: tc.key})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want %q", tc.node, tc.members, err, tc.want)
		}
		if _, serr := os.Stat(dir); serr == nil {
			t.Errorf("%v: wrote files despite the error", tc.members)
		}
	}
}
