package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

const secretToken = "s3cr3t-token-value-0123456789"

// No command's --help shows the token from the environment: it is read
// when a command runs, and the help names the variable instead.
func TestHelpShowsNoToken(t *testing.T) {
	t.Setenv(tokenEnv, secretToken)
	root := rootCmd()
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		var buf bytes.Buffer
		c.SetOut(&buf)
		c.SetErr(&buf)
		if err := c.Help(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(buf.String(), secretToken) {
			t.Errorf("%q --help shows the token:\n%s", c.CommandPath(), buf.String())
		}
		if c.HasAvailableInheritedFlags() || c == root {
			if !strings.Contains(buf.String(), "env "+tokenEnv) || !strings.Contains(buf.String(), "--token-file") {
				t.Errorf("%q --help does not name %s and --token-file:\n%s", c.CommandPath(), tokenEnv, buf.String())
			}
		}
		n++
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	t.Logf("%d commands' help checked", n)
}

func TestTokenSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(tokenEnv, "from-env")
	defer func() { g = globals{} }()
	cases := []struct {
		flag, file, want, err string
	}{
		{"", "", "from-env", ""},
		{"from-flag", "", "from-flag", ""},
		{"", file, "from-file", ""},
		{"from-flag", file, "", "both set"},
		{"", filepath.Join(dir, "missing"), "", "check --token-file"},
		{"", empty, "", "is empty"},
	}
	for _, c := range cases {
		g = globals{token: c.flag, tokenFile: c.file}
		got, err := token()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("--token %q --token-file %q: error %v, want %q", c.flag, c.file, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("--token %q --token-file %q: %q, %v; want %q", c.flag, c.file, got, err, c.want)
		}
	}
}
