package upgrade

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-ha/lifeboat/internal/api"
)

// agentYAML is a valid agent config; extra is appended to its aws section.
func agentYAML(dir, aws, extra string) string {
	return fmt.Sprintf(`node: node1
data_dir: %s
cluster:
  key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
  nodes:
    - name: node1
      raft: 127.0.0.1:7101
      gossip: 127.0.0.1:7102
      api: 127.0.0.1:7103
aws:
  region: us-east-1
%s%s`, filepath.Join(dir, "data"), aws, extra)
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// lineOf is the 1-based line of the first line of text containing s.
func lineOf(text, s string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	return 0
}

// A table of made-up changes, as a later release would add them.
var testChanges = []ConfigChange{
	{Key: "aws.proxy", NewKey: "aws.https_proxy", Version: "0.2.0", Do: "move the value to aws.https_proxy"},
	{Key: "aws.legacy_retries", Version: "0.2.0", Do: "delete it: retries follow aws.max_attempts"},
	{Key: "cluster.nodes[].address", NewKey: "cluster.nodes[].api", Version: "0.2.0", Do: "use api"},
	{Key: "log_format", Version: "0.3.0", Do: "only in 0.3.0"},
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		text string
		// want: key -> kind of finding ("renamed", "removed", "rejected")
		want map[string]string
		// cfgOK: the config could be used for the rest of the check
		cfgOK bool
		check func(t *testing.T, text string, gaps []Gap)
	}{
		{name: "clean", text: agentYAML(dir, "  https_proxy: http://proxy:3128\n", ""), want: map[string]string{}, cfgOK: true},
		{name: "renamed key is named at its line and its value carried over",
			text: agentYAML(dir, "  proxy: http://proxy:3128\n", ""), want: map[string]string{"aws.proxy": "renamed"}, cfgOK: true,
			check: func(t *testing.T, text string, gaps []Gap) {
				g := gaps[0]
				if g.Line != lineOf(text, "proxy: http") || g.NewKey != "aws.https_proxy" || g.Version != "0.2.0" || g.Removed ||
					!strings.Contains(g.Message, "aws.proxy was renamed to aws.https_proxy in lifeboat 0.2.0") || g.Fix != "move the value to aws.https_proxy" {
					t.Errorf("gap %+v", g)
				}
			}},
		{name: "removed key", text: agentYAML(dir, "  legacy_retries: 3\n", ""), want: map[string]string{"aws.legacy_retries": "removed"}, cfgOK: true,
			check: func(t *testing.T, text string, gaps []Gap) {
				if g := gaps[0]; !g.Removed || g.NewKey != "" || g.Line != lineOf(text, "legacy_retries") {
					t.Errorf("gap %+v", g)
				}
			}},
		{name: "a key in a list item", text: strings.Replace(agentYAML(dir, "", ""), "api: 127.0.0.1:7103", "address: 127.0.0.1:7103", 1),
			want: map[string]string{"cluster.nodes[].address": "renamed"}, cfgOK: true},
		{name: "unknown key the new parser rejects, with its line", text: agentYAML(dir, "", "bogus_setting: 1\n"),
			want: map[string]string{"bogus_setting": "rejected"}, cfgOK: true,
			check: func(t *testing.T, text string, gaps []Gap) {
				g := gaps[0]
				if g.Line != lineOf(text, "bogus_setting") || !strings.HasSuffix(g.File, "agent.yaml") || !strings.Contains(g.Message, `unknown key "bogus_setting"`) || !strings.Contains(g.Fix, "remove the key") {
					t.Errorf("gap %+v", g)
				}
			}},
		{name: "a change of a later version does not apply", text: agentYAML(dir, "", "log_format: json\n"),
			want: map[string]string{"log_format": "rejected"}, cfgOK: true},
		{name: "a value the new version rejects stops the rest", text: agentYAML(dir, "", "log_level: loud\n"),
			want: map[string]string{"log_level": "rejected"}, cfgOK: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.text)
			gaps, cfg, err := CheckConfig(p, "0.2.0-dev", testChanges)
			got := map[string]string{}
			for _, g := range gaps {
				if g.Kind != GapConfig || g.File != p || g.Line == 0 {
					t.Errorf("gap without kind, file or line: %+v", g)
				}
				kind := "rejected"
				switch {
				case g.Version != "" && g.Removed:
					kind = "removed"
				case g.Version != "":
					kind = "renamed"
				}
				got[g.Key] = kind
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("findings %v, want %v (gaps %+v)", got, tc.want, gaps)
			}
			if (cfg != nil) != tc.cfgOK || (err == nil) != tc.cfgOK {
				t.Errorf("config usable = %v (err %v), want %v", cfg != nil, err, tc.cfgOK)
			}
			if tc.check != nil && len(gaps) > 0 {
				tc.check(t, tc.text, gaps)
			}
		})
	}
	// The renamed value is what the rest of the check uses.
	_, cfg, err := CheckConfig(writeConfig(t, agentYAML(dir, "  proxy: http://proxy:3128\n", "")), "0.2.0", testChanges)
	if err != nil || cfg.AWS.HTTPSProxy != "http://proxy:3128" || cfg.Node != "node1" {
		t.Errorf("migrated config: %+v, %v", cfg, err)
	}
	if _, _, err := CheckConfig(filepath.Join(dir, "missing.yaml"), "0.2.0", nil); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("missing file: %v", err)
	}
}

// Every entry of the real table is complete.
func TestConfigChangesTable(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range ConfigChanges {
		if c.Key == "" || c.Version == "" || c.Do == "" || !Newer(c.Version, "0.0.0") {
			t.Errorf("incomplete entry %+v: every change needs the old key, the version and what to do", c)
		}
		if seen[c.Key] {
			t.Errorf("%s is in the table twice", c.Key)
		}
		seen[c.Key] = true
	}
}

func TestNewer(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"0.2.0", "0.1.0", true},
		{"0.2.0", "0.1.0-dev", true},
		{"0.2.0-dev", "0.2.0", false},
		{"0.2.0", "0.2.0-dev", false},
		{"0.10.0", "0.9.9", true},
		{"1.0", "0.99.99", true},
		{"0.1.0", "0.2.0", false},
		{"0.1", "0.1.0", false},
		{"", "0.1.0", false},
		{"0.1.0", "", true},
	} {
		if got := Newer(tc.a, tc.b); got != tc.want {
			t.Errorf("Newer(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestLevelGap(t *testing.T) {
	for _, tc := range []struct {
		level int
		want  string // "" no gap, else a word of the message
	}{
		{0, ""}, // an agent before feature levels: level 1
		{1, ""},
		{SupportedLevel, ""},
		{SupportedLevel + 1, "supports only up to"},
	} {
		g := LevelGap(tc.level, "0.2.0")
		switch {
		case tc.want == "" && g != nil:
			t.Errorf("level %d: gap %+v", tc.level, g)
		case tc.want != "" && (g == nil || g.Kind != GapFeatureLevel || !strings.Contains(g.Message, tc.want) || g.Fix == ""):
			t.Errorf("level %d: gap %+v, want one saying %q", tc.level, g, tc.want)
		}
	}
}

func TestExitCodeAndTooOld(t *testing.T) {
	ready := Report{Node: "a"}
	ready.Finish()
	old := FromError("b", "0.1.0-dev", "0.2.0", fmt.Errorf("call: %w", &api.StatusError{Code: 404, Msg: "404 page not found"}))
	if !old.TooOld || old.Ready || !strings.Contains(strings.Join(old.Errors, ""), "run `lifeboat upgrade check` with the new binary on b") {
		t.Fatalf("404: %+v", old)
	}
	down := FromError("c", "", "0.2.0", errors.New("connection refused"))
	if down.TooOld || !strings.Contains(down.Errors[0], "connection refused") {
		t.Fatalf("unreachable: %+v", down)
	}
	gap := Report{Node: "d", Gaps: []Gap{{Kind: GapPermission, Action: "ec2:X"}}}
	gap.Finish()
	for _, tc := range []struct {
		rs   []Report
		want int
	}{
		{nil, ExitReady},
		{[]Report{ready}, ExitReady},
		{[]Report{ready, old}, ExitError},
		{[]Report{ready, down, gap}, ExitGap},
	} {
		if got := ExitCode(tc.rs); got != tc.want {
			t.Errorf("ExitCode(%d reports) = %d, want %d", len(tc.rs), got, tc.want)
		}
	}
}

// The key walk reads whatever the operator's file holds without panicking,
// aliases and deep nesting included.
func FuzzConfigKeys(f *testing.F) {
	f.Add([]byte(agentYAML("/tmp", "  proxy: x\n", "")))
	f.Add([]byte("a: &x {b: *x}\n"))
	f.Add([]byte("- [[[[[[[[[[a]]]]]]]]]]\n"))
	f.Add([]byte("a:\n  - b: 1\n    c: [d: 2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range keys(data) {
			if k.line <= 0 {
				t.Fatalf("key %q without a line", k.path)
			}
		}
	})
}
