package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseNotify(t *testing.T) {
	good := goodAgent + `notify:
  - webhook:
      url: https://hooks.example.com/lifeboat
      headers_file: hooks.headers
    filter:
      kinds: [failover, maintenance]
      min_severity: critical
  - name: pager
    command:
      argv: [/usr/local/bin/page, --team, ops]
      timeout: 3s
    retries: 0
    queue: 5
`
	a, err := ParseAgent("/etc/lifeboat/agent.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	w, c := a.Notify[0], a.Notify[1]
	if w.Name != "webhook-1" || w.Type() != "webhook" || w.Webhook.HeadersFile != "/etc/lifeboat/hooks.headers" || w.Timeout() != 5*time.Second ||
		*w.Retries != DefaultNotifyRetries || w.Backoff.D() != time.Second || w.Queue != DefaultNotifyQueue || w.Filter.MinSeverity != "critical" {
		t.Errorf("webhook notifier with defaults: %+v %+v", w, *w.Webhook)
	}
	if c.Name != "pager" || c.Type() != "command" || c.Timeout() != 3*time.Second || *c.Retries != 0 || c.Queue != 5 || c.Filter.MinSeverity != "warning" {
		t.Errorf("command notifier: %+v", c)
	}
	if a.Cluster.Name != "lifeboat" {
		t.Errorf("cluster name %q, want the default lifeboat", a.Cluster.Name)
	}

	for _, tc := range []struct{ notify, field, want string }{
		{"  - filter: {kinds: [failover]}\n", "notify[0]", "set webhook"},
		{"  - webhook: {url: https://x}\n    command: {argv: [/bin/true]}\n", "notify[0]", "not both"},
		{"  - webhook: {url: ftp://x}\n", "notify[0].webhook.url", "not an http or https URL"},
		{"  - webhook: {url: 'https://u:secretpw@x'}\n", "notify[0].webhook.url", "headers_file"},
		{"  - command: {argv: [page]}\n", "notify[0].command.argv", "absolute path"},
		{"  - command: {argv: [/bin/true], timeout: 10m}\n", "notify[0].command.timeout", "between 100ms and 5m"},
		{"  - command: {argv: [/bin/true]}\n    retries: 11\n", "notify[0].retries", "between 0 and 10"},
		{"  - command: {argv: [/bin/true]}\n    queue: 100000\n", "notify[0].queue", "between 1 and 10000"},
		{"  - command: {argv: [/bin/true]}\n    filter: {min_severity: loud}\n", "notify[0].filter.min_severity", "not a severity"},
		{"  - command: {argv: [/bin/true]}\n    filer: {}\n", "notify[0].filer", "unknown"},
		{"  - name: a\n    command: {argv: [/bin/true]}\n  - name: a\n    command: {argv: [/bin/true]}\n", "notify[1].name", "unique"},
	} {
		_, err := ParseAgent("agent.yaml", []byte(goodAgent+"notify:\n"+tc.notify))
		if err == nil {
			t.Errorf("%q: accepted", tc.notify)
			continue
		}
		e := find(t, asErrors(t, err), tc.field)
		if !strings.Contains(e.Message, tc.want) || e.Line == 0 {
			t.Errorf("%q: %s, want %q at a line", tc.notify, e, tc.want)
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("the error quotes the URL's password: %v", err)
		}
	}
}

func TestHeadersFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "h")
	write := func(mode os.FileMode, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(0o600, "# comment\nAuthorization: Bearer s3cret-token\n\nX-Team:  ops \n")
	h, err := ReadHeadersFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if h.Get("Authorization") != "Bearer s3cret-token" || h.Get("X-Team") != "ops" || len(h) != 2 {
		t.Fatalf("headers %v", h)
	}
	for _, tc := range []struct {
		mode    os.FileMode
		content string
		want    string
	}{
		{0o644, "Authorization: Bearer s3cret-token\n", "chmod 600"},
		{0o602, "Authorization: Bearer s3cret-token\n", "chmod 600"},
		{0o600, "Authorization Bearer s3cret-token\n", ":1: not a \"Name: value\""},
		{0o600, "X-A: 1\nContent-Type: text/plain s3cret-token\n", ":2: the agent sets Content-Type"},
	} {
		write(tc.mode, tc.content)
		_, err := ReadHeadersFile(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("mode %o %q: %v, want %q naming the file", tc.mode, tc.content, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error quotes the file's content: %v", err)
		}
	}

	// LoadAgent refuses a world-readable headers file, at its line.
	write(0o644, "Authorization: Bearer s3cret-token\n")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(goodAgent+"notify:\n  - webhook:\n      url: https://x\n      headers_file: h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadAgent(cfg)
	if err == nil {
		t.Fatal("LoadAgent accepted a world-readable headers file")
	}
	e := find(t, asErrors(t, err), "notify[0].webhook.headers_file")
	if !strings.Contains(e.Message, "chmod 600") || e.Line == 0 {
		t.Fatalf("LoadAgent: %s", e)
	}
}
