package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/config"
	"github.com/lifeboat-ha/lifeboat/internal/timerslack"
)

// Webhook POSTs messages as JSON.
type Webhook struct {
	url     string
	headers http.Header
	agent   string
	hc      *http.Client
}

var _ Sender = (*Webhook)(nil)

// NewWebhook reads the webhook's headers file (refused when every user
// can read it). Requests go straight to the URL: no proxy from the
// environment, no redirects followed.
func NewWebhook(cfg config.Webhook, version string) (*Webhook, error) {
	w := &Webhook{url: cfg.URL, headers: http.Header{}, agent: "lifeboat/" + version}
	if cfg.HeadersFile != "" {
		h, err := config.ReadHeadersFile(cfg.HeadersFile)
		if err != nil {
			return nil, err
		}
		w.headers = h
	}
	w.hc = &http.Client{
		Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second, ResponseHeaderTimeout: cfg.Timeout.D()},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return w, nil
}

// Send makes one POST. A 2xx answer is success; 408, 429 and 5xx are
// worth a retry; any other answer is not.
func (w *Webhook) Send(ctx context.Context, body []byte, _ Message) error {
	req, err := http.NewRequestWithContext(ctx, "POST", w.url, bytes.NewReader(body))
	if err != nil {
		return permanent{fmt.Errorf("build the webhook request: %w", err)}
	}
	for k, vs := range w.headers {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.agent)
	resp, err := w.hc.Do(req)
	if err != nil {
		// The URL is in the error; it carries no credentials (refused
		// by the config), the headers are not.
		return fmt.Errorf("POST the event: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("POST the event to %s: %s: %s", w.url, resp.Status, strings.TrimSpace(string(b)))
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return err
	}
	return permanent{err}
}

// Command runs a program per message, the message's JSON on its stdin.
type Command struct {
	argv []string
}

var _ Sender = (*Command)(nil)

// NewCommand makes a command notifier.
func NewCommand(cfg config.Command) *Command { return &Command{argv: cfg.Argv} }

// maxOutput bounds what is kept of a command's output (for the error).
const maxOutput = 4096

// Send runs the command once in its own process group, killed when ctx
// ends, with an explicit environment: PATH, LIFEBOAT_CLUSTER,
// LIFEBOAT_NODE and LIFEBOAT_EVENT_{KIND,ACTION,HIERARCHY,SEVERITY,SEQ,
// NODE,MESSAGE,ERROR}. Exit status 0 is success.
func (c *Command) Send(ctx context.Context, body []byte, m Message) error {
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	e := m.Event
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LIFEBOAT_CLUSTER=" + m.Cluster, "LIFEBOAT_NODE=" + m.Node,
		"LIFEBOAT_EVENT_KIND=" + e.Kind, "LIFEBOAT_EVENT_ACTION=" + e.Action, "LIFEBOAT_EVENT_HIERARCHY=" + e.Hierarchy,
		"LIFEBOAT_EVENT_SEVERITY=" + e.Severity, "LIFEBOAT_EVENT_SEQ=" + strconv.FormatUint(e.Seq, 10), "LIFEBOAT_EVENT_NODE=" + e.Node,
		"LIFEBOAT_EVENT_MESSAGE=" + e.Message, "LIFEBOAT_EVENT_ERROR=" + e.Error}
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(body)
	out := &boundedBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := timerslack.Start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("run %s: no exit within the timeout: killed", c.argv[0])
	}
	msg := strings.TrimSpace(out.String())
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return fmt.Errorf("run %s: %w: %s", c.argv[0], err, msg)
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	max int
	b   bytes.Buffer
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	if room := w.max - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (w *boundedBuffer) String() string { return w.b.String() }
