package config

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

// Notifier is one entry of the agent's notify: list: where to send the
// events this node records (a webhook or a command), which ones, and how
// hard to try.
type Notifier struct {
	// Name labels the notifier in metrics and logs (default webhook-N or
	// command-N, N its position from 1).
	Name    string   `yaml:"name"`
	Webhook *Webhook `yaml:"webhook"`
	Command *Command `yaml:"command"`
	Filter  Filter   `yaml:"filter"`
	// Retries after a failed attempt (default 3; 0: none).
	Retries *int `yaml:"retries"`
	// Backoff is the wait before the first retry, doubled before each
	// next one up to a minute (default 1s).
	Backoff spec.Duration `yaml:"backoff"`
	// Queue bounds the events waiting to be sent (default 100): when it
	// is full the oldest is dropped and counted.
	Queue int `yaml:"queue"`
}

// Webhook POSTs each event as JSON to URL.
type Webhook struct {
	URL string `yaml:"url"`
	// HeadersFile holds extra request headers, one "Name: value" per
	// line (an Authorization header, say). It may hold secrets: it must
	// not be readable by every user, and its content is never logged.
	HeadersFile string `yaml:"headers_file"`
	// Timeout bounds each attempt (default 5s).
	Timeout spec.Duration `yaml:"timeout"`
}

// Command runs a program for each event, with the event's JSON on its
// standard input.
type Command struct {
	// Argv is the program (an absolute path) and its arguments; no shell.
	Argv []string `yaml:"argv"`
	// Timeout bounds each attempt (default 10s); the process group is
	// killed when it runs out.
	Timeout spec.Duration `yaml:"timeout"`
}

// Filter selects the events a notifier sends; an empty list matches all.
type Filter struct {
	// Kinds: event kinds (failover, switchover, node, readiness, doctor,
	// quorum, maintenance, action, lease, cluster, watchdog, or any
	// other kind an agent records).
	Kinds       []string `yaml:"kinds"`
	Hierarchies []string `yaml:"hierarchies"`
	// MinSeverity is info, warning (default) or critical.
	MinSeverity string `yaml:"min_severity"`
}

// Notifier defaults and bounds.
const (
	DefaultNotifyRetries = 3
	DefaultNotifyQueue   = 100
	maxNotifyQueue       = 10000
)

// Type is "webhook" or "command" ("" when neither is set).
func (n *Notifier) Type() string {
	switch {
	case n.Webhook != nil:
		return "webhook"
	case n.Command != nil:
		return "command"
	}
	return ""
}

// Timeout bounds one attempt.
func (n *Notifier) Timeout() time.Duration {
	switch {
	case n.Webhook != nil:
		return n.Webhook.Timeout.D()
	case n.Command != nil:
		return n.Command.Timeout.D()
	}
	return 0
}

func (a *Agent) notifyDefaults() {
	for i := range a.Notify {
		n := &a.Notify[i]
		if n.Name == "" && n.Type() != "" {
			n.Name = fmt.Sprintf("%s-%d", n.Type(), i+1)
		}
		if n.Retries == nil {
			r := DefaultNotifyRetries
			n.Retries = &r
		}
		if n.Backoff == 0 {
			n.Backoff = spec.Duration(time.Second)
		}
		if n.Queue == 0 {
			n.Queue = DefaultNotifyQueue
		}
		if n.Filter.MinSeverity == "" {
			n.Filter.MinSeverity = "warning"
		}
		if n.Webhook != nil && n.Webhook.Timeout == 0 {
			n.Webhook.Timeout = spec.Duration(5 * time.Second)
		}
		if n.Command != nil && n.Command.Timeout == 0 {
			n.Command.Timeout = spec.Duration(10 * time.Second)
		}
	}
}

// notifyPaths returns the relative paths to resolve against the config
// file's directory.
func (a *Agent) notifyPaths() []*string {
	var ps []*string
	for i := range a.Notify {
		if w := a.Notify[i].Webhook; w != nil {
			ps = append(ps, &w.HeadersFile)
		}
	}
	return ps
}

func (a *Agent) validateNotify(add func(field, format string, args ...any)) {
	names := map[string]int{}
	for i, n := range a.Notify {
		f := fmt.Sprintf("notify[%d]", i)
		switch {
		case n.Webhook != nil && n.Command != nil:
			add(f, "set either webhook or command, not both (use two entries for both)")
		case n.Webhook == nil && n.Command == nil:
			add(f, "set webhook: {url: ...} or command: {argv: [...]}")
		}
		if n.Name != "" {
			if !spec.ValidName(n.Name) {
				add(f+".name", "%q is not a valid name (letters, digits, '-', '_', '.', 1-63 characters)", n.Name)
			} else if j, dup := names[n.Name]; dup {
				add(f+".name", "%q is also the name of notify[%d]: names must be unique", n.Name, j)
			} else {
				names[n.Name] = i
			}
		}
		if w := n.Webhook; w != nil {
			u, err := url.Parse(w.URL)
			switch {
			case w.URL == "":
				add(f+".webhook.url", "required: the URL to POST events to (for example https://hooks.example.com/lifeboat)")
			case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				add(f+".webhook.url", "%q is not an http or https URL (for example https://hooks.example.com/lifeboat)", redactUserinfo(w.URL))
			case u.User != nil:
				add(f+".webhook.url", "carries a user or password: put credentials in headers_file (an Authorization header) instead")
			}
			if w.HeadersFile != "" && !filepath.IsAbs(w.HeadersFile) {
				add(f+".webhook.headers_file", "%q must be an absolute path", w.HeadersFile)
			}
			checkAttemptTimeout(add, f+".webhook.timeout", w.Timeout, "5s")
		}
		if c := n.Command; c != nil {
			switch {
			case len(c.Argv) == 0:
				add(f+".command.argv", "required: the program and its arguments, for example [/usr/local/bin/page-oncall, --team, ops]")
			case !filepath.IsAbs(c.Argv[0]):
				add(f+".command.argv", "%q must be an absolute path (the agent runs it without a shell and without PATH lookup)", c.Argv[0])
			}
			checkAttemptTimeout(add, f+".command.timeout", c.Timeout, "10s")
		}
		if n.Retries != nil && (*n.Retries < 0 || *n.Retries > 10) {
			add(f+".retries", "must be between 0 and 10 (default %d)", DefaultNotifyRetries)
		}
		if d := n.Backoff.D(); d < 10*time.Millisecond || d > 5*time.Minute {
			add(f+".backoff", "must be between 10ms and 5m (default 1s)")
		}
		if n.Queue < 1 || n.Queue > maxNotifyQueue {
			add(f+".queue", "must be between 1 and %d (default %d)", maxNotifyQueue, DefaultNotifyQueue)
		}
		switch n.Filter.MinSeverity {
		case "info", "warning", "critical":
		default:
			add(f+".filter.min_severity", "%q is not a severity (use info, warning or critical)", n.Filter.MinSeverity)
		}
		for j, k := range n.Filter.Kinds {
			if strings.TrimSpace(k) == "" {
				add(fmt.Sprintf("%s.filter.kinds[%d]", f, j), "is empty: name an event kind such as failover")
			}
		}
		for j, h := range n.Filter.Hierarchies {
			if !spec.ValidName(h) {
				add(fmt.Sprintf("%s.filter.hierarchies[%d]", f, j), "%q is not a valid hierarchy name", h)
			}
		}
	}
}

func checkAttemptTimeout(add func(field, format string, args ...any), field string, d spec.Duration, def string) {
	if d.D() < 100*time.Millisecond || d.D() > 5*time.Minute {
		add(field, "must be between 100ms and 5m (default %s)", def)
	}
}

func redactUserinfo(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("REDACTED")
		return u.String()
	}
	return s
}

// ReadHeadersFile reads a webhook's headers file: one "Name: value" per
// line, blank lines and lines starting with # ignored. It refuses a file
// every user can read or write. Errors name the file and the line, never
// the content.
func ReadHeadersFile(path string) (http.Header, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("headers file %s: %w", path, err)
	}
	if m := fi.Mode().Perm(); m&0o006 != 0 {
		return nil, fmt.Errorf("headers file %s is readable or writable by every user (mode %04o) and may hold secrets: chmod 600 %s", path, m, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("headers file %s: %w", path, err)
	}
	h := http.Header{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		name, value, ok := strings.Cut(s, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("headers file %s:%d: not a \"Name: value\" header line", path, line)
		}
		switch textproto.CanonicalMIMEHeaderKey(name) {
		case "Content-Type", "Content-Length", "Host", "Transfer-Encoding":
			return nil, fmt.Errorf("headers file %s:%d: the agent sets %s itself: remove the line", path, line, name)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("headers file %s: %w", path, err)
	}
	return h, nil
}
